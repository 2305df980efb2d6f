//! CORS with credentials for the browser-facing routes, written by hand rather than with
//! actix-cors, which refuses requests from other origins with an error: an event from any page
//! must still be collected, only the reading of its answer is restricted.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::AppState;

/// Whether the caller's origin may read answers with credentials. With no configured list,
/// any origin is echoed (tags run on many customer domains) — but never `null`, the origin of
/// sandboxed frames and local files, which must not be trusted with credentials.
fn allowed_origin(state: &AppState, req: &ServiceRequest) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let allowed = &state.config.server.cors_origins;
    let ok = if allowed.is_empty() {
        text != "null" && text.contains("://")
    } else {
        allowed.iter().any(|a| a == text)
    };
    ok.then(|| origin.clone())
}

/// The middleware: the exact origin echoed with `Access-Control-Allow-Credentials`, and
/// preflights answered with the methods and headers asked for.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| allowed_origin(state, &req));
    let preflight = req.method() == Method::OPTIONS;
    let requested_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("X-Error"),
        );
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            if let Some(requested) = requested_headers.filter(|h| h.len() <= 512) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            }
        }
    }
    Ok(res)
}

/// `OPTIONS`: the headers are the middleware's.
pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent().finish()
}
