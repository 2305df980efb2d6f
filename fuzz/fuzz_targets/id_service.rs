//! `/id` (and `/optOutStatus`) parameter parsing, then the answer VisitorAPI reads: whatever
//! the query, the answer must be a JSON object whose `d_mid`, when present, is an ECID as
//! VisitorAPI accepts it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::id_service::IdBody;
use tributary::core::ids::Ecid;
use tributary::core::request::parse_id;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_id(data) else { return };
    let body = IdBody {
        d_mid: req.d_mid.as_ref().map(|e| e.as_str().to_string()),
        errors: req.errors,
        ..Default::default()
    };
    let json: serde_json::Value =
        serde_json::from_slice(&body.render()).expect("the answer is JSON");
    assert!(json.is_object());
    if let Some(mid) = json.get("d_mid") {
        let mid = mid.as_str().expect("d_mid is a string");
        assert_eq!(
            Ecid::parse(mid).map(|e| e.to_string()).as_deref(),
            Some(mid)
        );
    }
});
