//! The `providers` section: LotusPay, Payroc (with its pause rule) and SmarterPay.

use super::walk::{self, Walker};
use super::*;

#[derive(Clone, Debug, Default)]
pub struct ProvidersConfig {
    pub lotuspay: Option<LotusPayConfig>,
    pub payroc: Option<PayrocConfig>,
    pub smarterpay: Option<SmarterPayConfig>,
}

/// Where LotusPay's API is: a URL, or the in-process simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LotusPayBase {
    /// `base_url: sandbox`: served by the daemon with `paystar.endpoint: sandbox`.
    Sandbox,
    Url(String),
}

#[derive(Clone, Debug)]
pub struct LotusPayConfig {
    pub base_url: LotusPayBase,
    pub secret_key: Option<SecretSource>,
    pub schedule: cron::Schedule,
    pub business_unit: Option<String>,
    pub account_path: String,
    pub sub_account_path: String,
    pub return_code_path: String,
    pub stop_codes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct PayrocConfig {
    pub identity_url: String,
    pub api_url: String,
    pub api_key: Option<SecretSource>,
    pub webhook_secret: Option<SecretSource>,
    pub subscription: Option<PayrocSubscription>,
    pub pause: Option<PayrocPause>,
}

/// `providers.payroc.pause`: which Payroc processing-account statuses pause
/// delivery to Paystar for which business units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayrocPause {
    pub business_units: Vec<String>,
    /// `processingAccount.status.changed` statuses that pause.
    pub statuses: Vec<String>,
    /// Only these processing accounts' events count; `None`: every account's.
    pub processing_accounts: Option<Vec<String>>,
}

/// Payroc's documented processing-account statuses.
pub const PAYROC_ACCOUNT_STATUSES: [&str; 9] = [
    "entered",
    "pending",
    "approved",
    "subjectTo",
    "dormant",
    "nonProcessing",
    "rejected",
    "terminated",
    "cancelled",
];
pub const DEFAULT_PAUSE_STATUSES: [&str; 3] = ["rejected", "terminated", "cancelled"];

#[derive(Clone, Debug)]
pub struct PayrocSubscription {
    pub event_types: Vec<String>,
    pub uri: String,
    pub support_email: String,
}

#[derive(Clone, Debug)]
pub enum SmarterPayAuth {
    Basic {
        user: SecretSource,
        password: SecretSource,
    },
    Signature {
        secret: SecretSource,
        header: String,
    },
}

#[derive(Clone, Debug)]
pub struct SmarterPayConfig {
    pub auth: Option<SmarterPayAuth>,
    pub business_unit: Option<String>,
    pub account_field: String,
    pub precedence: FieldPrecedence,
}

fn url(w: &mut Walker, s: &walk::Section<'_>, key: &str, default: &str) -> String {
    let value = w.string(s, key).unwrap_or_else(|| default.to_owned());
    if !(value.starts_with("https://") || value.starts_with("http://")) {
        w.error(
            &format!("{}.{key}", s.path),
            format!("{value:?} must be an http(s) URL"),
        );
    }
    value
}

fn payroc_pause(w: &mut Walker, pr: &walk::Section<'_>) -> Option<PayrocPause> {
    let s = w.section(
        pr,
        "pause",
        &["business_units", "statuses", "processing_accounts"],
    );
    s.map?;
    let business_units = w.strings(&s, "business_units").unwrap_or_default();
    if business_units.is_empty() {
        w.error(
            &format!("{}.business_units", s.path),
            "list the business units whose delivery a Payroc event may pause, e.g. [water-bill-pay]",
        );
    }
    let statuses = w
        .strings(&s, "statuses")
        .unwrap_or_else(|| DEFAULT_PAUSE_STATUSES.map(str::to_owned).to_vec());
    for (i, status) in statuses.iter().enumerate() {
        if !PAYROC_ACCOUNT_STATUSES.contains(&status.as_str()) {
            w.error(
                &format!("{}.statuses[{i}]", s.path),
                format!(
                    "{status:?} is not a Payroc processing-account status; use one of {}",
                    PAYROC_ACCOUNT_STATUSES.join(", ")
                ),
            );
        }
    }
    let processing_accounts = w.strings(&s, "processing_accounts");
    Some(PayrocPause {
        business_units,
        statuses,
        processing_accounts,
    })
}

pub(super) fn providers(
    w: &mut Walker,
    root: &walk::Section<'_>,
    endpoint: Option<Endpoint>,
) -> ProvidersConfig {
    let p = w.section(root, "providers", &["lotuspay", "payroc", "smarterpay"]);
    let mut out = ProvidersConfig::default();

    let lp = w.section(
        &p,
        "lotuspay",
        &[
            "base_url",
            "secret_key",
            "secret_key_env",
            "secret_key_file",
            "schedule",
            "business_unit",
            "account_path",
            "sub_account_path",
            "return_code_path",
            "stop_codes",
        ],
    );
    if lp.map.is_some() {
        let text = w
            .string(&lp, "schedule")
            .unwrap_or_else(|| "0 */5 * * * *".into());
        let schedule = cron::Schedule::from_str(&text).unwrap_or_else(|err| {
            w.error(
                &format!("{}.schedule", lp.path),
                format!("{text:?} is not a cron expression ({err}); the seconds field comes first, e.g. \"0 */5 * * * *\""),
            );
            cron::Schedule::from_str("0 */5 * * * *").expect("the default schedule parses")
        });
        if schedule.upcoming(chrono::Utc).next().is_none() {
            w.error(
                &format!("{}.schedule", lp.path),
                format!("{text:?} never runs again; give a schedule with future runs"),
            );
        }
        let path_key = |w: &mut Walker, key: &str, default: &str| {
            let value = w.string(&lp, key).unwrap_or_else(|| default.to_owned());
            if value.split('.').any(str::is_empty) {
                w.error(&format!("{}.{key}", lp.path), format!("{value:?} must be a dotted path such as data.object.metadata.paystar_account_number"));
            }
            value
        };
        out.lotuspay = Some(LotusPayConfig {
            base_url: match w.string(&lp, "base_url").as_deref() {
                // The in-process simulator (needs paystar.endpoint: sandbox).
                Some("sandbox") => {
                    if endpoint != Some(Endpoint::Sandbox) {
                        w.error(
                            &format!("{}.base_url", lp.path),
                            "`sandbox` is served by the daemon only with paystar.endpoint: sandbox",
                        );
                    }
                    LotusPayBase::Sandbox
                }
                _ => LotusPayBase::Url(url(w, &lp, "base_url", "https://api-test.lotuspay.com/v1")),
            },
            secret_key: w.secret(&lp, "secret_key"),
            schedule,
            business_unit: w.string(&lp, "business_unit"),
            account_path: path_key(
                w,
                "account_path",
                "data.object.metadata.paystar_account_number",
            ),
            sub_account_path: path_key(
                w,
                "sub_account_path",
                "data.object.metadata.paystar_sub_account_number",
            ),
            return_code_path: path_key(w, "return_code_path", "data.object.response_code"),
            stop_codes: w
                .strings(&lp, "stop_codes")
                .unwrap_or_else(|| DEFAULT_STOP_CODES.iter().map(|c| (*c).to_owned()).collect()),
        });
    }

    let pr = w.section(
        &p,
        "payroc",
        &[
            "identity_url",
            "api_url",
            "api_key",
            "api_key_env",
            "api_key_file",
            "webhook_secret",
            "webhook_secret_env",
            "webhook_secret_file",
            "subscription",
            "pause",
        ],
    );
    if pr.map.is_some() {
        let sub = w.section(
            &pr,
            "subscription",
            &["event_types", "uri", "support_email"],
        );
        let subscription = sub.map.is_some().then(|| {
            let uri = w.string(&sub, "uri").unwrap_or_default();
            if !uri.starts_with("https://") && !uri.starts_with("http://") {
                w.error(
                    &format!("{}.uri", sub.path),
                    "must be the public http(s) URL of /webhooks/payroc",
                );
            }
            let support_email = w.string(&sub, "support_email").unwrap_or_default();
            if crate::manifest::fields::check_email(&support_email).is_err() {
                w.error(
                    &format!("{}.support_email", sub.path),
                    "must be an email address",
                );
            }
            PayrocSubscription {
                event_types: w
                    .strings(&sub, "event_types")
                    .unwrap_or_else(|| vec!["processingAccount.status.changed".into()]),
                uri,
                support_email,
            }
        });
        out.payroc = Some(PayrocConfig {
            identity_url: url(
                w,
                &pr,
                "identity_url",
                "https://identity.uat.payroc.com/authorize",
            ),
            api_url: url(w, &pr, "api_url", "https://api.uat.payroc.com/v1"),
            api_key: w.secret(&pr, "api_key"),
            webhook_secret: w.secret(&pr, "webhook_secret"),
            subscription,
            pause: payroc_pause(w, &pr),
        });
        if let Some(pr_out) = &out.payroc
            && pr_out.pause.is_some()
            && pr_out.webhook_secret.is_none()
        {
            w.error(
                &format!("{}.pause", pr.path),
                "acts on Payroc's webhooks: set providers.payroc.webhook_secret_env (or _file) too",
            );
        }
    }

    let sp = w.section(
        &p,
        "smarterpay",
        &["auth", "business_unit", "account_field", "precedence"],
    );
    if sp.map.is_some() {
        let auth = w.section(
            &sp,
            "auth",
            &[
                "basic_user",
                "basic_user_env",
                "basic_user_file",
                "basic_password",
                "basic_password_env",
                "basic_password_file",
                "signature_secret",
                "signature_secret_env",
                "signature_secret_file",
                "signature_header",
            ],
        );
        let user = w.secret(&auth, "basic_user");
        let password = w.secret(&auth, "basic_password");
        let signature = w.secret(&auth, "signature_secret");
        let header = w
            .string(&auth, "signature_header")
            .unwrap_or_else(|| "X-Signature".into());
        let auth = match (user, password, signature) {
            (Some(user), Some(password), None) => Some(SmarterPayAuth::Basic { user, password }),
            (None, None, Some(secret)) => Some(SmarterPayAuth::Signature { secret, header }),
            (None, None, None) => {
                w.error(&auth.path, "set basic_user_env + basic_password_env, or signature_secret_env: webhooks are never accepted unauthenticated");
                None
            }
            _ => {
                w.error(&auth.path, "use either Basic (basic_user_* and basic_password_*) or a signature secret, not a mix");
                None
            }
        };
        let precedence = match w
            .choice(&sp, "precedence", &["manifests", "over_manifests"])
            .as_deref()
        {
            Some("over_manifests") => FieldPrecedence::Provider,
            _ => FieldPrecedence::Manifests,
        };
        out.smarterpay = Some(SmarterPayConfig {
            auth,
            business_unit: w.string(&sp, "business_unit"),
            account_field: w
                .choice(&sp, "account_field", &["reference", "custom_reference"])
                .unwrap_or_else(|| "reference".into()),
            precedence,
        });
    }
    out
}
