//! The one interface: every call is answered by the configured backend, with
//! the same meaning (see each backend's module for how it keeps it).

use super::*;
use crate::customer::{CustomerKey, KeyRef};
use crate::manifest::ManifestError;
use std::collections::{HashMap, HashSet};

macro_rules! by_backend {
    ($self:ident, $db:ident => $call:expr) => {
        match &$self.0 {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
    (mut $self:ident, $db:ident => $call:expr) => {
        match &mut $self.0 {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
}

impl Store {
    // Whole-state facts.

    /// Whether the state holds no customers at all (lets a first scan skip lookups).
    pub fn is_empty(&self) -> Result<bool> {
        by_backend!(self, db => db.is_empty())
    }

    /// Whether the state accepts writes right now.
    pub fn check_writable(&mut self) -> Result<()> {
        by_backend!(mut self, db => db.check_writable())
    }

    /// A counter that moves whenever Paystar's acknowledged state changes.
    pub fn acked_version(&self) -> Result<i64> {
        Ok(self
            .meta("acked_version")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// How many customers the manifests hold (tombstones not counted).
    pub fn live_count(&self) -> Result<u64> {
        by_backend!(self, db => db.live_count())
    }

    pub fn counts(&self) -> Result<Counts> {
        by_backend!(self, db => db.counts())
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        by_backend!(mut self, db => db.set_meta(key, value))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        by_backend!(self, db => db.meta(key))
    }

    // Manifest files and scans.

    pub fn file_index(&self) -> Result<HashMap<String, FileEntry>> {
        by_backend!(self, db => db.file_index())
    }

    /// The stored errors of the given files, in file and line order.
    pub fn file_errors(&self, file_ids: &[i64]) -> Result<Vec<ManifestError>> {
        by_backend!(self, db => db.file_errors(file_ids))
    }

    /// Calls `f` for every desired row last read from `file_id`, in key order.
    pub fn for_each_file_row(&self, file_id: i64, f: impl FnMut(PrevRow<'_>)) -> Result<()> {
        by_backend!(self, db => db.for_each_file_row(file_id, f))
    }

    /// The rows `file_id` holds, in key order: the compact form the last
    /// commit that changed them stored, or, where there is none (or it is
    /// damaged), read from `desired` and sized by `expected` (the file's row
    /// count at its last read). `None` where the compact form cannot hold them:
    /// [`for_each_file_row`](Self::for_each_file_row) then reads them row by row.
    pub fn held_rows(&self, file_id: i64, expected: u64) -> Result<Option<HeldRows>> {
        if let Some(held) = by_backend!(self, db => db.stored_held_rows(file_id))? {
            return Ok(Some(held));
        }
        let mut held = HeldRows::with_capacity(usize::try_from(expected).unwrap_or(0));
        let mut fits = true;
        self.for_each_file_row(file_id, |prev| fits &= held.push(prev))?;
        held.shrink_to_fit();
        Ok(fits.then_some(held))
    }

    /// Compares every file's stored rows (where it has them) with the rows
    /// `desired` holds for it. A check for tests and diagnosis: it reads the
    /// whole state.
    pub fn check_held_rows(&self) -> Result<HeldRowsCheck> {
        let mut check = HeldRowsCheck::default();
        for (path, entry) in self.file_index()? {
            let Some(stored) = by_backend!(self, db => db.stored_held_rows(entry.id))? else {
                continue;
            };
            check.stored += 1;
            let mut read = HeldRows::default();
            self.for_each_file_row(entry.id, |prev| {
                read.push(prev);
            })?;
            if stored != read {
                check.differ.push(path);
            }
        }
        check.differ.sort();
        Ok(check)
    }

    /// The files whose stored held rows no longer match what they were
    /// computed from (the file's generation or content hash moved since):
    /// scans ignore them, and store them again when the file is next read.
    pub fn stale_held_rows(&self) -> Result<Vec<String>> {
        by_backend!(self, db => db.stale_held_rows())
    }

    /// The stored errors of every file still present.
    pub fn present_file_errors(&self) -> Result<Vec<ManifestError>> {
        by_backend!(self, db => db.present_file_errors())
    }

    /// How many errors the files still present hold, without reading them.
    pub fn present_file_error_count(&self) -> Result<u64> {
        by_backend!(self, db => db.present_file_error_count())
    }

    /// Records the last Git commit and author of manifest files.
    pub fn set_git_provenance(
        &mut self,
        files: &[crate::manifest::git::GitProvenance],
    ) -> Result<()> {
        by_backend!(mut self, db => db.set_git_provenance(files))
    }

    /// Commits one scan: files, their errors, desired rows, queue entries, holds,
    /// the files' held rows and meta, in one transaction. `held` must give every
    /// file whose desired rows `desired` changes either its rows as they are
    /// after the commit or `None` (its stored rows are dropped).
    pub fn commit_scan<'w>(
        &mut self,
        now_ms: i64,
        files: &[FileWrite<'_>],
        writes: ScanWrites<
            impl IntoIterator<Item = DesiredWrite<'w>>,
            impl IntoIterator<Item = QueueWrite<'w>>,
            impl IntoIterator<Item = HoldWrite<'w>>,
            impl IntoIterator<Item = HeldWrite<'w>>,
        >,
        meta: &[(&str, String)],
    ) -> Result<()> {
        by_backend!(mut self, db => db.commit_scan(now_ms, files, writes, meta))
    }

    // Desired and acknowledged state.

    /// Everything stored about each key, in the order given.
    pub fn load_states<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> Result<Vec<Option<Box<KeyState>>>> {
        by_backend!(self, db => db.load_states(keys))
    }

    /// Calls `f` for every queued key with its stored state, in key order.
    pub fn for_each_queued(&self, f: impl FnMut(KeyRef<'_>, KeyState)) -> Result<()> {
        by_backend!(self, db => db.for_each_queued(f))
    }

    // The delivery queue.

    /// Keys the delivery worker may send, soonest first, with the time each
    /// becomes due. Parked keys are left out, and so are the keys of `paused`
    /// business units, except those with a provider stop Paystar has not
    /// acknowledged yet: a stop is never held back. Due retries come first.
    /// At most [`MOST_UPCOMING`] keys, whatever `limit` asks.
    pub fn upcoming(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> Result<Vec<(CustomerKey, i64)>> {
        let limit = limit.min(MOST_UPCOMING);
        by_backend!(self, db => db.upcoming(limit, paused, now_ms))
    }

    /// Up to `free` due keys not `busy` (in flight), with their state, and what
    /// else waits: what the delivery worker sends next. Paused business units
    /// and due retries as in [`Store::upcoming`].
    pub fn claim(
        &self,
        free: usize,
        paused: &[String],
        now_ms: i64,
        busy: &[CustomerKey],
    ) -> Result<Claim> {
        let upcoming = self.upcoming(free + busy.len() + 1, paused, now_ms)?;
        let (keys, next_due, more) = pick(
            upcoming.into_iter().map(|(k, at)| (k, at, ())),
            busy,
            free,
            now_ms,
        );
        let states = self.load_states(keys.iter().map(|(k, ())| k.as_ref()))?;
        Ok(Claim {
            claimed: keys
                .into_iter()
                .zip(states)
                .map(|((key, ()), state)| (key, state.map(|b| *b).unwrap_or_default()))
                .collect(),
            next_due,
            more,
        })
    }

    /// Records the outcome of delivery attempts in one transaction: what Paystar
    /// acknowledged, and each key's queue entry. After an acknowledgement the key
    /// is compared again with its *current* desired state (`still_differs`), so a
    /// change made while a request was in flight is sent next.
    pub fn record_outcomes(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> Result<()> {
        by_backend!(mut self, db => db.record_outcomes(outcomes, still_differs, now_ms))
    }

    /// Puts parked keys back in the queue (all of them when `keys` is `None`),
    /// each with a `retried` history line naming `actor` (`cli`, `console`);
    /// returns how many.
    pub fn retry_parked(
        &mut self,
        keys: Option<&[CustomerKey]>,
        actor: &str,
        now_ms: i64,
    ) -> Result<usize> {
        by_backend!(mut self, db => db.retry_parked(keys, actor, now_ms))
    }

    /// Re-queues customers an earlier build parked for a fault of the endpoint
    /// (a refused key, a wrong URL, DNS, TLS): this one pauses delivery instead.
    pub fn release_parked_for_endpoint(&mut self, actor: &str, now_ms: i64) -> Result<usize> {
        by_backend!(mut self, db => db.release_parked_for_endpoint(actor, now_ms))
    }

    /// Retrying and parked keys, soonest first, for `status`.
    pub fn troubled(&self, limit: usize) -> Result<Vec<Troubled>> {
        by_backend!(self, db => db.troubled(limit))
    }

    /// When the longest-failing retrying key was first queued, if any key is retrying.
    pub fn oldest_retrying_since(&self) -> Result<Option<i64>> {
        by_backend!(self, db => db.oldest_retrying_since())
    }

    // Holds and history.

    /// Releases the held unenrolls of one cause (every one when `cause` is
    /// `None`) into the queue, each with an `approved` history line naming
    /// `actor` (`cli`, `console`); returns how many.
    pub fn approve(&mut self, cause: Option<&str>, actor: &str, now_ms: i64) -> Result<usize> {
        by_backend!(mut self, db => db.approve(cause, actor, now_ms))
    }

    /// Held unenrolls by cause, most first.
    pub fn holds_by_cause(&self) -> Result<Vec<HoldCause>> {
        by_backend!(self, db => db.holds_by_cause())
    }

    /// The sub-accounts the state knows under one account (at most 20, in
    /// order): what `history ACCOUNT` offers when only `ACCOUNT/SUB` keys exist.
    pub fn sub_accounts(&self, business_unit: &str, account: &str) -> Result<Vec<String>> {
        by_backend!(self, db => db.sub_accounts(business_unit, account))
    }

    /// One customer's history, oldest first.
    pub fn history(&self, key: KeyRef<'_>) -> Result<Vec<HistoryRecord>> {
        by_backend!(self, db => db.history(key))
    }

    /// Drops history older than `before_ms`; returns how many lines.
    pub fn prune_history(&mut self, before_ms: i64) -> Result<usize> {
        by_backend!(mut self, db => db.prune_history(before_ms))
    }

    // The provider ledger.

    /// Records provider events in one transaction, each before it is acted on. A
    /// duplicate (same provider and id, by webhook or poll) changes nothing. A new
    /// stop signal is stored (the first one for a key stays) and queues its key.
    /// Returns, per event, whether it was new.
    pub fn record_provider_events(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        by_backend!(mut self, db => db.record_provider_events(events, now_ms))
    }

    /// A poll's events and its new checkpoint, in one transaction: a crash
    /// before the commit repeats the poll, and the ledger drops the repeats.
    pub fn record_poll(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> Result<()> {
        by_backend!(mut self, db => db.record_poll(provider, events, cursor, now_ms))
    }

    /// Which of `ids` this provider's ledger already holds.
    pub fn known_events(&self, provider: &str, ids: &[String]) -> Result<HashSet<String>> {
        by_backend!(self, db => db.known_events(provider, ids))
    }

    pub fn poll_cursor(&self, provider: &str) -> Result<Option<PollCursor>> {
        by_backend!(self, db => db.poll_cursor(provider))
    }

    /// Every merchant-level account's latest status.
    pub fn merchant_statuses(&self) -> Result<Vec<MerchantStatus>> {
        by_backend!(self, db => db.merchant_statuses())
    }

    /// One provider's ledger, newest first: event id, outcome and reason.
    pub fn provider_event_outcomes(&self, provider: &str) -> Result<Vec<LedgerEntry>> {
        by_backend!(self, db => db.provider_event_outcomes(provider))
    }

    /// Provider events that could not be mapped to a customer, newest first.
    pub fn unmatched_events(&self, limit: usize) -> Result<Vec<UnmatchedEvent>> {
        by_backend!(self, db => db.unmatched_events(limit))
    }

    /// How many provider events could not be mapped to a customer.
    pub fn unmatched_count(&self) -> Result<u64> {
        by_backend!(self, db => db.unmatched_count())
    }
}
