//! The command line (SPEC §7): parses arguments, runs a command, and turns the
//! outcome into an exit code.

mod check;
mod inspect;
mod operate;
mod pass;
mod snapshot;
mod tools;

use check::state_check;
use inspect::{history, status};
use operate::{approve, poll, retry, state_copy};
use pass::{apply, plan, validate};
use snapshot::state_snapshot;
use tools::{completions, daemon, man, sandbox};

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
    /// SIGINT or SIGTERM ended a one-shot command early (SPEC §7).
    Interrupted = 130,
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
    /// The state itself: move it between backends, or check it.
    State {
        #[command(subcommand)]
        command: StateCommand,
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

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// Copy every row of one config's state into another's, which must hold no
    /// state yet (e.g. from SQLite to PostgreSQL). The source is left as it was.
    Copy {
        /// The configuration whose state is read.
        #[arg(long)]
        from: PathBuf,
        /// The configuration whose (empty) state is written.
        #[arg(long)]
        to: PathBuf,
    },
    /// Write a consistent copy of the state to OUT as one SQLite file that
    /// stands alone (no -wal beside it), for plan, validate, status and history
    /// elsewhere (CI). Safe beside a running daemon; OUT must not exist.
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        /// The SQLite file to write.
        out: PathBuf,
    },
    /// Compare every stored shortcut with what it stands for (each file's
    /// stored rows with the state's rows; the file index with the files'
    /// content); read-only. Exit 1 with the first difference.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs the process: parses `std::env::args_os`, runs the command, returns its exit code.
pub fn main() -> ExitCode {
    run(std::env::args_os()).into()
}

pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Exit {
    // `--version` names the commit and the state schemas too (a String made
    // once per process: clap keeps a `&'static str`).
    let version: &'static str = Box::leak(crate::build_info::version_line().into_boxed_str());
    let parsed = <Cli as clap::CommandFactory>::command()
        .version(version)
        .try_get_matches_from(args)
        .and_then(|matches| <Cli as clap::FromArgMatches>::from_arg_matches(&matches));
    let cli = match parsed {
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
    // `run` and `apply` may send traces: they set up logging once their
    // config says where.
    if !matches!(cli.command, Command::Run { .. } | Command::Apply { .. }) {
        init_logging(&cli, None);
    }
    let outcome = match &cli.command {
        Command::Validate { config } => validate(&config.config),
        Command::Plan {
            config,
            format,
            out,
            detailed_exitcode,
        } => plan(&config.config, *format, out.as_deref(), *detailed_exitcode),
        Command::Run { config } => block_on(daemon(&cli, &config.config)),
        Command::Apply {
            config,
            timeout,
            plan,
        } => block_on(apply(&cli, &config.config, *timeout, plan.as_deref())),
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
        Command::State {
            command: StateCommand::Copy { from, to },
        } => state_copy(from, to),
        Command::State {
            command: StateCommand::Check { config },
        } => state_check(&config.config),
        Command::State {
            command: StateCommand::Snapshot { config, out },
        } => state_snapshot(&config.config, out),
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

/// Handles SIGINT and SIGTERM for a one-shot command (`apply`, `poll --once`):
/// the first cancels the returned token (nothing new starts, what is in flight
/// gets `grace`), a second ends the process at once with 130.
fn interrupts(
    command: &'static str,
    grace: std::time::Duration,
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            // Clears the progress line.
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "interrupted: {command} starts nothing new and lets requests in flight finish (up to {grace:?}); interrupt again to stop at once"
        );
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("interrupted again: stopping now; what was not recorded stays queued");
        std::process::exit(Exit::Interrupted as i32);
    });
    Ok(token)
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

/// Installs the process's log subscriber, with the trace exporter's layer when
/// there is one (`run` and `apply` install theirs once the config is read).
fn init_logging(cli: &Cli, traces: Option<&crate::telemetry::Traces>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    // The PostgreSQL driver logs query parameters (customers' fields) at debug,
    // and the watch library notes at info each watch a symlink flip (git-sync)
    // took away: they speak only of warnings.
    let quiet_driver = ",tokio_postgres=warn,postgres=warn,notify=warn";
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(format!("{level}{quiet_driver}"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info{quiet_driver}")))
    };
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    // The traced `paystar.*` spans are for the exporter; log lines stay as they are.
    let logged = || {
        use tracing_subscriber::filter::{FilterExt, filter_fn};
        filter().and(filter_fn(|meta| {
            !(meta.is_span() && meta.name().starts_with("paystar."))
        }))
    };
    let traced = tracing_subscriber::registry().with(crate::telemetry::Traces::layer(traces));
    let logger: Box<dyn Layer<_> + Send + Sync> = match cli.log_format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .with_filter(logged()),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(logged()),
        ),
    };
    if traced.with(logger).try_init().is_ok() {
        // Libraries that speak through the `log` crate (the PostgreSQL driver has a
        // trace line for every message it reads) are asked first whether anyone
        // listens: below the most verbose level any directive allows, they skip the
        // record at once instead of handing it to the subscriber to refuse.
        log::set_max_level(log_level(filter().max_level_hint()));
    }
}

/// The `log` crate's level for a subscriber's most verbose level (`None`: no limit).
fn log_level(hint: Option<tracing_subscriber::filter::LevelFilter>) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match hint {
        None | Some(LevelFilter::TRACE) => log::LevelFilter::Trace,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(_) => log::LevelFilter::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn log_crate_records_are_skipped_exactly_below_the_most_verbose_directive() {
        let hint = |filter: &str| tracing_subscriber::EnvFilter::new(filter).max_level_hint();
        assert_eq!(
            log_level(hint("info,tokio_postgres=warn")),
            log::LevelFilter::Info
        );
        assert_eq!(
            log_level(hint("warn,paystar_sync=debug")),
            log::LevelFilter::Debug
        );
        assert_eq!(log_level(hint("error")), log::LevelFilter::Error);
        assert_eq!(log_level(Some(LevelFilter::OFF)), log::LevelFilter::Off);
        assert_eq!(log_level(None), log::LevelFilter::Trace);
    }
}
