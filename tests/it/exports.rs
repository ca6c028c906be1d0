//! SPEC §3, the files people really have: `tests/corpus/exports/` holds
//! manifests shaped byte for byte as Excel, Google Sheets, LibreOffice, Numbers
//! and Windows Notepad write them (`tests/corpus/make.py` writes them), and
//! `tests/corpus/expected.json` what each must read as. Workbooks are written
//! here by a real spreadsheet writer (rust_xlsxwriter).

use crate::support::{BASE_CONFIG, Project, error_lines};
use paystar_sync::manifest::discover::{format_of, lookalike_advice};
use paystar_sync::manifest::{ParseOptions, ParsedFile, parse_bytes};
use rust_xlsxwriter::{Formula, Workbook};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(corpus().join("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("expected.json is JSON") {
        Value::Object(map) => map,
        other => panic!("expected.json is not an object: {other}"),
    }
}

/// What the corpus is read with: the config of the folder test below.
fn opts() -> ParseOptions {
    ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        encoding: Some(encoding_rs::WINDOWS_1252),
        ..ParseOptions::default()
    }
}

/// `key|first|last|email|autopay` for each row, in file order.
fn customers(parsed: &ParsedFile) -> Vec<String> {
    parsed
        .rows
        .iter()
        .map(|r| {
            let f = r.fields();
            let autopay = r.autopay.map_or(String::new(), |a| a.to_string());
            format!(
                "{}|{}|{}|{}|{autopay}",
                r.key(),
                f.first_name,
                f.last_name,
                f.email
            )
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn every_export_in_the_corpus_reads_as_its_expected_customers_errors_and_warnings() {
    let expected = expected();
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus().join("exports"))
        .expect("corpus folder")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let listed: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "every export has an expectation, and only those"
    );
    for (name, want) in &expected {
        let bytes = std::fs::read(corpus().join("exports").join(name)).unwrap();
        if let Some(advice) = want.get("not_a_manifest") {
            assert_eq!(format_of(name), None, "{name} is not a manifest");
            let advice = advice.as_str().unwrap();
            match lookalike_advice(name) {
                Some(said) => assert!(said.contains(advice), "{name}: {said}"),
                None => assert!(advice.is_empty(), "{name} gets no advice"),
            }
            continue;
        }
        let format = format_of(name).unwrap_or_else(|| panic!("{name} is a manifest"));
        let parsed = parse_bytes(&bytes, format, name, &opts());
        if let Some(error) = want.get("file_error") {
            let error = error.as_str().unwrap();
            let (line, text) = error.split_once(' ').unwrap();
            let got = parsed.expect_err(name);
            assert_eq!(got.line, Some(line.parse().unwrap()), "{name}: {got}");
            assert!(got.reason.contains(text), "{name}: {got}");
            continue;
        }
        let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(customers(&parsed), strings(&want["customers"]), "{name}");
        if let Some(lines) = want.get("lines") {
            let got: Vec<u64> = parsed.rows.iter().map(|r| u64::from(r.line)).collect();
            let lines: Vec<u64> = lines
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap())
                .collect();
            assert_eq!(got, lines, "{name}: lines");
        }
        let errors = strings(&want["errors"]);
        assert_eq!(
            parsed.errors.len(),
            errors.len(),
            "{name}: {:?}",
            parsed.errors
        );
        for (got, want) in parsed.errors.iter().zip(&errors) {
            let mut parts = want.splitn(3, ' ');
            let (line, field, text) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert_eq!(got.line, Some(line.parse().unwrap()), "{name}: {got}");
            assert_eq!(got.field.as_deref(), Some(field), "{name}: {got}");
            assert!(got.reason.contains(text), "{name}: {got}");
        }
        let warnings = strings(&want["warnings"]);
        assert_eq!(
            parsed.warnings.len(),
            warnings.len(),
            "{name}: {:?}",
            parsed.warnings
        );
        for (got, want) in parsed.warnings.iter().zip(&warnings) {
            assert!(got.contains(want.as_str()), "{name}: {got}");
        }
        for text in parsed
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(parsed.warnings.iter().cloned())
            .chain(customers(&parsed))
        {
            assert!(!text.contains('\r'), "{name}: a CR reached {text:?}");
        }
    }
}

#[test]
fn the_corpus_dropped_in_one_folder_plans_every_customer_and_names_every_problem() {
    let config = BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  csv: { encoding: windows-1252 }\n",
    );
    let p = Project::with_config(&config);
    let expected = expected();
    for name in expected.keys() {
        p.file(
            name,
            std::fs::read(corpus().join("exports").join(name)).unwrap(),
        );
    }
    let plan = p.plan_json();
    let mut want_errors: Vec<String> = Vec::new();
    let mut creates = 0;
    for (name, want) in &expected {
        creates += strings(&want["customers"]).len();
        for error in strings(&want["errors"]) {
            let mut parts = error.splitn(3, ' ');
            let (line, field) = (parts.next().unwrap(), parts.next().unwrap());
            want_errors.push(format!("{name}:{line} {field} [row]"));
        }
        if let Some(error) = want.get("file_error") {
            let line = error.as_str().unwrap().split(' ').next().unwrap();
            want_errors.push(format!("{name}:{line} [file]"));
        }
    }
    want_errors.sort();
    let mut got_errors = error_lines(&plan);
    got_errors.sort();
    assert_eq!(got_errors, want_errors);
    let created = p
        .plan_lines()
        .iter()
        .filter(|l| l.contains("ManageCustomer create"))
        .count();
    assert_eq!(created, creates);
    let warnings = strings(&plan["warnings"]);
    for (file, says) in [
        ("old-export.xls", "save it as Excel Workbook (.xlsx)"),
        ("excel-unicode-text.txt", "rename it to .tsv"),
        ("excel-csv-utf8.csv", "ignoring column(s) \"Notes\""),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(file) && w.contains(says)),
            "{file}: {warnings:?}"
        );
    }
    assert!(!warnings.iter().any(|w| w.contains("~$")), "{warnings:?}");
    // validate prints each warning once, each error once, and never a CR.
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(!run.stdout.contains('\r') && !run.stderr.contains('\r'));
    assert_eq!(
        (
            run.stdout.matches("old-export.xls").count(),
            run.stderr.matches("old-export.xls").count()
        ),
        (1, 0),
        "{run:?}"
    );
}

#[test]
fn an_empty_manifests_folder_is_warned_about_by_validate_and_plan() {
    let p = Project::new();
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("holds no manifests"), "{run:?}");
    let plan = p.plan_json();
    assert!(
        strings(&plan["warnings"])
            .iter()
            .any(|w| w.contains("holds no manifests")),
        "{plan}"
    );
    let run = p.run(&["plan"]);
    assert!(run.stdout.contains("warning: manifests.dir"), "{run:?}");
}

/// A workbook as Excel users make them: a title row, a blank row, then the
/// header; a 12-digit account in a number cell, a text account with a leading
/// zero, a formula with its cached value, and an `#N/A` error cell.
fn workbook(first_sheet: &str, customers_sheet: &str) -> Vec<u8> {
    let mut book = Workbook::new();
    let notes = book.add_worksheet();
    notes.set_name(first_sheet).unwrap();
    notes.write_string(0, 0, "nothing here").unwrap();
    let sheet = book.add_worksheet();
    sheet.set_name(customers_sheet).unwrap();
    sheet
        .write_string(0, 0, "Customer export, November 2026")
        .unwrap();
    for (col, name) in [
        "Account #",
        "First Name",
        "Last Name",
        "Email",
        "Autopay",
        "Balance",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(2, col as u16, *name).unwrap();
    }
    sheet.write_number(3, 0, 123_456_789_012.0).unwrap();
    sheet.write_string(3, 1, "Ada").unwrap();
    sheet.write_string(3, 2, "Lovelace").unwrap();
    sheet.write_string(3, 3, "ada@example.com").unwrap();
    sheet.write_boolean(3, 4, true).unwrap();
    sheet.write_number(3, 5, 12.5).unwrap();
    sheet.write_string(4, 0, "00123").unwrap();
    sheet
        .write_formula(4, 1, Formula::new("=PROPER(\"grace\")").set_result("Grace"))
        .unwrap();
    sheet.write_string(4, 2, "Hopper").unwrap();
    sheet.write_string(4, 3, "grace@example.com").unwrap();
    sheet.write_string(4, 4, "no").unwrap();
    sheet.write_number(5, 0, 7.0).unwrap();
    sheet.write_string(5, 1, "Alan").unwrap();
    sheet
        .write_formula(
            5,
            2,
            Formula::new("=VLOOKUP(A6,Z1:Z2,1,FALSE)").set_result("#N/A"),
        )
        .unwrap();
    sheet.write_string(5, 3, "alan@example.com").unwrap();
    book.save_to_buffer().unwrap()
}

#[test]
fn an_xlsx_workbook_is_read_with_the_sheets_row_numbers_and_excels_number_cells() {
    let config = BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  xlsx: { sheet: Customers }\n",
    );
    let p = Project::with_config(&config);
    p.file("export.xlsx", workbook("Notes", "Customers"));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["export.xlsx:6 lastName [row]"]);
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("#N/A"),
        "{plan}"
    );
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/00123 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/00123 UnenrollAutopay autopay_false",
            "water-bill-pay/123456789012 ManageCustomer create firstName,lastName,emailAddress",
        ]
    );
    let lines: Vec<u64> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [5, 4], "the sheet's row numbers");
    let warnings = strings(&plan["warnings"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("cannot keep leading zeros")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("line(s) 1 above the header (line 3)")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ignoring column(s) \"Balance\"")),
        "{warnings:?}"
    );
}

#[test]
fn an_xlsx_workbook_without_the_configured_sheet_names_the_sheets_it_has() {
    let config = BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  xlsx: { sheet: Clients }\n",
    );
    let p = Project::with_config(&config);
    p.file("export.xlsx", workbook("Notes", "Customers"));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["export.xlsx [file]"]);
    let reason = plan["errors"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"Clients\"") && reason.contains("\"Notes\", \"Customers\""),
        "{reason}"
    );
    // Without the key, the first sheet is read: it holds no header.
    let p = Project::new();
    p.file("export.xlsx", workbook("Customers", "Second"));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["export.xlsx:1 [file]"]);
}

#[test]
fn a_damaged_or_hostile_xlsx_is_a_file_error_that_keeps_its_customers() {
    let p = Project::new();
    p.file("junk.xlsx", b"PK\x03\x04 not really a workbook");
    p.file("text.xlsx", "accountNumber,firstName\n");
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["junk.xlsx [file]", "text.xlsx [file]"]);
    for error in plan["errors"].as_array().unwrap() {
        let reason = error["reason"].as_str().unwrap();
        assert!(reason.contains("save it again from Excel"), "{reason}");
    }
}

#[test]
fn the_csv_spectrum_files_split_into_the_records_their_json_expects() {
    let dir = corpus().join("csv-spectrum");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("csvs")).expect("csv-spectrum csvs") {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let json: Value = serde_json::from_slice(
            &std::fs::read(dir.join("json").join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let records = paystar_sync::manifest::csv_records(
            &bytes,
            paystar_sync::manifest::Format::Csv,
            &name,
            &ParseOptions::default(),
        );
        // Where the two disagree by design: quoting is strict (SPEC §3), so a
        // quote inside an unquoted field (37°36'37.8"N) is an error naming its
        // line, not a character of the value.
        if name == "location_coordinates" {
            let error = records.expect_err(&name);
            assert_eq!(error.line, Some(2), "{error}");
            assert!(
                error
                    .reason
                    .contains("a quote (\") inside an unquoted field"),
                "{error}"
            );
            checked += 1;
            continue;
        }
        let records = records.unwrap_or_else(|e| panic!("{name}: {e}"));
        let header = &records[0].1;
        let rows: Vec<Value> = records[1..]
            .iter()
            .map(|(_, fields)| {
                Value::Object(
                    header
                        .iter()
                        .cloned()
                        .zip(fields.iter().map(|f| Value::String(f.clone())))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(Value::Array(rows), json, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 12);
}
