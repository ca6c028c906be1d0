//! Secrets come only from environment variables or files, and never print.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from, and the config key that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env { key: String, var: String },
    File { key: String, path: PathBuf },
}

impl SecretSource {
    /// The config key that names this secret, for error messages.
    pub fn key(&self) -> &str {
        match self {
            SecretSource::Env { key, .. } | SecretSource::File { key, .. } => key,
        }
    }

    /// Reads the secret. `env` is the injected environment lookup.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
        match self {
            SecretSource::Env { key, var } => match env(var) {
                Some(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
                _ => Err(format!(
                    "{key}: environment variable {var} is not set or empty"
                )),
            },
            SecretSource::File { key, path } => match std::fs::read_to_string(path) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
                Ok(_) => Err(format!("{key}: {} is empty", path.display())),
                Err(err) => Err(format!("{key}: cannot read {}: {err}", path.display())),
            },
        }
    }
}

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
