//! The CSV reader on any bytes: never a panic, every error located, the
//! two-part read (split near the middle, on two threads) exactly the one-part
//! read, and, where the reader accepts the file, its records exactly those of
//! a plain `csv` crate reader (the reference twin: no split, no quote check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::manifest::{Format, ParseOptions, csv_records, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    };
    let one = parse_bytes(data, Format::Csv, "f.csv", &opts);
    let two = paystar_sync::manifest::parse_csv_in_parts(data, "f.csv", &opts, 0);
    assert_eq!(one, two, "the two-part read differs from the one-part read");
    match one {
        Ok(parsed) => {
            for error in &parsed.errors {
                assert_eq!(error.file, "f.csv");
                assert!(error.line.is_some(), "a CSV row error names its line: {error}");
            }
        }
        Err(error) => assert_eq!(error.file, "f.csv"),
    }
    // The reference twin, where the two read the same dialect by design: UTF-8
    // without a BOM or a sep= line, commas, and no CR but in CRLF.
    let lone_cr = data
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && data.get(i + 1) != Some(&b'\n'));
    if std::str::from_utf8(data).is_err()
        || data.starts_with(b"\xEF\xBB\xBF")
        || data.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"sep="))
        || lone_cr
    {
        return;
    }
    let comma = ParseOptions {
        delimiter: Some(b','),
        ..ParseOptions::default()
    };
    let Ok(ours) = csv_records(data, Format::Csv, "f.csv", &comma) else {
        return; // strict quoting refused what the plain reader would guess at
    };
    let blank = |fields: &[String]| fields.iter().all(String::is_empty);
    let ours: Vec<Vec<String>> = ours
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| !blank(f))
        .collect();
    let theirs: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data)
        .records()
        .map(|r| r.expect("valid UTF-8 reads").iter().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| !blank(f))
        .collect();
    assert_eq!(ours, theirs, "the reader's records differ from the csv crate's");
});
