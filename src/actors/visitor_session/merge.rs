//! Merge rules on the event path (`docs/customer-data.md`, Merge rules): which authenticated
//! profile a device's event is evaluated with, and which profile its realizations are written
//! to. AAM's authentication-state rules:
//!
//! | rule | id declared authenticated (1) | unknown (0) or logged out (2) | no id declared |
//! | --- | --- | --- | --- |
//! | last authenticated + device | device + that id's profile; written to the id's | device + that id's profile; written to the device | device + the last id it declared |
//! | current authenticated | that id's profile alone; written to it | nothing merged; written to the device, counted alone | same |
//! | device only | the device alone (as without merge rules) | | |

use crate::config::{MergeRule, ProfilesConfig};
use crate::core::engine::Merge;
use crate::core::ids::VisitorId;
use crate::core::idsync::{AuthState, DeclaredId};
use crate::core::profile::Profile;

/// An authenticated profile: its customer id and the profile's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRef {
    pub dpid: u32,
    pub id: String,
    pub visitor: VisitorId,
}

/// What the merge rule makes of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergePlan {
    /// The authenticated profile merged in, if any.
    pub auth: Option<AuthRef>,
    pub merge: Merge,
    /// The id this event declared, which the device and the profile link to each other (not
    /// when it was declared logged out).
    pub declared: Option<AuthRef>,
}

/// The plan for an event declaring `declared` on a device whose profile is `device`; `None`
/// when nothing is merged (the device alone, as without merge rules).
pub fn plan(
    config: &ProfilesConfig,
    declared: &[DeclaredId],
    device: &Profile,
) -> Option<MergePlan> {
    if config.cross_device_data_sources.is_empty() || config.merge_rule == MergeRule::DeviceOnly {
        return None;
    }
    let auth_ref = |dpid: u32, id: &str| AuthRef {
        dpid,
        id: id.to_owned(),
        visitor: VisitorId::authenticated(dpid, id),
    };
    let mut cross = declared.iter().filter(|d| config.is_cross_device(d.dpid));
    let current = cross
        .clone()
        .find(|d| d.auth == AuthState::Authenticated)
        .or_else(|| cross.next());
    let authenticated = current.is_some_and(|d| d.auth == AuthState::Authenticated);
    let linking = current
        .filter(|d| d.links())
        .map(|d| auth_ref(d.dpid, &d.id));
    match config.merge_rule {
        MergeRule::DeviceOnly => None,
        MergeRule::CurrentAuthenticated => Some(MergePlan {
            auth: current
                .filter(|_| authenticated)
                .map(|d| auth_ref(d.dpid, &d.id)),
            merge: Merge {
                use_own: false,
                realize_here: !authenticated,
            },
            declared: linking,
        }),
        MergeRule::LastAuthenticatedAndDevice => {
            let auth = current.map(|d| auth_ref(d.dpid, &d.id)).or_else(|| {
                device
                    .links
                    .iter()
                    .rev()
                    .find(|l| config.is_cross_device(l.dpid))
                    .map(|l| auth_ref(l.dpid, &l.id))
            })?;
            Some(MergePlan {
                auth: Some(auth),
                merge: Merge {
                    use_own: true,
                    realize_here: !authenticated,
                },
                declared: linking,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rule: MergeRule) -> ProfilesConfig {
        ProfilesConfig {
            merge_rule: rule,
            cross_device_data_sources: vec![9001],
        }
    }

    fn declared(dpid: u32, id: &str, auth: AuthState) -> DeclaredId {
        DeclaredId {
            dpid,
            id: id.into(),
            auth,
        }
    }

    fn summary(p: Option<MergePlan>) -> Option<(Option<String>, bool, bool, Option<String>)> {
        p.map(|p| {
            (
                p.auth.map(|a| a.id),
                p.merge.use_own,
                p.merge.realize_here,
                p.declared.map(|a| a.id),
            )
        })
    }

    fn check(
        rule: MergeRule,
        ids: &[DeclaredId],
        device: &Profile,
        expected: Option<(Option<&str>, bool, bool, Option<&str>)>,
    ) {
        let expected =
            expected.map(|(a, own, here, d)| (a.map(String::from), own, here, d.map(String::from)));
        assert_eq!(
            summary(plan(&config(rule), ids, device)),
            expected,
            "{rule:?} {ids:?}"
        );
    }

    #[test]
    fn auth_states_decide_what_is_read_and_written() {
        use AuthState::*;
        use MergeRule::*;
        let mut linked = Profile::default();
        linked.link(9001, "old", 1);
        linked.link(7, "partner", 2);
        let fresh = Profile::default();
        let last = LastAuthenticatedAndDevice;
        check(
            last,
            &[declared(9001, "c", Authenticated)],
            &fresh,
            Some((Some("c"), true, false, Some("c"))),
        );
        check(
            last,
            &[declared(9001, "c", Unknown)],
            &fresh,
            Some((Some("c"), true, true, Some("c"))),
        );
        check(
            last,
            &[declared(9001, "c", LoggedOut)],
            &fresh,
            Some((Some("c"), true, true, None)),
        );
        check(last, &[], &linked, Some((Some("old"), true, true, None)));
        check(last, &[], &fresh, None);
        check(last, &[declared(7, "p", Authenticated)], &fresh, None);
        check(
            last,
            &[
                declared(9001, "a", Unknown),
                declared(9001, "b", Authenticated),
            ],
            &fresh,
            Some((Some("b"), true, false, Some("b"))),
        );
        let current = CurrentAuthenticated;
        check(
            current,
            &[declared(9001, "c", Authenticated)],
            &linked,
            Some((Some("c"), false, false, Some("c"))),
        );
        check(
            current,
            &[declared(9001, "c", Unknown)],
            &linked,
            Some((None, false, true, Some("c"))),
        );
        check(current, &[], &linked, Some((None, false, true, None)));
        check(
            DeviceOnly,
            &[declared(9001, "c", Authenticated)],
            &linked,
            None,
        );
        let none = ProfilesConfig::default();
        assert_eq!(
            plan(&none, &[declared(9001, "c", Authenticated)], &linked),
            None
        );
    }
}
