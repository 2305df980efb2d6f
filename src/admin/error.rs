//! Every error the admin API answers, mapped to its status and JSON body in one place:
//! `{"error": {"code", "message", "field"?, "offset"?}}` (`docs/admin-api.md`, Errors). Nothing
//! on the admin listener answers with actix's default plain-text errors.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::core::catalog::CatalogError;
use crate::core::rules::RuleError;
use crate::store::StoreError;

/// Client-supplied text echoed in a message, cut to 64 bytes.
pub fn clip(text: &str) -> &str {
    crate::core::error::truncate(text, 64)
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, unknown, of the wrong type, out of range, or a rule does not parse.
    #[error("{message}")]
    Invalid {
        message: String,
        field: Option<String>,
        offset: Option<usize>,
    },
    /// The change would break a reference (e.g. deleting a trait a segment uses).
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    #[error("send application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The store failed: the change was not made.
    #[error("store unavailable: {0}")]
    Store(String),
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            message: message.into(),
            field: Some(field.into()),
            offset: None,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::MalformedJson(_) => "malformed_json",
            AdminError::Invalid { .. } => "invalid",
            AdminError::Conflict { .. } => "conflict",
            AdminError::UnsupportedMediaType => "unsupported_media_type",
            AdminError::TooLarge(_) => "too_large",
            AdminError::Store(_) => "store_unavailable",
        }
    }
}

impl From<CatalogError> for AdminError {
    fn from(e: CatalogError) -> Self {
        AdminError::Invalid {
            message: format!("{}: {}", e.object, e.message),
            field: Some(e.field.to_string()),
            offset: e.offset,
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e.to_string())
    }
}

impl AdminError {
    /// A rule error on `field` (`code` of the validate endpoints, `traitRule`, …).
    pub fn rule(field: &str, e: RuleError) -> Self {
        AdminError::Invalid {
            message: e.message,
            field: Some(field.to_string()),
            offset: Some(e.offset),
        }
    }

    /// A body that is JSON but not the object expected: serde's message, with the field it
    /// names (`unknown field `x``, `missing field `x``) when it names one.
    /// A body that does not fit the object's shape, naming the field at fault by its path
    /// (`timeoutMs`, `mappings[0].sid`).
    pub fn shape_at(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let mut error = AdminError::shape(e.into_inner());
        if let AdminError::Invalid { field, .. } = &mut error {
            if path != "." {
                *field = Some(match field.take() {
                    // An unknown field's path already ends with it; a missing one is named
                    // inside the object at `path`.
                    Some(inner) if !path.ends_with(inner.as_str()) => format!("{path}.{inner}"),
                    _ => path,
                });
            }
        }
        error
    }

    pub fn shape(e: serde_json::Error) -> Self {
        let text = e.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"))
            .map(str::to_string);
        AdminError::Invalid {
            message: text,
            field,
            offset: None,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::MalformedJson(_) | AdminError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AdminError::Conflict { .. } => StatusCode::CONFLICT,
            AdminError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (field, offset) = match self {
            AdminError::Invalid { field, offset, .. } => (field.as_deref(), *offset),
            AdminError::Conflict { field, .. } => (field.as_deref(), None),
            _ => (None, None),
        };
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(self, AdminError::Unauthorized) {
            builder.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"tributary-admin\""));
        }
        builder.json(Body {
            error: Detail {
                code: self.code(),
                message: self.to_string(),
                field,
                offset,
            },
        })
    }
}
