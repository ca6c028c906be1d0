//! A history line as stored and as read: what is stored compactly, and how the
//! whole line is made again, the same for every backend. A delivery's line
//! keeps what cannot be rebuilt: the fields it sent, its attempt, cause and
//! Paystar's answer, and where its desired state came from (a manifest
//! version, stored once per file version, and the line).

use super::{HistoryEntry, HistoryRecord, ManifestVersion};
use crate::customer::{Fields, KeyRef};
use crate::deliver::event::{ACCEPTED_BODY, EventType, PaystarEvent};
use crate::reconcile::Manage;
use serde_json::{Map, Value};

/// Where the desired state a delivery sent came from.
#[derive(Clone, Debug, PartialEq)]
pub enum LineProvenance {
    /// A manifest row: the file version is stored once (`manifest_versions`),
    /// the line names its id.
    Manifest {
        version: ManifestVersion,
        line: Option<u32>,
        removed: bool,
    },
    /// Anything else (a provider's fields or stop), stored as it is.
    Other(Value),
}

/// What one delivery attempt's history line says.
pub struct DeliveryLine<'a> {
    /// `delivered`, `retry` or `parked`.
    pub kind: &'static str,
    pub event: &'a PaystarEvent,
    /// The ManageCustomer the event carries; `None` for an unenroll.
    pub manage: Option<&'a Manage<'a>>,
    pub attempt: u32,
    pub cause: Option<&'a str>,
    pub provenance: LineProvenance,
    /// `{"status"}` when the body was Paystar's usual acceptance
    /// ([`ACCEPTED_BODY`]), else `{"status", "body"}`; or `{"error"}`.
    pub response: Value,
}

impl HistoryEntry {
    /// A delivery attempt's line, stored compactly: what was sent as the
    /// ManageCustomer's fields alone (the payload and the request are rebuilt
    /// from them, the key, the event type and the business unit, byte for
    /// byte), the manifest version by id, and no `attempt` when it is the
    /// first, no `response` when it is Paystar's usual acceptance.
    pub fn delivery(line: DeliveryLine<'_>) -> Self {
        let mut d = Map::new();
        let sent: Vec<&str> = match line.manage {
            Some(m) => {
                let f = m.fields;
                [f.first_name, f.last_name, f.email]
                    .into_iter()
                    .chain(m.original_email)
                    .collect()
            }
            None => Vec::new(),
        };
        d.insert("sent".into(), sent.into());
        if line.attempt != 1 {
            d.insert("attempt".into(), line.attempt.into());
        }
        if let Some(cause) = line.cause {
            d.insert("cause".into(), cause.into());
        }
        let manifest = match line.provenance {
            LineProvenance::Manifest {
                version,
                line,
                removed,
            } => {
                let mut p = Map::new();
                if let Some(line) = line {
                    p.insert("line".into(), line.into());
                }
                if removed {
                    p.insert("removed".into(), true.into());
                }
                d.insert("provenance".into(), p.into());
                Some(version)
            }
            LineProvenance::Other(p) => {
                d.insert("provenance".into(), p);
                None
            }
        };
        if line.response != usual_response() {
            d.insert("response".into(), line.response);
        }
        Self {
            kind: line.kind,
            event_type: Some(line.event.event_type.as_str()),
            detail: Value::Object(d).to_string(),
            manifest,
        }
    }
}

impl HistoryRecord {
    /// A line as a backend read it, with the manifest version its
    /// `manifest_version` names, made whole again: the `request` exactly as
    /// sent, the response's body, the provenance's file, SHA-256 and Git fields,
    /// `attempt`, and `cause`, `removed`, `gitCommit`, `gitAuthor` as `null` or
    /// `false` where nothing was stored. Lines written in earlier compact forms
    /// (the payload string, or the provenance in full) and whole lines read the same.
    pub fn from_stored(
        key: KeyRef<'_>,
        at_ms: i64,
        kind: String,
        event_type: Option<String>,
        detail: String,
        manifest: Option<ManifestVersion>,
    ) -> Self {
        let mut detail: Value = serde_json::from_str(&detail).unwrap_or(Value::String(detail));
        if let Some(d) = detail.as_object_mut() {
            d.entry("cause").or_insert(Value::Null);
            let event = event_type.as_deref().and_then(EventType::from_name);
            if let Some(event) = event {
                rebuild_request(d, key, event);
            }
            if let Some(response) = d.get_mut("response").and_then(|r| r.as_object_mut())
                && response.contains_key("status")
                && !response.contains_key("body")
            {
                response.insert("body".into(), ACCEPTED_BODY.into());
            }
            if let (Some(v), Some(p)) = (
                manifest,
                d.get_mut("provenance").and_then(|p| p.as_object_mut()),
            ) {
                p.insert("source".into(), "manifest".into());
                p.insert("file".into(), v.path.into());
                p.insert("sha256".into(), v.sha256.into());
                p.insert("gitCommit".into(), v.git_commit.into());
                p.insert("gitAuthor".into(), v.git_author.into());
                p.entry("line").or_insert(Value::Null);
            }
            if let Some(p) = d.get_mut("provenance").and_then(|p| p.as_object_mut())
                && p.get("source").and_then(|s| s.as_str()) == Some("manifest")
            {
                p.entry("removed").or_insert(false.into());
                for git in ["gitCommit", "gitAuthor"] {
                    p.entry(git).or_insert(Value::Null);
                }
            }
        }
        Self {
            at_ms,
            kind,
            event_type,
            detail,
        }
    }
}

/// Paystar's usual answer, `200` with [`ACCEPTED_BODY`], as a line stores it.
fn usual_response() -> Value {
    serde_json::json!({ "status": 200 })
}

/// Puts back the `request` a compact line stands for: from `sent` (the
/// ManageCustomer's fields, or nothing for an unenroll), with the first
/// attempt and the usual acceptance where the line left them out; or from the
/// `payload` string of the form before it.
fn rebuild_request(d: &mut Map<String, Value>, key: KeyRef<'_>, event: EventType) {
    if let Some(Value::Array(sent)) = d.get("sent") {
        let sent: Option<Vec<&str>> = sent.iter().map(Value::as_str).collect();
        let rebuilt = match (event, sent.as_deref()) {
            (EventType::UnenrollAutopay, Some([])) => Some(PaystarEvent::unenroll(key)),
            (EventType::ManageCustomer, Some([first, last, email, original @ ..]))
                if original.len() <= 1 =>
            {
                let fields = Fields {
                    first_name: first,
                    last_name: last,
                    email,
                };
                Some(PaystarEvent::manage_fields(
                    key,
                    fields,
                    original.first().copied(),
                ))
            }
            _ => None,
        };
        if let Some(event) = rebuilt {
            d.remove("sent");
            d.insert("request".into(), event.body.into());
            d.entry("attempt").or_insert(1.into());
            d.entry("response").or_insert_with(usual_response);
        }
        return;
    }
    if let Some(Value::String(payload)) = d.get("payload") {
        if !d.contains_key("request") {
            let body = PaystarEvent::rebuilt(event, key.business_unit, payload).body;
            d.insert("request".into(), body.into());
        }
        d.remove("payload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::event::tests::KEY;
    use crate::reconcile::Change;
    use serde_json::json;

    fn manage<'a>(original_email: Option<&'a str>) -> Manage<'a> {
        Manage {
            fields: Fields {
                first_name: "Zoë",
                last_name: "O\"Brien",
                email: "zoe@example.org",
            },
            original_email,
            change: Change::Create,
        }
    }

    fn version() -> ManifestVersion {
        ManifestVersion {
            path: "a.csv".into(),
            sha256: Some("ab".into()),
            git_commit: Some("c0ffee".into()),
            git_author: None,
        }
    }

    /// Stores `entry` as a backend does and reads it back.
    fn stored_and_read(entry: HistoryEntry) -> HistoryRecord {
        HistoryRecord::from_stored(
            KEY,
            7,
            entry.kind.into(),
            entry.event_type.map(Into::into),
            entry.detail,
            entry.manifest,
        )
    }

    #[test]
    fn a_delivery_line_is_stored_without_its_request_and_reads_back_with_it_byte_for_byte() {
        for original in [None, Some("old@example.org")] {
            let m = manage(original);
            let sent = PaystarEvent::manage(KEY, &m);
            let entry = HistoryEntry::delivery(DeliveryLine {
                kind: "delivered",
                event: &sent,
                manage: Some(&m),
                attempt: 1,
                cause: None,
                provenance: LineProvenance::Manifest {
                    version: version(),
                    line: Some(2),
                    removed: false,
                },
                response: json!({ "status": 200 }),
            });
            assert!(!entry.detail.contains("accountNumber"), "{}", entry.detail);
            assert!(!entry.detail.contains("a.csv"), "{}", entry.detail);
            assert_eq!(entry.manifest, Some(version()));
            let read = stored_and_read(entry);
            assert_eq!(
                read.detail,
                json!({
                    "attempt": 1,
                    "cause": null,
                    "provenance": {"source": "manifest", "file": "a.csv", "line": 2, "removed": false,
                        "sha256": "ab", "gitCommit": "c0ffee", "gitAuthor": null},
                    "request": sent.body,
                    "response": {"status": 200, "body": ACCEPTED_BODY},
                })
            );
        }
    }

    #[test]
    fn an_unenroll_retry_keeps_its_attempt_cause_answer_and_provider_provenance() {
        let sent = PaystarEvent::unenroll(KEY);
        let provenance = json!({"source": "provider", "provider": "lotuspay", "eventId": "EV1"});
        let entry = HistoryEntry::delivery(DeliveryLine {
            kind: "retry",
            event: &sent,
            manage: None,
            attempt: 3,
            cause: Some("provider"),
            provenance: LineProvenance::Other(provenance.clone()),
            response: json!({ "status": 503, "body": "busy" }),
        });
        assert_eq!(entry.manifest, None);
        let read = stored_and_read(entry);
        assert_eq!(
            read.detail,
            json!({
                "attempt": 3,
                "cause": "provider",
                "provenance": provenance,
                "request": sent.body,
                "response": {"status": 503, "body": "busy"},
            })
        );
        let removed = HistoryEntry::delivery(DeliveryLine {
            kind: "delivered",
            event: &sent,
            manage: None,
            attempt: 1,
            cause: Some("removed"),
            provenance: LineProvenance::Manifest {
                version: version(),
                line: Some(9),
                removed: true,
            },
            response: json!({ "status": 204, "body": "" }),
        });
        let read = stored_and_read(removed);
        assert_eq!(read.detail["provenance"]["removed"], json!(true));
        assert_eq!(read.detail["response"], json!({"status": 204, "body": ""}));
        assert_eq!(read.detail["request"], json!(sent.body));
    }

    /// A line stored as `detail` by hand, read back.
    fn read_back(kind: &str, event_type: Option<&str>, detail: &serde_json::Value) -> Value {
        HistoryRecord::from_stored(
            KEY,
            7,
            kind.into(),
            event_type.map(Into::into),
            detail.to_string(),
            None,
        )
        .detail
    }

    #[test]
    fn a_line_in_the_earlier_compact_form_reads_back_whole_with_the_request_as_it_was_sent() {
        let sent = PaystarEvent::manage(KEY, &manage(None));
        let stored = json!({
            "attempt": 1,
            "provenance": {"source": "manifest", "file": "a.csv", "line": 2, "sha256": "ab"},
            "payload": sent.payload,
            "response": {"status": 200},
        });
        assert_eq!(
            read_back("delivered", Some("Accounts.ManageCustomer"), &stored),
            json!({
                "attempt": 1,
                "cause": null,
                "provenance": {"source": "manifest", "file": "a.csv", "line": 2, "removed": false,
                    "sha256": "ab", "gitCommit": null, "gitAuthor": null},
                "request": sent.body,
                "response": {"status": 200, "body": ACCEPTED_BODY},
            })
        );
    }

    #[test]
    fn a_whole_line_an_unusual_answer_and_a_malformed_sent_list_read_back_unchanged() {
        let whole = json!({
            "attempt": 2,
            "cause": "provider",
            "provenance": {"source": "provider", "provider": "lotuspay", "eventId": "EV1"},
            "request": PaystarEvent::unenroll(KEY).body,
            "response": {"status": 400, "body": "{\"hasErrors\":true}"},
        });
        assert_eq!(
            read_back("parked", Some("Accounts.UnenrollAutopay"), &whole),
            whole
        );
        let failed = json!({"cause": null, "response": {"error": "connection refused"}});
        assert_eq!(read_back("retry", None, &failed), failed);
        let odd = json!({"cause": null, "sent": ["only", "two"]});
        assert_eq!(
            read_back("delivered", Some("Accounts.ManageCustomer"), &odd),
            odd
        );
    }
}
