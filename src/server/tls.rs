//! Built-in TLS for the public listener (`[server] tls_cert` and `tls_key`): the two PEM files,
//! read once at start-up into a rustls server configuration. Every problem with them stops the
//! start with a [`TlsError`] naming the key at fault, before anything listens.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};

const CERT_KEY: &str = "server.tls_cert";
const KEY_KEY: &str = "server.tls_key";

/// Far above any certificate chain or key; a larger file is a mistake, so it is not read whole.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The one protocol the listener offers: HTTP/1.1, as without TLS (docs/architecture.md,
/// "HTTP/1.1 only"). A client that offers only `h2` is refused during the handshake.
const ALPN_HTTP_11: &[u8] = b"http/1.1";

/// What is wrong with `[server] tls_cert` or `tls_key`; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("config key {key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("config key {key}: {} is larger than 1 MiB, not a PEM file", path.display())]
    TooLarge { key: &'static str, path: PathBuf },
    #[error("config key {key}: {} is not valid PEM: {problem}", path.display())]
    Malformed {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "config key server.tls_cert: {} holds no certificate (a PEM \"CERTIFICATE\" block){hint}",
        path.display()
    )]
    NoCertificate { path: PathBuf, hint: &'static str },
    #[error("config key server.tls_cert: certificate {index} in {} cannot be parsed: {problem}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        problem: String,
    },
    #[error(
        "config key server.tls_key: {} holds no private key (a PEM \"PRIVATE KEY\", \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block){hint}",
        path.display()
    )]
    NoKey { path: PathBuf, hint: &'static str },
    #[error("config key server.tls_key: the key in {} cannot be used: {problem}", path.display())]
    UnusableKey { path: PathBuf, problem: String },
    #[error(
        "config key server.tls_key: the key in {} does not belong to the certificate in {}",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        key_path: PathBuf,
        cert_path: PathBuf,
    },
    #[error("config key server.tls_cert: rustls refused the certificate: {problem}")]
    Rejected { problem: String },
    /// rustls refused the configuration itself (not expected with the ring provider).
    #[error("TLS set-up: {problem}")]
    Setup { problem: String },
}

impl TlsError {
    /// The configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::TooLarge { key, .. }
            | TlsError::Malformed { key, .. } => key,
            TlsError::NoCertificate { .. }
            | TlsError::BadCertificate { .. }
            | TlsError::Rejected { .. }
            | TlsError::Setup { .. } => CERT_KEY,
            TlsError::NoKey { .. }
            | TlsError::UnusableKey { .. }
            | TlsError::KeyMismatch { .. } => KEY_KEY,
        }
    }
}

/// The rustls configuration of the public listener, from the files `[server] tls_cert` and
/// `tls_key` name: see [`server_config_from_pem`].
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let cert_pem = read_pem(CERT_KEY, cert_path)?;
    let key_pem = read_pem(KEY_KEY, key_path)?;
    server_config_from_pem(cert_path, &cert_pem, key_path, &key_pem)
}

/// The rustls configuration of the public listener: the chain of `cert_pem` (leaf first), the
/// first key of `key_pem` (PKCS#8, PKCS#1 RSA or SEC1), checked to belong to the leaf; TLS 1.2
/// and 1.3; ALPN `http/1.1` only. The paths are only for messages. The ring provider is named
/// here, so no process-wide default provider is needed.
pub fn server_config_from_pem(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let chain = certificates(cert_path, cert_pem)?;
    let key = private_key(key_path, key_pem)?;
    let certified = certified_key(chain, key, (cert_path, key_path), &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup {
            problem: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_HTTP_11.to_vec()];
    Ok(config)
}

/// The chain and its key, checked to belong together.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    (cert_path, key_path): (&Path, &Path),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnusableKey {
                path: key_path.to_path_buf(),
                problem: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key that cannot tell its public half is taken on trust, as rustls itself does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key_path: key_path.to_path_buf(),
                cert_path: cert_path.to_path_buf(),
            })
        }
        Err(e) => Err(TlsError::Rejected {
            problem: e.to_string(),
        }),
    }
}

/// The file's bytes, at most [`MAX_PEM_BYTES`] of them.
fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` block of the file, in order, each one parsed (a chain with a broken
/// intermediate would only fail in clients, one handshake at a time).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(CERT_KEY, path, e))?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(pem).is_ok() {
            " but a private key: are server.tls_cert and server.tls_key swapped?"
        } else {
            ""
        };
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            hint,
        });
    }
    for (index, cert) in chain.iter().enumerate() {
        ParsedCertificate::try_from(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            index: index + 1,
            problem: e.to_string(),
        })?;
    }
    Ok(chain)
}

/// The file's first private key.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let text = String::from_utf8_lossy(pem);
            let hint = if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                "; an encrypted key is not read: decrypt it first (openssl pkcs8 -in … -out …)"
            } else if text.contains("-----BEGIN CERTIFICATE-----") {
                " but a certificate: are server.tls_cert and server.tls_key swapped?"
            } else {
                ""
            };
            Err(TlsError::NoKey {
                path: path.to_path_buf(),
                hint,
            })
        }
        Err(e) => Err(malformed(KEY_KEY, path, e)),
    }
}

fn malformed(key: &'static str, path: &Path, error: pem::Error) -> TlsError {
    TlsError::Malformed {
        key,
        path: path.to_path_buf(),
        problem: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use base64::Engine as _;

    use super::*;

    const CERT: &str = "/etc/tributary/cert.pem";
    const KEY: &str = "/etc/tributary/key.pem";

    /// A self-signed certificate for localhost and its PKCS#8 key, both PEM.
    fn self_signed() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn load(cert: &str, key: &str) -> Result<ServerConfig, TlsError> {
        server_config_from_pem(
            Path::new(CERT),
            cert.as_bytes(),
            Path::new(KEY),
            key.as_bytes(),
        )
    }

    fn error(cert: &str, key: &str) -> TlsError {
        load(cert, key).expect_err("refused")
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The DER element at the start of `der`: (tag, contents, rest). Short test inputs only.
    fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (der[0], der[1]);
        let (len, start) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            let len = der[2..2 + n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, 2 + n)
        };
        (tag, &der[start..start + len], &der[start + len..])
    }

    /// The SEC1 `ECPrivateKey` inside a PKCS#8 EC key: the `privateKey` OCTET STRING, the
    /// third element of the `PrivateKeyInfo` sequence.
    fn sec1_of(pkcs8_pem: &str) -> String {
        let PrivateKeyDer::Pkcs8(pkcs8) =
            PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap()
        else {
            panic!("rcgen writes PKCS#8")
        };
        let (_, info, _) = der_element(pkcs8.secret_pkcs8_der());
        let (_, _, rest) = der_element(info); // version
        let (_, _, rest) = der_element(rest); // algorithm
        let (tag, sec1, _) = der_element(rest);
        assert_eq!(tag, 0x04, "OCTET STRING");
        pem_block("EC PRIVATE KEY", sec1)
    }

    #[test]
    fn a_pkcs8_key_and_its_certificate_give_http_1_1_only() {
        let (cert, key) = self_signed();
        let config = load(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        // A chain: the leaf, then more certificates (here a second self-signed one).
        let (other, _) = self_signed();
        load(&format!("{cert}{other}"), &key).unwrap();
    }

    #[test]
    fn a_sec1_key_loads() {
        let (cert, key) = self_signed();
        let sec1 = sec1_of(&key);
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        load(&cert, &sec1).unwrap();
    }

    #[test]
    fn a_file_that_is_not_pem_names_its_key() {
        let (cert, key) = self_signed();
        let e = error("hello, world\n", &key);
        assert_eq!(e.key(), "server.tls_cert");
        assert_eq!(
            e.to_string(),
            "config key server.tls_cert: /etc/tributary/cert.pem holds no certificate (a PEM \
             \"CERTIFICATE\" block)"
        );
        let e = error(&cert, "\u{0}\u{1}binary");
        assert_eq!(e.key(), "server.tls_key");
        assert!(
            e.to_string().starts_with(
                "config key server.tls_key: /etc/tributary/key.pem holds no private key"
            ),
            "{e}"
        );
        assert_eq!(error("", &key).key(), "server.tls_cert");
        assert_eq!(error(&cert, "").key(), "server.tls_key");
    }

    #[test]
    fn broken_pem_names_its_key() {
        let (cert, key) = self_signed();
        // No END line.
        let cut = &cert[..cert.find("-----END").unwrap()];
        let e = error(cut, &key);
        assert!(
            matches!(
                e,
                TlsError::Malformed {
                    key: "server.tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("is not valid PEM"), "{e}");
        // Not base64 inside.
        let e = error(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            &key,
        );
        assert!(
            matches!(
                e,
                TlsError::Malformed {
                    key: "server.tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = error(
            &cert,
            "-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n",
        );
        assert!(
            matches!(
                e,
                TlsError::Malformed {
                    key: "server.tls_key",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn blocks_that_are_not_a_certificate_or_a_key() {
        let (cert, key) = self_signed();
        let e = error(&pem_block("CERTIFICATE", b"not a certificate"), &key);
        assert!(
            matches!(e, TlsError::BadCertificate { index: 1, .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(
            "config key server.tls_cert: certificate 1 in /etc/tributary/cert.pem cannot be parsed"
        ));
        // A broken intermediate is found too.
        let chain = format!("{cert}{}", pem_block("CERTIFICATE", &[0x30, 0x03, 1, 2, 3]));
        assert!(matches!(
            error(&chain, &key),
            TlsError::BadCertificate { index: 2, .. }
        ));
        let e = error(&cert, &pem_block("PRIVATE KEY", b"not a key"));
        assert!(matches!(e, TlsError::UnusableKey { .. }), "{e:?}");
        assert_eq!(e.key(), "server.tls_key");
    }

    #[test]
    fn a_key_for_another_certificate() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let e = error(&cert, &other_key);
        assert_eq!(e.key(), "server.tls_key");
        assert_eq!(
            e.to_string(),
            "config key server.tls_key: the key in /etc/tributary/key.pem does not belong to the \
             certificate in /etc/tributary/cert.pem"
        );
    }

    #[test]
    fn swapped_files_and_encrypted_keys_are_explained() {
        let (cert, key) = self_signed();
        let e = error(&key, &cert);
        assert_eq!(e.key(), "server.tls_cert");
        assert!(e
            .to_string()
            .ends_with("are server.tls_cert and server.tls_key swapped?"));
        let e = load(&cert, &cert).unwrap_err();
        assert_eq!(e.key(), "server.tls_key");
        assert!(e
            .to_string()
            .ends_with("are server.tls_cert and server.tls_key swapped?"));
        let encrypted = pem_block("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]);
        let e = error(&cert, &encrypted);
        assert_eq!(e.key(), "server.tls_key");
        assert!(
            e.to_string().contains("an encrypted key is not read"),
            "{e}"
        );
    }

    #[test]
    fn files_that_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        server_config(&cert_path, &key_path).unwrap();

        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &key_path).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Read {
                    key: "server.tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(&format!(
            "config key server.tls_cert: cannot read {}: ",
            missing.display()
        )));
        let e = server_config(&cert_path, dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Read {
                    key: "server.tls_key",
                    ..
                }
            ),
            "{e:?}"
        );

        let big = dir.path().join("big.pem");
        let mut text = cert.clone();
        while text.len() as u64 <= MAX_PEM_BYTES {
            text.push_str(&cert);
        }
        std::fs::write(&big, text).unwrap();
        let e = server_config(&big, &key_path).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::TooLarge {
                    key: "server.tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
