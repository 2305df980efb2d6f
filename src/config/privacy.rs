//! `[privacy]`: what a TCF v2 consent string must grant (docs/privacy.md).

use serde::Deserialize;

use super::{range, ConfigError};

/// What a TCF v2 consent string must grant when a call says GDPR applies (docs/privacy.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Our IAB vendor id: with `gdpr=1`, processing needs this vendor's consent. Unset = only
    /// purposes are checked (Tributary run by the publisher itself, not as a listed vendor).
    pub tcf_vendor_id: Option<u32>,
    /// TCF purposes that need consent; purpose 1 is always required.
    pub tcf_purposes: Vec<u32>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            tcf_vendor_id: None,
            tcf_purposes: vec![1, 10],
        }
    }
}

impl PrivacyConfig {
    /// The checks a TC string must pass; call after [`Config::validate`](super::Config::validate).
    pub fn tcf_policy(&self) -> crate::core::consent::TcfPolicy {
        let purposes: Vec<u8> = self
            .tcf_purposes
            .iter()
            .filter_map(|&p| u8::try_from(p).ok())
            .collect();
        crate::core::consent::TcfPolicy::new(
            &purposes,
            self.tcf_vendor_id.and_then(|v| u16::try_from(v).ok()),
        )
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(vendor) = self.tcf_vendor_id {
            range("privacy.tcf_vendor_id", vendor.into(), 1, 65_535)?;
        }
        for &purpose in &self.tcf_purposes {
            // TCF v2 has 11 purposes; its consent field has room for 24.
            range("privacy.tcf_purposes", purpose.into(), 1, 24)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{env, error};
    use crate::config::Config;

    #[test]
    fn privacy_keys() {
        let c = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(
            c.privacy.tcf_policy(),
            crate::core::consent::TcfPolicy::new(&[1, 10], None)
        );
        let c = Config::from_toml(
            "[privacy]\ntcf_vendor_id = 565\ntcf_purposes = [10, 3]\n",
            env(&[]),
        )
        .unwrap();
        let policy = c.privacy.tcf_policy();
        assert_eq!(
            (policy.purposes, policy.vendor_id),
            (vec![1, 3, 10], Some(565))
        );
        let c = Config::from_toml("", env(&[("TRIBUTARY__PRIVACY__TCF_PURPOSES", "1,2")])).unwrap();
        assert_eq!(c.privacy.tcf_purposes, [1, 2]);
        assert_eq!(
            error("[privacy]\ntcf_purposes = [25]\n", &[]),
            "config key privacy.tcf_purposes: must be between 1 and 24 (got 25)"
        );
        assert_eq!(
            error("[privacy]\ntcf_vendor_id = 70000\n", &[]),
            "config key privacy.tcf_vendor_id: must be between 1 and 65535 (got 70000)"
        );
    }
}
