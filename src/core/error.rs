//! AAM's `errors` entries: what went wrong with a call that was still answered (`200`).
//!
//! The codes are AAM's (listed with their meaning in `docs/dcs-api.md`) and are repeated in
//! the `X-Error` header. The few requests that cannot be answered at all (a hostile JSONP
//! callback, an oversized request, an unknown route) are the routes' `HttpError`s instead.

use std::borrow::Cow;

use serde::Serialize;

/// An entry of the `/event` response's `errors` array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DcsError {
    pub code: u16,
    pub msg: Cow<'static, str>,
}

impl DcsError {
    /// Code 0: something went wrong that AAM has no code for; the message says what.
    pub fn unspecified(msg: impl Into<Cow<'static, str>>) -> Self {
        DcsError {
            code: 0,
            msg: msg.into(),
        }
    }

    /// Code 10: traits could not be (fully) evaluated, e.g. the engine missed the deadline.
    pub fn unable_to_evaluate() -> Self {
        DcsError {
            code: 10,
            msg: "Unable to evaluate traits".into(),
        }
    }

    /// Code 101: `d_mid` is not an Experience Cloud id; the call continues as if it were absent.
    pub fn invalid_ecid() -> Self {
        DcsError {
            code: 101,
            msg: "Invalid Experience Cloud id passed in".into(),
        }
    }

    /// Code 102: `d_uuid` is not a 38-digit id; the call continues as if it were absent.
    pub fn invalid_aam_id() -> Self {
        DcsError {
            code: 102,
            msg: "Invalid AAM ID passed in request".into(),
        }
    }

    /// Code 171: the visitor opted out; nothing is read or written.
    pub fn opted_out() -> Self {
        DcsError {
            code: 171,
            msg: "Encountered opt out tag".into(),
        }
    }

    /// Code 315: GDPR applies and the consent string does not allow processing (or is missing
    /// or unreadable); nothing is read, written or asked.
    pub fn no_consent(why: &impl std::fmt::Display) -> Self {
        DcsError {
            code: 315,
            msg: format!("Consent string indicates no consent: {why}").into(),
        }
    }

    /// Code 200: the stored profile could not be read; segments come from this event only.
    pub fn profile_unreadable() -> Self {
        DcsError {
            code: 200,
            msg: "Cannot read traits from profile cache".into(),
        }
    }

    /// Code 0, durable mode (`store.durable`): the event's change is not known to be on disk
    /// (its write failed or took longer than `store.durable_wait_ms`); it stays pending. AAM
    /// has no code for this: an unspecified error with its reason.
    pub fn not_durable(why: &impl std::fmt::Display) -> Self {
        DcsError::unspecified(format!("Profile change not yet durable: {why}"))
    }

    /// Code 201: the id mappings of a declared id could not be read; the visitor is identified
    /// as if the id were not linked.
    pub fn id_links_unreadable() -> Self {
        DcsError {
            code: 201,
            msg: "Cannot read device ids from profile cache for customer id".into(),
        }
    }

    /// Code 202: the authenticated profile the merge rule calls for could not be read; the
    /// event is evaluated with the device's profile alone.
    pub fn related_profile_unreadable() -> Self {
        DcsError {
            code: 202,
            msg: "Cannot read related customer for device id".into(),
        }
    }

    /// Code 300: a declared id (or its data source) is malformed, blank or unknown.
    pub fn invalid_customer_id(id: &str) -> Self {
        DcsError {
            code: 300,
            msg: format!("Invalid customer id {}", printable(id)).into(),
        }
    }

    /// Code 301: more than 10 declared ids in one request; each extra one gets a 309.
    pub fn too_many_customer_ids() -> Self {
        DcsError {
            code: 301,
            msg: "Maximum number of customer ids exceeded (max 10)".into(),
        }
    }

    /// Code 302: a declared id of a data source Tributary does not know.
    pub fn unauthorized_customer_id(dpid: u32) -> Self {
        DcsError {
            code: 302,
            msg: format!("Unauthorized customer id: unknown data source {dpid}").into(),
        }
    }

    /// Code 309: a declared id dropped because the request already had 10.
    pub fn customer_id_discarded(id: &str) -> Self {
        DcsError {
            code: 309,
            msg: format!(
                "Customer id {} discarded (over per-request limit)",
                printable(id)
            )
            .into(),
        }
    }

    /// Code 310: a declared id dropped because its data source already had 3 in the request.
    pub fn over_namespace_limit(id: &str) -> Self {
        DcsError {
            code: 310,
            msg: format!(
                "Customer id {} discarded (over 3 per namespace)",
                printable(id)
            )
            .into(),
        }
    }

    /// Code 311: a parameter is not properly percent-encoded (or not UTF-8); AAM ignores the
    /// whole request, and so do we.
    pub fn invalid_parameters(param: &str) -> Self {
        DcsError {
            code: 311,
            msg: format!(
                "Request contains invalid parameters: {}",
                truncate(param, 64)
            )
            .into(),
        }
    }

    /// Code 0 for a parameter whose value cannot be used (e.g. a non-numeric `d_sid`).
    pub fn invalid_value(param: &str, why: &str) -> Self {
        DcsError::unspecified(format!("Invalid {}: {why}", truncate(param, 64)))
    }
}

/// Client-supplied text for a message: cut to 64 bytes, control characters (the `%01`
/// separators) shown as `:`.
fn printable(text: &str) -> String {
    truncate(text, 64)
        .chars()
        .map(|c| if c.is_control() { ':' } else { c })
        .collect()
}

/// Cuts client-supplied text that is echoed in a message, on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abcdef", 4), "abcd");
    }
}
