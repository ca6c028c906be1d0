//! The YAML reader on any bytes: never a panic, every error names the file, and
//! the fast path for plain block documents reads exactly as the full reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::manifest::{Format, ParseOptions, parse_bytes, parse_yaml_in_full};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    };
    let read = parse_bytes(data, Format::Yaml, "f.yaml", &opts);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            read,
            parse_yaml_in_full(text, "f.yaml", &opts),
            "the fast path reads differently from the full reader"
        );
    }
    match read {
        Ok(parsed) => assert!(parsed.errors.iter().all(|e| e.file == "f.yaml")),
        Err(error) => assert_eq!(error.file, "f.yaml"),
    }
});
