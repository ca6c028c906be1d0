//! Streaming CSV reader: one reused record buffer, rows validated as they stream.

use super::build::RowContext;
use super::columns::{Columns, Found, HeaderSearch};
use super::error::ManifestError;
use super::quotes::{QuoteCheck, quote_error};
use super::row::FileIdx;
use super::{ParseOptions, ParsedFile};
use std::io::Read;

/// How a CSV file is written, as far as its reader needs to know: its
/// delimiter, and whether its first line is Excel's `sep=X` hint (skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub sep_line: bool,
}

impl Dialect {
    pub const COMMA: Dialect = Dialect {
        delimiter: b',',
        sep_line: false,
    };
}

pub fn parse<R: Read>(
    reader: R,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    dialect: Dialect,
) -> Result<ParsedFile, ManifestError> {
    let mut csv = reader_for(reader, dialect);
    let (columns, mut parsed) = header(&mut csv, file, opts, dialect)?;
    rows(&mut csv, &columns, 0, file, file_idx, opts, &mut parsed)?;
    no_customers(parsed, file)
}

/// The csv reader every part of a file is read with.
pub(super) fn reader_for<R: Read>(reader: R, dialect: Dialect) -> ::csv::Reader<QuoteCheck<R>> {
    ::csv::ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .has_headers(false)
        .flexible(true)
        // csv miscounts lines in CRLF files; split on LF and drop the CR that
        // ends a CRLF line's last field (`field_text`).
        .terminator(::csv::Terminator::Any(b'\n'))
        .buffer_capacity(256 * 1024)
        .from_reader(QuoteCheck::new(reader, dialect.delimiter))
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

/// Finds and maps the header row (skipping a `sep=` line and, with a warning,
/// lines above the header); the parse so far holds its warnings.
pub(super) fn header<R: Read>(
    csv: &mut ::csv::Reader<QuoteCheck<R>>,
    file: &str,
    opts: &ParseOptions,
    dialect: Dialect,
) -> Result<(Columns, ParsedFile), ManifestError> {
    let mut record = ::csv::ByteRecord::new();
    let mut search = HeaderSearch::new(file, opts);
    let mut first = true;
    loop {
        if !read(csv, &mut record, file)? {
            return Err(search.end());
        }
        if std::mem::take(&mut first) && dialect.sep_line {
            continue;
        }
        let line = record_line(csv, &record);
        let names = header_names(&record).ok_or_else(|| {
            ManifestError::file(
                file,
                "header row is not valid UTF-8; export it as \"CSV UTF-8\" and save again, or set manifests.csv.encoding (e.g. windows-1252)",
            )
            .at_line(line)
        });
        match search.offer(
            names.as_ref().map(Vec::as_slice).map_err(Clone::clone),
            line,
        ) {
            Found::Header(columns, parsed) => return Ok((columns, parsed)),
            Found::NotYet => {}
            Found::Failed(error) => return Err(error),
        }
    }
}

/// Every record of a file with its line, as the reader splits them (the
/// record layer alone: no header search, no rows built).
pub(super) fn records<R: Read>(
    reader: R,
    file: &str,
    dialect: Dialect,
) -> Result<Vec<(u32, Vec<String>)>, ManifestError> {
    let mut csv = reader_for(reader, dialect);
    let mut record = ::csv::ByteRecord::new();
    let mut all = Vec::new();
    while read(&mut csv, &mut record, file)? {
        let line = record_line(&mut csv, &record);
        // The rows' own field reader, where the record is text.
        let fields = match std::str::from_utf8(record.as_slice()) {
            Ok(text) => (0..record.len())
                .map(|i| field_text(&record, text, i).unwrap_or("").to_owned())
                .collect(),
            Err(_) => record
                .iter()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .collect(),
        };
        all.push((line, fields));
    }
    Ok(all)
}

/// A record's fields as text, the last without the CR of a CRLF line end.
fn header_names(record: &::csv::ByteRecord) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(record.as_slice()).ok()?;
    Some(
        (0..record.len())
            .map(|i| field_text(record, text, i).unwrap_or(""))
            .collect(),
    )
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
                "is not valid UTF-8; export it as \"CSV UTF-8\" and save again, or set manifests.csv.encoding to the encoding it was saved in (e.g. windows-1252)",
            )
            .at_line(line));
        };
        let ctx = RowContext {
            file,
            file_idx,
            line,
            default_business_unit: opts.default_business_unit.as_deref(),
        };
        if let Some(outcome) = columns.row(record.len(), |i| field_text(&record, text, i), &ctx) {
            parsed.push(outcome);
        }
    }
    Ok(())
}

/// Field `i` of a record whose bytes are `text`, without checking it again: its
/// bytes are valid UTF-8 exactly when its range falls on character boundaries
/// of the text (valid text cannot start with a continuation byte, nor end inside
/// a character); a field that is not valid on its own reads as "". The last
/// field loses the CR of a CRLF line end.
fn field_text<'t>(record: &::csv::ByteRecord, text: &'t str, i: usize) -> Option<&'t str> {
    let value = record.range(i).map(|r| text.get(r).unwrap_or(""))?;
    if i + 1 == record.len() {
        return Some(value.strip_suffix('\r').unwrap_or(value));
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use crate::manifest::{Format, ParseOptions, parse_bytes};

    #[test]
    fn a_field_reads_as_its_own_bytes_checked_alone_would() {
        let pieces: [&[u8]; 9] = [
            b"",
            b"\r",
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
                // The last field without the CR of a CRLF line end.
                let alone = match alone {
                    Some(v) if i + 1 == record.len() => Some(v.strip_suffix('\r').unwrap_or(v)),
                    other => other,
                };
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
