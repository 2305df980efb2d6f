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

use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;

use super::assets::Asset;

const TEMPLATE: &str = include_str!("assets/dest5.html");
const SCRIPT: &str = include_str!("assets/dest5.js");
const SCRIPT_SLOT: &str = "/*DEST5_SCRIPT*/";

static PAGE: LazyLock<Asset> = LazyLock::new(|| {
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
    Asset::new(html, "text/html; charset=utf-8", Some(csp))
});

/// `GET` and `HEAD /dest5.html`.
pub async fn dest5(req: HttpRequest) -> HttpResponse {
    PAGE.respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_inlined_once_and_cannot_end_its_element() {
        assert_eq!(TEMPLATE.matches(SCRIPT_SLOT).count(), 1);
        assert!(PAGE.body().contains(SCRIPT));
        assert!(!PAGE.body().contains(SCRIPT_SLOT));
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
        assert!(!SCRIPT.contains("<!--"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inlined_script() {
        let inline = PAGE
            .body()
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(script, _)| script)
            .unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            inline.as_bytes(),
        ));
        assert!(PAGE
            .csp()
            .unwrap_or("")
            .contains(&format!("script-src 'sha256-{hash}';")));
        assert!(PAGE.csp().unwrap_or("").starts_with("default-src 'none';"));
        assert!(PAGE.csp().unwrap_or("").ends_with("frame-ancestors *"));
    }

    #[test]
    fn the_page_has_no_dangerous_sinks() {
        let extra = ["setTimeout(", "console."];
        for sink in crate::routes::assets::DANGEROUS_SINKS.iter().chain(&extra) {
            assert!(!SCRIPT.contains(sink), "{sink} in dest5.js");
        }
    }
}
