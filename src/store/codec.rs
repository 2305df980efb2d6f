//! Value encodings, each with a version so stored data outlives code changes.
//!
//! Profiles are postcard (compact, fast) inside a versioned envelope: postcard writes the enum
//! variant index first, so the index *is* the schema version. Postcard is not self-describing,
//! so a field added to [`Profile`] would silently change the V1 layout — the golden-bytes
//! test below fails when that happens. To evolve: freeze today's struct as `ProfileV1`, add
//! `V2(Profile)`, and migrate V1 records on read.
//!
//! Catalog objects are JSON (self-describing, admin-facing, small) behind a version byte.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::profile::Profile;

#[derive(Serialize, Deserialize)]
enum StoredProfile {
    V1(Profile),
}

/// Borrowing twin of [`StoredProfile`] so that encoding does not clone the profile.
#[derive(Serialize)]
enum StoredProfileRef<'a> {
    V1(&'a Profile),
}

pub fn encode_profile(profile: &Profile) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(&StoredProfileRef::V1(profile)).map_err(|e| StoreError::Corrupt {
        what: "profile",
        detail: format!("cannot encode: {e}"),
    })
}

pub fn decode_profile(bytes: &[u8]) -> Result<Profile, StoreError> {
    match postcard::from_bytes::<StoredProfile>(bytes) {
        Ok(StoredProfile::V1(p)) => Ok(p),
        Err(e) => Err(StoreError::Corrupt {
            what: "profile",
            detail: e.to_string(),
        }),
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
    use crate::profile::{CachedAnswer, Realization};

    fn sample() -> Profile {
        let mut p = Profile {
            first_seen: 1,
            last_seen: 2,
            segments: vec![101],
            ..Default::default()
        };
        p.traits.insert(
            11,
            Realization {
                first: 1,
                last: 2,
                count: 3,
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
        let p = sample();
        assert_eq!(decode_profile(&encode_profile(&p).unwrap()).unwrap(), p);
    }

    /// Fails when the V1 layout changes: see the module doc before updating these bytes.
    #[test]
    fn profile_v1_golden_bytes() {
        assert_eq!(
            encode_profile(&sample()).unwrap(),
            [0, 1, 11, 2, 4, 3, 1, 101, 1, 5, 3, 97, 98, 99, 1, 1, 1, 1, 115, 18, 2, 4]
        );
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
