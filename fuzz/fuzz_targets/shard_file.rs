//! Feeds bytes to the shard-file decoder workers use, and checks that it does
//! not panic and that a decoded shard has one label per example, or one
//! real-valued target per example for a regression shard (`classes` 0).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(shard) = downpour_data::shard_file::decode(data) {
        if shard.is_regression() {
            assert_eq!(shard.targets.len(), shard.len());
            assert!(shard.labels.is_empty());
        } else {
            assert_eq!(shard.labels.len(), shard.len());
            assert!(shard.targets.is_empty());
        }
    }
});
