//! `[profiles]`: authenticated profiles and the profile merge rule (docs/customer-data.md,
//! Merge rules).

use serde::Deserialize;

use super::{bad, ConfigError};

/// AAM allows a merge rule up to three cross-device data sources.
const MAX_CROSS_DEVICE_SOURCES: usize = 3;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// How a device's profile and the authenticated profiles of the customer ids it declares
    /// are combined for evaluation.
    pub merge_rule: MergeRule,
    /// Data sources whose ids are people (a CRM id, a login), each id with its own
    /// authenticated profile: AAM's cross-device data sources. Ids of other data sources are
    /// ID syncs of the device. Empty = none (every profile is a device's).
    pub cross_device_data_sources: Vec<u32>,
}

/// AAM's profile merge rules, as far as a real-time server evaluates them (AAM-style names in
/// docs/customer-data.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MergeRule {
    /// "Last Authenticated Profiles + Device Profile": the device's profile with the last
    /// authenticated profile it declared, whatever the current authentication state.
    #[default]
    LastAuthenticatedAndDevice,
    /// "Current Authenticated Profiles + No Device Profile": the authenticated profile of an
    /// id declared authenticated in this call, alone; nothing else otherwise.
    CurrentAuthenticated,
    /// "No Cross-Device Profile + Device Profile": the device's profile alone.
    DeviceOnly,
}

impl TryFrom<String> for MergeRule {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "last_authenticated_and_device" => Ok(MergeRule::LastAuthenticatedAndDevice),
            "current_authenticated" => Ok(MergeRule::CurrentAuthenticated),
            "device_only" => Ok(MergeRule::DeviceOnly),
            _ => Err(format!(
                "must be last_authenticated_and_device, current_authenticated or device_only (got {name:?})"
            )),
        }
    }
}

impl ProfilesConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sources = &self.cross_device_data_sources;
        if sources.len() > MAX_CROSS_DEVICE_SOURCES {
            return Err(bad(
                "profiles.cross_device_data_sources",
                format!(
                    "at most {MAX_CROSS_DEVICE_SOURCES} data sources (got {})",
                    sources.len()
                ),
            ));
        }
        for &dpid in sources {
            // 0 is the AAM id itself and 4 the ECID: both name devices.
            if dpid == 0 || dpid == crate::core::ids::ECID_DATA_SOURCE {
                return Err(bad(
                    "profiles.cross_device_data_sources",
                    format!("data source {dpid} names devices, not people"),
                ));
            }
        }
        Ok(())
    }

    /// Whether ids of `dpid` have authenticated profiles.
    pub fn is_cross_device(&self, dpid: u32) -> bool {
        self.cross_device_data_sources.contains(&dpid)
    }
}

#[cfg(test)]
mod tests {
    use super::MergeRule;
    use crate::config::tests::{env, error};
    use crate::config::Config;

    #[test]
    fn profiles_keys() {
        let c = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(c.profiles.merge_rule, MergeRule::LastAuthenticatedAndDevice);
        let c = Config::from_toml(
            "[profiles]\nmerge_rule = \"device_only\"\ncross_device_data_sources = [9001]\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.profiles.merge_rule, MergeRule::DeviceOnly);
        assert!(c.profiles.is_cross_device(9001));
        let c = Config::from_toml(
            "",
            env(&[
                ("TRIBUTARY__PROFILES__MERGE_RULE", "current_authenticated"),
                (
                    "TRIBUTARY__PROFILES__CROSS_DEVICE_DATA_SOURCES",
                    "9001,9002",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.profiles.merge_rule, MergeRule::CurrentAuthenticated);
        assert_eq!(c.profiles.cross_device_data_sources, [9001, 9002]);
        assert_eq!(
            error("[profiles]\nmerge_rule = \"all\"\n", &[]),
            "config key profiles.merge_rule: must be last_authenticated_and_device, current_authenticated or device_only (got \"all\")"
        );
        assert_eq!(
            error(
                "[profiles]\ncross_device_data_sources = [1, 2, 3, 5]\n",
                &[]
            ),
            "config key profiles.cross_device_data_sources: at most 3 data sources (got 4)"
        );
        assert_eq!(
            error("[profiles]\ncross_device_data_sources = [4]\n", &[]),
            "config key profiles.cross_device_data_sources: data source 4 names devices, not people"
        );
    }
}
