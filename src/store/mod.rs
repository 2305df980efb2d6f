//! Persistence. This module is the only one that touches sled (DESIGN.md §1).
//!
//! Everything else talks to the [`ProfileStore`] and [`CatalogStore`] traits, so a distributed
//! backend can be added beside [`SledStore`] without changing callers. The traits are
//! synchronous on purpose: they are called only from the segment engine's own threads, never
//! from an actix-web worker.

mod codec;
mod sled_store;

pub use sled_store::SledStore;

use crate::catalog::Catalog;
use crate::ids::VisitorId;
use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A stored value cannot be decoded: it is left as it is and reported, never overwritten
    /// silently.
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Visitor profiles by visitor id.
pub trait ProfileStore: Send + Sync {
    fn load_profile(&self, visitor: VisitorId) -> Result<Option<Profile>, StoreError>;
    fn save_profile(&self, visitor: VisitorId, profile: &Profile) -> Result<(), StoreError>;
    fn delete_profile(&self, visitor: VisitorId) -> Result<(), StoreError>;
    /// Makes every acknowledged write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// The catalog (providers, traits, segments).
pub trait CatalogStore: Send + Sync {
    /// The stored catalog and its version, or `None` if none was ever stored.
    fn load_catalog(&self) -> Result<Option<(Catalog, u64)>, StoreError>;
    /// Replaces the whole catalog, bumps its version and flushes before returning.
    fn replace_catalog(&self, catalog: &Catalog) -> Result<u64, StoreError>;
}
