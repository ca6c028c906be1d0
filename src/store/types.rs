//! The state layer's interface, the same for every backend: what callers
//! write, and the plain views they read back. What a key wants is decided by
//! `reconcile`, not here.

use crate::customer::{CustomerKey, Fields, FieldsBuf, KeyRef};
use crate::manifest::{FileStat, ManifestError};

/// Counts for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub desired: u64,
    pub removed: u64,
    pub acknowledged: u64,
    pub pending: u64,
    pub retrying: u64,
    pub parked: u64,
    /// Unenrolls held by the mass-change guard.
    pub held: u64,
}

/// A manifest file as the last committed scan saw it.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub id: i64,
    pub present: bool,
    pub stat: Option<FileStat>,
    pub sha256: Option<[u8; 32]>,
    /// False when the file must be read again even if unchanged (it took part in a
    /// duplicate-key conflict).
    pub clean: bool,
    pub ok: bool,
    pub rows: u64,
    pub scanned_at: i64,
}

/// A previously committed desired row of one file, as the scan's merge needs it.
pub struct PrevRow<'a> {
    pub key: KeyRef<'a>,
    pub fingerprint: i64,
    pub line: Option<u32>,
    pub removed: bool,
}

/// One file's entry in a scan commit.
pub struct FileWrite<'a> {
    pub path: &'a str,
    pub present: bool,
    pub stat: Option<FileStat>,
    pub sha256: Option<[u8; 32]>,
    pub clean: bool,
    pub ok: bool,
    pub rows: u64,
    /// The file's errors as of this scan; `None` keeps the stored ones.
    pub errors: Option<Vec<&'a ManifestError>>,
}

pub enum DesiredWrite<'a> {
    Live {
        key: KeyRef<'a>,
        fields: Fields<'a>,
        autopay: Option<bool>,
        fingerprint: i64,
        file: &'a str,
        line: u32,
    },
    Removed {
        key: KeyRef<'a>,
    },
}

/// Whether a key's desired state now differs from its acknowledged one.
pub struct QueueWrite<'a> {
    pub key: KeyRef<'a>,
    pub differs: bool,
}

/// What a scan commit writes besides its files and meta, each streamed into
/// the transaction as it goes.
pub struct ScanWrites<D, Q, H, R> {
    pub desired: D,
    pub queue: Q,
    pub holds: H,
    /// Every file whose desired rows `desired` changes, with its rows after.
    pub held: R,
}

/// A file's held rows after a scan commit: their stored form
/// ([`HeldRows::encode`](super::HeldRows::encode)), or `None` to drop what is
/// stored (the next scan reads them from `desired`).
pub struct HeldWrite<'a> {
    pub path: &'a str,
    pub rows: Option<Vec<u8>>,
}

/// What [`Store::check_held_rows`](super::Store::check_held_rows) found.
#[derive(Debug, Default)]
pub struct HeldRowsCheck {
    /// Files with stored rows.
    pub stored: usize,
    /// Those whose stored rows are not exactly `desired`'s, by path.
    pub differ: Vec<String>,
}

/// Sets (`Some(cause)`) or releases (`None`) a key's held unenroll.
pub struct HoldWrite<'a> {
    pub key: KeyRef<'a>,
    pub cause: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRecord {
    pub fields: FieldsBuf,
    pub autopay: Option<bool>,
    pub removed: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// SHA-256 (hex) of the file as last read, and its last Git commit and author.
    pub file_sha256: Option<String>,
    pub git_commit: Option<String>,
    pub git_author: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRecord {
    /// `None` until a ManageCustomer was acknowledged.
    pub fields: Option<FieldsBuf>,
    pub unenrolled: bool,
    pub acked_at: i64,
}

/// Everything stored about one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    pub desired: Option<DesiredRecord>,
    pub acked: Option<AckedRecord>,
    pub queue: Option<QueueRecord>,
    /// The cause of a held unenroll, waiting for `approve`.
    pub held: Option<String>,
    /// A provider's stop signal: sticky, never held.
    pub stop: Option<StopRecord>,
    /// The newest customer fields a provider reported.
    pub provider: Option<ProviderFieldsRecord>,
}

/// Customer fields a provider reported ("" = not reported), and by which event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFieldsRecord {
    pub fields: FieldsBuf,
    pub provider: String,
    pub event_id: String,
    /// The event's own time, unix ms.
    pub created_ms: i64,
}

/// A provider said a customer's debit authorisation is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRecord {
    pub provider: String,
    pub event_id: String,
    pub reason: String,
}

/// A key's whole stored state as one row: the one read path behind
/// [`KeyState`], for a point read ([`StateQueries`]) and for the queue scan
/// ([`Store::for_each_queued`]). Decoded by [`read_state`].

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    Pending,
    Retrying,
    Parked,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Pending => "pending",
            QueueState::Retrying => "retrying",
            QueueState::Parked => "parked",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "retrying" => QueueState::Retrying,
            "parked" => QueueState::Parked,
            _ => QueueState::Pending,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// Moves whenever a writer (a scan, a provider event, `approve`) queues the
    /// key again; 0 where the backend does not keep it (SQLite).
    pub version: i64,
}

/// What one delivery attempt of a key ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub key: CustomerKey,
    /// The fields of an acknowledged ManageCustomer, if one was acknowledged.
    pub acked_fields: Option<FieldsBuf>,
    /// An UnenrollAutopay was acknowledged.
    pub acked_unenroll: bool,
    pub result: OutcomeResult,
    /// What to add to the customer's history.
    pub history: Vec<HistoryEntry>,
    /// The delivery's own view of the key, if it has one.
    pub claimed: Option<Claimed>,
}

/// What the delivery saw of a key when it claimed it: its queue entry's
/// version, whether the key still differs once this outcome's
/// acknowledgements apply to that view, and whether Paystar had acknowledged
/// anything for it yet. A backend may trust it while the queue entry's version
/// is unchanged instead of reading the key again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub queue_version: i64,
    pub differs_after: bool,
    /// No acknowledged row when claimed: a backend may insert this outcome's
    /// acknowledgement instead of merging it, falling back to merging if a row
    /// appeared meanwhile.
    pub first_ack: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeResult {
    /// Every event planned for the key was acknowledged.
    Done,
    Retry {
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    },
    Park {
        attempts: u32,
        error: String,
        request: String,
        response: String,
    },
}

/// A retrying or parked key, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Troubled {
    pub key: CustomerKey,
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
}

/// One ledger entry's outcome, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub event_id: String,
    /// `applied`, `ignored` or `unmatched`, with the reason.
    pub outcome: String,
    pub reason: String,
}

/// A provider event that named no known customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmatchedEvent {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    pub reason: String,
}

/// What a provider event means for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// A stop signal for a known customer: unenroll.
    Stop,
    /// New customer fields for a known customer.
    Fields,
    /// A merchant-level status that a pause rule watches.
    Merchant,
    /// Recorded only.
    Ignored,
    /// Could not be mapped to a customer.
    Unmatched,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Stop | EventOutcome::Fields | EventOutcome::Merchant => "applied",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Unmatched => "unmatched",
        }
    }
}

/// One inbound provider event, as the ledger records it.
#[derive(Clone, Debug)]
pub struct ProviderEventWrite {
    pub provider: &'static str,
    pub event_id: String,
    /// `poll` or `webhook`.
    pub channel: &'static str,
    pub event_type: String,
    pub outcome: EventOutcome,
    pub reason: String,
    pub key: Option<CustomerKey>,
    pub raw: String,
    /// Customer fields the event reports, applied unless a newer event's are stored.
    pub fields: Option<FieldReport>,
    /// A merchant account's new status, kept unless a newer event's is stored.
    pub merchant: Option<MerchantReport>,
}

/// A merchant-level account's status as one event reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantReport {
    pub account: String,
    pub status: String,
    /// The event's own time, unix ms.
    pub event_ms: i64,
}

/// A merchant-level account's latest status, and the event that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantStatus {
    pub provider: String,
    pub account: String,
    pub status: String,
    pub event_id: String,
    pub event_ms: i64,
}

/// Customer fields an event reports ("" = not reported) and the event's own time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldReport {
    pub fields: FieldsBuf,
    /// Unix ms.
    pub created_ms: i64,
}

/// How far a poller got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollCursor {
    /// `created` and id of the newest event processed.
    pub created: Option<i64>,
    pub event_id: Option<String>,
    pub last_success_ms: Option<i64>,
}

/// How many unenrolls one cause holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldCause {
    pub cause: String,
    pub count: u64,
}

/// One line of a customer's story.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `delivered`, `retry`, `parked`, `held`, `approved`, `released` or
    /// `retried` (an operator re-queued a parked key).
    pub kind: &'static str,
    pub event_type: Option<&'static str>,
    /// JSON: attempt, cause, provenance, what was sent, response; stored
    /// compactly (see `store/history.rs` for what is rebuilt on reading).
    pub detail: String,
    /// The manifest file version the line's provenance names, stored once in
    /// `manifest_versions` and referred to by id.
    pub manifest: Option<ManifestVersion>,
}

/// One version of a manifest file, as a delivery's provenance names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ManifestVersion {
    pub path: String,
    /// SHA-256 (hex) of the file as read.
    pub sha256: Option<String>,
    pub git_commit: Option<String>,
    pub git_author: Option<String>,
}

/// A stored history line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRecord {
    pub at_ms: i64,
    pub kind: String,
    pub event_type: Option<String>,
    /// The full line: `request` (the body as sent), `response.body`, and the
    /// provenance's `gitCommit`/`gitAuthor` always present, however it was stored.
    pub detail: serde_json::Value,
}

/// The queue entry an outcome leaves (a `Done` key still differing goes back to
/// pending), the same on every backend.
pub(super) struct QueueEntry<'a> {
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub error: Option<&'a str>,
    pub request: Option<&'a str>,
    pub response: Option<&'a str>,
}

impl OutcomeResult {
    pub(super) fn queue_entry(&self, now_ms: i64) -> QueueEntry<'_> {
        match self {
            OutcomeResult::Done => QueueEntry {
                state: QueueState::Pending,
                attempts: 0,
                next_attempt_at: now_ms,
                error: None,
                request: None,
                response: None,
            },
            OutcomeResult::Retry {
                attempts,
                next_attempt_at,
                error,
            } => QueueEntry {
                state: QueueState::Retrying,
                attempts: *attempts,
                next_attempt_at: *next_attempt_at,
                error: Some(error),
                request: None,
                response: None,
            },
            OutcomeResult::Park {
                attempts,
                error,
                request,
                response,
            } => QueueEntry {
                state: QueueState::Parked,
                attempts: *attempts,
                next_attempt_at: now_ms,
                error: Some(error),
                request: Some(request),
                response: Some(response),
            },
        }
    }
}

/// What the ledger records and applies of one event, given the newest stored
/// report for the same customer or merchant (its time and event id).
pub(super) struct LedgerDecision<'e> {
    pub outcome: EventOutcome,
    pub reason: std::borrow::Cow<'e, str>,
    pub apply_fields: Option<&'e FieldReport>,
    pub apply_merchant: Option<&'e MerchantReport>,
}

impl ProviderEventWrite {
    /// The time of what this event reports, if it reports fields or a status.
    pub(super) fn reported_at(&self) -> Option<i64> {
        match (&self.key, &self.fields, &self.merchant) {
            (Some(_), Some(report), _) => Some(report.created_ms),
            (_, _, Some(report)) => Some(report.event_ms),
            _ => None,
        }
    }

    /// Webhooks arrive out of order: what an event reports is applied only if no
    /// newer event's report is stored; an older one is recorded only (a stop
    /// still stops).
    pub(super) fn decide(&self, stored: Option<(i64, String)>) -> LedgerDecision<'_> {
        let newer = stored.filter(|(at, _)| self.reported_at().is_some_and(|mine| *at > mine));
        let mut outcome = self.outcome;
        let mut reason = std::borrow::Cow::Borrowed(self.reason.as_str());
        if let Some((_, id)) = &newer {
            if outcome != EventOutcome::Stop {
                outcome = EventOutcome::Ignored;
            }
            reason = format!("{}; not applied: event {id} is newer", self.reason).into();
        }
        LedgerDecision {
            outcome,
            reason,
            apply_fields: self.fields.as_ref().filter(|_| newer.is_none()),
            apply_merchant: self.merchant.as_ref().filter(|_| newer.is_none()),
        }
    }
}

impl AckedRecord {
    /// What Paystar's acknowledged state becomes after `outcome`: fields it
    /// acknowledged replace the stored ones, an acknowledged unenroll sticks.
    /// The rule both backends' upserts write.
    pub fn acknowledge(
        stored: Option<AckedRecord>,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Option<AckedRecord> {
        if outcome.acked_fields.is_none() && !outcome.acked_unenroll {
            return stored;
        }
        let unenrolled = stored.as_ref().is_some_and(|s| s.unenrolled) || outcome.acked_unenroll;
        Some(AckedRecord {
            fields: outcome
                .acked_fields
                .clone()
                .or_else(|| stored.and_then(|s| s.fields)),
            unenrolled,
            acked_at: now_ms,
        })
    }
}

/// Keys to send now, with their state, and what else waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    pub claimed: Vec<(CustomerKey, KeyState)>,
    /// When the soonest waiting key not claimed becomes due.
    pub next_due: Option<i64>,
    /// Whether any key not in flight is still queued (due or not).
    pub more: bool,
}

/// The most keys one [`Store::upcoming`](super::Store::upcoming) returns: a
/// claim is bounded, and PostgreSQL's query plan relies on it.
pub const MOST_UPCOMING: usize = 10_000;

/// Picks, from queued keys soonest first (due retries first), up to `free`
/// that are due and not `busy`; the same rule on every backend.
pub(super) fn pick<T>(
    upcoming: impl IntoIterator<Item = (CustomerKey, i64, T)>,
    busy: &[CustomerKey],
    free: usize,
    now_ms: i64,
) -> (Vec<(CustomerKey, T)>, Option<i64>, bool) {
    let busy: std::collections::HashSet<&CustomerKey> = busy.iter().collect();
    let mut claimed = Vec::new();
    let mut next_due = None;
    let mut more = false;
    for (key, at, extra) in upcoming {
        if busy.contains(&key) {
            continue;
        }
        more = true;
        if at > now_ms {
            next_due = Some(at);
            break;
        }
        if claimed.len() < free {
            claimed.push((key, extra));
        }
    }
    (claimed, next_due, more)
}

/// Due retries first, then the rest soonest first without repeating a retry,
/// up to `limit`: a backlog of fresh keys (due since they were queued) must not
/// hold back a retry past its time. The same merge on every backend.
pub(super) fn retries_first(
    mut retries: Vec<(CustomerKey, i64)>,
    by_due: impl IntoIterator<Item = (CustomerKey, i64)>,
    limit: usize,
) -> Vec<(CustomerKey, i64)> {
    let due_retries = retries.len();
    for next in by_due {
        if retries.len() >= limit {
            break;
        }
        if !retries[..due_retries].iter().any(|(k, _)| *k == next.0) {
            retries.push(next);
        }
    }
    retries
}

/// The stored errors of customers parked for a fault of the endpoint rather
/// than their own (builds before the endpoint circuit parked them): a refused
/// key, a wrong path or method, DNS, TLS. SQL `LIKE` patterns on `last_error`,
/// the same in both backends.
pub(crate) const ENDPOINT_PARK_PATTERNS: [&str; 6] = [
    "HTTP 401%",
    "HTTP 403%",
    "HTTP 404%",
    "HTTP 405%",
    "%dns error%",
    "%invalid peer certificate%",
];
