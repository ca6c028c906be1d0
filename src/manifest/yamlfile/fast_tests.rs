//! Tests of the YAML fast path: it reads what it accepts exactly as the full
//! reader does, and declines everything else.

use super::super::{ParseOptions, doc, parse, parse_in_full, text};
use super::*;
use crate::manifest::yamldepth;

/// The fast path's reading of `text`, checked against the full reader's.
fn agrees(text: &str) -> bool {
    let Some((fast, lines)) = read(text) else {
        return false;
    };
    let full = doc::read(text)
        .unwrap_or_else(|e| panic!("{e:?} for a document the fast path read:\n{text}"));
    assert_eq!(fast, full, "document:\n{text}");
    let under_key = matches!(full, Doc::Map(_));
    assert_eq!(
        text::item_lines(text, under_key),
        Some(lines),
        "document:\n{text}"
    );
    assert!(text::unquoted_numbers(text).is_empty(), "document:\n{text}");
    assert_eq!(yamldepth::too_deep_flow(text), None);
    true
}

#[test]
fn a_plain_block_manifest_is_read_on_the_fast_path_as_the_full_reader_reads_it() {
    let text = "# customers of the east office\nbusinessUnitSlug: east # the unit\ncustomers:\n  - accountNumber: \"001\"\n    firstName: Zoë\n    lastName: 'O\"Brien'\n\n    emailAddress: zoe.o@example.com # work\n    autopay: false\n  -   accountNumber: \"002\"\n      firstName: Ada Mary\n      lastName: O'Neil\n      subAccountNumber:\n      autopay: TRUE\n";
    assert!(agrees(text));
    assert!(agrees(
        "- accountNumber: \"1\"\n  firstName: A\n- accountNumber: \"2\"\n"
    ));
    assert!(agrees(
        "customers:\n- accountNumber: \"1\"\n  firstName: Null\nbusinessUnitSlug: \"west\""
    ));
}

#[test]
fn every_construct_with_a_rule_of_its_own_is_left_to_the_full_reader() {
    for text in [
        "",
        "# nothing\n",
        "customers:\n",
        "customers: []\n",
        "customers:\nbusinessUnitSlug: x\n",
        "---\n- accountNumber: \"1\"\n",
        "%YAML 1.2\n---\n- a: b\n",
        "\u{feff}- accountNumber: \"1\"\n",
        "- accountNumber: \"1\"\r\n",
        "- accountNumber:\t\"1\"\n",
        "- firstName: A\u{2028}B\n",
        "- firstName: A\u{85}B\n",
        "- {accountNumber: \"1\"}\n",
        "- firstName: [A]\n",
        "- firstName: A [B]\n",
        "- firstName: &a A\n",
        "- firstName: *a\n",
        "- firstName: !str A\n",
        "- <<: {a: 1}\n",
        "- firstName: |\n    A\n",
        "- firstName: >\n    A\n",
        "- firstName: \"A\\u00e9\"\n",
        "- firstName: 'O''Brien'\n",
        "- firstName: \"A\"B\n",
        "- firstName: \"A\n  B\"\n",
        "- firstName: A\n    B\n",
        "- firstName:\n    nested: 1\n",
        "- firstName:\n  - nested\n",
        "- accountNumber: 123\n",
        "- accountNumber: -1\n",
        "- accountNumber: .5\n",
        "- firstName: yes\n",
        "- firstName: No\n",
        "- firstName: .inf\n",
        "- firstName: Infinity\n",
        "- firstName: ~\n",
        "- firstName: a:b\n",
        "- firstName: A\n  firstName: B\n",
        "- \"firstName\": A\n",
        "- on: A\n",
        "- firstName:A\n",
        "- scalar\n",
        "-\n  firstName: A\n",
        "- firstName: A\nextra: 1\n",
        "x-base: 1\ncustomers:\n  - a: b\n",
        "businessUnitSlug: a\nbusinessUnitSlug: b\ncustomers:\n  - a: b\n",
        "customers:\n  - a: b\ncustomers:\n  - c: d\n",
        "customers:\n  - a: b\n   c: d\n",
        "customers:\n  - a: b\n - c: d\n",
        "businessUnitSlug:\ncustomers:\n  - a: b\n",
    ] {
        assert!(read(text).is_none(), "read on the fast path:\n{text}");
    }
}

/// Values the fast path reads.
const GOOD: &[&str] = &[
    "Ada",
    "Ada Mary",
    "O'Neil",
    "Zoë",
    "ada@example.com",
    "ada.lovelace.7@example.org",
    "\"007\"",
    "\"\"",
    "''",
    "'Ann'",
    "\"O'Brien\"",
    "true",
    "False",
    "NULL",
    "a # comment",
    "\"q\" # comment",
    "a#b",
    "",
    "é@example.com",
    "\u{2019}quoted\u{2019}",
    "A\u{a0}B",
];

/// Values that make it decline.
const ODD: &[&str] = &[
    "no",
    "~",
    "12",
    "0x1F",
    "-3",
    "\"a\\tb\"",
    "'it''s'",
    "\"q\"#x",
    "a: b",
    "[x]",
    "&x y",
    "*x",
    "!t y",
    "|",
];

const NAMES: &[&str] = &[
    "accountNumber",
    "firstName",
    "lastName",
    "emailAddress",
    "autopay",
    "subAccountNumber",
    "businessUnit",
    "shoeSize",
    "x-note",
    "<<",
    "on",
];

fn document(u: &mut arbtest::arbitrary::Unstructured<'_>) -> arbtest::arbitrary::Result<String> {
    let pick = |u: &mut arbtest::arbitrary::Unstructured<'_>, from: &[&'static str]| {
        u.choose_index(from.len()).map(|i| from[i])
    };
    let mut text = String::new();
    let bare = u.ratio(1, 4)?;
    let indent = if bare {
        String::new()
    } else {
        " ".repeat(u.int_in_range(0..=3)?)
    };
    if !bare {
        if u.ratio(1, 2)? {
            text.push_str("businessUnitSlug: east\n");
        }
        text.push_str("customers:\n");
    }
    for _ in 0..u.int_in_range(0..=5)? {
        let gap = " ".repeat(u.int_in_range(1..=2)?);
        let mut names: Vec<&str> = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            if u.ratio(if i < 6 { 3 } else { 1 }, if i < 6 { 4 } else { 25 })? {
                names.push(name);
            }
        }
        if u.ratio(1, 20)? {
            names.push(pick(u, NAMES)?);
        }
        for (i, name) in names.into_iter().enumerate() {
            let lead = if i == 0 {
                format!("-{gap}")
            } else {
                " ".repeat(1 + gap.len())
            };
            let from = if u.ratio(1, 30)? { ODD } else { GOOD };
            let value = pick(u, from)?;
            let sep = if value.is_empty() { ":" } else { ": " };
            text.push_str(&format!("{indent}{lead}{name}{sep}{value}\n"));
            if u.ratio(1, 10)? {
                text.push_str(["\n", "  # note\n", "# note\n", "   \n"][u.choose_index(4)?]);
            }
        }
    }
    if !bare && u.ratio(1, 4)? {
        text.push_str("businessUnitSlug: west\n");
    }
    if u.ratio(1, 10)? && !text.is_empty() {
        let at = u.choose_index(text.len())?;
        if text.is_char_boundary(at) {
            let damage = ["\"", ":", " ", "\t", "- ", "#", "\n", "'"][u.choose_index(8)?];
            text.insert_str(at, damage);
        }
    }
    Ok(text)
}

#[test]
fn the_fast_path_reads_every_generated_document_it_accepts_as_the_full_reader_does() {
    let opts = ParseOptions {
        default_business_unit: Some("water".into()),
        ..ParseOptions::default()
    };
    let (accepted, declined) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    arbtest::arbtest(|u| {
        let text = document(u)?;
        let counter = if agrees(&text) { &accepted } else { &declined };
        counter.set(counter.get() + 1);
        assert_eq!(
            parse(&text, "f.yaml", 0, &opts),
            parse_in_full(&text, "f.yaml", 0, &opts),
            "document:\n{text}"
        );
        Ok(())
    })
    .budget_ms(1500);
    // The property holds on both sides only if both sides are reached.
    assert!(accepted.get() > 50, "{} accepted", accepted.get());
    assert!(declined.get() > 50, "{} declined", declined.get());
}
