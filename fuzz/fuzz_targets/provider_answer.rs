//! Provider answer parsing: an HTTP status (picked by the first byte) and an untrusted body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::provider::parse_answer;

const STATUSES: [u16; 3] = [200, 204, 500];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(first) % STATUSES.len()];
    if let Ok(answer) = parse_answer(status, body) {
        let _ = answer.outcome();
    }
});
