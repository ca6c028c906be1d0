//! What a table's columns mean, for CSV and XLSX alike: the header found among
//! the first lines and mapped to fields, and each row's values built into a
//! customer through that mapping.

use super::build::{RawRow, Rejected, RowContext, build};
use super::error::{ErrorKind, ManifestError};
use super::fields::{Field, normalise_header};
use super::row::ManifestRow;
use super::{ParseOptions, ParsedFile};

/// The header is looked for on the first this many lines that hold anything.
pub const HEADER_WITHIN: usize = 10;

#[derive(Clone, Debug)]
pub struct Columns {
    mapped: Vec<(usize, Field)>,
    unknown: Vec<String>,
    /// How many columns the header names.
    width: usize,
}

/// Offered the first lines of a table one at a time, finds the header: the
/// first line that holds every required column after mapping. Lines above it
/// are skipped with a warning; if none of the first [`HEADER_WITHIN`] lines is a
/// header, the first line's problem is the file's error.
pub struct HeaderSearch<'a> {
    file: &'a str,
    opts: &'a ParseOptions,
    first_error: Option<ManifestError>,
    /// Lines offered before the header, which were not it.
    skipped: Vec<u32>,
    offered: usize,
}

/// What one offered line turned out to be.
pub enum Found {
    Header(Columns, ParsedFile),
    /// Not the header: offer the next line, if there is one.
    NotYet,
    /// The search is over without a header.
    Failed(ManifestError),
}

impl<'a> HeaderSearch<'a> {
    pub fn new(file: &'a str, opts: &'a ParseOptions) -> Self {
        Self {
            file,
            opts,
            first_error: None,
            skipped: Vec::new(),
            offered: 0,
        }
    }

    /// Offers line `line`, whose cells are `names` (or the error that stopped
    /// them from being read as text).
    pub fn offer(&mut self, names: Result<&[&str], ManifestError>, line: u32) -> Found {
        self.offered += 1;
        let attempt = names.and_then(|names| map_header(names, line, self.file, self.opts));
        match attempt {
            Ok(columns) => {
                let mut parsed = ParsedFile::default();
                if !self.skipped.is_empty() {
                    parsed.warnings.push(self.skipped_warning(line));
                }
                if let Some(warning) = columns.unknown_warning(self.file) {
                    parsed.warnings.push(warning);
                }
                Found::Header(columns, parsed)
            }
            Err(error) => {
                self.skipped.push(line);
                self.first_error.get_or_insert(error);
                if self.offered >= HEADER_WITHIN {
                    Found::Failed(self.end())
                } else {
                    Found::NotYet
                }
            }
        }
    }

    /// The file's error when the lines ran out before a header was found.
    pub fn end(&mut self) -> ManifestError {
        self.first_error.take().unwrap_or_else(|| {
            ManifestError::file(
                self.file,
                "is empty; an empty file never removes customers (add a header row and rows, or delete the file)",
            )
        })
    }

    fn skipped_warning(&self, header_line: u32) -> String {
        let lines: Vec<String> = self.skipped.iter().map(u32::to_string).collect();
        format!(
            "{}: line(s) {} above the header (line {header_line}) are not customers and were skipped; delete them if that is not what you meant",
            self.file,
            lines.join(", ")
        )
    }
}

impl Columns {
    /// One warning per file for columns that mean no customer field.
    fn unknown_warning(&self, file: &str) -> Option<String> {
        if self.unknown.is_empty() {
            return None;
        }
        let close: Vec<String> = self
            .unknown
            .iter()
            .filter_map(|name| {
                let field = crate::suggest::did_you_mean(
                    &normalise_header(name),
                    Field::ALL.iter().map(|f| f.name()),
                )?;
                Some(format!(
                    "if {name:?} is {field}, rename it or map it with manifests.csv.columns"
                ))
            })
            .collect();
        let names: Vec<String> = self.unknown.iter().map(|n| format!("{n:?}")).collect();
        let mut warning = format!(
            "{file}: ignoring column(s) {}: they are not customer fields",
            names.join(", ")
        );
        if !close.is_empty() {
            warning.push_str("; ");
            warning.push_str(&close.join("; "));
        }
        Some(warning)
    }

    /// The row built from the values `field(i)` of columns `0..len`, or `None`
    /// for a row with nothing in it (a blank line, or a row of bare delimiters
    /// as spreadsheets export).
    pub fn row<'v>(
        &self,
        len: usize,
        field: impl Fn(usize) -> Option<&'v str>,
        ctx: &RowContext<'v>,
    ) -> Option<Result<ManifestRow, Rejected>> {
        if (0..len).all(|i| field(i).is_none_or(|v| v.trim().is_empty())) {
            return None;
        }
        let mut raw = RawRow::default();
        for &(index, target) in &self.mapped {
            if let Some(value) = field(index) {
                raw.set(target, value);
            }
        }
        let outcome = build(&raw, ctx);
        // A row with values past the header's last column (they would be dropped
        // unread), or with fewer values than the header (a header that swallowed
        // a line break reads the next row as column names): something lost a
        // quote or a line break. Empty trailing fields are harmless.
        let extra = (self.width..len).any(|i| field(i).is_some_and(|v| !v.trim().is_empty()));
        if extra || len < self.width {
            return Some(overflowing(outcome, ctx.file, ctx.line, len, self.width));
        }
        Some(outcome)
    }

    /// The columns that hold `field`.
    pub fn of(&self, field: Field) -> impl Iterator<Item = usize> + '_ {
        self.mapped
            .iter()
            .filter(move |(_, f)| *f == field)
            .map(|(i, _)| *i)
    }
}

/// Rejects a row with values beyond the header's columns, keeping its key (if
/// readable) at its previous state.
fn overflowing(
    outcome: Result<ManifestRow, Rejected>,
    file: &str,
    line: u32,
    values: usize,
    width: usize,
) -> Result<ManifestRow, Rejected> {
    let error = |account: Option<String>| ManifestError {
        file: file.to_owned(),
        line: Some(line),
        account,
        field: None,
        kind: ErrorKind::Row,
        reason: format!(
            "has {values} values but the header has {width} columns; check this row and the header for a missing quote, delimiter or line break"
        ),
    };
    rejected_with(outcome, error)
}

/// `outcome` rejected with one more error (made from the row's account, where
/// it is readable); its key keeps its previous state.
pub fn rejected_with(
    outcome: Result<ManifestRow, Rejected>,
    error: impl Fn(Option<String>) -> ManifestError,
) -> Result<ManifestRow, Rejected> {
    match outcome {
        Ok(row) => {
            let key = row.key().to_owned();
            Err(Rejected {
                errors: vec![error(Some(key.account.clone()))],
                key: Some(key),
            })
        }
        Err(mut rejected) => {
            let account = rejected.errors.iter().find_map(|e| e.account.clone());
            rejected.errors.push(error(account));
            Err(rejected)
        }
    }
}

/// Maps a header line's cell texts to fields.
pub fn map_header(
    names: &[&str],
    line: u32,
    file: &str,
    opts: &ParseOptions,
) -> Result<Columns, ManifestError> {
    let mut mapped: Vec<(usize, Field)> = Vec::new();
    let mut unknown = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let normalised = normalise_header(name);
        let configured = opts
            .columns
            .iter()
            .find(|(_, header)| *header == normalised)
            .map(|(field, _)| *field);
        match configured.or_else(|| Field::from_header(name)) {
            Some(field) => {
                if let Some((other, _)) = mapped.iter().find(|(_, f)| *f == field) {
                    return Err(ManifestError::file(
                        file,
                        format!(
                            "columns {} ({:?}) and {} ({:?}) both mean {}; keep one",
                            other + 1,
                            names[*other].trim(),
                            index + 1,
                            name.trim(),
                            field.name()
                        ),
                    )
                    .at_line(line));
                }
                mapped.push((index, field));
            }
            None if name.trim().is_empty() => {}
            // A data row run into the header (a lost line break) would hide its
            // customer as "unknown columns": an email address is never a header.
            None if super::fields::check_email(name.trim()).is_ok() => {
                return Err(ManifestError::file(
                    file,
                    format!(
                        "header column {} is {:?}, an email address, not a column name: is a line break missing after the header? Its customers keep their previous state",
                        index + 1,
                        name.trim()
                    ),
                )
                .at_line(line));
            }
            // A quote opened in the header and closed further down swallows
            // rows into one "column name": those customers would vanish.
            None if name.contains(['\n', '\r']) => {
                return Err(ManifestError::file(
                    file,
                    format!(
                        "header column {} runs over a line break (a quote opened in the header closes further down), so rows are read as part of the header; fix the quote. Its customers keep their previous state",
                        index + 1
                    ),
                )
                .at_line(line));
            }
            None => unknown.push(name.trim().to_owned()),
        }
    }
    let missing: Vec<&str> = Field::REQUIRED
        .iter()
        .filter(|f| !mapped.iter().any(|(_, m)| m == *f))
        .map(|f| f.name())
        .collect();
    if !missing.is_empty() {
        return Err(ManifestError::file(
            file,
            format!(
                "missing required column(s) {} (found: {}); rename the header or map it with manifests.csv.columns",
                missing.join(", "),
                names.iter().map(|n| format!("{:?}", n.trim())).collect::<Vec<_>>().join(", ")
            ),
        )
        .at_line(line));
    }
    // Trailing empty header cells (a trailing delimiter) name no column.
    let width = names
        .iter()
        .rposition(|n| !n.trim().is_empty())
        .map_or(0, |i| i + 1);
    Ok(Columns {
        mapped,
        unknown,
        width,
    })
}
