//! The two ceilings every benchmark run measures next to Tributary, on the same machine in the
//! same run, so that results are ratios that survive a noisy machine:
//!
//! - the **HTTP ceiling**: actix-web answering `/event` with a fixed small JSON body;
//! - the **fan-out ceiling**: actix-web calling the same mock providers as Tributary, in
//!   parallel with awc, doing the same protocol work per event — the query parsed, the
//!   provider request body built from the event's signals, each OpenRTB answer parsed — and
//!   returning a fixed body: no sessions, no rules, no store.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::Version;
use actix_web::web::Bytes;
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;

use crate::core::ids::Tid;
use crate::core::provider::{parse_answer, request_body, RequestContext};
use crate::core::request::parse_event;

const FIXED: &str = r#"{"stuff":[],"uuid":"10000000000000000000000000000000000001","dcs_region":7,"tid":"AAAAAAAAAAA="}"#;

/// Serves the HTTP ceiling until the process ends. Prints `listening on http://…`.
pub async fn http_ceiling(bind: SocketAddr, workers: usize) -> io::Result<()> {
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(FIXED)
        }))
    })
    .workers(workers)
    .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}

struct Fanout {
    client: awc::Client,
    providers: Vec<String>,
    timeout: Duration,
}

/// Serves the fan-out ceiling until the process ends. Prints `listening on http://…`.
pub async fn fanout_ceiling(
    bind: SocketAddr,
    workers: usize,
    providers: Vec<String>,
    timeout: Duration,
) -> io::Result<()> {
    let server = HttpServer::new(move || {
        // awc is !Send: one client per worker, built on the worker's thread, with the same
        // settings Tributary's provider clients use.
        let connector = awc::Connector::new()
            .timeout(timeout)
            .max_http_version(Version::HTTP_11)
            .limit(256);
        let client = awc::Client::builder()
            .connector(connector)
            .max_http_version(Version::HTTP_11)
            .disable_redirects()
            .timeout(timeout)
            .finish();
        App::new()
            .app_data(web::Data::new(Fanout {
                client,
                providers: providers.clone(),
                timeout,
            }))
            .default_service(web::to(fan_out))
    })
    .workers(workers)
    .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}

async fn fan_out(req: actix_web::HttpRequest, state: web::Data<Fanout>) -> HttpResponse {
    // The protocol work Tributary does per event, and nothing else.
    let Ok(event) = parse_event(req.query_string().as_bytes(), None) else {
        return HttpResponse::BadRequest().finish();
    };
    let uuid = event.d_uuid.map(|v| v.to_string()).unwrap_or_default();
    let tid = Tid::next();
    let ctx = RequestContext {
        tid: tid.as_str(),
        visitor_uuid: &uuid,
        signals: &event.signals,
        privacy: &event.privacy,
    };
    let body = Bytes::from(request_body(&ctx, 80, None));
    let calls = state.providers.iter().map(|url| {
        let request = state
            .client
            .post(url.as_str())
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-tributary-tid", tid.as_str()))
            .send_body(body.clone());
        let timeout = state.timeout;
        async move {
            let call = async {
                let mut response = request.await.ok()?;
                let status = response.status().as_u16();
                let body = response.body().limit(64 * 1024).await.ok()?;
                parse_answer(status, &body).ok()
            };
            tokio::time::timeout(timeout, call).await.ok().flatten()
        }
    });
    let answers = join_all(calls).await;
    let answered = answers.iter().filter(|a| a.is_some()).count();
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("x-answered", answered.to_string()))
        .body(FIXED)
}
