//! Feeds bytes to the IDX parser, raw or gzipped, and checks that it does not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = downpour_data::idx::parse_idx(std::path::Path::new("fuzz.idx"), data.to_vec());
});
