//! Located manifest errors: every one names the file, the line when known, and
//! what to do.

use serde::Serialize;
use std::fmt;

/// How much an error rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The whole file is skipped; every record it held keeps its previous state.
    File,
    /// One row is skipped; its key keeps its previous state.
    Row,
    /// The same key appears more than once; every occurrence is rejected.
    Duplicate,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::File => "file",
            ErrorKind::Row => "row",
            ErrorKind::Duplicate => "duplicate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "file" => Some(ErrorKind::File),
            "row" => Some(ErrorKind::Row),
            "duplicate" => Some(ErrorKind::Duplicate),
            _ => None,
        }
    }
}

/// One problem in one manifest file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// Path relative to `manifests.dir`, with `/` separators.
    pub file: String,
    pub line: Option<u32>,
    #[serde(rename = "accountNumber")]
    pub account: Option<String>,
    pub field: Option<String>,
    pub kind: ErrorKind,
    pub reason: String,
}

impl ManifestError {
    pub fn file(file: &str, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            account: None,
            field: None,
            kind: ErrorKind::File,
            reason: reason.into(),
        }
    }

    pub fn at_line(mut self, line: u32) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}
