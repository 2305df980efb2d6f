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
    /// An authenticated profile's customer id (`docs/customer-data.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticated: Option<SyncedView>,
    /// The profiles linked to this one: a device's customer ids, an authenticated profile's
    /// devices (data source 0), newest last.
    links: Vec<LinkView>,
    /// A device's authenticated profiles (the last one per cross-device data source), as the
    /// merge rule reads them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authenticated_profiles: Vec<LinkedView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkView {
    data_source_id: u32,
    id: String,
    linked_at: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkedView {
    data_source_id: u32,
    id: String,
    traits: Vec<TraitView>,
    segments: Vec<u64>,
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

fn trait_views(p: &Profile) -> Vec<TraitView> {
    p.traits
        .iter()
        .map(|(sid, r)| TraitView {
            sid: *sid,
            first_realization: r.first,
            last_realization: r.last,
            count: r.count(),
        })
        .collect()
}

fn view(shown: String, p: Profile, linked: Vec<LinkedView>) -> ProfileView {
    ProfileView {
        uuid: shown,
        first_seen: p.first_seen,
        last_seen: p.last_seen,
        catalog_version: p.catalog_version,
        traits: trait_views(&p),
        authenticated: p
            .identity
            .clone()
            .map(|(data_source_id, id)| SyncedView { data_source_id, id }),
        links: p
            .links
            .iter()
            .map(|l| LinkView {
                data_source_id: l.dpid,
                id: l.id.clone(),
                linked_at: l.at,
            })
            .collect(),
        authenticated_profiles: linked,
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

/// The profile a path names: a device's 38-digit AAM id, or `<dataSourceId>:<customer id>`
/// for an authenticated profile of a cross-device data source.
/// The profile a path names: a 38-digit AAM id; `<dataSourceId>:<id>` of a cross-device data
/// source (that customer id's authenticated profile); or `<dataSourceId>:<id>` of any other
/// data source, ECIDs (4) among them: the device that id is synced to.
async fn visitor_of(
    req: &HttpRequest,
    state: &AdminState,
) -> Result<(VisitorId, String), AdminError> {
    let text = req.match_info().get("uuid").unwrap_or("");
    if let Some((dpid, id)) = text.split_once(':') {
        let dpid: u32 = dpid.parse().map_err(|_| {
            AdminError::invalid("uuid", format!("{:?} is not a data source id", clip(dpid)))
        })?;
        if id.is_empty() || id.len() > 512 {
            return Err(AdminError::invalid(
                "uuid",
                "after <dataSourceId>: comes an id of 1 to 512 bytes",
            ));
        }
        if state.deps.profiles_config.is_cross_device(dpid) {
            return Ok((VisitorId::authenticated(dpid, id), text.to_string()));
        }
        let link = state.deps.profiles.lookup_link(dpid, id).await?;
        return link
            .map(|l| (l.visitor, l.visitor.to_string()))
            .ok_or_else(|| {
                AdminError::NotFound(format!(
                    "no device synced to id {:?} of data source {dpid}",
                    clip(id)
                ))
            });
    }
    let visitor = VisitorId::parse(text).ok_or_else(|| {
        AdminError::invalid(
            "uuid",
            format!(
                "{:?} is neither a 38-digit visitor id nor <dataSourceId>:<id>",
                clip(text)
            ),
        )
    })?;
    Ok((visitor, visitor.to_string()))
}

pub async fn get_profile(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let (visitor, shown) = visitor_of(&req, &state).await?;
    let profile = state
        .deps
        .profiles
        .load(visitor)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no profile for {shown}")))?;
    let mut linked = Vec::new();
    if profile.identity.is_none() {
        for dpid in &state.deps.profiles_config.cross_device_data_sources {
            let Some(link) = profile.last_link(*dpid) else {
                continue;
            };
            let auth = VisitorId::authenticated(*dpid, &link.id);
            if let Some(p) = state.deps.profiles.load(auth).await? {
                linked.push(LinkedView {
                    data_source_id: *dpid,
                    id: link.id.clone(),
                    traits: trait_views(&p),
                    segments: p.segments,
                });
            }
        }
    }
    Ok(HttpResponse::Ok().json(view(shown, profile, linked)))
}

pub async fn delete_profile(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let (visitor, _) = visitor_of(&req, &state).await?;
    erase(&state.deps, visitor, Erasure::Everything).await?;
    Ok(HttpResponse::NoContent().finish())
}
