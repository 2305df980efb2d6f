//! `[server]`: the public listener and what its answers may contain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::{bad, range, socket_addr, ConfigError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener (`/event`, `/health`, `/ready`, `/metrics`). Port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Returned as `dcs_region` on every answer.
    pub dcs_region: u32,
    /// `Domain` of the `demdex` cookie; empty = the request's host.
    pub cookie_domain: String,
    /// Origins allowed to read answers with credentials; empty = echo any caller's origin.
    pub cors_origins: Vec<String>,
    /// Whether `d_cts=2` may expose traits, segments and provider outcomes.
    pub allow_cts: bool,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Shed events (`429`) while a worker thread runs this many milliseconds behind; 0 = never.
    pub shed_lag_ms: u64,
    /// Shed events while this many are in flight (waiting on providers or sessions).
    pub max_in_flight: usize,
    /// Hosts an `/ibs` call may redirect to (`redir`): `sync.partner.example`, or
    /// `*.partner.example` for its subdomains. Empty = never redirect.
    pub idsync_redirect_hosts: Vec<String>,
    /// Integration codes `d_cid_ic` may name, with their data source ids (`crm = 9001`).
    /// Matched case-insensitively; `DSID_<n>` always names data source `n`.
    pub integration_codes: HashMap<String, u32>,
    /// PEM certificate chain (leaf first) to serve HTTPS on `bind` itself; empty, with
    /// `tls_key` empty too, = plain HTTP (TLS ends at the load balancer).
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert` (PKCS#8, RSA or SEC1, unencrypted).
    pub tls_key: PathBuf,
    /// Peers whose `Forwarded`/`X-Forwarded-For`/`X-Forwarded-Proto` are believed (the load
    /// balancers in front): CIDRs (`10.0.0.0/8`) or addresses. Empty = none: the socket's peer
    /// is the client, whatever a request says (core/forwarded.rs).
    #[serde(deserialize_with = "super::cidrs")]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            dcs_region: 7,
            cookie_domain: String::new(),
            cors_origins: Vec::new(),
            allow_cts: true,
            shutdown_timeout_secs: 10,
            shed_lag_ms: 25,
            max_in_flight: 20_000,
            idsync_redirect_hosts: Vec::new(),
            integration_codes: HashMap::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The certificate chain and key files, when the public listener serves HTTPS itself.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        if self.tls_cert.as_os_str().is_empty() {
            None
        } else {
            Some((&self.tls_cert, &self.tls_key))
        }
    }

    /// `bind` needs no check here: it was parsed when the configuration was read. The TLS
    /// files' contents are read at start-up (`server::tls`); only their presence is checked here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_tls()?;
        range("server.shed_lag_ms", self.shed_lag_ms, 0, 10_000)?;
        range(
            "server.max_in_flight",
            self.max_in_flight as u64,
            1,
            10_000_000,
        )?;
        if self.workers > 1024 {
            return Err(bad(
                "server.workers",
                "must be at most 1024 (0 = one per core)",
            ));
        }
        if self.dcs_region > 1000 {
            return Err(bad("server.dcs_region", "must be at most 1000"));
        }
        if !self.cookie_domain.is_empty()
            && !self
                .cookie_domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(bad(
                "server.cookie_domain",
                "must be a domain name like .example.com",
            ));
        }
        for origin in &self.cors_origins {
            if !is_origin(origin) {
                return Err(bad(
                    "server.cors_origins",
                    format!("{origin:?} is not an origin like https://www.example.com"),
                ));
            }
        }
        for host in &self.idsync_redirect_hosts {
            if !crate::core::idsync::is_host_pattern(host) {
                return Err(bad(
                    "server.idsync_redirect_hosts",
                    format!("{host:?} is not a host like sync.example.com or *.example.com"),
                ));
            }
        }
        for (code, dpid) in &self.integration_codes {
            if code.is_empty() || code.len() > 255 {
                return Err(bad(
                    "server.integration_codes",
                    format!("{code:?} is not an integration code"),
                ));
            }
            if let Some(why) = crate::core::catalog::code_problem(code) {
                return Err(bad("server.integration_codes", format!("{code:?}: {why}")));
            }
            if *dpid == 0 {
                return Err(bad(
                    "server.integration_codes",
                    format!("{code:?}: data source ids start at 1"),
                ));
            }
        }
        Ok(())
    }

    /// Both TLS files or neither; given, they must be files.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let cert = !self.tls_cert.as_os_str().is_empty();
        let key = !self.tls_key.as_os_str().is_empty();
        match (cert, key) {
            (false, false) => return Ok(()),
            (true, false) => {
                return Err(bad(
                    "server.tls_key",
                    "must be set with server.tls_cert (both for HTTPS, neither for HTTP)",
                ))
            }
            (false, true) => {
                return Err(bad(
                    "server.tls_cert",
                    "must be set with server.tls_key (both for HTTPS, neither for HTTP)",
                ))
            }
            (true, true) => {}
        }
        for (name, path) in [
            ("server.tls_cert", &self.tls_cert),
            ("server.tls_key", &self.tls_key),
        ] {
            if !path.is_file() {
                let problem = if path.exists() {
                    "is not a file"
                } else {
                    "does not exist"
                };
                return Err(bad(name, format!("{} {problem}", path.display())));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, nothing more (CORS compares origins exactly).
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    (scheme == "http" || scheme == "https")
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use crate::config::tests::{env, error};
    use crate::config::Config;

    #[test]
    fn id_sync_keys() {
        let c = Config::from_toml(
            "[server]\nidsync_redirect_hosts = [\"sync.a.example\"]\n\
             [server.integration_codes]\nCRM_Login = 9001\n",
            env(&[
                (
                    "TRIBUTARY__SERVER__IDSYNC_REDIRECT_HOSTS",
                    "x.example,*.y.example",
                ),
                ("TRIBUTARY__SERVER__INTEGRATION_CODES__LOYALTY", "9002"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.idsync_redirect_hosts, ["x.example", "*.y.example"]);
        let mut codes: Vec<(String, u32)> = c
            .server
            .integration_codes
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            [("crm_login".to_string(), 9001), ("loyalty".into(), 9002)]
        );
        assert!(
            error("[server]\nidsync_redirect_hosts = [\"https://x\"]\n", &[])
                .starts_with("config key server.idsync_redirect_hosts")
        );
        assert!(error("[server.integration_codes]\ncrm = 0\n", &[])
            .starts_with("config key server.integration_codes"));
    }

    #[test]
    fn bind_errors_name_the_key() {
        assert_eq!(
            error("[server]\nbind = \"x\"\n", &[]),
            "config key server.bind: not an address:port (\"x\")"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__SERVER__BIND", "not-an-address")]),
            "config key server.bind: not an address:port (\"not-an-address\")"
        );
        // A bare port is a number to TOML and to the environment's parsing; quoted as written.
        assert_eq!(
            error("[server]\nbind = 8080\n", &[]),
            "config key server.bind: not an address:port (\"8080\")"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__SERVER__BIND", "8080")]),
            "config key server.bind: not an address:port (\"8080\")"
        );
        let e = Config::from_toml("[server]\nbind = \"localhost:80\"\n", env(&[])).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("server.bind", "not an address:port (\"localhost:80\")")
        );
    }

    #[test]
    fn tls_files_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "").unwrap();
        std::fs::write(&key, "").unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());

        let c = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(c.server.tls(), None);
        let c = Config::from_toml("[server]\ntls_cert = \"\"\ntls_key = \"\"\n", env(&[])).unwrap();
        assert_eq!(c.server.tls(), None);
        let c = Config::from_toml(
            "",
            env(&[
                ("TRIBUTARY__SERVER__TLS_CERT", &cert),
                ("TRIBUTARY__SERVER__TLS_KEY", &key),
            ]),
        )
        .unwrap();
        let (c_path, k_path) = c.server.tls().expect("TLS on");
        assert_eq!(
            (c_path.to_str(), k_path.to_str()),
            (Some(&*cert), Some(&*key))
        );

        assert_eq!(
            error(&format!("[server]\ntls_cert = {cert:?}\n"), &[]),
            "config key server.tls_key: must be set with server.tls_cert (both for HTTPS, \
             neither for HTTP)"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__SERVER__TLS_KEY", &key)]),
            "config key server.tls_cert: must be set with server.tls_key (both for HTTPS, \
             neither for HTTP)"
        );
        let missing = dir.path().join("missing.pem").display().to_string();
        assert_eq!(
            error(
                &format!("[server]\ntls_cert = {missing:?}\ntls_key = {key:?}\n"),
                &[]
            ),
            format!("config key server.tls_cert: {missing} does not exist")
        );
        let folder = dir.path().display().to_string();
        assert_eq!(
            error(
                &format!("[server]\ntls_cert = {cert:?}\ntls_key = {folder:?}\n"),
                &[]
            ),
            format!("config key server.tls_key: {folder} is not a file")
        );
    }

    #[test]
    fn bind_takes_ipv6() {
        let loopback = (Ipv6Addr::LOCALHOST, 0).into();
        let c = Config::from_toml("[server]\nbind = \"[::1]:0\"\n", env(&[])).unwrap();
        assert_eq!(c.server.bind, loopback);
        let c = Config::from_toml("", env(&[("TRIBUTARY__SERVER__BIND", "[::1]:0")])).unwrap();
        assert_eq!(c.server.bind, loopback);
    }
}
