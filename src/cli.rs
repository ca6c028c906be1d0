//! The command line (SPEC §7): parses arguments, runs a command, and turns the
//! outcome into an exit code.

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
    /// Show what would be sent to Paystar; sends nothing, changes nothing.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
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

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads the config, opens the state read-only and scans: the dry-run path
/// shared by `validate` and `plan`.
fn dry_scan(path: &Path) -> anyhow::Result<(Config, Store, Scan)> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state.path)?;
    let parse = config.parse_options();
    let settings = ScanSettings {
        dir: &config.manifests.dir,
        parse: &parse,
        on_removal: config.manifests.on_removal,
        now_ms: now_ms(),
    };
    let scan = scan(&store, &settings).context("cannot scan the manifests")?;
    for warning in &scan.warnings {
        tracing::warn!(%warning, "manifest warning");
    }
    Ok((config, store, scan))
}

fn validate(path: &Path) -> anyhow::Result<Exit> {
    let (config, _store, scan) = dry_scan(path)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for secret in [&config.paystar.api_key].into_iter().flatten() {
        if let Err(problem) = secret.resolve(&crate::config::process_env) {
            writeln!(out, "warning: {problem} (needed by apply and run)")?;
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
    format: OutputFormat,
    out_file: Option<&Path>,
    detailed: bool,
) -> anyhow::Result<Exit> {
    let (_config, store, scan) = dry_scan(path)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let summary = match format {
        OutputFormat::Text => report::plan_text(&scan, &store, &mut out)?,
        OutputFormat::Json => report::plan_json(&scan, &store, &mut out)?,
    };
    out.flush()?;
    if let Some(file) = out_file {
        let handle = std::fs::File::create(file)
            .with_context(|| format!("cannot write the plan to {}", file.display()))?;
        let mut writer = BufWriter::new(handle);
        report::plan_json(&scan, &store, &mut writer)?;
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
