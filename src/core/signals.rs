//! The key/values an event carries, as trait rules see them.
//!
//! One map holds every kind of signal, keyed exactly as sent (`docs/dcs-api.md`, Parameters):
//! customer signals (`c_…` and unprefixed keys), private signals (`p_…`, usable by this event's
//! rules only) and header signals (`h_…`, filled by the DCS). What may leave the process is
//! decided by [`Signals::shareable`], not by the caller.

use std::collections::BTreeMap;
use std::fmt;

/// An event's signals: each key has one or more values (`k=v1,v2`, or a repeated key).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Signals {
    map: BTreeMap<String, Vec<String>>,
}

/// Shown in `{:?}` instead of a private signal's values.
const REDACTED: &str = "<private>";

/// Private values are never printed: a `{:?}` of an event (a log line, a failed assertion)
/// must not leak what `p_` keys carry. Keys are shown, so the reader still sees the shape.
impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, values) in &self.map {
            if is_private_key(key) {
                map.entry(key, &REDACTED);
            } else {
                map.entry(key, values);
            }
        }
        map.finish()
    }
}

impl Signals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds values to a key, keeping the values it already has (a key may repeat).
    pub fn add(&mut self, key: impl Into<String>, values: impl IntoIterator<Item = String>) {
        self.map.entry(key.into()).or_default().extend(values);
    }

    /// Replaces a key's values (header signals: the DCS's value wins over anything sent).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.map.insert(key.into(), vec![value.into()]);
    }

    /// The values of a key; an absent key has none.
    pub fn get(&self, key: &str) -> &[String] {
        self.map.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Every key with its values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Signals that may be sent to providers or logged: private (`p_`) and header (`h_`)
    /// signals are left out — private ones must never leave the event (`docs/privacy.md`),
    /// header ones travel in the provider request's `site`/`device` objects instead.
    pub fn shareable(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.map
            .iter()
            .filter(|(k, _)| !is_private_key(k) && !k.starts_with("h_"))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// `p_` signals are private: usable in this event's rules, never stored, logged or sent.
pub fn is_private_key(key: &str) -> bool {
    key.starts_with("p_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_accumulate_and_absent_keys_are_empty() {
        let mut s = Signals::new();
        s.add("c_x", vec!["1".to_string()]);
        s.add("c_x", vec!["2".to_string(), "3".to_string()]);
        assert_eq!(s.get("c_x"), ["1", "2", "3"]);
        assert!(s.get("c_y").is_empty());
        assert!(!s.contains_key("c_y"));
    }

    #[test]
    fn shareable_excludes_private_and_header_signals() {
        let mut s = Signals::new();
        s.add("c_a", vec!["1".into()]);
        s.add("plain", vec!["2".into()]);
        s.add("p_age", vec!["23".into()]);
        s.set("h_user-agent", "ua");
        let keys: Vec<&str> = s.shareable().map(|(k, _)| k).collect();
        assert_eq!(keys, ["c_a", "plain"]);
    }

    #[test]
    fn debug_redacts_private_values_only() {
        let mut s = Signals::new();
        s.add("p_age", vec!["23".into()]);
        s.add("c_page", vec!["cars".into()]);
        assert_eq!(
            format!("{s:?}"),
            r#"{"c_page": ["cars"], "p_age": "<private>"}"#
        );
    }
}
