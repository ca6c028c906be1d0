//! The YAML reader on any bytes: never a panic, every error names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::manifest::{Format, ParseOptions, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    };
    match parse_bytes(data, Format::Yaml, "f.yaml", &opts) {
        Ok(parsed) => assert!(parsed.errors.iter().all(|e| e.file == "f.yaml")),
        Err(error) => assert_eq!(error.file, "f.yaml"),
    }
});
