//! The pure diff: desired state + acknowledged state → the Paystar events one key
//! needs (SPEC §4). No I/O, no clock, no errors: all policy is testable as data.

use crate::customer::Fields;

mod guard;
mod stored;
pub use guard::{GuardTrip, UnenrollLimits, mass_unenroll, mass_unenroll_counting};
pub use stored::{unenroll_held, without_held};

/// What `manifests.on_removal` says to do when a key leaves every manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalPolicy {
    Ignore,
    Unenroll,
}

impl RemovalPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalPolicy::Ignore => "ignore",
            RemovalPolicy::Unenroll => "unenroll",
        }
    }
}

/// Whose customer fields win when a manifest and a provider both name a key
/// (`providers.smarterpay.precedence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldPrecedence {
    /// `manifests` (the default): a provider's fields count only for keys no
    /// manifest holds.
    Manifests,
    /// `over_manifests`: a provider's fields replace the manifest's.
    Provider,
}

/// The configured rules every plan computation follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub on_removal: RemovalPolicy,
    pub precedence: FieldPrecedence,
}

impl Policy {
    /// `on_removal: ignore`, manifests win: the defaults.
    pub const DEFAULT: Policy = Policy {
        on_removal: RemovalPolicy::Ignore,
        precedence: FieldPrecedence::Manifests,
    };
}

/// What the manifests want for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired<'a> {
    Live {
        fields: Fields<'a>,
        /// `Some(false)`: must be unenrolled; `None`: no opinion.
        autopay: Option<bool>,
    },
    /// The key left every manifest.
    Removed,
}

/// What Paystar last acknowledged for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked<'a> {
    /// `None` until a ManageCustomer was acknowledged.
    pub fields: Option<Fields<'a>>,
    pub unenrolled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Paystar never acknowledged this key.
    Create,
    /// Which of the acknowledged fields differ.
    Update {
        first_name: bool,
        last_name: bool,
        email: bool,
    },
}

impl Change {
    /// The names of the changed payload fields.
    pub fn changed_fields(self) -> Vec<&'static str> {
        match self {
            Change::Create => vec!["firstName", "lastName", "emailAddress"],
            Change::Update {
                first_name,
                last_name,
                email,
            } => [
                (first_name, "firstName"),
                (last_name, "lastName"),
                (email, "emailAddress"),
            ]
            .into_iter()
            .filter_map(|(changed, name)| changed.then_some(name))
            .collect(),
        }
    }
}

/// An `Accounts.ManageCustomer` to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manage<'a> {
    pub fields: Fields<'a>,
    /// The acknowledged email, sent as `originalEmailAddress` only when the email changes.
    pub original_email: Option<&'a str>,
    pub change: Change,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnenrollCause {
    /// The manifest says `autopay: false`.
    AutopayFalse,
    /// The key left every manifest and `on_removal` is `unenroll`.
    Removed,
    /// A payment provider said the debit authorisation is gone (never held).
    Provider,
}

impl UnenrollCause {
    pub fn as_str(self) -> &'static str {
        match self {
            UnenrollCause::AutopayFalse => "autopay: false",
            UnenrollCause::Removed => "removed from manifests",
            UnenrollCause::Provider => "provider stop signal",
        }
    }
}

/// The events one key needs, in sending order: ManageCustomer first, then
/// UnenrollAutopay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyPlan<'a> {
    pub manage: Option<Manage<'a>>,
    pub unenroll: Option<UnenrollCause>,
}

impl KeyPlan<'_> {
    pub fn is_empty(&self) -> bool {
        self.manage.is_none() && self.unenroll.is_none()
    }
}

/// The events that bring Paystar from `acked` to `desired`.
pub fn diff<'a>(
    desired: Desired<'a>,
    acked: Option<Acked<'a>>,
    on_removal: RemovalPolicy,
) -> KeyPlan<'a> {
    let unenrolled = acked.is_some_and(|a| a.unenrolled);
    match desired {
        Desired::Live { fields, autopay } => {
            let manage = match acked.and_then(|a| a.fields) {
                None => Some(Manage {
                    fields,
                    original_email: None,
                    change: Change::Create,
                }),
                Some(old) if old == fields => None,
                Some(old) => {
                    let email = old.email != fields.email;
                    Some(Manage {
                        fields,
                        original_email: email.then_some(old.email),
                        change: Change::Update {
                            first_name: old.first_name != fields.first_name,
                            last_name: old.last_name != fields.last_name,
                            email,
                        },
                    })
                }
            };
            let unenroll =
                (autopay == Some(false) && !unenrolled).then_some(UnenrollCause::AutopayFalse);
            KeyPlan { manage, unenroll }
        }
        // A key Paystar never acknowledged was never created by us: nothing to stop.
        Desired::Removed => KeyPlan {
            manage: None,
            unenroll: (on_removal == RemovalPolicy::Unenroll && acked.is_some() && !unenrolled)
                .then_some(UnenrollCause::Removed),
        },
    }
}

/// Where the desired fields of a key come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldSource {
    Manifest,
    Provider,
}

/// The desired state once a provider's reported fields are taken into account.
/// `provider` holds the newest fields a provider reported; an empty field was not
/// reported (SmarterPay's empty `Email`) and changes nothing.
///
/// - A key some manifest holds keeps the manifest's fields, unless the policy
///   puts the provider first; its `autopay` is always the manifest's.
/// - A key that left every manifest stays removed: the manifests had the last word.
/// - A key no manifest ever held is live with the provider's fields over what
///   Paystar acknowledged, once all three fields are known (Paystar needs them).
pub fn merge_provider<'a>(
    manifest: Option<Desired<'a>>,
    provider: Option<Fields<'a>>,
    acked: Option<Acked<'a>>,
    precedence: FieldPrecedence,
) -> (Option<Desired<'a>>, FieldSource) {
    let Some(reported) = provider else {
        return (manifest, FieldSource::Manifest);
    };
    match manifest {
        Some(Desired::Live { fields, autopay }) if precedence == FieldPrecedence::Provider => (
            Some(Desired::Live {
                fields: overlay(fields, reported),
                autopay,
            }),
            FieldSource::Provider,
        ),
        Some(desired) => (Some(desired), FieldSource::Manifest),
        None => {
            let base = acked.and_then(|a| a.fields).unwrap_or(Fields {
                first_name: "",
                last_name: "",
                email: "",
            });
            let fields = overlay(base, reported);
            let complete = [fields.first_name, fields.last_name, fields.email]
                .iter()
                .all(|f| !f.is_empty());
            (
                complete.then_some(Desired::Live {
                    fields,
                    autopay: None,
                }),
                FieldSource::Provider,
            )
        }
    }
}

fn overlay<'a>(base: Fields<'a>, reported: Fields<'a>) -> Fields<'a> {
    let pick = |new: &'a str, old: &'a str| if new.is_empty() { old } else { new };
    Fields {
        first_name: pick(reported.first_name, base.first_name),
        last_name: pick(reported.last_name, base.last_name),
        email: pick(reported.email, base.email),
    }
}

/// Everything one key needs: the manifests' desired state merged with a
/// provider's fields, diffed against what Paystar acknowledged, plus a
/// provider's stop.
pub fn plan_key<'a>(
    manifest: Option<Desired<'a>>,
    provider: Option<Fields<'a>>,
    acked: Option<Acked<'a>>,
    stopped: bool,
    policy: Policy,
) -> KeyPlan<'a> {
    let plan = match merge_provider(manifest, provider, acked, policy.precedence).0 {
        Some(desired) => diff(desired, acked, policy.on_removal),
        None => KeyPlan::default(),
    };
    with_stop(plan, stopped, acked)
}

/// Adds a provider's stop signal to a key's plan. A stop is sticky: whatever the
/// manifests say, the key must be unenrolled until Paystar acknowledged it, and it
/// is sent even for a key no manifest knows.
pub fn with_stop<'a>(
    mut plan: KeyPlan<'a>,
    stopped: bool,
    acked: Option<Acked<'a>>,
) -> KeyPlan<'a> {
    if stopped && !acked.is_some_and(|a| a.unenrolled) {
        plan.unenroll = Some(UnenrollCause::Provider);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOHN: Fields<'static> = Fields {
        first_name: "John",
        last_name: "Smith",
        email: "john.smith@example.com",
    };

    fn live(fields: Fields<'static>, autopay: Option<bool>) -> Desired<'static> {
        Desired::Live { fields, autopay }
    }

    fn acked(fields: Option<Fields<'static>>, unenrolled: bool) -> Option<Acked<'static>> {
        Some(Acked { fields, unenrolled })
    }

    #[test]
    fn a_key_never_acknowledged_gets_a_manage_customer_without_original_email() {
        let plan = diff(live(JOHN, None), None, RemovalPolicy::Ignore);
        assert_eq!(
            plan.manage,
            Some(Manage {
                fields: JOHN,
                original_email: None,
                change: Change::Create
            })
        );
        assert_eq!(plan.unenroll, None);
    }

    #[test]
    fn equal_desired_and_acknowledged_state_sends_nothing() {
        assert!(
            diff(
                live(JOHN, None),
                acked(Some(JOHN), false),
                RemovalPolicy::Unenroll
            )
            .is_empty()
        );
        assert!(
            diff(
                live(JOHN, Some(true)),
                acked(Some(JOHN), false),
                RemovalPolicy::Ignore
            )
            .is_empty()
        );
    }

    #[test]
    fn a_name_change_sends_manage_customer_without_original_email() {
        let renamed = Fields {
            last_name: "Smyth",
            ..JOHN
        };
        let plan = diff(
            live(renamed, None),
            acked(Some(JOHN), false),
            RemovalPolicy::Ignore,
        );
        let manage = plan.manage.unwrap();
        assert_eq!(manage.original_email, None);
        assert_eq!(manage.change.changed_fields(), vec!["lastName"]);
    }

    #[test]
    fn an_email_change_sends_the_acknowledged_email_as_original_email() {
        let moved = Fields {
            email: "j.smith@example.org",
            ..JOHN
        };
        let plan = diff(
            live(moved, None),
            acked(Some(JOHN), false),
            RemovalPolicy::Ignore,
        );
        let manage = plan.manage.unwrap();
        assert_eq!(manage.original_email, Some("john.smith@example.com"));
        assert_eq!(manage.fields.email, "j.smith@example.org");
        assert_eq!(manage.change.changed_fields(), vec!["emailAddress"]);
    }

    #[test]
    fn autopay_false_unenrolls_after_any_manage_customer() {
        let plan = diff(live(JOHN, Some(false)), None, RemovalPolicy::Ignore);
        assert!(plan.manage.is_some());
        assert_eq!(plan.unenroll, Some(UnenrollCause::AutopayFalse));
    }

    #[test]
    fn autopay_false_sends_nothing_once_the_unenroll_is_acknowledged() {
        assert!(
            diff(
                live(JOHN, Some(false)),
                acked(Some(JOHN), true),
                RemovalPolicy::Ignore
            )
            .is_empty()
        );
    }

    #[test]
    fn autopay_true_or_empty_never_sends_an_unenroll() {
        assert_eq!(
            diff(
                live(JOHN, Some(true)),
                acked(Some(JOHN), false),
                RemovalPolicy::Ignore
            )
            .unenroll,
            None
        );
        assert_eq!(
            diff(
                live(JOHN, None),
                acked(Some(JOHN), false),
                RemovalPolicy::Ignore
            )
            .unenroll,
            None
        );
    }

    #[test]
    fn a_removed_key_sends_nothing_when_on_removal_is_ignore() {
        assert!(
            diff(
                Desired::Removed,
                acked(Some(JOHN), false),
                RemovalPolicy::Ignore
            )
            .is_empty()
        );
    }

    #[test]
    fn a_removed_key_is_unenrolled_when_on_removal_is_unenroll() {
        let plan = diff(
            Desired::Removed,
            acked(Some(JOHN), false),
            RemovalPolicy::Unenroll,
        );
        assert_eq!(plan.manage, None);
        assert_eq!(plan.unenroll, Some(UnenrollCause::Removed));
        assert!(
            diff(
                Desired::Removed,
                acked(Some(JOHN), true),
                RemovalPolicy::Unenroll
            )
            .is_empty()
        );
    }

    #[test]
    fn a_removed_key_paystar_never_acknowledged_sends_nothing() {
        assert!(diff(Desired::Removed, None, RemovalPolicy::Unenroll).is_empty());
    }

    #[test]
    fn a_provider_stop_unenrolls_even_against_autopay_true_until_acknowledged() {
        let plan = with_stop(
            diff(
                live(JOHN, Some(true)),
                acked(Some(JOHN), false),
                RemovalPolicy::Ignore,
            ),
            true,
            acked(Some(JOHN), false),
        );
        assert_eq!(plan.unenroll, Some(UnenrollCause::Provider));
        let done = with_stop(KeyPlan::default(), true, acked(None, true));
        assert!(done.is_empty());
        let unknown = with_stop(KeyPlan::default(), true, None);
        assert_eq!(unknown.unenroll, Some(UnenrollCause::Provider));
    }

    const LIZZY: Fields<'static> = Fields {
        first_name: "Lizzy",
        last_name: "Hale",
        email: "lhale@example.com",
    };

    const MANIFESTS_WIN: Policy = Policy::DEFAULT;
    const PROVIDER_WINS: Policy = Policy {
        on_removal: RemovalPolicy::Ignore,
        precedence: FieldPrecedence::Provider,
    };

    #[test]
    fn manifests_win_over_provider_fields_unless_the_policy_says_otherwise() {
        let acked_john = acked(Some(JOHN), false);
        let plan = plan_key(
            Some(live(JOHN, None)),
            Some(LIZZY),
            acked_john,
            false,
            MANIFESTS_WIN,
        );
        assert!(plan.is_empty());
        let plan = plan_key(
            Some(live(JOHN, Some(false))),
            Some(LIZZY),
            acked_john,
            false,
            PROVIDER_WINS,
        );
        let manage = plan.manage.unwrap();
        assert_eq!(manage.fields, LIZZY);
        assert_eq!(manage.original_email, Some(JOHN.email));
        // The manifest still decides autopay.
        assert_eq!(plan.unenroll, Some(UnenrollCause::AutopayFalse));
    }

    #[test]
    fn an_empty_provider_field_keeps_the_one_it_would_replace() {
        let no_email = Fields { email: "", ..LIZZY };
        let (desired, source) = merge_provider(
            Some(live(JOHN, None)),
            Some(no_email),
            None,
            FieldPrecedence::Provider,
        );
        assert_eq!(source, FieldSource::Provider);
        assert_eq!(
            desired,
            Some(live(
                Fields {
                    email: JOHN.email,
                    ..LIZZY
                },
                None
            ))
        );
    }

    #[test]
    fn a_key_no_manifest_holds_is_managed_from_provider_fields_once_they_are_complete() {
        let plan = plan_key(None, Some(LIZZY), None, false, MANIFESTS_WIN);
        assert_eq!(plan.manage.unwrap().change, Change::Create);
        assert_eq!(plan.unenroll, None);
        let no_email = Fields { email: "", ..LIZZY };
        assert!(plan_key(None, Some(no_email), None, false, MANIFESTS_WIN).is_empty());
        // Paystar's acknowledged email fills the gap.
        let plan = plan_key(
            None,
            Some(no_email),
            acked(Some(JOHN), false),
            false,
            MANIFESTS_WIN,
        );
        assert_eq!(
            plan.manage.unwrap().fields,
            Fields {
                email: JOHN.email,
                ..LIZZY
            }
        );
    }

    #[test]
    fn a_key_removed_from_the_manifests_is_not_brought_back_by_provider_fields() {
        let removed = Policy {
            on_removal: RemovalPolicy::Unenroll,
            precedence: FieldPrecedence::Provider,
        };
        let plan = plan_key(
            Some(Desired::Removed),
            Some(LIZZY),
            acked(Some(JOHN), false),
            false,
            removed,
        );
        assert_eq!(plan.manage, None);
        assert_eq!(plan.unenroll, Some(UnenrollCause::Removed));
    }

    #[test]
    fn a_key_only_ever_unenrolled_gets_its_manage_customer_as_a_create() {
        let plan = diff(
            live(JOHN, Some(false)),
            acked(None, true),
            RemovalPolicy::Ignore,
        );
        assert_eq!(plan.manage.unwrap().change, Change::Create);
        assert_eq!(plan.unenroll, None);
    }
}
