//! Answers for the constant files the DCS serves to browsers (`/dest5.html`,
//! `/tributary.js`): each is built once at start and never depends on the request, so it is
//! cacheable by browsers and CDNs, with an `ETag` (a hash of its bytes) that turns a repeated
//! visit into a `304`.

use actix_web::http::header::{self, EntityTag, IfNoneMatch};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

/// How long browsers and caches may keep an asset before asking again (with `If-None-Match`):
/// a release that changes one reaches every visitor within this time.
pub const MAX_AGE_SECS: u32 = 3600;

/// One constant file, ready to send.
pub struct Asset {
    /// Shared by every answer (a clone is a reference count, not a copy).
    body: Bytes,
    content_type: &'static str,
    etag: EntityTag,
    /// Its own `Content-Security-Policy`, for pages.
    csp: Option<String>,
    /// `Cache-Control`: public for an hour, unless [`Asset::revalidated`].
    cache_control: String,
}

impl Asset {
    pub fn new(body: String, content_type: &'static str, csp: Option<String>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
        let tag: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Asset {
            body: Bytes::from(body),
            content_type,
            // Weak: the same tag covers the gzipped and the plain representation.
            etag: EntityTag::new_weak(tag),
            csp,
            cache_control: format!("public, max-age={MAX_AGE_SECS}"),
        }
    }

    /// Asked for again on every use (a `304` while unchanged): for the admin console, whose
    /// files must change together when the server is upgraded.
    pub fn revalidated(mut self) -> Self {
        self.cache_control = "no-cache".into();
        self
    }

    pub fn body(&self) -> &str {
        // Built from a String in `new`, so always UTF-8.
        std::str::from_utf8(&self.body).unwrap_or("")
    }

    pub fn csp(&self) -> Option<&str> {
        self.csp.as_deref()
    }

    /// `200` with the file, or `304` when the browser already has this version. An
    /// unparsable `If-None-Match` is no condition: the file is sent.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let fresh = match req.get_header::<IfNoneMatch>() {
            Some(IfNoneMatch::Any) => true,
            Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&self.etag)),
            None => false,
        };
        let mut builder = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        builder
            .insert_header(header::ETag(self.etag.clone()))
            .insert_header((header::CACHE_CONTROL, self.cache_control.as_str()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if let Some(csp) = &self.csp {
            builder.insert_header((header::CONTENT_SECURITY_POLICY, csp.as_str()));
        }
        if fresh {
            return builder.finish();
        }
        builder
            .content_type(self.content_type)
            .body(self.body.clone())
    }
}

/// What a script served to customers' pages must never contain: the sinks that turn data into
/// code or markup. Each asset's tests check its script against these (and its own extras).
#[cfg(test)]
pub const DANGEROUS_SINKS: &[&str] = &[
    "eval(",
    "innerHTML",
    "outerHTML",
    "document.write",
    "Function(",
    "insertAdjacentHTML",
];
