//! `.xlsx` manifests, read with calamine: the first sheet (or
//! `manifests.xlsx.sheet`), its header and rows under the same rules as CSV
//! ([`columns`](super::columns)), numbered as the sheet numbers them.

use super::build::{Rejected, RowContext};
use super::columns::{Found, HeaderSearch, rejected_with};
use super::error::{ErrorKind, ManifestError};
use super::fields::Field;
use super::row::{FileIdx, ManifestRow};
use super::{ParseOptions, ParsedFile};
use calamine::{Data, Reader, Xlsx};
use std::borrow::Cow;
use std::io::Cursor;

/// A workbook may unpack to at most this many times `manifests.max_file_size`:
/// a few kilobytes that unpack to gigabytes are not an export.
const MAX_UNPACKED: u64 = 8;

/// Excel keeps 15 significant digits of a number cell.
const EXACT_DIGITS: f64 = 1e15;

pub fn parse(
    bytes: Vec<u8>,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    check_unpacked_size(&bytes, file, opts)?;
    let unreadable = |err: &dyn std::fmt::Display| {
        ManifestError::file(
            file,
            format!(
                "cannot be read as an Excel workbook ({err}); save it again from Excel as \"Excel Workbook (.xlsx)\". Its customers keep their previous state"
            ),
        )
    };
    let mut book = Xlsx::new(Cursor::new(bytes)).map_err(|err| unreadable(&err))?;
    let names = book.sheet_names();
    let sheet = match &opts.sheet {
        Some(wanted) => names
            .iter()
            .find(|n| *n == wanted)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
            .ok_or_else(|| {
                ManifestError::file(
                    file,
                    format!(
                        "has no sheet named {wanted:?} (manifests.xlsx.sheet); its sheets are {}",
                        names
                            .iter()
                            .map(|n| format!("{n:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
        None => names
            .first()
            .ok_or_else(|| ManifestError::file(file, "has no sheets"))?,
    }
    .clone();
    let range = book
        .worksheet_range(&sheet)
        .map_err(|err| unreadable(&err))?;
    let Some((top, left)) = range.start() else {
        return Err(ManifestError::file(
            file,
            format!(
                "has nothing on sheet {sheet:?}; an empty file never removes customers (add a header row and rows, or delete the file)"
            ),
        ));
    };
    let line_of = |i: usize| top.saturating_add(i as u32).saturating_add(1);
    let mut rows = range.rows().enumerate();
    let mut search = HeaderSearch::new(file, opts);
    let (columns, mut parsed) = loop {
        let Some((i, row)) = rows.next() else {
            return Err(search.end());
        };
        if row.iter().all(|c| *c == Data::Empty) {
            continue;
        }
        let texts = cells(row, left, &[]);
        let names: Vec<&str> = texts.iter().map(|(t, _)| t.as_ref()).collect();
        match search.offer(Ok(&names), line_of(i)) {
            Found::Header(columns, parsed) => break (columns, parsed),
            Found::NotYet => {}
            Found::Failed(error) => return Err(error),
        }
    };
    let accounts: Vec<usize> = columns
        .of(Field::AccountNumber)
        .chain(columns.of(Field::SubAccountNumber))
        .collect();
    let mut numeric_accounts = false;
    for (i, row) in rows {
        let line = line_of(i);
        let texts = cells(row, left, &accounts);
        let ctx = RowContext {
            file,
            file_idx,
            line,
            default_business_unit: opts.default_business_unit.as_deref(),
        };
        let Some(mut outcome) =
            columns.row(texts.len(), |c| texts.get(c).map(|(t, _)| t.as_ref()), &ctx)
        else {
            continue;
        };
        for (index, field) in Field::ALL
            .iter()
            .flat_map(|&f| columns.of(f).map(move |i| (i, f)))
        {
            match texts.get(index).map(|(_, note)| note) {
                Some(Note::Error(shown)) => {
                    outcome = with_error(
                        outcome,
                        &ctx,
                        field,
                        format!(
                            "is the error {shown} in the sheet; fix the formula or type the value, and save again"
                        ),
                    );
                }
                Some(Note::Number(value)) if accounts.contains(&index) => {
                    numeric_accounts = true;
                    if value.abs() >= EXACT_DIGITS || value.fract() != 0.0 {
                        outcome = with_error(
                            outcome,
                            &ctx,
                            field,
                            format!(
                                "is the number {value} in a number cell, which Excel keeps to 15 digits (the last may be lost); format the column as Text, type the number again, and save"
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
        parsed.push(outcome);
    }
    if numeric_accounts {
        parsed.warnings.push(format!(
            "{file}: account numbers are in number cells, which cannot keep leading zeros (00123 reads as 123); format the account columns as Text in Excel if your account numbers have them"
        ));
    }
    super::csvfile::no_customers(parsed, file)
}

/// What a cell was besides its text.
enum Note {
    Text,
    Number(f64),
    Error(String),
}

/// A row's cells as text, from the sheet's column A (cells left of the used
/// range are empty), each with what it was. A number in one of `accounts` is
/// written as its integer digits, never with an exponent.
fn cells<'r>(row: &'r [Data], left: u32, accounts: &[usize]) -> Vec<(Cow<'r, str>, Note)> {
    let pad = (0..left).map(|_| (Cow::Borrowed(""), Note::Text));
    let values = row.iter().enumerate().map(|(i, cell)| {
        let column = left as usize + i;
        match cell {
            Data::String(s) => (Cow::Borrowed(s.as_str()), Note::Text),
            Data::Empty => (Cow::Borrowed(""), Note::Text),
            Data::Int(n) => (Cow::Owned(n.to_string()), Note::Number(*n as f64)),
            Data::Float(f) if accounts.contains(&column) && f.fract() == 0.0 => {
                (Cow::Owned(format!("{f:.0}")), Note::Number(*f))
            }
            Data::Float(f) => (Cow::Owned(f.to_string()), Note::Number(*f)),
            Data::Bool(b) => (Cow::Borrowed(if *b { "true" } else { "false" }), Note::Text),
            Data::Error(e) => (Cow::Borrowed(""), Note::Error(e.to_string())),
            other => (Cow::Owned(other.to_string()), Note::Text),
        }
    });
    pad.chain(values).collect()
}

/// `outcome` rejected with one more error on `field`, its key kept.
fn with_error(
    outcome: Result<ManifestRow, Rejected>,
    ctx: &RowContext<'_>,
    field: Field,
    reason: String,
) -> Result<ManifestRow, Rejected> {
    let error = |account: Option<String>| ManifestError {
        file: ctx.file.to_owned(),
        line: Some(ctx.line),
        account,
        field: Some(field.name().to_owned()),
        kind: ErrorKind::Row,
        reason: reason.clone(),
    };
    // An error cell reads as empty: its own error replaces "required but empty".
    let outcome = outcome.map_err(|mut rejected| {
        rejected
            .errors
            .retain(|e| e.field.as_deref() != Some(field.name()));
        rejected
    });
    rejected_with(outcome, error)
}

/// Refuses a workbook whose parts unpack to more than [`MAX_UNPACKED`] times
/// `manifests.max_file_size` by their own account, before anything is unpacked.
fn check_unpacked_size(bytes: &[u8], file: &str, opts: &ParseOptions) -> Result<(), ManifestError> {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Ok(()); // not a zip file: the reader says so in its own words
    };
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        if let Ok(entry) = archive.by_index_raw(i) {
            total = total.saturating_add(entry.size());
        }
    }
    let limit = opts.max_file_size.saturating_mul(MAX_UNPACKED);
    if total > limit {
        return Err(ManifestError::file(
            file,
            format!(
                "unpacks to {total} bytes, more than {MAX_UNPACKED} times manifests.max_file_size; this is not a spreadsheet export. Its customers keep their previous state"
            ),
        ));
    }
    Ok(())
}
