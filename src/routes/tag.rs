//! `GET /tributary.js`: Tributary's own site tag, for pages that run no Adobe library
//! (`docs/site-tag.md`). Hand-written, without dependencies, and the same for every request:
//! served as a cacheable constant.

use std::sync::LazyLock;

use actix_web::{HttpRequest, HttpResponse};

use super::assets::Asset;

const SCRIPT: &str = include_str!("assets/tributary.js");

static TAG: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        SCRIPT.to_string(),
        "application/javascript; charset=utf-8",
        None,
    )
});

/// `GET` and `HEAD /tributary.js`.
pub async fn tag(req: HttpRequest) -> HttpResponse {
    TAG.respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag runs on customers' pages: none of the sinks that turn data into code.
    #[test]
    fn the_tag_has_no_dangerous_sinks() {
        let extra = ["setTimeout(\""];
        for sink in crate::routes::assets::DANGEROUS_SINKS.iter().chain(&extra) {
            assert!(!SCRIPT.contains(sink), "{sink} in tributary.js");
        }
        assert!(SCRIPT.len() < 16 * 1024, "the tag stays small");
    }
}
