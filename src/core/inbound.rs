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
    /// Traits written by id (`traitInput.traitIds`, `d_sid`, a file's `d_sid=` and `<id>:1`).
    pub trait_ids: Vec<u64>,
    /// Traits removed by id (a file's `d_unsid=`, `<id>:0`, `<id>:-1`).
    pub remove_trait_ids: Vec<u64>,
    /// Signals evaluated against the onboarded traits of the target data sources
    /// (`traitEvaluation.data`, a file's `key=value`, `ic=` and bare items, `/event/s2s` keys).
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

/// An op checked against the catalog: the change it makes to each profile it acts upon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Onboarded traits realized (sorted, unique).
    pub add: Vec<u64>,
    /// Traits removed (sorted, unique).
    pub remove: Vec<u64>,
    /// Data sources whose traits are all removed first, but for those in `add` (OVERWRITE,
    /// and DELETE naming no trait).
    pub clear_sources: Vec<u32>,
}

/// Checks an op against the catalog and works out its change. `identity_sources` are the data
/// sources of the op's identities that own traits (a customer id's, a partner's — not the AAM
/// id's 0 or the ECID's 4): the targets when the op names none.
///
/// Every trait an op names must be an active onboarded trait of a target data source (of any
/// data source when there are no targets: an op for an AAM id alone); signals are evaluated
/// against the active onboarded traits of the targets. Nothing is changed here, so an op that
/// fails a check changes no profile.
pub fn plan(
    catalog: &crate::core::engine::CompiledCatalog,
    op: &Op,
    identity_sources: &[u32],
) -> Result<Change, OpError> {
    let mut targets = if op.target_data_sources.is_empty() {
        identity_sources.to_vec()
    } else {
        op.target_data_sources.clone()
    };
    targets.sort_unstable();
    targets.dedup();
    for &ds in &targets {
        if !catalog.knows_data_source(ds) {
            return Err(OpError::unknown_data_source(format!(
                "targetDataSource: no trait, segment or provider uses data source {ds}"
            )));
        }
    }
    let check = |field: &str, sid: u64| -> Result<(), OpError> {
        let facts = catalog
            .trait_facts(sid)
            .ok_or_else(|| OpError::malformed(format!("{field}: trait {sid} does not exist")))?;
        if !facts.onboarded {
            return Err(OpError::malformed(format!(
                "{field}: trait {sid} is rule-based; only onboarded traits are written by id"
            )));
        }
        if !facts.active {
            return Err(OpError::malformed(format!(
                "{field}: trait {sid} is inactive"
            )));
        }
        if !targets.is_empty() && !targets.contains(&facts.data_source_id) {
            return Err(OpError::malformed(format!(
                "{field}: trait {sid} belongs to data source {}, not to {}",
                facts.data_source_id,
                list(&targets)
            )));
        }
        Ok(())
    };
    for &sid in &op.trait_ids {
        check("traitIds", sid)?;
    }
    for &sid in &op.remove_trait_ids {
        check("removed traits", sid)?;
    }
    let mut matched = Vec::new();
    if !op.signals.is_empty() {
        if targets.is_empty() {
            return Err(OpError::malformed(
                "traitEvaluation: no data source to evaluate the signals against; name one in targetDataSource",
            ));
        }
        let mut signals = crate::core::signals::Signals::new();
        for (key, value) in &op.signals {
            signals.add(key.clone(), [value.clone()]);
        }
        for &ds in &targets {
            matched.extend(catalog.onboarded_matching(ds, &signals));
        }
    }
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v.dedup();
        v
    };
    let named = sorted(op.trait_ids.iter().copied().chain(matched).collect());
    let change = match op.kind {
        OpKind::Append => {
            let remove = sorted(op.remove_trait_ids.clone());
            if let Some(both) = remove.iter().find(|sid| named.binary_search(sid).is_ok()) {
                return Err(OpError::malformed(format!(
                    "trait {both} is both written and removed"
                )));
            }
            Change {
                add: named,
                remove,
                clear_sources: Vec::new(),
            }
        }
        OpKind::Overwrite => {
            if targets.len() != 1 {
                return Err(OpError::malformed(format!(
                    "OVERWRITE replaces the traits of exactly one data source, not of {}",
                    list(&targets)
                )));
            }
            Change {
                add: named,
                remove: Vec::new(),
                clear_sources: targets,
            }
        }
        OpKind::Delete => {
            let remove = sorted(
                named
                    .into_iter()
                    .chain(op.remove_trait_ids.clone())
                    .collect(),
            );
            if remove.is_empty() && targets.is_empty() {
                return Err(OpError::malformed(
                    "DELETE names no trait and no data source: name traits or a targetDataSource",
                ));
            }
            let clear_sources = if remove.is_empty() {
                targets
            } else {
                Vec::new()
            };
            Change {
                add: Vec::new(),
                remove,
                clear_sources,
            }
        }
    };
    Ok(change)
}

/// `[9001, 9002]` as a reader wants it in a message.
fn list(sources: &[u32]) -> String {
    match sources {
        [] => "no data source".into(),
        [one] => format!("data source {one}"),
        many => format!(
            "data sources {}",
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Applies a planned change to a profile at `now` and evaluates its segments again in full
/// (traits may have gone). Onboarded traits count once per profile, as AAM counts them.
/// Returns the segments after the change.
pub fn apply(
    catalog: &crate::core::engine::CompiledCatalog,
    profile: &mut crate::core::profile::Profile,
    change: &Change,
    now: i64,
) -> Vec<u64> {
    if !change.clear_sources.is_empty() {
        profile.traits.retain(|sid, _| {
            change.add.binary_search(sid).is_ok()
                || catalog
                    .trait_facts(*sid)
                    .is_none_or(|f| !change.clear_sources.contains(&f.data_source_id))
        });
    }
    for sid in &change.remove {
        profile.traits.remove(sid);
    }
    for &sid in &change.add {
        profile.realize(sid, now, true);
    }
    if profile.first_seen == 0 {
        profile.first_seen = now;
    }
    profile.last_seen = profile.last_seen.max(now);
    catalog.reevaluate(profile, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::Catalog;
    use crate::core::engine::CompiledCatalog;
    use crate::core::profile::Profile;

    fn catalog() -> CompiledCatalog {
        let c: Catalog = serde_json::from_str(
            r#"{
              "traits": [
                {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
                {"sid": 31, "name": "gold", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == gold", "dataSourceId": 9001},
                {"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == silver", "dataSourceId": 9001},
                {"sid": 33, "name": "paused", "traitType": "ON_BOARDED_TRAIT", "traitRule": "x == 1", "dataSourceId": 9001, "status": "INACTIVE"},
                {"sid": 41, "name": "partner", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == a", "dataSourceId": 7}
              ],
              "segments": [
                {"sid": 201, "name": "gold", "segmentRule": "31T", "dataSourceId": 9001},
                {"sid": 202, "name": "gold car buyers", "segmentRule": "11T AND 31T", "dataSourceId": 1}
              ]
            }"#,
        )
        .unwrap();
        CompiledCatalog::compile(&c, 1).unwrap()
    }

    fn op(kind: OpKind, ids: &[u64], signals: &[(&str, &str)], targets: &[u32]) -> Op {
        Op {
            identities: vec![Identity {
                source: SourceName::DataSource(9001),
                value: "c1".into(),
            }],
            trait_ids: ids.to_vec(),
            remove_trait_ids: Vec::new(),
            signals: signals
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target_data_sources: targets.to_vec(),
            kind,
        }
    }

    fn check(o: Op, expected: Result<Change, &str>) {
        let got = plan(&catalog(), &o, &[9001]).map_err(|e| e.message);
        assert_eq!(got, expected.map_err(str::to_string), "{o:?}");
    }

    fn change(add: &[u64], remove: &[u64], clear: &[u32]) -> Result<Change, &'static str> {
        Ok(Change {
            add: add.to_vec(),
            remove: remove.to_vec(),
            clear_sources: clear.to_vec(),
        })
    }

    #[test]
    fn ops_are_planned_against_the_catalog() {
        use OpKind::*;
        check(op(Append, &[31], &[], &[]), change(&[31], &[], &[]));
        check(
            op(Append, &[], &[("tier", "silver")], &[]),
            change(&[32], &[], &[]),
        );
        check(
            op(Append, &[31], &[("tier", "gold")], &[9001]),
            change(&[31], &[], &[]),
        );
        check(
            op(Append, &[], &[("tier", "bronze")], &[]),
            change(&[], &[], &[]),
        );
        check(
            op(Overwrite, &[32], &[], &[9001]),
            change(&[32], &[], &[9001]),
        );
        check(op(Delete, &[31], &[], &[]), change(&[], &[31], &[]));
        check(op(Delete, &[], &[], &[]), change(&[], &[], &[9001]));
        check(
            op(Append, &[99], &[], &[]),
            Err("traitIds: trait 99 does not exist"),
        );
        check(
            op(Append, &[11], &[], &[]),
            Err("traitIds: trait 11 is rule-based; only onboarded traits are written by id"),
        );
        check(
            op(Append, &[33], &[], &[]),
            Err("traitIds: trait 33 is inactive"),
        );
        check(
            op(Append, &[41], &[], &[]),
            Err("traitIds: trait 41 belongs to data source 7, not to data source 9001"),
        );
        check(
            op(Overwrite, &[], &[("tier", "gold")], &[9001, 7]),
            Err("OVERWRITE replaces the traits of exactly one data source, not of data sources 7, 9001"),
        );
        check(
            op(Append, &[31], &[], &[5]),
            Err("targetDataSource: no trait, segment or provider uses data source 5"),
        );
        let mut both = op(Append, &[31], &[], &[]);
        both.remove_trait_ids = vec![31];
        check(both, Err("trait 31 is both written and removed"));
    }

    #[test]
    fn signals_need_a_data_source_to_be_evaluated_against() {
        let o = op(OpKind::Append, &[], &[("tier", "gold")], &[]);
        let got = plan(&catalog(), &o, &[]).map_err(|e| e.message);
        assert!(got
            .unwrap_err()
            .starts_with("traitEvaluation: no data source"));
        // An AAM id alone, traits by id: any data source's onboarded traits.
        let o = op(OpKind::Append, &[31, 41], &[], &[]);
        assert_eq!(plan(&catalog(), &o, &[]).unwrap().add, [31, 41]);
    }

    #[test]
    fn applying_changes_traits_and_segments() {
        let c = catalog();
        let mut p = Profile::default();
        p.realize(11, 50, false);
        p.realize(41, 50, true);
        let segments = apply(
            &c,
            &mut p,
            &plan(&c, &op(OpKind::Append, &[31], &[], &[]), &[9001]).unwrap(),
            100,
        );
        assert_eq!(segments, [201, 202]);
        assert_eq!(p.traits[&31].count(), 1);
        apply(
            &c,
            &mut p,
            &plan(&c, &op(OpKind::Append, &[31], &[], &[]), &[9001]).unwrap(),
            200,
        );
        assert_eq!(p.traits[&31].count(), 1, "onboarded traits count once");
        let overwrite = plan(&c, &op(OpKind::Overwrite, &[32], &[], &[9001]), &[9001]).unwrap();
        assert_eq!(apply(&c, &mut p, &overwrite, 300), Vec::<u64>::new());
        assert_eq!(
            p.traits.keys().copied().collect::<Vec<_>>(),
            [11, 32, 41],
            "only 9001's traits replaced"
        );
        let delete = plan(&c, &op(OpKind::Delete, &[], &[], &[]), &[9001]).unwrap();
        apply(&c, &mut p, &delete, 400);
        assert_eq!(p.traits.keys().copied().collect::<Vec<_>>(), [11, 41]);
        assert_eq!((p.first_seen, p.last_seen), (100, 400));
    }
}
