//! Feeds bytes to the shard-file decoder workers use, and checks that it does
//! not panic and that a decoded shard has as many labels as examples.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(shard) = downpour_data::shard_file::decode(data) {
        assert_eq!(shard.labels.len(), shard.len());
    }
});
