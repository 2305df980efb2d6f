//! A visitor's profile: what the DCS remembers between events.
//!
//! Times are unix seconds. Signals are never stored — only the traits they realized — so a
//! profile holds nothing a visitor sent in a `p_` parameter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::rules::segment_rule::{Recency, MAX_RECENCY_DAYS};

/// Seconds in a day; recency and TTL count whole UTC days.
pub const SECS_PER_DAY: i64 = 86_400;

/// The UTC day number (days since 1970-01-01) of a unix time, clamped to `u32`.
pub fn day_of(unix_secs: i64) -> u32 {
    u32::try_from(unix_secs.div_euclid(SECS_PER_DAY).max(0)).unwrap_or(u32::MAX)
}

/// A trait the visitor holds: when, and how often per day.
///
/// Realizations are kept as counts per UTC day, so frequency and recency questions
/// (`FREQUENCY([1T] <=7D) >= 3`) are answered without a list of events. The list is bounded:
/// a realization expires with its day (see [`Realization::expire`]), so a trait with a TTL of
/// n days keeps at most n + 1 days; a trait that never expires folds every day older than
/// [`MAX_RECENCY_DAYS`] into one entry, which no recency window can tell apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realization {
    /// When the trait was first realized (of the realizations still held).
    pub first: i64,
    /// When it was last realized.
    pub last: i64,
    /// (UTC day, realizations that day), oldest first, days unique, counts > 0.
    pub days: Vec<(u32, u32)>,
}

impl Realization {
    /// Unexpired realizations.
    pub fn count(&self) -> u64 {
        self.days.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// Realizations whose age in days on `today` is admitted by `recency`.
    pub fn count_recent(&self, today: u32, recency: Option<Recency>) -> u64 {
        self.days
            .iter()
            .filter(|&&(day, _)| recency.is_none_or(|r| r.admits(today.saturating_sub(day))))
            .map(|&(_, n)| u64::from(n))
            .sum()
    }

    /// Drops the days that have expired by `today` under a TTL of `ttl_days` (0 = never) and
    /// returns whether any realization is left.
    ///
    /// A realization on day d with a TTL of n days counts through day d + n and is gone at the
    /// UTC midnight that starts day d + n + 1: AAM's rule for one-day TTLs (realized at 01:00
    /// → 47 hours, at 23:00 → 25 hours) generalised to n days (`docs/rules.md`, TTL and
    /// realizations).
    /// Each new realization therefore extends the trait's life, as AAM's "a new qualification
    /// resets the TTL".
    pub fn expire(&mut self, today: u32, ttl_days: u32) -> bool {
        if ttl_days == 0 {
            self.fold_older_than(today.saturating_sub(MAX_RECENCY_DAYS));
            return !self.days.is_empty();
        }
        let before = self.days.len();
        self.days
            .retain(|&(day, _)| u64::from(today) <= u64::from(day) + u64::from(ttl_days));
        if self.days.len() < before {
            if let Some(&(day, _)) = self.days.first() {
                // `first` follows the oldest realization still held.
                self.first = self.first.max(i64::from(day) * SECS_PER_DAY);
            }
        }
        !self.days.is_empty()
    }

    /// Merges every day before `horizon` into one entry dated the newest of them.
    fn fold_older_than(&mut self, horizon: u32) {
        let old = self.days.partition_point(|&(day, _)| day < horizon);
        if old > 1 {
            let total = self.days[..old]
                .iter()
                .fold(0u32, |acc, &(_, n)| acc.saturating_add(n));
            let newest = self.days[old - 1].0;
            self.days.splice(..old, [(newest, total)]);
        }
    }
}

/// A provider's answer kept for reuse while fresh (`ttl`/`cacheTtlSecs`;
/// `docs/provider-protocol.md`, Caching).
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
    /// Time of the last evaluation. The engine compares its day with the event's to know when
    /// a day has passed (recency windows moved, realizations expired), so only evaluations
    /// set it.
    pub last_seen: i64,
    /// The catalog version `segments` was computed with; another version means a full
    /// re-evaluation, since rules may have changed.
    pub catalog_version: u64,
    /// Profiles linked to this one, oldest first, at most [`MAX_LINKS`]: on an authenticated
    /// profile the devices that declared its id (data source 0, the device's AAM id), on a
    /// device the authenticated profiles it declared (`docs/customer-data.md`, Merge rules).
    pub links: Vec<ProfileLink>,
    /// An authenticated profile's own id (data source, customer id); `None` on a device.
    pub identity: Option<(u32, String)>,
}

/// AAM's bound on a merged evaluation: the current device and 99 linked ones; the same bound
/// serves a device's links to authenticated profiles. The oldest link goes first.
pub const MAX_LINKS: usize = 100;

/// One link between a device and an authenticated profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileLink {
    /// The linked profile's data source: 0 for a device (its AAM id), else the cross-device
    /// data source of the customer id.
    pub dpid: u32,
    pub id: String,
    /// Unix seconds of the latest declaration.
    pub at: i64,
}

impl Profile {
    /// Records a realization of `trait_id` at `now`. `once` traits (onboarded) keep a count of
    /// one, as AAM counts them at most once per profile, dated their latest realization.
    pub fn realize(&mut self, trait_id: u64, now: i64, once: bool) {
        let day = day_of(now);
        let r = self.traits.entry(trait_id).or_insert(Realization {
            first: now,
            last: now,
            days: Vec::new(),
        });
        r.first = r.first.min(now);
        r.last = r.last.max(now);
        if once {
            let latest = r.days.last().map_or(day, |&(d, _)| d.max(day));
            r.days.clear();
            r.days.push((latest, 1));
            return;
        }
        // Events arrive in time order almost always, so today is the last entry; a clock
        // that went back (another node, a restored backup) still lands in its own day.
        match r.days.last_mut() {
            Some((d, n)) if *d == day => *n = n.saturating_add(1),
            Some((d, _)) if *d < day => r.days.push((day, 1)),
            None => r.days.push((day, 1)),
            Some(_) => match r.days.binary_search_by_key(&day, |&(d, _)| d) {
                Ok(i) => r.days[i].1 = r.days[i].1.saturating_add(1),
                Err(i) => r.days.insert(i, (day, 1)),
            },
        }
    }

    /// Records a link to (`dpid`, `id`) at `at`, as the newest one, dropping the oldest link
    /// beyond [`MAX_LINKS`]. `true` when the links changed (not only their time).
    pub fn link(&mut self, dpid: u32, id: &str, at: i64) -> bool {
        let known = self.links.iter().position(|l| l.dpid == dpid && l.id == id);
        let newest = known.is_some_and(|i| i + 1 == self.links.len());
        if let Some(i) = known {
            let mut link = self.links.remove(i);
            link.at = link.at.max(at);
            self.links.push(link);
        } else {
            self.links.push(ProfileLink {
                dpid,
                id: id.to_owned(),
                at,
            });
            if self.links.len() > MAX_LINKS {
                self.links.remove(0);
            }
        }
        !newest
    }

    /// The newest link into data source `dpid` (a device's last authenticated profile there).
    pub fn last_link(&self, dpid: u32) -> Option<&ProfileLink> {
        self.links.iter().rev().find(|l| l.dpid == dpid)
    }

    /// Whether the visitor holds the trait (an unexpired realization).
    pub fn holds(&self, trait_id: u64) -> bool {
        self.traits.contains_key(&trait_id)
    }

    /// A cached answer of a provider that is still fresh at `now`.
    pub fn fresh_answer(&self, pid: u32, now: i64) -> Option<&CachedAnswer> {
        self.provider_cache.get(&pid).filter(|a| a.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = SECS_PER_DAY;

    #[test]
    fn realize_counts_per_day_and_tracks_times() {
        let mut p = Profile::default();
        p.realize(1, 100, false);
        p.realize(1, 200, false);
        p.realize(1, DAY + 5, false);
        p.realize(2, 150, true);
        p.realize(2, 3 * DAY, true);
        assert_eq!(
            p.traits[&1],
            Realization {
                first: 100,
                last: DAY + 5,
                days: vec![(0, 2), (1, 1)],
            }
        );
        assert_eq!(p.traits[&1].count(), 3);
        assert_eq!(
            p.traits[&2],
            Realization {
                first: 150,
                last: 3 * DAY,
                days: vec![(3, 1)],
            },
            "onboarded: once, dated the latest realization"
        );
    }

    #[test]
    fn a_clock_that_goes_back_lands_in_its_own_day() {
        let mut p = Profile::default();
        p.realize(1, 5 * DAY, false);
        p.realize(1, 2 * DAY, false);
        p.realize(1, 2 * DAY + 1, false);
        p.realize(1, 3 * DAY, false);
        assert_eq!(p.traits[&1].days, [(2, 2), (3, 1), (5, 1)]);
        assert_eq!(p.traits[&1].first, 2 * DAY);
        assert_eq!(p.traits[&1].last, 5 * DAY);
        assert_eq!(day_of(-1), 0);
        assert_eq!(day_of(i64::MAX), u32::MAX);
    }

    #[test]
    fn recency_counts_by_age_in_days() {
        let r = Realization {
            first: 0,
            last: 0,
            days: vec![(10, 1), (13, 2), (17, 4), (20, 8)],
        };
        assert_eq!(r.count_recent(20, None), 15);
        assert_eq!(r.count_recent(20, Some(Recency::Within(0))), 8);
        assert_eq!(r.count_recent(20, Some(Recency::Within(3))), 12);
        assert_eq!(r.count_recent(20, Some(Recency::Within(7))), 14);
        assert_eq!(r.count_recent(20, Some(Recency::AtLeast(7))), 3);
        assert_eq!(r.count_recent(20, Some(Recency::AtLeast(11))), 0);
    }

    #[test]
    fn ttl_expiry_follows_aam_day_rule() {
        // One-day TTL realized on day 0 at 01:00: held through day 1, gone when day 2 starts
        // (47 hours), whatever the hour.
        let mut r = Realization {
            first: 3600,
            last: 3600,
            days: vec![(0, 1)],
        };
        assert!(r.clone().expire(1, 1));
        assert!(!r.clone().expire(2, 1));
        r.days = vec![(0, 1), (5, 2)];
        assert!(r.expire(6, 1));
        assert_eq!(r.days, [(5, 2)]);
        assert_eq!(
            r.first,
            5 * DAY,
            "first follows the oldest held realization"
        );
        let mut huge = Realization {
            first: 0,
            last: 0,
            days: vec![(u32::MAX - 1, 1)],
        };
        assert!(huge.expire(u32::MAX, u32::MAX), "no overflow");
    }

    #[test]
    fn never_expiring_traits_fold_days_no_window_can_tell_apart() {
        let today = 1000;
        let mut r = Realization {
            first: 0,
            last: 0,
            days: (0..=today).map(|d| (d, 1)).collect(),
        };
        // Every window a rule can ask, on this day and a year later.
        let windows = |r: &Realization| -> Vec<u64> {
            [today, today + 400]
                .iter()
                .flat_map(|&day| {
                    [1, 30, 364, 365].iter().flat_map(move |&n| {
                        [
                            r.count_recent(day, Some(Recency::Within(n))),
                            r.count_recent(day, Some(Recency::AtLeast(n))),
                        ]
                    })
                })
                .collect()
        };
        let before = windows(&r);
        assert!(r.expire(today, 0));
        assert_eq!(r.days.len(), MAX_RECENCY_DAYS as usize + 2);
        assert_eq!(r.count(), u64::from(today) + 1);
        let after = windows(&r);
        assert_eq!(before, after);
    }

    #[test]
    fn links_keep_the_newest_last_and_at_most_max_links() {
        let mut p = Profile::default();
        assert!(p.link(9, "a", 10));
        assert!(p.link(9, "b", 11));
        assert!(p.link(9, "a", 12), "a moved to the end");
        assert!(
            !p.link(9, "a", 13),
            "already the newest: only its time changes"
        );
        assert_eq!(
            p.last_link(9).map(|l| (l.id.as_str(), l.at)),
            Some(("a", 13))
        );
        assert_eq!(p.last_link(8), None);
        for i in 0..MAX_LINKS {
            p.link(0, &i.to_string(), 20);
        }
        assert_eq!(p.links.len(), MAX_LINKS);
        assert_eq!(p.last_link(9), None, "the oldest went first");
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
