//! AAM's Customer Data API on the admin listener, at the paths of Adobe's OpenAPI description
//! (`docs/customer-data.md`), so Adobe's Node SDK works with only its server URL changed:
//!
//! - `POST /stream/{streamId}`: up to 1,000 ops in ≤ 100 KB; each applied or refused on its
//!   own, so one bad op never loses the good ones.
//! - `GET|POST /event/s2s/{streamId}`: one DCS-style update.
//! - `GET /profile/{dataSourceId}/{id}`: the profile viewer.
//!
//! Same bearer token as `/v1` (Adobe's SDK sends its access token that way, with `x-api-key`,
//! which is not checked, and `x-gw-ims-org-id`, checked against `[admin] org_id` when that is
//! set). The two update endpoints answer in the API's own shape, `UpdateUsersDataResponse`,
//! errors included: every answer of theirs is made by [`Answer::respond`].

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::{clip, AdminError};
use super::AdminState;
use crate::core::catalog::{Catalog, Status, TraitType};
use crate::core::clock::{unix_now, utc_text};
use crate::core::customer_data::{
    parse_s2s, parse_stream, s2s_body_pairs, valid_stream_id, MAX_STREAM_BODY,
};
use crate::core::ids::{Tid, ECID_DATA_SOURCE};
use crate::core::inbound::{Identity, SourceName};
use crate::core::profile::Profile;
use crate::inbound::{OpFailure, Target};
use crate::routes::body::{read_body, BodyError};

/// `UpdateUsersDataResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateResponse {
    transaction_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracing_id: Option<String>,
    status: &'static str,
    errors: Vec<ResponseError>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseError {
    /// 1-based; absent for an error of the request as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_index: Option<usize>,
    details: Vec<ErrorDetail>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    error_code: u16,
    message: String,
    /// Tributary's addition: the field at fault and the byte offset in the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
}

/// What became of a request, before it is written out.
struct Answer {
    tid: Tid,
    tracing_id: Option<String>,
    applied: usize,
    refused: usize,
    failed: usize,
    errors: Vec<ResponseError>,
    /// A refusal of the whole request: its status and error.
    whole: Option<(StatusCode, &'static str, ErrorDetail)>,
}

impl Answer {
    fn new() -> Self {
        Answer {
            tid: Tid::next(),
            tracing_id: None,
            applied: 0,
            refused: 0,
            failed: 0,
            errors: Vec::new(),
            whole: None,
        }
    }

    fn refuse(mut self, status: StatusCode, message: String, field: Option<&str>) -> Self {
        let label = if status == StatusCode::UNAUTHORIZED {
            "UNAUTHORIZED"
        } else {
            "BAD_REQUEST"
        };
        self.whole = Some((
            status,
            label,
            ErrorDetail {
                error_code: 0,
                message,
                field: field.map(str::to_string),
                offset: None,
            },
        ));
        self
    }

    fn op_failed(&mut self, index: usize, failure: &OpFailure) {
        match failure {
            OpFailure::Refused(_) => self.refused += 1,
            OpFailure::Internal(why) => {
                self.failed += 1;
                log::warn!(tid = self.tid.as_str(); "inbound op {index} not applied: {why}");
            }
        }
        let (error_code, message) = failure.detail();
        self.errors.push(ResponseError {
            operation_index: Some(index),
            details: vec![ErrorDetail {
                error_code,
                message,
                field: None,
                offset: None,
            }],
        });
    }

    /// SUCCESS when every op was applied, PARTIAL_SUCCESS when some were, else BAD_REQUEST
    /// (400) or, when the store failed them, INTERNAL_ERROR (503: send them again).
    fn respond(self, source: &'static str) -> HttpResponse {
        for (result, n) in [
            ("applied", self.applied),
            ("refused", self.refused),
            ("failed", self.failed),
        ] {
            if n > 0 {
                metrics::counter!("tributary_inbound_ops_total", "source" => source, "result" => result)
                    .increment(n as u64);
            }
        }
        let (status, label, errors) = match self.whole {
            Some((status, label, detail)) => (
                status,
                label,
                vec![ResponseError {
                    operation_index: None,
                    details: vec![detail],
                }],
            ),
            None => {
                let (status, label) = match (self.applied, self.refused, self.failed) {
                    (_, 0, 0) => (StatusCode::OK, "SUCCESS"),
                    (1.., _, _) => (StatusCode::OK, "PARTIAL_SUCCESS"),
                    (0, _, 0) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
                    (0, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR"),
                };
                (status, label, self.errors)
            }
        };
        log::debug!(tid = self.tid.as_str(); "{source}: {label}, {} applied, {} refused, {} failed", self.applied, self.refused, self.failed);
        HttpResponse::build(status).json(UpdateResponse {
            transaction_id: self.tid.as_str().to_string(),
            tracing_id: self.tracing_id,
            status: label,
            errors,
        })
    }
}

/// The `401` of the update endpoints, in their own shape (the bearer-token middleware's).
pub fn unauthorized() -> HttpResponse {
    Answer::new()
        .refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
            Some("Authorization"),
        )
        .respond("auth")
}

/// The org id check: with `[admin] org_id` set, the header (and `d_orgid`, where sent) must
/// name it. The bearer token is checked before any of this, by the same middleware as `/v1`.
fn org_refusal(state: &AdminState, req: &HttpRequest, d_orgid: Option<&str>) -> Option<String> {
    let expected = state.org_id.as_str();
    if expected.is_empty() {
        return None;
    }
    let header = req
        .headers()
        .get("x-gw-ims-org-id")
        .and_then(|v| v.to_str().ok());
    for (what, sent) in [("x-gw-ims-org-id", header), ("d_orgid", d_orgid)] {
        match sent {
            Some(sent) if sent == expected => {}
            None if what == "d_orgid" => {}
            Some(sent) => {
                return Some(format!(
                    "{what} {:?} is not this server's organization",
                    clip(sent)
                ))
            }
            None => return Some(format!("{what} is required")),
        }
    }
    None
}

fn stream_id_refusal(req: &HttpRequest) -> Option<String> {
    let id = req.match_info().get("streamId").unwrap_or("");
    valid_stream_id(id).err()
}

async fn body_of(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<u8>, (StatusCode, String)> {
    read_body(req, payload, MAX_STREAM_BODY)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_STREAM_BODY} bytes, the Customer Data API's limit: split the ops over several requests"),
            ),
            BodyError::Unreadable(why) => (StatusCode::BAD_REQUEST, format!("body not read: {why}")),
        })
}

/// `POST /stream/{streamId}`.
pub async fn stream(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let mut answer = Answer::new();
    if let Some(why) = org_refusal(&state, &req, None) {
        return answer
            .refuse(StatusCode::UNAUTHORIZED, why, Some("x-gw-ims-org-id"))
            .respond("stream");
    }
    if let Some(why) = stream_id_refusal(&req) {
        return answer
            .refuse(StatusCode::BAD_REQUEST, why, Some("streamId"))
            .respond("stream");
    }
    let body = match body_of(&req, payload).await {
        Ok(body) => body,
        Err((status, why)) => return answer.refuse(status, why, None).respond("stream"),
    };
    let parsed = match parse_stream(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let mut answer = answer.refuse(StatusCode::BAD_REQUEST, e.message, Some(&e.field));
            if let Some((_, _, detail)) = &mut answer.whole {
                detail.offset = e.offset;
            }
            return answer.respond("stream");
        }
    };
    answer.tracing_id = parsed.tracing_id;
    let now = unix_now();
    // In order: two ops for one profile are applied as sent.
    for (i, op) in parsed.ops.iter().enumerate() {
        let result = match op {
            Ok(op) => state.inbound.apply(op, now).await,
            Err(e) => Err(OpFailure::Refused(e.clone())),
        };
        match result {
            Ok(()) => answer.applied += 1,
            Err(failure) => answer.op_failed(i + 1, &failure),
        }
    }
    answer.respond("stream")
}

/// `GET|POST /event/s2s/{streamId}`.
pub async fn event_s2s(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let mut answer = Answer::new();
    if let Some(why) = stream_id_refusal(&req) {
        return answer
            .refuse(StatusCode::BAD_REQUEST, why, Some("streamId"))
            .respond("s2s");
    }
    // A POST's parameters are its body; a GET's, its query (decoded as strictly).
    let source = if req.method() == actix_web::http::Method::POST {
        match body_of(&req, payload).await {
            Ok(body) => body,
            Err((status, why)) => return answer.refuse(status, why, None).respond("s2s"),
        }
    } else {
        req.query_string().as_bytes().to_vec()
    };
    let pairs = match s2s_body_pairs(&source) {
        Ok(pairs) => pairs,
        Err(e) => {
            return answer
                .refuse(StatusCode::BAD_REQUEST, e.message, None)
                .respond("s2s")
        }
    };
    let parsed = parse_s2s(
        pairs
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into())),
    );
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            answer.op_failed(1, &OpFailure::Refused(e));
            return answer.respond("s2s");
        }
    };
    if let Some(why) = org_refusal(&state, &req, request.org_id.as_deref()) {
        return answer
            .refuse(StatusCode::UNAUTHORIZED, why, Some("d_orgid"))
            .respond("s2s");
    }
    match state.inbound.apply(&request.op, unix_now()).await {
        Ok(()) => answer.applied += 1,
        Err(failure) => answer.op_failed(1, &failure),
    }
    answer.respond("s2s")
}

/// The profile viewer's answer.
#[derive(Serialize)]
struct ViewerAnswer {
    summaries: Vec<Summary>,
    profile: ViewerProfile,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    region_id: String,
    source: &'static str,
    profile_summary: ProfileSummary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileSummary {
    first_party_traits_count: usize,
    third_party_traits_count: usize,
    segments_count: usize,
}

#[derive(Serialize)]
struct ViewerProfile {
    id: String,
    namespace: Namespace,
    data: ViewerData,
    links: Vec<ViewerLink>,
}

#[derive(Serialize)]
struct Namespace {
    id: String,
    #[serde(rename = "integration code")]
    integration_code: String,
    #[serde(rename = "data provider name")]
    data_provider_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct ViewerData {
    traits: Vec<ViewerTrait>,
    segments: Vec<ViewerSegment>,
}

#[derive(Serialize)]
struct ViewerTrait {
    id: u64,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    description: String,
    #[serde(rename = "data provider name")]
    data_provider_name: String,
    #[serde(rename = "last realization")]
    last_realization: String,
}

#[derive(Serialize)]
struct ViewerSegment {
    id: u64,
    name: String,
    description: String,
    #[serde(rename = "data provider name")]
    data_provider_name: String,
    active: bool,
}

#[derive(Serialize)]
struct ViewerLink {
    id: String,
    namespace: Namespace,
    #[serde(rename = "linking datetime")]
    linking_datetime: String,
}

/// What the viewer says about data sources: names come from the providers and the
/// integration codes.
struct Names<'a> {
    catalog: &'a Catalog,
    state: &'a AdminState,
}

impl Names<'_> {
    fn provider(&self, dpid: u32) -> Option<&str> {
        self.catalog
            .providers
            .iter()
            .find(|p| p.data_source_id == dpid)
            .map(|p| p.name.as_str())
    }

    fn code(&self, dpid: u32) -> Option<&str> {
        self.state
            .integration_codes
            .iter()
            .find(|(_, &d)| d == dpid)
            .map(|(code, _)| code.as_str())
    }

    /// Whose data this data source's traits are.
    fn owner(&self, dpid: u32) -> String {
        self.provider(dpid)
            .or_else(|| self.code(dpid))
            .map_or_else(|| format!("data source {dpid}"), str::to_string)
    }

    fn namespace(&self, dpid: u32) -> Namespace {
        let (code, kind) = match dpid {
            0 => ("CORE".to_string(), "COOKIE"),
            ECID_DATA_SOURCE => ("ECID".to_string(), "DEVICE"),
            _ if self
                .state
                .inbound
                .deps()
                .profiles_config
                .is_cross_device(dpid) =>
            {
                (self.code(dpid).unwrap_or("").to_string(), "CROSS_DEVICE")
            }
            _ => (self.code(dpid).unwrap_or("").to_string(), "DEVICE"),
        };
        Namespace {
            id: dpid.to_string(),
            integration_code: code,
            data_provider_name: if dpid == 0 || dpid == ECID_DATA_SOURCE {
                "Tributary".into()
            } else {
                self.owner(dpid)
            },
            kind,
        }
    }
}

fn viewer_answer(
    names: &Names<'_>,
    region: u32,
    in_region: bool,
    dpid: u32,
    id: &str,
    p: &Profile,
) -> ViewerAnswer {
    let catalog = names.catalog;
    let traits: Vec<ViewerTrait> = p
        .traits
        .iter()
        .filter(|_| in_region)
        .filter_map(|(sid, r)| {
            let t = catalog.traits.iter().find(|t| t.sid == *sid)?;
            let third_party = t.trait_type == TraitType::OnBoardedTrait
                && names.provider(t.data_source_id).is_some();
            Some(ViewerTrait {
                id: *sid,
                name: t.name.clone(),
                kind: if third_party {
                    "3rd party"
                } else {
                    "1st party"
                },
                description: t.description.clone(),
                data_provider_name: names.owner(t.data_source_id),
                last_realization: utc_text(r.last),
            })
        })
        .collect();
    let segments: Vec<ViewerSegment> = p
        .segments
        .iter()
        .filter(|_| in_region)
        .filter_map(|sid| {
            let s = catalog.segments.iter().find(|s| s.sid == *sid)?;
            Some(ViewerSegment {
                id: *sid,
                name: s.name.clone(),
                description: s.description.clone(),
                data_provider_name: names.owner(s.data_source_id),
                active: s.status == Status::Active,
            })
        })
        .collect();
    let third = traits.iter().filter(|t| t.kind == "3rd party").count();
    let summaries = if in_region {
        vec![Summary {
            region_id: region.to_string(),
            source: "REALTIME",
            profile_summary: ProfileSummary {
                first_party_traits_count: traits.len() - third,
                third_party_traits_count: third,
                segments_count: segments.len(),
            },
        }]
    } else {
        Vec::new()
    };
    ViewerAnswer {
        summaries,
        profile: ViewerProfile {
            id: id.to_string(),
            namespace: names.namespace(dpid),
            data: ViewerData { traits, segments },
            links: p
                .links
                .iter()
                .map(|l| ViewerLink {
                    id: l.id.clone(),
                    namespace: names.namespace(l.dpid),
                    linking_datetime: utc_text(l.at),
                })
                .collect(),
        },
    }
}

/// Whether `filter[regionId]` (`7,9`) admits this server's region; `Err` names a bad value.
fn region_admitted(req: &HttpRequest, region: u32) -> Result<bool, AdminError> {
    let mut admitted = true;
    for (key, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if key != "filter[regionId]" {
            return Err(AdminError::invalid(
                key.as_ref(),
                format!("unknown query parameter {:?}", clip(&key)),
            ));
        }
        let regions: Result<Vec<u32>, _> = value.split(',').map(|r| r.trim().parse()).collect();
        let regions = regions.map_err(|_| {
            AdminError::invalid(
                "filter[regionId]",
                format!("{:?} is not a list of region ids like 7,9", clip(&value)),
            )
        })?;
        admitted = regions.contains(&region);
    }
    Ok(admitted)
}

/// `GET /profile/{dataSourceId}/{id}`: `404` for an id nobody has.
pub async fn profile(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let text = req.match_info().get("dataSourceId").unwrap_or("");
    let dpid: u32 = text.parse().map_err(|_| {
        AdminError::invalid(
            "dataSourceId",
            format!("{:?} is not a data source id", clip(text)),
        )
    })?;
    let id = req.match_info().get("id").unwrap_or("").to_string();
    let region = state.region;
    let in_region = region_admitted(&req, region)?;
    let snapshot = state.writer.snapshot();
    let inbound = &state.inbound;
    let catalog = inbound.deps().catalog.current();
    let identity = Identity {
        source: SourceName::DataSource(dpid),
        value: id.clone(),
    };
    let target = inbound
        .resolve(&catalog, &identity, false, unix_now())
        .await
        .map_err(|e| match e {
            OpFailure::Refused(e) => AdminError::invalid("id", e.message),
            OpFailure::Internal(why) => AdminError::Store(why),
        })?;
    let missing = || AdminError::NotFound(format!("no profile for {id:?} in data source {dpid}"));
    let target = target.ok_or_else(missing)?;
    let profile = inbound
        .deps()
        .profiles
        .load(target.visitor())
        .await?
        .ok_or_else(missing)?;
    let names = Names {
        catalog: &snapshot.0,
        state: &state,
    };
    let shown_id = match &target {
        Target::Authenticated { id, .. } => id.clone(),
        Target::Device { .. } => id.clone(),
    };
    Ok(HttpResponse::Ok().json(viewer_answer(
        &names, region, in_region, dpid, &shown_id, &profile,
    )))
}
