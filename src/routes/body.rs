//! Reading request bodies, for `POST /event` forms here and for the admin API's JSON: bounded
//! in size (refused at once when `Content-Length` says too much) and in time, so a client
//! trickling bytes cannot hold a worker's request open.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt as _;

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
