//! `GET /dest5.html`: the destination-publishing frame Adobe's VisitorAPI attaches to a site's
//! pages. The parent posts it ID syncs and URL destinations; its script (`assets/dest5.js`,
//! inlined and allowed by hash) fires them as images or hidden frames, remembers each sync for
//! its ttl, and tells the parent whether it can set third-party cookies. The wire contract is
//! `docs/dcs-api.md`.
//!
//! The page is the same for every request and never depends on it: the query (`d_nsid`) and
//! the fragment (the parent's origin, read by the script) are not looked at here, and nothing
//! is counted or logged. Being constant, it is cacheable, with an `ETag` computed once.

use std::sync::LazyLock;

use actix_web::http::header::{self, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;

const TEMPLATE: &str = include_str!("assets/dest5.html");
const SCRIPT: &str = include_str!("assets/dest5.js");
const SCRIPT_SLOT: &str = "/*DEST5_SCRIPT*/";

/// How long browsers and caches may keep the page before asking again (with `If-None-Match`):
/// a release that changes it reaches every visitor within this time.
const MAX_AGE_SECS: u32 = 3600;

struct Page {
    html: String,
    csp: String,
    etag: EntityTag,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = TEMPLATE.replacen(SCRIPT_SLOT, SCRIPT, 1);
    let script_hash = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        SCRIPT.as_bytes(),
    ));
    // Framed by any site (VisitorAPI attaches it to every page of every customer), and able
    // to do nothing but run its own script and load http(s) images and frames.
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{script_hash}'; img-src http: https:; \
         frame-src http: https:; base-uri 'none'; form-action 'none'; frame-ancestors *"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, html.as_bytes());
    let tag: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Page {
        html,
        csp,
        etag: EntityTag::new_strong(tag),
    }
});

/// `GET` and `HEAD /dest5.html`.
pub async fn dest5(req: HttpRequest) -> HttpResponse {
    let page = &*PAGE;
    // An unparsable If-None-Match is no condition: the page is sent.
    let fresh = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&page.etag)),
        None => false,
    };
    let mut builder = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    builder
        .insert_header(header::ETag(page.etag.clone()))
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        ))
        .insert_header((header::CONTENT_SECURITY_POLICY, page.csp.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return builder.finish();
    }
    builder
        .content_type("text/html; charset=utf-8")
        .body(page.html.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_inlined_once_and_cannot_end_its_element() {
        assert_eq!(TEMPLATE.matches(SCRIPT_SLOT).count(), 1);
        assert!(PAGE.html.contains(SCRIPT));
        assert!(!PAGE.html.contains(SCRIPT_SLOT));
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
        assert!(!SCRIPT.contains("<!--"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inlined_script() {
        let inline = PAGE
            .html
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(script, _)| script)
            .unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            inline.as_bytes(),
        ));
        assert!(PAGE.csp.contains(&format!("script-src 'sha256-{hash}';")));
        assert!(PAGE.csp.starts_with("default-src 'none';"));
        assert!(PAGE.csp.ends_with("frame-ancestors *"));
    }

    #[test]
    fn the_page_has_no_dangerous_sinks() {
        for sink in [
            "eval(",
            "innerHTML",
            "outerHTML",
            "document.write",
            "Function(",
            "insertAdjacentHTML",
            "setTimeout(",
            "console.",
        ] {
            assert!(!SCRIPT.contains(sink), "{sink} in dest5.js");
        }
    }
}
