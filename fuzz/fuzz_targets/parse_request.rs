//! cargo-fuzz entry for `agentwire_fuzz_targets::parse_request` (see that function).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentwire_fuzz_targets::parse_request(data));
