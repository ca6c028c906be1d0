//! What the console shows, read from the state in one store call per page:
//! the same values back the HTML pages and the JSON API (`/api/v1/…`).
//! Emails are masked and names never leave here, as in the CLI.

use crate::customer::CustomerKey;
use crate::mask::mask_emails;
use crate::store::{QueueState, StateError, Store};
use serde::Serialize;
use serde_json::Value;

/// At most this many parked customers or unmatched events are listed.
pub const LIST_LIMIT: usize = 1_000;

/// The longest key part a request may name.
pub const MOST_CHARS: usize = 256;

/// Text no key or cause holds: longer than `most` characters, or with a
/// control character (which no manifest key holds, and PostgreSQL cannot
/// store). Asking for it is refused before the state is read.
pub fn unfit(text: &str, most: usize) -> bool {
    text.chars().count() > most || text.chars().any(char::is_control)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: String,
    pub role: &'static str,
    /// The instance holding the leader lease, if one does.
    pub leader: Option<String>,
    pub queue: QueueCounts,
    pub customers: CustomerCounts,
    pub last_scan: Option<LastScan>,
    pub delivery: Delivery,
    pub poll: Option<Poll>,
    pub holds: Vec<Hold>,
    pub file_errors: u64,
    pub unmatched: u64,
}

#[derive(Serialize)]
pub struct QueueCounts {
    pub pending: u64,
    pub retrying: u64,
    pub parked: u64,
    pub held: u64,
}

#[derive(Serialize)]
pub struct CustomerCounts {
    pub desired: u64,
    pub removed: u64,
    pub acknowledged: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastScan {
    pub at_ms: i64,
    pub files: u64,
    pub rows_read: u64,
    pub errors: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `ok`, `failing` as `/health` decides it ([`crate::server::delivery_failing`]),
    /// or `paused` for a fault of the endpoint itself (then `endpoint` says which).
    pub health: &'static str,
    pub oldest_retrying_since_ms: Option<i64>,
    /// Why delivery is paused for everyone, while it is (the daemon's console only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How many requests may be in flight (the daemon's leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// `paystar.concurrency` in words, with the limit now.
    pub describe: String,
    pub limit: i64,
    pub in_flight: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    pub provider: &'static str,
    pub last_success_ms: Option<i64>,
}

#[derive(Serialize)]
pub struct Hold {
    pub cause: String,
    pub count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub path: String,
    pub present: bool,
    /// `ok` or `error`.
    pub status: &'static str,
    pub rows: u64,
    pub scanned_at_ms: i64,
    pub errors: Vec<crate::manifest::ManifestError>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub business_unit_slug: String,
    pub account_number: String,
    pub sub_account_number: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Paystar's last answer, emails masked.
    pub last_response: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmatched {
    pub provider: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct History {
    pub customer: String,
    /// Newest first.
    pub history: Vec<Value>,
}

pub fn status(store: &Store, state: String, now_ms: i64) -> Result<Status, StateError> {
    let counts = store.counts()?;
    let last_scan = store
        .meta("last_scan")?
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|scan| LastScan {
            at_ms: scan["at_ms"].as_i64().unwrap_or(0),
            files: scan["stats"]["files"].as_u64().unwrap_or(0),
            rows_read: scan["stats"]["rows_read"].as_u64().unwrap_or(0),
            errors: scan["errors"].as_u64().unwrap_or(0),
        });
    let oldest = store.oldest_retrying_since()?;
    let poll = store
        .poll_cursor(crate::providers::lotuspay::PROVIDER)?
        .map(|c| Poll {
            provider: crate::providers::lotuspay::PROVIDER,
            last_success_ms: c.last_success_ms,
        });
    Ok(Status {
        state,
        role: "single",
        leader: None,
        queue: QueueCounts {
            pending: counts.pending,
            retrying: counts.retrying,
            parked: counts.parked,
            held: counts.held,
        },
        customers: CustomerCounts {
            desired: counts.desired,
            removed: counts.removed,
            acknowledged: counts.acknowledged,
        },
        last_scan,
        delivery: Delivery {
            health: match oldest {
                Some(since) if crate::server::delivery_failing(since, now_ms) => "failing",
                _ => "ok",
            },
            oldest_retrying_since_ms: oldest,
            endpoint: None,
            concurrency: None,
        },
        poll,
        holds: holds(store)?,
        file_errors: store.present_file_error_count()?,
        unmatched: store.unmatched_count()?,
    })
}

pub fn holds(store: &Store) -> Result<Vec<Hold>, StateError> {
    Ok(store
        .holds_by_cause()?
        .into_iter()
        .map(|h| Hold {
            cause: h.cause,
            count: h.count,
        })
        .collect())
}

/// Every manifest file the last scans saw, by path, with its stored errors.
pub fn files(store: &Store) -> Result<Vec<File>, StateError> {
    let mut index: Vec<(String, crate::store::FileEntry)> =
        store.file_index()?.into_iter().collect();
    index.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<i64> = index.iter().map(|(_, f)| f.id).collect();
    let mut errors: std::collections::HashMap<String, Vec<crate::manifest::ManifestError>> =
        std::collections::HashMap::new();
    for mut e in store.file_errors(&ids)? {
        // A reason may quote a value (a data row run into the header).
        e.reason = mask_emails(&e.reason);
        errors.entry(e.file.clone()).or_default().push(e);
    }
    Ok(index
        .into_iter()
        .map(|(path, f)| {
            let mine = errors.remove(&path).unwrap_or_default();
            File {
                status: if f.ok && mine.is_empty() {
                    "ok"
                } else {
                    "error"
                },
                path,
                present: f.present,
                rows: f.rows,
                scanned_at_ms: f.scanned_at,
                errors: mine,
            }
        })
        .collect())
}

pub fn parked(store: &Store) -> Result<Vec<Parked>, StateError> {
    Ok(store
        .troubled(LIST_LIMIT)?
        .into_iter()
        .filter(|t| t.state == QueueState::Parked)
        .map(|t| Parked {
            business_unit_slug: t.key.business_unit,
            account_number: t.key.account,
            sub_account_number: t.key.sub_account,
            attempts: t.attempts,
            last_error: t.last_error.as_deref().map(mask_emails),
            last_response: t.last_response.as_deref().map(mask_emails),
        })
        .collect())
}

pub fn unmatched(store: &Store) -> Result<Vec<Unmatched>, StateError> {
    Ok(store
        .unmatched_events(LIST_LIMIT)?
        .into_iter()
        .map(|u| Unmatched {
            provider: u.provider,
            event_id: u.event_id,
            event_type: u.event_type,
            reason: u.reason,
        })
        .collect())
}

pub fn history(store: &Store, key: &CustomerKey) -> Result<History, StateError> {
    let mut lines: Vec<Value> = store
        .history(key.as_ref())?
        .iter()
        .map(crate::report::history_json)
        .collect();
    lines.reverse();
    Ok(History {
        customer: key.to_string(),
        history: lines,
    })
}
