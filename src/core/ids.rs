//! Identifiers that cross the wire: visitor ids (the `demdex` cookie, `d_uuid`, `uuid`),
//! Experience Cloud ids (ECIDs, `d_mid`) and transaction ids (`tid`).
//!
//! All are AAM formats (`docs/dcs-api.md`, Visitor identity and The answer): a visitor id is
//! a 38-digit decimal string, an ECID what Adobe's VisitorAPI accepts (38 decimal digits when
//! minted, by it or by us), a `tid` is 12 characters of base64 (8 bytes).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::Engine as _;
use rand::RngExt as _;

/// Smallest freshly generated visitor id: new ids are drawn from [10^37, 10^38) so that they
/// print as 38 digits without padding (`docs/dcs-api.md`, Visitor identity).
const NEW_ID_MIN: u128 = 10u128.pow(37);
/// One past the largest 38-digit number; it fits in a u128 (10^38 < 2^128).
const ID_LIMIT: u128 = 10u128.pow(38);

/// A visitor id: a 38-digit decimal number.
///
/// Ids read from cookies or `d_uuid` may start with zeros (AAM's own examples do, e.g.
/// `07955261652886032950143702505894272138`), so parsing accepts any 38 digits; ids we
/// generate never start with a zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VisitorId(u128);

impl VisitorId {
    /// A new random visitor id.
    pub fn generate() -> Self {
        VisitorId(rand::rng().random_range(NEW_ID_MIN..ID_LIMIT))
    }

    /// Parses exactly 38 ASCII digits; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 38 || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // 38 digits are always below 10^38, so this cannot overflow.
        text.parse::<u128>().ok().map(VisitorId)
    }

    /// Builds an id from its numeric value (store keys, tests). Values of 10^38 or more are not ids.
    pub fn from_u128(value: u128) -> Option<Self> {
        (value < ID_LIMIT).then_some(VisitorId(value))
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The id of the authenticated profile of customer id `id` in cross-device data source
    /// `dpid` (`docs/customer-data.md`, Authenticated profiles): derived, so finding it needs no
    /// lookup and two nodes creating it at once create the same one. Derived ids lie above every
    /// 38-digit number, so no cookie or `d_uuid` can name one: only the data source and the
    /// customer id lead to it.
    pub fn authenticated(dpid: u32, id: &str) -> Self {
        let mut input = b"tributary-authenticated\0".to_vec();
        input.extend_from_slice(&dpid.to_be_bytes());
        input.extend_from_slice(id.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let mut word = [0u8; 16];
        word.copy_from_slice(&digest.as_ref()[..16]);
        VisitorId(ID_LIMIT + u128::from_be_bytes(word) % (u128::MAX - ID_LIMIT + 1))
    }

    /// Whether this is an authenticated profile's id rather than a device's.
    pub fn is_authenticated(self) -> bool {
        self.0 >= ID_LIMIT
    }

    /// Any id a store key may hold: a device's (38 digits) or an authenticated profile's.
    pub fn from_stored(value: u128) -> Self {
        VisitorId(value)
    }

    /// [`Self::from_stored`] for a key written as text: 38 digits, or an authenticated
    /// profile's 39.
    pub fn parse_stored(text: &str) -> Option<Self> {
        match text.len() {
            38 => Self::parse(text),
            39 if text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse::<u128>()
                .ok()
                .filter(|&v| v >= ID_LIMIT)
                .map(VisitorId),
            _ => None,
        }
    }

    /// Big-endian bytes: an order-preserving store key.
    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for VisitorId {
    /// 38 digits; an authenticated profile's id (above them) prints as the 39 it has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:038}", self.0)
    }
}

/// The data source (namespace) under which a device's ECID is linked to its visitor, like an
/// ID-synced id: AAM's reserved namespace for ECIDs, so `/profile/4/<ecid>`-style lookups and a
/// provider that knows devices by ECID work as they do with AAM.
pub const ECID_DATA_SOURCE: u32 = 4;

/// Longest ECID accepted. VisitorAPI's own ids are 38 digits; its check (`[0-9a-fA-F-]+`)
/// sets no length, this is a bound on what a client can make us store.
const MAX_ECID_BYTES: usize = 64;

/// An Experience Cloud id (ECID, AAM's `d_mid`): the device id Adobe's VisitorAPI keeps in the
/// site's own first-party cookie, and so the one id a browser that blocks third-party cookies
/// still sends on every call.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Ecid(String);

impl Ecid {
    /// Parses `d_mid` as VisitorAPI checks it (hex digits and `-`), upper-cased as it stores
    /// it; `None` for anything else, a numeric-looking overflow included.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= MAX_ECID_BYTES
            && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        ok.then(|| Ecid(text.to_ascii_uppercase()))
    }

    /// The ECID Tributary mints for a visitor that has none: derived from the visitor id, so
    /// the same visitor always gets the same one (AAM derives its MIDs the same way), and in
    /// the shape VisitorAPI mints its own: two 19-digit halves, each within a signed 64-bit
    /// integer, the first without a leading zero.
    pub fn for_visitor(visitor: VisitorId) -> Self {
        let mut input = b"tributary-ecid\0".to_vec();
        input.extend_from_slice(&visitor.to_be_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let half = |bytes: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            u64::from_be_bytes(word) & (i64::MAX as u64)
        };
        let (hi, lo) = (half(&digest.as_ref()[..8]), half(&digest.as_ref()[8..16]));
        // The first half in [10^18, i64::MAX], so the text never starts with a zero.
        const LOW: u64 = 1_000_000_000_000_000_000;
        let hi = LOW + hi % (i64::MAX as u64 - LOW + 1);
        Ecid(format!("{hi:019}{:019}", lo))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ecid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transaction id: unique per call, 12 characters, in the response and in every log line of
/// the event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Tid([u8; 12]);

impl Tid {
    /// The next transaction id of this process.
    ///
    /// Uniqueness comes from a counter, not from luck: the counter starts at a random point
    /// (so two processes do not produce the same sequence) and is passed through a bijective
    /// mixer (so ids do not look sequential and reveal no traffic volume).
    pub fn next() -> Self {
        static COUNTER: OnceLock<AtomicU64> = OnceLock::new();
        let counter = COUNTER.get_or_init(|| AtomicU64::new(rand::rng().random()));
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Self::from_u64(mix(n))
    }

    fn from_u64(n: u64) -> Self {
        let mut out = [0u8; 12];
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(n.to_be_bytes(), &mut out)
            .unwrap_or(0);
        debug_assert_eq!(written, 12, "8 bytes always encode to 12 base64 characters");
        Tid(out)
    }

    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// splitmix64's finalizer: a bijection on u64, so distinct counters give distinct tids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_have_38_digits_and_round_trip() {
        for _ in 0..1000 {
            let id = VisitorId::generate();
            let text = id.to_string();
            assert_eq!(text.len(), 38);
            assert_ne!(text.as_bytes()[0], b'0');
            assert_eq!(VisitorId::parse(&text), Some(id));
        }
    }

    #[test]
    fn parse_accepts_exactly_38_digits() {
        let aam = "07955261652886032950143702505894272138";
        assert_eq!(
            VisitorId::parse(aam).map(|v| v.to_string()),
            Some(aam.to_string())
        );
        for bad in [
            "",
            "1",
            "0795526165288603295014370250589427213", // 37 digits
            "079552616528860329501437025058942721381", // 39 digits
            "0795526165288603295014370250589427213a",
            "+795526165288603295014370250589427213",
            " 7955261652886032950143702505894272138",
            "NOTARGET",
            "٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣", // non-ASCII digits
        ] {
            assert_eq!(VisitorId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            VisitorId::parse("99999999999999999999999999999999999999").map(|v| v.as_u128()),
            Some(ID_LIMIT - 1)
        );
    }

    #[test]
    fn authenticated_ids_lie_beyond_every_device_id() {
        let a = VisitorId::authenticated(9001, "crm-1");
        assert!(a.is_authenticated());
        assert_eq!(a, VisitorId::authenticated(9001, "crm-1"));
        assert_ne!(a, VisitorId::authenticated(9002, "crm-1"));
        assert_ne!(a, VisitorId::authenticated(9001, "crm-2"));
        let text = a.to_string();
        assert_eq!(text.len(), 39);
        assert_eq!(VisitorId::parse(&text), None, "no d_uuid names it");
        assert_eq!(VisitorId::parse_stored(&text), Some(a));
        assert_eq!(VisitorId::from_stored(a.as_u128()), a);
        let device = VisitorId::generate();
        assert!(!device.is_authenticated());
        assert_eq!(VisitorId::parse_stored(&device.to_string()), Some(device));
        assert_eq!(VisitorId::parse_stored(&"9".repeat(40)), None);
        assert_eq!(
            VisitorId::parse_stored("099999999999999999999999999999999999999"),
            None
        );
    }

    #[test]
    fn from_u128_rejects_values_beyond_38_digits() {
        assert!(VisitorId::from_u128(ID_LIMIT).is_none());
        assert!(VisitorId::from_u128(ID_LIMIT - 1).is_some());
    }

    #[test]
    fn tids_are_12_base64_chars_and_unique() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let tid = Tid::next();
            let s = tid.as_str();
            assert_eq!(s.len(), 12);
            assert!(s.ends_with('='));
            assert!(s[..11]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
            assert!(seen.insert(tid), "duplicate tid {s}");
        }
    }

    #[test]
    fn ecids_are_parsed_as_visitorapi_checks_them() {
        let mid = "07955261652886032950143702505894272138";
        assert_eq!(
            Ecid::parse(mid).map(|e| e.to_string()),
            Some(mid.to_string())
        );
        assert_eq!(
            Ecid::parse("ab-12").map(|e| e.to_string()),
            Some("AB-12".to_string())
        );
        let long = "1".repeat(MAX_ECID_BYTES + 1);
        for bad in [
            "",
            "NOTARGET",
            "12 34",
            "12%2034",
            "١٢",
            "0x12",
            long.as_str(),
        ] {
            assert_eq!(Ecid::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn minted_ecids_are_stable_per_visitor_and_shaped_like_visitorapis() {
        for _ in 0..1000 {
            let visitor = VisitorId::generate();
            let ecid = Ecid::for_visitor(visitor);
            assert_eq!(ecid, Ecid::for_visitor(visitor));
            let text = ecid.as_str();
            assert_eq!(text.len(), 38, "{text}");
            assert_ne!(text.as_bytes()[0], b'0', "{text}");
            for half in [&text[..19], &text[19..]] {
                assert!(half.parse::<i64>().is_ok(), "{text}");
            }
            assert_eq!(Ecid::parse(text), Some(ecid.clone()));
        }
        let (a, b) = (VisitorId::generate(), VisitorId::generate());
        assert_ne!(Ecid::for_visitor(a), Ecid::for_visitor(b));
    }

    #[test]
    fn mix_is_injective_on_a_sample() {
        let set: HashSet<u64> = (0..10_000u64).map(mix).collect();
        assert_eq!(set.len(), 10_000);
    }
}
