//! The CSV reader on any bytes: never a panic, every error located, and the
//! two-part read (split near the middle, on two threads) exactly the one-part read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::manifest::{Format, ParseOptions, parse_bytes};

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
});
