//! `status` and `history`: what the state says, for people and scripts.

use super::*;

pub(super) fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(at)
}

pub(super) fn status(path: &Path, format: OutputFormat) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state)?;
    let counts = store.counts()?;
    let troubled = store.troubled(1000)?;
    let holds = store.holds_by_cause()?;
    let unmatched = store.unmatched_events(100)?;
    let errors = store.present_file_errors()?;
    let pause = crate::providers::payroc::current_pause(
        config
            .providers
            .payroc
            .as_ref()
            .and_then(|p| p.pause.as_ref()),
        &store,
    )?;
    let last_scan: Option<serde_json::Value> = store
        .meta("last_scan")?
        .and_then(|t| serde_json::from_str(&t).ok());
    let lease = store.lease()?;
    let learned: Option<usize> = store
        .meta(crate::deliver::LEARNED_KEY)?
        .and_then(|v| v.parse().ok());
    let concurrency = config.paystar.describe_concurrency(learned, None);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if format == OutputFormat::Json {
        let troubled: Vec<serde_json::Value> = troubled
            .iter()
            .map(|t| {
                serde_json::json!({
                    "businessUnitSlug": t.key.business_unit,
                    "accountNumber": t.key.account,
                    "subAccountNumber": t.key.sub_account,
                    "state": t.state.as_str(),
                    "attempts": t.attempts,
                    "nextAttemptAtMs": t.next_attempt_at,
                    "lastError": t.last_error,
                })
            })
            .collect();
        let value = serde_json::json!({
            "state": config.state.describe(),
            "counts": counts,
            "lastScan": last_scan,
            "queue": troubled,
            "reports": config.state.reports_dir.as_deref().map(report::list_error_reports).unwrap_or_default(),
            "unmatched": unmatched.iter().map(|u| serde_json::json!({ "provider": u.provider, "eventId": u.event_id, "type": u.event_type, "reason": u.reason })).collect::<Vec<_>>(),
            "holds": holds.iter().map(|h| serde_json::json!({ "cause": h.cause, "count": h.count })).collect::<Vec<_>>(),
            "paused": pause.as_ref().map(|p| serde_json::json!({ "businessUnits": p.business_units, "cause": p.cause })),
            "errors": errors,
            "ha": config.ha.as_ref().map(|_| lease_json(lease.as_ref())),
            "delivery": {
                "concurrency": concurrency,
                "adaptive": config.paystar.adaptive.is_some(),
                "learned": learned,
                "maxConcurrency": config.paystar.adaptive,
                "rateLimitPerSecond": config.paystar.rate_limit.map(|r| r.per_second),
            },
            "build": {
                "version": crate::build_info::VERSION,
                "commit": crate::build_info::COMMIT,
                "sqliteSchema": crate::build_info::schemas().0,
                "postgresSchema": crate::build_info::schemas().1,
            },
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "state: {}", config.state.describe())?;
    writeln!(out, "build: {}", crate::build_info::describe())?;
    if config.ha.is_some() {
        writeln!(out, "{}", lease_line(lease.as_ref()))?;
    }
    match &last_scan {
        Some(scan) => writeln!(
            out,
            "last scan: {} ({} file(s), {} row(s) read, {} error(s))",
            when(scan["at_ms"].as_i64().unwrap_or(0)),
            scan["stats"]["files"],
            scan["stats"]["rows_read"],
            scan["errors"]
        )?,
        None => writeln!(out, "last scan: never")?,
    }
    writeln!(
        out,
        "customers: {} desired, {} removed, {} acknowledged by Paystar",
        counts.desired, counts.removed, counts.acknowledged
    )?;
    writeln!(
        out,
        "queue: {} pending, {} retrying, {} parked",
        counts.pending, counts.retrying, counts.parked
    )?;
    writeln!(out, "delivery concurrency: {concurrency}")?;
    if let Some(pause) = &pause {
        writeln!(
            out,
            "paused: delivery to {} waits (providers.payroc.pause): {}",
            pause.business_units.join(", "),
            pause.cause
        )?;
    }
    if !holds.is_empty() {
        writeln!(
            out,
            "held: {} unenroll(s) wait for approval (mass-change guard); review, then run `paystar-sync approve`",
            counts.held
        )?;
        for h in &holds {
            writeln!(out, "  {:>7}  {}", h.count, h.cause)?;
        }
    }
    for t in &troubled {
        let error = t.last_error.as_deref().unwrap_or("");
        match t.state {
            crate::store::QueueState::Parked => writeln!(
                out,
                "  parked    {}  after {} attempt(s): {error}",
                t.key, t.attempts
            )?,
            _ => writeln!(
                out,
                "  retrying  {}  attempt {} failed, next at {}: {error}",
                t.key,
                t.attempts,
                when(t.next_attempt_at)
            )?,
        }
    }
    if !unmatched.is_empty() {
        writeln!(
            out,
            "unmatched provider events ({}, newest first):",
            unmatched.len()
        )?;
        for u in &unmatched {
            writeln!(out, "  {} {}: {}", u.provider, u.event_id, u.reason)?;
        }
    }
    let reports = config
        .state
        .reports_dir
        .as_deref()
        .map(report::list_error_reports)
        .unwrap_or_default();
    if let (false, Some(reports_dir)) = (reports.is_empty(), &config.state.reports_dir) {
        writeln!(
            out,
            "error reports ({}): {}",
            reports.len(),
            reports_dir.display()
        )?;
        for name in &reports {
            writeln!(out, "  {name}")?;
        }
    }
    if !errors.is_empty() {
        writeln!(out, "manifest errors ({}):", errors.len())?;
        for e in &errors {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(Exit::Ok)
}

pub(super) fn history(
    path: &Path,
    key: &str,
    business_unit: Option<&str>,
    format: OutputFormat,
) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let Some(unit) = business_unit.or(config.paystar.default_business_unit.as_deref()) else {
        eprintln!("error: give --business-unit, or set paystar.default_business_unit");
        return Ok(Exit::Usage);
    };
    let key = match crate::customer::CustomerKey::parse_cli(unit, key) {
        Ok(key) => key,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Exit::Usage);
        }
    };
    let store = Store::open_read_only(&config.state)?;
    let lines: Vec<serde_json::Value> = store
        .history(key.as_ref())?
        .iter()
        .map(report::history_json)
        .collect();
    if lines.is_empty() && key.sub_account.is_empty() {
        let subs = store.sub_accounts(&key.business_unit, &key.account)?;
        if !subs.is_empty() {
            let keys: Vec<String> = subs
                .iter()
                .map(|s| format!("{}/{s}", key.account))
                .collect();
            eprintln!(
                "{} has no history of its own; the state knows it with sub-account(s): {}; run `paystar-sync history {}`",
                key,
                keys.join(", "),
                keys[0]
            );
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if format == OutputFormat::Json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "customer": key.to_string(), "history": lines }),
        )?;
        writeln!(out)?;
    } else {
        report::history_text(&key, &lines, &mut out)?;
    }
    Ok(Exit::Ok)
}

/// Who leads, as the lease shows it (SPEC §12).
fn lease_json(lease: Option<&crate::store::LeaseView>) -> serde_json::Value {
    match lease {
        Some(l) => serde_json::json!({
            "leader": l.live().then_some(&l.holder),
            "lastHolder": l.holder,
            "epoch": l.epoch,
            "live": l.live(),
            "renewedAtMs": l.renewed_ms,
            "expiresAtMs": l.expires_ms,
            "leaderVersion": l.version,
        }),
        None => {
            serde_json::json!({ "leader": null, "lastHolder": null, "epoch": null, "live": false })
        }
    }
}

fn lease_line(lease: Option<&crate::store::LeaseView>) -> String {
    match lease {
        Some(l) if l.live() => {
            let own = crate::build_info::short();
            let build = match l.version.as_deref() {
                Some(v) if v == own => format!("paystar-sync {v}, as this one"),
                Some(v) => format!("paystar-sync {v}, NOT this build ({own}): a mixed cluster"),
                None => "a paystar-sync too old to name its build: a mixed cluster".to_owned(),
            };
            format!(
                "leader: {} (epoch {}; {build}; the lease runs {:.1}s more unless renewed)",
                l.holder,
                l.epoch,
                l.remaining().as_secs_f64()
            )
        }
        Some(l) => format!(
            "leader: none; the lease of {} (epoch {}) ran out {:.1}s ago, and a standby takes over at its next look",
            l.holder,
            l.epoch,
            (l.now_ms - l.expires_ms) as f64 / 1000.0
        ),
        None => "leader: none yet; the first instance to start takes the lease".to_owned(),
    }
}
