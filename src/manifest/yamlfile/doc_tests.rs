//! Tests of the typed YAML reader.

use super::merge::SCALAR_IN_MERGE;
use super::*;

/// `customers:` then a list nested `depth` levels inside one field's value.
fn nested_in_a_field(depth: usize) -> String {
    let mut text = String::from("customers:\n  - firstName:\n");
    for level in 0..depth {
        text.push_str(&format!("{}-\n", "    ".repeat(level + 1)));
    }
    text
}

#[test]
fn block_nesting_is_counted_as_it_is_read() {
    // The document is level 0, the list 1, the entry 2, the field's value 3.
    assert!(read(&nested_in_a_field(MAX_DEPTH - 3)).is_ok());
    match read(&nested_in_a_field(MAX_DEPTH - 2)) {
        Err(DocError::TooDeep(Some(_))) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn strings_borrow_from_the_text_and_merged_keys_never_replace_a_key() {
    let text =
        "x-b: &b {lastName: Smith, firstName: Jo}\ncustomers:\n  - firstName: Ann\n    <<: *b\n";
    let Doc::Map(top) = read(text).unwrap() else {
        panic!("not a mapping")
    };
    let Customers::List(entries) = top.customers else {
        panic!("no list")
    };
    let Entry::Fields(fields) = &entries[0] else {
        panic!("not fields")
    };
    let names: Vec<_> = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        names,
        [
            (Key::Str("firstName".into()), Scalar::Str("Ann".into())),
            (Key::Str("lastName".into()), Scalar::Str("Smith".into())),
        ]
    );
    assert!(matches!(&fields[0].1, Scalar::Str(Cow::Borrowed(_))));
}

#[test]
fn a_duplicate_key_and_a_bad_merge_are_errors() {
    let dup = read("customers:\n  - firstName: A\n    firstName: B\n").unwrap_err();
    assert!(
        matches!(&dup, DocError::Syntax(e) if e.to_string().contains("duplicate entry with key \"firstName\"")),
        "{dup:?}"
    );
    let merge = read("customers:\n  - <<: 3\n").unwrap_err();
    assert!(
        matches!(merge, DocError::Merge(SCALAR_IN_MERGE, Some(2))),
        "{merge:?}"
    );
    assert!(matches!(
        read("<<: {a: 1}\ncustomers: []\n").unwrap_err(),
        DocError::TopLevelMerge
    ));
}

#[test]
fn a_number_too_big_for_64_bits_is_still_a_number() {
    let Doc::List(entries) = read("- accountNumber: 123456789012345678901234567890\n").unwrap()
    else {
        panic!("not a list")
    };
    assert_eq!(
        entries[0],
        Entry::Fields(vec![(
            Key::Str("accountNumber".into()),
            Scalar::Number("123456789012345678901234567890".into())
        )])
    );
}
