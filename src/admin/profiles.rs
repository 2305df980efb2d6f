//! `GET` and `DELETE /v1/profiles/{uuid}`: what Tributary remembers about a visitor, and its
//! erasure (`docs/admin-api.md`, Profiles; `docs/privacy.md`, Erasure).
//!
//! Times are Unix seconds. `GET` shows the latest saved state (a profile is saved after every
//! event, written to disk within `store.write_delay_ms`). `DELETE` goes through the visitor's
//! session, in order with its events, and removes the profile (with its cached provider
//! answers) and the ID-sync mappings that lead to it; it answers `204` whether or not there was
//! anything to erase.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::{clip, AdminError};
use super::AdminState;
use crate::actors::visitor_session::{erase, Erasure};
use crate::core::ids::{VisitorId, ECID_DATA_SOURCE};
use crate::core::profile::Profile;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileView {
    uuid: String,
    first_seen: i64,
    last_seen: i64,
    catalog_version: u64,
    traits: Vec<TraitView>,
    segments: Vec<u64>,
    /// The device's Experience Cloud id, when one is linked (also listed in `syncedIds`,
    /// under its namespace, data source 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    ecid: Option<String>,
    synced_ids: Vec<SyncedView>,
    provider_answers: Vec<AnswerView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraitView {
    sid: u64,
    first_realization: i64,
    last_realization: i64,
    /// Realizations still counted (within the trait's TTL).
    count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncedView {
    data_source_id: u32,
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnswerView {
    pid: u32,
    segments: Vec<String>,
    expires_at: i64,
}

fn view(visitor: VisitorId, p: Profile) -> ProfileView {
    ProfileView {
        uuid: visitor.to_string(),
        first_seen: p.first_seen,
        last_seen: p.last_seen,
        catalog_version: p.catalog_version,
        traits: p
            .traits
            .iter()
            .map(|(sid, r)| TraitView {
                sid: *sid,
                first_realization: r.first,
                last_realization: r.last,
                count: r.count(),
            })
            .collect(),
        segments: p.segments,
        ecid: p.synced_ids.get(&ECID_DATA_SOURCE).cloned(),
        synced_ids: p
            .synced_ids
            .into_iter()
            .map(|(data_source_id, id)| SyncedView { data_source_id, id })
            .collect(),
        provider_answers: p
            .provider_cache
            .into_iter()
            .map(|(pid, a)| AnswerView {
                pid,
                segments: a.segments,
                expires_at: a.expires_at,
            })
            .collect(),
    }
}

fn visitor_of(req: &HttpRequest) -> Result<VisitorId, AdminError> {
    let text = req.match_info().get("uuid").unwrap_or("");
    VisitorId::parse(text).ok_or_else(|| {
        AdminError::invalid(
            "uuid",
            format!("{:?} is not a 38-digit visitor id", clip(text)),
        )
    })
}

pub async fn get_profile(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let visitor = visitor_of(&req)?;
    match state.deps.profiles.load(visitor).await? {
        Some(profile) => Ok(HttpResponse::Ok().json(view(visitor, profile))),
        None => Err(AdminError::NotFound(format!("no profile for {visitor}"))),
    }
}

pub async fn delete_profile(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let visitor = visitor_of(&req)?;
    erase(&state.deps, visitor, Erasure::Everything).await?;
    Ok(HttpResponse::NoContent().finish())
}
