//! The daemon's metrics: one `prometheus-client` registry, owned by `app::run`
//! for the life of the process and handed to every stage, so a reload never
//! resets a counter. Counters move as things happen; the gauges that describe
//! the state database are set from one store read at each scrape.
//!
//! `/metrics` answers in the Prometheus text format (0.0.4), which every
//! scraper and `promtool check metrics` read, or in OpenMetrics when the
//! scraper asks for it (`Accept: application/openmetrics-text`).

use crate::deliver::DeliveryCounters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
    pub sqlite_schema: i64,
    pub postgres_schema: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

/// The state database as the gauges show it, read once per scrape.
#[derive(Clone, Debug, Default)]
pub struct StateGauges {
    pub pending: u64,
    pub retrying: u64,
    pub parked: u64,
    pub held: u64,
    pub customers: u64,
    pub removed: u64,
    pub acknowledged: u64,
    pub unmatched: u64,
    pub paused_business_units: u64,
    /// Seconds since the last successful LotusPay poll, once there was one.
    pub poll_lag_seconds: Option<u64>,
}

pub struct Metrics {
    registry: Registry,
    /// Delivery outcomes since start (the worker and `apply`'s progress move them).
    pub delivery: std::sync::Arc<DeliveryCounters>,
    webhooks: Family<WebhookLabels, Counter>,
    scans: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    scan_seconds: Gauge<f64, AtomicU64>,
    /// Manifest files the last committed scan found; -1 before the first.
    manifest_files: Gauge,
    queue: Family<StateLabels, Gauge>,
    customers: Gauge,
    removed: Gauge,
    acknowledged: Gauge,
    unmatched: Gauge,
    paused: Gauge,
    endpoint_paused: Gauge,
    poll_lag: Family<ProviderLabels, Gauge>,
    leader: Gauge,
    leader_changes: Counter,
    /// The last reload's problems, while the reload after it has not succeeded.
    last_reload_failure: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let failures: Family<OutcomeLabels, Counter> = Family::default();
        // One statement each: the guard get_or_create returns holds the family's
        // lock until the end of its statement, and a second insert would wait on it.
        let retries = failures
            .get_or_create(&OutcomeLabels { outcome: "retry" })
            .clone();
        let parked = failures
            .get_or_create(&OutcomeLabels { outcome: "parked" })
            .clone();
        let delivery = DeliveryCounters {
            delivered: Counter::default(),
            retries,
            parked,
            endpoint: crate::deliver::EndpointStatus::default(),
            limit: Gauge::default(),
            in_flight: Gauge::default(),
            pushbacks: Counter::default(),
        };
        let mut metrics = Self {
            delivery: std::sync::Arc::new(delivery),
            webhooks: Family::default(),
            scans: Counter::default(),
            reloads: Family::default(),
            scan_seconds: Gauge::default(),
            manifest_files: Gauge::default(),
            queue: Family::default(),
            customers: Gauge::default(),
            removed: Gauge::default(),
            acknowledged: Gauge::default(),
            unmatched: Gauge::default(),
            paused: Gauge::default(),
            endpoint_paused: Gauge::default(),
            poll_lag: Family::default(),
            leader: Gauge::default(),
            leader_changes: Counter::default(),
            last_reload_failure: Mutex::new(None),
            registry: Registry::default(),
        };
        // Help texts without a final period: the encoder adds one.
        let r = &mut metrics.registry;
        r.register(
            "paystar_sync_queue",
            "Customers waiting to be sent, by state",
            metrics.queue.clone(),
        );
        r.register(
            "paystar_sync_customers",
            "Customers the manifests hold",
            metrics.customers.clone(),
        );
        r.register(
            "paystar_sync_customers_removed",
            "Customers that left every manifest",
            metrics.removed.clone(),
        );
        r.register(
            "paystar_sync_acknowledged",
            "Customers Paystar acknowledged",
            metrics.acknowledged.clone(),
        );
        r.register(
            "paystar_sync_provider_events_unmatched",
            "Provider events that named no known customer",
            metrics.unmatched.clone(),
        );
        r.register(
            "paystar_sync_paused_business_units",
            "Business units whose delivery a Payroc pause holds back",
            metrics.paused.clone(),
        );
        r.register(
            "paystar_sync_endpoint_paused",
            "Whether delivery is paused for a fault of paystar.endpoint itself (1) or not (0)",
            metrics.endpoint_paused.clone(),
        );
        r.register(
            "paystar_sync_concurrency_limit",
            "Requests to Paystar that may be in flight now: paystar.concurrency, or as learned when adaptive",
            metrics.delivery.limit.clone(),
        );
        r.register(
            "paystar_sync_in_flight",
            "Requests to Paystar in flight now",
            metrics.delivery.in_flight.clone(),
        );
        r.register(
            "paystar_sync_pushbacks",
            "Answers from Paystar that pushed back (429, 503, a timeout) since start",
            metrics.delivery.pushbacks.clone(),
        );
        r.register(
            "paystar_sync_backoffs",
            "Times Paystar asked every request to wait (Retry-After on a 429 or 503) since start",
            metrics.delivery.endpoint.backoffs.clone(),
        );
        r.register(
            "paystar_sync_endpoint_pauses",
            "Times delivery paused for a fault of paystar.endpoint since start",
            metrics.delivery.endpoint.pauses.clone(),
        );
        r.register(
            "paystar_sync_poll_lag_seconds",
            "Seconds since the last successful provider poll",
            metrics.poll_lag.clone(),
        );
        r.register(
            "paystar_sync_webhooks",
            "Webhooks answered, by provider and outcome",
            metrics.webhooks.clone(),
        );
        r.register(
            "paystar_sync_events_delivered",
            "Events Paystar acknowledged since start",
            metrics.delivery.delivered.clone(),
        );
        r.register(
            "paystar_sync_delivery_failures",
            "Failed deliveries since start, by what happened next",
            failures,
        );
        r.register(
            "paystar_sync_scans",
            "Manifest scans committed since start",
            metrics.scans.clone(),
        );
        r.register(
            "paystar_sync_config_reloads",
            "Configuration reloads since start, by outcome",
            metrics.reloads.clone(),
        );
        r.register(
            "paystar_sync_scan_duration_seconds",
            "How long the last committed manifest scan took",
            metrics.scan_seconds.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        let (sqlite_schema, postgres_schema) = crate::build_info::schemas();
        build
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION,
                commit: crate::build_info::COMMIT,
                sqlite_schema,
                postgres_schema,
            })
            .set(1);
        r.register(
            "paystar_sync_build_info",
            "1, labelled with this binary's version, commit and the state schema versions it keeps",
            build,
        );
        r.register(
            "paystar_sync_manifest_files",
            "Manifest files the last committed scan found (0: manifests.dir holds none)",
            metrics.manifest_files.clone(),
        );
        r.register(
            "paystar_sync_leader",
            "1 on the instance that scans and delivers, 0 on a standby",
            metrics.leader.clone(),
        );
        r.register(
            "paystar_sync_leader_changes",
            "Changes of leader this instance saw since start",
            metrics.leader_changes.clone(),
        );
        for outcome in ["ok", "failed"] {
            let _ = metrics.reloads.get_or_create(&OutcomeLabels { outcome });
        }
        metrics
    }

    pub fn webhook(&self, provider: &'static str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels { provider, outcome })
            .inc();
    }

    pub fn reload_succeeded(&self) {
        self.reloads
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc();
        *self
            .last_reload_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn reload_failed(&self, problem: String) {
        self.reloads
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc();
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

    /// Whether this instance leads (a single instance always does).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    pub fn scan_committed(&self, millis: u64, files: u64) {
        self.scan_seconds.set(millis as f64 / 1000.0);
        self.scans.inc();
        self.manifest_files
            .set(i64::try_from(files).unwrap_or(i64::MAX));
    }

    /// Whether a scan has been committed and found no manifest file.
    pub fn no_manifests(&self) -> bool {
        self.scans.get() > 0 && self.manifest_files.get() == 0
    }

    /// Sets the state gauges, then encodes every metric: Prometheus text, or
    /// OpenMetrics when `openmetrics`.
    pub fn render(&self, state: &StateGauges, openmetrics: bool) -> String {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (label, n) in [
            ("pending", state.pending),
            ("retrying", state.retrying),
            ("parked", state.parked),
            ("held", state.held),
        ] {
            self.queue
                .get_or_create(&StateLabels { state: label })
                .set(as_i64(n));
        }
        self.customers.set(as_i64(state.customers));
        self.removed.set(as_i64(state.removed));
        self.acknowledged.set(as_i64(state.acknowledged));
        self.unmatched.set(as_i64(state.unmatched));
        self.paused.set(as_i64(state.paused_business_units));
        self.endpoint_paused
            .set(i64::from(self.delivery.endpoint.problem().is_some()));
        if let Some(lag) = state.poll_lag_seconds {
            self.poll_lag
                .get_or_create(&ProviderLabels {
                    provider: "lotuspay",
                })
                .set(as_i64(lag));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        if openmetrics {
            text
        } else {
            prometheus_text(&text)
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family's
/// `HELP` and `TYPE` lines take its samples' `_total` name, `UNIT` lines and
/// the `# EOF` marker go. Gauges and samples are the same in both.
fn prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_total_names_in_the_prometheus_text_format() {
        let metrics = Metrics::new();
        metrics.delivery.delivered.inc_by(4);
        metrics.webhook("smarterpay", "duplicate");
        let text = metrics.render(&StateGauges::default(), false);
        for line in [
            "# TYPE paystar_sync_events_delivered_total counter",
            "paystar_sync_events_delivered_total 4",
            "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"duplicate\"} 1",
            "# TYPE paystar_sync_queue gauge",
            "paystar_sync_queue{state=\"pending\"} 0",
            "paystar_sync_config_reloads_total{outcome=\"failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("# EOF"));
        let open = metrics.render(&StateGauges::default(), true);
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("# TYPE paystar_sync_events_delivered counter"));
    }
}
