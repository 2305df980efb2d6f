//! The customer's own data, applied (`docs/customer-data.md`): an [`Op`] — from the Customer
//! Data API, `/event/s2s` or an inbound file — has its identities resolved to profiles, is
//! checked against the catalog ([`crate::core::inbound::plan`]) and is then applied by each
//! profile's session ([`crate::actors::visitor_session::update`]), in order with the
//! profile's events.
//!
//! Identities, by data source:
//! - 0: the AAM id itself (38 digits): that device.
//! - a cross-device data source (`[profiles] cross_device_data_sources`): the customer id's
//!   authenticated profile, created by its first change.
//! - 4 (ECID) and any other known data source: the device the id is synced to; an id nobody
//!   synced yet gets a new device, synced to it (AAM: "creating one if needed").
//!
//! An op is checked whole before anything is written, so a refused op changes nothing. An op
//! naming several identities changes each profile; a device and a customer id named together
//! are linked, as when the device declares the id.

pub mod jobs;

use std::collections::HashMap;

use crate::actors::visitor_session::{update, ProfileUpdate, SessionDeps};
use crate::core::engine::CompiledCatalog;
use crate::core::ids::{Ecid, VisitorId, ECID_DATA_SOURCE};
use crate::core::inbound::{self, Identity, Op, OpError, SourceName};
use crate::store::IdLink;

/// Why an op was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpFailure {
    /// The op is wrong (AAM's BAD_REQUEST): nothing was changed.
    Refused(OpError),
    /// The store or a session failed (AAM's INTERNAL_ERROR): the op may be sent again.
    Internal(String),
}

impl OpFailure {
    /// The AAM error code and message reported for it.
    pub fn detail(&self) -> (u16, String) {
        match self {
            OpFailure::Refused(e) => (e.code, e.message.clone()),
            OpFailure::Internal(why) => (0, format!("not applied, send it again: {why}")),
        }
    }
}

impl From<OpError> for OpFailure {
    fn from(e: OpError) -> Self {
        OpFailure::Refused(e)
    }
}

/// A profile an identity leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Device {
        visitor: VisitorId,
        /// The id the device was found or created by, to record as its ID sync when new.
        sync: Option<(u32, String)>,
    },
    Authenticated {
        visitor: VisitorId,
        dpid: u32,
        id: String,
    },
}

impl Target {
    pub fn visitor(&self) -> VisitorId {
        match self {
            Target::Device { visitor, .. } | Target::Authenticated { visitor, .. } => *visitor,
        }
    }
}

/// Applies ops; cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    deps: SessionDeps,
    /// `[server] integration_codes`, keys lower-cased (codes match case-insensitively).
    codes: HashMap<String, u32>,
}

impl Inbound {
    pub fn new(deps: SessionDeps, codes: &HashMap<String, u32>) -> Self {
        Inbound {
            deps,
            codes: codes
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
        }
    }

    pub fn deps(&self) -> &SessionDeps {
        &self.deps
    }

    /// The data source an identity names, if Tributary knows it.
    pub fn data_source(
        &self,
        catalog: &CompiledCatalog,
        source: &SourceName,
    ) -> Result<u32, OpError> {
        let dpid = match source {
            SourceName::DataSource(dpid) => *dpid,
            SourceName::IntegrationCode(code) => {
                let lower = code.to_ascii_lowercase();
                self.codes
                    .get(&lower)
                    .copied()
                    .or_else(|| lower.strip_prefix("dsid_").and_then(|n| n.parse().ok()))
                    .ok_or_else(|| {
                        OpError::unknown_data_source(format!(
                            "integrationCode {code:?} names no data source ([server] integration_codes)"
                        ))
                    })?
            }
            SourceName::Namespace(code) => {
                return Err(OpError::invalid_identity(format!(
                    "namespaceCode {code:?}: Tributary has no identity namespaces; name the data source by dataSourceId or integrationCode"
                )))
            }
        };
        let known = dpid == 0
            || dpid == ECID_DATA_SOURCE
            || self.deps.profiles_config.is_cross_device(dpid)
            || catalog.knows_data_source(dpid)
            || self.codes.values().any(|&d| d == dpid);
        if known {
            Ok(dpid)
        } else {
            Err(OpError::unknown_data_source(format!(
                "data source {dpid} is unknown: no trait, segment or provider uses it, and it is neither a cross-device data source nor in [server] integration_codes"
            )))
        }
    }

    /// The profile `identity` leads to. With `create`, an id nobody synced gets a new device
    /// (and the mapping to it is queued); without, `None`.
    pub async fn resolve(
        &self,
        catalog: &CompiledCatalog,
        identity: &Identity,
        create: bool,
        now: i64,
    ) -> Result<Option<Target>, OpFailure> {
        let dpid = self.data_source(catalog, &identity.source)?;
        let value = identity.value.as_str();
        if dpid == 0 {
            let visitor = VisitorId::parse(value).ok_or_else(|| OpError {
                code: 102,
                message: format!("{value:?} is not an AAM id (38 digits)"),
            })?;
            return Ok(Some(Target::Device {
                visitor,
                sync: None,
            }));
        }
        if self.deps.profiles_config.is_cross_device(dpid) {
            return Ok(Some(Target::Authenticated {
                visitor: VisitorId::authenticated(dpid, value),
                dpid,
                id: value.to_owned(),
            }));
        }
        let id = if dpid == ECID_DATA_SOURCE {
            Ecid::parse(value)
                .ok_or_else(|| OpError {
                    code: 101,
                    message: format!("{value:?} is not an Experience Cloud id"),
                })?
                .as_str()
                .to_owned()
        } else {
            value.to_owned()
        };
        let profiles = &self.deps.profiles;
        match profiles.lookup_link(dpid, &id).await {
            Ok(Some(link)) => Ok(Some(Target::Device {
                visitor: link.visitor,
                sync: None,
            })),
            Ok(None) if create => {
                let new = IdLink {
                    visitor: VisitorId::generate(),
                    at: now,
                };
                // Another op may be creating a device for this id right now: one of them wins.
                let holds = profiles
                    .link_if_absent(dpid, &id, new)
                    .await
                    .map_err(|e| OpFailure::Internal(e.to_string()))?;
                Ok(Some(Target::Device {
                    visitor: holds.visitor,
                    sync: (holds == new).then_some((dpid, id)),
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(OpFailure::Internal(e.to_string())),
        }
    }

    /// Applies one op at `now` (Unix seconds, the realizations' date).
    pub async fn apply(&self, op: &Op, now: i64) -> Result<(), OpFailure> {
        let catalog = self.deps.catalog.current();
        // Every identity is checked before any is created or changed.
        for identity in &op.identities {
            self.data_source(&catalog, &identity.source)?;
        }
        let mut found = Vec::with_capacity(op.identities.len());
        let mut sources = Vec::new();
        for identity in &op.identities {
            let dpid = self.data_source(&catalog, &identity.source)?;
            if dpid != 0 && dpid != ECID_DATA_SOURCE {
                sources.push(dpid);
            }
            let target = self.resolve(&catalog, identity, false, now).await?;
            if let Some(Target::Device { visitor, .. }) = &target {
                if self.deps.profiles.is_opted_out(*visitor) {
                    return Err(OpError {
                        code: 171,
                        message: format!("visitor {visitor} opted out"),
                    }
                    .into());
                }
            }
            found.push(target);
        }
        let change = inbound::plan(&catalog, op, &sources)?;
        // Checked: only now are devices created for ids nobody synced yet.
        let mut targets: Vec<Target> = Vec::with_capacity(found.len());
        for (identity, target) in op.identities.iter().zip(found) {
            let target = match target {
                Some(t) => t,
                None => match self.resolve(&catalog, identity, true, now).await? {
                    Some(t) => t,
                    None => continue,
                },
            };
            if !targets.iter().any(|t| t.visitor() == target.visitor()) {
                targets.push(target);
            }
        }
        let devices: Vec<VisitorId> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Device { visitor, .. } => Some(*visitor),
                Target::Authenticated { .. } => None,
            })
            .collect();
        let people: Vec<(u32, String)> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Authenticated { dpid, id, .. } => Some((*dpid, id.clone())),
                Target::Device { .. } => None,
            })
            .collect();
        for target in &targets {
            let mut change_here = ProfileUpdate::new(catalog.clone(), now);
            change_here.change = Some(change.clone());
            match target {
                Target::Device { visitor, sync } => {
                    change_here.sync.clone_from(sync);
                    // One link per op, to the first customer id it names.
                    change_here.link = people.first().cloned();
                    update(&self.deps, *visitor, change_here, true).await
                }
                Target::Authenticated { visitor, dpid, id } => {
                    change_here.identity = Some((*dpid, id.clone()));
                    change_here.link = devices.first().map(|d| (0, d.to_string()));
                    update(&self.deps, *visitor, change_here, true).await
                }
            }
            .map_err(|e| OpFailure::Internal(e.to_string()))?;
        }
        Ok(())
    }
}
