//! Qualification: from an event (signals, provider answers, `d_sid`) and a profile to realized
//! traits and segment membership. Pure CPU, no actix, no store.
//!
//! [`CompiledCatalog`] is built once per catalog version and shared read-only (`Arc`) by every
//! event, so an event always sees one whole catalog. It indexes what the evaluation needs so
//! that an event's cost follows its own signals and the visitor's traits, not the catalog:
//! - rule-based traits that are exact text equality (`k == "v"`, `k in [a, b]`) by key and
//!   value: found with one hash lookup per signal value and never evaluated;
//! - other rule-based traits by the signal keys their rules read (plus the few rules that can
//!   match without any of their keys, like `NOT a == 1`);
//! - onboarded traits by data source, indexed the same way, evaluated only against that data
//!   source's answers;
//! - segments by the traits they reference: a segment can only match a visitor who holds one
//!   of its traits (rules that could match otherwise are refused at save time).
//!
//! Segment membership is kept in the profile and updated incrementally. It can change only
//! when a referenced trait appears or disappears, when a trait counted by a `FREQUENCY` is
//! realized again, or when a day passes (realizations expire and recency windows move at UTC
//! midnight, never in between). So an event re-evaluates only the segments touched by what it
//! realized, and the first event of a visitor on a new day (or under a new catalog version)
//! expires old realizations and re-evaluates every segment of the visitor's traits — a cost
//! that follows the visitor, once a day.

use std::collections::{HashMap, HashSet};

/// Maps of the compiled catalog. Their keys come from the catalog (an admin's input), never
/// from events, so a fast non-cryptographic hasher cannot be flooded by visitors; events only
/// look keys up.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::{Arc, RwLock};

use crate::core::catalog::{Catalog, CatalogError, Provider, Status, TraitType};
use crate::core::profile::{day_of, Profile, Realization};
use crate::core::rules::segment_rule::{Recency, SegmentRule, TraitHistory};
use crate::core::rules::trait_rule::TraitRule;
use crate::core::signals::Signals;

struct RuleTrait {
    sid: u64,
    data_source_id: u32,
    rule: TraitRule,
}

/// What the engine knows about any trait, whatever its type: everything an event needs about
/// a realized trait sits in one entry, one hash lookup away.
#[derive(Clone, Debug)]
struct TraitInfo {
    /// TTL in days; 0 never expires.
    ttl_days: u32,
    onboarded: bool,
    active: bool,
    data_source_id: u32,
    /// Segments that reference the trait: re-evaluated when it appears or disappears.
    segments: Vec<usize>,
    /// Segments whose `FREQUENCY` counts it: re-evaluated on each of its realizations.
    counting_segments: Vec<usize>,
}

/// Trait rules indexed so that an event looks only at rules it can satisfy.
#[derive(Default)]
struct RuleIndex {
    rules: Vec<RuleTrait>,
    /// Exact-text rules (`k == "v"`, `k in [...]`): key → value → rules that value realizes.
    /// They are never evaluated: one hash lookup per signal value finds them.
    by_value: FastMap<String, FastMap<String, Vec<usize>>>,
    /// Other rules by the keys they read, evaluated when the event carries one of them.
    by_key: FastMap<String, Vec<usize>>,
    /// Rules that can match without any of their keys (`NOT a == 1`): evaluated every time.
    unconditional: Vec<usize>,
}

impl RuleIndex {
    fn push(&mut self, t: RuleTrait) {
        let i = self.rules.len();
        if let Some((key, values)) = t.rule.equality() {
            let by_value = self.by_value.entry(key.to_string()).or_default();
            for v in values {
                by_value.entry(v.to_string()).or_default().push(i);
            }
        } else {
            if t.rule.matches_without_signals() {
                self.unconditional.push(i);
            }
            for key in t.rule.keys() {
                self.by_key.entry(key.clone()).or_default().push(i);
            }
        }
        self.rules.push(t);
    }

    /// Appends the traits whose rules `signals` satisfy (possibly repeated), among those
    /// whose data source `in_scope` admits.
    fn matching(&self, signals: &Signals, in_scope: impl Fn(u32) -> bool, out: &mut Vec<u64>) {
        let mut candidates: Vec<usize> = Vec::new();
        for (key, values) in signals.iter() {
            if let Some(by_value) = self.by_value.get(key) {
                let hits = values.iter().filter_map(|v| by_value.get(v.as_str()));
                for &i in hits.flatten() {
                    let t = &self.rules[i];
                    if in_scope(t.data_source_id) {
                        out.push(t.sid);
                    }
                }
            }
            if let Some(rules) = self.by_key.get(key) {
                candidates.extend(rules);
            }
        }
        candidates.extend(&self.unconditional);
        candidates.sort_unstable();
        candidates.dedup();
        for i in candidates {
            let t = &self.rules[i];
            if in_scope(t.data_source_id) && t.rule.matches(signals) {
                out.push(t.sid);
            }
        }
    }
}

/// The evaluation-ready catalog.
pub struct CompiledCatalog {
    version: u64,
    /// Enabled providers, in catalog order.
    providers: Vec<Arc<Provider>>,
    traits: FastMap<u64, TraitInfo>,
    rule_traits: RuleIndex,
    /// Onboarded traits by data source: evaluated against that source's answer only.
    onboarded_by_source: FastMap<u32, RuleIndex>,
    segments: Vec<(u64, SegmentRule)>,
    /// Every data source a provider, trait or segment names (enabled or not): the ones
    /// declared ids may use.
    data_sources: std::collections::BTreeSet<u32>,
    /// Destinations, for the answer's `stuff` and `dests`.
    destinations: Vec<crate::core::catalog::Destination>,
}

/// One provider's segments for this event (fresh or cached).
pub struct ProviderSegments<'a> {
    pub data_source_id: u32,
    pub segments: &'a [String],
}

/// An event as the engine sees it.
pub struct EventInput<'a> {
    pub signals: &'a Signals,
    pub providers: &'a [ProviderSegments<'a>],
    /// `d_sid`: traits realized directly.
    pub sids: &'a [u64],
    /// `d_tdpid`: only traits of this data source are evaluated.
    pub tdpid: Option<u32>,
    /// Unix seconds.
    pub now: i64,
    /// Provider answers that arrived after the event was answered: only onboarded traits are
    /// evaluated (against those answers); the signals and `d_sid` were already applied.
    pub answers_only: bool,
}

/// What an evaluation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Traits realized by this event (sorted).
    pub realized: Vec<u64>,
    /// Segments the visitor is in after this event (sorted).
    pub segments: Vec<u64>,
}

impl CompiledCatalog {
    /// Validates and compiles a catalog.
    pub fn compile(catalog: &Catalog, version: u64) -> Result<CompiledCatalog, CatalogError> {
        let parsed = catalog.parse_rules()?;
        let providers = catalog
            .providers
            .iter()
            .filter(|p| p.enabled)
            .cloned()
            .map(Arc::new)
            .collect();

        let mut traits = FastMap::default();
        let mut rule_traits = RuleIndex::default();
        let mut onboarded_by_source: FastMap<u32, RuleIndex> = FastMap::default();
        for (t, rule) in catalog.traits.iter().zip(parsed.traits) {
            let onboarded = t.trait_type == TraitType::OnBoardedTrait;
            let active = t.status == Status::Active;
            traits.insert(
                t.sid,
                TraitInfo {
                    ttl_days: t.ttl,
                    onboarded,
                    active,
                    data_source_id: t.data_source_id,
                    segments: Vec::new(),
                    counting_segments: Vec::new(),
                },
            );
            if !active {
                continue;
            }
            let compiled = RuleTrait {
                sid: t.sid,
                data_source_id: t.data_source_id,
                rule,
            };
            if onboarded {
                onboarded_by_source
                    .entry(t.data_source_id)
                    .or_default()
                    .push(compiled);
            } else {
                rule_traits.push(compiled);
            }
        }

        // Validation guarantees every referenced trait is in the catalog.
        let mut segments = Vec::new();
        for (s, rule) in catalog.segments.iter().zip(parsed.segments) {
            if s.status != Status::Active {
                continue;
            }
            let index = segments.len();
            for t in rule.traits() {
                if let Some(info) = traits.get_mut(t) {
                    info.segments.push(index);
                }
            }
            for t in rule.counted_traits() {
                if let Some(info) = traits.get_mut(t) {
                    info.counting_segments.push(index);
                }
            }
            segments.push((s.sid, rule));
        }

        let data_sources = catalog
            .providers
            .iter()
            .map(|p| p.data_source_id)
            .chain(catalog.traits.iter().map(|t| t.data_source_id))
            .chain(catalog.segments.iter().map(|s| s.data_source_id))
            .collect();
        Ok(CompiledCatalog {
            version,
            data_sources,
            destinations: catalog.destinations.clone(),
            providers,
            traits,
            rule_traits,
            onboarded_by_source,
            segments,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Drops realizations past their trait's TTL, and traits no longer in the catalog (what an
    /// evaluation does on a new day, for the retention sweep). `true` if anything changed.
    pub fn expire_realizations(&self, profile: &mut Profile, now: i64) -> bool {
        let today = day_of(now);
        let mut changed = false;
        profile.traits.retain(|sid, r| {
            let before = r.days.len();
            let keep = match self.traits.get(sid) {
                Some(info) => r.expire(today, info.ttl_days),
                None => false,
            };
            changed |= !keep || r.days.len() != before;
            keep
        });
        changed
    }

    pub fn destinations(&self) -> &[crate::core::catalog::Destination] {
        &self.destinations
    }

    /// Whether a provider, trait or segment of the catalog uses data source `dpid`.
    pub fn knows_data_source(&self, dpid: u32) -> bool {
        self.data_sources.contains(&dpid)
    }

    /// Enabled providers.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Traits in the catalog (active or not).
    pub fn trait_count(&self) -> usize {
        self.traits.len()
    }

    /// Active segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Qualifies the event against the profile: realizes traits, prunes expired and deleted
    /// ones, evaluates segments and records them in the profile.
    pub fn evaluate(&self, profile: &mut Profile, event: &EventInput<'_>) -> Evaluation {
        let now = event.now;
        let in_scope = |ds: u32| event.tdpid.is_none_or(|only| only == ds);
        let mut realized = Vec::new();

        if !event.answers_only {
            self.rule_traits
                .matching(event.signals, in_scope, &mut realized);
        }

        // Onboarded traits, each against its own data source's answer only.
        for answer in event.providers {
            let Some(index) = self.onboarded_by_source.get(&answer.data_source_id) else {
                continue;
            };
            if !in_scope(answer.data_source_id) {
                continue;
            }
            let mut segment_signals = Signals::new();
            segment_signals.add("segment", answer.segments.iter().cloned());
            index.matching(&segment_signals, |_| true, &mut realized);
        }

        // d_sid: realize known, active traits directly.
        if !event.answers_only {
            realized.extend(
                event
                    .sids
                    .iter()
                    .filter(|sid| self.traits.get(sid).is_some_and(|t| t.active))
                    .copied(),
            );
        }

        realized.sort_unstable();
        realized.dedup();

        let today = day_of(now);
        let full = profile.catalog_version != self.version || day_of(profile.last_seen) != today;
        if full {
            // Expired realizations, and after a catalog change deleted traits, stop counting.
            profile.traits.retain(|sid, r| match self.traits.get(sid) {
                Some(info) => r.expire(today, info.ttl_days),
                None => false,
            });
        }

        // Traits that appeared, and traits counted by some FREQUENCY that were realized again.
        let mut touched: Vec<&[usize]> = Vec::new();
        for sid in &realized {
            let Some(info) = self.traits.get(sid) else {
                continue;
            };
            if !profile.holds(*sid) {
                touched.push(&info.segments);
            } else {
                touched.push(&info.counting_segments);
            }
            profile.realize(*sid, now, info.onboarded);
        }

        let history = History {
            traits: &profile.traits,
            merged: &[],
            today,
        };
        if full {
            profile.segments = self.all_segments(&history);
            profile.catalog_version = self.version;
        } else {
            let mut candidates: Vec<usize> = touched.into_iter().flatten().copied().collect();
            candidates.sort_unstable();
            candidates.dedup();
            let mut segments = std::mem::take(&mut profile.segments);
            for i in candidates {
                let (sid, rule) = &self.segments[i];
                let member = rule.matches(&history);
                match (segments.binary_search(sid), member) {
                    (Err(at), true) => segments.insert(at, *sid),
                    (Ok(at), false) => {
                        segments.remove(at);
                    }
                    _ => {}
                }
            }
            profile.segments = segments;
        }

        if profile.first_seen == 0 {
            profile.first_seen = now;
        }
        profile.last_seen = now;
        let segments = profile.segments.clone();
        Evaluation { realized, segments }
    }
}

type Traits = std::collections::BTreeMap<u64, Realization>;

impl CompiledCatalog {
    /// Every segment the history qualifies for (sorted): only segments of traits it holds can
    /// match (rules that could match otherwise are refused at save time).
    fn all_segments(&self, history: &History<'_>) -> Vec<u64> {
        let mut candidates: HashSet<usize> = HashSet::new();
        for traits in std::iter::once(history.traits).chain(history.merged.iter().copied()) {
            for sid in traits.keys() {
                if let Some(info) = self.traits.get(sid) {
                    candidates.extend(info.segments.iter());
                }
            }
        }
        let mut segments: Vec<u64> = candidates
            .into_iter()
            .filter(|&i| self.segments[i].1.matches(history))
            .map(|i| self.segments[i].0)
            .collect();
        segments.sort_unstable();
        segments
    }

    /// [`Self::evaluate`] against the profile merged with `linked` ones (a device with its
    /// authenticated profile; `docs/customer-data.md`, Merge rules). The event's realizations
    /// go to `profile` when `merge.realize_here`, else nowhere (the caller writes them to the
    /// linked profile they belong to); they count in the segments either way. Segments are
    /// those of the merged traits — the profile's own only with `merge.use_own` — evaluated
    /// in full, as the linked profiles change elsewhere, and the profile is left marked so
    /// that its next evaluation alone is in full too.
    pub fn evaluate_merged(
        &self,
        profile: &mut Profile,
        linked: &mut [Profile],
        event: &EventInput<'_>,
        merge: Merge,
    ) -> Evaluation {
        let now = event.now;
        // Which traits the event realizes, as the plain evaluation finds them.
        let realized = self.evaluate(&mut profile.clone(), event).realized;
        self.expire_realizations(profile, now);
        for other in linked.iter_mut() {
            self.expire_realizations(other, now);
        }
        let mut fresh = Profile::default();
        for sid in &realized {
            if let Some(info) = self.traits.get(sid) {
                if merge.realize_here {
                    profile.realize(*sid, now, info.onboarded);
                }
                fresh.realize(*sid, now, info.onboarded);
            }
        }
        let nothing = Traits::new();
        let own = if merge.use_own {
            &profile.traits
        } else {
            &nothing
        };
        let mut merged: Vec<&Traits> = linked.iter().map(|p| &p.traits).collect();
        if !(merge.use_own && merge.realize_here) {
            merged.push(&fresh.traits);
        }
        let history = History {
            traits: own,
            merged: &merged,
            today: day_of(now),
        };
        let segments = self.all_segments(&history);
        profile.segments = segments.clone();
        // Version 0 is never a catalog's: the next evaluation alone starts over in full.
        profile.catalog_version = 0;
        if profile.first_seen == 0 {
            profile.first_seen = now;
        }
        profile.last_seen = now;
        Evaluation { realized, segments }
    }

    /// The profile's segments evaluated again in full, after an inbound change to its traits
    /// (expired realizations dropped first).
    pub fn reevaluate(&self, profile: &mut Profile, now: i64) -> Vec<u64> {
        self.expire_realizations(profile, now);
        let history = History {
            traits: &profile.traits,
            merged: &[],
            today: day_of(now),
        };
        profile.segments = self.all_segments(&history);
        profile.catalog_version = self.version;
        profile.segments.clone()
    }

    /// What the inbound data path checks about a trait; `None` for one not in the catalog.
    pub fn trait_facts(&self, sid: u64) -> Option<TraitFacts> {
        self.traits.get(&sid).map(|t| TraitFacts {
            onboarded: t.onboarded,
            active: t.active,
            data_source_id: t.data_source_id,
        })
    }

    /// Active onboarded traits of data source `dpid` whose rules `signals` satisfy (sorted).
    pub fn onboarded_matching(&self, dpid: u32, signals: &Signals) -> Vec<u64> {
        let mut out = Vec::new();
        if let Some(index) = self.onboarded_by_source.get(&dpid) {
            index.matching(signals, |_| true, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A profile's traits as segment rules see them on `today`, with those of the profiles merged
/// with it (`docs/customer-data.md`, Merge rules): a superset of traits whose counts add up.
struct History<'a> {
    traits: &'a Traits,
    merged: &'a [&'a Traits],
    today: u32,
}

impl TraitHistory for History<'_> {
    fn holds(&self, trait_id: u64) -> bool {
        self.traits.contains_key(&trait_id) || self.merged.iter().any(|t| t.contains_key(&trait_id))
    }

    fn count(&self, trait_id: u64, recency: Option<Recency>) -> u64 {
        std::iter::once(self.traits)
            .chain(self.merged.iter().copied())
            .filter_map(|t| t.get(&trait_id))
            .map(|r| r.count_recent(self.today, recency))
            .sum()
    }
}

/// How [`CompiledCatalog::evaluate_merged`] treats the profile it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merge {
    /// Its own traits count (not under "current authenticated profiles" alone).
    pub use_own: bool,
    /// The event's realizations are written to it (else to a linked profile, by the caller).
    pub realize_here: bool,
}

/// What the inbound data path needs to know about one trait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraitFacts {
    pub onboarded: bool,
    pub active: bool,
    pub data_source_id: u32,
}

/// The current compiled catalog, swapped whole when the catalog changes.
///
/// Readers clone the inner `Arc` under a read lock held for a few nanoseconds and then work
/// on their snapshot without any lock, so a swap never blocks evaluation and no event sees
/// half of a change.
#[derive(Clone)]
pub struct CatalogHandle(Arc<RwLock<Arc<CompiledCatalog>>>);

impl CatalogHandle {
    pub fn new(catalog: CompiledCatalog) -> Self {
        CatalogHandle(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    pub fn current(&self) -> Arc<CompiledCatalog> {
        // A writer cannot panic half-way through replacing an Arc, so a poisoned lock still
        // holds a whole catalog.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, catalog: CompiledCatalog) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> CompiledCatalog {
        let c: Catalog = serde_json::from_str(
            r#"{
              "providers": [
                {"pid": 1, "name": "acme", "url": "http://127.0.0.1:9/", "dataSourceId": 1001},
                {"pid": 2, "name": "off", "url": "http://127.0.0.1:9/", "dataSourceId": 1002, "enabled": false}
              ],
              "traits": [
                {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
                {"sid": 12, "name": "no-coupon", "traitType": "RULE_BASED_TRAIT", "traitRule": "NOT c_coupon == yes", "dataSourceId": 2},
                {"sid": 13, "name": "short", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_x == 1", "dataSourceId": 1, "ttl": 1},
                {"sid": 14, "name": "forever", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_y == 1", "dataSourceId": 1, "ttl": 0},
                {"sid": 15, "name": "paused", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1, "status": "INACTIVE"},
                {"sid": 21, "name": "intender", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == auto", "dataSourceId": 1001}
              ],
              "segments": [
                {"sid": 101, "name": "auto", "segmentRule": "11T AND 21T", "dataSourceId": 1},
                {"sid": 102, "name": "cars or short", "segmentRule": "11T OR 13T", "dataSourceId": 1},
                {"sid": 103, "name": "cars not coupon", "segmentRule": "11T AND NOT 12T", "dataSourceId": 1}
              ]
            }"#,
        )
        .unwrap();
        CompiledCatalog::compile(&c, 1).unwrap()
    }

    fn signals(pairs: &[(&str, &str)]) -> Signals {
        let mut s = Signals::new();
        for (k, v) in pairs {
            s.add(*k, [v.to_string()]);
        }
        s
    }

    fn merged_catalog() -> CompiledCatalog {
        let c: Catalog = serde_json::from_str(
            r#"{
              "traits": [
                {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
                {"sid": 31, "name": "gold", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == gold", "dataSourceId": 9001},
                {"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == silver", "dataSourceId": 9001}
              ],
              "segments": [
                {"sid": 201, "name": "gold car buyers", "segmentRule": "11T AND 31T", "dataSourceId": 1},
                {"sid": 202, "name": "keen", "segmentRule": "FREQUENCY([11T]) >= 3", "dataSourceId": 1}
              ]
            }"#,
        )
        .unwrap();
        CompiledCatalog::compile(&c, 1).unwrap()
    }

    const BOTH: Merge = Merge {
        use_own: true,
        realize_here: true,
    };
    const ELSEWHERE: Merge = Merge {
        use_own: true,
        realize_here: false,
    };

    #[test]
    fn current_authenticated_alone_ignores_the_device_s_own_traits() {
        let c = merged_catalog();
        let mut device = Profile::default();
        device.realize(31, 100, true);
        let s = signals(&[("c_page", "cars")]);
        let alone = Merge {
            use_own: false,
            realize_here: true,
        };
        let e = c.evaluate_merged(&mut device, &mut [], &input(&s, 200), alone);
        assert_eq!(e.realized, [11]);
        assert_eq!(
            e.segments,
            Vec::<u64>::new(),
            "31 is the device's: not counted"
        );
        assert!(device.holds(11), "but the realization is written to it");
    }

    fn page_view(now: i64) -> (Signals, i64) {
        (signals(&[("c_page", "cars")]), now)
    }

    fn input<'a>(s: &'a Signals, now: i64) -> EventInput<'a> {
        EventInput {
            signals: s,
            providers: &[],
            sids: &[],
            tdpid: None,
            now,
            answers_only: false,
        }
    }

    #[test]
    fn merged_evaluation_sees_a_superset_whose_frequencies_add_up() {
        let c = merged_catalog();
        let mut auth = Profile::default();
        auth.realize(31, 100, true);
        auth.realize(11, 100, false);
        let mut device = Profile::default();
        let (s, now) = page_view(200);
        // On the device: 11 realized here, 31 only on the authenticated profile.
        let e = c.evaluate_merged(&mut device, &mut [auth.clone()], &input(&s, now), BOTH);
        assert_eq!(e.realized, [11]);
        assert_eq!(e.segments, [201], "11T AND 31T across the two profiles");
        assert_eq!(device.traits[&11].count(), 1);
        assert!(
            !device.holds(31),
            "nothing is copied from the linked profile"
        );
        // A third view: 2 on the device + 1 on the linked profile.
        c.evaluate_merged(&mut device, &mut [auth.clone()], &input(&s, 300), BOTH);
        assert_eq!(device.segments, [201, 202]);
        // Alone again, its next evaluation is in full, over its own two views only.
        assert_eq!(device.catalog_version, 0);
        let alone = c.evaluate(&mut device, &input(&Signals::new(), 400));
        assert_eq!(
            alone.segments,
            Vec::<u64>::new(),
            "without 31T and with 2 views only"
        );
    }

    #[test]
    fn merged_evaluation_can_leave_realizations_to_the_linked_profile() {
        let c = merged_catalog();
        let mut auth = Profile::default();
        auth.realize(31, 100, true);
        let mut device = Profile::default();
        let (s, now) = page_view(200);
        let e = c.evaluate_merged(&mut device, &mut [auth], &input(&s, now), ELSEWHERE);
        assert_eq!(
            e.realized,
            [11],
            "the caller writes it to the authenticated profile"
        );
        assert_eq!(e.segments, [201], "and it counts already");
        assert!(device.traits.is_empty());
        assert_eq!(device.segments, [201]);
        assert_eq!(device.last_seen, 200);
    }

    #[test]
    fn linked_realizations_past_their_ttl_do_not_count() {
        let c = merged_catalog();
        let mut auth = Profile::default();
        auth.realize(31, 0, true);
        let mut device = Profile::default();
        // Default TTL 120 days: 31 is gone by day 200.
        let (s, now) = page_view(200 * crate::core::profile::SECS_PER_DAY);
        let e = c.evaluate_merged(&mut device, &mut [auth], &input(&s, now), BOTH);
        assert_eq!(e.segments, Vec::<u64>::new());
    }

    #[test]
    fn inbound_helpers_answer_about_traits_and_onboarded_rules() {
        let c = merged_catalog();
        assert_eq!(
            c.trait_facts(31),
            Some(TraitFacts {
                onboarded: true,
                active: true,
                data_source_id: 9001
            })
        );
        assert_eq!(c.trait_facts(99), None);
        assert_eq!(
            c.onboarded_matching(9001, &signals(&[("tier", "gold")])),
            [31]
        );
        assert!(c
            .onboarded_matching(1, &signals(&[("tier", "gold")]))
            .is_empty());
        let mut p = Profile::default();
        p.realize(11, 100, false);
        p.realize(31, 100, true);
        assert_eq!(c.reevaluate(&mut p, 200), [201]);
        assert_eq!(p.catalog_version, 1);
    }

    fn run(
        c: &CompiledCatalog,
        p: &mut Profile,
        pairs: &[(&str, &str)],
        answers: &[(u32, &[&str])],
        now: i64,
    ) -> Evaluation {
        let owned: Vec<(u32, Vec<String>)> = answers
            .iter()
            .map(|(ds, segs)| (*ds, segs.iter().map(|s| s.to_string()).collect()))
            .collect();
        let providers: Vec<ProviderSegments<'_>> = owned
            .iter()
            .map(|(ds, segs)| ProviderSegments {
                data_source_id: *ds,
                segments: segs,
            })
            .collect();
        let s = signals(pairs);
        c.evaluate(
            p,
            &EventInput {
                signals: &s,
                providers: &providers,
                sids: &[],
                tdpid: None,
                now,
                answers_only: false,
            },
        )
    }

    #[test]
    fn rule_and_onboarded_traits_make_segments() {
        let c = catalog();
        assert_eq!(c.providers().len(), 1, "disabled providers are left out");
        let mut p = Profile::default();
        let e = run(
            &c,
            &mut p,
            &[("c_page", "cars"), ("c_coupon", "yes")],
            &[(1001, &["auto"])],
            1000,
        );
        assert_eq!(
            e.realized,
            [11, 21],
            "12 (NOT c_coupon == yes) is not realized"
        );
        assert_eq!(e.segments, [101, 102, 103]);
        assert_eq!(p.segments, [101, 102, 103]);
        assert_eq!(p.first_seen, 1000);
    }

    #[test]
    fn unconditional_rules_match_events_without_their_keys() {
        let c = catalog();
        let mut p = Profile::default();
        let e = run(&c, &mut p, &[("c_page", "cars")], &[], 10);
        assert_eq!(e.realized, [11, 12]);
        assert_eq!(e.segments, [102]);
    }

    #[test]
    fn traits_from_earlier_visits_count_and_onboarded_counts_once() {
        let c = catalog();
        let mut p = Profile::default();
        run(&c, &mut p, &[("c_coupon", "yes")], &[(1001, &["auto"])], 10);
        run(&c, &mut p, &[("c_coupon", "yes")], &[(1001, &["auto"])], 20);
        assert_eq!(p.traits[&21].count(), 1);
        let e = run(
            &c,
            &mut p,
            &[("c_page", "cars"), ("c_coupon", "yes")],
            &[],
            30,
        );
        assert_eq!(e.realized, [11]);
        assert_eq!(
            e.segments,
            [101, 102, 103],
            "21T from an earlier visit still counts"
        );
        assert_eq!(p.traits[&11].count(), 1);
    }

    #[test]
    fn answers_only_feed_their_own_data_source() {
        let c = catalog();
        let mut p = Profile::default();
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[(1002, &["auto"])], 10);
        assert!(e.realized.is_empty());
    }

    const DAY: i64 = crate::core::profile::SECS_PER_DAY;

    #[test]
    fn ttl_expiry_prunes_and_segments_follow() {
        let c = catalog();
        let mut p = Profile::default();
        // Trait 13 has a one-day TTL: realized on day 0, it counts through day 1.
        run(
            &c,
            &mut p,
            &[("c_x", "1"), ("c_y", "1"), ("c_coupon", "yes")],
            &[],
            3600,
        );
        assert!(p.traits.contains_key(&13));
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], 2 * DAY - 1);
        assert_eq!(e.segments, [102]);
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], 2 * DAY);
        assert!(e.segments.is_empty());
        assert!(!p.traits.contains_key(&13), "expired realization is pruned");
        assert!(p.traits.contains_key(&14), "ttl 0 never expires");
    }

    #[test]
    fn a_new_realization_extends_the_ttl() {
        let c = catalog();
        let mut p = Profile::default();
        run(&c, &mut p, &[("c_x", "1"), ("c_coupon", "yes")], &[], 10);
        run(
            &c,
            &mut p,
            &[("c_x", "1"), ("c_coupon", "yes")],
            &[],
            DAY + 10,
        );
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], 2 * DAY + 10);
        assert_eq!(
            e.segments,
            [102],
            "the day-1 realization holds through day 2"
        );
        assert_eq!(p.traits[&13].count(), 1, "the day-0 one has expired");
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], 3 * DAY);
        assert!(e.segments.is_empty());
    }

    fn frequency_catalog() -> CompiledCatalog {
        let c: Catalog = serde_json::from_str(
            r#"{
              "traits": [
                {"sid": 31, "name": "view", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == x", "dataSourceId": 1},
                {"sid": 32, "name": "buy", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_buy == 1", "dataSourceId": 1, "ttl": 3}
              ],
              "segments": [
                {"sid": 201, "name": "3 views", "segmentRule": "FREQUENCY([31T]) >= 3", "dataSourceId": 1},
                {"sid": 202, "name": "2 views in 1 day", "segmentRule": "FREQUENCY([31T] <= 1D) >= 2", "dataSourceId": 1},
                {"sid": 203, "name": "viewed 2+ days ago", "segmentRule": "31T AND FREQUENCY([31T] >= 2D) >= 1", "dataSourceId": 1},
                {"sid": 204, "name": "exactly 2", "segmentRule": "FREQUENCY([31T, 32T]) == 2", "dataSourceId": 1},
                {"sid": 205, "name": "2 buys in a week", "segmentRule": "FREQUENCY([32T] <= 7D) >= 2", "dataSourceId": 1}
              ]
            }"#,
        )
        .unwrap();
        CompiledCatalog::compile(&c, 1).unwrap()
    }

    #[test]
    fn frequency_segments_qualify_on_the_nth_realization() {
        let c = frequency_catalog();
        let mut p = Profile::default();
        let view = [("c_page", "x")];
        assert!(run(&c, &mut p, &view, &[], 100).segments.is_empty());
        assert_eq!(run(&c, &mut p, &view, &[], 200).segments, [202, 204]);
        assert_eq!(
            run(&c, &mut p, &view, &[], 300).segments,
            [201, 202],
            "third view: 201 in, 204 (exactly 2) out"
        );
        assert_eq!(p.traits[&31].count(), 3);
    }

    #[test]
    fn recency_windows_move_with_the_days_without_new_realizations() {
        let c = frequency_catalog();
        let mut p = Profile::default();
        for t in [100, 200, 300] {
            run(&c, &mut p, &[("c_page", "x")], &[], t);
        }
        assert_eq!(p.segments, [201, 202]);
        let e = run(&c, &mut p, &[("c_other", "1")], &[], DAY + 5);
        assert_eq!(e.segments, [201, 202], "day 1: within <=1D still");
        let e = run(&c, &mut p, &[("c_other", "1")], &[], 2 * DAY + 5);
        assert!(e.realized.is_empty());
        assert_eq!(
            e.segments,
            [201, 203],
            "day 2: out of <=1D, into >=2D, with nothing realized"
        );
    }

    #[test]
    fn expired_realizations_stop_counting_in_frequencies() {
        let c = frequency_catalog();
        let mut p = Profile::default();
        run(&c, &mut p, &[("c_buy", "1")], &[], 10);
        let e = run(&c, &mut p, &[("c_buy", "1")], &[], 2 * DAY);
        assert_eq!(e.segments, [204, 205]);
        // Trait 32 has a 3-day TTL: the day-0 buy is gone on day 4, the day-2 one on day 6.
        let e = run(&c, &mut p, &[], &[], 4 * DAY);
        assert!(e.segments.is_empty());
        assert_eq!(p.traits[&32].days, [(2, 1)]);
        run(&c, &mut p, &[], &[], 6 * DAY);
        assert!(!p.traits.contains_key(&32));
    }

    #[test]
    fn onboarded_realizations_count_once_in_frequencies() {
        let c: Catalog = serde_json::from_str(
            r#"{
              "providers": [{"pid": 1, "name": "acme", "url": "http://127.0.0.1:9/", "dataSourceId": 1001}],
              "traits": [{"sid": 21, "name": "intender", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == auto", "dataSourceId": 1001}],
              "segments": [{"sid": 301, "name": "twice", "segmentRule": "FREQUENCY([21T]) >= 2", "dataSourceId": 1}]
            }"#,
        )
        .unwrap();
        let c = CompiledCatalog::compile(&c, 1).unwrap();
        let mut p = Profile::default();
        for t in [10, 20, 30] {
            let e = run(&c, &mut p, &[], &[(1001, &["auto"])], t);
            assert!(e.segments.is_empty());
        }
        assert_eq!(p.traits[&21].count(), 1);
    }

    #[test]
    fn a_new_catalog_version_re_evaluates_every_segment() {
        let c1 = catalog();
        let mut p = Profile::default();
        run(
            &c1,
            &mut p,
            &[("c_page", "cars"), ("c_coupon", "yes")],
            &[],
            10,
        );
        assert_eq!(p.segments, [102, 103]);
        assert_eq!(p.catalog_version, 1);

        // Version 2 changes segment 102's rule; an event that realizes nothing new still
        // re-evaluates it, because the profile was evaluated with version 1.
        let changed: Catalog = serde_json::from_str(
            r#"{"traits": [
                  {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
                  {"sid": 12, "name": "x", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_x == 1", "dataSourceId": 1}],
                "segments": [{"sid": 102, "name": "needs 12", "segmentRule": "11T AND 12T", "dataSourceId": 1}]}"#,
        )
        .unwrap();
        let c2 = CompiledCatalog::compile(&changed, 2).unwrap();
        let e = run(&c2, &mut p, &[("c_coupon", "yes")], &[], 20);
        assert!(
            e.segments.is_empty(),
            "102 no longer matches, 103 no longer exists"
        );
        assert_eq!(p.catalog_version, 2);

        // Same version: only segments touched by a change are looked at, and they update.
        let e = run(&c2, &mut p, &[("c_x", "1")], &[], 30);
        assert_eq!(e.segments, [102]);
        let e = run(&c2, &mut p, &[("c_x", "1")], &[], 40);
        assert_eq!(e.segments, [102], "membership is kept between events");
    }

    proptest::proptest! {
        /// The index finds exactly the traits that evaluating every rule would.
        #[test]
        fn the_rule_index_agrees_with_evaluating_every_rule(
            rules in proptest::collection::vec((0usize..8, "[ab]", "[xyz1]", "[xyz1]"), 1..40),
            pairs in proptest::collection::vec(("[abc]", proptest::collection::vec("[xyz1]|1.0", 1..3)), 0..4),
            scope in proptest::option::of(1u32..3),
        ) {
            let mut index = RuleIndex::default();
            let mut all = Vec::new();
            for (i, (form, key, v, w)) in rules.iter().enumerate() {
                let text = match form {
                    0 => format!("{key} == {v}"),
                    1 => format!("{key} == \"{v}\""),
                    2 => format!("{key} in [{v}, {w}]"),
                    3 => format!("{key} == {v} OR {key} == {w}"),
                    4 => format!("{key} != {v}"),
                    5 => format!("NOT {key} == {v}"),
                    6 => format!("{key} == {v} OR c == {w}"),
                    _ => format!("{key} == {v} AND c != {w}"),
                };
                let rule = TraitRule::parse(&text).unwrap();
                let t = RuleTrait { sid: i as u64, data_source_id: 1 + (i % 2) as u32, rule };
                all.push(RuleTrait { sid: t.sid, data_source_id: t.data_source_id, rule: t.rule.clone() });
                index.push(t);
            }
            let mut signals = Signals::new();
            for (k, vs) in &pairs {
                signals.add(k.as_str(), vs.iter().cloned());
            }
            let in_scope = |ds: u32| scope.is_none_or(|only| only == ds);
            let mut found = Vec::new();
            index.matching(&signals, in_scope, &mut found);
            found.sort_unstable();
            found.dedup();
            let expected: Vec<u64> = all
                .iter()
                .filter(|t| in_scope(t.data_source_id) && t.rule.matches(&signals))
                .map(|t| t.sid)
                .collect();
            proptest::prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn late_answers_realize_only_onboarded_traits() {
        let c = catalog();
        let mut p = Profile::default();
        let s = signals(&[("c_page", "cars")]);
        let answers = [ProviderSegments {
            data_source_id: 1001,
            segments: &["auto".to_string()],
        }];
        let e = c.evaluate(
            &mut p,
            &EventInput {
                signals: &s,
                providers: &answers,
                sids: &[13],
                tdpid: None,
                now: 5,
                answers_only: true,
            },
        );
        assert_eq!(
            e.realized,
            [21],
            "no rule-based (11), unconditional (12) or d_sid (13) trait"
        );
    }

    #[test]
    fn sids_tdpid_inactive_and_deleted_traits() {
        let c = catalog();
        let mut p = Profile::default();
        p.realize(999, 0, false); // a trait no longer in the catalog
        let s = signals(&[("c_page", "cars")]);
        let e = c.evaluate(
            &mut p,
            &EventInput {
                signals: &s,
                providers: &[],
                sids: &[13, 15, 4242],
                tdpid: Some(1),
                now: 5,
                answers_only: false,
            },
        );
        assert_eq!(
            e.realized,
            [11, 13],
            "12 is outside d_tdpid, 15 inactive, 4242 unknown"
        );
        assert!(!p.traits.contains_key(&999));
        assert!(!p.traits.contains_key(&15));
    }
}
