//! Value encodings, each with a version so stored data outlives code changes.
//!
//! Profiles are postcard (compact, fast) inside a versioned envelope: postcard writes the enum
//! variant index first, so the index *is* the schema version. Postcard is not self-describing,
//! so a field added to [`Profile`] silently changes the current layout — the golden-bytes
//! tests below fail when that happens. To evolve: freeze today's struct as `ProfileVn`, add a
//! variant for the new one, and migrate old records on read (as V1 is here).
//!
//! Catalog objects are JSON (self-describing, admin-facing, small) behind a version byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{IdLink, StoreError};
use crate::core::ids::VisitorId;
use crate::core::profile::{day_of, CachedAnswer, Profile, Realization};
use crate::core::s2s::Delivery;

/// A trait realization as issues 2–3 stored it (a total count, no days), frozen.
#[derive(Serialize, Deserialize)]
struct RealizationV2 {
    first: i64,
    last: i64,
    count: u32,
}

impl From<RealizationV2> for Realization {
    /// Every earlier realization is dated the last one: the count and the TTL stay right,
    /// recency windows see them as recent as the trait's latest realization.
    fn from(r: RealizationV2) -> Realization {
        Realization {
            first: r.first,
            last: r.last,
            days: vec![(day_of(r.last), r.count.max(1))],
        }
    }
}

fn migrate_traits(traits: BTreeMap<u64, RealizationV2>) -> BTreeMap<u64, Realization> {
    traits.into_iter().map(|(t, r)| (t, r.into())).collect()
}

/// The profile layout of the first release (issue 2), frozen.
#[derive(Serialize, Deserialize)]
struct ProfileV1 {
    traits: BTreeMap<u64, RealizationV2>,
    segments: Vec<u64>,
    synced_ids: BTreeMap<u32, String>,
    provider_cache: BTreeMap<u32, CachedAnswer>,
    first_seen: i64,
    last_seen: i64,
}

impl From<ProfileV1> for ProfileV2 {
    fn from(v1: ProfileV1) -> ProfileV2 {
        ProfileV2 {
            traits: v1.traits,
            segments: v1.segments,
            synced_ids: v1.synced_ids,
            provider_cache: v1.provider_cache,
            first_seen: v1.first_seen,
            last_seen: v1.last_seen,
            // Unknown: the next evaluation recomputes every segment.
            catalog_version: 0,
        }
    }
}

/// The layout of issue 3 (V1 + the catalog version), frozen.
#[derive(Serialize, Deserialize)]
struct ProfileV2 {
    traits: BTreeMap<u64, RealizationV2>,
    segments: Vec<u64>,
    synced_ids: BTreeMap<u32, String>,
    provider_cache: BTreeMap<u32, CachedAnswer>,
    first_seen: i64,
    last_seen: i64,
    catalog_version: u64,
}

impl From<ProfileV2> for ProfileV3 {
    fn from(v2: ProfileV2) -> ProfileV3 {
        ProfileV3 {
            traits: migrate_traits(v2.traits),
            segments: v2.segments,
            synced_ids: v2.synced_ids,
            provider_cache: v2.provider_cache,
            first_seen: v2.first_seen,
            last_seen: v2.last_seen,
            catalog_version: v2.catalog_version,
        }
    }
}

/// The layout of issues 4–17 (realizations per day), frozen.
#[derive(Serialize, Deserialize)]
struct ProfileV3 {
    traits: BTreeMap<u64, Realization>,
    segments: Vec<u64>,
    synced_ids: BTreeMap<u32, String>,
    provider_cache: BTreeMap<u32, CachedAnswer>,
    first_seen: i64,
    last_seen: i64,
    catalog_version: u64,
}

impl From<ProfileV3> for Profile {
    /// Profiles before issue 18 had no links and were all devices.
    fn from(v3: ProfileV3) -> Profile {
        Profile {
            traits: v3.traits,
            segments: v3.segments,
            synced_ids: v3.synced_ids,
            provider_cache: v3.provider_cache,
            first_seen: v3.first_seen,
            last_seen: v3.last_seen,
            catalog_version: v3.catalog_version,
            links: Vec::new(),
            identity: None,
        }
    }
}

#[derive(Deserialize)]
enum StoredProfile {
    V1(ProfileV1),
    V2(ProfileV2),
    V3(ProfileV3),
    V4(Profile),
}

/// Borrowing twin of [`StoredProfile`] so that encoding does not clone the profile; it only
/// ever writes the current version.
#[derive(Serialize)]
enum StoredProfileRef<'a> {
    #[allow(dead_code)]
    V1(()),
    #[allow(dead_code)]
    V2(()),
    #[allow(dead_code)]
    V3(()),
    V4(&'a Profile),
}

pub fn encode_profile(profile: &Profile) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(&StoredProfileRef::V4(profile)).map_err(|e| StoreError::Corrupt {
        what: "profile",
        detail: format!("cannot encode: {e}"),
    })
}

pub fn decode_profile(bytes: &[u8]) -> Result<Profile, StoreError> {
    match postcard::from_bytes::<StoredProfile>(bytes) {
        Ok(StoredProfile::V1(p)) => Ok(ProfileV3::from(ProfileV2::from(p)).into()),
        Ok(StoredProfile::V2(p)) => Ok(ProfileV3::from(p).into()),
        Ok(StoredProfile::V3(p)) => Ok(p.into()),
        Ok(StoredProfile::V4(p)) => Ok(p),
        Err(e) => Err(StoreError::Corrupt {
            what: "profile",
            detail: e.to_string(),
        }),
    }
}

/// An ID-sync mapping: the visitor id, then Unix seconds, both big-endian.
pub fn encode_link(link: &IdLink) -> [u8; 24] {
    let mut value = [0u8; 24];
    value[..16].copy_from_slice(&link.visitor.to_be_bytes());
    value[16..].copy_from_slice(&link.at.to_be_bytes());
    value
}

pub fn decode_link(value: &[u8]) -> Result<IdLink, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "id link",
        detail,
    };
    let bytes: [u8; 24] = value
        .try_into()
        .map_err(|_| corrupt(format!("{} bytes instead of 24", value.len())))?;
    let mut visitor = [0u8; 16];
    visitor.copy_from_slice(&bytes[..16]);
    let mut at = [0u8; 8];
    at.copy_from_slice(&bytes[16..]);
    Ok(IdLink {
        visitor: VisitorId::from_stored(u128::from_be_bytes(visitor)),
        at: i64::from_be_bytes(at),
    })
}

/// An S2S outbox entry as stored; the enum index is the version, as for profiles.
#[derive(Serialize, Deserialize)]
enum StoredDelivery {
    V1 {
        destination_id: u64,
        visitor: u128,
        at: i64,
        active: Vec<u64>,
        left: Vec<u64>,
    },
}

pub fn encode_delivery(d: &Delivery) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(&StoredDelivery::V1 {
        destination_id: d.destination_id,
        visitor: d.visitor.as_u128(),
        at: d.at,
        active: d.active.clone(),
        left: d.left.clone(),
    })
    .map_err(|e| StoreError::Corrupt {
        what: "outbox entry",
        detail: format!("cannot encode: {e}"),
    })
}

pub fn decode_delivery(bytes: &[u8]) -> Result<Delivery, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "outbox entry",
        detail,
    };
    match postcard::from_bytes::<StoredDelivery>(bytes) {
        Ok(StoredDelivery::V1 {
            destination_id,
            visitor,
            at,
            active,
            left,
        }) => Ok(Delivery {
            destination_id,
            visitor: VisitorId::from_u128(visitor)
                .ok_or_else(|| corrupt("not a visitor id".into()))?,
            at,
            active,
            left,
        }),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// Version byte of JSON-encoded catalog objects.
const CATALOG_V1: u8 = 1;

pub fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![CATALOG_V1];
    serde_json::to_writer(&mut out, value).map_err(|e| StoreError::Corrupt {
        what: "catalog object",
        detail: format!("cannot encode: {e}"),
    })?;
    Ok(out)
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&CATALOG_V1, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::Corrupt {
                what: "catalog object",
                detail: e.to_string(),
            })
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            what: "catalog object",
            detail: format!("unknown format version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what: "catalog object",
            detail: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        let mut p = Profile {
            first_seen: 1,
            last_seen: 2,
            segments: vec![101],
            catalog_version: 7,
            ..Default::default()
        };
        p.traits.insert(
            11,
            Realization {
                first: 1,
                last: 2,
                days: vec![(0, 3)],
            },
        );
        p.synced_ids.insert(5, "abc".into());
        p.provider_cache.insert(
            1,
            CachedAnswer {
                segments: vec!["s".into()],
                expires_at: 9,
            },
        );
        p
    }

    #[test]
    fn profile_round_trips() {
        let mut p = sample();
        p.realize(11, 3 * 86_400, false);
        p.realize(12, 4 * 86_400, true);
        let back = decode_profile(&encode_profile(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    /// Fails when the current layout changes: see the module doc before updating these bytes.
    #[test]
    fn profile_v4_golden_bytes() {
        let mut p = sample();
        p.link(9001, "c", 5);
        p.identity = Some((9001, "c".into()));
        assert_eq!(
            encode_profile(&p).unwrap(),
            [
                3, 1, 11, 2, 4, 1, 0, 3, 1, 101, 1, 5, 3, 97, 98, 99, 1, 1, 1, 1, 115, 18, 2, 4, 7,
                1, 169, 70, 1, 99, 10, 1, 169, 70, 1, 99
            ]
        );
    }

    /// Records of issues 4–17 (V3: no links) load as devices without links.
    #[test]
    fn profile_v3_records_migrate() {
        let v3 = [
            2, 1, 11, 2, 4, 1, 0, 3, 1, 101, 1, 5, 3, 97, 98, 99, 1, 1, 1, 1, 115, 18, 2, 4, 7,
        ];
        assert_eq!(decode_profile(&v3).unwrap(), sample());
    }

    /// Records of issue 3 (V2: a total count per trait) load, the count dated the last
    /// realization's day.
    #[test]
    fn profile_v2_records_migrate() {
        let v2 = [
            1, 1, 11, 2, 4, 3, 1, 101, 1, 5, 3, 97, 98, 99, 1, 1, 1, 1, 115, 18, 2, 4, 7,
        ];
        assert_eq!(decode_profile(&v2).unwrap(), sample());
    }

    /// Records written by the first release (V1) still load.
    #[test]
    fn profile_v1_records_migrate() {
        let v1 = [
            0, 1, 11, 2, 4, 3, 1, 101, 1, 5, 3, 97, 98, 99, 1, 1, 1, 1, 115, 18, 2, 4,
        ];
        let p = decode_profile(&v1).unwrap();
        let expected = Profile {
            catalog_version: 0,
            ..sample()
        };
        assert_eq!(p, expected);
    }

    #[test]
    fn garbage_is_reported_not_panicked() {
        for bytes in [&[][..], &[9], &[0, 200, 200, 200], &[0, 1, 11]] {
            assert!(
                matches!(decode_profile(bytes), Err(StoreError::Corrupt { .. })),
                "{bytes:?}"
            );
        }
        assert!(decode_json::<u32>(&[2, b'1']).is_err());
        assert!(decode_json::<u32>(&[]).is_err());
        assert_eq!(decode_json::<u32>(&encode_json(&7u32).unwrap()).unwrap(), 7);
    }
}
