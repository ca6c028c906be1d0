//! Streaming CSV reader: one reused record buffer, rows validated as they stream.

use super::build::{RawRow, Rejected, RowContext, build};
use super::error::{ErrorKind, ManifestError};
use super::fields::{Field, normalise_header};
use super::quotes::{QuoteCheck, quote_error};
use super::row::FileIdx;
use super::row::ManifestRow;
use super::{ParseOptions, ParsedFile};
use std::io::Read;

pub fn parse<R: Read>(
    reader: R,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    let mut csv = reader_for(reader, opts);
    let (columns, mut parsed) = header(&mut csv, file, opts)?;
    rows(&mut csv, &columns, 0, file, file_idx, opts, &mut parsed)?;
    no_customers(parsed, file)
}

/// The csv reader every part of a file is read with.
pub(super) fn reader_for<R: Read>(reader: R, opts: &ParseOptions) -> ::csv::Reader<QuoteCheck<R>> {
    ::csv::ReaderBuilder::new()
        .delimiter(opts.delimiter)
        .has_headers(false)
        .flexible(true)
        // csv miscounts lines in CRLF files; split on LF and let trimming drop the CR.
        .terminator(::csv::Terminator::Any(b'\n'))
        .buffer_capacity(256 * 1024)
        .from_reader(QuoteCheck::new(reader, opts.delimiter))
}

/// Reads the next record; a file error names what went wrong and where.
fn read<R: Read>(
    csv: &mut ::csv::Reader<QuoteCheck<R>>,
    record: &mut ::csv::ByteRecord,
    file: &str,
) -> Result<bool, ManifestError> {
    csv.read_byte_record(record).map_err(|err| {
        if let Some(quote) = quote_error(&err) {
            return ManifestError::file(
                file,
                format!(
                    "has unbalanced CSV quoting at {quote}; its customers keep their previous state"
                ),
            )
            .at_line(quote.line());
        }
        if super::open::too_large_error(&err) {
            return ManifestError::file(file, super::open::TooLarge.to_string());
        }
        let line = err.position().map(|p| p.line() as u32);
        let error = ManifestError::file(file, format!("cannot be read as CSV: {err}"));
        match line {
            Some(line) => error.at_line(line),
            None => error,
        }
    })
}

/// Reads and maps the header row; the parse so far holds its warnings.
pub(super) fn header<R: Read>(
    csv: &mut ::csv::Reader<QuoteCheck<R>>,
    file: &str,
    opts: &ParseOptions,
) -> Result<(Columns, ParsedFile), ManifestError> {
    let mut record = ::csv::ByteRecord::new();
    if !read(csv, &mut record, file)? {
        return Err(ManifestError::file(
            file,
            "is empty; an empty file never removes customers (add a header row and rows, or delete the file)",
        ));
    }
    let columns = map_header(&record, record_line(csv, &record), file, opts)?;
    let mut parsed = ParsedFile::default();
    if !columns.unknown.is_empty() {
        parsed.warnings.push(format!(
            "{file}: ignoring unknown column(s) {}; map them with manifests.csv.columns if they matter",
            columns.unknown.join(", ")
        ));
    }
    Ok((columns, parsed))
}

/// The line `record` starts on, in what `csv` reads. The reader numbers a
/// record from where it began reading it, before the empty lines it skipped:
/// the record itself is that many lines on.
fn record_line<R: Read>(csv: &mut ::csv::Reader<QuoteCheck<R>>, record: &::csv::ByteRecord) -> u32 {
    record.position().map_or(1, |p| {
        let skipped = csv.get_mut().empty_lines_at(p.byte());
        (p.line() + skipped) as u32
    })
}

/// A file with a header and no customers is a file error.
pub(super) fn no_customers(parsed: ParsedFile, file: &str) -> Result<ParsedFile, ManifestError> {
    if parsed.is_empty() {
        return Err(ManifestError::file(
            file,
            "has a header row but no customers; an empty file never removes customers (delete the file to remove them)",
        ));
    }
    Ok(parsed)
}

/// Reads data rows to the end of `csv` into `parsed`; `lines_before` is how many
/// lines of the file come before what `csv` reads (the rows' lines count from
/// the file's start; a file error's do not, and callers of a later part read the
/// whole file again to report it).
pub(super) fn rows<R: Read>(
    csv: &mut ::csv::Reader<QuoteCheck<R>>,
    columns: &Columns,
    lines_before: u32,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    parsed: &mut ParsedFile,
) -> Result<(), ManifestError> {
    let mut record = ::csv::ByteRecord::new();
    while read(csv, &mut record, file)? {
        let line = record_line(csv, &record) + lines_before;
        let Ok(text) = std::str::from_utf8(record.as_slice()) else {
            return Err(ManifestError::file(
                file,
                "is not valid UTF-8; export it as \"CSV UTF-8\" and save again",
            )
            .at_line(line));
        };
        let field = |i: usize| field_text(&record, text, i);
        if (0..record.len()).all(|i| field(i).is_none_or(|v| v.trim().is_empty())) {
            continue; // a blank line, or a row of bare delimiters as spreadsheets export
        }
        let mut raw = RawRow::default();
        for &(index, target) in &columns.mapped {
            if let Some(value) = field(index) {
                raw.set(target, value);
            }
        }
        let ctx = RowContext {
            file,
            file_idx,
            line,
            default_business_unit: opts.default_business_unit.as_deref(),
        };
        let outcome = build(&raw, &ctx);
        // A row with values past the header's last column (they would be dropped
        // unread), or with fewer values than the header (a header that swallowed
        // a line break reads the next row as column names): something lost a
        // quote or a line break. Empty trailing fields are harmless.
        let extra =
            (columns.width..record.len()).any(|i| field(i).is_some_and(|v| !v.trim().is_empty()));
        if extra || record.len() < columns.width {
            parsed.push(overflowing(
                outcome,
                file,
                line,
                record.len(),
                columns.width,
            ));
        } else {
            parsed.push(outcome);
        }
    }
    Ok(())
}

/// Field `i` of a record whose bytes are `text`, without checking it again: its
/// bytes are valid UTF-8 exactly when its range falls on character boundaries
/// of the text (valid text cannot start with a continuation byte, nor end inside
/// a character); a field that is not valid on its own reads as "".
fn field_text<'t>(record: &::csv::ByteRecord, text: &'t str, i: usize) -> Option<&'t str> {
    record.range(i).map(|r| text.get(r).unwrap_or(""))
}

#[derive(Clone)]
pub(super) struct Columns {
    mapped: Vec<(usize, Field)>,
    unknown: Vec<String>,
    /// How many columns the header names.
    width: usize,
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

fn map_header(
    header: &::csv::ByteRecord,
    line: u32,
    file: &str,
    opts: &ParseOptions,
) -> Result<Columns, ManifestError> {
    let Ok(names) = header
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<_>, _>>()
    else {
        return Err(ManifestError::file(
            file,
            "header row is not valid UTF-8; export it as \"CSV UTF-8\" and save again",
        )
        .at_line(line));
    };
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
                            "columns {} ({:?}) and {} ({name:?}) both mean {}; keep one",
                            other + 1,
                            names[*other],
                            index + 1,
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
            None => unknown.push(format!("{:?}", name.trim())),
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

#[cfg(test)]
mod tests {
    use crate::manifest::{Format, ParseOptions, parse_bytes};

    #[test]
    fn a_field_reads_as_its_own_bytes_checked_alone_would() {
        let pieces: [&[u8]; 8] = [
            b"",
            b"a",
            b"\xc3",
            b"\xa9",
            b"\xc3\xa9",
            b"\xe2\x82",
            b"\xac",
            b"\xff",
        ];
        arbtest::arbtest(|u| {
            let mut record = ::csv::ByteRecord::new();
            for _ in 0..u.int_in_range(1..=5)? {
                let field: Vec<u8> = (0..u.int_in_range(0..=4)?)
                    .map(|_| Ok(pieces[u.choose_index(pieces.len())?]))
                    .collect::<arbtest::arbitrary::Result<Vec<_>>>()?
                    .concat();
                record.push_field(&field);
            }
            let Ok(text) = std::str::from_utf8(record.as_slice()) else {
                return Ok(()); // such a record is a file error before any field is read
            };
            for i in 0..=record.len() {
                let alone = record.get(i).map(|b| std::str::from_utf8(b).unwrap_or(""));
                assert_eq!(
                    super::field_text(&record, text, i),
                    alone,
                    "{record:?} field {i}"
                );
            }
            Ok(())
        })
        .budget_ms(200);
    }

    #[test]
    fn a_row_after_empty_lines_is_numbered_by_its_own_line() {
        let text = "accountNumber,firstName,lastName,emailAddress\n\n\n1,A,B,a@example.com\n\
                    \"2\",\"C\n\nX\",D,bad\n\n\n3,C,D,not-an-email\n\n4,E,F,also-bad";
        let opts = ParseOptions {
            default_business_unit: Some("w".into()),
            ..ParseOptions::default()
        };
        let parsed = parse_bytes(text.as_bytes(), Format::Csv, "a.csv", &opts).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].line, 4);
        let lines: Vec<(Option<u32>, Option<&str>)> = parsed
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                (Some(5), Some("firstName")),
                (Some(5), Some("emailAddress")),
                (Some(10), Some("emailAddress")),
                (Some(12), Some("emailAddress")),
            ]
        );
    }

    #[test]
    fn a_header_after_empty_lines_is_named_at_its_own_line() {
        let text = "\n\naccountNumber,firstName,firstName,emailAddress\n1,A,B,a@example.com\n";
        let error = parse_bytes(
            text.as_bytes(),
            Format::Csv,
            "a.csv",
            &ParseOptions::default(),
        )
        .unwrap_err();
        assert_eq!(error.line, Some(3), "{error:?}");
        assert!(error.reason.contains("both mean"), "{error:?}");
    }
}
