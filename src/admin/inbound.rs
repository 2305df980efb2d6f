//! `POST /v1/inbound?file=<name>`, `GET /v1/inbound`, `GET /v1/inbound/{id}`: inbound files
//! (`docs/customer-data.md`, Inbound files; `crate::inbound::jobs`). The upload answers `202`
//! with the job's progress once the file is received; the job then runs on its own, and its
//! progress (lines read, applied, rejected with their numbers) is polled.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::error::{clip, AdminError};
use super::AdminState;
use crate::inbound::jobs::{UploadError, MAX_UPLOAD_BYTES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// AAM's file name: `ftp_dpm_<DPID>[_<TARGET>]_<unix secs>.sync|.overwrite[.<n>][.gz]`.
    file: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgressQuery {
    /// Only the kept errors from this index on (how `tributary onboard` prints new ones).
    #[serde(default)]
    errors_from: usize,
}

pub async fn upload(
    query: Result<web::Query<UploadQuery>, actix_web::Error>,
    mut payload: web::Payload,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let query = query.map_err(|e| AdminError::invalid("file", e.to_string()))?;
    let mut upload = state
        .jobs
        .receive(&query.file)
        .await
        .map_err(upload_error)?;
    while let Some(chunk) = payload.next().await {
        let written = match chunk {
            Ok(bytes) => upload.write(bytes).await,
            Err(e) => {
                let why = format!("the upload broke off: {e}");
                upload.abandon(&state.jobs, &why);
                return Err(AdminError::invalid("body", why));
            }
        };
        if let Err(e) = written {
            upload.abandon(&state.jobs, &e.to_string());
            return Err(upload_error(e));
        }
    }
    if upload.received() == 0 {
        upload.abandon(&state.jobs, "empty upload");
        return Err(AdminError::invalid(
            "body",
            "the file is empty: AAM refuses empty files, and so does Tributary",
        ));
    }
    let (id, job) = (upload.id, upload.job.clone());
    state.jobs.start(upload);
    log::info!("inbound job {id}: {} received", clip(&query.file));
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/inbound/{id}")))
        .json(job.progress(0)))
}

fn upload_error(e: UploadError) -> AdminError {
    match e {
        UploadError::BadName(why) => AdminError::invalid("file", why),
        UploadError::TooLarge => AdminError::TooLarge(MAX_UPLOAD_BYTES as usize),
        UploadError::Spool(why) => AdminError::Store(why),
    }
}

pub async fn list(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.jobs.list())
}

pub async fn progress(
    req: HttpRequest,
    query: Result<web::Query<ProgressQuery>, actix_web::Error>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let query = query.map_err(|e| AdminError::invalid("errorsFrom", e.to_string()))?;
    let text = req.match_info().get("id").unwrap_or("");
    let job = text
        .parse::<u64>()
        .ok()
        .and_then(|id| state.jobs.get(id))
        .ok_or_else(|| AdminError::NotFound(format!("no inbound job {:?}", clip(text))))?;
    Ok(HttpResponse::Ok().json(job.progress(query.errors_from)))
}
