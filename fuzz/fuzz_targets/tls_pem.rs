//! TLS files: `[server] tls_cert` and `tls_key` as the public listener reads them at start-up.
//! Whatever the bytes, the answer is a configuration offering HTTP/1.1 only, or an error that
//! names one of the two keys.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tributary::server::tls::server_config_from_pem;

fuzz_target!(|data: &[u8]| {
    // Bytes before the first 0xFF are the certificate file, the rest the key file.
    let (cert, key) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    match server_config_from_pem(Path::new("cert.pem"), cert, Path::new("key.pem"), key) {
        Ok(config) => assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]),
        Err(e) => {
            let key = e.key();
            assert!(key == "server.tls_cert" || key == "server.tls_key");
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("config key {key}: "))
                    || message.starts_with("TLS set-up: "),
                "{message}"
            );
        }
    }
});
