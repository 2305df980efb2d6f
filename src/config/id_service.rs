//! `[id_service]`: what `GET /id` tells Adobe's VisitorAPI (`docs/dcs-api.md`, `/id`), and the
//! partners whose ID syncs a page is asked to fire.

use serde::Deserialize;

use super::{bad, range, ConfigError};
use crate::core::catalog::url_problem;
use crate::core::id_service::SyncPartner;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdServiceConfig {
    /// `subdomain` in `/id` answers. VisitorAPI loads the destination-publishing iframe from
    /// `https://<subdomain>.demdex.net/dest5.html` unless the page sets `dpIframeSrc` to this
    /// server's `/dest5.html`, which a site on Tributary does.
    pub subdomain: String,
    /// `id_sync_ttl` in `/id` answers: how long VisitorAPI keeps the region and blob before it
    /// asks again, in seconds (AAM: 7 days).
    pub id_sync_ttl_secs: u64,
    /// `d_ottl`: how long VisitorAPI keeps an opt-out status before it asks again, in seconds
    /// (AAM: 2 hours).
    pub opt_out_ttl_secs: u64,
    /// ID sync partners: each page's `/id` answer lists them in `ibs`, and the
    /// destination-publishing iframe fires them (no more often than each one's ttl).
    pub syncs: Vec<SyncPartner>,
}

impl Default for IdServiceConfig {
    fn default() -> Self {
        IdServiceConfig {
            subdomain: "tributary".into(),
            id_sync_ttl_secs: 604_800,
            opt_out_ttl_secs: 7_200,
            syncs: Vec::new(),
        }
    }
}

/// Most ID sync partners: each one is a request from every new visitor's browser.
const MAX_SYNCS: usize = 50;

impl IdServiceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sub = &self.subdomain;
        if sub.is_empty()
            || sub.len() > 63
            || !sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "id_service.subdomain",
                "must be 1 to 63 letters, digits or '-' (a DNS label)",
            ));
        }
        range(
            "id_service.id_sync_ttl_secs",
            self.id_sync_ttl_secs,
            60,
            31_536_000,
        )?;
        range(
            "id_service.opt_out_ttl_secs",
            self.opt_out_ttl_secs,
            60,
            31_536_000,
        )?;
        if self.syncs.len() > MAX_SYNCS {
            return Err(bad(
                "id_service.syncs",
                format!("at most {MAX_SYNCS} partners"),
            ));
        }
        for (i, sync) in self.syncs.iter().enumerate() {
            if sync.id == 0 {
                return Err(bad(
                    "id_service.syncs",
                    format!("partner {i}: id is a data source id, from 1"),
                ));
            }
            if !is_sync_url(&sync.url) {
                return Err(bad(
                    "id_service.syncs",
                    format!(
                        "partner {i} ({}): url {:?} is not an http(s) URL with a host",
                        sync.id, sync.url
                    ),
                ));
            }
            if !(1..=525_600).contains(&sync.ttl_minutes) {
                return Err(bad(
                    "id_service.syncs",
                    format!(
                        "partner {i} ({}): ttl_minutes must be between 1 and 525600",
                        sync.id
                    ),
                ));
            }
            if sync.tag != "img" && sync.tag != "iframe" {
                return Err(bad(
                    "id_service.syncs",
                    format!(
                        "partner {i} ({}): tag must be \"img\" or \"iframe\"",
                        sync.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `http(s)://host…` in printable ASCII, at most 2 KB: the iframe fires it as it is.
fn is_sync_url(text: &str) -> bool {
    text.len() <= 2048 && url_problem(text).is_none()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(toml: &str) -> String {
        Config::from_toml(toml, Some(Default::default()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn partners_are_read_and_checked() {
        let c = Config::from_toml(
            "[id_service]\nsubdomain = \"acme-dcs\"\n\
             [[id_service.syncs]]\nid = 411\nurl = \"https://sync.partner.example/s?u=${DD_UUID}\"\n\
             [[id_service.syncs]]\nid = 412\nurl = \"https://p2.example/x\"\nttl_minutes = 60\ntag = \"iframe\"\n",
            Some(Default::default()),
        )
        .unwrap();
        let syncs = &c.id_service.syncs;
        assert_eq!(syncs.len(), 2);
        assert_eq!(
            (syncs[0].ttl_minutes, syncs[0].tag.as_str()),
            (20_160, "img")
        );
        assert_eq!(
            (syncs[1].ttl_minutes, syncs[1].tag.as_str()),
            (60, "iframe")
        );
        assert_eq!(
            error("[[id_service.syncs]]\nid = 1\nurl = \"javascript:alert(1)\"\n"),
            "config key id_service.syncs: partner 0 (1): url \"javascript:alert(1)\" is not an http(s) URL with a host"
        );
        assert!(error(
            "[[id_service.syncs]]\nid = 1\nurl = \"https://x.example/\"\ntag = \"script\"\n"
        )
        .starts_with("config key id_service.syncs: partner 0 (1): tag"));
        assert!(
            error("[[id_service.syncs]]\nid = 0\nurl = \"https://x.example/\"\n")
                .starts_with("config key id_service.syncs: partner 0: id")
        );
        assert!(error("[id_service]\nsubdomain = \"a.b\"\n")
            .starts_with("config key id_service.subdomain:"));
        assert_eq!(
            error("[id_service]\nopt_out_ttl_secs = 1\n"),
            "config key id_service.opt_out_ttl_secs: must be between 60 and 31536000 (got 1)"
        );
    }
}
