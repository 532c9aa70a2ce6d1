//! Feeds bytes to the checkpoint decoder, and checks that it does not panic
//! and that a restored store re-encodes to a checkpoint with the same θ.
#![no_main]

use downpour_ps::ParamStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = ParamStore::decode_checkpoint(data) {
        let again = ParamStore::decode_checkpoint(&store.encode_checkpoint())
            .expect("a store's own checkpoint restores");
        assert_eq!(again.version(), store.version());
        let same = again
            .params()
            .iter()
            .zip(store.params())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same);
    }
});
