//! The admin REST API (`docs/admin-api.md`), on its own listener.
//!
//! Every request needs `Authorization: Bearer <[admin] token>` (compared in constant time);
//! otherwise `401`. JSON in, JSON out; errors are [`AdminError`]s. Resources, with AAM's
//! field names: `/v1/providers` (`pid`), `/v1/traits` and `/v1/segments` (`sid`),
//! `/v1/destinations` (`destinationId`):
//!
//! - `GET /v1/x` — all, as a bare array in id order; with `page` (0-based) and/or `pageSize`
//!   (default 10, at most 1,000): `{total, page, pageSize, list}`.
//! - `GET /v1/x/{id}`, `GET /v1/x/ic:{integrationCode}` (traits, segments).
//! - `POST /v1/x` — creates; the server assigns the id; `201` with the object and `Location`.
//! - `PUT /v1/x/{id}` — replaces; `DELETE /v1/x/{id}` — `204`; `409` when something refers
//!   to it (a trait a segment uses, a segment a destination maps).
//! - `POST /v1/traits/validate`, `POST /v1/segments/validate` — `{"code": "<rule>"}`: `200
//!   {"valid": true}` or the `400` with the error's byte offset.
//! - `GET /v1/profiles/{uuid}`, `DELETE /v1/profiles/{uuid}` (see `profiles.rs`).
//!
//! Changes go through [`CatalogWriter`]: durable before answered, live for the next event.
//! `GET /openapi.json` and `GET /docs` describe all of this (no token needed; see [`openapi`]).

mod catalog_writer;
mod console;
mod customer_data;
pub mod error;
mod inbound;
pub mod openapi;
mod outbox;
mod profiles;
pub mod resource;
pub mod try_event;

pub use catalog_writer::CatalogWriter;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::actors::visitor_session::SessionDeps;
use crate::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use crate::core::rules::segment_rule::SegmentRule;
use crate::core::rules::trait_rule::TraitRule;
use crate::inbound::jobs::Jobs;
use crate::inbound::Inbound;
use crate::routes::body::{media_type, read_body, BodyError};
use error::AdminError;
use resource::Resource;

/// Largest admin request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest page.
const MAX_PAGE_SIZE: usize = 1000;

/// What the admin handlers share.
pub struct AdminState {
    pub writer: Arc<CatalogWriter>,
    /// For profiles: the store and the visitors' sessions.
    pub deps: SessionDeps,
    /// SHA-256 of the token: compared in constant time whatever the length sent.
    token_digest: [u8; 32],
    /// The Customer Data API's ops are applied through it.
    pub inbound: Inbound,
    /// Inbound file imports.
    pub jobs: Jobs,
    /// `[admin] org_id`: empty = not checked.
    pub org_id: String,
    /// `[server] dcs_region`, the profile viewer's one region.
    pub region: u32,
    /// `[server] integration_codes`: the viewer's names of data sources.
    pub integration_codes: std::collections::HashMap<String, u32>,
    /// The server's Prometheus text (`GET /v1/metrics`, what the console charts); `None` where
    /// no public listener runs beside this one.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The public listener, which `POST /v1/events/try` sends its event to.
    pub public: Option<try_event::PublicListener>,
}

impl AdminState {
    pub fn new(
        writer: Arc<CatalogWriter>,
        deps: SessionDeps,
        token: &str,
        config: &crate::config::Config,
    ) -> Self {
        let inbound = Inbound::new(deps.clone(), &config.server.integration_codes);
        AdminState {
            writer,
            inbound: inbound.clone(),
            jobs: Jobs::new(
                inbound,
                config.admin.spool_dir(),
                config.store.max_pending_writes,
            ),
            deps,
            token_digest: digest(token.as_bytes()),
            org_id: config.admin.org_id.clone(),
            region: config.server.dcs_region,
            integration_codes: config.server.integration_codes.clone(),
            metrics: None,
            public: None,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A random token for an empty `[admin] token`: 32 bytes, hex.
pub fn generate_token() -> String {
    use rand::RngExt as _;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin routes; everything else on the admin listener is a JSON `404`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let spec = openapi::document();
    cfg.configure(console::routes)
        .route(
            "/openapi.json",
            web::get().to(move || {
                let spec = spec.clone();
                async move { HttpResponse::Ok().json(spec) }
            }),
        )
        .service(
            web::resource(["/stream/{streamId}", "/stream/{streamId}/"])
                .wrap(from_fn(require_token_for_updates))
                .route(web::post().to(customer_data::stream))
                .default_service(other_methods("POST")),
        )
        .service(
            web::resource(["/event/s2s/{streamId}", "/event/s2s/{streamId}/"])
                .wrap(from_fn(require_token_for_updates))
                .route(web::get().to(customer_data::event_s2s))
                .route(web::post().to(customer_data::event_s2s))
                .default_service(other_methods("GET, POST")),
        )
        .service(
            web::resource("/profile/{dataSourceId}/{id}")
                .wrap(from_fn(require_token))
                .route(web::get().to(customer_data::profile))
                .default_service(other_methods("GET")),
        )
        .service(
            web::scope("/v1")
                .wrap(from_fn(require_token))
                .configure(resource_routes::<Provider>)
                .service(
                    web::resource(["/traits/validate", "/traits/validate/"])
                        .route(web::post().to(validate_trait))
                        .default_service(other_methods("POST")),
                )
                .configure(resource_routes::<Trait>)
                .service(
                    web::resource(["/segments/validate", "/segments/validate/"])
                        .route(web::post().to(validate_segment))
                        .default_service(other_methods("POST")),
                )
                .configure(resource_routes::<Segment>)
                .configure(resource_routes::<Destination>)
                .service(
                    web::resource(["/inbound", "/inbound/"])
                        .route(web::get().to(inbound::list))
                        .route(web::post().to(inbound::upload))
                        .default_service(other_methods("GET, POST")),
                )
                .service(
                    web::resource("/inbound/{id}")
                        .route(web::get().to(inbound::progress))
                        .default_service(other_methods("GET")),
                )
                .service(
                    web::resource("/destinations/{id}/outbox")
                        .route(web::get().to(outbox::status))
                        .default_service(other_methods("GET")),
                )
                .service(
                    web::resource(["/events/try", "/events/try/"])
                        .route(web::post().to(try_event::try_event))
                        .default_service(other_methods("POST")),
                )
                .service(
                    web::resource("/metrics")
                        .route(web::get().to(metrics))
                        .default_service(other_methods("GET")),
                )
                .service(
                    web::resource("/profiles/{uuid}")
                        .route(web::get().to(profiles::get_profile))
                        .route(web::delete().to(profiles::delete_profile))
                        .default_service(other_methods("GET, DELETE")),
                )
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

/// `GET /v1/metrics`: the public listener's `/metrics`, behind the token, for the console.
async fn metrics(state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    let render = state
        .metrics
        .as_ref()
        .ok_or_else(|| AdminError::NotFound("no metrics in this process".into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render()))
}

fn resource_routes<T: Resource>(cfg: &mut web::ServiceConfig) {
    let all = format!("/{}", T::NAME);
    cfg.service(
        web::resource([all.clone(), format!("{all}/")])
            .route(web::get().to(list::<T>))
            .route(web::post().to(create::<T>))
            .default_service(other_methods("GET, POST")),
    )
    .service(
        web::resource(format!("{all}/{{id}}"))
            .route(web::get().to(get_one::<T>))
            .route(web::put().to(replace::<T>))
            .route(web::delete().to(delete_one::<T>))
            .default_service(other_methods("GET, PUT, DELETE")),
    );
}

async fn not_found() -> Result<HttpResponse, AdminError> {
    Err(AdminError::NotFound("no such endpoint".into()))
}

/// `405` with the `Allow` header RFC 9110 asks for.
fn other_methods(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut response = actix_web::ResponseError::error_response(&AdminError::MethodNotAllowed);
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        response
    })
}

/// Checks the bearer token before any handler runs.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if !token_ok(&req) {
        let response = actix_web::ResponseError::error_response(&AdminError::Unauthorized);
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// [`require_token`] for the Customer Data API's update endpoints, whose `401` is in their
/// own answer's shape (status `UNAUTHORIZED`).
async fn require_token_for_updates(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if !token_ok(&req) {
        return Ok(req.into_response(customer_data::unauthorized()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whether the request carries the admin token (compared in constant time).
fn token_ok(req: &ServiceRequest) -> bool {
    let expected = req
        .app_data::<web::Data<AdminState>>()
        .map(|s| s.token_digest);
    let sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| digest(t.trim().as_bytes()));
    match (expected, sent) {
        (Some(expected), Some(sent)) => bool::from(expected.ct_eq(&sent)),
        _ => false,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Paging {
    page: Option<usize>,
    page_size: Option<usize>,
}

fn paging(req: &HttpRequest) -> Result<Paging, AdminError> {
    web::Query::<Paging>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| AdminError::Invalid {
            message: format!("query string: {e}"),
            field: None,
            offset: None,
        })
}

fn sorted<T: Resource>(catalog: &Catalog) -> Vec<&T> {
    let mut all: Vec<&T> = T::all(catalog).iter().collect();
    all.sort_by_key(|o| o.id());
    all
}

async fn list<T: Resource>(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let paging = paging(&req)?;
    let snapshot = state.writer.snapshot();
    let all: Vec<T> = sorted::<T>(&snapshot.0)
        .into_iter()
        .map(T::redacted)
        .collect();
    if paging.page.is_none() && paging.page_size.is_none() {
        return Ok(HttpResponse::Ok().json(all));
    }
    let page = paging.page.unwrap_or(0);
    let size = paging.page_size.unwrap_or(10);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(AdminError::invalid(
            "pageSize",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let list: Vec<&T> = all
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "total": all.len(),
        "page": page,
        "pageSize": size,
        "list": list,
    })))
}

/// The `{id}` of the path as a number.
fn path_id<T: Resource>(req: &HttpRequest) -> Result<u64, AdminError> {
    let text = req.match_info().get("id").unwrap_or("");
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..=T::MAX_ID).contains(id))
        .ok_or_else(|| {
            AdminError::invalid(
                T::ID_FIELD,
                format!("{:?} is not a {} id", error::clip(text), T::SINGULAR),
            )
        })
}

async fn get_one<T: Resource>(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let snapshot = state.writer.snapshot();
    let raw = req.match_info().get("id").unwrap_or("");
    let found = match raw.strip_prefix("ic:") {
        Some(code) if T::HAS_INTEGRATION_CODE => resource::find_by_code::<T>(&snapshot.0, code)
            .ok_or_else(|| {
                AdminError::NotFound(format!(
                    "no {} with integrationCode {:?}",
                    T::SINGULAR,
                    error::clip(code)
                ))
            })?,
        _ => {
            let id = path_id::<T>(&req)?;
            resource::find::<T>(&snapshot.0, id).ok_or_else(|| {
                AdminError::NotFound(format!("no {} with {} {id}", T::SINGULAR, T::ID_FIELD))
            })?
        }
    };
    Ok(HttpResponse::Ok().json(found.redacted()))
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`].
async fn json_body(req: &HttpRequest, payload: web::Payload) -> Result<Value, AdminError> {
    if media_type(req).is_some_and(|m| m != "application/json") {
        return Err(AdminError::UnsupportedMediaType);
    }
    let body = read_body(req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => AdminError::TooLarge(MAX_BODY_BYTES),
            BodyError::Unreadable(why) => {
                AdminError::MalformedJson(format!("unreadable body: {why}"))
            }
        })?;
    serde_json::from_slice(&body).map_err(|e| AdminError::MalformedJson(e.to_string()))
}

async fn create<T: Resource>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let body = json_body(&req, payload).await?;
    let created: T = state
        .writer
        .change(move |c| resource::create::<T>(c, body))
        .await?;
    let location = format!("/v1/{}/{}", T::NAME, created.id());
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(created.redacted()))
}

async fn replace<T: Resource>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let id = path_id::<T>(&req)?;
    let body = json_body(&req, payload).await?;
    let replaced: T = state
        .writer
        .change(move |c| resource::replace::<T>(c, id, body))
        .await?;
    Ok(HttpResponse::Ok().json(replaced.redacted()))
}

async fn delete_one<T: Resource>(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let id = path_id::<T>(&req)?;
    state
        .writer
        .change(move |c| resource::delete::<T>(c, id))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleCode {
    code: String,
}

async fn rule_code(req: &HttpRequest, payload: web::Payload) -> Result<String, AdminError> {
    let body = json_body(req, payload).await?;
    let code: RuleCode = serde_json::from_value(body).map_err(AdminError::shape)?;
    Ok(code.code)
}

fn valid() -> HttpResponse {
    HttpResponse::build(StatusCode::OK).json(serde_json::json!({"valid": true}))
}

async fn validate_trait(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AdminError> {
    let code = rule_code(&req, payload).await?;
    TraitRule::parse(&code).map_err(|e| AdminError::rule("code", e))?;
    Ok(valid())
}

/// A segment rule is valid if it parses and every trait it names exists.
async fn validate_segment(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let code = rule_code(&req, payload).await?;
    let rule = SegmentRule::parse(&code).map_err(|e| AdminError::rule("code", e))?;
    let snapshot = state.writer.snapshot();
    if let Some(missing) = rule
        .traits()
        .iter()
        .find(|t| resource::find::<Trait>(&snapshot.0, **t).is_none())
    {
        return Err(AdminError::invalid(
            "code",
            format!("references unknown trait {missing}T"),
        ));
    }
    Ok(valid())
}
