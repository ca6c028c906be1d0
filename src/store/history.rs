//! A history line as stored and as read: what is stored compactly, and how the
//! whole line is made again, the same for every backend.

use super::HistoryRecord;
use crate::customer::KeyRef;

impl HistoryRecord {
    /// A line as a backend read it. History stores what cannot be rebuilt: the
    /// payload string rather than the whole request (whose envelope follows from
    /// the event type and business unit), a response with Paystar's usual
    /// acceptance body as its status alone, and no git fields for a manifest
    /// outside git, no `cause` when there is none, no `removed` unless it is true.
    /// Lines written before that are already whole.
    pub fn from_stored(
        key: KeyRef<'_>,
        at_ms: i64,
        kind: String,
        event_type: Option<String>,
        detail: String,
    ) -> Self {
        use crate::deliver::event::{ACCEPTED_BODY, EventType, PaystarEvent};
        let mut detail: serde_json::Value =
            serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail));
        if let Some(d) = detail.as_object_mut() {
            d.entry("cause").or_insert(serde_json::Value::Null);
            let event = event_type.as_deref().and_then(EventType::from_name);
            if let (Some(event), Some(serde_json::Value::String(payload))) =
                (event, d.get("payload"))
            {
                if !d.contains_key("request") {
                    let body = PaystarEvent::rebuilt(event, key.business_unit, payload).body;
                    d.insert("request".into(), body.into());
                }
                d.remove("payload");
            }
            if let Some(response) = d.get_mut("response").and_then(|r| r.as_object_mut()) {
                if response.contains_key("status") && !response.contains_key("body") {
                    response.insert("body".into(), ACCEPTED_BODY.into());
                }
            }
            if let Some(p) = d.get_mut("provenance").and_then(|p| p.as_object_mut()) {
                if p.get("source").and_then(|s| s.as_str()) == Some("manifest") {
                    p.entry("removed").or_insert(false.into());
                    for git in ["gitCommit", "gitAuthor"] {
                        p.entry(git).or_insert(serde_json::Value::Null);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::Fields;
    use crate::deliver::event::tests::KEY;
    use crate::deliver::event::{ACCEPTED_BODY, PaystarEvent};
    use crate::reconcile::{Change, Manage};
    use serde_json::json;

    #[test]
    fn a_compact_line_reads_back_whole_with_the_request_as_it_was_sent() {
        let manage = Manage {
            fields: Fields {
                first_name: "Zoë",
                last_name: "O\"Brien",
                email: "zoe@example.org",
            },
            original_email: None,
            change: Change::Create,
        };
        let sent = PaystarEvent::manage(KEY, &manage);
        let stored = json!({
            "attempt": 1,
            "provenance": {"source": "manifest", "file": "a.csv", "line": 2, "sha256": "ab"},
            "payload": sent.payload,
            "response": {"status": 200},
        });
        let read = HistoryRecord::from_stored(
            KEY,
            7,
            "delivered".into(),
            Some("Accounts.ManageCustomer".into()),
            stored.to_string(),
        );
        assert_eq!(
            read.detail,
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
    fn a_whole_line_and_an_unusual_answer_read_back_unchanged() {
        let whole = json!({
            "attempt": 2,
            "cause": "provider",
            "provenance": {"source": "provider", "provider": "lotuspay", "eventId": "EV1"},
            "request": PaystarEvent::unenroll(KEY).body,
            "response": {"status": 400, "body": "{\"hasErrors\":true}"},
        });
        let read = HistoryRecord::from_stored(
            KEY,
            7,
            "parked".into(),
            Some("Accounts.UnenrollAutopay".into()),
            whole.to_string(),
        );
        assert_eq!(read.detail, whole);
        let failed = json!({"cause": null, "response": {"error": "connection refused"}});
        let read = HistoryRecord::from_stored(KEY, 7, "retry".into(), None, failed.to_string());
        assert_eq!(read.detail, failed);
    }
}
