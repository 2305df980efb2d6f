//! Trait rule parsing/compilation, then evaluation against a fixed set of signals, then
//! printing: the printed rule must parse back into the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::rules::trait_rule::TraitRule;
use tributary::core::signals::Signals;

fn signals() -> Signals {
    let mut s = Signals::new();
    let mut add = |k: &str, vs: &[&str]| s.add(k, vs.iter().map(|v| v.to_string()));
    add("c_color", &["blue", "Red"]);
    add("price", &["10", "10.5", "-3", "abc"]);
    add(
        "c_page",
        &["https://example.com/a/b?x=1", "sports news today"],
    );
    add("empty", &[""]);
    add("p_age", &["41 to 55", "é ünïcödé 🦀"]);
    add("k", &["1", "0.0", "+7", ".5", "1e3", "NaN"]);
    s
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rule) = TraitRule::parse(text) {
        let _ = rule.matches(&signals());
        let _ = rule.matches(&Signals::new());
        let _ = rule.keys();
        let _ = rule.matches_without_signals();
        let printed = rule.to_string();
        let again = TraitRule::parse(&printed).expect("a printed rule parses");
        assert_eq!(again.sexp(), rule.sexp(), "{printed}");
    }
});
