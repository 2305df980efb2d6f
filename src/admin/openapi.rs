//! The admin API's OpenAPI 3.1 description, served as `/openapi.json` and rendered at `/docs` by
//! the console's own script (`console.rs`: no outside assets, so it works offline). Neither
//! needs the token: they hold no data.
//!
//! The object schemas are derived by utoipa from the catalog types themselves, so they follow
//! the fields the API really accepts; the paths are generated from the same [`Resource`]
//! definitions the routes are, and a test checks every documented path against the listener.

use serde_json::{json, Map, Value};
use utoipa::openapi::ComponentsBuilder;

use super::resource::Resource;
use crate::core::catalog::{
    AskFor, Destination, DestinationType, FormatType, Mapping, Provider, Segment, Status, Trait,
    TraitType,
};

fn error_responses() -> Value {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut map = Map::new();
    for (code, what) in [
        ("400", "malformed JSON, an invalid field (with `field`) or a rule that does not parse (with `offset`)"),
        ("401", "missing or wrong bearer token"),
        ("404", "no such object"),
        ("409", "the change would break a reference"),
        ("413", "body over 1 MiB"),
        ("415", "not application/json"),
        ("503", "the store failed; nothing changed"),
    ] {
        let mut response = error.clone();
        response["description"] = Value::from(what);
        map.insert(code.to_string(), response);
    }
    Value::Object(map)
}

fn with_errors(ok: Value) -> Value {
    let mut responses = error_responses();
    if let (Value::Object(all), Value::Object(ok)) = (&mut responses, ok) {
        all.extend(ok);
    }
    responses
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn resource_paths<T: Resource>(schema: &str, paths: &mut Map<String, Value>) {
    let tag = T::NAME;
    let one = json!({"content": {"application/json": {"schema": schema_ref(schema)}}});
    let id_param = json!({"name": "id", "in": "path", "required": true,
        "description": format!("the {} (`{}`), or `ic:<integrationCode>` for GET", T::SINGULAR, T::ID_FIELD),
        "schema": {"type": "string"}});
    let mut list_ok = one.clone();
    list_ok["description"] = Value::from(format!(
        "all {}, in id order (a bare array), or one page `{{total, page, pageSize, list}}` with `page`/`pageSize`",
        T::NAME
    ));
    list_ok["content"]["application/json"]["schema"] = json!({"oneOf": [
        {"type": "array", "items": schema_ref(schema)},
        {"type": "object", "properties": {"total": {"type": "integer"}, "page": {"type": "integer"},
            "pageSize": {"type": "integer"}, "list": {"type": "array", "items": schema_ref(schema)}}}
    ]});
    let mut created = one.clone();
    created["description"] = Value::from(format!(
        "the new {} with its server-assigned id",
        T::SINGULAR
    ));
    let mut found = one.clone();
    found["description"] = Value::from(format!("the {}", T::SINGULAR));
    paths.insert(
        format!("/v1/{}", T::NAME),
        json!({
            "get": {"tags": [tag], "summary": format!("List {}", T::NAME),
                "parameters": [
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                ],
                "responses": with_errors(json!({"200": list_ok}))},
            "post": {"tags": [tag], "summary": format!("Create a {} (the server assigns `{}`)", T::SINGULAR, T::ID_FIELD),
                "requestBody": body(schema_ref(schema)),
                "responses": with_errors(json!({"201": created}))}
        }),
    );
    paths.insert(
        format!("/v1/{}/{{id}}", T::NAME),
        json!({
            "parameters": [id_param],
            "get": {"tags": [tag], "summary": format!("Get a {}", T::SINGULAR),
                "responses": with_errors(json!({"200": found.clone()}))},
            "put": {"tags": [tag], "summary": format!("Replace a {}", T::SINGULAR),
                "requestBody": body(schema_ref(schema)),
                "responses": with_errors(json!({"200": found}))},
            "delete": {"tags": [tag], "summary": format!("Delete a {}", T::SINGULAR),
                "responses": with_errors(json!({"204": {"description": "deleted"}}))}
        }),
    );
}

fn validate_path(kind: &str, paths: &mut Map<String, Value>) {
    paths.insert(
        format!("/v1/{kind}s/validate"),
        json!({"post": {"tags": [format!("{kind}s")], "summary": format!("Check a {kind} rule"),
            "requestBody": body(json!({"type": "object", "required": ["code"], "additionalProperties": false,
                "properties": {"code": {"type": "string", "maxLength": 8192}}})),
            "responses": with_errors(json!({"200": {"description": "the rule is valid",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"valid": {"type": "boolean"}}}}}}}))}}),
    );
}

/// `POST /v1/inbound`, `GET /v1/inbound`, `GET /v1/inbound/{id}` (`tributary onboard` uses them).
fn inbound_paths(paths: &mut Map<String, Value>) {
    let job = json!({"content": {"application/json": {"schema": schema_ref("InboundJob")}}});
    let mut accepted = job.clone();
    accepted["description"] = Value::from("received; the job runs on (poll the `Location`)");
    let mut one = job.clone();
    one["description"] = Value::from("the job's progress");
    paths.insert(
        "/v1/inbound".into(),
        json!({
            "get": {"tags": ["inbound"], "summary": "The last 64 import jobs, newest first (without their errors)",
                "responses": with_errors(json!({"200": {"description": "the jobs",
                    "content": {"application/json": {"schema": {"type": "array", "items": schema_ref("InboundJob")}}}}}))},
            "post": {"tags": ["inbound"], "summary": "Import an inbound file in AAM's format (the body is the file, up to 3 GiB)",
                "parameters": [{"name": "file", "in": "query", "required": true,
                    "description": "AAM's file name, `ftp_dpm_<DPID>[_<TARGET DPID>]_<unix secs>.sync|.overwrite[.<n>][.gz]`",
                    "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": with_errors(json!({"202": accepted}))}
        }),
    );
    paths.insert(
        "/v1/inbound/{id}".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "description": "the job id", "schema": {"type": "integer"}}],
            "get": {"tags": ["inbound"], "summary": "An import job's progress",
                "parameters": [{"name": "errorsFrom", "in": "query", "required": false,
                    "description": "only the kept errors from this index on", "schema": {"type": "integer"}}],
                "responses": with_errors(json!({"200": one}))}
        }),
    );
}

/// AAM's Customer Data API at its own paths (Adobe's SDK `@adobe/aio-lib-audience-manager-cd`
/// describes it in full; this is what Tributary serves of it).
fn customer_data_paths(paths: &mut Map<String, Value>) {
    let answer = json!({"description": "per-op outcome (`errors` name the 1-based op)",
        "content": {"application/json": {"schema": schema_ref("UpdateUsersDataResponse")}}});
    let stream_id = json!({"name": "streamId", "in": "path", "required": true,
        "description": "a name for the stream (letters, digits, `-`, `_`, `.`)", "schema": {"type": "string"}});
    paths.insert(
        "/stream/{streamId}".into(),
        json!({"parameters": [stream_id.clone()],
            "post": {"tags": ["customer data"], "summary": "Up to 1,000 ops (identities, traitInput, traitEvaluation, operationType) in at most 100 KB",
                "requestBody": body(json!({"type": "object", "required": ["ops"], "properties": {
                    "tracing_id": {"type": "string"}, "ops": {"type": "array", "maxItems": 1000, "items": {"type": "object"}}}})),
                "responses": with_errors(json!({"200": answer.clone()}))}}),
    );
    paths.insert(
        "/event/s2s/{streamId}".into(),
        json!({"parameters": [stream_id],
            "get": {"tags": ["customer data"], "summary": "One DCS-style update: d_cid, d_uuid, d_mid, d_sid, d_tdpid, signals",
                "responses": with_errors(json!({"200": answer.clone()}))},
            "post": {"tags": ["customer data"], "summary": "The same, as a form or a JSON object in the body",
                "responses": with_errors(json!({"200": answer}))}}),
    );
    paths.insert(
        "/profile/{dataSourceId}/{id}".into(),
        json!({"parameters": [
                {"name": "dataSourceId", "in": "path", "required": true, "schema": {"type": "integer"},
                    "description": "0 for an AAM id, 4 for an ECID, else the data source of a customer id"},
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {"tags": ["customer data"], "summary": "The profile viewer: summaries per region, traits, segments and links",
                "responses": with_errors(json!({"200": {"description": "the profile"}}))}}),
    );
}

/// The whole description.
pub fn document() -> Value {
    let components = ComponentsBuilder::new()
        .schema_from::<Provider>()
        .schema_from::<Trait>()
        .schema_from::<Segment>()
        .schema_from::<AskFor>()
        .schema_from::<TraitType>()
        .schema_from::<Status>()
        .schema_from::<Destination>()
        .schema_from::<DestinationType>()
        .schema_from::<FormatType>()
        .schema_from::<Mapping>()
        .build();
    let mut schemas = serde_json::to_value(&components)
        .ok()
        .and_then(|c| c.get("schemas").cloned())
        .unwrap_or_else(|| json!({}));
    schemas["Error"] = json!({"type": "object", "properties": {"error": {"type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
            "field": {"type": "string"}, "offset": {"type": "integer", "description": "byte offset of a rule error"}}}}});
    schemas["Profile"] = json!({"type": "object", "properties": {
        "uuid": {"type": "string"}, "firstSeen": {"type": "integer"}, "lastSeen": {"type": "integer"},
        "catalogVersion": {"type": "integer"},
        "traits": {"type": "array", "items": {"type": "object", "properties": {"sid": {"type": "integer"},
            "firstRealization": {"type": "integer"}, "lastRealization": {"type": "integer"}, "count": {"type": "integer"}}}},
        "segments": {"type": "array", "items": {"type": "integer"}},
        "ecid": {"type": "string", "description": "the device's Experience Cloud id, when one is linked"},
        "syncedIds": {"type": "array", "items": {"type": "object", "properties": {"dataSourceId": {"type": "integer"}, "id": {"type": "string"}}}},
        "providerAnswers": {"type": "array", "items": {"type": "object", "properties": {"pid": {"type": "integer"},
            "segments": {"type": "array", "items": {"type": "string"}}, "expiresAt": {"type": "integer"}}}}}});

    let mut paths = Map::new();
    resource_paths::<Provider>("Provider", &mut paths);
    resource_paths::<Trait>("Trait", &mut paths);
    resource_paths::<Segment>("Segment", &mut paths);
    resource_paths::<Destination>("Destination", &mut paths);
    validate_path("trait", &mut paths);
    validate_path("segment", &mut paths);
    paths.insert(
        "/v1/profiles/{uuid}".into(),
        json!({
            "parameters": [{"name": "uuid", "in": "path", "required": true,
                "description": "the 38-digit visitor id, or `<dataSourceId>:<id>`: a cross-device data source's authenticated profile, else the device synced to that id (ECIDs: `4:<ecid>`)",
                "schema": {"type": "string"}}],
            "get": {"tags": ["profiles"], "summary": "What is remembered about a visitor (times in Unix seconds)",
                "responses": with_errors(json!({"200": {"description": "the profile",
                    "content": {"application/json": {"schema": schema_ref("Profile")}}}}))},
            "delete": {"tags": ["profiles"], "summary": "Erase every trace of a visitor (idempotent)",
                "responses": with_errors(json!({"204": {"description": "erased"}}))}
        }),
    );

    schemas["InboundJob"] = json!({"type": "object", "properties": {
        "jobId": {"type": "integer"}, "file": {"type": "string"},
        "state": {"type": "string", "enum": ["receiving", "running", "done", "failed"]},
        "bytesReceived": {"type": "integer"}, "lines": {"type": "integer", "description": "lines read so far"},
        "applied": {"type": "integer"}, "rejected": {"type": "integer", "description": "lines refused; nothing of them applied"},
        "failed": {"type": "integer", "description": "lines the store failed: import the file again"},
        "errors": {"type": "array", "description": "the first 1,000 refused lines", "items": {"type": "object",
            "properties": {"line": {"type": "integer"}, "message": {"type": "string"}}}},
        "message": {"type": "string", "description": "why a failed job stopped"},
        "startedAt": {"type": "integer"}, "finishedAt": {"type": "integer"}}});
    schemas["UpdateUsersDataResponse"] = json!({"type": "object", "properties": {
        "transactionId": {"type": "string"}, "tracingId": {"type": "string", "description": "the request's tracing_id"},
        "status": {"type": "string", "enum": ["SUCCESS", "PARTIAL_SUCCESS", "BAD_REQUEST", "UNAUTHORIZED", "INTERNAL_ERROR"]},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "operationIndex": {"type": "integer", "description": "1-based index of the op"},
            "details": {"type": "array", "items": {"type": "object", "properties": {
                "errorCode": {"type": "integer"}, "message": {"type": "string"}}}}}}}}});
    paths.insert(
        "/v1/metrics".into(),
        json!({"get": {"tags": ["operations"], "summary": "The server's Prometheus metrics (as the public /metrics), behind the token",
            "responses": with_errors(json!({"200": {"description": "Prometheus text format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}))}}),
    );
    paths.insert(
        "/v1/destinations/{id}/outbox".into(),
        json!({"parameters": [{"name": "id", "in": "path", "required": true, "description": "the destinationId", "schema": {"type": "integer"}}],
            "get": {"tags": ["destinations"], "summary": "An S2S destination's deliveries: waiting, failed requests in a row, the last delivery and the last 10 errors (in memory since start)",
            "responses": with_errors(json!({"200": {"description": "{destinationId, waiting, failuresInARow, lastDeliveredAt, lastErrors: [{at, message}]}"}}))}}),
    );
    paths.insert(
        "/v1/events/try".into(),
        json!({"post": {"tags": ["operations"], "summary": "Send a real /event to this server's public listener (the console's \"Try an event\"): the answer and its time",
            "requestBody": body(json!({"type": "object", "additionalProperties": false, "properties": {
                "signals": {"type": "object", "additionalProperties": {"type": "string"}, "description": "up to 50 signals, e.g. {\"c_page\": \"cars\"}"},
                "uuid": {"type": "string", "description": "send as this visitor (38 digits); none = a new one"}}})),
            "responses": with_errors(json!({"200": {"description": "{request, status, elapsedMs, answer}"}}))}}),
    );
    inbound_paths(&mut paths);
    customer_data_paths(&mut paths);

    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tributary admin API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage providers, traits, segments, destinations and visitor profiles (AAM field names); take in the customer's own data through AAM's Customer Data API and inbound files. Changes are durable once answered and live for the next event."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "[admin] token"}}}
    })
}
