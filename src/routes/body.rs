//! Reading request bodies, for `POST /event` forms here and for the admin API's JSON: bounded
//! in size (refused at once when `Content-Length` says too much) and in time, so a client
//! trickling bytes cannot hold a worker's request open.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpRequest};
use futures_util::{Stream, StreamExt as _};

use super::answer::HttpError;
use crate::core::request::MAX_BODY_BYTES;

/// How long a client may take to upload a body; an event's deadline starts after it.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request body could not be read.
pub enum BodyError {
    TooLarge,
    /// Broken, or not received within `BODY_READ_TIMEOUT`.
    Unreadable(String),
}

/// The request's media type (`Content-Type` without parameters, lower case), if it has one.
pub fn media_type(req: &HttpRequest) -> Option<String> {
    let ct = req.headers().get(header::CONTENT_TYPE)?;
    Some(
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads a request body of at most `limit` bytes within `BODY_READ_TIMEOUT`.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            BodyError::Unreadable(format!(
                "not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?
}

/// Reads a `POST /event` form body of at most [`MAX_BODY_BYTES`]. DIL posts `text/plain` (a
/// CORS "simple" request needs no preflight), so that is accepted as a form too.
pub async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Vec<u8>, HttpError> {
    if let Some(essence) = media_type(req) {
        if essence != "application/x-www-form-urlencoded"
            && essence != "text/plain"
            && !essence.is_empty()
        {
            return Err(HttpError::UnsupportedMediaType);
        }
    }
    read_body(req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => HttpError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            },
            BodyError::Unreadable(_) => HttpError::BadBody,
        })
}

/// Middleware for both listeners: an error answer to a request whose body was not read to its
/// end closes the connection (after actix-http's one-second linger), rather than reading and
/// discarding the rest. actix-http discards a dropped chunked body to keep the connection
/// alive, so a refusal (`413`, `401`, `415`, `429`, …) would otherwise not stop the upload it
/// refused: a chunked body that never ends would be read for as long as the client sends it.
/// actix-http closes instead when the request's payload is still held as the answer is sent,
/// so the answer's body holds it.
pub async fn close_after_refusal(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let headers = req.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    if !declared && !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let shared = SharedPayload(Rc::new(RefCell::new(req.take_payload())));
    req.set_payload(Payload::Stream {
        payload: Box::pin(shared.clone()),
    });
    let res = next.call(req).await?;
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        return Ok(res
            .map_body(|_, body| Holding {
                body: body.boxed(),
                _payload: shared,
            })
            .map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// The request's payload, read by the handler through one handle while the middleware keeps
/// another.
#[derive(Clone)]
struct SharedPayload(Rc<RefCell<Payload>>);

impl Stream for SharedPayload {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.borrow_mut().poll_next_unpin(cx)
    }
}

/// An answer's body that holds the request's payload until it has been sent.
struct Holding {
    body: BoxBody,
    _payload: SharedPayload,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
