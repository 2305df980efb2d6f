//! `[admin]`: the admin REST API's listener (docs/admin-api.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{bad, socket_addr, ConfigError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener; keep it off the public network. Port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// Bearer token required on every admin request; empty = a random one is generated at
    /// start and printed once.
    pub token: String,
    /// The organization id Customer Data API calls must carry (`x-gw-ims-org-id`, `d_orgid`),
    /// as Adobe's SDK sends it (`…@AdobeOrg`); empty = not checked.
    pub org_id: String,
    /// Where uploaded inbound files wait while they are imported (`POST /v1/inbound`); empty =
    /// `tributary-inbound` in the system's temporary directory. Put it on a disk with room for
    /// the largest file: a temporary directory in memory (tmpfs) holds uploads in RAM.
    pub inbound_spool_dir: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: String::new(),
            org_id: String::new(),
            inbound_spool_dir: PathBuf::new(),
        }
    }
}

impl AdminConfig {
    /// The inbound spool directory in use.
    pub fn spool_dir(&self) -> PathBuf {
        if self.inbound_spool_dir.as_os_str().is_empty() {
            std::env::temp_dir().join("tributary-inbound")
        } else {
            self.inbound_spool_dir.clone()
        }
    }

    /// `bind` needs no check here: it was parsed when the configuration was read.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let token = &self.token;
        if !token.is_empty()
            && (token.len() < 16
                || token.len() > 256
                || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(bad(
                "admin.token",
                "must be 16 to 256 printable ASCII characters (or empty: one is generated)",
            ));
        }
        let org = &self.org_id;
        if org.len() > 256 || !org.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "admin.org_id",
                "must be up to 256 printable ASCII characters, like ABC123@AdobeOrg",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use crate::config::tests::{env, error};
    use crate::config::Config;

    #[test]
    fn bind_errors_name_the_key() {
        assert_eq!(
            error("[admin]\nbind = \"x\"\n", &[]),
            "config key admin.bind: not an address:port (\"x\")"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__ADMIN__BIND", "not-an-address")]),
            "config key admin.bind: not an address:port (\"not-an-address\")"
        );
        assert_eq!(
            error("[admin]\nbind = 8081\n", &[]),
            "config key admin.bind: not an address:port (\"8081\")"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__ADMIN__BIND", "8081")]),
            "config key admin.bind: not an address:port (\"8081\")"
        );
        let e = Config::from_toml("", env(&[("TRIBUTARY__ADMIN__BIND", "x")])).unwrap_err();
        assert_eq!(e.key, "admin.bind");
    }

    #[test]
    fn bind_takes_ipv6_and_env_overrides() {
        let c = Config::from_toml("[admin]\nbind = \"[::1]:0\"\n", env(&[])).unwrap();
        assert_eq!(c.admin.bind, (Ipv6Addr::LOCALHOST, 0).into());
        let c = Config::from_toml(
            "[admin]\nbind = \"[::1]:0\"\n",
            env(&[("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")]),
        )
        .unwrap();
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn token_length() {
        assert_eq!(
            error("[admin]\ntoken = \"short\"\n", &[]),
            "config key admin.token: must be 16 to 256 printable ASCII characters \
             (or empty: one is generated)"
        );
        let c = Config::from_toml("[admin]\ntoken = \"0123456789abcdef\"\n", env(&[])).unwrap();
        assert_eq!(c.admin.token, "0123456789abcdef");
    }
}
