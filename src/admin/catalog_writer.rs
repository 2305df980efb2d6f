//! `CatalogWriter`: the one way the running server's catalog changes.
//!
//! Admin writes are serialized (one at a time). Each edits a copy of the current catalog,
//! compiles it — which validates every rule and reference — on a blocking thread, writes the
//! one changed object and the new version to the store in one atomic batch and flushes, and
//! only then swaps the compiled catalog in. So a change is durable before it is answered, an
//! invalid change touches nothing, and an event sees either the old catalog or the new one,
//! never half of a change (each event takes one snapshot when it starts).

use std::sync::{Arc, RwLock};

use super::error::AdminError;
use crate::catalog::Catalog;
use crate::engine::{CatalogHandle, CompiledCatalog};
use crate::store::{CatalogChange, CatalogStore};

pub struct CatalogWriter {
    /// The catalog as admins see it (the source of the compiled one), and its version.
    current: RwLock<Arc<(Catalog, u64)>>,
    writing: tokio::sync::Mutex<()>,
    store: Arc<dyn CatalogStore>,
    compiled: CatalogHandle,
}

impl CatalogWriter {
    pub fn new(
        catalog: Catalog,
        version: u64,
        store: Arc<dyn CatalogStore>,
        compiled: CatalogHandle,
    ) -> Self {
        CatalogWriter {
            current: RwLock::new(Arc::new((catalog, version))),
            writing: tokio::sync::Mutex::new(()),
            store,
            compiled,
        }
    }

    /// The current catalog and its version.
    pub fn snapshot(&self) -> Arc<(Catalog, u64)> {
        // Replaced whole under the lock, so a poisoned lock still holds a whole catalog.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `edit` to a copy of the catalog; if the result compiles, stores the change and
    /// makes the new catalog current. Returns what `edit` returned.
    pub async fn change<R: Send + 'static>(
        &self,
        edit: impl FnOnce(&mut Catalog) -> Result<(CatalogChange, R), AdminError>,
    ) -> Result<R, AdminError> {
        let _one_at_a_time = self.writing.lock().await;
        let current = self.snapshot();
        let mut next = current.0.clone();
        let (change, out) = edit(&mut next)?;
        let version = current.1 + 1;
        let store = self.store.clone();
        let (next, compiled) = actix_rt::task::spawn_blocking(move || {
            // Compiling a large catalog takes a while, and the store write flushes to disk:
            // neither may run on an HTTP worker.
            let compiled = CompiledCatalog::compile(&next, version).map_err(AdminError::from)?;
            let stored = store.apply_change(&change)?;
            let compiled = if stored == version {
                compiled
            } else {
                // The store's version moved on its own (another writer of the same store):
                // tag the catalog with the store's version so profiles re-evaluate.
                CompiledCatalog::compile(&next, stored).map_err(AdminError::from)?
            };
            Ok::<_, AdminError>(((next, stored), compiled))
        })
        .await
        .map_err(|e| AdminError::Store(format!("catalog write task failed: {e}")))??;
        self.compiled.replace(compiled);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(out)
    }
}
