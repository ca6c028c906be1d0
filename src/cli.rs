//! The command line (SPEC §7): parses arguments, runs a command, and turns the
//! outcome into an exit code.

use crate::clock::now_ms;
use crate::config::{Config, ConfigError};
use crate::report;
use crate::scan::{Scan, ScanSettings, scan};
use crate::store::Store;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes of SPEC §7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Changes = 2,
    Usage = 64,
    Data = 65,
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "paystar-sync",
    version,
    about = "Keeps Paystar customer accounts in line with declarative manifests"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// Shells `completions` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `plan --format`: text, JSON, or Markdown for a pull-request comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        env = "PAYSTAR_SYNC_CONFIG",
        default_value = "/etc/paystar-sync/config.yaml"
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the configuration and every manifest; sends nothing, changes nothing.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The daemon: watch the manifests, deliver changes, until SIGTERM or SIGINT.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One pass: scan, send every change, wait for Paystar's acknowledgements, exit.
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Longest to wait for retries before exiting; what is left stays queued.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Send exactly this reviewed plan (from `plan --out`), or refuse if anything changed.
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Counts by state, retrying and parked customers, last scan, file errors.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Put parked customers back in the queue.
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        /// Every parked customer.
        #[arg(long, conflicts_with = "keys", required_unless_present = "keys")]
        all: bool,
        /// ACCOUNT or ACCOUNT/SUBACCOUNT.
        keys: Vec<String>,
        /// Business unit of the KEYs (default: paystar.default_business_unit).
        #[arg(long)]
        business_unit: Option<String>,
    },
    /// One customer's story: what was sent, why, from where, and Paystar's answers.
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// ACCOUNT or ACCOUNT/SUBACCOUNT.
        key: String,
        /// Business unit of KEY (default: paystar.default_business_unit).
        #[arg(long)]
        business_unit: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// One provider poll pass: record new events, queue stop signals.
    Poll {
        #[command(flatten)]
        config: ConfigArg,
        /// Run one pass and exit (the daemon polls on providers.lotuspay.schedule).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Release unenrolls held by the mass-change guard.
    Approve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Shell completions on standard output (bash, zsh or fish).
    Completions { shell: CompletionShell },
    /// The manual page (roff) on standard output: `paystar-sync man | man -l -`.
    Man,
    /// Serve local simulators of the external APIs.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
    /// Show what would be sent to Paystar; sends nothing, changes nothing.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// `markdown` is for a pull-request comment (see examples/gitops/).
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Also write the plan as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 2 when the plan has changes, 0 when it has none.
        #[arg(long)]
        detailed_exitcode: bool,
    },
}

/// Runs the process: parses `std::env::args_os`, runs the command, returns its exit code.
pub fn main() -> ExitCode {
    run(std::env::args_os()).into()
}

pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Exit {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::Ok
                }
                _ => Exit::Usage,
            };
        }
    };
    init_logging(&cli);
    let outcome = match &cli.command {
        Command::Validate { config } => validate(&config.config),
        Command::Plan {
            config,
            format,
            out,
            detailed_exitcode,
        } => plan(&config.config, *format, out.as_deref(), *detailed_exitcode),
        Command::Run { config } => block_on(daemon(&config.config)),
        Command::Apply {
            config,
            timeout,
            plan,
        } => block_on(apply(&config.config, *timeout, plan.as_deref())),
        Command::Status { config, format } => status(&config.config, *format),
        Command::Retry {
            config,
            all,
            keys,
            business_unit,
        } => retry(&config.config, *all, keys, business_unit.as_deref()),
        Command::Approve { config } => approve(&config.config),
        Command::Poll { config, .. } => block_on(poll(&config.config)),
        Command::History {
            config,
            key,
            business_unit,
            format,
        } => history(&config.config, key, business_unit.as_deref(), *format),
        Command::Sandbox { listen } => block_on(sandbox(*listen)),
        Command::Completions { shell } => completions(*shell),
        Command::Man => man(),
    };
    match outcome {
        Ok(exit) => exit,
        Err(err) => {
            if let Some(config) = err.downcast_ref::<ConfigError>() {
                eprintln!("error: {config}");
                return Exit::Config;
            }
            eprintln!("error: {err:#}");
            Exit::Failure
        }
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::config::duration::parse(text)
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A progress line on standard error when it is a terminal; nothing otherwise, so
/// logs, pipes and CI output stay clean.
fn terminal_progress() -> Option<crate::app::Progress> {
    use std::io::IsTerminal;
    std::io::stderr()
        .is_terminal()
        .then(|| crate::app::Progress::new(|text| eprint!("\r\x1b[2K{text}")))
}

/// Loads the config, opens the state read-only and scans: the dry-run path
/// shared by `validate` and `plan`.
fn dry_scan(path: &Path) -> anyhow::Result<(Config, Store, Scan)> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state.path)?;
    let parse = config.parse_options();
    let progress = terminal_progress();
    let show = |n: usize, total: usize, file: &str| {
        if let Some(p) = &progress {
            p.line(&format!("reading {n}/{total}: {file}"));
        }
    };
    let settings = ScanSettings {
        progress: Some(&show),
        ..ScanSettings::new(&config, &parse, now_ms())
    };
    let scan = scan(&store, &settings).context("cannot scan the manifests")?;
    if progress.is_some() {
        eprint!("\r\x1b[2K");
    }
    for warning in &scan.warnings {
        tracing::warn!(%warning, "manifest warning");
    }
    Ok((config, store, scan))
}

fn validate(path: &Path) -> anyhow::Result<Exit> {
    let (config, _store, scan) = dry_scan(path)?;
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

fn plan(
    path: &Path,
    format: PlanFormat,
    out_file: Option<&Path>,
    detailed: bool,
) -> anyhow::Result<Exit> {
    let (_config, store, scan) = dry_scan(path)?;
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
    Ok(if summary.errors > 0 {
        Exit::Data
    } else if detailed && summary.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}

async fn apply(
    path: &Path,
    timeout: std::time::Duration,
    plan: Option<&Path>,
) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
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
    let report = crate::app::apply(&config, timeout, fingerprint, progress.clone()).await?;
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

fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(at)
}

fn status(path: &Path, format: OutputFormat) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state.path)?;
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
            "state": config.state.path,
            "counts": counts,
            "lastScan": last_scan,
            "queue": troubled,
            "reports": report::list_error_reports(&config.state.dir().join("reports")),
            "unmatched": unmatched.iter().map(|u| serde_json::json!({ "provider": u.provider, "eventId": u.event_id, "type": u.event_type, "reason": u.reason })).collect::<Vec<_>>(),
            "holds": holds.iter().map(|h| serde_json::json!({ "cause": h.cause, "count": h.count })).collect::<Vec<_>>(),
            "paused": pause.as_ref().map(|p| serde_json::json!({ "businessUnits": p.business_units, "cause": p.cause })),
            "errors": errors,
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "state: {}", config.state.path.display())?;
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
    let reports_dir = config.state.dir().join("reports");
    let reports = report::list_error_reports(&reports_dir);
    if !reports.is_empty() {
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

fn history(
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
    let store = Store::open_read_only(&config.state.path)?;
    let lines: Vec<serde_json::Value> = store
        .history(key.as_ref())?
        .iter()
        .map(report::history_json)
        .collect();
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

async fn poll(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let resolved = crate::app::wiring::resolve(&config, &crate::config::process_env)?;
    let Some(lotuspay) = &resolved.lotuspay else {
        println!("no provider to poll: configure providers.lotuspay");
        return Ok(Exit::Ok);
    };
    let poller = lotuspay.poller(None)?;
    let store = crate::store::SharedStore::new(Store::open(&config.state.path)?);
    let report = poller.poll_once(&store, now_ms()).await?;
    println!(
        "lotuspay: {} event(s) listed, {} new: {} stop signal(s) queued, {} ignored, {} unmatched",
        report.listed, report.new, report.stops, report.ignored, report.unmatched
    );
    if report.stops > 0 {
        println!("the daemon or the next apply sends the UnenrollAutopay events");
    }
    Ok(Exit::Ok)
}

fn approve(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let mut store = Store::open(&config.state.path)?;
    let held = store.holds_by_cause()?;
    if held.is_empty() {
        println!("nothing is held");
        return Ok(Exit::Ok);
    }
    for h in &held {
        println!("approving {} unenroll(s): {}", h.count, h.cause);
    }
    let count = store.approve(now_ms())?;
    println!(
        "released {count} held unenroll(s) into the queue; the daemon or the next apply sends them"
    );
    Ok(Exit::Ok)
}

fn retry(
    path: &Path,
    all: bool,
    keys: &[String],
    business_unit: Option<&str>,
) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let keys = if all {
        None
    } else {
        let unit = business_unit
            .or(config.paystar.default_business_unit.as_deref())
            .context("give --business-unit, or set paystar.default_business_unit")?;
        let parsed: Result<Vec<_>, String> = keys
            .iter()
            .map(|k| crate::customer::CustomerKey::parse_cli(unit, k))
            .collect();
        match parsed {
            Ok(keys) => Some(keys),
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(Exit::Usage);
            }
        }
    };
    let mut store = Store::open(&config.state.path)?;
    let count = store.retry_parked(keys.as_deref(), now_ms())?;
    println!("re-queued {count} parked customer(s); the daemon or the next apply sends them");
    if let Some(keys) = &keys {
        if count < keys.len() {
            println!("{} of the given key(s) were not parked", keys.len() - count);
        }
    }
    Ok(Exit::Ok)
}

fn completions(shell: CompletionShell) -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    use clap_complete::{Shell, generate};
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut command = Cli::command();
    // Into memory first: the generator panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    generate(shell, &mut command, "paystar-sync", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("cannot write the completions")?;
    Ok(Exit::Ok)
}

fn man() -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot write the manual page")?;
    Ok(Exit::Ok)
}

async fn sandbox(listen: std::net::SocketAddr) -> anyhow::Result<Exit> {
    let running = crate::sandbox::Sandbox::new()
        .start(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %running.addr, paystar = %running.paystar_endpoint(), "sandbox serving; Ctrl-C stops it");
    println!(
        "Paystar Events API simulator: {}",
        running.paystar_endpoint()
    );
    println!(
        "accepted events: http://{}/_sandbox/paystar/events",
        running.addr
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    running.stop().await;
    Ok(Exit::Ok)
}

async fn daemon(path: &Path) -> anyhow::Result<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = Config::load(path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = term.recv() => crate::app::Signal::Shutdown,
                _ = int.recv() => crate::app::Signal::Shutdown,
                _ = hup.recv() => crate::app::Signal::Reload,
            };
            if tx.send(signal).await.is_err() {
                return;
            }
        }
    });
    let notifier = crate::systemd::Notifier::from_env(&crate::config::process_env);
    crate::app::run(path, config, rx, notifier).await?;
    Ok(Exit::Ok)
}
