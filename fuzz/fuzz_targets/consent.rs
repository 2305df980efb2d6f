//! Privacy strings: TC strings (`gdpr_consent`), GPP strings and `gpp_sid`, US Privacy, and the
//! judgement on a call's privacy parameters. No input may panic or take long; a judgement that
//! lets the call proceed with `gdpr=1` always rests on a string granting the policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::consent::{judge, Judgement, TcString, TcfPolicy};
use tributary::core::request::PrivacyParams;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tributary::core::consent::gpp_sections(text);
    let _ = tributary::core::consent::parse_gpp_sid(text);
    let _ = tributary::core::consent::is_us_privacy(text);
    let policy = TcfPolicy::new(&[1, 10], Some(565));
    let decoded = TcString::decode(text);
    let mut params = PrivacyParams {
        gdpr: Some("1".into()),
        gdpr_consent: Some(text.to_string()),
        ..Default::default()
    };
    let mut errors = Vec::new();
    if let Judgement::Proceed(vendors) = judge(&mut params, &policy, &mut errors) {
        let tc = decoded.expect("a call proceeds only on a readable string");
        assert!(tc.purpose_consent(1) && tc.purpose_consent(10));
        assert!(tc.vendor_allowed(565, &policy.purposes));
        assert!(vendors.allows(Some(565)));
    }
});
