//! Server-to-server destinations (`docs/destinations.md`): what is delivered, and how.
//!
//! When a visitor's membership of the segments mapped to an `S2S` destination changes, one
//! [`Delivery`] is queued for that destination: every mapped segment the visitor is now in
//! (status 1) and every one it just left (status 0), as AAM's real-time messages list all of a
//! visitor's segments. An erasure or an opt-out queues status 0 for every mapped segment the
//! visitor was in. Deliveries are kept in the store's outbox until the destination accepts
//! them (see `src/outbox/`).
//!
//! The body follows AAM's outbound real-time format ("IRIS"), numbers as JSON strings as in
//! AAM's sample: `ProcessTime`, `AAM_Destination_Id`, `User_count`, and `Users` with
//! `AAM_UUID`, `AAM_Regions` and `Segments` of `{Segment_ID, Status, DateTime}`. A mapping's
//! `traitAlias`, when set, is sent as `Alias` beside the segment id. AAM's `User_DPID`,
//! `Client_ID` and `DataPartner_UUID` are not sent: a destination here has no data source of
//! its own whose ids could be looked up. The body is signed like provider calls:
//! `X-Tributary-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! Pure: no I/O, no actix.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::core::catalog::{Destination, DestinationType, Status};
use crate::core::ids::VisitorId;

/// A change of one visitor's membership, for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub destination_id: u64,
    pub visitor: VisitorId,
    /// Unix seconds of the change.
    pub at: i64,
    /// Mapped segments the visitor is in (status 1), sorted.
    pub active: Vec<u64>,
    /// Mapped segments the visitor left with this change (status 0), sorted.
    pub left: Vec<u64>,
}

/// The deliveries a change of segments from `before` to `after` calls for: one per active S2S
/// destination whose mapped segments the visitor entered or left.
pub fn changes(
    destinations: &[Destination],
    visitor: VisitorId,
    before: &[u64],
    after: &[u64],
    at: i64,
) -> Vec<Delivery> {
    let before: BTreeSet<u64> = before.iter().copied().collect();
    let after: BTreeSet<u64> = after.iter().copied().collect();
    destinations
        .iter()
        .filter(|d| d.destination_type == DestinationType::S2s && d.status == Status::Active)
        .filter_map(|d| {
            let mapped: BTreeSet<u64> = d.mappings.iter().map(|m| m.sid).collect();
            let was: BTreeSet<u64> = before.intersection(&mapped).copied().collect();
            let is: BTreeSet<u64> = after.intersection(&mapped).copied().collect();
            (was != is).then(|| Delivery {
                destination_id: d.destination_id,
                visitor,
                at,
                left: was.difference(&is).copied().collect(),
                active: is.into_iter().collect(),
            })
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    process_time: String,
    #[serde(rename = "AAM_Destination_Id")]
    destination_id: String,
    #[serde(rename = "User_count")]
    user_count: String,
    users: Vec<User<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(rename = "AAM_UUID")]
    uuid: String,
    #[serde(rename = "AAM_Regions")]
    regions: [String; 1],
    #[serde(rename = "Segments")]
    segments: Vec<SegmentStatus<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SegmentStatus<'a> {
    #[serde(rename = "Segment_ID")]
    segment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<&'a str>,
    status: &'static str,
    date_time: String,
}

/// The JSON body delivering `batch` (all for `destination`) at `now`.
pub fn body(destination: &Destination, batch: &[&Delivery], region: u32, now: i64) -> Vec<u8> {
    let alias = |sid: u64| {
        destination
            .mappings
            .iter()
            .find(|m| m.sid == sid && !m.trait_alias.is_empty())
            .map(|m| m.trait_alias.as_str())
    };
    let users = batch
        .iter()
        .map(|d| {
            let when = process_time(d.at);
            let status = |sid: u64, status| SegmentStatus {
                segment_id: sid.to_string(),
                alias: alias(sid),
                status,
                date_time: when.clone(),
            };
            User {
                uuid: d.visitor.to_string(),
                regions: [region.to_string()],
                segments: d
                    .active
                    .iter()
                    .map(|&sid| status(sid, "1"))
                    .chain(d.left.iter().map(|&sid| status(sid, "0")))
                    .collect(),
            }
        })
        .collect();
    let body = Body {
        process_time: process_time(now),
        destination_id: destination.destination_id.to_string(),
        user_count: batch.len().to_string(),
        users,
    };
    // Strings and numbers only: serializing into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// AAM's time format, `Wed Jul 27 16:17:42 UTC 2016`.
pub fn process_time(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] UTC [year]"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// How long to wait before attempt `failures + 1` of a destination that failed `failures`
/// times in a row: doubling from `initial` up to `max`, less up to a fifth at random
/// (`jitter` in 0..1) so that many destinations failing together do not retry together.
pub fn backoff(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(max).mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(id: u64, sids: &[u64]) -> Destination {
        serde_json::from_value(serde_json::json!({
            "destinationId": id, "name": "d", "destinationType": "S2S",
            "url": "https://s2s.example/in",
            "mappings": sids.iter().map(|&sid| serde_json::json!({"sid": sid, "traitAlias": if sid == 102 { "autos" } else { "" }})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn visitor() -> VisitorId {
        VisitorId::parse("12345678901234567890123456789012345678").unwrap()
    }

    #[test]
    fn only_changes_of_mapped_segments_are_delivered() {
        let mut push = destination(9, &[101]);
        push.destination_type = DestinationType::Push;
        let mut inactive = destination(8, &[101]);
        inactive.status = Status::Inactive;
        let ds = [
            destination(1, &[101, 102]),
            destination(2, &[103]),
            push,
            inactive,
        ];
        let v = visitor();
        // Entering 101: destination 1 gets its full list; 2 is untouched.
        assert_eq!(
            changes(&ds, v, &[102, 105], &[101, 102, 105], 7),
            [Delivery {
                destination_id: 1,
                visitor: v,
                at: 7,
                active: vec![101, 102],
                left: vec![]
            }]
        );
        // Unmapped segments come and go unnoticed.
        assert!(changes(&ds, v, &[101, 105], &[101, 106], 7).is_empty());
        // Leaving 102 and entering 103.
        assert_eq!(
            changes(&ds, v, &[101, 102], &[101, 103], 7),
            [
                Delivery {
                    destination_id: 1,
                    visitor: v,
                    at: 7,
                    active: vec![101],
                    left: vec![102]
                },
                Delivery {
                    destination_id: 2,
                    visitor: v,
                    at: 7,
                    active: vec![103],
                    left: vec![]
                },
            ]
        );
        // Erasure: everything left.
        assert_eq!(
            changes(&ds, v, &[101, 102, 103], &[], 7),
            [
                Delivery {
                    destination_id: 1,
                    visitor: v,
                    at: 7,
                    active: vec![],
                    left: vec![101, 102]
                },
                Delivery {
                    destination_id: 2,
                    visitor: v,
                    at: 7,
                    active: vec![],
                    left: vec![103]
                },
            ]
        );
    }

    #[test]
    fn body_is_aams_real_time_format() {
        let d = destination(5, &[101, 102]);
        let a = Delivery {
            destination_id: 5,
            visitor: visitor(),
            at: 1_469_636_262,
            active: vec![102],
            left: vec![101],
        };
        let b = Delivery {
            active: vec![101, 102],
            left: vec![],
            ..a.clone()
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body(&d, &[&a, &b], 7, 1_469_636_262)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
                "AAM_Destination_Id": "5",
                "User_count": "2",
                "Users": [
                    {"AAM_UUID": "12345678901234567890123456789012345678", "AAM_Regions": ["7"], "Segments": [
                        {"Segment_ID": "102", "Alias": "autos", "Status": "1", "DateTime": "Wed Jul 27 16:17:42 UTC 2016"},
                        {"Segment_ID": "101", "Status": "0", "DateTime": "Wed Jul 27 16:17:42 UTC 2016"}
                    ]},
                    {"AAM_UUID": "12345678901234567890123456789012345678", "AAM_Regions": ["7"], "Segments": [
                        {"Segment_ID": "101", "Status": "1", "DateTime": "Wed Jul 27 16:17:42 UTC 2016"},
                        {"Segment_ID": "102", "Alias": "autos", "Status": "1", "DateTime": "Wed Jul 27 16:17:42 UTC 2016"}
                    ]}
                ]
            })
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(1, ms(100), ms(1000), 0.0), ms(100));
        assert_eq!(backoff(2, ms(100), ms(1000), 0.0), ms(200));
        assert_eq!(backoff(4, ms(100), ms(1000), 0.0), ms(800));
        assert_eq!(backoff(5, ms(100), ms(1000), 0.0), ms(1000));
        assert_eq!(backoff(u32::MAX, ms(100), ms(1000), 0.0), ms(1000));
        assert_eq!(backoff(1, ms(100), ms(1000), 1.0), ms(80));
    }
}
