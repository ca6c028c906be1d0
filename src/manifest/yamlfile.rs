//! YAML manifests: a mapping with `businessUnitSlug` and `customers`, or a bare list.

use super::build::{RawRow, Rejected, RowContext, build};
use super::error::{ErrorKind, ManifestError};
use super::fields::Field;
use super::row::FileIdx;
use super::yamldepth;
use super::{ParseOptions, ParsedFile};
use serde_yaml::Value;

pub fn parse(
    text: &str,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    if let Some(line) = yamldepth::too_deep_flow(text) {
        return Err(ManifestError::file(
            file,
            format!(
                "nests deeper than {} levels; a manifest needs three, so this is not a manifest",
                yamldepth::MAX_DEPTH
            ),
        )
        .at_line(line));
    }
    let mut doc: Value = serde_yaml::from_str(text).map_err(|err| {
        let error = ManifestError::file(file, format!("is not valid YAML: {err}"));
        match err.location() {
            Some(loc) => error.at_line(loc.line() as u32),
            None => error,
        }
    })?;
    if yamldepth::depth(&doc, yamldepth::MAX_DEPTH) > yamldepth::MAX_DEPTH {
        return Err(ManifestError::file(
            file,
            format!(
                "nests deeper than {} levels; a manifest needs three, so this is not a manifest",
                yamldepth::MAX_DEPTH
            ),
        ));
    }
    doc.apply_merge().map_err(|err| {
        ManifestError::file(file, format!("has an invalid merge key (<<): {err}"))
    })?;
    let (file_unit, items, under_key) = match doc {
        Value::Null => {
            return Err(ManifestError::file(
                file,
                "is empty; an empty file never removes customers (add customers, or delete the file)",
            ));
        }
        Value::Sequence(items) => (None, items, false),
        Value::Mapping(mut map) => {
            let unit = match map.remove("businessUnitSlug") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(ManifestError::file(
                        file,
                        "businessUnitSlug must be a string",
                    ));
                }
            };
            let items = match map.remove("customers") {
                Some(Value::Sequence(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(ManifestError::file(
                        file,
                        "customers must be a list of customers",
                    ));
                }
            };
            // `x-…` keys may hold anchors shared by entries, as in Compose files.
            let unknown: Vec<String> = map
                .keys()
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned))
                .filter(|k| !k.starts_with("x-"))
                .collect();
            if !unknown.is_empty() {
                return Err(ManifestError::file(
                    file,
                    format!(
                        "unknown top-level key(s) {}; expected businessUnitSlug and customers (keys starting with x- may hold anchors)",
                        unknown.join(", ")
                    ),
                ));
            }
            (unit, items, true)
        }
        _ => {
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
    let lines = item_lines(text, under_key);
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
    let lines = lines.filter(|lines| lines.len() == items.len());
    let unquoted = unquoted_numbers(text);
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
    item: &Value,
    ctx: &RowContext<'_>,
    unquoted: &[&str],
) -> Result<super::ManifestRow, Rejected> {
    let problem = |field: String, reason: String| ManifestError {
        file: ctx.file.to_owned(),
        line: Some(ctx.line),
        account: None,
        field: Some(field),
        kind: ErrorKind::Row,
        reason,
    };
    let Value::Mapping(map) = item else {
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
        let Some(name) = name.as_str() else {
            problems.push(problem(
                format!("{name:?}"),
                "field names must be strings".into(),
            ));
            continue;
        };
        let Some(field) = Field::from_name(name) else {
            problems.push(problem(name.to_owned(), unknown_field(name)));
            continue;
        };
        match value {
            Value::Null => {}
            Value::String(s)
                if matches!(field, Field::AccountNumber | Field::SubAccountNumber)
                    && unquoted.contains(&s.as_str()) =>
            {
                problems.push(problem(
                    name.to_owned(),
                    format!("is an unquoted number; write it as a string (\"{s}\") so every YAML reader keeps its leading zeros"),
                ));
            }
            Value::String(s) => raw.set(field, s),
            Value::Bool(b) if field == Field::Autopay => {
                raw.set(field, if *b { "true" } else { "false" });
            }
            Value::Number(n) if matches!(field, Field::AccountNumber | Field::SubAccountNumber) => {
                problems.push(problem(
                    name.to_owned(),
                    format!("is an unquoted number; write it as a string (\"{n}\") so leading zeros and long numbers survive"),
                ));
            }
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

/// Account values written as plain (unquoted) numeric scalars, e.g. `accountNumber: 00123`.
/// serde_yaml reads some of them as strings, but other YAML readers turn them into
/// numbers (123, or octal 83), so they are refused whatever serde_yaml made of them.
fn unquoted_numbers(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        for key in ["accountNumber", "subAccountNumber"] {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            let Some(value) = rest.trim_start().strip_prefix(':') else {
                continue;
            };
            let value = value.split(" #").next().unwrap_or("").trim();
            let numeric = !value.is_empty()
                && value
                    .starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '.')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
                && value.chars().any(|c| c.is_ascii_digit());
            if numeric {
                found.push(value);
            }
        }
    }
    found
}

/// The 1-based line of each block-style list entry (`- …`) of the customers list.
/// serde_yaml keeps no positions, so this reads the text's indentation; the caller
/// uses the result only when it finds exactly one line per parsed entry.
fn item_lines(text: &str, under_key: bool) -> Option<Vec<u32>> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i as u32 + 1, l));
    if under_key {
        lines.find(|(_, l)| {
            l.strip_prefix("customers")
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })?;
    }
    let mut indent = None;
    let mut found = Vec::new();
    for (number, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "---" || trimmed == "..." {
            break;
        }
        let depth = line.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if is_item => indent = Some(depth),
            None => {
                if !under_key {
                    return None;
                }
                continue;
            }
            Some(i) if depth < i || (depth == i && !is_item) => break,
            Some(_) => {}
        }
        if Some(depth) == indent && is_item {
            found.push(number);
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lines_are_found_under_the_customers_key() {
        let text = "businessUnitSlug: w\ncustomers:\n  - accountNumber: \"1\"\n    firstName: A\n\n  - accountNumber: \"2\"\nother: x\n";
        assert_eq!(item_lines(text, true), Some(vec![3, 6]));
    }

    #[test]
    fn entry_lines_are_found_in_a_bare_list() {
        let text = "# comment\n- accountNumber: \"1\"\n- accountNumber: \"2\"\n  lastName: B\n";
        assert_eq!(item_lines(text, false), Some(vec![2, 3]));
    }

    #[test]
    fn a_misspelt_field_gets_a_suggestion() {
        assert!(unknown_field("autopy").contains("did you mean autopay?"));
        assert!(unknown_field("emailAdress").contains("did you mean emailAddress?"));
        assert!(!unknown_field("shoeSize").contains("did you mean"));
    }
}
