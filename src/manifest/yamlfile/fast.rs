//! The fast path for the YAML manifests nearly everyone writes: block style, one
//! `key: value` a line, plain or simply quoted scalars, comments and blank lines.
//! It reads such a document in one pass over the text, with each entry's line,
//! into the same [`Doc`] the full reader ([`super::doc::read`]) gives, and
//! declines (`None`) anything else, which the full reader then reads. What it
//! accepts is narrow on purpose: every construct whose reading has a rule of its
//! own in YAML (flow collections, anchors, tags, merge keys, block and multi-line
//! scalars, escapes, documents, tabs, unusual line breaks, special words and
//! numbers, duplicate keys) makes it decline, so it never needs that rule. A
//! property test and the `yaml_manifest` fuzz target hold it to the full reader.

use super::doc::{Customers, Doc, Entry, Key, Scalar, TopMap};
use std::borrow::Cow;

/// The document and the 1-based line of each customer entry, or `None` when the
/// text is not in the form this path reads.
pub fn read(text: &str) -> Option<(Doc<'_>, Vec<u32>)> {
    if !plain_bytes(text.as_bytes()) {
        return None;
    }
    let mut reader = Reader::default();
    for (number, line) in text.split('\n').enumerate() {
        reader.line(number as u32 + 1, line)?;
    }
    reader.finish()
}

/// Whether the text holds none of the bytes this path leaves to the full
/// reader: control characters (tabs and carriage returns included), DEL, C1
/// controls and NEL, the Unicode line and paragraph separators, a byte-order
/// mark or a non-character, and flow brackets (so that no flow nesting exists
/// for the depth check to find).
fn plain_bytes(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = |n: usize| bytes.get(i + n).copied().unwrap_or(0);
        let refused = match b {
            b'\n' => false,
            0..0x20 | 0x7f | b'[' | b'{' => true,
            0xc2 => (0x80..=0x9f).contains(&next(1)),
            0xe2 => next(1) == 0x80 && matches!(next(2), 0xa8 | 0xa9),
            0xef => matches!((next(1), next(2)), (0xbb, 0xbf) | (0xbf, 0xbe | 0xbf)),
            _ => false,
        };
        if refused {
            return false;
        }
        i += 1;
    }
    true
}

#[derive(Default, PartialEq)]
enum Shape {
    /// Nothing but comments and blank lines yet.
    #[default]
    Unknown,
    /// A top-level mapping; `customers:` was the last key read, and its list has
    /// not started yet (`Some(false)`), is being read (`Some(true)`), or is not
    /// the last key (`None`).
    Map { in_list: Option<bool> },
    /// A bare list of customers.
    List,
}

#[derive(Default)]
struct Reader<'a> {
    shape: Shape,
    unit: Option<Scalar<'a>>,
    customers_seen: bool,
    entries: Vec<Entry<'a>>,
    lines: Vec<u32>,
    /// The open entry's fields.
    fields: Vec<(Key<'a>, Scalar<'a>)>,
    /// The indentation of the list's dashes, and of the open entry's keys.
    list_indent: Option<usize>,
    field_indent: Option<usize>,
}

impl<'a> Reader<'a> {
    fn line(&mut self, number: u32, line: &'a str) -> Option<()> {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            return Some(());
        }
        let indent = line.len() - content.len();
        let dash = content.strip_prefix("- ");
        if self.in_list() {
            let list_indent = *self.list_indent.get_or_insert(indent);
            if indent == list_indent {
                if let Some(rest) = dash {
                    return self.entry(number, indent + 2, rest);
                }
            } else if Some(indent) == self.field_indent && dash.is_none() {
                let (key, value) = key_value(content)?;
                return self.field(key, value);
            } else if indent > list_indent || indent != 0 {
                return None;
            }
            // Back at the top level: the list ends.
            self.end_list()?;
        }
        if indent != 0 {
            return None;
        }
        match (&self.shape, dash) {
            (Shape::Unknown, Some(rest)) => {
                self.shape = Shape::List;
                self.list_indent = Some(0);
                self.entry(number, 2, rest)
            }
            (Shape::Unknown | Shape::Map { .. }, None) => self.top_key(content),
            _ => None,
        }
    }

    fn in_list(&self) -> bool {
        matches!(
            self.shape,
            Shape::List
                | Shape::Map {
                    in_list: Some(_),
                    ..
                }
        )
    }

    fn top_key(&mut self, content: &'a str) -> Option<()> {
        let (key, value) = key_value(content)?;
        match key {
            "businessUnitSlug" if self.unit.is_none() => {
                self.unit = Some(value?);
                self.shape = Shape::Map { in_list: None };
            }
            // The list follows on the next lines.
            "customers" if !self.customers_seen && value.is_none() => {
                self.customers_seen = true;
                self.shape = Shape::Map {
                    in_list: Some(false),
                };
            }
            _ => return None,
        }
        Some(())
    }

    /// A new entry, whose first field follows its dash on the entry's line.
    fn entry(&mut self, number: u32, at: usize, rest: &'a str) -> Option<()> {
        self.close_entry();
        if let Shape::Map { in_list } = &mut self.shape {
            *in_list = Some(true);
        }
        let key_start = rest.trim_start_matches(' ');
        self.field_indent = Some(at + rest.len() - key_start.len());
        self.lines.push(number);
        let (key, value) = key_value(key_start)?;
        self.field(key, value)
    }

    fn field(&mut self, key: &'a str, value: Option<Scalar<'a>>) -> Option<()> {
        // A key with no value could open a nested block on the next line: it is
        // accepted only where that line is not more indented (checked there).
        let value = value.unwrap_or(Scalar::Null);
        if self
            .fields
            .iter()
            .any(|(k, _)| matches!(k, Key::Str(k) if k == key))
        {
            return None;
        }
        self.fields.push((Key::Str(Cow::Borrowed(key)), value));
        Some(())
    }

    fn close_entry(&mut self) {
        if !self.fields.is_empty() {
            self.entries
                .push(Entry::Fields(std::mem::take(&mut self.fields)));
        }
    }

    fn end_list(&mut self) -> Option<()> {
        self.close_entry();
        match &mut self.shape {
            Shape::Map { in_list } if *in_list == Some(true) => {
                *in_list = None;
                self.field_indent = None;
                Some(())
            }
            _ => None,
        }
    }

    fn finish(mut self) -> Option<(Doc<'a>, Vec<u32>)> {
        self.close_entry();
        if self.entries.is_empty() {
            return None;
        }
        let doc = match self.shape {
            Shape::List => Doc::List(self.entries),
            Shape::Map { .. } if self.customers_seen => Doc::Map(TopMap {
                unit: self.unit.unwrap_or(Scalar::Null),
                customers: Customers::List(self.entries),
                unknown: Vec::new(),
            }),
            _ => return None,
        };
        Some((doc, self.lines))
    }
}

/// `key: value` or `key:` (no value: `Some(None)` for the value), where the key
/// is a plain name and the value a scalar this path reads.
fn key_value(content: &str) -> Option<(&str, Option<Scalar<'_>>)> {
    let end = content.find(':')?;
    let key = &content[..end];
    let mut chars = key.chars();
    let named = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !is_special_word(key);
    if !named {
        return None;
    }
    let rest = &content[end + 1..];
    if rest.is_empty() {
        return Some((key, None));
    }
    let rest = rest.strip_prefix(' ')?.trim_start_matches(' ');
    if rest.is_empty() || rest.starts_with('#') {
        return Some((key, None));
    }
    Some((key, Some(scalar(rest)?)))
}

/// A value: double-quoted without escapes, single-quoted without doubled
/// quotes, or plain starting with a letter, with an optional comment after it.
fn scalar(text: &str) -> Option<Scalar<'_>> {
    let quote = text.chars().next()?;
    if quote == '"' || quote == '\'' {
        let body = &text[1..];
        let close = body.find(quote)?;
        let inner = &body[..close];
        if inner.contains('\\') && quote == '"' {
            return None;
        }
        let after = &body[close + 1..];
        if after.starts_with(quote) {
            // A doubled single quote is an escape.
            return None;
        }
        let after = after.trim_start_matches(' ');
        if !(after.is_empty() || (after.starts_with('#') && body[close + 1..].starts_with(' '))) {
            return None;
        }
        return Some(Scalar::Str(Cow::Borrowed(inner)));
    }
    let value = match text.find(" #") {
        Some(at) => &text[..at],
        None => text,
    }
    .trim_end_matches(' ');
    let first = value.chars().next()?;
    let plain = (first.is_ascii_alphabetic() || !first.is_ascii())
        && !value.contains(':')
        && !value.contains(" #");
    if !plain {
        return None;
    }
    match value {
        "true" | "True" | "TRUE" => Some(Scalar::Bool(true)),
        "false" | "False" | "FALSE" => Some(Scalar::Bool(false)),
        "null" | "Null" | "NULL" => Some(Scalar::Null),
        _ if is_special_word(value) => None,
        _ => Some(Scalar::Str(Cow::Borrowed(value))),
    }
}

/// Words some YAML readers take for something other than a string (booleans,
/// nulls, infinities, not-a-number), in any case.
fn is_special_word(word: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "yes", "n", "no", "on", "off", "true", "false", "null", "inf", "infinity", "nan",
    ];
    word.len() <= 8 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
