//! Payroc CloudEvent bodies: never a panic, never a customer stop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::config::{PayrocPause, Secret};
use paystar_sync::providers::payroc::{PayrocReceiver, Verdict};
use paystar_sync::store::EventOutcome;

fuzz_target!(|data: &[u8]| {
    let receiver = PayrocReceiver {
        secret: Secret::new("hook-secret"),
        pause: Some(PayrocPause {
            business_units: vec!["water-bill-pay".into()],
            statuses: vec!["terminated".into()],
            processing_accounts: None,
        }),
    };
    let header = |name: &str| (name == "payroc-secret").then(|| "hook-secret".to_owned());
    if let Verdict::Record(event) = receiver.receive(&header, data) {
        assert_ne!(event.outcome, EventOutcome::Stop);
        assert!(!event.event_id.is_empty());
    }
});
