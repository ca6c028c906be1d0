//! Resolves a [`Config`] into what the stages need: every secret read, every
//! provider's business unit known. `validate`, startup and reload all call
//! [`resolve`], which reports every problem at once with its key; nothing is
//! started here.

use crate::config::{Config, ConfigError, Endpoint, LotusPayBase, Secret, SmarterPayAuth};
use crate::providers::lotuspay::LotusPay;
use crate::providers::payroc::{PayrocApi, PayrocReceiver};
use crate::providers::smarterpay::{Auth, SmarterPay};
use crate::sandbox::RunningSandbox;

/// Everything a configuration's stages need, checked.
pub struct Resolved {
    /// `None` for `paystar.endpoint: sandbox`.
    pub paystar_key: Option<Secret>,
    pub lotuspay: Option<LotusPayWiring>,
    pub payroc_subscription: Option<PayrocSubscriptionWiring>,
    pub payroc_receiver: Option<PayrocReceiver>,
    pub smarterpay: Option<SmarterPay>,
    /// `console.auth`'s token; `None` for a read-only console or none.
    pub console_token: Option<Secret>,
}

pub struct LotusPayWiring {
    config: crate::config::LotusPayConfig,
    secret: Secret,
    business_unit: String,
}

impl LotusPayWiring {
    pub fn schedule(&self) -> &cron::Schedule {
        &self.config.schedule
    }

    /// The poller; `sandbox` serves `base_url: sandbox`.
    pub fn poller(&self, sandbox: Option<&RunningSandbox>) -> anyhow::Result<LotusPay> {
        let base_url = match (&self.config.base_url, sandbox) {
            (LotusPayBase::Url(url), _) => url.clone(),
            (LotusPayBase::Sandbox, Some(running)) => running.lotuspay_base_url(),
            (LotusPayBase::Sandbox, None) => anyhow::bail!(
                "providers.lotuspay.base_url: `sandbox` needs the in-process sandbox (paystar.endpoint: sandbox)"
            ),
        };
        Ok(LotusPay::new(
            &self.config,
            &base_url,
            self.secret.clone(),
            self.business_unit.clone(),
        )?)
    }
}

pub struct PayrocSubscriptionWiring {
    pub api: PayrocApi,
    pub declared: crate::config::PayrocSubscription,
    pub secret: Secret,
}

/// Resolves `config` with the environment `env`; every problem is reported, each
/// with its config key.
pub fn resolve(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigError> {
    let mut problems: Vec<String> = Vec::new();
    let paystar_key = paystar_key(config, env)
        .map_err(|e| problems.extend(e.problems))
        .ok()
        .flatten();
    let mut secret = |source: Option<&crate::config::SecretSource>, missing: &str| {
        let resolved = match source {
            Some(source) => source.resolve(env),
            None => Err(missing.to_owned()),
        };
        resolved.map_err(|p| problems.push(p)).ok()
    };

    let lotuspay = config.providers.lotuspay.as_ref().and_then(|lp| {
        let key = match (&lp.secret_key, &lp.base_url) {
            (None, LotusPayBase::Sandbox) => Some(Secret::new("sandbox")),
            (source, _) => secret(
                source.as_ref(),
                "providers.lotuspay: set secret_key_env or secret_key_file",
            ),
        };
        Some((lp, key?))
    });

    let payroc = config.providers.payroc.as_ref();
    let payroc_subscription = payroc.and_then(|pr| {
        let declared = pr.subscription.as_ref()?;
        let api_key = secret(
            pr.api_key.as_ref(),
            "providers.payroc: set api_key_env or api_key_file to manage the subscription",
        );
        let hook = secret(
            pr.webhook_secret.as_ref(),
            "providers.payroc: set webhook_secret_env or webhook_secret_file to manage the subscription",
        );
        Some((pr, declared, api_key?, hook?))
    });
    let payroc_receiver = payroc.and_then(|pr| {
        let source = pr.webhook_secret.as_ref()?;
        let resolved = match pr.subscription {
            // Already reported above when it does not resolve.
            Some(_) => source.resolve(env).ok(),
            None => secret(Some(source), ""),
        };
        Some(PayrocReceiver {
            secret: resolved?,
            pause: pr.pause.clone(),
        })
    });

    let smarterpay = config.providers.smarterpay.as_ref().and_then(|sp| {
        let auth = match sp.auth.as_ref()? {
            SmarterPayAuth::Basic { user, password } => {
                let user = secret(Some(user), "");
                let password = secret(Some(password), "");
                Auth::Basic {
                    user: user?,
                    password: password?,
                }
            }
            SmarterPayAuth::Signature { secret: s, header } => Auth::Signature {
                secret: secret(Some(s), "")?,
                header: header.clone(),
            },
        };
        Some((sp, auth))
    });

    let console_token = config
        .console
        .as_ref()
        .and_then(|c| c.token.as_ref())
        .and_then(|source| secret(Some(source), "").map(|token| (source, token)));
    let console_token = console_token.and_then(|(source, token)| {
            if token.expose().chars().count() < crate::config::MIN_TOKEN_LEN {
                problems.push(format!(
                    "{}: the console token is shorter than {} characters; use a long random one, e.g. `openssl rand -hex 32`",
                    source.key(),
                    crate::config::MIN_TOKEN_LEN
                ));
                return None;
            }
            Some(token)
    });

    let mut unit = |own: &Option<String>, provider: &str| {
        let found = own
            .clone()
            .or_else(|| config.paystar.default_business_unit.clone());
        if found.is_none() {
            problems.push(format!(
                "providers.{provider}.business_unit: set it, or paystar.default_business_unit"
            ));
        }
        found
    };
    let lotuspay = lotuspay.and_then(|(lp, secret)| {
        Some(LotusPayWiring {
            business_unit: unit(&lp.business_unit, "lotuspay")?,
            config: lp.clone(),
            secret,
        })
    });
    let smarterpay = smarterpay.and_then(|(sp, auth)| {
        Some(SmarterPay {
            auth,
            account_field: sp.account_field.clone(),
            business_unit: unit(&sp.business_unit, "smarterpay")?,
        })
    });
    let payroc_subscription = match payroc_subscription {
        Some((pr, declared, api_key, secret)) => {
            match PayrocApi::new(&pr.identity_url, &pr.api_url, api_key) {
                Ok(api) => Some(PayrocSubscriptionWiring {
                    api,
                    declared: declared.clone(),
                    secret,
                }),
                Err(err) => {
                    problems.push(format!(
                        "providers.payroc: cannot build its HTTP client: {err}"
                    ));
                    None
                }
            }
        }
        None => None,
    };

    if !problems.is_empty() {
        return Err(ConfigError {
            path: config.path.clone(),
            problems,
        });
    }
    Ok(Resolved {
        paystar_key,
        lotuspay,
        payroc_subscription,
        payroc_receiver,
        smarterpay,
        console_token,
    })
}

/// Only Paystar's API key (`apply` needs nothing else); `None` for the sandbox.
pub fn paystar_key(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let problem = |p: String| ConfigError {
        path: config.path.clone(),
        problems: vec![p],
    };
    match (&config.paystar.endpoint, &config.paystar.api_key) {
        (Endpoint::Sandbox, _) => Ok(None),
        (Endpoint::Url(_), Some(source)) => source.resolve(env).map(Some).map_err(problem),
        (Endpoint::Url(_), None) => Err(problem(
            "paystar: set api_key_env or api_key_file: sending to Paystar needs an API key".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(providers: &str) -> Config {
        let text = format!(
            "paystar: {{ endpoint: \"https://example.invalid/events\", api_key_env: KEY }}\nproviders:\n{providers}"
        );
        Config::parse(&text, Path::new("/etc/paystar-sync/config.yaml")).expect("parses")
    }

    #[test]
    fn every_missing_secret_and_business_unit_is_reported_at_once_with_its_key() {
        let config = config(
            "  smarterpay: { auth: { basic_user_env: SP_USER, basic_password_env: SP_PASSWORD } }\n  lotuspay: { secret_key_env: LP }\n",
        );
        let err = resolve(&config, &|_| None).err().expect("problems");
        let text = err.problems.join("\n");
        for needle in ["KEY", "SP_USER", "SP_PASSWORD", "LP"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let err = resolve(&config, &|_| Some("x".into()))
            .err()
            .expect("problems");
        assert_eq!(
            err.problems,
            [
                "providers.lotuspay.business_unit: set it, or paystar.default_business_unit",
                "providers.smarterpay.business_unit: set it, or paystar.default_business_unit"
            ]
        );
    }
}
