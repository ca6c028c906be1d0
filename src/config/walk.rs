//! A checker over the parsed YAML that collects every error with its key path,
//! so one run reports all problems in a config file at once.

use super::duration;
use super::secret::SecretSource;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One level of the config file.
pub struct Section<'v> {
    pub path: String,
    pub map: Option<&'v Mapping>,
}

pub struct Walker {
    pub errors: Vec<String>,
    /// Relative paths in the file are relative to the file's directory.
    pub base_dir: PathBuf,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Walker {
    pub fn new(base_dir: PathBuf) -> Self {
        Self {
            errors: Vec::new(),
            base_dir,
        }
    }

    pub fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {message}"));
    }

    /// The root section; reports keys outside `known`.
    pub fn root<'v>(&mut self, value: &'v Value, known: &[&str]) -> Section<'v> {
        match value {
            Value::Mapping(map) => {
                self.check_keys("", map, known);
                Section {
                    path: String::new(),
                    map: Some(map),
                }
            }
            Value::Null => Section {
                path: String::new(),
                map: None,
            },
            _ => {
                self.errors
                    .push("the config file must be a YAML mapping of sections".into());
                Section {
                    path: String::new(),
                    map: None,
                }
            }
        }
    }

    fn check_keys(&mut self, path: &str, map: &Mapping, known: &[&str]) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => {
                    let hint = crate::suggest::did_you_mean(k, known.iter().copied())
                        .map(|c| format!("; did you mean {c}?"))
                        .unwrap_or_default();
                    self.error(
                        &join(path, k),
                        format!("unknown key{hint} (expected one of: {})", known.join(", ")),
                    );
                }
                None => self.error(path, format!("key {key:?} must be a string")),
            }
        }
    }

    fn get<'v>(&self, s: &Section<'v>, key: &str) -> Option<&'v Value> {
        s.map?.get(key).filter(|v| !v.is_null())
    }

    pub fn section<'v>(&mut self, s: &Section<'v>, key: &str, known: &[&str]) -> Section<'v> {
        let path = join(&s.path, key);
        match self.get(s, key) {
            None => Section { path, map: None },
            Some(Value::Mapping(map)) => {
                self.check_keys(&path, map, known);
                Section {
                    path,
                    map: Some(map),
                }
            }
            Some(_) => {
                self.error(&path, "must be a mapping");
                Section { path, map: None }
            }
        }
    }

    pub fn present(&self, s: &Section<'_>, key: &str) -> bool {
        self.get(s, key).is_some()
    }

    pub fn string(&mut self, s: &Section<'_>, key: &str) -> Option<String> {
        match self.get(s, key)? {
            Value::String(v) => Some(v.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.error(&join(&s.path, key), "must be a string");
                None
            }
        }
    }

    pub fn path(&mut self, s: &Section<'_>, key: &str) -> Option<PathBuf> {
        let text = self.string(s, key)?;
        if text.trim().is_empty() {
            self.error(&join(&s.path, key), "must not be empty");
            return None;
        }
        let path = Path::new(text.trim());
        Some(if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        })
    }

    pub fn duration(&mut self, s: &Section<'_>, key: &str) -> Option<Duration> {
        let value = self.get(s, key)?;
        self.duration_value(&join(&s.path, key), value)
    }

    fn duration_value(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let Some(text) = value.as_str() else {
            self.error(
                path,
                format!(
                    "{} is not a duration (write 500ms, 30s, 5m or 2h)",
                    render(value)
                ),
            );
            return None;
        };
        match duration::parse(text) {
            Ok(d) => Some(d),
            Err(reason) => {
                self.error(path, reason);
                None
            }
        }
    }

    pub fn size(&mut self, s: &Section<'_>, key: &str) -> Option<u64> {
        let path = join(&s.path, key);
        let value = self.get(s, key)?;
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                self.error(
                    &path,
                    format!(
                        "{} is not a size (write 512KiB, 256MiB or 1GiB)",
                        render(other)
                    ),
                );
                return None;
            }
        };
        match super::size::parse(&text) {
            Ok(n) => Some(n),
            Err(reason) => {
                self.error(&path, reason);
                None
            }
        }
    }

    pub fn durations(&mut self, s: &Section<'_>, key: &str) -> Option<Vec<Duration>> {
        let path = join(&s.path, key);
        match self.get(s, key)? {
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(d) = self.duration_value(&format!("{path}[{i}]"), item) {
                        out.push(d);
                    }
                }
                (out.len() == items.len()).then_some(out)
            }
            _ => {
                self.error(&path, "must be a list of durations, e.g. [1s, 5s, 30s]");
                None
            }
        }
    }

    pub fn strings(&mut self, s: &Section<'_>, key: &str) -> Option<Vec<String>> {
        let path = join(&s.path, key);
        match self.get(s, key)? {
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(v) => out.push(v.clone()),
                        other => self.error(
                            &format!("{path}[{i}]"),
                            format!("{} must be a quoted string", render(other)),
                        ),
                    }
                }
                (out.len() == items.len()).then_some(out)
            }
            _ => {
                self.error(&path, "must be a list of strings");
                None
            }
        }
    }

    pub fn string_map(&mut self, s: &Section<'_>, key: &str) -> Option<Vec<(String, String)>> {
        let path = join(&s.path, key);
        match self.get(s, key)? {
            Value::Mapping(map) => {
                let mut out = Vec::new();
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        (Some(k), Some(v)) => out.push((k.to_owned(), v.to_owned())),
                        _ => self.error(
                            &path,
                            format!(
                                "{} -> {} must map a string to a string",
                                render(k),
                                render(v)
                            ),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                self.error(&path, "must be a mapping of names to names");
                None
            }
        }
    }

    pub fn uint(&mut self, s: &Section<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.get(s, key)?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    &join(&s.path, key),
                    format!(
                        "{} must be a whole number from {min} to {max}",
                        render(value)
                    ),
                );
                None
            }
        }
    }

    pub fn number(&mut self, s: &Section<'_>, key: &str, min: f64, max: f64) -> Option<f64> {
        let value = self.get(s, key)?;
        match value.as_f64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    &join(&s.path, key),
                    format!("{} must be a number from {min} to {max}", render(value)),
                );
                None
            }
        }
    }

    /// One of `choices`.
    pub fn choice(&mut self, s: &Section<'_>, key: &str, choices: &[&str]) -> Option<String> {
        let text = self.string(s, key)?;
        if choices.contains(&text.as_str()) {
            Some(text)
        } else {
            self.error(
                &join(&s.path, key),
                format!("{text:?} is not one of: {}", choices.join(", ")),
            );
            None
        }
    }

    /// A secret given as `<base>_env` or `<base>_file`; `<base>` itself (inline) is refused.
    pub fn secret(&mut self, s: &Section<'_>, base: &str) -> Option<SecretSource> {
        let env_key = format!("{base}_env");
        let file_key = format!("{base}_file");
        if self.present(s, base) {
            self.error(
                &join(&s.path, base),
                format!(
                    "secrets may not be written in the config file; use {} (an environment variable) or {} (a file, e.g. from systemd LoadCredential=)",
                    join(&s.path, &env_key),
                    join(&s.path, &file_key)
                ),
            );
            return None;
        }
        let env = self.string(s, &env_key);
        let file = self.path(s, &file_key);
        match (env, file) {
            (Some(_), Some(_)) => {
                self.error(&s.path, format!("set {env_key} or {file_key}, not both"));
                None
            }
            (Some(var), None) => Some(SecretSource::Env {
                key: join(&s.path, &env_key),
                var,
            }),
            (None, Some(path)) => Some(SecretSource::File {
                key: join(&s.path, &file_key),
                path,
            }),
            (None, None) => None,
        }
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}
