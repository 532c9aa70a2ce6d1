//! IDX files, raw or gzipped: parsing never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = downpour_data::idx::parse_idx(std::path::Path::new("fuzz.idx"), data.to_vec());
});
