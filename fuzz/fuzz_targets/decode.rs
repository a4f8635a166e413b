//! Fuzzes the client-frame decoder: `ClientMsg::decode` must return for any text, never
//! panic; what it accepts must re-encode and decode to the same value; what it refuses must
//! be `bad_frame` or `unknown_type`. tests/proptest_frames.rs checks the same property.
#![no_main]

use confab::protocol::{ClientMsg, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frames are WebSocket text frames, so UTF-8; anything else never reaches the decoder.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientMsg::decode(text) {
        Ok(msg) => {
            let wire = serde_json::to_string(&msg).expect("a ClientMsg serialises");
            assert_eq!(ClientMsg::decode(&wire), Ok(msg), "round trip through {wire}");
        }
        Err(err) => {
            assert!(matches!(err.code, ErrorCode::BadFrame | ErrorCode::UnknownType), "{err:?}");
        }
    }
});
