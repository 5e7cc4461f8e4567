//! Fuzzes the frame decoder: it must never panic, and whatever it accepts must
//! re-encode to exactly the input (one encoding per value).
#![no_main]

use agentwire_wire::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data);
    }
    let _ = Frame::peek_header(data);
});
