//! The config loader on any text: never a panic, every problem said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(err) = Config::parse(&text, Path::new("/etc/paystar-sync/config.yaml")) {
        assert!(!err.problems.is_empty());
        assert!(err.problems.iter().all(|p| !p.trim().is_empty()));
    }
});
