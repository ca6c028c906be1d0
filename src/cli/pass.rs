//! `validate`, `plan` and `apply`: a scan, shown or committed and sent.

use super::*;

/// A progress line on standard error when it is a terminal; nothing otherwise, so
/// logs, pipes and CI output stay clean.
pub(super) fn terminal_progress() -> Option<crate::app::Progress> {
    use std::io::IsTerminal;
    std::io::stderr()
        .is_terminal()
        .then(|| crate::app::Progress::new(|text| eprint!("\r\x1b[2K{text}")))
}

/// Loads the config, opens the state read-only and scans: the dry-run path
/// shared by `validate` and `plan`. `hashes`: whether a file parsed anyway is
/// hashed too (a reviewed plan seals the manifests' hashes; a plain plan or a
/// validation does not need them).
pub(super) fn dry_scan(path: &Path, hashes: bool) -> anyhow::Result<(Config, Store, Scan)> {
    let config = Config::load(path)?;
    config.check_manifests_dir()?;
    let store = Store::open_read_only(&config.state)?;
    let parse = config.parse_options();
    let progress = terminal_progress();
    let show = |n: usize, total: usize, file: &str| {
        if let Some(p) = &progress {
            p.line(&format!("reading {n}/{total}: {file}"));
        }
    };
    let settings = ScanSettings {
        progress: Some(&show),
        hash_parsed: hashes,
        ..ScanSettings::new(&config, &parse, now_ms())
    };
    let scan = scan(&store, &settings).context("cannot scan the manifests")?;
    if progress.is_some() {
        eprint!("\r\x1b[2K");
    }
    Ok((config, store, scan))
}

pub(super) fn validate(path: &Path) -> anyhow::Result<Exit> {
    let (config, _store, scan) = dry_scan(path, false)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // The same resolution as `apply`, `run` and a reload; here it only warns, so
    // that CI can validate manifests without production secrets.
    if let Err(err) = crate::app::wiring::resolve(&config, &crate::config::process_env) {
        for problem in err.problems {
            writeln!(out, "warning: {problem} (needed by apply, run and poll)")?;
        }
    }
    for warning in &scan.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    for error in &scan.errors {
        writeln!(out, "{error}")?;
    }
    let s = &scan.stats;
    writeln!(
        out,
        "{} file(s): {} read, {} unchanged, {} failed; {} customer row(s) read; {} error(s)",
        s.files,
        s.files_parsed,
        s.files_unchanged,
        s.files_failed,
        s.rows_read,
        scan.errors.len()
    )?;
    Ok(if scan.errors.is_empty() {
        Exit::Ok
    } else {
        Exit::Data
    })
}

pub(super) fn plan(
    path: &Path,
    format: PlanFormat,
    out_file: Option<&Path>,
    detailed: bool,
) -> anyhow::Result<Exit> {
    let (_config, store, scan) = dry_scan(path, out_file.is_some())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let summary = match format {
        PlanFormat::Text => report::plan_text(&scan, &store, &mut out)?,
        PlanFormat::Json => report::plan_json(&scan, &store, &mut out, None)?,
        PlanFormat::Markdown => report::plan_markdown(&scan, &store, &mut out)?,
    };
    out.flush()?;
    if let Some(file) = out_file {
        let handle = std::fs::File::create(file)
            .with_context(|| format!("cannot write the plan to {}", file.display()))?;
        let mut writer = BufWriter::new(handle);
        let mut fingerprint = scan.fingerprint(&store)?;
        // Seal the body, so that `apply --plan` refuses an edited file.
        let mut body = Vec::new();
        report::plan_json(&scan, &store, &mut body, None)?;
        let document: serde_json::Value = serde_json::from_slice(&body)?;
        fingerprint.body = report::plan_body_digest(&document);
        report::plan_json(&scan, &store, &mut writer, Some(&fingerprint))?;
        writer
            .flush()
            .with_context(|| format!("cannot write the plan to {}", file.display()))?;
    }
    // The process ends next: a million rows need not be freed one by one first.
    std::mem::forget(scan);
    Ok(if summary.errors > 0 {
        Exit::Data
    } else if detailed && summary.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}

pub(super) async fn apply(
    cli: &Cli,
    path: &Path,
    timeout: std::time::Duration,
    plan: Option<&Path>,
) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    config.check_manifests_dir()?;
    let traces = crate::telemetry::Traces::start(config.telemetry.as_ref())?;
    init_logging(cli, traces.as_ref());
    if let Some(traces) = &traces {
        traces.announce();
    }
    let result = apply_with(config, timeout, plan).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result
}

async fn apply_with(
    config: Config,
    timeout: std::time::Duration,
    plan: Option<&Path>,
) -> anyhow::Result<Exit> {
    let fingerprint = match plan {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the plan {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a plan written by `paystar-sync plan --out`",
                    file.display()
                )
            })?;
            let fingerprint: crate::scan::Fingerprint =
                serde_json::from_value(value["fingerprint"].clone()).with_context(|| {
                    format!(
                        "{} has no fingerprint: write it with `paystar-sync plan --out`",
                        file.display()
                    )
                })?;
            if fingerprint.body.is_none() || fingerprint.body != report::plan_body_digest(&value) {
                anyhow::bail!(
                    "refusing to apply the plan: {} was edited after `plan --out` wrote it (its body no longer matches its fingerprint); run `paystar-sync plan --out FILE` again and review it",
                    file.display()
                );
            }
            Some(fingerprint)
        }
        None => None,
    };
    let progress = terminal_progress();
    let interrupt = super::interrupts("apply", config.shutdown_grace)?;
    let report =
        crate::app::apply(&config, timeout, fingerprint, progress.clone(), interrupt).await?;
    if progress.is_some() {
        eprint!("\r\x1b[2K");
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for error in &report.scan.errors {
        writeln!(out, "{error}")?;
    }
    let t = &report.totals;
    writeln!(
        out,
        "apply: {} event(s) acknowledged for {} customer(s); {} retry(ies); {} parked, {} still waiting; {} manifest error(s)",
        t.delivered_events,
        t.keys_done,
        t.retries,
        report.parked,
        report.waiting,
        report.scan.errors.len()
    )?;
    if report.parked > 0 {
        writeln!(
            out,
            "parked customers wait for an operator: see `paystar-sync status`, fix the cause, then `paystar-sync retry`"
        )?;
    }
    if report.waiting > 0 {
        writeln!(
            out,
            "customers still waiting stay queued; the next apply or the daemon sends them"
        )?;
    }
    if let Some(problem) = &report.endpoint {
        writeln!(
            out,
            "delivery paused: {}; nothing was parked for it: fix it, then run apply again",
            problem.reason
        )?;
    }
    if let Some(pause) = &report.pause {
        writeln!(
            out,
            "delivery is paused for {} (providers.payroc.pause): {}; their customers stay queued until Payroc reports another status",
            pause.business_units.join(", "),
            pause.cause
        )?;
    }
    if let Some(trip) = &report.scan.guard {
        writeln!(out, "held by the mass-change guard: {trip}")?;
    }
    if report.held > 0 {
        writeln!(
            out,
            "{} unenroll(s) are held for approval: review `paystar-sync status`, then `paystar-sync approve`",
            report.held
        )?;
    }
    if report.interrupted {
        writeln!(
            out,
            "interrupted: {} event(s) acknowledged, {} customer(s) still queued; run apply again",
            t.delivered_events, report.waiting
        )?;
        return Ok(Exit::Interrupted);
    }
    Ok(
        if report.parked > 0 || report.waiting > 0 || report.held > 0 {
            Exit::Failure
        } else if !report.scan.errors.is_empty() {
            Exit::Data
        } else {
            Exit::Ok
        },
    )
}
