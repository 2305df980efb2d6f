//! `[admin]`: the admin REST API's listener (docs/admin-api.md).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{bad, ConfigError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener; keep it off the public network. Port 0 picks a free port.
    pub bind: String,
    /// Bearer token required on every admin request; empty = a random one is generated at
    /// start and printed once.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: "127.0.0.1:8081".into(),
            token: String::new(),
        }
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|_| {
            bad(
                "admin.bind",
                format!("not an address:port ({:?})", self.bind),
            )
        })?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{env, error};
    use crate::config::Config;

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
