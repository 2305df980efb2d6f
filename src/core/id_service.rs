//! The answer of `GET /id`, the ID service as Adobe's VisitorAPI calls it (`docs/dcs-api.md`,
//! `/id`), free of actix.
//!
//! VisitorAPI is strict about types and silent about mistakes (a numeric `d_mid`, a string
//! `dcs_region`, a string `url` or a missing `ttl` in `ibs` each make it fall back or throw
//! without a word), so the answer is one typed struct, and the tests pin its JSON.

use serde::{Deserialize, Serialize};

use crate::core::error::DcsError;
use crate::core::ids::VisitorId;

/// What VisitorAPI reads from an `/id` answer (and what it ignores, for people: `tid`,
/// `errors`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdBody {
    /// The device's ECID, always a JSON string. Absent for opted-out devices and refused
    /// calls: VisitorAPI then keeps or makes its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_mid: Option<String>,
    /// A number: VisitorAPI compares it with what it stored, and a string always differs.
    pub dcs_region: u32,
    /// Opaque to VisitorAPI, which sends it back; it must not be empty, or a second call
    /// follows.
    pub d_blob: String,
    /// Seconds VisitorAPI keeps the region and the blob.
    pub id_sync_ttl: u64,
    /// Where VisitorAPI loads the destination-publishing iframe from (`<subdomain>.demdex.net`)
    /// when the page does not say.
    pub subdomain: String,
    /// The ID syncs this page should fire.
    pub ibs: Vec<IdSync>,
    /// `["global"]` for an opted-out device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_optout: Option<Vec<&'static str>>,
    /// Seconds VisitorAPI keeps the opt-out status.
    pub d_ottl: u64,
    pub tid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<DcsError>,
}

/// One entry of `ibs`, as VisitorAPI hands it to the destination-publishing iframe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdSync {
    pub id: String,
    pub tag: &'static str,
    /// Always an array: a string makes VisitorAPI throw before it reports the ECID.
    pub url: Vec<String>,
    /// Minutes, a number.
    pub ttl: u32,
    /// Fired even where third-party cookies are blocked: the partner gets the visitor id in
    /// the URL, not from a cookie.
    #[serde(rename = "fireURLSync")]
    pub fire_url_sync: u8,
    pub sync_on_page: u8,
}

/// An ID sync partner (`[[id_service.syncs]]` in the configuration).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncPartner {
    /// The partner's data source id: the sync's `id`, and where its answer (a redirect to
    /// `/ibs:dpid=<id>&dpuuid=<its id>`) records the partner's id for the visitor.
    pub id: u32,
    /// The partner's sync URL; `${DD_UUID}` is replaced by the visitor id.
    pub url: String,
    /// How often at most a browser fires it, in minutes (AAM's default: 14 days).
    #[serde(default = "default_sync_ttl")]
    pub ttl_minutes: u32,
    /// `img` (an image request) or `iframe` (a hidden frame, for partners that set cookies
    /// with script).
    #[serde(default = "default_tag")]
    pub tag: String,
}

fn default_sync_ttl() -> u32 {
    20_160
}

fn default_tag() -> String {
    "img".into()
}

impl SyncPartner {
    /// This partner's entry for `visitor`'s page.
    pub fn sync_for(&self, visitor: VisitorId) -> IdSync {
        IdSync {
            id: self.id.to_string(),
            tag: if self.tag == "iframe" {
                "iframe"
            } else {
                "img"
            },
            url: vec![self.url.replace("${DD_UUID}", &visitor.to_string())],
            ttl: self.ttl_minutes,
            fire_url_sync: 1,
            sync_on_page: 0,
        }
    }
}

/// The blob VisitorAPI keeps and sends back. Tributary reads nothing from it; it only has to
/// be present, so it names the answer's format and region.
pub fn blob(dcs_region: u32) -> String {
    format!("TR1-{dcs_region}")
}

impl IdBody {
    /// The JSON object, compact.
    pub fn render(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_has_visitorapis_types() {
        let visitor = VisitorId::parse("22920112968019678612904394744954398990").unwrap();
        let partner = SyncPartner {
            id: 411,
            url: "https://sync.example/s?u=${DD_UUID}".into(),
            ttl_minutes: 10_080,
            tag: "img".into(),
        };
        let body = IdBody {
            dcs_region: 7,
            d_blob: blob(7),
            id_sync_ttl: 604_800,
            subdomain: "tributary".into(),
            ibs: vec![partner.sync_for(visitor)],
            d_ottl: 7200,
            tid: "31ZpxW5bQGc=".into(),
            d_mid: Some("07955261652886032950143702505894272138".into()),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(body.render()).unwrap(),
            r#"{"d_mid":"07955261652886032950143702505894272138","dcs_region":7,"d_blob":"TR1-7","id_sync_ttl":604800,"subdomain":"tributary","ibs":[{"id":"411","tag":"img","url":["https://sync.example/s?u=22920112968019678612904394744954398990"],"ttl":10080,"fireURLSync":1,"syncOnPage":0}],"d_ottl":7200,"tid":"31ZpxW5bQGc="}"#
        );
        let opted_out = IdBody {
            d_optout: Some(vec!["global"]),
            d_ottl: 7200,
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&opted_out.render()).unwrap();
        assert_eq!(json["d_optout"], serde_json::json!(["global"]));
        assert!(json.get("d_mid").is_none());
    }
}
