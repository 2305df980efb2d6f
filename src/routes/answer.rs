//! Every answer of the public listener is written here: the headers every DCS answer carries
//! (no caching, `X-Error`, the visitor cookie), its body (AAM's JSON or JSONP, the pixel, a
//! redirect), and the few requests refused outright ([`HttpError`]), each mapped to one status
//! and one JSON body here and nowhere else.

use actix_web::cookie::Cookie;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::core::error::DcsError;
use crate::core::id_service::IdBody;
use crate::core::ids::Tid;
use crate::core::response::{x_error, EventBody, PIXEL_GIF};

/// DCS answers are about one visitor at one moment: never cached, by the browser or between.
const NO_STORE: &str = "no-store, no-cache, max-age=0";

/// What a DCS call answers with, besides its headers.
pub enum Body<'a> {
    /// The 1×1 GIF (no `d_rtbd=json`, `/ibs`, the opt-out).
    Pixel,
    /// AAM's JSON answer, or `callback({…});` when a (validated) JSONP name was given.
    Json {
        body: &'a EventBody,
        callback: Option<&'a str>,
    },
    /// The ID service's JSON object (`/id`, `/optOutStatus`).
    Id(&'a IdBody),
    /// `302` to this (already checked) location: an `/ibs` redirect.
    Redirect(String),
}

/// One DCS answer: `200` (or `302`), never cached, the error codes in `X-Error`, and the
/// visitor cookie when the call identified (or opted out) a visitor.
pub struct Answer<'a> {
    pub body: Body<'a>,
    pub errors: &'a [DcsError],
    pub cookie: Option<Cookie<'static>>,
    /// Sent as `X-Tributary-Tid` (the pixel answers of `/ibs` have no body to carry it).
    pub tid: Option<Tid>,
}

impl Answer<'_> {
    pub fn into_response(self) -> HttpResponse {
        let mut builder = match self.body {
            Body::Redirect(_) => HttpResponse::Found(),
            _ => HttpResponse::Ok(),
        };
        builder.insert_header((header::CACHE_CONTROL, NO_STORE));
        if let Some(tid) = self.tid {
            builder.insert_header(("X-Tributary-Tid", tid.as_str().to_string()));
        }
        if let Some(codes) = x_error(self.errors) {
            builder.insert_header(("X-Error", codes));
        }
        if let Some(cookie) = self.cookie {
            builder.cookie(cookie);
        }
        match self.body {
            Body::Pixel => builder.content_type("image/gif").body(PIXEL_GIF),
            Body::Json { body, callback } => {
                let content_type = if callback.is_some() {
                    "application/javascript; charset=utf-8"
                } else {
                    "application/json"
                };
                builder
                    .content_type(content_type)
                    .body(body.render(callback))
            }
            Body::Id(body) => builder.content_type("application/json").body(body.render()),
            Body::Redirect(url) => builder.insert_header((header::LOCATION, url)).finish(),
        }
    }
}

/// A request the public listener refuses outright.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the query string is longer than {limit} bytes")]
    QueryTooLong { limit: usize },
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("unsupported content type; send application/x-www-form-urlencoded")]
    UnsupportedMediaType,
    /// The name is never echoed back: reflecting it is how JSONP endpoints get abused.
    #[error("invalid d_cb callback name: must match ^[A-Za-z_$][A-Za-z0-9_$.]{{0,63}}$")]
    BadCallback,
    #[error("the request body could not be read")]
    BadBody,
    /// Load shedding (AAM answers excess traffic with 429): retry later.
    #[error("server overloaded, retry later")]
    Overloaded,
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

#[derive(Serialize)]
struct HttpErrorBody {
    errors: [DcsError; 1],
}

impl HttpError {
    pub fn into_response(self) -> HttpResponse {
        self.error_response()
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::QueryTooLong { .. } => StatusCode::URI_TOO_LONG,
            HttpError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::BadCallback | HttpError::BadBody => StatusCode::BAD_REQUEST,
            HttpError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The same `errors` shape as a 200 answer, so one client-side parser handles both.
        let body = HttpErrorBody {
            errors: [DcsError::unspecified(self.to_string())],
        };
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("X-Error", "0"));
        if let HttpError::Overloaded = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_map_to_statuses() {
        assert_eq!(HttpError::QueryTooLong { limit: 1 }.status_code(), 414);
        assert_eq!(HttpError::BodyTooLarge { limit: 1 }.status_code(), 413);
        assert_eq!(HttpError::BadCallback.status_code(), 400);
        assert_eq!(HttpError::UnsupportedMediaType.status_code(), 415);
        assert_eq!(HttpError::NotFound.status_code(), 404);
        let shed = HttpError::Overloaded.error_response();
        assert_eq!(shed.status(), 429);
        assert_eq!(shed.headers().get("retry-after").unwrap(), "1");
    }

    #[test]
    fn dcs_answers_are_never_cached_and_list_their_errors() {
        let errors = [DcsError::opted_out(), DcsError::invalid_aam_id()];
        let answer = Answer {
            body: Body::Pixel,
            errors: &errors,
            cookie: None,
            tid: None,
        }
        .into_response();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers().get("x-error").unwrap(), "171,102");
        assert_eq!(answer.headers().get("cache-control").unwrap(), NO_STORE);
        assert_eq!(answer.headers().get("content-type").unwrap(), "image/gif");
        let redirect = Answer {
            body: Body::Redirect("https://sync.example/x".into()),
            errors: &[],
            cookie: None,
            tid: Some(Tid::next()),
        }
        .into_response();
        assert_eq!(redirect.status(), 302);
        assert!(redirect.headers().get("x-tributary-tid").is_some());
        assert!(redirect.headers().get("x-error").is_none());
    }
}
