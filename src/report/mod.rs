//! Human and machine renderings of a plan and of manifest errors. Emails are
//! masked and names never shown: plans end up in CI logs and pull requests.

mod markdown;

pub use markdown::plan_markdown;

use crate::mask::MaskedEmail;
use crate::reconcile::{Change, UnenrollCause};
use crate::scan::{Origin, PlannedChange, Scan};
use crate::store::{StateError, Store};
use serde::Serialize;
use serde_json::json;
use std::io::{self, Write};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub keys: u64,
    pub manage_create: u64,
    pub manage_update: u64,
    pub unenroll: u64,
    /// Keys that left every manifest in this scan while `on_removal` is `ignore`.
    pub removals_ignored: u64,
    /// UnenrollAutopay events the mass-change guard holds for approval.
    pub unenroll_held: u64,
    pub errors: u64,
}

impl PlanSummary {
    pub fn has_changes(&self) -> bool {
        self.keys > 0
    }

    fn count(&mut self, change: &PlannedChange<'_>) {
        self.keys += 1;
        match change.plan.manage.map(|m| m.change) {
            Some(Change::Create) => self.manage_create += 1,
            Some(Change::Update { .. }) => self.manage_update += 1,
            None => {}
        }
        if change.plan.unenroll.is_some() {
            if change.unenroll_held {
                self.unenroll_held += 1;
            } else {
                self.unenroll += 1;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write the plan")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StateError),
}

/// Keys that left every manifest in this scan and for which nothing is sent.
fn removals_ignored(scan: &Scan) -> u64 {
    if scan.on_removal() == crate::reconcile::RemovalPolicy::Ignore {
        scan.removed_keys().count() as u64
    } else {
        0
    }
}

fn origin_text(origin: Origin<'_>) -> String {
    match origin {
        Origin::Row { file, line } => format!("{file}:{line}"),
        Origin::Removed { file } => format!("removed from {file}"),
        Origin::Waiting {
            file: Some(file),
            line: Some(line),
        } => format!("{file}:{line}, queued earlier"),
        Origin::Waiting {
            file: Some(file),
            line: None,
        } => format!("{file}, queued earlier"),
        Origin::Waiting { file: None, .. } => "queued earlier".into(),
    }
}

/// Writes the text plan; returns its summary.
/// What to do about unenrolls the guard holds; on a first import, why they
/// are there at all.
pub fn held_advice(first_import: bool) -> &'static str {
    if first_import {
        "This is a first import (the state knows no customer yet): these are customers whose manifests say autopay: false. They are not sent until `paystar-sync approve`; review them here, then approve (or raise safety.max_unenroll_percent for the import). Everything else proceeds."
    } else {
        "These unenrolls are not sent until `paystar-sync approve`; everything else proceeds."
    }
}

pub fn plan_text(
    scan: &Scan,
    store: &Store,
    out: &mut dyn Write,
) -> Result<PlanSummary, RenderError> {
    let mut summary = PlanSummary::default();
    let mut failure: Option<io::Error> = None;
    scan.for_each_change(store, |change| {
        if failure.is_some() {
            return;
        }
        summary.count(change);
        if let Err(err) = write_change(out, change) {
            failure = Some(err);
        }
    })?;
    if let Some(err) = failure {
        return Err(err.into());
    }
    summary.removals_ignored = removals_ignored(scan);
    if summary.removals_ignored > 0 {
        writeln!(
            out,
            "\n{} customer(s) left every manifest; nothing is sent for them (manifests.on_removal: ignore)",
            summary.removals_ignored
        )?;
    }
    if let Some(trip) = &scan.guard {
        writeln!(out, "\nHELD: {trip}. {}", held_advice(scan.first_import))?;
    }
    summary.errors = scan.errors.len() as u64;
    if !scan.errors.is_empty() {
        writeln!(
            out,
            "\nErrors ({}): these rows and files keep their previous state",
            scan.errors.len()
        )?;
        for e in &scan.errors {
            writeln!(out, "  {e}")?;
        }
    }
    for w in &scan.warnings {
        writeln!(out, "\nwarning: {w}")?;
    }
    writeln!(out, "\n{}", summary_line(&summary))?;
    Ok(summary)
}

pub fn summary_line(s: &PlanSummary) -> String {
    if !s.has_changes() {
        return format!("Plan: no changes. {} error(s).", s.errors);
    }
    let held = if s.unenroll_held > 0 {
        format!(" ({} more held for approval)", s.unenroll_held)
    } else {
        String::new()
    };
    format!(
        "Plan: {} customer(s) to send: {} ManageCustomer ({} create, {} update), {} UnenrollAutopay{held}. {} error(s).",
        s.keys,
        s.manage_create + s.manage_update,
        s.manage_create,
        s.manage_update,
        s.unenroll,
        s.errors
    )
}

fn write_change(out: &mut dyn Write, change: &PlannedChange<'_>) -> io::Result<()> {
    let queue = change
        .queue
        .map(|q| match &q.last_error {
            Some(err) => format!("  [{}: {err}]", q.state.as_str()),
            None => format!("  [{}]", q.state.as_str()),
        })
        .unwrap_or_default();
    let origin = origin_text(change.origin);
    if let Some(manage) = change.plan.manage {
        match manage.change {
            Change::Create => {
                writeln!(
                    out,
                    "+ {}  ManageCustomer create  ({origin}){queue}",
                    change.key
                )?;
                writeln!(
                    out,
                    "      emailAddress: {}",
                    MaskedEmail(manage.fields.email)
                )?;
            }
            Change::Update { .. } => {
                writeln!(
                    out,
                    "~ {}  ManageCustomer update {}  ({origin}){queue}",
                    change.key,
                    manage.change.changed_fields().join(", ")
                )?;
                if let Some(original) = manage.original_email {
                    writeln!(
                        out,
                        "      emailAddress: {} -> {} (sent with originalEmailAddress)",
                        MaskedEmail(original),
                        MaskedEmail(manage.fields.email)
                    )?;
                }
            }
        }
    }
    if let Some(cause) = change.plan.unenroll {
        let held = if change.unenroll_held {
            "  HELD for approval"
        } else {
            ""
        };
        writeln!(
            out,
            "- {}  UnenrollAutopay ({})  ({origin}){queue}{held}",
            change.key,
            cause.as_str()
        )?;
    }
    Ok(())
}

fn change_json(change: &PlannedChange<'_>) -> serde_json::Value {
    let mut events = Vec::new();
    if let Some(m) = change.plan.manage {
        let mut event = json!({
            "eventType": "Accounts.ManageCustomer",
            "change": match m.change { Change::Create => "create", Change::Update { .. } => "update" },
            "changedFields": m.change.changed_fields(),
            "emailAddress": MaskedEmail(m.fields.email).to_string(),
        });
        if let Some(original) = m.original_email {
            event["originalEmailAddress"] = json!(MaskedEmail(original).to_string());
        }
        events.push(event);
    }
    if let Some(cause) = change.plan.unenroll {
        events.push(json!({
            "eventType": "Accounts.UnenrollAutopay",
            "cause": match cause {
                UnenrollCause::AutopayFalse => "autopay_false",
                UnenrollCause::Removed => "removed",
                UnenrollCause::Provider => "provider",
            },
            "held": change.unenroll_held,
        }));
    }
    let source = match change.origin {
        Origin::Row { file, line } => json!({ "kind": "row", "file": file, "line": line }),
        Origin::Removed { file } => json!({ "kind": "removed", "file": file }),
        Origin::Waiting { file, line } => json!({ "kind": "queued", "file": file, "line": line }),
    };
    json!({
        "businessUnitSlug": change.key.business_unit,
        "accountNumber": change.key.account,
        "subAccountNumber": change.key.sub_account,
        "events": events,
        "source": source,
        "queue": change.queue.map(|q| json!({
            "state": q.state.as_str(),
            "attempts": q.attempts,
            "lastError": q.last_error,
        })),
    })
}

/// Writes the JSON plan (documented in the README); returns its summary.
pub fn plan_json(
    scan: &Scan,
    store: &Store,
    out: &mut dyn Write,
    fingerprint: Option<&crate::scan::Fingerprint>,
) -> Result<PlanSummary, RenderError> {
    let mut summary = PlanSummary::default();
    let mut failure: Option<io::Error> = None;
    write!(out, "{{\"version\":1,\"changes\":[")?;
    let mut first = true;
    scan.for_each_change(store, |change| {
        if failure.is_some() {
            return;
        }
        summary.count(change);
        let sep = if first { "\n" } else { ",\n" };
        first = false;
        let result = out.write_all(sep.as_bytes()).and_then(|()| {
            serde_json::to_writer(&mut *out, &change_json(change)).map_err(io::Error::from)
        });
        if let Err(err) = result {
            failure = Some(err);
        }
    })?;
    if let Some(err) = failure {
        return Err(err.into());
    }
    summary.removals_ignored = removals_ignored(scan);
    summary.errors = scan.errors.len() as u64;
    let removed: Vec<_> = scan
        .removed_keys()
        .map(|(key, file)| {
            json!({
                "businessUnitSlug": key.business_unit,
                "accountNumber": key.account,
                "subAccountNumber": key.sub_account,
                "file": file,
            })
        })
        .collect();
    write!(out, "\n],\"removed\":")?;
    serde_json::to_writer(&mut *out, &removed).map_err(io::Error::from)?;
    write!(out, ",\"errors\":")?;
    serde_json::to_writer(&mut *out, &scan.errors).map_err(io::Error::from)?;
    write!(out, ",\"warnings\":")?;
    serde_json::to_writer(&mut *out, &scan.warnings).map_err(io::Error::from)?;
    write!(out, ",\"stats\":")?;
    serde_json::to_writer(&mut *out, &scan.stats).map_err(io::Error::from)?;
    write!(out, ",\"guard\":")?;
    serde_json::to_writer(&mut *out, &scan.guard.map(|t| t.to_string()))
        .map_err(io::Error::from)?;
    if let Some(fingerprint) = fingerprint {
        write!(out, ",\"fingerprint\":")?;
        serde_json::to_writer(&mut *out, fingerprint).map_err(io::Error::from)?;
    }
    write!(out, ",\"summary\":")?;
    serde_json::to_writer(&mut *out, &summary).map_err(io::Error::from)?;
    writeln!(out, "}}")?;
    Ok(summary)
}

/// SHA-256 (hex) over a JSON plan document without its `fingerprint`: what
/// `plan --out` seals and `apply --plan` checks. `None` unless it is an object.
pub fn plan_body_digest(document: &serde_json::Value) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut body = document.as_object()?.clone();
    body.remove("fingerprint");
    let bytes = serde_json::to_vec(&body).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(crate::hex::hex(&digest))
}

/// Masks the personal data in a stored request payload: emails masked, names dropped.
fn masked_payload(request: &str) -> serde_json::Value {
    let envelope: serde_json::Value = serde_json::from_str(request).unwrap_or_default();
    let payload: serde_json::Value = envelope["payload"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (name, value) in payload.as_object().into_iter().flatten() {
        match name.as_str() {
            "firstName" | "lastName" => {}
            "emailAddress" | "originalEmailAddress" => {
                out.insert(
                    name.clone(),
                    json!(MaskedEmail(value.as_str().unwrap_or("")).to_string()),
                );
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

/// One stored history line, as shown to people and machines (PII masked).
pub fn history_json(record: &crate::store::HistoryRecord) -> serde_json::Value {
    let d = &record.detail;
    let author = d["provenance"]["gitAuthor"].as_str().map(mask_author);
    let mut provenance = d["provenance"].clone();
    if let Some(author) = author {
        provenance["gitAuthor"] = json!(author);
    }
    json!({
        "at": httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.at_ms.max(0) as u64)),
        "atMs": record.at_ms,
        "kind": record.kind,
        "eventType": record.event_type,
        "attempt": d.get("attempt"),
        "cause": d.get("cause"),
        "actor": d.get("actor"),
        "provenance": provenance,
        "payload": d["request"].as_str().map(masked_payload),
        "response": d.get("response"),
    })
}

/// `Jane Doe <jane@example.com>` → `Jane Doe <j***@example.com>`: an author is a
/// person's name the repository already publishes, the email is masked anyway.
fn mask_author(author: &str) -> String {
    match author.split_once(" <") {
        Some((name, email)) => format!("{name} <{}>", MaskedEmail(email.trim_end_matches('>'))),
        None => author.to_owned(),
    }
}

pub fn history_text(
    key: &crate::customer::CustomerKey,
    lines: &[serde_json::Value],
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(out, "{key}")?;
    if lines.is_empty() {
        writeln!(out, "  no history: nothing was ever sent for this customer")?;
    }
    for l in lines {
        let event = l["eventType"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("Accounts.");
        let mut head = format!(
            "  {}  {:<9}  {event}",
            l["at"].as_str().unwrap_or(""),
            l["kind"].as_str().unwrap_or("")
        );
        if let Some(cause) = l["cause"].as_str() {
            head.push_str(&format!(" ({cause})"));
        }
        if let Some(attempt) = l["attempt"].as_u64() {
            head.push_str(&format!(", attempt {attempt}"));
        }
        if let Some(actor) = l["actor"].as_str() {
            head.push_str(&format!(" by {actor}"));
        }
        match (&l["response"]["status"], &l["response"]["error"]) {
            (serde_json::Value::Number(status), _) => head.push_str(&format!(": HTTP {status}")),
            (_, serde_json::Value::String(error)) => head.push_str(&format!(": {error}")),
            _ => {}
        }
        writeln!(out, "{head}")?;
        let p = &l["provenance"];
        if let (Some(provider), Some(event)) = (p["provider"].as_str(), p["eventId"].as_str()) {
            writeln!(out, "      from {provider} event {event}")?;
        }
        if let Some(file) = p["file"].as_str() {
            let mut from = format!("      from {file}");
            if let Some(line) = p["line"].as_u64() {
                from.push_str(&format!(":{line}"));
            }
            if p["removed"].as_bool() == Some(true) {
                from = format!("      removed from {file}");
            }
            if let Some(sha) = p["sha256"].as_str() {
                from.push_str(&format!(" (sha256 {})", &sha[..sha.len().min(12)]));
            }
            if let Some(commit) = p["gitCommit"].as_str() {
                from.push_str(&format!(
                    ", commit {} by {}",
                    &commit[..commit.len().min(12)],
                    p["gitAuthor"].as_str().unwrap_or("?")
                ));
            }
            writeln!(out, "{from}")?;
        }
        if let Some(email) = l["payload"]["emailAddress"].as_str() {
            let original = l["payload"]["originalEmailAddress"]
                .as_str()
                .map(|o| format!(" (was {o})"))
                .unwrap_or_default();
            writeln!(out, "      emailAddress: {email}{original}")?;
        }
        if let Some(body) = l["response"]["body"]
            .as_str()
            .filter(|b| !b.is_empty() && l["kind"] != "delivered")
        {
            writeln!(
                out,
                "      Paystar said: {}",
                body.chars().take(200).collect::<String>()
            )?;
        }
    }
    Ok(())
}

/// The report file of one manifest: its relative path with `%` and `/` escaped.
fn report_name(manifest: &str) -> String {
    format!(
        "{}.errors.csv",
        manifest.replace('%', "%25").replace('/', "%2F")
    )
}

/// Writes each freshly read manifest's errors as CSV
/// (`file,line,accountNumber,field,reason`) to `dir`, replacing its previous report;
/// a manifest without errors (or gone) has its report removed. Only the latest
/// report per manifest is kept.
pub fn write_error_reports(dir: &std::path::Path, scan: &Scan) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, errors) in scan.fresh_errors_by_file() {
        let path = dir.join(report_name(file));
        if errors.is_empty() {
            match std::fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => continue,
            }
        }
        let tmp = path.with_extension("csv.tmp");
        let mut writer = csv::Writer::from_path(&tmp)?;
        writer.write_record(["file", "line", "accountNumber", "field", "reason"])?;
        for e in errors {
            let line = e.line.map(|l| l.to_string()).unwrap_or_default();
            writer.write_record([
                e.file.as_str(),
                &line,
                e.account.as_deref().unwrap_or(""),
                e.field.as_deref().unwrap_or(""),
                &e.reason,
            ])?;
        }
        writer.flush()?;
        drop(writer);
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// The report files in `dir`, by name.
pub fn list_error_reports(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".errors.csv"))
        .collect();
    names.sort();
    names
}
