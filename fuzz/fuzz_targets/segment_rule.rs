//! Segment rule parsing/compilation, then evaluation with "holds every even trait id".
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::rules::segment_rule::SegmentRule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rule) = SegmentRule::parse(text) {
        let _ = rule.matches(|t| t % 2 == 0);
        let _ = rule.traits();
    }
});
