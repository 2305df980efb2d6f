//! `/event` parameter parsing: query string, optional form body, then JSONP rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::core::request::parse_event;
use tributary::core::response::EventBody;

fuzz_target!(|data: &[u8]| {
    // Bytes before the first 0xFF are the query; the rest (if any) is the POST body.
    // 0xFF never appears in valid UTF-8, so it cannot be confused with real parameters.
    let (query, body) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if let Ok(req) = parse_event(query, body) {
        let _ = EventBody::default().render(req.callback.as_deref());
    }
});
