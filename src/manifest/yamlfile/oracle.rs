//! The reader this module replaced, kept as a test oracle: the document through
//! `serde_yaml::Value`, its depth measured on the tree, merge keys applied by
//! `Value::apply_merge`, then turned into a [`Doc`]. A property test checks that
//! both readers make the same rows and row errors of any generated document.

use super::doc::{Customers, Doc, Entry, Key, Scalar, TopMap};
use super::{ParseOptions, ParsedFile, too_deep};
use crate::manifest::error::ManifestError;
use crate::manifest::yamldepth::{self, MAX_DEPTH};
use serde_yaml::Value;
use std::borrow::Cow;

fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, at)) = stack.pop() {
        deepest = deepest.max(at);
        if deepest > MAX_DEPTH {
            return deepest;
        }
        match value {
            Value::Sequence(items) => stack.extend(items.iter().map(|v| (v, at + 1))),
            Value::Mapping(map) => stack.extend(map.values().map(|v| (v, at + 1))),
            Value::Tagged(tagged) => stack.push((&tagged.value, at)),
            _ => {}
        }
    }
    deepest
}

fn scalar(value: Value) -> Scalar<'static> {
    match value {
        Value::Null => Scalar::Null,
        Value::String(s) => Scalar::Str(Cow::Owned(s)),
        Value::Bool(b) => Scalar::Bool(b),
        Value::Number(n) => Scalar::Number(n.to_string()),
        _ => Scalar::Other,
    }
}

fn entries(items: Vec<Value>) -> Vec<Entry<'static>> {
    items
        .into_iter()
        .map(|item| match item {
            Value::Mapping(map) => Entry::Fields(
                map.into_iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::String(s) => Key::Str(Cow::Owned(s)),
                            other => Key::Other(format!("{other:?}")),
                        };
                        (key, scalar(v))
                    })
                    .collect(),
            ),
            _ => Entry::NotMapping,
        })
        .collect()
}

fn doc(text: &str, file: &str) -> Result<Doc<'static>, ManifestError> {
    let mut doc: Value = serde_yaml::from_str(text)
        .map_err(|err| ManifestError::file(file, format!("is not valid YAML: {err}")))?;
    if value_depth(&doc) > MAX_DEPTH {
        return Err(too_deep(file));
    }
    // The typed reader applies merge keys in customers only (a top-level one is an
    // error), so this applies them there too, not to the whole tree.
    let invalid = |why: &str| ManifestError::file(file, format!("has an invalid merge key: {why}"));
    let items = match &mut doc {
        Value::Sequence(items) => Some(items),
        Value::Mapping(map) => {
            if map.contains_key("<<") {
                return Err(invalid("at the top level"));
            }
            match map.get_mut("customers") {
                Some(Value::Sequence(items)) => Some(items),
                _ => None,
            }
        }
        _ => None,
    };
    for item in items.into_iter().flatten() {
        if let Value::Mapping(entry) = item {
            merge_into(entry).map_err(invalid)?;
        }
    }
    Ok(match doc {
        Value::Null => Doc::Null,
        Value::Sequence(items) => Doc::List(entries(items)),
        Value::Mapping(mut map) => {
            let unit = map.remove("businessUnitSlug").map_or(Scalar::Null, scalar);
            let customers = match map.remove("customers") {
                None | Some(Value::Null) => Customers::Missing,
                Some(Value::Sequence(items)) => Customers::List(entries(items)),
                Some(_) => Customers::Other,
            };
            let unknown = map
                .keys()
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned))
                .filter(|k| !k.starts_with("x-"))
                .collect();
            Doc::Map(TopMap {
                unit,
                customers,
                unknown,
            })
        }
        _ => Doc::Other,
    })
}

/// One level of `Value::apply_merge`: the `<<` of this mapping only.
fn merge_into(entry: &mut serde_yaml::Mapping) -> Result<(), &'static str> {
    let sources = match entry.remove("<<") {
        None => return Ok(()),
        Some(Value::Mapping(source)) => vec![source],
        Some(Value::Sequence(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Mapping(source) => Ok(source),
                Value::Sequence(_) => Err("sequence in a merge list"),
                Value::Tagged(_) => Err("tagged value in merge"),
                _ => Err("scalar in a merge list"),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Tagged(_)) => return Err("tagged value in merge"),
        Some(_) => return Err("scalar in merge"),
    };
    for source in sources {
        for (k, v) in source {
            entry.entry(k).or_insert(v);
        }
    }
    Ok(())
}

/// `parse` as it was: the same checks and rows, from the `Value` reader (with merge
/// keys applied where the typed reader applies them).
pub fn parse(text: &str, file: &str, opts: &ParseOptions) -> Result<ParsedFile, ManifestError> {
    if let Some(line) = yamldepth::too_deep_flow(text) {
        return Err(too_deep(file).at_line(line));
    }
    super::rows(
        doc(text, file)?,
        super::Positions::FromText(text),
        file,
        0,
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::error::ErrorKind;

    const NAMES: &[&str] = &[
        "accountNumber",
        "subAccountNumber",
        "firstName",
        "lastName",
        "emailAddress",
        "autopay",
        "businessUnitSlug",
        "autopy",
        "x-note",
    ];
    // Not a number over 64 bits: the Value reader refused the whole file for one,
    // the typed reader makes it a row error (tested in doc.rs).
    const VALUES: &[&str] = &[
        "\"00123\"",
        "00123",
        "123",
        "-7",
        "1.5e3",
        "Ada",
        "'O''Brien'",
        "\"K\\u00e9\"",
        "ada@example.com",
        "not-an-email",
        "true",
        "no",
        "~",
        "",
        "[a, b]",
        "{a: 1}",
        "!tag x",
        "\"unclosed",
        "*base",
        "|\n      block",
        "\"  \"",
        "é@example.com",
    ];

    /// One customer: usually the four required fields with good values, some of
    /// them missing or given an odd value, a few more fields, maybe a merge.
    fn entry(
        u: &mut arbtest::arbitrary::Unstructured<'_>,
        indent: &str,
    ) -> arbtest::arbitrary::Result<String> {
        let account = format!("\"{}\"", u.int_in_range(0..=40u8)?);
        let mut fields: Vec<(&str, String)> = Vec::new();
        for (name, good) in [
            ("accountNumber", account.as_str()),
            ("firstName", "Ada"),
            ("lastName", "Lovelace"),
            ("emailAddress", "ada@example.com"),
        ] {
            if u.ratio(1, 8)? {
                continue;
            }
            let value = if u.ratio(1, 6)? {
                VALUES[u.choose_index(VALUES.len())?]
            } else {
                good
            };
            fields.push((name, value.to_owned()));
        }
        for _ in 0..u.int_in_range(0..=2)? {
            let name = NAMES[u.choose_index(NAMES.len())?];
            if fields.iter().all(|(n, _)| *n != name) {
                fields.push((name, VALUES[u.choose_index(VALUES.len())?].to_owned()));
            }
        }
        if u.ratio(1, 8)? {
            fields.push(("<<", "*base".to_owned()));
        }
        if fields.is_empty() || u.ratio(1, 40)? {
            let value = VALUES[u.choose_index(VALUES.len())?];
            return Ok(format!("{indent}- {value}\n"));
        }
        let mut out = String::new();
        for (i, (name, value)) in fields.iter().enumerate() {
            let lead = if i == 0 { "- " } else { "  " };
            out.push_str(&format!("{indent}{lead}{name}: {value}\n"));
        }
        Ok(out)
    }

    /// Row errors exactly; a file error only by kind (the two readers word some differently).
    fn outcome(result: Result<ParsedFile, ManifestError>) -> String {
        match result {
            Ok(parsed) => format!(
                "rows {:?}\nerrors {:?}\nrejected {:?} keyless {}",
                parsed.rows, parsed.errors, parsed.rejected_keys, parsed.keyless_rejects
            ),
            Err(error) => {
                assert_eq!(error.kind, ErrorKind::File);
                "file error".into()
            }
        }
    }

    #[test]
    fn the_typed_reader_reads_every_generated_document_as_the_value_reader_did() {
        let opts = ParseOptions {
            default_business_unit: Some("water".into()),
            ..ParseOptions::default()
        };
        // How many documents gave rows, and row errors: the property must not
        // hold only because every generated document was refused whole.
        let (with_rows, with_row_errors) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        arbtest::arbtest(|u| {
            let mut text = String::new();
            if u.ratio(1, 2)? {
                text.push_str("x-base: &base\n  lastName: Smith\n  autopay: false\n");
            }
            let bare = u.ratio(1, 4)?;
            let indent = if bare { "" } else { "  " };
            if !bare {
                if u.ratio(1, 2)? {
                    text.push_str("businessUnitSlug: east\n");
                }
                text.push_str("customers:\n");
            }
            for _ in 0..u.int_in_range(0..=6)? {
                text.push_str(&entry(u, indent)?);
            }
            if u.ratio(1, 6)? && !text.is_empty() {
                // A damaged byte somewhere: a quote, a colon, an indent, a tab.
                let at = u.choose_index(text.len())?;
                if text.is_char_boundary(at) {
                    let damage = ["\"", ":", "  ", "\t", "- ", "#", "\n"][u.choose_index(7)?];
                    text.insert_str(at, damage);
                }
            }
            let parsed = super::super::parse(&text, "f.yaml", 0, &opts);
            if let Ok(p) = &parsed {
                with_rows.set(with_rows.get() + usize::from(!p.rows.is_empty()));
                with_row_errors.set(with_row_errors.get() + usize::from(!p.errors.is_empty()));
            }
            let typed = outcome(parsed);
            let value = outcome(parse(&text, "f.yaml", &opts));
            assert_eq!(typed, value, "document:\n{text}");
            Ok(())
        })
        .budget_ms(1500);
        assert!(
            with_rows.get() > 10,
            "{} documents gave rows",
            with_rows.get()
        );
        assert!(
            with_row_errors.get() > 10,
            "{} documents gave row errors",
            with_row_errors.get()
        );
    }
}
