//! YAML manifests: a mapping with `businessUnitSlug` and `customers`, or a bare list.

use super::build::{RawRow, Rejected, RowContext, build};
use super::error::{ErrorKind, ManifestError};
use super::fields::Field;
use super::row::FileIdx;
use super::yamldepth;
use super::{ParseOptions, ParsedFile};
use std::collections::HashSet;

mod doc;
mod explain;
mod fast;
#[cfg(test)]
mod oracle;
mod text;

use doc::{Customers, Doc, DocError, Entry, Key, Scalar};

/// A YAML manifest's bytes: UTF-8 (a byte order mark, as Windows Notepad
/// writes, is dropped and every line keeps its number), or UTF-16 by its BOM.
pub fn parse_bytes(
    bytes: &[u8],
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    let utf16 = match bytes {
        [0xFF, 0xFE, ..] => Some(encoding_rs::UTF_16LE),
        [0xFE, 0xFF, ..] => Some(encoding_rs::UTF_16BE),
        _ => None,
    };
    if let Some(encoding) = utf16 {
        let text = encoding.decode_with_bom_removal(bytes).0;
        return parse(&text, file, file_idx, opts);
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ManifestError::file(file, "is not valid UTF-8; save it as UTF-8"))?;
    parse(text, file, file_idx, opts)
}

/// A YAML manifest: each of its documents (`---`) read as a manifest of its
/// own, the rows and errors numbered by their lines in the whole text.
pub fn parse(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    by_document(text, file, file_idx, opts, parse_document)
}

/// [`parse`] without its fast path: every document through the full reader
/// (its twin, which tests and fuzzing hold it to).
pub fn parse_all_in_full(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    by_document(text, file, file_idx, opts, parse_in_full)
}

type ReadDocument = fn(&str, &str, FileIdx, &ParseOptions) -> Result<ParsedFile, ManifestError>;

/// Each document of `text` read by `read`, numbered by its lines in the text.
fn by_document(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    read: ReadDocument,
) -> Result<ParsedFile, ManifestError> {
    let docs = explain::documents(text);
    if let [(0, whole)] = docs[..] {
        return read(whole, file, file_idx, opts);
    }
    let mut all = ParsedFile::default();
    for (before, doc) in docs {
        let shift = |line: Option<u32>| line.map(|l| l.saturating_add(before));
        let mut parsed = read(doc, file, file_idx, opts).map_err(|mut err| {
            err.line = shift(err.line);
            err
        })?;
        for row in &mut parsed.rows {
            row.line = row.line.saturating_add(before);
        }
        for error in &mut parsed.errors {
            error.line = shift(error.line);
        }
        all.rows.append(&mut parsed.rows);
        all.errors.append(&mut parsed.errors);
        all.rejected_keys.append(&mut parsed.rejected_keys);
        all.keyless_rejects += parsed.keyless_rejects;
        all.warnings.append(&mut parsed.warnings);
    }
    Ok(all)
}

/// One YAML document: the fast path, or else the full reader.
fn parse_document(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    match fast::read(text) {
        Some((doc, lines)) => rows(doc, Positions::Known(lines), file, file_idx, opts),
        None => parse_in_full(text, file, file_idx, opts),
    }
}

/// One document through the full reader.
pub fn parse_in_full(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    if let Some(line) = yamldepth::too_deep_flow(text) {
        return Err(too_deep(file).at_line(line));
    }
    let doc = doc::read(text).map_err(|err| doc_error(file, text, err))?;
    rows(doc, Positions::FromText(text), file, file_idx, opts)
}

/// Where each entry is, and which account values were unquoted numbers.
enum Positions<'t> {
    /// Read from the text (the full reader keeps no positions).
    FromText(&'t str),
    /// The fast path's entry lines; it reads no unquoted number.
    Known(Vec<u32>),
}

fn too_deep(file: &str) -> ManifestError {
    ManifestError::file(
        file,
        format!(
            "nests deeper than {} levels; a manifest needs three, so this is not a manifest",
            yamldepth::MAX_DEPTH
        ),
    )
}

fn doc_error(file: &str, text: &str, err: DocError) -> ManifestError {
    let at = |error: ManifestError, line: Option<u32>| match line {
        Some(line) => error.at_line(line),
        None => error,
    };
    match err {
        DocError::Syntax(err) => {
            let line = err.location().map(|loc| loc.line() as u32);
            let (sentence, line) = explain::syntax(text, line, &err.to_string());
            at(
                ManifestError::file(file, format!("is not valid YAML: {sentence}")),
                line,
            )
        }
        DocError::TooDeep(line) => at(too_deep(file), line),
        DocError::Merge(why, line) => at(
            ManifestError::file(file, format!("has an invalid merge key (<<): {why}")),
            line,
        ),
        DocError::TopLevelMerge => ManifestError::file(
            file,
            "has a merge key (<<) at the top level; merge shared fields into each customer instead (keys starting with x- may hold the anchor)",
        ),
    }
}

/// The rows of a read document: the file's shape checked, then each entry built.
fn rows(
    doc: Doc<'_>,
    positions: Positions<'_>,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    let (file_unit, items, under_key) = match doc {
        Doc::Null => {
            return Err(ManifestError::file(
                file,
                "is empty; an empty file never removes customers (add customers, or delete the file)",
            ));
        }
        Doc::List(items) => (None, items, false),
        Doc::Map(top) => {
            let unit = match top.unit {
                Scalar::Null => None,
                Scalar::Str(s) => Some(s),
                _ => {
                    return Err(ManifestError::file(
                        file,
                        "businessUnitSlug must be a string",
                    ));
                }
            };
            let items = match top.customers {
                Customers::List(items) => items,
                Customers::Missing => Vec::new(),
                Customers::Other => {
                    return Err(ManifestError::file(
                        file,
                        "customers must be a list of customers",
                    ));
                }
            };
            if !top.unknown.is_empty() {
                return Err(ManifestError::file(
                    file,
                    format!(
                        "unknown top-level key(s) {}; expected businessUnitSlug and customers (keys starting with x- may hold anchors)",
                        top.unknown.join(", ")
                    ),
                ));
            }
            (unit, items, true)
        }
        Doc::Other => {
            return Err(ManifestError::file(
                file,
                "must be a mapping with customers, or a list of customers",
            ));
        }
    };
    if items.is_empty() {
        return Err(ManifestError::file(
            file,
            "has no customers; an empty file never removes customers (delete the file to remove them)",
        ));
    }
    let (lines, unquoted) = match positions {
        Positions::Known(lines) => (Some(lines), HashSet::new()),
        Positions::FromText(text) => {
            let lines = text::item_lines(text, under_key);
            if let Some(found) = lines
                .as_ref()
                .filter(|f| !f.is_empty() && f.len() != items.len())
            {
                // Block-style entries that the parser did not read as entries: a quote
                // that swallowed the lines after it, most likely. Reading on would lose them.
                return Err(ManifestError::file(
                    file,
                    format!(
                        "has {} list entries (lines starting with \"- \") but {} customers were read; check for an unclosed quote after line {}",
                        found.len(),
                        items.len(),
                        found[0]
                    ),
                ));
            }
            (
                lines.filter(|lines| lines.len() == items.len()),
                text::unquoted_numbers(text),
            )
        }
    };
    let default_unit = file_unit
        .as_deref()
        .or(opts.default_business_unit.as_deref());
    let mut parsed = ParsedFile::default();
    for (index, item) in items.iter().enumerate() {
        let line = lines.as_ref().map(|l| l[index]);
        let ctx = RowContext {
            file,
            file_idx,
            line: line.unwrap_or(0),
            default_business_unit: default_unit,
        };
        let mut outcome = entry(item, &ctx, &unquoted);
        if line.is_none() {
            // Flow-style lists carry no line per entry: name the entry by index.
            if let Err(rejected) = &mut outcome {
                for error in &mut rejected.errors {
                    error.line = None;
                    let field = error
                        .field
                        .take()
                        .map_or(String::new(), |f| format!(".{f}"));
                    error.field = Some(format!("customers[{index}]{field}"));
                }
            }
        }
        parsed.push(outcome);
    }
    Ok(parsed)
}

fn entry(
    item: &Entry<'_>,
    ctx: &RowContext<'_>,
    unquoted: &HashSet<&str>,
) -> Result<super::ManifestRow, Rejected> {
    let problem = |field: String, reason: String| ManifestError {
        file: ctx.file.to_owned(),
        line: Some(ctx.line),
        account: None,
        field: Some(field),
        kind: ErrorKind::Row,
        reason,
    };
    let Entry::Fields(map) = item else {
        return Err(Rejected {
            key: None,
            errors: vec![problem(
                "customer".into(),
                "must be a mapping of fields (accountNumber, firstName, …)".into(),
            )],
        });
    };
    let mut raw = RawRow::default();
    let mut problems = Vec::new();
    for (name, value) in map {
        let name = match name {
            Key::Str(name) => name.as_ref(),
            Key::Other(name) => {
                problems.push(problem(name.clone(), "field names must be strings".into()));
                continue;
            }
        };
        let Some(field) = Field::from_name(name) else {
            problems.push(problem(name.to_owned(), unknown_field(name)));
            continue;
        };
        match value {
            Scalar::Null if Field::REQUIRED.contains(&field) => {
                problems.push(problem(
                    name.to_owned(),
                    "is empty: YAML reads an empty value, ~, null and Null as nothing; if the value really is a word such as Null, quote it (\"Null\")".into(),
                ));
            }
            Scalar::Null => {}
            Scalar::Str(s)
                if matches!(field, Field::AccountNumber | Field::SubAccountNumber)
                    && unquoted.contains(s.as_ref()) =>
            {
                problems.push(problem(
                    name.to_owned(),
                    format!("is an unquoted number; write it as a string (\"{s}\") so every YAML reader keeps its leading zeros"),
                ));
            }
            Scalar::Str(s) => raw.set(field, s),
            Scalar::Bool(b) if field == Field::Autopay => {
                raw.set(field, if *b { "true" } else { "false" });
            }
            Scalar::Number(n)
                if matches!(field, Field::AccountNumber | Field::SubAccountNumber) =>
            {
                problems.push(problem(
                    name.to_owned(),
                    format!("is an unquoted number; write it as a string (\"{n}\") so leading zeros and long numbers survive"),
                ));
            }
            Scalar::Bool(b) => problems.push(problem(
                name.to_owned(),
                format!("is read by YAML as the value {b}, not as text; if it is a name, quote it (\"{}\")", if *b { "True" } else { "False" }),
            )),
            _ => problems.push(problem(name.to_owned(), "must be a string".into())),
        }
    }
    match build(&raw, ctx) {
        Ok(row) if problems.is_empty() => Ok(row),
        Ok(row) => {
            let key = row.key().to_owned();
            for p in &mut problems {
                p.account = Some(key.account.clone());
            }
            Err(Rejected {
                key: Some(key),
                errors: problems,
            })
        }
        Err(mut rejected) => {
            // Fields missing only because they were malformed are already reported above.
            rejected.errors.retain(|e| {
                !problems.iter().any(|p| p.field == e.field)
                    || e.reason != "is required but empty or missing"
            });
            let account = rejected.errors.iter().find_map(|e| e.account.clone());
            for p in &mut problems {
                p.account = account.clone();
            }
            problems.append(&mut rejected.errors);
            problems.sort_by_key(|p| p.field.clone());
            Err(Rejected {
                key: rejected.key,
                errors: problems,
            })
        }
    }
}

fn unknown_field(name: &str) -> String {
    let suggestion = crate::suggest::did_you_mean(name, Field::ALL.iter().map(|f| f.name()))
        .map(|f| format!("; did you mean {f}?"))
        .unwrap_or_default();
    format!("is not a customer field{suggestion} (a misspelt field is never ignored)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_gets_a_suggestion() {
        assert!(unknown_field("autopy").contains("did you mean autopay?"));
        assert!(unknown_field("emailAdress").contains("did you mean emailAddress?"));
        assert!(!unknown_field("shoeSize").contains("did you mean"));
    }
}
