//! ID sync: `/ibs` parameters (path after the colon, then query), declared-id resolution with
//! AAM's limits, and `redir` checking — a redirect is only ever to an allowed host.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tributary::core::ids::VisitorId;
use tributary::core::idsync::{host_matches, redirect_target, resolve, DataSources};
use tributary::core::request::parse_ibs;

struct Known;
impl DataSources for Known {
    fn knows(&self, dpid: u32) -> bool {
        dpid % 3 != 0
    }
}

const ALLOWED: [&str; 2] = ["sync.partner.example", "*.ads.example"];

fuzz_target!(|data: &[u8]| {
    // Bytes before the first 0xFF are the path parameters, the rest the query string.
    let (path, query) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(ibs) = parse_ibs(path, query) else {
        return;
    };
    let codes: HashMap<String, u32> = [("crm".to_string(), 7)].into_iter().collect();
    let (accepted, _errors) = resolve(&ibs.declared, &codes, &Known);
    assert!(accepted.len() <= tributary::core::idsync::MAX_IDS_PER_REQUEST);
    if let Some(redir) = &ibs.redir {
        let allowed: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
        let visitor = VisitorId::parse("12345678901234567890123456789012345678").unwrap();
        if let Ok(target) = redirect_target(redir, visitor, &allowed) {
            let url = url::Url::parse(&target).expect("a redirect target is a URL");
            let host = url.host_str().expect("with a host").to_ascii_lowercase();
            assert!(
                ALLOWED.iter().any(|a| host_matches(a, &host)),
                "redirect to {target}"
            );
        }
    }
});
