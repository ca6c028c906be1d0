//! The one place that decides what an answer from Paystar means: delivered, retry
//! at a time, park for an operator (SPEC §4), or a fault of the endpoint itself
//! that pauses delivery for everyone and parks no one. Pure: the caller passes
//! the clock and the jitter, and nothing here sleeps.

use std::time::{Duration, SystemTime};

/// What one attempt produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Response {
        status: u16,
        retry_after: Option<String>,
        /// The start of the body (bounded by the client).
        body: String,
    },
    /// No HTTP answer: connection refused or reset, DNS, TLS, or a timeout.
    Transport { kind: Transport, message: String },
}

/// Why no HTTP answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Timeout,
    /// The endpoint's host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Refused, reset, or anything else.
    Connection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    Retry {
        after: Duration,
        reason: String,
    },
    Park {
        reason: String,
    },
    /// The endpoint answers every request so (a wrong URL, a refused API key,
    /// DNS, TLS): delivery pauses and probes; the customer stays queued as it
    /// was, never parked for it.
    Endpoint {
        reason: String,
    },
}

/// `Retry-After` is honoured up to this long.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Decides after the `failures_before + 1`-th attempt of a key.
/// `jitter` is a factor in `[-0.2, 0.2]` applied to the scheduled wait.
pub fn classify(
    attempt: &Attempt,
    failures_before: u32,
    schedule: &[Duration],
    jitter: f64,
    now: SystemTime,
) -> Decision {
    let (reason, retry_after) = match attempt {
        Attempt::Response { status, body, .. } if (200..300).contains(status) => {
            return match has_errors(body) {
                Some(errors) => Decision::Park {
                    reason: format!("HTTP {status} with hasErrors: {errors}"),
                },
                None => Decision::Delivered,
            };
        }
        Attempt::Response {
            status,
            retry_after,
            body,
        } => {
            let retryable = matches!(status, 408 | 425 | 429) || (500..600).contains(status);
            let reason = format!("HTTP {status}{}", short(body));
            if let Some(fault) = endpoint_fault(*status) {
                return Decision::Endpoint {
                    reason: format!("Paystar answers {status} to every request: {fault}"),
                };
            }
            if !retryable {
                return Decision::Park { reason };
            }
            (
                reason,
                retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now)),
            )
        }
        Attempt::Transport {
            kind: Transport::Timeout,
            message,
        } => (format!("timed out: {message}"), None),
        Attempt::Transport {
            kind: Transport::Dns,
            message,
        } => {
            return Decision::Endpoint {
                reason: format!(
                    "the host of paystar.endpoint does not resolve (check paystar.endpoint and DNS): {message}"
                ),
            };
        }
        Attempt::Transport {
            kind: Transport::Tls,
            message,
        } => {
            return Decision::Endpoint {
                reason: format!(
                    "the TLS handshake with paystar.endpoint fails (check its URL and certificate): {message}"
                ),
            };
        }
        Attempt::Transport {
            kind: Transport::Connection,
            message,
        } => (format!("connection failed: {message}"), None),
    };
    let Some(step) = schedule.get(failures_before as usize) else {
        return Decision::Park {
            reason: format!(
                "retry schedule exhausted after {} attempts; last: {reason}",
                failures_before + 1
            ),
        };
    };
    let scheduled = step.mul_f64((1.0 + jitter.clamp(-0.2, 0.2)).max(0.0));
    let after = match retry_after {
        Some(floor) => scheduled.max(floor.min(RETRY_AFTER_CAP)),
        None => scheduled,
    };
    Decision::Retry { after, reason }
}

/// How long every request to the endpoint waits after this attempt: a 429 or
/// 503 whose `Retry-After` asks for a pause speaks for the endpoint, not only
/// for this customer (capped at [`RETRY_AFTER_CAP`]). The customer's own
/// retry follows `classify` as before.
pub fn everyone_waits(attempt: &Attempt, now: SystemTime) -> Option<Duration> {
    match attempt {
        Attempt::Response {
            status: 429 | 503,
            retry_after: Some(value),
            ..
        } => parse_retry_after(value, now)
            .filter(|d| !d.is_zero())
            .map(|d| d.min(RETRY_AFTER_CAP)),
        _ => None,
    }
}

/// Whether Paystar pushed back on this attempt (a 429, a 503, a timeout): what
/// brings an adaptive concurrency down.
pub fn pushed_back(attempt: &Attempt) -> bool {
    matches!(
        attempt,
        Attempt::Response {
            status: 429 | 503,
            ..
        } | Attempt::Transport {
            kind: Transport::Timeout,
            ..
        }
    )
}

/// What a status says about the endpoint itself, if it is about the endpoint:
/// a path that does not exist there, a method it does not take, a key it refuses.
fn endpoint_fault(status: u16) -> Option<&'static str> {
    match status {
        404 | 405 => Some("check paystar.endpoint (its path ends /integrations/events)"),
        401 | 403 => Some("check the API key (paystar.api_key_env / api_key_file)"),
        _ => None,
    }
}

/// `Retry-After` as delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `errors` of a `{"hasErrors": true, …}` body, if it is one.
fn has_errors(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    if value.get("hasErrors")?.as_bool()? {
        Some(
            value
                .get("errors")
                .map_or_else(|| "[]".into(), |e| e.to_string()),
        )
    } else {
        None
    }
}

fn short(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let cut: String = body.chars().take(200).collect();
    format!(": {cut}")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A short retry schedule the delivery tests share.
    pub(in crate::deliver) const SCHEDULE: [Duration; 3] = [
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(30),
    ];

    fn response(status: u16, body: &str, retry_after: Option<&str>) -> Attempt {
        Attempt::Response {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: body.into(),
        }
    }

    fn decide(attempt: Attempt, failures: u32) -> Decision {
        classify(
            &attempt,
            failures,
            &SCHEDULE,
            0.0,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
    }

    #[test]
    fn a_2xx_is_delivered_whatever_its_body_unless_it_says_has_errors() {
        for body in ["", "ok", "{}", r#"{"hasErrors":false,"errors":[]}"#] {
            assert_eq!(
                decide(response(200, body, None), 0),
                Decision::Delivered,
                "{body}"
            );
        }
        assert_eq!(decide(response(204, "", None), 0), Decision::Delivered);
        let parked = decide(
            response(200, r#"{"hasErrors":true,"errors":["bad account"]}"#, None),
            0,
        );
        assert!(matches!(parked, Decision::Park { reason } if reason.contains("bad account")));
    }

    #[test]
    fn timeouts_connection_errors_408_425_429_and_5xx_are_retried_on_the_schedule() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(
                decide(response(status, "", None), 1),
                Decision::Retry {
                    after: Duration::from_secs(5),
                    reason: format!("HTTP {status}")
                }
            );
        }
        let timeout = Attempt::Transport {
            kind: Transport::Timeout,
            message: "30s".into(),
        };
        assert!(
            matches!(decide(timeout, 0), Decision::Retry { after, .. } if after == Duration::from_secs(1))
        );
        let refused = Attempt::Transport {
            kind: Transport::Connection,
            message: "refused".into(),
        };
        assert!(
            matches!(decide(refused, 2), Decision::Retry { after, .. } if after == Duration::from_secs(30))
        );
    }

    #[test]
    fn other_4xx_park_the_customer() {
        for status in [400, 409, 410, 422] {
            assert!(
                matches!(
                    decide(response(status, "nope", None), 0),
                    Decision::Park { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn a_404_405_401_403_dns_or_tls_failure_is_the_endpoints_and_says_what_to_check() {
        for (status, check) in [
            (404, "paystar.endpoint"),
            (405, "paystar.endpoint"),
            (401, "api_key"),
            (403, "api_key"),
        ] {
            // Whatever the attempt, never parked, never counted against the key.
            for failures in [0, 3, 9] {
                let decided = decide(response(status, "Not Found", None), failures);
                assert!(
                    matches!(&decided, Decision::Endpoint { reason } if reason.contains(check) && reason.contains(&format!("answers {status} to every request"))),
                    "{status}: {decided:?}"
                );
            }
        }
        for (kind, check) in [(Transport::Dns, "resolve"), (Transport::Tls, "TLS")] {
            let attempt = Attempt::Transport {
                kind,
                message: "x".into(),
            };
            assert!(
                matches!(decide(attempt, 5), Decision::Endpoint { reason } if reason.contains(check))
            );
        }
    }

    #[test]
    fn an_exhausted_schedule_parks() {
        assert!(
            matches!(decide(response(503, "", None), 3), Decision::Park { reason } if reason.contains("exhausted after 4 attempts"))
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_is_a_floor_capped_at_an_hour() {
        assert!(
            matches!(decide(response(429, "", Some("120")), 0), Decision::Retry { after, .. } if after == Duration::from_secs(120))
        );
        assert!(
            matches!(decide(response(429, "", Some("0")), 1), Decision::Retry { after, .. } if after == Duration::from_secs(5))
        );
        assert!(
            matches!(decide(response(503, "", Some("86400")), 0), Decision::Retry { after, .. } if after == RETRY_AFTER_CAP)
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_429_or_503_with_retry_after_pauses_everyone_and_nothing_else_does() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let waits = |status, after: Option<&str>| everyone_waits(&response(status, "", after), now);
        assert_eq!(waits(429, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(waits(503, Some("86400")), Some(RETRY_AFTER_CAP));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(waits(503, Some(&date)), Some(Duration::from_secs(30)));
        assert_eq!(waits(429, None), None);
        assert_eq!(waits(429, Some("0")), None);
        assert_eq!(waits(500, Some("5")), None);
        assert_eq!(waits(200, Some("5")), None);
    }

    #[test]
    fn jitter_moves_the_wait_by_at_most_twenty_percent() {
        let attempt = response(503, "", None);
        let now = SystemTime::UNIX_EPOCH;
        let low = classify(&attempt, 2, &SCHEDULE, -0.5, now);
        let high = classify(&attempt, 2, &SCHEDULE, 0.2, now);
        assert!(matches!(low, Decision::Retry { after, .. } if after == Duration::from_secs(24)));
        assert!(matches!(high, Decision::Retry { after, .. } if after == Duration::from_secs(36)));
    }
}
