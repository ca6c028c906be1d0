//! The CSV reader on any bytes: never a panic, every error located.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::manifest::{Format, ParseOptions, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    };
    match parse_bytes(data, Format::Csv, "f.csv", &opts) {
        Ok(parsed) => {
            for error in &parsed.errors {
                assert_eq!(error.file, "f.csv");
                assert!(error.line.is_some(), "a CSV row error names its line: {error}");
            }
        }
        Err(error) => assert_eq!(error.file, "f.csv"),
    }
});
