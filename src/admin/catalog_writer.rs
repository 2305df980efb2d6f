//! `CatalogWriter`: the one way the running server's catalog changes.
//!
//! Admin writes are serialized (one at a time). Each edits a copy of the current catalog,
//! compiles it — which validates every rule and reference — on a blocking thread, writes the
//! one changed object and the new version to the store in one atomic batch and flushes, and
//! only then swaps the compiled catalog in. So a change is durable before it is answered, an
//! invalid change touches nothing, and an event sees either the old catalog or the new one,
//! never half of a change (each event takes one snapshot when it starts).
//!
//! With a shared store (many nodes), every node polls the stored catalog version
//! ([`CatalogWriter::refresh`], four times a second) and loads a catalog another node changed;
//! and a change starts from the stored catalog, not from this node's copy.

use std::sync::{Arc, RwLock};

use super::error::AdminError;
use crate::core::catalog::Catalog;
use crate::core::engine::{CatalogHandle, CompiledCatalog};
use crate::store::{CatalogChange, CatalogStore};

pub struct CatalogWriter {
    /// The catalog as admins see it (the source of the compiled one), and its version.
    current: RwLock<Arc<(Catalog, u64)>>,
    writing: tokio::sync::Mutex<()>,
    store: Arc<dyn CatalogStore>,
    compiled: CatalogHandle,
    /// Other nodes change the same stored catalog.
    shared: bool,
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
            shared: false,
        }
    }

    /// For a store other nodes change too: each change starts from the stored catalog.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Loads the stored catalog if its version is not the one in use (another node changed
    /// it), compiles it and swaps it in. `true` if it did.
    pub async fn reload_if_changed(&self) -> Result<bool, AdminError> {
        let current = self.snapshot().1;
        let store = self.store.clone();
        let loaded = actix_rt::task::spawn_blocking(move || {
            if store.catalog_version()? == Some(current) {
                return Ok::<_, AdminError>(None);
            }
            let Some((catalog, version)) = store.load_catalog()? else {
                return Ok(None);
            };
            let compiled = CompiledCatalog::compile(&catalog, version)?;
            Ok(Some(((catalog, version), compiled)))
        })
        .await
        .map_err(|e| AdminError::Store(format!("catalog reload task failed: {e}")))??;
        let Some((next, compiled)) = loaded else {
            return Ok(false);
        };
        log::info!("catalog v{} loaded: changed on another node", next.1);
        self.compiled.replace(compiled);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(true)
    }

    /// Serialized with admin writes: a reload never interleaves with this node's own change.
    pub async fn refresh(&self) -> Result<bool, AdminError> {
        let _one_at_a_time = self.writing.lock().await;
        self.reload_if_changed().await
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
        if self.shared {
            // Another node may have changed the catalog: edit the latest one.
            self.reload_if_changed().await?;
        }
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
            if stored == version {
                return Ok::<_, AdminError>(((next, stored), compiled));
            }
            // Another node changed the catalog at the same moment: the store holds both
            // changes, so that is the catalog to serve.
            let (latest, at) = store.load_catalog()?.unwrap_or((next, stored));
            let compiled = CompiledCatalog::compile(&latest, at).map_err(|e| {
                AdminError::Store(format!(
                    "the change is stored, but with a simultaneous change from another node the \
                     catalog no longer compiles ({e}); fix it with another change"
                ))
            })?;
            Ok(((latest, at), compiled))
        })
        .await
        .map_err(|e| AdminError::Store(format!("catalog write task failed: {e}")))??;
        self.compiled.replace(compiled);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(out)
    }
}
