//! The wall clock: the one place that reads it (clippy refuses
//! `SystemTime::now` and `chrono::Utc::now` anywhere else). Durations and
//! deadlines use tokio's `Instant`, which tests can pause.

// The wall clock's one reader.
#![allow(clippy::disallowed_methods)]

/// Now, in the unit the state database stores: Unix milliseconds.
pub fn now_ms() -> i64 {
    now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Now, as a `SystemTime` (file times, HTTP dates).
pub fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Now, as a UTC date and time (cron schedules, messages).
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
