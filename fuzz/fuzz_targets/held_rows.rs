//! A file's stored rows read back from any bytes (a damaged state): never a
//! panic, and what is accepted is in key order and writes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystar_sync::store::HeldRows;

fuzz_target!(|data: &[u8]| {
    if let Some(held) = HeldRows::decode(data) {
        assert_eq!(held.encode(), data);
        let rows: Vec<_> = held.iter().collect();
        assert!(rows.windows(2).all(|w| w[0].key < w[1].key));
        assert_eq!(rows.len(), held.len());
    }
});
