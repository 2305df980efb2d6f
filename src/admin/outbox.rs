//! `GET /v1/destinations/{id}/outbox`: an S2S destination's deliveries as the delivery task
//! sees them — waiting, failed requests in a row, the last delivery and the last errors
//! (`crate::outbox::status`). The console shows it beside the destination.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{clip, AdminError};
use super::AdminState;

pub async fn status(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let raw = req.match_info().get("id").unwrap_or("");
    let unknown =
        || AdminError::NotFound(format!("no destination with destinationId {:?}", clip(raw)));
    let id: u64 = raw.parse().map_err(|_| unknown())?;
    let snapshot = state.writer.snapshot();
    if !snapshot
        .0
        .destinations
        .iter()
        .any(|d| d.destination_id == id)
    {
        return Err(unknown());
    }
    let status = state.deps.outbox.status(id);
    let mut body = serde_json::to_value(status)
        .map_err(|e| AdminError::Store(format!("cannot render the status: {e}")))?;
    body["destinationId"] = id.into();
    Ok(HttpResponse::Ok().json(body))
}
