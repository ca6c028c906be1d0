//! The console's pages, rendered from the views in `view.rs`. Every value from
//! the state goes through `esc`; emails arrive masked, names never arrive.

use super::auth::Access;
use super::html::{csrf_field, esc, hidden, query_value, when};
use super::view::{File, History, Hold, Parked, Status, Unmatched};
use std::fmt::Write;

/// A file's errors shown on its page; the API and the error reports hold all.
const MOST_ERRORS_SHOWN: usize = 1_000;

fn card(out: &mut String, label: &str, value: impl std::fmt::Display, class: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><span>{}</span><b class=\"{class}\" data-count=\"{}\">{value}</b></div>",
        esc(label),
        esc(&label.to_lowercase())
    );
}

pub fn overview(s: &Status) -> String {
    let mut out = String::from("<h2>Queue</h2><div class=\"cards\">");
    card(&mut out, "Pending", s.queue.pending, "");
    let bad = |n: u64| if n > 0 { "bad" } else { "" };
    card(
        &mut out,
        "Retrying",
        s.queue.retrying,
        bad(s.queue.retrying),
    );
    card(&mut out, "Parked", s.queue.parked, bad(s.queue.parked));
    card(&mut out, "Held", s.queue.held, bad(s.queue.held));
    out.push_str("</div><h2>Customers</h2><div class=\"cards\">");
    card(&mut out, "Desired", s.customers.desired, "");
    card(&mut out, "Removed", s.customers.removed, "");
    card(&mut out, "Acknowledged", s.customers.acknowledged, "");
    out.push_str("</div><h2>Health</h2><table>");
    let _ = write!(out, "<tr><th>State</th><td>{}</td></tr>", esc(&s.state));
    let _ = write!(
        out,
        "<tr><th>Role</th><td id=\"role\">{}</td></tr>",
        esc(s.role)
    );
    if s.role != "single" {
        let leader = s.leader.as_deref().unwrap_or("none (the lease ran out)");
        let _ = write!(
            out,
            "<tr><th>Leader</th><td id=\"leader\">{}</td></tr>",
            esc(leader)
        );
    }
    match &s.last_scan {
        Some(scan) => {
            let _ = write!(
                out,
                "<tr><th>Last scan</th><td id=\"last-scan\">{}: {} file(s), {} row(s) read, <a href=\"/files\">{} error(s)</a></td></tr>",
                when(scan.at_ms),
                scan.files,
                scan.rows_read,
                scan.errors
            );
        }
        None => out.push_str("<tr><th>Last scan</th><td id=\"last-scan\">never</td></tr>"),
    }
    let (class, health) = match s.delivery.health {
        "ok" => ("ok", "delivering".to_owned()),
        "paused" => (
            "bad",
            format!(
                "paused: {}; nothing is parked for it, and delivery resumes by itself once Paystar answers",
                s.delivery
                    .endpoint
                    .as_deref()
                    .unwrap_or("the endpoint fails")
            ),
        ),
        _ => (
            "bad",
            format!(
                "failing: a customer has been retrying since {}",
                when(s.delivery.oldest_retrying_since_ms.unwrap_or(0))
            ),
        ),
    };
    let _ = write!(
        out,
        "<tr><th>Delivery</th><td class=\"{class}\" id=\"delivery\">{}</td></tr>",
        esc(&health)
    );
    if let Some(c) = &s.delivery.concurrency {
        let _ = write!(
            out,
            "<tr><th>Concurrency</th><td id=\"concurrency\">{}; {} in flight</td></tr>",
            esc(&c.describe),
            c.in_flight
        );
    }
    if let Some(poll) = &s.poll {
        let last = poll.last_success_ms.map_or("never".to_owned(), when);
        let _ = write!(
            out,
            "<tr><th>Last {} poll</th><td>{}</td></tr>",
            esc(poll.provider),
            esc(&last)
        );
    }
    let _ = write!(
        out,
        "<tr><th>Manifest errors</th><td><a href=\"/files\">{}</a></td></tr><tr><th>Unmatched provider events</th><td><a href=\"/unmatched\">{}</a></td></tr></table>",
        s.file_errors, s.unmatched
    );
    if !s.holds.is_empty() {
        let _ = write!(
            out,
            "<p class=\"note\">{} unenroll(s) are held by the mass-change guard and wait for approval: <a href=\"/holds\">review them</a>.</p>",
            s.queue.held
        );
    }
    out
}

pub fn files(files: &[File]) -> String {
    if files.is_empty() {
        return "<p>No manifest file has been read yet.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"files\"><tr><th>File</th><th>Status</th><th class=\"num\">Rows</th><th>Last read</th></tr>",
    );
    for f in files {
        let status = match (f.present, f.status) {
            (false, _) => "<span>removed</span>".to_owned(),
            (true, "ok") => "<span class=\"ok\">ok</span>".to_owned(),
            (true, _) => format!("<span class=\"bad\">{} error(s)</span>", f.errors.len()),
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{status}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&f.path),
            f.rows,
            when(f.scanned_at_ms)
        );
    }
    out.push_str("</table>");
    for f in files.iter().filter(|f| !f.errors.is_empty()) {
        let _ = write!(
            out,
            "<h2><code>{}</code></h2><p>A rejected row keeps its customer's previous state; a file error keeps every customer of the file as it was.</p>\
             <table class=\"errors\"><tr><th class=\"num\">Line</th><th>Kind</th><th>Account</th><th>Field</th><th>Reason</th></tr>",
            esc(&f.path)
        );
        for e in f.errors.iter().take(MOST_ERRORS_SHOWN) {
            let _ = write!(
                out,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.line.map(|l| l.to_string()).unwrap_or_default(),
                e.kind.as_str(),
                esc(e.account.as_deref().unwrap_or("")),
                esc(e.field.as_deref().unwrap_or("")),
                esc(&e.reason)
            );
        }
        out.push_str("</table>");
        if f.errors.len() > MOST_ERRORS_SHOWN {
            let _ = write!(
                out,
                "<p class=\"note\">{} more error(s) in this file are not shown: <code>/api/v1/files</code> and the error report in <code>state.reports_dir</code> list them all.</p>",
                f.errors.len() - MOST_ERRORS_SHOWN
            );
        }
    }
    out
}

/// The search form, and the story when a customer was asked for.
pub fn customer(
    business_unit: &str,
    account: &str,
    sub_account: &str,
    history: Option<&History>,
) -> String {
    let mut out = format!(
        "<form method=\"get\" action=\"/customers\" id=\"find\">\
         <label>Business unit <input name=\"businessUnit\" value=\"{}\"></label> \
         <label>Account number <input name=\"account\" value=\"{}\" autofocus></label> \
         <label>Sub-account <input name=\"subAccount\" value=\"{}\"></label> <button type=\"submit\">Show history</button></form>",
        esc(business_unit),
        esc(account),
        esc(sub_account)
    );
    let Some(h) = history else {
        return out;
    };
    let _ = write!(out, "<h2>{}</h2>", esc(&h.customer));
    if h.history.is_empty() {
        out.push_str("<p>No history: nothing was ever sent or held for this customer.</p>");
        return out;
    }
    out.push_str("<table id=\"history\"><tr><th>When</th><th>What</th><th>Event</th><th>From</th><th>Paystar said</th></tr>");
    for l in &h.history {
        let mut what = l["kind"].as_str().unwrap_or("").to_owned();
        if let Some(attempt) = l["attempt"].as_u64() {
            what.push_str(&format!(", attempt {attempt}"));
        }
        if let Some(cause) = l["cause"].as_str() {
            what.push_str(&format!(" ({cause})"));
        }
        if let Some(actor) = l["actor"].as_str() {
            what.push_str(&format!(" by {actor}"));
        }
        let p = &l["provenance"];
        let from = match (p["file"].as_str(), p["provider"].as_str()) {
            (Some(file), _) => match p["line"].as_u64() {
                Some(line) => format!("{file}:{line}"),
                None => file.to_owned(),
            },
            (None, Some(provider)) => {
                format!("{provider} event {}", p["eventId"].as_str().unwrap_or(""))
            }
            _ => String::new(),
        };
        let mut event = l["eventType"].as_str().unwrap_or("").to_owned();
        if let Some(email) = l["payload"]["emailAddress"].as_str() {
            event.push_str(&format!(" · emailAddress {email}"));
        }
        let said = match (&l["response"]["status"], &l["response"]["error"]) {
            (serde_json::Value::Number(status), _) => {
                let body = l["response"]["body"].as_str().unwrap_or("");
                let body: String = crate::mask::mask_emails(body).chars().take(300).collect();
                format!("HTTP {status} {body}")
            }
            (_, serde_json::Value::String(error)) => error.clone(),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(l["at"].as_str().unwrap_or("")),
            esc(&what),
            esc(&event),
            esc(&from),
            esc(&said)
        );
    }
    out.push_str("</table>");
    out
}

fn done(out: &mut String, message: Option<&str>) {
    if let Some(message) = message {
        let _ = write!(out, "<p class=\"done\" id=\"done\">{}</p>", esc(message));
    }
}

pub fn holds(holds: &[Hold], access: &Access, message: Option<&str>) -> String {
    let mut out = String::new();
    done(&mut out, message);
    if holds.is_empty() {
        out.push_str("<p>Nothing is held.</p>");
        return out;
    }
    out.push_str("<p>The mass-change guard held these unenrolls because too many arrived at once. Approving sends them to Paystar, which cannot undo an unenroll.</p>\
                  <table id=\"holds\"><tr><th>Cause</th><th class=\"num\">Unenrolls</th><th></th></tr>");
    let act = access.may_act();
    for h in holds {
        let button = if act {
            format!(
                "<form method=\"post\" action=\"/holds/approve\">{}{}<button type=\"submit\">Approve {}…</button></form>",
                csrf_field(access),
                hidden("cause", &h.cause),
                h.count
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{button}</td></tr>",
            esc(&h.cause),
            h.count
        );
    }
    out.push_str("</table>");
    if act {
        let total: u64 = holds.iter().map(|h| h.count).sum();
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/holds/approve\">{}{}<button type=\"submit\" id=\"approve-all\">Approve all {total}…</button></form>",
            csrf_field(access),
            hidden("all", "yes")
        );
    } else {
        out.push_str("<p>Set <code>console.auth</code> to approve from here, or run <code>paystar-sync approve</code>.</p>");
    }
    out
}

pub fn parked(parked: &[Parked], access: &Access, message: Option<&str>) -> String {
    let mut out = String::new();
    done(&mut out, message);
    if parked.is_empty() {
        out.push_str("<p>No customer is parked.</p>");
        return out;
    }
    out.push_str("<p>Paystar refused these customers' last request for a reason a retry does not fix. Fix the cause, then retry.</p>\
                  <table id=\"parked\"><tr><th>Customer</th><th class=\"num\">Attempts</th><th>Paystar said</th><th></th></tr>");
    for p in parked {
        let key = crate::customer::CustomerKey::new(
            &p.business_unit_slug,
            &p.account_number,
            &p.sub_account_number,
        );
        let link = format!(
            "/customers?businessUnit={}&account={}&subAccount={}",
            query_value(&p.business_unit_slug),
            query_value(&p.account_number),
            query_value(&p.sub_account_number)
        );
        let button = if access.may_act() {
            format!(
                "<form method=\"post\" action=\"/parked/retry\">{}{}{}{}<button type=\"submit\">Retry…</button></form>",
                csrf_field(access),
                hidden("businessUnit", &p.business_unit_slug),
                hidden("account", &p.account_number),
                hidden("subAccount", &p.sub_account_number)
            )
        } else {
            String::new()
        };
        let said = p
            .last_response
            .as_deref()
            .or(p.last_error.as_deref())
            .unwrap_or("");
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"num\">{}</td><td>{}</td><td>{button}</td></tr>",
            esc(&link),
            esc(&key.to_string()),
            p.attempts,
            esc(&said.chars().take(300).collect::<String>())
        );
    }
    out.push_str("</table>");
    if access.may_act() {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/parked/retry\">{}{}<button type=\"submit\" id=\"retry-all\">Retry all {}…</button></form>",
            csrf_field(access),
            hidden("all", "yes"),
            parked.len()
        );
    }
    out
}

pub fn unmatched(events: &[Unmatched]) -> String {
    if events.is_empty() {
        return "<p>Every provider event matched a customer.</p>".into();
    }
    let mut out = String::from(
        "<p>Provider events that named no customer paystar-sync knows; nothing was sent for them.</p>\
         <table id=\"unmatched\"><tr><th>Provider</th><th>Event</th><th>Type</th><th>Reason</th></tr>",
    );
    for e in events {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&e.provider),
            esc(&e.event_id),
            esc(&e.event_type),
            esc(&e.reason)
        );
    }
    out.push_str("</table>");
    out
}

/// The confirmation step of an action: the same form again, with `confirm`.
pub fn confirm(
    action: &str,
    question: &str,
    fields: &[(&str, &str)],
    access: &Access,
    back: &str,
) -> String {
    let mut out = format!(
        "<p class=\"note\" id=\"question\">{}</p><form method=\"post\" action=\"{}\">{}",
        esc(question),
        esc(action),
        csrf_field(access)
    );
    for (name, value) in fields {
        out.push_str(&hidden(name, value));
    }
    let _ = write!(
        out,
        "{}<button type=\"submit\" id=\"confirm\">Yes, go ahead</button> <a href=\"{}\">Cancel</a></form>",
        hidden("confirm", "yes"),
        esc(back)
    );
    out
}

pub fn login(next: &str, failed: bool) -> String {
    let mut out = String::new();
    if failed {
        out.push_str("<p class=\"note\" id=\"refused\">That is not the console token.</p>");
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/login\" id=\"login\">{}\
         <label>Console token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label> \
         <button type=\"submit\">Sign in</button></form>\
         <p>The token is the one in <code>console.auth</code> (ask whoever runs paystar-sync).</p>",
        hidden("next", next)
    );
    out
}
