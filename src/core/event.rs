//! An identified event: what the visitor's session, the providers and the engine need of one
//! `/event` call once the route has parsed it, judged its consent and identified the visitor.

use crate::core::consent::VendorConsent;
use crate::core::idsync::DeclaredId;
use crate::core::request::PrivacyParams;
use crate::core::signals::Signals;

/// The parts of an event the session, the providers and the engine need. Its `Debug` prints no
/// private value: [`Signals`]' own `Debug` redacts them.
#[derive(Debug, Default)]
pub struct EventData {
    /// All signals, including private and header ones.
    pub signals: Signals,
    pub sids: Vec<u64>,
    pub tdpid: Option<u32>,
    pub privacy: PrivacyParams,
    /// Which providers' IAB vendors may be asked (`tcfVendorId`).
    pub vendors: VendorConsent,
    /// Declared ids of known data sources, within AAM's limits: synced before providers are
    /// asked, so a synced-only provider is asked on the very event that declared the id.
    pub declared: Vec<DeclaredId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_private_values() {
        let mut event = EventData::default();
        event.signals.add("p_age", vec!["secret-23".to_string()]);
        event.signals.add("c_page", vec!["cars".to_string()]);
        let text = format!("{event:?}");
        assert!(!text.contains("secret-23"), "{text}");
        assert!(text.contains("p_age") && text.contains("cars"), "{text}");
    }
}
