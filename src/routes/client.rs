//! The client of a public request — its address and whether it reached us over HTTPS — as the
//! socket and the configured trusted proxies tell (core/forwarded.rs decides).

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderName};
use actix_web::HttpRequest;

use super::AppState;
use crate::core::forwarded::{self, Client, ForwardedHeaders};

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

impl AppState {
    pub fn client(&self, req: &HttpRequest) -> Client {
        let peer = req.peer_addr().map(|a| a.ip());
        let tls = req.app_config().secure();
        let trusted = &self.config.server.trusted_proxies;
        if trusted.is_empty() {
            return Client {
                ip: peer,
                https: tls,
            };
        }
        let forwarded = joined(req, header::FORWARDED);
        let x_forwarded_for = joined(req, header::X_FORWARDED_FOR);
        let x_forwarded_proto = joined(req, X_FORWARDED_PROTO);
        let headers = ForwardedHeaders {
            forwarded: forwarded.as_deref(),
            x_forwarded_for: x_forwarded_for.as_deref(),
            x_forwarded_proto: x_forwarded_proto.as_deref(),
        };
        forwarded::client(peer, tls, headers, trusted)
    }
}

/// Every line of `name`, in order, as one comma-separated list (proxies may add a line of their
/// own instead of extending the first); a line that is not text ends the list there.
fn joined(req: &HttpRequest, name: HeaderName) -> Option<Cow<'_, str>> {
    let mut lines = req.headers().get_all(name).map(|v| v.to_str());
    let first = lines.next()?.ok()?;
    let mut all = Cow::Borrowed(first);
    for line in lines {
        let Ok(line) = line else { break };
        let text = all.to_mut();
        text.push(',');
        text.push_str(line);
    }
    Some(all)
}
