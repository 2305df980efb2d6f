//! The admin console under `/ui/` (`docs/console.md`): a few static files compiled into the
//! binary, so it needs no CDN at run time, no download at build time and no Node build step.
//! The files hold no data and need no token; everything they show comes from the admin API,
//! called with the token the admin types in.
//!
//! Every file is sent with a strict Content-Security-Policy: scripts and styles only from this
//! listener, no inline script or style, no frames, no form posts elsewhere. Browsers ask for
//! the files again on every load (`no-cache`, a `304` while unchanged), so after an upgrade the
//! shell and its sections are never of two versions.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::{http::header, web, HttpRequest, HttpResponse};

use super::error::AdminError;
use crate::routes::assets::Asset;

/// The console's policy: what a page of it may load and run.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files, by path under `/ui/`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("console/dom.js"),
    ),
    (
        "pages/try.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/try.js"),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_str!("console/docs.js"),
    ),
    (
        "pages/overview.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/overview.js"),
    ),
    (
        "pages/providers.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/providers.js"),
    ),
    (
        "pages/profiles.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/profiles.js"),
    ),
    (
        "pages/ui.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/ui.js"),
    ),
    (
        "pages/rule-editor.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/rule-editor.js"),
    ),
    (
        "pages/traits.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/traits.js"),
    ),
    (
        "pages/segments.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/segments.js"),
    ),
    (
        "pages/destinations.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages/destinations.js"),
    ),
];

/// `/docs`: the API reference, rendered from `/openapi.json` by `docs.js`.
const DOCS_PAGE: &str = include_str!("console/docs.html");

fn assets() -> &'static HashMap<&'static str, Asset> {
    static ASSETS: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(path, kind, text)| {
                (
                    *path,
                    Asset::new((*text).to_string(), kind, Some(CSP.into())).revalidated(),
                )
            })
            .collect()
    })
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ui",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/ui/"))
                .finish()
        }),
    )
    .route("/ui/{path:.*}", web::get().to(file))
    .route("/docs", web::get().to(docs));
}

async fn docs(req: HttpRequest) -> HttpResponse {
    static PAGE: OnceLock<Asset> = OnceLock::new();
    PAGE.get_or_init(|| {
        Asset::new(
            DOCS_PAGE.to_string(),
            "text/html; charset=utf-8",
            Some(CSP.into()),
        )
        .revalidated()
    })
    .respond(&req)
}

async fn file(req: HttpRequest) -> Result<HttpResponse, AdminError> {
    let path = req.match_info().get("path").unwrap_or("");
    let path = if path.is_empty() { "index.html" } else { path };
    assets()
        .get(path)
        .map(|asset| asset.respond(&req))
        .ok_or_else(|| {
            AdminError::NotFound(format!("no console file {:?}", super::error::clip(path)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::assets::DANGEROUS_SINKS;

    #[test]
    fn console_scripts_hold_no_code_or_markup_sinks_and_no_inline_script() {
        for (path, _, text) in FILES.iter().chain([&("docs.html", "", DOCS_PAGE)]) {
            if path.ends_with(".js") {
                for sink in DANGEROUS_SINKS {
                    assert!(!text.contains(sink), "{path} uses {sink}");
                }
            }
            if path.ends_with(".html") {
                // Every script is a file: the policy allows no inline one.
                assert!(!text.contains("<script>"), "{path} has an inline script");
                assert!(!text.contains(" style="), "{path} has an inline style");
                assert!(!text.contains(" onclick="), "{path} has an inline handler");
                assert!(
                    !text.contains("//cdn") && !text.contains("https://"),
                    "{path} loads from outside"
                );
            }
        }
    }
}
