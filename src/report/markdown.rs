//! The plan as Markdown for a pull-request comment (`plan --format markdown`):
//! a summary table, then unenrolls (held ones first), then ManageCustomer
//! changes, each grouped by file, then the errors as `file:line`. Emails are
//! masked and names never shown, as in the text plan. Everything a manifest
//! supplies is written inside code spans, so a hostile value cannot inject
//! Markdown or HTML into the comment. Long groups fold into `<details>`, and
//! the comment stays below what code hosts accept.

use super::{PlanSummary, RenderError, removals_ignored};
use crate::mask::MaskedEmail;
use crate::reconcile::Change;
use crate::scan::{Origin, PlannedChange, Scan};
use crate::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

/// Entries shown per file and section; the rest are counted.
const SHOWN_PER_GROUP: usize = 50;
/// Groups longer than this fold into `<details>`.
const FOLD_AFTER: usize = 10;
/// Errors shown; the rest are counted.
const SHOWN_ERRORS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Held,
    Unenroll,
    Create,
    Update,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Held => "UnenrollAutopay held for approval",
            Section::Unenroll => "UnenrollAutopay",
            Section::Create => "ManageCustomer create",
            Section::Update => "ManageCustomer update",
        }
    }
}

/// The entries of one section and file: the first few lines, and how many in all.
#[derive(Default)]
struct Group {
    lines: Vec<String>,
    total: usize,
}

/// Writes the Markdown plan; returns its summary.
pub fn plan_markdown(
    scan: &Scan,
    store: &Store,
    out: &mut dyn Write,
) -> Result<PlanSummary, RenderError> {
    let mut summary = PlanSummary::default();
    let mut groups: BTreeMap<(Section, String), Group> = BTreeMap::new();
    scan.for_each_change(store, |change| {
        summary.count(change);
        for (section, line) in entries(change) {
            let group = groups.entry((section, file_of(change.origin))).or_default();
            group.total += 1;
            if group.lines.len() < SHOWN_PER_GROUP {
                group.lines.push(line);
            }
        }
    })?;
    summary.removals_ignored = removals_ignored(scan);
    summary.errors = scan.errors.len() as u64;

    let mut md = String::from("### paystar-sync plan\n\n");
    md.push_str(&summary_table(&summary));
    if let Some(trip) = &scan.guard {
        let _ = write!(
            md,
            "\n> [!WARNING]\n> **Held:** {}. {}\n",
            text(&trip.to_string()),
            super::held_advice(scan.first_import)
        );
    }
    if !summary.has_changes() && summary.errors == 0 {
        md.push_str("\nNo changes.\n");
    }
    let mut current: Option<Section> = None;
    for ((section, file), group) in &groups {
        if current != Some(*section) {
            let count: usize = groups
                .iter()
                .filter(|((s, _), _)| s == section)
                .map(|(_, g)| g.total)
                .sum();
            let _ = write!(md, "\n#### {} ({count})\n", section.title());
            current = Some(*section);
        }
        let fold = group.total > FOLD_AFTER;
        if fold {
            // Markdown is not read inside the HTML summary: an HTML code element.
            let _ = write!(
                md,
                "\n<details><summary>{} in <code>{}</code></summary>\n\n",
                group.total,
                html(file)
            );
        } else {
            let _ = write!(md, "\n{} in {}:\n\n", group.total, code(file));
        }
        for line in &group.lines {
            let _ = writeln!(md, "- {line}");
        }
        if group.total > group.lines.len() {
            let _ = writeln!(
                md,
                "- … and {} more (`paystar-sync plan` lists them all)",
                group.total - group.lines.len()
            );
        }
        if fold {
            md.push_str("\n</details>\n");
        }
    }
    if !scan.errors.is_empty() {
        let _ = write!(
            md,
            "\n#### Errors ({}): these rows and files keep their previous state\n\n",
            scan.errors.len()
        );
        for e in scan.errors.iter().take(SHOWN_ERRORS) {
            let place = match e.line {
                Some(line) => format!("{}:{line}", e.file),
                None => e.file.clone(),
            };
            let field = e
                .field
                .as_deref()
                .map(|f| format!(" {}", code(f)))
                .unwrap_or_default();
            let _ = writeln!(md, "- {}{field}: {}", code(&place), text(&e.reason));
        }
        if scan.errors.len() > SHOWN_ERRORS {
            let _ = writeln!(
                md,
                "- … and {} more (`paystar-sync validate` lists them all)",
                scan.errors.len() - SHOWN_ERRORS
            );
        }
    }
    for w in &scan.warnings {
        let _ = write!(md, "\n> warning: {}\n", text(w));
    }
    let _ = write!(md, "\n{}\n", text(&super::summary_line(&summary)));
    out.write_all(md.as_bytes())?;
    Ok(summary)
}

fn summary_table(s: &PlanSummary) -> String {
    let mut table = String::from("| | customers |\n|---|---:|\n");
    for (label, n) in [
        ("ManageCustomer create", s.manage_create),
        ("ManageCustomer update", s.manage_update),
        ("UnenrollAutopay", s.unenroll),
        ("UnenrollAutopay held for approval", s.unenroll_held),
        (
            "Left the manifests, nothing sent (`on_removal: ignore`)",
            s.removals_ignored,
        ),
        ("Errors", s.errors),
    ] {
        let _ = writeln!(table, "| {label} | {n} |");
    }
    table
}

/// The file a change comes from, for grouping.
fn file_of(origin: Origin<'_>) -> String {
    match origin {
        Origin::Row { file, .. } | Origin::Removed { file } => file.to_owned(),
        Origin::Waiting {
            file: Some(file), ..
        } => file.to_owned(),
        Origin::Waiting { file: None, .. } => "(no manifest: a provider's signal)".to_owned(),
    }
}

/// One list entry per event a change sends.
fn entries(change: &PlannedChange<'_>) -> Vec<(Section, String)> {
    let key = code(&change.key.to_string());
    let at = match change.origin {
        Origin::Row { line, .. } => format!(", line {line}"),
        Origin::Removed { .. } => String::new(),
        Origin::Waiting {
            line: Some(line), ..
        } => format!(", line {line}, queued earlier"),
        Origin::Waiting { line: None, .. } => ", queued earlier".to_owned(),
    };
    let queue = change
        .queue
        .and_then(|q| q.last_error.as_deref())
        .map(|e| format!(" (last attempt: {})", text(e)))
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(manage) = change.plan.manage {
        match manage.change {
            Change::Create => out.push((
                Section::Create,
                format!(
                    "{key}{at}: {}{queue}",
                    code(&MaskedEmail(manage.fields.email).to_string())
                ),
            )),
            Change::Update { .. } => {
                let fields = manage.change.changed_fields().join(", ");
                let email = manage
                    .original_email
                    .map(|original| {
                        format!(
                            ": {} → {}",
                            code(&MaskedEmail(original).to_string()),
                            code(&MaskedEmail(manage.fields.email).to_string())
                        )
                    })
                    .unwrap_or_default();
                out.push((
                    Section::Update,
                    format!("{key}{at}: {fields}{email}{queue}"),
                ));
            }
        }
    }
    if let Some(cause) = change.plan.unenroll {
        let section = if change.unenroll_held {
            Section::Held
        } else {
            Section::Unenroll
        };
        out.push((section, format!("{key}{at}: {}{queue}", cause.as_str())));
    }
    out
}

/// A code span that holds `value` whatever backticks it contains.
fn code(value: &str) -> String {
    let longest = value.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if value.starts_with('`') || value.ends_with('`') || value.is_empty() {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{value}{pad}{fence}")
}

/// Text for inside an HTML element.
fn html(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Plain text with Markdown and HTML neutralised.
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_hold_any_backticks_and_text_is_neutralised() {
        assert_eq!(code("a.csv"), "`a.csv`");
        assert_eq!(code("we`ird"), "``we`ird``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(
            text("<img src=x> *bold* [link](u)"),
            "&lt;img src=x&gt; \\*bold\\* \\[link\\](u)"
        );
    }
}
