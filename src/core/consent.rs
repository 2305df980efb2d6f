//! The visitor's privacy strings (`docs/privacy.md`): IAB TCF v2 (`gdpr`, `gdpr_consent`), US
//! Privacy (`us_privacy`) and GPP (`gpp`, `gpp_sid`), judged once per request.
//!
//! Every string is untrusted and is read within a length cap, by code that returns an error
//! for any input rather than panic or allocate in proportion to what the string claims.
//!
//! The decoders are our own, not `iab_gpp`'s (the crate first chosen for this, to be wrapped in
//! `catch_unwind`), for two reasons found while building this (`docs/architecture.md`,
//! Dependency notes):
//! - `iab_gpp` 0.1.2 expands every vendor range of a TC string into a list of ids: one 3.9 KB
//!   string of ranges `1-65535` took it 15 s (debug build) and 65,535 × 700 pushes. Here a
//!   range stays a range, and nothing costs more than one pass over the string's bits.
//! - Its GPP header decoder overflows on some inputs; the `consent` fuzz target found one
//!   within seconds again. `catch_unwind` would contain it, but the panic still prints, and a
//!   fuzzer cannot run past it. Only the GPP header is read here (the section ids), with
//!   checked arithmetic.
//!
//! `iab_gpp` remains a dev-dependency: the tests check that both read the same strings alike.
//!
//! What is enforced, and what is only passed on:
//! - `gdpr=1` requires a valid TC string with consent for purpose 1 and `[privacy]
//!   tcf_purposes`, and vendor consent for `[privacy] tcf_vendor_id` when one is configured
//!   (not disallowed by a publisher restriction). Otherwise the call is refused with 315.
//!   Legitimate interest is not accepted in place of consent.
//! - A `gdpr` value other than 0 or 1 is reported and treated as 1: an unknown answer to
//!   "does GDPR apply?" must not switch consent checks off.
//! - A provider with a `tcfVendorId` is asked only when that vendor has consent (checked only
//!   when GDPR applies).
//! - US Privacy and GPP strings are checked for form and passed to providers as they came;
//!   malformed ones are reported and not passed on. They restrict nothing here: a
//!   provider reads them in `regs`.
//! - AAM's checks against the Global CMP List (313, 314) are not made: Tributary keeps no
//!   copy of the list.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::core::error::{truncate, DcsError};
use crate::core::request::PrivacyParams;

/// Longest TC string read. Real ones stay under 1 KB, a long vendor bit field included.
pub const MAX_TC_STRING_BYTES: usize = 4096;
/// Longest GPP string read.
pub const MAX_GPP_BYTES: usize = 4096;
/// Most section ids `gpp_sid` may list.
const MAX_GPP_SIDS: usize = 32;

/// What the configuration asks of a TC string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcfPolicy {
    /// Purposes that need consent; always contains 1.
    pub purposes: Vec<u8>,
    /// Our own IAB vendor id, whose consent is required when set.
    pub vendor_id: Option<u16>,
}

impl TcfPolicy {
    pub fn new(purposes: &[u8], vendor_id: Option<u16>) -> Self {
        let mut purposes: Vec<u8> = purposes.iter().copied().chain([1]).collect();
        purposes.sort_unstable();
        purposes.dedup();
        TcfPolicy {
            purposes,
            vendor_id,
        }
    }
}

impl Default for TcfPolicy {
    fn default() -> Self {
        TcfPolicy::new(&[1, 10], None)
    }
}

/// Why a TC string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcDecodeError {
    #[error("longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("empty")]
    Empty,
    #[error("invalid character at byte {offset}")]
    InvalidCharacter { offset: usize },
    #[error("ends early, at bit {bit} ({field})")]
    Truncated { bit: usize, field: &'static str },
    #[error("version {0}, not 2")]
    Version(u64),
    #[error("vendor range {start}-{end} at bit {bit} is empty or starts at 0")]
    BadRange { start: u16, end: u16, bit: usize },
}

/// Vendor ids as sorted, disjoint, inclusive ranges: a range in the string stays a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdRanges(Vec<(u16, u16)>);

impl IdRanges {
    fn from_unsorted(mut ranges: Vec<(u16, u16)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        IdRanges(merged)
    }

    pub fn contains(&self, id: u16) -> bool {
        let after = self.0.partition_point(|&(start, _)| start <= id);
        after > 0 && self.0[after - 1].1 >= id
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `3-5,9`.
impl std::fmt::Display for IdRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (start, end)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if start == end {
                write!(f, "{sep}{start}")?;
            } else {
                write!(f, "{sep}{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// A publisher restriction's type (TCF v2 "RestrictionType").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestrictionType {
    NotAllowed,
    RequireConsent,
    RequireLegitimateInterest,
    Undefined,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherRestriction {
    pub purpose: u8,
    pub kind: RestrictionType,
    pub vendors: IdRanges,
}

/// The core segment of a TCF v2 TC string: what Tributary needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcString {
    /// Unix seconds.
    pub created: u64,
    pub last_updated: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    pub is_service_specific: bool,
    /// Bit `n - 1` is purpose `n`.
    purpose_consents: u32,
    purpose_legitimate_interests: u32,
    pub vendor_consents: IdRanges,
    pub vendor_legitimate_interests: IdRanges,
    pub publisher_restrictions: Vec<PublisherRestriction>,
}

impl TcString {
    /// Decodes the core segment of a TC string (base64url, with or without padding; the
    /// optional segments after a `.` are not read).
    pub fn decode(text: &str) -> Result<TcString, TcDecodeError> {
        if text.len() > MAX_TC_STRING_BYTES {
            return Err(TcDecodeError::TooLong {
                limit: MAX_TC_STRING_BYTES,
            });
        }
        let core = text.split('.').next().unwrap_or_default();
        let core = core.trim_end_matches('=');
        if core.is_empty() {
            return Err(TcDecodeError::Empty);
        }
        let mut r = BitReader::new(core)?;
        let version = r.bits(6, "Version")?;
        if version != 2 {
            return Err(TcDecodeError::Version(version));
        }
        let created = r.bits(36, "Created")? / 10;
        let last_updated = r.bits(36, "LastUpdated")? / 10;
        let cmp_id = r.bits(12, "CmpId")? as u16;
        let cmp_version = r.bits(12, "CmpVersion")? as u16;
        r.bits(6, "ConsentScreen")?;
        r.bits(12, "ConsentLanguage")?;
        let vendor_list_version = r.bits(12, "VendorListVersion")? as u16;
        let policy_version = r.bits(6, "TcfPolicyVersion")? as u8;
        let is_service_specific = r.bits(1, "IsServiceSpecific")? == 1;
        r.bits(1, "UseNonStandardTexts")?;
        r.bits(12, "SpecialFeatureOptIns")?;
        // The 24-bit fields are read with purpose 1 as their first bit.
        let purpose_consents = reverse24(r.bits(24, "PurposesConsent")?);
        let purpose_legitimate_interests = reverse24(r.bits(24, "PurposesLITransparency")?);
        r.bits(1, "PurposeOneTreatment")?;
        r.bits(12, "PublisherCC")?;
        let vendor_consents = r.vendor_section("VendorConsents")?;
        let vendor_legitimate_interests = r.vendor_section("VendorLegitimateInterests")?;
        let count = r.bits(12, "NumPubRestrictions")?;
        let mut publisher_restrictions = Vec::new();
        for _ in 0..count {
            let purpose = r.bits(6, "PurposeId")? as u8;
            let kind = match r.bits(2, "RestrictionType")? {
                0 => RestrictionType::NotAllowed,
                1 => RestrictionType::RequireConsent,
                2 => RestrictionType::RequireLegitimateInterest,
                _ => RestrictionType::Undefined,
            };
            let vendors = r.range_entries("PubRestrictionEntry")?;
            publisher_restrictions.push(PublisherRestriction {
                purpose,
                kind,
                vendors,
            });
        }
        Ok(TcString {
            created,
            last_updated,
            cmp_id,
            cmp_version,
            vendor_list_version,
            policy_version,
            is_service_specific,
            purpose_consents,
            purpose_legitimate_interests,
            vendor_consents,
            vendor_legitimate_interests,
            publisher_restrictions,
        })
    }

    pub fn purpose_consent(&self, purpose: u8) -> bool {
        (1..=24).contains(&purpose) && self.purpose_consents & (1 << (purpose - 1)) != 0
    }

    pub fn purpose_legitimate_interest(&self, purpose: u8) -> bool {
        (1..=24).contains(&purpose) && self.purpose_legitimate_interests & (1 << (purpose - 1)) != 0
    }

    /// The vendor has consent, and no publisher restriction disallows it for any of
    /// `purposes`.
    pub fn vendor_allowed(&self, vendor: u16, purposes: &[u8]) -> bool {
        self.vendor_consents.contains(vendor)
            && !self.publisher_restrictions.iter().any(|r| {
                r.kind == RestrictionType::NotAllowed
                    && purposes.contains(&r.purpose)
                    && r.vendors.contains(vendor)
            })
    }

    /// Why this string does not allow processing under `policy`, if it does not.
    pub fn refusal(&self, policy: &TcfPolicy) -> Option<Refusal> {
        if let Some(&p) = policy.purposes.iter().find(|&&p| !self.purpose_consent(p)) {
            return Some(Refusal::Purpose(p));
        }
        match policy.vendor_id {
            Some(v) if !self.vendor_allowed(v, &policy.purposes) => Some(Refusal::Vendor(v)),
            _ => None,
        }
    }
}

/// Bit 23 of a 24-bit field read most significant bit first becomes bit 0.
fn reverse24(bits: u64) -> u32 {
    ((bits as u32) << 8).reverse_bits()
}

/// Reads a base64url string as a stream of bits, most significant first.
struct BitReader {
    sextets: Vec<u8>,
    pos: usize,
}

impl BitReader {
    fn new(text: &str) -> Result<Self, TcDecodeError> {
        let sextets = text
            .bytes()
            .enumerate()
            .map(|(offset, b)| match b {
                b'A'..=b'Z' => Ok(b - b'A'),
                b'a'..=b'z' => Ok(b - b'a' + 26),
                b'0'..=b'9' => Ok(b - b'0' + 52),
                // Standard base64's two characters are taken as well: some tags do not use
                // the URL-safe alphabet.
                b'-' | b'+' => Ok(62),
                b'_' | b'/' => Ok(63),
                _ => Err(TcDecodeError::InvalidCharacter { offset }),
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(BitReader { sextets, pos: 0 })
    }

    /// The next `n` (≤ 64) bits as an unsigned number.
    fn bits(&mut self, n: usize, field: &'static str) -> Result<u64, TcDecodeError> {
        if self.pos + n > self.sextets.len() * 6 {
            return Err(TcDecodeError::Truncated {
                bit: self.pos,
                field,
            });
        }
        let mut value = 0u64;
        for _ in 0..n {
            let bit = (self.sextets[self.pos / 6] >> (5 - self.pos % 6)) & 1;
            value = (value << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// A Fibonacci-coded number (GPP): bit i adds the (i + 2)th Fibonacci number (1, 2, 3, 5,
    /// …), two 1 bits in a row end it. Longer codes than a GPP id needs are refused.
    fn fibonacci(&mut self, field: &'static str) -> Result<u64, TcDecodeError> {
        let (mut value, mut a, mut b, mut previous) = (0u64, 1u64, 2u64, false);
        for _ in 0..16 {
            let bit = self.bits(1, field)? == 1;
            if bit && previous {
                return Ok(value);
            }
            if bit {
                value += a;
            }
            previous = bit;
            (a, b) = (b, a + b);
        }
        Err(TcDecodeError::Truncated {
            bit: self.pos,
            field,
        })
    }

    /// A vendor section: MaxVendorId, then a bit field or range entries.
    fn vendor_section(&mut self, field: &'static str) -> Result<IdRanges, TcDecodeError> {
        let max = self.bits(16, field)? as u16;
        if self.bits(1, field)? == 1 {
            return self.range_entries(field);
        }
        let mut runs = Vec::new();
        let mut run_start = None;
        for id in 1..=max {
            let set = self.bits(1, field)? == 1;
            match (set, run_start) {
                (true, None) => run_start = Some(id),
                (false, Some(start)) => {
                    runs.push((start, id - 1));
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            runs.push((start, max));
        }
        Ok(IdRanges(runs))
    }

    /// NumEntries, then that many single ids or ranges.
    fn range_entries(&mut self, field: &'static str) -> Result<IdRanges, TcDecodeError> {
        let count = self.bits(12, field)?;
        let mut ranges = Vec::new();
        for _ in 0..count {
            let bit = self.pos;
            let is_range = self.bits(1, field)? == 1;
            let start = self.bits(16, field)? as u16;
            let end = if is_range {
                self.bits(16, field)? as u16
            } else {
                start
            };
            if start == 0 || end < start {
                return Err(TcDecodeError::BadRange { start, end, bit });
            }
            ranges.push((start, end));
        }
        Ok(IdRanges::from_unsorted(ranges))
    }
}

/// Why GDPR processing is refused (error 315).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoString,
    Unreadable(TcDecodeError),
    Purpose(u8),
    Vendor(u16),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoString => write!(f, "gdpr=1 without gdpr_consent"),
            Refusal::Unreadable(e) => write!(f, "gdpr_consent is not a TCF v2 string: {e}"),
            Refusal::Purpose(p) => write!(f, "no consent for purpose {p}"),
            Refusal::Vendor(v) => write!(f, "no consent for vendor {v}"),
        }
    }
}

/// Which providers' vendors may be asked.
#[derive(Clone, Debug, Default)]
pub enum VendorConsent {
    /// GDPR does not apply to this call.
    #[default]
    All,
    /// Only vendors allowed by this string.
    Only(Arc<TcString>, Arc<[u8]>),
}

impl VendorConsent {
    /// Whether a provider with this `tcfVendorId` may be asked. A provider without one is
    /// not a TCF vendor and follows the call's own consent.
    pub fn allows(&self, vendor: Option<u32>) -> bool {
        match (self, vendor) {
            (VendorConsent::All, _) | (_, None) => true,
            (VendorConsent::Only(tc, purposes), Some(v)) => {
                u16::try_from(v).is_ok_and(|v| tc.vendor_allowed(v, purposes))
            }
        }
    }
}

/// The judgement on one call's privacy strings.
#[derive(Debug)]
pub enum Judgement {
    /// Proceed; providers are asked per `VendorConsent`.
    Proceed(VendorConsent),
    /// GDPR applies without the consent needed: nothing may be read, written or asked (315).
    Refuse(Refusal),
}

/// Judges a call's privacy strings under `policy`. Malformed strings that are not needed to
/// decide are reported in `errors` and removed from `params`, so that only well-formed
/// strings reach providers and URL destinations; `gdpr` is rewritten as `0` or `1`.
pub fn judge(
    params: &mut PrivacyParams,
    policy: &TcfPolicy,
    errors: &mut Vec<DcsError>,
) -> Judgement {
    check_us_privacy(params, errors);
    check_gpp(params, errors);
    let applies = match params.gdpr.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            errors.push(DcsError::invalid_value(
                "gdpr",
                &format!("{:?} is not 0 or 1; taken as 1", truncate(other, 16)),
            ));
            true
        }
    };
    if params.gdpr.is_some() {
        params.gdpr = Some(if applies { "1" } else { "0" }.into());
    }
    let decoded = params.gdpr_consent.as_deref().map(TcString::decode);
    if !applies {
        if let Some(Err(e)) = decoded {
            errors.push(DcsError::invalid_value("gdpr_consent", &e.to_string()));
            params.gdpr_consent = None;
        }
        return Judgement::Proceed(VendorConsent::All);
    }
    let tc = match decoded {
        None => return Judgement::Refuse(Refusal::NoString),
        Some(Err(e)) => return Judgement::Refuse(Refusal::Unreadable(e)),
        Some(Ok(tc)) => tc,
    };
    if let Some(refusal) = tc.refusal(policy) {
        return Judgement::Refuse(refusal);
    }
    Judgement::Proceed(VendorConsent::Only(
        Arc::new(tc),
        policy.purposes.clone().into(),
    ))
}

/// US Privacy: version 1, then notice, opt-out of sale and LSPA as `Y`, `N` or `-`.
pub fn is_us_privacy(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 4 && b[0] == b'1' && b[1..].iter().all(|c| matches!(c, b'Y' | b'N' | b'-'))
}

fn check_us_privacy(params: &mut PrivacyParams, errors: &mut Vec<DcsError>) {
    if let Some(text) = params.us_privacy.as_deref() {
        if !is_us_privacy(text) {
            errors.push(DcsError::invalid_value(
                "us_privacy",
                "not a US Privacy string like 1YNN",
            ));
            params.us_privacy = None;
        }
    }
}

/// The section ids listed in a GPP v1 string's header, once the string is known to carry
/// exactly that many sections after it (`header~section~section`).
pub fn gpp_sections(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_GPP_BYTES {
        return Err(format!("longer than {MAX_GPP_BYTES} bytes"));
    }
    let mut parts = text.split('~');
    let header = parts.next().unwrap_or_default();
    let e = |e: TcDecodeError| format!("header {e}");
    let mut r = BitReader::new(header).map_err(e)?;
    let kind = r.bits(6, "Type").map_err(e)?;
    if kind != 3 {
        return Err(format!("header type {kind}, not 3"));
    }
    let version = r.bits(6, "Version").map_err(e)?;
    if version != 1 {
        return Err(format!("GPP version {version}, not 1"));
    }
    // Section ids: entries of one id, or a group of ids (offset and count), each offset from
    // the previous id, in Fibonacci coding.
    let mut ids: Vec<u8> = Vec::new();
    let mut last = 0u64;
    let too_many = || format!("more than {MAX_GPP_SIDS} section ids, or an id above 255");
    for _ in 0..r.bits(12, "NumEntries").map_err(e)? {
        let group = r.bits(1, "IsGroup").map_err(e)? == 1;
        let start = last + r.fibonacci("SectionId").map_err(e)?;
        let end = if group {
            start + r.fibonacci("Count").map_err(e)?
        } else {
            start
        };
        if end > 255 || ids.len() as u64 + (end - start) >= MAX_GPP_SIDS as u64 {
            return Err(too_many());
        }
        ids.extend((start..=end).map(|id| id as u8));
        last = end;
    }
    let sections = parts.count();
    if sections != ids.len() {
        return Err(format!(
            "{} section ids in the header, {sections} sections",
            ids.len()
        ));
    }
    Ok(ids)
}

/// `gpp_sid`: section ids separated by commas (or `_`, which some tags use).
pub fn parse_gpp_sid(text: &str) -> Option<BTreeSet<u8>> {
    let ids = text
        .split([',', '_'])
        .map(|id| id.parse::<u8>().ok().filter(|&id| id > 0))
        .collect::<Option<BTreeSet<u8>>>()?;
    (ids.len() <= MAX_GPP_SIDS).then_some(ids)
}

fn check_gpp(params: &mut PrivacyParams, errors: &mut Vec<DcsError>) {
    if let Some(text) = params.gpp.as_deref() {
        if let Err(why) = gpp_sections(text) {
            errors.push(DcsError::invalid_value("gpp", &why));
            params.gpp = None;
        }
    }
    if let Some(text) = params.gpp_sid.as_deref() {
        if parse_gpp_sid(text).is_none() {
            errors.push(DcsError::invalid_value(
                "gpp_sid",
                "not a list of section ids like 2,6",
            ));
            params.gpp_sid = None;
        }
    }
}

/// Builds TCF v2 TC strings (core segment only): for tests, the demo and the benchmark,
/// which need real strings, not copies of ones found elsewhere.
#[derive(Clone, Debug)]
pub struct TcStringBuilder {
    pub created_deciseconds: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    pub purposes: Vec<u8>,
    pub legitimate_interests: Vec<u8>,
    pub vendors: Vec<u16>,
    /// Encode the vendor consents as ranges rather than a bit field.
    pub vendor_ranges: bool,
    /// `(purpose, restriction type 0-3, vendors)`.
    pub restrictions: Vec<(u8, u8, Vec<u16>)>,
}

impl Default for TcStringBuilder {
    fn default() -> Self {
        TcStringBuilder {
            created_deciseconds: 17_800_000_000,
            cmp_id: 300,
            cmp_version: 2,
            vendor_list_version: 150,
            policy_version: 5,
            purposes: Vec::new(),
            legitimate_interests: Vec::new(),
            vendors: Vec::new(),
            vendor_ranges: false,
            restrictions: Vec::new(),
        }
    }
}

impl TcStringBuilder {
    pub fn purposes(mut self, purposes: &[u8]) -> Self {
        self.purposes = purposes.to_vec();
        self
    }

    pub fn vendors(mut self, vendors: &[u16]) -> Self {
        self.vendors = vendors.to_vec();
        self
    }

    pub fn encode(&self) -> String {
        let mut w = BitWriter::default();
        w.put(2, 6);
        w.put(self.created_deciseconds, 36);
        w.put(self.created_deciseconds, 36);
        w.put(self.cmp_id.into(), 12);
        w.put(self.cmp_version.into(), 12);
        w.put(1, 6);
        w.put(4, 6); // "EN"
        w.put(13, 6);
        w.put(self.vendor_list_version.into(), 12);
        w.put(self.policy_version.into(), 6);
        w.put(0, 1);
        w.put(0, 1);
        w.put(0, 12);
        w.field24(&self.purposes);
        w.field24(&self.legitimate_interests);
        w.put(0, 1);
        w.put(0, 6); // "AA"
        w.put(0, 6);
        let max = self.vendors.iter().copied().max().unwrap_or(0);
        w.put(max.into(), 16);
        if self.vendor_ranges {
            w.put(1, 1);
            w.entries(&self.vendors);
        } else {
            w.put(0, 1);
            for id in 1..=max {
                w.put(u64::from(self.vendors.contains(&id)), 1);
            }
        }
        // No vendor legitimate interests.
        w.put(0, 16);
        w.put(0, 1);
        w.put(self.restrictions.len() as u64, 12);
        for (purpose, kind, vendors) in &self.restrictions {
            w.put((*purpose).into(), 6);
            w.put((*kind).into(), 2);
            w.entries(vendors);
        }
        w.finish()
    }
}

#[derive(Default)]
struct BitWriter {
    bits: Vec<bool>,
}

impl BitWriter {
    fn put(&mut self, value: u64, n: usize) {
        self.bits
            .extend((0..n).rev().map(|i| (value >> i) & 1 == 1));
    }

    fn field24(&mut self, set: &[u8]) {
        self.bits.extend((1..=24).map(|p| set.contains(&p)));
    }

    /// Each id as a single entry (the decoder merges neighbours).
    fn entries(&mut self, ids: &[u16]) {
        self.put(ids.len() as u64, 12);
        for &id in ids {
            self.put(0, 1);
            self.put(id.into(), 16);
        }
    }

    fn finish(&self) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.bits
            .chunks(6)
            .map(|chunk| {
                let v = (0..6).fold(0usize, |acc, i| {
                    (acc << 1) | usize::from(chunk.get(i).copied().unwrap_or(false))
                });
                ALPHABET[v] as char
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(gdpr: Option<&str>, consent: Option<&str>) -> PrivacyParams {
        PrivacyParams {
            gdpr: gdpr.map(Into::into),
            gdpr_consent: consent.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_the_builder_encodes() {
        let text = TcStringBuilder::default()
            .purposes(&[1, 2, 10])
            .vendors(&[3, 4, 5, 565, 700])
            .encode();
        let tc = TcString::decode(&text).unwrap();
        assert_eq!(tc.cmp_id, 300);
        assert_eq!(tc.policy_version, 5);
        assert_eq!(tc.vendor_list_version, 150);
        assert_eq!(tc.created, 1_780_000_000);
        for p in 1..=24 {
            assert_eq!(
                tc.purpose_consent(p),
                [1, 2, 10].contains(&p),
                "purpose {p}"
            );
        }
        assert!(!tc.purpose_legitimate_interest(2));
        assert_eq!(
            tc.vendor_consents,
            IdRanges(vec![(3, 5), (565, 565), (700, 700)])
        );
        assert!(tc.vendor_legitimate_interests.is_empty());
        // The range encoding gives the same set.
        let ranged = TcStringBuilder {
            vendor_ranges: true,
            ..TcStringBuilder::default().vendors(&[700, 3, 5, 4, 565])
        };
        assert_eq!(
            TcString::decode(&ranged.encode()).unwrap().vendor_consents,
            tc.vendor_consents
        );
    }

    /// Our decoder reads what `iab_gpp`'s does, on its own test strings and ours.
    #[test]
    fn agrees_with_iab_gpp() {
        use std::str::FromStr;
        let ours = TcStringBuilder {
            vendor_ranges: true,
            ..TcStringBuilder::default()
                .purposes(&[1, 3, 7, 10])
                .vendors(&[2, 6, 8, 565])
        }
        .encode();
        for text in [
            "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            "CPXuQIAPXuQIAAfKABENB-CgACAAAAAAAAYgF5wAQF5gAAAA",
            "CP48G0AP48G0AEsACCPLAkEgAAAAAEPgAB5YAAAQaQD2F2K2kKFkPCmQWYAQBCijYEAhQAAAAkCBIAAgAUgQAgFIIAgAIFAAAAAAAAAQEgCQAAQABAAAIACgAAAAAAIAAAAAAAQQAAAAAIAAAAAAAAEAAAAAAAQAAAAIAABEhCAAQQAEAAAAAAAQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAgAA",
            ours.as_str(),
        ] {
            let theirs = iab_gpp::sections::tcfeuv2::TcfEuV2::from_str(text).unwrap().core;
            let mine = TcString::decode(text).unwrap();
            assert_eq!(mine.cmp_id, theirs.cmp_id, "{text}");
            assert_eq!(mine.vendor_list_version, theirs.vendor_list_version);
            assert_eq!(u64::from(mine.policy_version), u64::from(theirs.policy_version));
            assert_eq!(mine.created, theirs.created);
            for p in 1..=24u8 {
                assert_eq!(
                    mine.purpose_consent(p),
                    theirs.purpose_consents.contains(&u16::from(p))
                );
            }
            for v in 1..=2000u16 {
                assert_eq!(
                    mine.vendor_consents.contains(v),
                    theirs.vendor_consents.contains(&v),
                    "{text} vendor {v}"
                );
            }
        }
    }

    #[test]
    fn refuses_malformed_strings_with_the_reason() {
        let good = TcStringBuilder::default().purposes(&[1]).encode();
        assert_eq!(TcString::decode(""), Err(TcDecodeError::Empty));
        assert_eq!(TcString::decode(".abc"), Err(TcDecodeError::Empty));
        assert!(matches!(
            TcString::decode(&good[..20]),
            Err(TcDecodeError::Truncated { .. })
        ));
        assert_eq!(
            TcString::decode("CO!x"),
            Err(TcDecodeError::InvalidCharacter { offset: 2 })
        );
        // A TCF v1 string (version 1).
        assert_eq!(
            TcString::decode("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),
            Err(TcDecodeError::Version(1))
        );
        let huge = "C".repeat(MAX_TC_STRING_BYTES + 1);
        assert!(matches!(
            TcString::decode(&huge),
            Err(TcDecodeError::TooLong { .. })
        ));
        // A range that ends before it starts.
        let mut w = header_bits(&[]);
        w.put(10, 16);
        w.put(1, 1);
        w.put(1, 12);
        w.put(1, 1);
        w.put(9, 16);
        w.put(3, 16);
        assert!(matches!(
            TcString::decode(&w.finish()),
            Err(TcDecodeError::BadRange {
                start: 9,
                end: 3,
                ..
            })
        ));
    }

    /// The amplification `iab_gpp` suffers from: hundreds of ranges of every vendor id, as
    /// many as fit under the cap. Decoded in one pass, kept as one range.
    #[test]
    fn a_string_of_huge_ranges_stays_small() {
        let huge = |entries: u64| {
            let mut w = header_bits(&[1, 10]);
            w.put(65535, 16);
            w.put(1, 1);
            w.put(entries, 12);
            for _ in 0..entries {
                w.put(1, 1);
                w.put(1, 16);
                w.put(65535, 16);
            }
            w.put(0, 17);
            w.put(0, 12);
            w.finish()
        };
        let text = huge(700);
        assert!(text.len() <= MAX_TC_STRING_BYTES);
        let tc = TcString::decode(&text).unwrap();
        assert_eq!(tc.vendor_consents, IdRanges(vec![(1, 65535)]));
        assert!(matches!(
            TcString::decode(&huge(4095)),
            Err(TcDecodeError::TooLong { .. })
        ));
    }

    /// The bits of a builder string up to its vendor consents.
    fn header_bits(purposes: &[u8]) -> BitWriter {
        let mut w = BitWriter::default();
        w.bits.extend(
            BitReader::new(&TcStringBuilder::default().purposes(purposes).encode())
                .unwrap()
                .sextets
                .iter()
                .flat_map(|s| (0..6).rev().map(move |i| (s >> i) & 1 == 1))
                .take(213),
        );
        w
    }

    #[test]
    fn gdpr_needs_purposes_and_our_vendor() {
        let policy = TcfPolicy::new(&[10], Some(565));
        assert_eq!(policy.purposes, vec![1, 10]);
        let judge1 = |consent: &str| {
            let mut p = params(Some("1"), Some(consent));
            let mut errors = Vec::new();
            let j = judge(&mut p, &policy, &mut errors);
            assert!(errors.is_empty());
            j
        };
        let ok = TcStringBuilder::default()
            .purposes(&[1, 10])
            .vendors(&[565, 900])
            .encode();
        let Judgement::Proceed(vendors) = judge1(&ok) else {
            panic!("refused");
        };
        assert!(vendors.allows(Some(900)));
        assert!(!vendors.allows(Some(901)));
        assert!(!vendors.allows(Some(70_000)));
        assert!(vendors.allows(None));

        let no_p10 = TcStringBuilder::default()
            .purposes(&[1])
            .vendors(&[565])
            .encode();
        assert!(matches!(
            judge1(&no_p10),
            Judgement::Refuse(Refusal::Purpose(10))
        ));
        let no_vendor = TcStringBuilder::default()
            .purposes(&[1, 10])
            .vendors(&[564])
            .encode();
        assert!(matches!(
            judge1(&no_vendor),
            Judgement::Refuse(Refusal::Vendor(565))
        ));
        // A publisher restriction "not allowed" for purpose 10 removes the vendor's consent.
        let restricted = TcStringBuilder {
            restrictions: vec![(10, 0, vec![565])],
            ..TcStringBuilder::default()
                .purposes(&[1, 10])
                .vendors(&[565])
        }
        .encode();
        assert!(matches!(
            judge1(&restricted),
            Judgement::Refuse(Refusal::Vendor(565))
        ));
        // "Require consent" restricts nothing when there is consent.
        let require = TcStringBuilder {
            restrictions: vec![(10, 1, vec![565])],
            ..TcStringBuilder::default()
                .purposes(&[1, 10])
                .vendors(&[565])
        }
        .encode();
        assert!(matches!(judge1(&require), Judgement::Proceed(_)));
        assert!(matches!(
            judge1("garbage!"),
            Judgement::Refuse(Refusal::Unreadable(_))
        ));
    }

    #[test]
    fn gdpr_absent_zero_or_unknown() {
        let policy = TcfPolicy::default();
        let mut errors = Vec::new();
        let mut p = params(None, None);
        assert!(matches!(
            judge(&mut p, &policy, &mut errors),
            Judgement::Proceed(VendorConsent::All)
        ));
        // gdpr=0 with a broken string: proceeds, but the string is not passed on.
        let mut p = params(Some("0"), Some("%%%"));
        assert!(matches!(
            judge(&mut p, &policy, &mut errors),
            Judgement::Proceed(VendorConsent::All)
        ));
        assert_eq!(p.gdpr_consent, None);
        assert_eq!(errors.len(), 1);
        // gdpr=yes is taken as 1.
        let mut errors = Vec::new();
        let mut p = params(Some("yes"), None);
        assert!(matches!(
            judge(&mut p, &policy, &mut errors),
            Judgement::Refuse(Refusal::NoString)
        ));
        assert_eq!(p.gdpr.as_deref(), Some("1"));
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn us_privacy_and_gpp_are_checked_and_dropped_when_malformed() {
        assert!(is_us_privacy("1YNN") && is_us_privacy("1---") && is_us_privacy("1NYY"));
        for bad in ["", "1YN", "1YNNN", "2YNN", "1ynn", "1YNé"] {
            assert!(!is_us_privacy(bad), "{bad}");
        }
        assert_eq!(gpp_sections("DBABTA~1YNN"), Ok(vec![6]));
        // TCF EU v2 and US Privacy, as single ids and as a group.
        let tcf = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
        assert_eq!(gpp_sections(&format!("DBACNY~{tcf}~1YNN")), Ok(vec![2, 6]));
        assert_eq!(
            gpp_sections(&format!("DBABsw~{tcf}~1YNN~x~y~z")),
            Err("4 section ids in the header, 5 sections".into())
        );
        for text in ["DBABTA~1YNN", &format!("DBACNY~{tcf}~1YNN")] {
            let theirs: Vec<u8> = iab_gpp::v1::GPPString::parse_str(text)
                .unwrap()
                .section_ids()
                .map(|&id| id as u8)
                .collect();
            assert_eq!(gpp_sections(text).unwrap(), theirs, "{text}");
        }
        assert!(gpp_sections("DBABTA").is_err());
        assert!(gpp_sections("garbage").is_err());
        // The headers that overflow inside iab_gpp (`docs/architecture.md`, Dependency notes, and
        // the fuzz target's find).
        assert!(gpp_sections("DBAVVWBLA~BVVVVVVVVWA").is_err());
        assert!(gpp_sections("DBATBND48G0AP48G0AEsACCPLAkEgABABTA~1YNN").is_err());
        assert_eq!(parse_gpp_sid("2,6"), Some([2, 6].into()));
        assert_eq!(parse_gpp_sid("7_8"), Some([7, 8].into()));
        assert_eq!(parse_gpp_sid("0"), None);
        assert_eq!(parse_gpp_sid("2,x"), None);
        assert_eq!(parse_gpp_sid(""), None);

        let mut p = PrivacyParams {
            us_privacy: Some("1YNN".into()),
            gpp: Some("DBABTA~1YNN".into()),
            gpp_sid: Some("6".into()),
            ..Default::default()
        };
        let mut errors = Vec::new();
        judge(&mut p, &TcfPolicy::default(), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(p.us_privacy.as_deref(), Some("1YNN"));
        let mut p = PrivacyParams {
            us_privacy: Some("YES".into()),
            gpp: Some("nope".into()),
            gpp_sid: Some("-1".into()),
            ..Default::default()
        };
        judge(&mut p, &TcfPolicy::default(), &mut errors);
        assert_eq!(errors.len(), 3);
        assert_eq!((p.us_privacy, p.gpp, p.gpp_sid), (None, None, None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics(text in "[A-Za-z0-9_.=+/-]{0,600}") {
            let _ = TcString::decode(&text);
            let _ = gpp_sections(&text);
        }

        #[test]
        fn round_trips(
            purposes in proptest::collection::btree_set(1u8..=24, 0..24),
            vendors in proptest::collection::btree_set(1u16..2000, 0..60),
            ranges in any::<bool>(),
        ) {
            let purposes: Vec<u8> = purposes.into_iter().collect();
            let vendors: Vec<u16> = vendors.into_iter().collect();
            let text = TcStringBuilder {
                vendor_ranges: ranges,
                ..TcStringBuilder::default().purposes(&purposes).vendors(&vendors)
            }
            .encode();
            let tc = TcString::decode(&text).unwrap();
            for p in 1..=24 {
                prop_assert_eq!(tc.purpose_consent(p), purposes.contains(&p));
            }
            for v in 1..2001 {
                prop_assert_eq!(tc.vendor_consents.contains(v), vendors.contains(&v));
            }
        }
    }
}
