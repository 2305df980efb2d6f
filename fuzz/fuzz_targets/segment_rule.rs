//! Segment rule parsing and compilation, then evaluation against a fixed trait history, then
//! printing: the printed rule must parse back into the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::rules::segment_rule::{Recency, SegmentRule, TraitHistory};

/// Every even trait id held, realized once a day for the last `id % 40` days.
struct Even;

impl TraitHistory for Even {
    fn holds(&self, t: u64) -> bool {
        t % 2 == 0
    }
    fn count(&self, t: u64, recency: Option<Recency>) -> u64 {
        if t % 2 != 0 {
            return 0;
        }
        (0..(t % 40) as u32)
            .filter(|&age| recency.is_none_or(|r| r.admits(age)))
            .count() as u64
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rule) = SegmentRule::parse(text) {
        let _ = rule.matches(&Even);
        let printed = rule.to_string();
        let again = SegmentRule::parse(&printed).expect("a printed rule parses");
        assert_eq!(again.sexp(), rule.sexp(), "{printed}");
    }
});
