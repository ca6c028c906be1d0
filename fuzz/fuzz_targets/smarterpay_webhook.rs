//! SmarterPay webhook bodies: never a panic; a stop only from an inactive status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::config::Secret;
use paystar_sync::providers::smarterpay::{Auth, SmarterPay, Verdict};
use paystar_sync::store::EventOutcome;

fuzz_target!(|data: &[u8]| {
    let receiver = SmarterPay {
        auth: Auth::Basic {
            user: Secret::new("sp-user"),
            password: Secret::new("sp-pass"),
        },
        account_field: "reference".into(),
        business_unit: "water-bill-pay".into(),
    };
    let header = |name: &str| (name == "authorization").then(|| "Basic c3AtdXNlcjpzcC1wYXNz".to_owned());
    if let Verdict::Record { events, .. } = receiver.receive(&header, data) {
        let text = String::from_utf8_lossy(data);
        for event in events {
            assert!(!event.event_id.is_empty());
            if event.outcome == EventOutcome::Stop {
                assert!(text.contains("inactive"));
            }
        }
    }
});
