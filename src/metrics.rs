//! The daemon's counters: owned by `app::run` for the life of the process and
//! handed to every stage, so a reload never resets them.

use crate::deliver::DeliveryCounters;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
pub struct Metrics {
    /// Delivery outcomes since start.
    pub delivery: Arc<DeliveryCounters>,
    /// Webhooks answered, by provider and outcome.
    pub webhooks: WebhookCounts,
    /// How long the last committed scan took, in milliseconds.
    pub scan_ms: AtomicU64,
    /// Committed scans since start.
    pub scans: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// The last reload's problems, while the reload after it has not succeeded.
    last_reload_failure: Mutex<Option<String>>,
}

impl Metrics {
    pub fn reload_succeeded(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        *self
            .last_reload_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn reload_failed(&self, problem: String) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        *self
            .last_reload_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(problem);
    }

    /// Why the last reload was refused, if the configuration in force is older.
    pub fn reload_failure(&self) -> Option<String> {
        self.last_reload_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn scan_committed(&self, millis: u64) {
        self.scan_ms.store(millis, Ordering::Relaxed);
        self.scans.fetch_add(1, Ordering::Relaxed);
    }
}

/// Webhook answers by provider and outcome, for `/metrics`.
#[derive(Default)]
pub struct WebhookCounts(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl WebhookCounts {
    pub fn count(&self, provider: &'static str, outcome: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry((provider, outcome)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
