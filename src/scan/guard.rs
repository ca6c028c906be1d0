//! The mass-change guard (SPEC §6), run on a scan before it is committed.

use super::{ScanSettings, ScannedFile, TouchedKey, desired_of};
use crate::manifest::ManifestRow;
use crate::reconcile::{GuardTrip, diff, mass_unenroll_counting};
use crate::store::{KeyState, StateError, Store};

/// The mass-change guard: holds this pass's new manifest-driven unenrolls when
/// there are too many, keeps earlier holds, and releases holds whose cause went.
#[allow(clippy::type_complexity)]
pub(super) fn guard(
    store: &Store,
    settings: &ScanSettings<'_>,
    touched: &[TouchedKey],
    states: &[Option<Box<KeyState>>],
    rows: &[ManifestRow],
    files: &[ScannedFile],
) -> Result<(Vec<bool>, Vec<(usize, Option<String>)>, Option<GuardTrip>), StateError> {
    let policy = settings.policy;
    let mut held = vec![false; touched.len()];
    let mut writes = Vec::new();
    let mut candidates = Vec::new();
    let (mut added, mut removed) = (0u64, 0u64);
    for (i, t) in touched.iter().enumerate() {
        let state = states[i].as_deref();
        if state.is_some_and(|s| s.stop.is_some()) {
            continue; // a provider's stop unenrolls anyway and is never held
        }
        let live_before = state
            .and_then(|s| s.desired.as_ref())
            .is_some_and(|d| !d.removed);
        match t {
            TouchedKey::Row(_) if !live_before => added += 1,
            TouchedKey::Gone(..) if live_before => removed += 1,
            _ => {}
        }
        let acked = state.and_then(KeyState::acked_by_send_view);
        let wants = diff(desired_of(t, rows), acked, policy.on_removal)
            .unenroll
            .is_some();
        let was_held = state.is_some_and(|s| s.held.is_some());
        match (wants, was_held) {
            (true, true) => held[i] = true,
            (false, true) => writes.push((i, None)),
            (true, false) => {
                let wanted_before = state.is_some_and(|s| s.wanted(policy).unenroll.is_some());
                if !wanted_before {
                    candidates.push(i);
                }
            }
            (false, false) => {}
        }
    }
    if candidates.is_empty() {
        return Ok((held, writes, None));
    }
    // Every row read that this pass does not touch was live before (a changed or
    // new row is touched): a lower bound on the customers known, which usually
    // settles the percentage without counting them all.
    let touched_rows = touched
        .iter()
        .filter(|t| matches!(t, TouchedKey::Row(_)))
        .count();
    let live_at_least = rows.len().saturating_sub(touched_rows) as u64;
    let trip = mass_unenroll_counting(
        candidates.len() as u64,
        live_at_least,
        settings.limits,
        || {
            let live = store.live_count()?;
            Ok::<_, StateError>(live.max((live + added).saturating_sub(removed)))
        },
    )?;
    if trip.is_some() {
        for i in candidates {
            held[i] = true;
            let cause = match &touched[i] {
                TouchedKey::Row(r) => format!(
                    "autopay: false in {}",
                    files[rows[*r as usize].file as usize].rel
                ),
                TouchedKey::Gone(_, file) => format!("removed from {}", files[*file as usize].rel),
            };
            writes.push((i, Some(cause)));
        }
        writes.sort_by_key(|(i, _)| *i);
    }
    Ok((held, writes, trip))
}
