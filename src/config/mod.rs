//! Configuration (SPEC §8): the YAML file is checked as a whole, every problem is
//! reported with its key path, and the result is a typed [`Config`]. This is the
//! only module that reads environment variables and secret files.

mod console;
pub mod duration;
mod ha;
mod providers;
pub use providers::{
    DEFAULT_PAUSE_STATUSES, LotusPayBase, LotusPayConfig, PAYROC_ACCOUNT_STATUSES, PayrocConfig,
    PayrocPause, PayrocSubscription, ProvidersConfig, SmarterPayAuth, SmarterPayConfig,
};
pub mod rate;
mod secret;
mod size;
mod state;
mod telemetry;
mod walk;

pub use console::{ConsoleConfig, MIN_TOKEN_LEN};
pub use ha::{HaConfig, default_instance_id};
pub use secret::{Secret, SecretSource};
pub use telemetry::TelemetryConfig;

use crate::manifest::ParseOptions;
use crate::manifest::fields::{Field, normalise_header};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use walk::Walker;

/// The process environment, for secrets named by `*_env` keys. Everything else
/// takes an injected lookup so that tests control what it sees.
#[allow(clippy::disallowed_methods)] // the one place that reads the environment
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Every problem found in a config file; the process exits 78.
#[derive(Debug, thiserror::Error)]
#[error("configuration {} has {} problem(s):\n  {}", path.display(), problems.len(), problems.join("\n  "))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

pub use crate::reconcile::{FieldPrecedence, Policy, RemovalPolicy};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The in-process Paystar simulator (SPEC §10).
    Sandbox,
    Url(String),
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    pub state: StateConfig,
    pub manifests: ManifestsConfig,
    pub paystar: PaystarConfig,
    pub safety: SafetyConfig,
    pub server: ServerConfig,
    pub providers: ProvidersConfig,
    pub history: HistoryConfig,
    /// `telemetry`: where traces go; `None` sends none.
    pub telemetry: Option<TelemetryConfig>,
    /// `console`: the operations console; `None` serves none.
    pub console: Option<ConsoleConfig>,
    /// `ha`: the leader lease; `Some` exactly when the state is on PostgreSQL.
    pub ha: Option<HaConfig>,
    /// `shutdown_grace`: how long every stage may drain on SIGTERM or a reload.
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct HistoryConfig {
    /// How long history lines are kept; `None` keeps everything.
    pub retention: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// `state.reports_dir`: where CSV error reports are written. `None` with the
    /// postgres backend: the errors live only in the database.
    pub reports_dir: Option<PathBuf>,
}

/// `state.backend` and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum StateBackend {
    /// `state.path`: the SQLite file.
    Sqlite {
        path: PathBuf,
    },
    Postgres(PostgresConfig),
}

/// `state.postgres`.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresConfig {
    /// `url_env` or `url_file`: the connection URL may hold a password.
    pub url: SecretSource,
    /// The schema that holds the tables; created if missing.
    pub schema: String,
    /// How many connections the daemon may hold.
    pub pool_size: usize,
    /// `ha.instance_id` (else `HOST-PID`): each session's `application_name`
    /// ends with it, so `pg_stat_activity` shows which instance holds which.
    pub instance_id: String,
    /// Within how long a session must notice a silent network partition (TCP
    /// keepalives and the user timeout are derived from it): `ha.lease_ttl`,
    /// else 30 s.
    pub liveness: Duration,
}

impl StateConfig {
    /// The state's name in messages: the SQLite file, or the PostgreSQL schema.
    pub fn describe(&self) -> String {
        match &self.backend {
            StateBackend::Sqlite { path } => path.display().to_string(),
            StateBackend::Postgres(pg) => format!("postgres schema {}", pg.schema),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ManifestsConfig {
    pub dir: PathBuf,
    pub on_removal: RemovalPolicy,
    pub rescan_interval: Duration,
    pub debounce: Duration,
    /// `manifests.csv.delimiter`; `None`: found per file.
    pub csv_delimiter: Option<u8>,
    /// `manifests.csv.encoding` when it is not UTF-8.
    pub csv_encoding: Option<&'static encoding_rs::Encoding>,
    /// `manifests.xlsx.sheet`.
    pub xlsx_sheet: Option<String>,
    /// `manifests.csv.columns`: field → header name in the files.
    pub csv_columns: Vec<(Field, String)>,
    /// `manifests.max_file_size`: a bigger manifest is a file error.
    pub max_file_size: u64,
}

#[derive(Clone, Debug)]
pub struct PaystarConfig {
    pub endpoint: Endpoint,
    pub api_key: Option<SecretSource>,
    pub default_business_unit: Option<String>,
    /// A fixed `paystar.concurrency`, or where an adaptive one starts.
    pub concurrency: usize,
    /// `paystar.concurrency: adaptive`: the limit is learned, up to this
    /// (`paystar.max_concurrency`).
    pub adaptive: Option<usize>,
    /// `paystar.rate_limit`: the most requests a second, if capped.
    pub rate_limit: Option<rate::RateLimit>,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
}

#[derive(Clone, Debug)]
pub struct SafetyConfig {
    pub max_unenrolls: u64,
    pub max_unenroll_percent: f64,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How long a client may take to send a request's line and headers.
    pub header_read_timeout: Duration,
    /// How long one request may take, reading its body included.
    pub request_timeout: Duration,
}

pub const DEFAULT_RETRY_SCHEDULE: [u64; 10] =
    [1, 5, 30, 120, 600, 1800, 3600, 7200, 21_600, 43_200];
pub const DEFAULT_STOP_CODES: [&str; 14] = [
    "01", "02", "07", "08", "14", "21", "22", "23", "53", "54", "60", "61", "68", "69",
];

impl Config {
    /// The rules every plan computation follows.
    pub fn policy(&self) -> Policy {
        Policy {
            on_removal: self.manifests.on_removal,
            precedence: self
                .providers
                .smarterpay
                .as_ref()
                .map_or(FieldPrecedence::Manifests, |s| s.precedence),
        }
    }

    /// Reads and checks a config file; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            path: path.to_owned(),
            problems: vec![format!(
                "cannot read the file: {err} (pass --config FILE or set PAYSTAR_SYNC_CONFIG)"
            )],
        })?;
        Self::parse(&text, path)
    }

    /// `manifests.dir` must be a folder for a one-shot command (`validate`,
    /// `plan`, `apply`): a missing one is a configuration error (exit 78), not
    /// an empty set of customers. The daemon waits for it instead (git-sync
    /// creates it after the first clone).
    pub fn check_manifests_dir(&self) -> Result<(), ConfigError> {
        let dir = &self.manifests.dir;
        let problem = match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => format!(
                "manifests.dir: {} is not a folder; point manifests.dir at the folder that holds the manifests",
                dir.display()
            ),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
                "manifests.dir: {} does not exist; create it, or point manifests.dir at the folder that holds the manifests",
                dir.display()
            ),
            Err(err) => format!(
                "manifests.dir: {} cannot be read ({err}); it must be readable by {}",
                dir.display(),
                crate::host::user_name()
            ),
        };
        Err(ConfigError {
            path: self.path.clone(),
            problems: vec![problem],
        })
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|err| {
            let at = err
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            fail(vec![format!("{at}not valid YAML: {err}")])
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        // Paths the config names are resolved against its folder, made absolute
        // once here: the folder watch reports absolute paths, and a relative root
        // would match none of them (no scan on a change, no half-written file held back).
        let base = std::path::absolute(&base).unwrap_or(base);
        let mut w = Walker::new(base);
        let config = build(&mut w, &value, path);
        match config {
            Some(config) if w.errors.is_empty() => Ok(config),
            _ => Err(fail(w.errors)),
        }
    }

    /// Every secret the configuration names (for `validate` to check they resolve).
    pub fn secret_sources(&self) -> Vec<&SecretSource> {
        let mut sources: Vec<&SecretSource> = self.paystar.api_key.iter().collect();
        if let StateBackend::Postgres(pg) = &self.state.backend {
            sources.push(&pg.url);
        }
        if let Some(lp) = &self.providers.lotuspay {
            sources.extend(lp.secret_key.iter());
        }
        if let Some(pr) = &self.providers.payroc {
            sources.extend(pr.api_key.iter().chain(pr.webhook_secret.iter()));
        }
        match self
            .providers
            .smarterpay
            .as_ref()
            .and_then(|sp| sp.auth.as_ref())
        {
            Some(SmarterPayAuth::Basic { user, password }) => sources.extend([user, password]),
            Some(SmarterPayAuth::Signature { secret, .. }) => sources.push(secret),
            None => {}
        }
        sources
    }

    /// Reader settings for the manifest stage.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            default_business_unit: self.paystar.default_business_unit.clone(),
            delimiter: self.manifests.csv_delimiter,
            columns: self
                .manifests
                .csv_columns
                .iter()
                .map(|(field, header)| (*field, normalise_header(header)))
                .collect(),
            max_file_size: self.manifests.max_file_size,
            encoding: self.manifests.csv_encoding,
            sheet: self.manifests.xlsx_sheet.clone(),
        }
    }
}

fn build(w: &mut Walker, value: &serde_yaml::Value, path: &Path) -> Option<Config> {
    let root = w.root(
        value,
        &[
            "state",
            "manifests",
            "paystar",
            "safety",
            "server",
            "providers",
            "history",
            "telemetry",
            "console",
            "ha",
            "shutdown_grace",
        ],
    );

    let mut state = state::build(w, &root);

    let m = w.section(
        &root,
        "manifests",
        &[
            "dir",
            "on_removal",
            "rescan_interval",
            "debounce",
            "csv",
            "xlsx",
            "max_file_size",
        ],
    );
    let max_file_size = w
        .size(&m, "max_file_size")
        .unwrap_or(crate::manifest::DEFAULT_MAX_FILE_SIZE);
    let dir = w
        .path(&m, "dir")
        .unwrap_or_else(|| w.base_dir.join("manifests"));
    let on_removal = match w
        .choice(&m, "on_removal", &["ignore", "unenroll"])
        .as_deref()
    {
        Some("unenroll") => RemovalPolicy::Unenroll,
        _ => RemovalPolicy::Ignore,
    };
    let rescan_interval = w
        .duration(&m, "rescan_interval")
        .unwrap_or(Duration::from_secs(300));
    let debounce = w
        .duration(&m, "debounce")
        .unwrap_or(Duration::from_millis(500));
    let csv = w.section(&m, "csv", &["delimiter", "columns", "encoding"]);
    let csv_delimiter = match w.string(&csv, "delimiter") {
        None => None,
        Some(d) if d == "\\t" || d == "tab" || d == "\t" => Some(b'\t'),
        Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" && d != "\n" && d != "\r" => {
            Some(d.as_bytes()[0])
        }
        Some(d) => {
            w.error(
                &format!("{}.delimiter", csv.path),
                format!("{d:?} must be one ASCII character, e.g. \",\" or \";\" (or \"tab\"); leave it out to find each file's delimiter from its header"),
            );
            None
        }
    };
    let csv_encoding = match w.string(&csv, "encoding") {
        None => None,
        Some(label) => match encoding_rs::Encoding::for_label(label.trim().as_bytes()) {
            Some(e) if e == encoding_rs::UTF_8 => None,
            Some(e)
                if e == encoding_rs::UTF_16LE
                    || e == encoding_rs::UTF_16BE
                    || e == encoding_rs::REPLACEMENT =>
            {
                w.error(
                    &format!("{}.encoding", csv.path),
                    format!("{label:?} cannot be set here: UTF-16 files are read by their byte order mark; name a single-byte encoding such as windows-1252"),
                );
                None
            }
            Some(e) => Some(e),
            None => {
                w.error(
                    &format!("{}.encoding", csv.path),
                    format!("{label:?} is not an encoding name; use a WHATWG label such as utf-8, windows-1252, iso-8859-15 or shift_jis"),
                );
                None
            }
        },
    };
    let xlsx = w.section(&m, "xlsx", &["sheet"]);
    let xlsx_sheet = w.string(&xlsx, "sheet");
    let mut csv_columns = Vec::new();
    for (field, header) in w.string_map(&csv, "columns").unwrap_or_default() {
        match Field::from_name(&field) {
            Some(f) => csv_columns.push((f, header)),
            None => {
                let hint =
                    crate::suggest::did_you_mean(&field, Field::ALL.iter().map(|f| f.name()))
                        .map(|f| format!("; did you mean {f}?"))
                        .unwrap_or_default();
                w.error(
                    &format!("{}.columns.{field}", csv.path),
                    format!("is not a customer field{hint}"),
                );
            }
        }
    }

    let p = w.section(
        &root,
        "paystar",
        &[
            "endpoint",
            "api_key",
            "api_key_env",
            "api_key_file",
            "default_business_unit",
            "concurrency",
            "max_concurrency",
            "rate_limit",
            "timeout",
            "retry",
        ],
    );
    let endpoint = match w.string(&p, "endpoint") {
        None => Endpoint::Url("https://dev-gateway.paystar.io/integrations/events".into()),
        Some(e) if e == "sandbox" => Endpoint::Sandbox,
        Some(e) => {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                w.error(
                    "paystar.endpoint",
                    format!("{e:?} must be an http(s) URL or \"sandbox\""),
                );
            }
            Endpoint::Url(e)
        }
    };
    let api_key = w.secret(&p, "api_key");
    let default_business_unit = w
        .string(&p, "default_business_unit")
        .filter(|s| !s.trim().is_empty());
    // `adaptive` (the default: learned, starting from 8 or the last learned
    // limit), or a fixed number.
    let max_concurrency = w.uint(&p, "max_concurrency", 1, 4096).unwrap_or(256) as usize;
    let (concurrency, adaptive) = match w.string(&p, "concurrency") {
        Some(text) if text.trim() != "adaptive" => (
            w.uint(&p, "concurrency", 1, 1024).unwrap_or(8) as usize,
            None,
        ),
        _ => (8, Some(max_concurrency)),
    };
    let rate_limit = w.string(&p, "rate_limit").and_then(|text| {
        rate::parse(&text)
            .map_err(|m| w.error("paystar.rate_limit", m))
            .ok()
    });
    let timeout = w.duration(&p, "timeout").unwrap_or(Duration::from_secs(30));
    let retry = w.section(&p, "retry", &["schedule"]);
    let retry_schedule = w.durations(&retry, "schedule").unwrap_or_else(|| {
        DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect()
    });

    let s = w.section(&root, "safety", &["max_unenrolls", "max_unenroll_percent"]);
    let safety = SafetyConfig {
        max_unenrolls: w.uint(&s, "max_unenrolls", 0, u64::MAX).unwrap_or(50),
        max_unenroll_percent: w
            .number(&s, "max_unenroll_percent", 0.0, 100.0)
            .unwrap_or(5.0),
    };

    let srv = w.section(
        &root,
        "server",
        &["listen", "header_read_timeout", "request_timeout"],
    );
    let listen = match w.string(&srv, "listen") {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(text) => SocketAddr::from_str(&text).unwrap_or_else(|_| {
            w.error(
                "server.listen",
                format!("{text:?} is not an address:port such as 127.0.0.1:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }),
    };

    let shutdown_grace = w
        .duration(&root, "shutdown_grace")
        .unwrap_or(Duration::from_secs(10));
    if shutdown_grace > Duration::from_secs(25) {
        w.error(
            "shutdown_grace",
            "must be at most 25s: the service unit's TimeoutStopSec is 30s, and systemd kills what is still running then",
        );
    }
    let providers = providers::providers(w, &root, Some(endpoint.clone()));
    let h = w.section(&root, "history", &["retention"]);
    let history = HistoryConfig {
        retention: w.duration(&h, "retention"),
    };
    let telemetry = telemetry::build(w, &root);
    let console = console::build(w, &root, listen);
    let ha = ha::build(w, &root, &state);
    if let (StateBackend::Postgres(pg), Some(ha)) = (&mut state.backend, &ha) {
        if let Some(id) = &ha.instance_id {
            pg.instance_id = id.clone();
        }
        pg.liveness = ha.lease_ttl;
    }

    Some(Config {
        path: path.to_owned(),
        state,
        manifests: ManifestsConfig {
            dir,
            on_removal,
            rescan_interval,
            debounce,
            csv_delimiter,
            csv_encoding,
            xlsx_sheet,
            csv_columns,
            max_file_size,
        },
        paystar: PaystarConfig {
            endpoint,
            api_key,
            default_business_unit,
            concurrency,
            adaptive,
            rate_limit,
            timeout,
            retry_schedule,
        },
        safety,
        server: ServerConfig {
            listen,
            header_read_timeout: w
                .duration(&srv, "header_read_timeout")
                .unwrap_or(Duration::from_secs(10)),
            request_timeout: w
                .duration(&srv, "request_timeout")
                .unwrap_or(Duration::from_secs(30)),
        },
        providers,
        history,
        telemetry,
        console,
        ha,
        shutdown_grace,
    })
}
