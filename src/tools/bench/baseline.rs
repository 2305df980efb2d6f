//! The two ceilings every benchmark run measures next to Tributary, on the same machine in the
//! same run, so that results are ratios that survive a noisy machine:
//!
//! - the **HTTP ceiling**: actix-web answering `/event` with a fixed small JSON body;
//! - the **fan-out ceiling**: actix-web calling the same mock providers as Tributary, in
//!   parallel with awc, reading their answers and returning a fixed body — no sessions, no
//!   rules, no store.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::Version;
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;

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
    let body = format!(
        r#"{{"id":"AAAAAAAAAAA=","tmax":80,"user":{{"ext":{{"uuid":"{}"}}}},"signals":{{}}}}"#,
        req.query_string().len()
    );
    let calls = state.providers.iter().map(|url| {
        let request = state
            .client
            .post(url.as_str())
            .insert_header(("content-type", "application/json"))
            .send_body(body.clone());
        let timeout = state.timeout;
        async move {
            let call = async {
                let mut response = request.await.ok()?;
                response.body().limit(64 * 1024).await.ok()
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
