//! The `demdex` cookie: the visitor id a browser keeps for the DCS (or `NOTARGET` once it has
//! opted out), read and written here only.

use actix_web::cookie::{time as cookie_time, Cookie, SameSite};
use actix_web::HttpRequest;

use crate::core::ids::VisitorId;

/// Name of the visitor cookie (AAM's).
pub const COOKIE_NAME: &str = "demdex";
/// Cookie value of an opted-out visitor.
pub const OPT_OUT_VALUE: &str = "NOTARGET";
/// Visitor cookie lifetime, renewed on every call (AAM: 180 days).
const COOKIE_DAYS: i64 = 180;
/// How long the opt-out cookie lasts (AAM: 10 years).
const OPT_OUT_DAYS: i64 = 3650;

/// The `demdex` value the browser sent, if any (an id, `NOTARGET`, or anything else).
pub fn sent(req: &HttpRequest) -> Option<Cookie<'static>> {
    req.cookie(COOKIE_NAME)
}

/// The `demdex` cookie with the visitor's id, renewed for 180 days on every call.
/// `https`: whether the client's own connection is HTTPS (`AppState::client`).
pub fn visitor(https: bool, visitor: VisitorId, domain: &str) -> Cookie<'static> {
    dcs_cookie(visitor.to_string(), COOKIE_DAYS, https, domain)
}

/// `demdex=NOTARGET` for 10 years: the browser is never given an id again.
pub fn opted_out(https: bool, domain: &str) -> Cookie<'static> {
    dcs_cookie(OPT_OUT_VALUE.to_string(), OPT_OUT_DAYS, https, domain)
}

/// The `demdex` cookie with `value`, for `days`.
fn dcs_cookie(value: String, days: i64, secure: bool, domain: &str) -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE_NAME, value)
        .path("/")
        .max_age(cookie_time::Duration::days(days))
        .finish();
    if secure {
        // Browsers send a third-party cookie only with SameSite=None, which requires Secure.
        cookie.set_same_site(SameSite::None);
        cookie.set_secure(true);
    } else {
        cookie.set_same_site(SameSite::Lax);
    }
    if !domain.is_empty() {
        cookie.set_domain(domain.to_string());
    }
    cookie
}
