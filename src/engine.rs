//! Qualification: from an event (signals, provider answers, `d_sid`) and a profile to realized
//! traits and segment membership. Pure CPU, no actix, no store.
//!
//! [`CompiledCatalog`] is built once per catalog version and shared read-only (`Arc`) by every
//! event, so an event always sees one whole catalog. It indexes what the evaluation needs so
//! that an event's cost follows its own signals and the visitor's traits, not the catalog:
//! - rule-based traits by the signal keys their rules read (plus the few rules that can match
//!   without any of their keys, like `NOT a == 1`);
//! - onboarded traits by data source, evaluated only against that data source's answers;
//! - segments by the traits they reference: a segment can only match a visitor who holds one
//!   of its traits (rules that could match otherwise are refused at save time).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::catalog::{Catalog, CatalogError, Provider, Status, TraitType};
use crate::profile::Profile;
use crate::rules::segment_rule::SegmentRule;
use crate::rules::trait_rule::TraitRule;
use crate::signals::Signals;

const SECS_PER_DAY: i64 = 86_400;

struct RuleTrait {
    sid: u64,
    data_source_id: u32,
    rule: TraitRule,
}

/// What the engine knows about any trait, whatever its type.
#[derive(Clone, Copy, Debug)]
struct TraitInfo {
    /// TTL in seconds; 0 never expires.
    ttl_secs: i64,
    onboarded: bool,
    active: bool,
}

/// The evaluation-ready catalog.
pub struct CompiledCatalog {
    version: u64,
    /// Enabled providers, in catalog order.
    providers: Vec<Arc<Provider>>,
    traits: HashMap<u64, TraitInfo>,
    rule_traits: Vec<RuleTrait>,
    rule_traits_by_key: HashMap<String, Vec<usize>>,
    rule_traits_unconditional: Vec<usize>,
    onboarded_by_source: HashMap<u32, Vec<RuleTrait>>,
    segments: Vec<(u64, SegmentRule)>,
    segments_by_trait: HashMap<u64, Vec<usize>>,
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

        let mut traits = HashMap::new();
        let mut rule_traits = Vec::new();
        let mut onboarded_by_source: HashMap<u32, Vec<RuleTrait>> = HashMap::new();
        for (t, rule) in catalog.traits.iter().zip(parsed.traits) {
            let onboarded = t.trait_type == TraitType::OnBoardedTrait;
            let active = t.status == Status::Active;
            traits.insert(
                t.sid,
                TraitInfo {
                    ttl_secs: i64::from(t.ttl) * SECS_PER_DAY,
                    onboarded,
                    active,
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

        let mut rule_traits_by_key: HashMap<String, Vec<usize>> = HashMap::new();
        let mut rule_traits_unconditional = Vec::new();
        for (i, t) in rule_traits.iter().enumerate() {
            if t.rule.matches_without_signals() {
                rule_traits_unconditional.push(i);
            }
            for key in t.rule.keys() {
                rule_traits_by_key.entry(key.clone()).or_default().push(i);
            }
        }

        let mut segments = Vec::new();
        let mut segments_by_trait: HashMap<u64, Vec<usize>> = HashMap::new();
        for (s, rule) in catalog.segments.iter().zip(parsed.segments) {
            if s.status != Status::Active {
                continue;
            }
            let index = segments.len();
            for t in rule.traits() {
                segments_by_trait.entry(*t).or_default().push(index);
            }
            segments.push((s.sid, rule));
        }

        Ok(CompiledCatalog {
            version,
            providers,
            traits,
            rule_traits,
            rule_traits_by_key,
            rule_traits_unconditional,
            onboarded_by_source,
            segments,
            segments_by_trait,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
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

        // Rule-based traits whose keys the event carries, and those that need none.
        let mut candidates: Vec<usize> = event
            .signals
            .keys()
            .filter_map(|k| self.rule_traits_by_key.get(k))
            .flatten()
            .chain(&self.rule_traits_unconditional)
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for i in candidates {
            let t = &self.rule_traits[i];
            if in_scope(t.data_source_id) && t.rule.matches(event.signals) {
                realized.push(t.sid);
            }
        }

        // Onboarded traits, each against its own data source's answer only.
        for answer in event.providers {
            let Some(traits) = self.onboarded_by_source.get(&answer.data_source_id) else {
                continue;
            };
            if !in_scope(answer.data_source_id) {
                continue;
            }
            let mut segment_signals = Signals::new();
            segment_signals.add("segment", answer.segments.iter().cloned());
            for t in traits {
                if t.rule.matches(&segment_signals) {
                    realized.push(t.sid);
                }
            }
        }

        // d_sid: realize known, active traits directly.
        realized.extend(
            event
                .sids
                .iter()
                .filter(|sid| self.traits.get(sid).is_some_and(|t| t.active))
                .copied(),
        );

        realized.sort_unstable();
        realized.dedup();
        // Segment membership can only change where a trait appeared or disappeared; only those
        // segments are re-evaluated (all of them when the catalog changed since the last
        // evaluation of this profile).
        let full = profile.catalog_version != self.version;
        let mut changed: Vec<u64> = Vec::new();
        for sid in &realized {
            let Some(info) = self.traits.get(sid) else {
                continue;
            };
            if !profile.traits.contains_key(sid) {
                changed.push(*sid);
            }
            profile.realize(*sid, now, info.onboarded);
            if info.ttl_secs > 0 && profile.next_expiry != 0 {
                profile.next_expiry = profile.next_expiry.min(now.saturating_add(info.ttl_secs));
            }
        }

        // Expired realizations (and, after a catalog change, deleted traits) stop counting.
        // The scan only runs when something is due to expire.
        if full || profile.next_expiry == 0 || now >= profile.next_expiry {
            let mut next = i64::MAX;
            profile.traits.retain(|sid, r| match self.traits.get(sid) {
                Some(info) if info.ttl_secs == 0 => true,
                Some(info) => {
                    let expires = r.last.saturating_add(info.ttl_secs);
                    let keep = now < expires;
                    if keep {
                        next = next.min(expires);
                    } else {
                        changed.push(*sid);
                    }
                    keep
                }
                None => {
                    changed.push(*sid);
                    false
                }
            });
            profile.next_expiry = next;
        }

        if full {
            let mut candidates: HashSet<usize> = HashSet::new();
            for sid in profile.traits.keys() {
                if let Some(segs) = self.segments_by_trait.get(sid) {
                    candidates.extend(segs);
                }
            }
            let mut segments: Vec<u64> = candidates
                .into_iter()
                .filter(|&i| {
                    self.segments[i]
                        .1
                        .matches(|t| profile.traits.contains_key(&t))
                })
                .map(|i| self.segments[i].0)
                .collect();
            segments.sort_unstable();
            profile.segments = segments;
            profile.catalog_version = self.version;
        } else {
            let mut candidates: Vec<usize> = changed
                .iter()
                .filter_map(|sid| self.segments_by_trait.get(sid))
                .flatten()
                .copied()
                .collect();
            candidates.sort_unstable();
            candidates.dedup();
            for i in candidates {
                let (sid, rule) = &self.segments[i];
                let member = rule.matches(|t| profile.traits.contains_key(&t));
                match (profile.segments.binary_search(sid), member) {
                    (Err(at), true) => profile.segments.insert(at, *sid),
                    (Ok(at), false) => {
                        profile.segments.remove(at);
                    }
                    _ => {}
                }
            }
        }

        if profile.first_seen == 0 {
            profile.first_seen = now;
        }
        profile.last_seen = now;
        let segments = profile.segments.clone();
        Evaluation { realized, segments }
    }
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
        assert_eq!(p.traits[&21].count, 1);
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
        assert_eq!(p.traits[&11].count, 1);
    }

    #[test]
    fn answers_only_feed_their_own_data_source() {
        let c = catalog();
        let mut p = Profile::default();
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[(1002, &["auto"])], 10);
        assert!(e.realized.is_empty());
    }

    #[test]
    fn ttl_expiry_prunes_and_segments_follow() {
        let c = catalog();
        let mut p = Profile::default();
        run(
            &c,
            &mut p,
            &[("c_x", "1"), ("c_y", "1"), ("c_coupon", "yes")],
            &[],
            0,
        );
        assert!(p.traits.contains_key(&13));
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], SECS_PER_DAY - 1);
        assert_eq!(e.segments, [102]);
        let e = run(&c, &mut p, &[("c_coupon", "yes")], &[], SECS_PER_DAY);
        assert!(e.segments.is_empty());
        assert!(!p.traits.contains_key(&13), "expired realization is pruned");
        assert!(p.traits.contains_key(&14), "ttl 0 never expires");
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

    #[test]
    fn expiry_is_scanned_only_when_due() {
        let c = catalog();
        let mut p = Profile::default();
        run(&c, &mut p, &[("c_x", "1"), ("c_coupon", "yes")], &[], 1_000);
        assert_eq!(
            p.next_expiry,
            1_000 + SECS_PER_DAY,
            "trait 13 has a one-day TTL"
        );
        run(&c, &mut p, &[("c_x", "1"), ("c_coupon", "yes")], &[], 2_000);
        assert_eq!(
            p.next_expiry,
            1_000 + SECS_PER_DAY,
            "re-realized, scan not yet due"
        );
        run(
            &c,
            &mut p,
            &[("c_coupon", "yes")],
            &[],
            1_000 + SECS_PER_DAY,
        );
        assert!(
            p.traits.contains_key(&13),
            "last realized at 2000: still held"
        );
        assert_eq!(p.next_expiry, 2_000 + SECS_PER_DAY);
        let e = run(
            &c,
            &mut p,
            &[("c_coupon", "yes")],
            &[],
            2_000 + SECS_PER_DAY,
        );
        assert!(!p.traits.contains_key(&13));
        assert!(e.segments.is_empty());
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
