//! Inbound data from the customer's own systems (`docs/customer-data.md`): one profile update,
//! whichever way it arrived — an op of the Customer Data API (`POST /stream/{streamId}`), a
//! DCS-style server call (`/event/s2s/{streamId}`) or a line of an inbound file — in one shape,
//! so that one function applies them all (see `apply`).
//!
//! Parsers ([`crate::core::customer_data`], [`crate::core::inbound_file`]) produce [`Op`]s;
//! they check shapes and limits. Whether a data source, a trait or an id exists is decided
//! when the op is resolved against the configuration and the catalog, and an op that fails
//! any check changes nothing.

/// At most this many identities per op (AAM's limit of customer ids per request, error 301).
pub const MAX_IDENTITIES: usize = 10;
/// At most this many trait ids per op (`traitInput.traitIds`, `d_sid`, a file line's items).
pub const MAX_TRAIT_IDS: usize = 1_000;
/// At most this many signals per op (`traitEvaluation.data`, a file line's key=value items).
pub const MAX_SIGNALS: usize = 1_000;
/// At most this many target data sources per op.
pub const MAX_TARGETS: usize = 10;
/// Longest identity value, signal key or signal value (the declared-id bound of `/event`).
pub const MAX_VALUE_BYTES: usize = 256;

/// How an identity names its data source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceName {
    /// `dataSourceId`: 0 is the AAM UUID itself, 4 an ECID, others a data source's own ids.
    DataSource(u32),
    /// `integrationCode` of a data source (`[server] integration_codes`, or `DSID_<n>`).
    IntegrationCode(String),
    /// `namespaceCode`: AAM's UIS namespaces. Parsed so that it is refused clearly.
    Namespace(String),
}

/// One identity an op acts upon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub source: SourceName,
    pub value: String,
}

/// How an op acts upon the profile (`operationType`, `d_ws`, the file's suffix).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpKind {
    /// Adds the op's traits (and removes the ones it lists for removal).
    #[default]
    Append,
    /// Replaces every trait of the one target data source with the op's traits.
    Overwrite,
    /// Removes the op's traits; with none named, every trait of the target data sources.
    Delete,
}

/// One profile update, as parsed: nothing in it is checked against the catalog yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Op {
    /// The profiles it acts upon (at least one).
    pub identities: Vec<Identity>,
    /// Traits written by id (`traitInput.traitIds`, `d_sid`, a file's `d_sid=` and bare ids).
    pub trait_ids: Vec<u64>,
    /// Traits removed by id (a file's `d_unsid=`, `<id>:0`, `<id>:-1`).
    pub remove_trait_ids: Vec<u64>,
    /// Signals evaluated against the onboarded traits of the target data sources
    /// (`traitEvaluation.data`, a file's `key=value` and `ic=` items, `/event/s2s` keys).
    pub signals: Vec<(String, String)>,
    /// `targetDataSource` / `d_tdpid`: whose onboarded traits the signals are evaluated
    /// against, and which data source an OVERWRITE replaces. Empty: the identities' own.
    pub target_data_sources: Vec<u32>,
    pub kind: OpKind,
}

/// Why an op was refused: an AAM error code (`docs/dcs-api.md`, Errors) and a message that
/// names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub code: u16,
    pub message: String,
}

impl OpError {
    /// AAM's 0, "unspecified": a malformed op.
    pub fn malformed(message: impl Into<String>) -> Self {
        OpError {
            code: 0,
            message: message.into(),
        }
    }

    /// AAM's 300, "invalid customer id": an identity that names nothing usable.
    pub fn invalid_identity(message: impl Into<String>) -> Self {
        OpError {
            code: 300,
            message: message.into(),
        }
    }

    /// AAM's 301: more identities than an op may carry.
    pub fn too_many_identities() -> Self {
        OpError {
            code: 301,
            message: format!("at most {MAX_IDENTITIES} identities per operation"),
        }
    }

    /// AAM's 302, "unauthorized customer id": a data source Tributary does not know.
    pub fn unknown_data_source(message: impl Into<String>) -> Self {
        OpError {
            code: 302,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}
