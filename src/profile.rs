//! A visitor's profile: what the DCS remembers between events.
//!
//! Times are unix seconds. Signals are never stored — only the traits they realized — so a
//! profile holds nothing a visitor sent in a `p_` parameter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A trait the visitor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realization {
    /// When the trait was first realized.
    pub first: i64,
    /// When it was last realized; its TTL counts from here.
    pub last: i64,
    /// How many times it was realized (onboarded traits count at most once).
    pub count: u32,
}

/// A provider's answer kept for reuse while fresh (DESIGN.md §3, `ttl`/`cacheTtlSecs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The provider's segment ids; empty for a "no data" answer.
    pub segments: Vec<String>,
    pub expires_at: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Held traits by trait id.
    pub traits: BTreeMap<u64, Realization>,
    /// Segment ids after the last evaluation (sorted).
    pub segments: Vec<u64>,
    /// Provider-side ids of this visitor, by data source id (ID sync).
    pub synced_ids: BTreeMap<u32, String>,
    /// Cached provider answers, by provider id.
    pub provider_cache: BTreeMap<u32, CachedAnswer>,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The catalog version `segments` was computed with; another version means a full
    /// re-evaluation, since rules may have changed.
    pub catalog_version: u64,
    /// Earliest time a held trait expires (0 = not known yet). Derived from the traits and the
    /// catalog's TTLs, so it is not stored: it is recomputed on the first evaluation.
    #[serde(skip)]
    pub next_expiry: i64,
}

impl Profile {
    /// Records a realization of `trait_id` at `now`. `once` traits (onboarded) keep a count of
    /// one, as AAM counts them at most once per profile.
    pub fn realize(&mut self, trait_id: u64, now: i64, once: bool) {
        let r = self.traits.entry(trait_id).or_insert(Realization {
            first: now,
            last: now,
            count: 0,
        });
        r.last = r.last.max(now);
        r.count = if once { 1 } else { r.count.saturating_add(1) };
    }

    /// A cached answer of a provider that is still fresh at `now`.
    pub fn fresh_answer(&self, pid: u32, now: i64) -> Option<&CachedAnswer> {
        self.provider_cache.get(&pid).filter(|a| a.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realize_counts_and_tracks_times() {
        let mut p = Profile::default();
        p.realize(1, 100, false);
        p.realize(1, 200, false);
        p.realize(2, 150, true);
        p.realize(2, 160, true);
        assert_eq!(
            p.traits[&1],
            Realization {
                first: 100,
                last: 200,
                count: 2
            }
        );
        assert_eq!(
            p.traits[&2],
            Realization {
                first: 150,
                last: 160,
                count: 1
            }
        );
    }

    #[test]
    fn stale_answers_are_not_fresh() {
        let mut p = Profile::default();
        p.provider_cache.insert(
            7,
            CachedAnswer {
                segments: vec!["a".into()],
                expires_at: 100,
            },
        );
        assert!(p.fresh_answer(7, 99).is_some());
        assert!(p.fresh_answer(7, 100).is_none());
        assert!(p.fresh_answer(8, 0).is_none());
    }
}
