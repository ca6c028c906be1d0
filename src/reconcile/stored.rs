//! Policy over what the state layer stored for one key: the store returns
//! plain [`KeyState`] views; what a key wants and what to send is decided here.

use super::{
    Acked, Desired, FieldSource, KeyPlan, Policy, UnenrollCause, merge_provider, plan_key,
};
use crate::customer::{Fields, FieldsBuf};
use crate::store::{AckedRecord, Claimed, KeyState, Outcome};

/// Whether a plan's unenroll is held back by the mass-change guard: a held
/// manifest-driven unenroll is; a provider's stop never is. The one held rule.
pub fn unenroll_held(plan: &KeyPlan<'_>, held: bool) -> bool {
    held && plan.unenroll.is_some_and(|c| c != UnenrollCause::Provider)
}

/// `plan` without its unenroll when that is held.
pub fn without_held(mut plan: KeyPlan<'_>, held: bool) -> KeyPlan<'_> {
    if unenroll_held(&plan, held) {
        plan.unenroll = None;
    }
    plan
}

impl KeyState {
    /// What a delivery saw of this claimed state once `outcome` applies to it:
    /// the queue entry's version, and whether the key still differs (the rule
    /// the store applies when it reads the key again).
    pub fn claimed_after(mut self, outcome: &Outcome, policy: Policy, now_ms: i64) -> Claimed {
        let first_ack = self.acked.is_none();
        self.acked = AckedRecord::acknowledge(self.acked.take(), outcome, now_ms);
        Claimed {
            queue_version: self.queue.as_ref().map_or(0, |q| q.version),
            differs_after: !self.plan(policy).is_empty(),
            first_ack,
        }
    }

    /// What the manifests want, as the diff sees it.
    pub fn manifest_view(&self) -> Option<Desired<'_>> {
        self.desired.as_ref().map(|d| {
            if d.removed {
                Desired::Removed
            } else {
                Desired::Live {
                    fields: d.fields.as_ref(),
                    autopay: d.autopay,
                }
            }
        })
    }

    /// The acknowledged state as the diff sees it.
    pub fn acked_view(&self) -> Option<Acked<'_>> {
        self.acked.as_ref().map(|a| Acked {
            fields: a.fields.as_ref().map(FieldsBuf::as_ref),
            unenrolled: a.unenrolled,
        })
    }

    /// What Paystar may have acknowledged by the time an unenroll decided now
    /// is sent: its acknowledged state or, for a key never acknowledged whose
    /// delivery is queued (it may be in flight), a customer that exists. The
    /// mass-change guard counts a removal by this view, so a removal scanned
    /// while a first ManageCustomer is on its way is guarded like the rest.
    pub fn acked_by_send_view(&self) -> Option<Acked<'_>> {
        self.acked_view().or_else(|| {
            self.queue.as_ref().map(|_| Acked {
                fields: None,
                unenrolled: false,
            })
        })
    }

    /// The fields a provider reported, as the merge sees them.
    pub fn provider_view(&self) -> Option<Fields<'_>> {
        self.provider.as_ref().map(|p| p.fields.as_ref())
    }

    /// Whether the desired fields come from a provider's report rather than a manifest.
    pub fn fields_source(&self, policy: Policy) -> FieldSource {
        merge_provider(
            self.manifest_view(),
            self.provider_view(),
            self.acked_view(),
            policy.precedence,
        )
        .1
    }

    /// The events this key needs, held unenrolls and provider stops included.
    pub fn wanted(&self, policy: Policy) -> KeyPlan<'_> {
        plan_key(
            self.manifest_view(),
            self.provider_view(),
            self.acked_view(),
            self.stop.is_some(),
            policy,
        )
    }

    /// The events to send now: [`KeyState::wanted`] without a held unenroll (a
    /// provider's stop is never held).
    pub fn plan(&self, policy: Policy) -> KeyPlan<'_> {
        without_held(self.wanted(policy), self.held.is_some())
    }
}
