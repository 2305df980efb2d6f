//! `tributary tc-string`: a TCF v2 consent string (core segment) granting the given purposes
//! and vendors, to try `gdpr=1` calls; or, with `--decode`, what a string grants.

use crate::core::consent::{TcString, TcStringBuilder};

/// Prints the encoded string, or the decoded one's grants.
pub fn run(purposes: &[u8], vendors: &[u16], decode: Option<&str>) -> Result<(), String> {
    match decode {
        Some(text) => {
            let tc = TcString::decode(text).map_err(|e| format!("not a TCF v2 string: {e}"))?;
            let granted: Vec<String> = (1..=24)
                .filter(|&p| tc.purpose_consent(p))
                .map(|p| p.to_string())
                .collect();
            println!(
                "cmp {} (version {}), vendor list {}, policy {}",
                tc.cmp_id, tc.cmp_version, tc.vendor_list_version, tc.policy_version
            );
            println!("purposes with consent: {}", granted.join(","));
            println!("vendors with consent: {}", tc.vendor_consents);
        }
        None => {
            if let Some(p) = purposes.iter().find(|p| !(1..=24).contains(*p)) {
                return Err(format!("purpose {p}: purposes are 1 to 24"));
            }
            if vendors.contains(&0) {
                return Err("vendor ids start at 1".into());
            }
            println!(
                "{}",
                TcStringBuilder::default()
                    .purposes(purposes)
                    .vendors(vendors)
                    .encode()
            );
        }
    }
    Ok(())
}
