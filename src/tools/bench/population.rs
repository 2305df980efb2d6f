//! A store that already holds every visitor of the bench's population, written before the
//! server starts: the steady state of a site whose visitors come back, where a visitor's
//! first event of a session reads a stored profile. On an empty store every visitor's first
//! event is a visitor never stored, which the stored-id filter answers without a read — a
//! gain a real site sees only for its new visitors, so both are measured (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::catalogs;
use crate::core::clock::unix_now;
use crate::core::ids::VisitorId;
use crate::core::profile::{day_of, Profile, Realization};
use crate::store::{self, ProfileStore, SledStore};

/// Profiles written per batch.
const BATCH: u64 = 10_000;

/// Writes a profile for each of the first `visitors` bench visitors into the sled store at
/// `path` (which no server may have open): a few realized traits, seen yesterday, evaluated
/// with the seeded catalog's version. Returns how long it took.
pub fn prefill(path: &Path, visitors: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let store = SledStore::open(path, 64 << 20, 1000).map_err(|e| e.to_string())?;
    let yesterday = unix_now() - 86_400;
    let realized = |first: i64| Realization {
        first,
        last: first,
        days: vec![(day_of(first), 1)],
    };
    let profile = Profile {
        traits: BTreeMap::from([(11, realized(yesterday)), (12, realized(yesterday))]),
        segments: vec![102],
        first_seen: yesterday,
        last_seen: yesterday,
        // The seeded catalog of a fresh store is version 1: no full re-evaluation is due.
        catalog_version: 1,
        ..Default::default()
    };
    let bytes = store::encode_profile(&profile).map_err(|e| e.to_string())?;
    let mut next = 0;
    while next < visitors {
        let end = (next + BATCH).min(visitors);
        let ids: Vec<VisitorId> = (next..end)
            .filter_map(|v| VisitorId::from_u128(catalogs::visitor_id(v)))
            .collect();
        let batch: Vec<(VisitorId, &[u8])> = ids.iter().map(|v| (*v, &bytes[..])).collect();
        store.put_profile_bytes(&batch).map_err(|e| e.to_string())?;
        next = end;
    }
    store.flush().map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}
