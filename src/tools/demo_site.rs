//! The demo's own web site, on another origin than the DCS (`localhost` against the DCS's
//! `127.0.0.1`: different sites for cookies, so the DCS's cookie is a third-party one there, as
//! on a real customer's site). It serves two pages — one with Tributary's tag, one calling the
//! ID service and the destination-publishing frame the way Adobe's libraries do — and plays
//! two partners: the URL destination (`/px`, whose hits the pages show) and an ID sync partner
//! (`/sync`, which sends the browser back to the DCS's `/ibs` with its own id for the visitor,
//! as idco's sync pixel would).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::core::response::PIXEL_GIF;

const INDEX: &str = include_str!("../../demo/site/index.html");
const TAG_PAGE: &str = include_str!("../../demo/site/tag.html");
const ID_PAGE: &str = include_str!("../../demo/site/idservice.html");
const SCRIPT: &str = include_str!("../../demo/site/demo.js");
const STYLE: &str = include_str!("../../demo/site/demo.css");

/// Where the pages put the DCS's address.
const DCS_SLOT: &str = "{{DCS}}";
/// URL destination hits shown by the pages.
const FIRED_KEPT: usize = 20;

/// What the site's handlers share.
struct Site {
    /// The DCS's base URL, known once it has started (after this site, whose address its
    /// configuration names).
    dcs: OnceLock<String>,
    fired: Mutex<VecDeque<String>>,
    /// The partner's data source (the ID sync partner's `dpid` at the DCS).
    sync_dpid: u32,
}

/// A running demo site.
pub struct DemoSite {
    /// `http://localhost:<port>`.
    pub origin: String,
    /// The partner's data source id (idco's).
    pub sync_dpid: u32,
    site: Arc<Site>,
    handle: ServerHandle,
}

impl DemoSite {
    /// Starts the site on a free loopback port; [`DemoSite::serve_dcs`] completes it.
    pub async fn start(sync_dpid: u32) -> std::io::Result<DemoSite> {
        let site = Arc::new(Site {
            dcs: OnceLock::new(),
            fired: Mutex::new(VecDeque::new()),
            sync_dpid,
        });
        let shared = web::Data::from(site.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/", web::get().to(|s| page(s, INDEX)))
                .route("/tag.html", web::get().to(|s| page(s, TAG_PAGE)))
                .route("/idservice.html", web::get().to(|s| page(s, ID_PAGE)))
                .route("/demo.js", web::get().to(script))
                .route("/demo.css", web::get().to(style))
                .route("/px", web::get().to(pixel))
                .route("/sync", web::get().to(sync))
                .route("/fired", web::get().to(fired))
        })
        .workers(1)
        .disable_signals()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = server.addrs().first().map_or(0, |a| a.port());
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(DemoSite {
            origin: format!("http://localhost:{port}"),
            sync_dpid,
            site,
            handle,
        })
    }

    /// The pages point at the DCS from now on.
    pub fn serve_dcs(&self, dcs_base: &str) {
        let _ = self.site.dcs.set(dcs_base.to_string());
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn page(site: web::Data<Site>, text: &'static str) -> HttpResponse {
    let dcs = site.dcs.get().map_or("", String::as_str);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text.replace(DCS_SLOT, dcs))
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css").body(STYLE)
}

/// The URL destination: records what it was told (shown by the pages) and answers a pixel.
async fn pixel(req: HttpRequest, site: web::Data<Site>) -> HttpResponse {
    let mut fired = site.fired.lock().unwrap_or_else(|p| p.into_inner());
    fired.push_front(format!("/px?{}", req.query_string()));
    fired.truncate(FIRED_KEPT);
    HttpResponse::Ok()
        .content_type("image/gif")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PIXEL_GIF)
}

async fn fired(site: web::Data<Site>) -> HttpResponse {
    let fired: Vec<String> = site
        .fired
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    HttpResponse::Ok().json(fired)
}

#[derive(serde::Deserialize)]
struct SyncQuery {
    u: String,
}

/// The ID sync partner: it learns the visitor id from the URL (no third-party cookie needed)
/// and sends the browser back to the DCS with its own id for that visitor, which is how the
/// DCS learns to ask it about the visitor. The visitor id goes back in `d_uuid`, since the
/// browser sends the DCS no cookie here.
async fn sync(query: web::Query<SyncQuery>, site: web::Data<Site>) -> HttpResponse {
    let Some(visitor) = crate::core::ids::VisitorId::parse(&query.u) else {
        return HttpResponse::BadRequest().finish();
    };
    let dcs = site.dcs.get().map_or("", String::as_str);
    let partner_id = format!("idco-{}", &visitor.to_string()[..12]);
    let location = format!(
        "{dcs}/ibs:dpid={}&dpuuid={partner_id}&d_uuid={visitor}",
        site.sync_dpid
    );
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .finish()
}
