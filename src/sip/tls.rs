//! TLS server settings for SIP over TLS (RFC 3261 §26.2, RFC 5630): the
//! certificate chain and key read from PEM files. The transport swaps in
//! a freshly read set on reload; connections already open keep theirs.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

/// Which of the two files a fault is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    Certificate,
    PrivateKey,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsFileError {
    pub file: PemFile,
    pub path: String,
    pub reason: String,
}

/// Reads the certificate chain and key into a rustls server config
/// (TLS 1.2 and 1.3, no client certificates).
pub fn server_config(certificate: &Path, private_key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let fault = |file, path: &Path, reason: String| TlsFileError {
        file,
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| fault(PemFile::Certificate, certificate, pem_reason(e)))?;
    if chain.is_empty() {
        return Err(fault(
            PemFile::Certificate,
            certificate,
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| fault(PemFile::PrivateKey, private_key, pem_reason(e)))?;
    let provider = ring();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map(Arc::new)
        .map_err(|e| {
            fault(
                PemFile::PrivateKey,
                private_key,
                format!("does not go with the certificate: {e}"),
            )
        })
}

/// TLS client settings for connections to providers: certificates checked
/// against `ca_file` (PEM) when given, else the Mozilla roots
/// (webpki-roots).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let fault = |reason: String| TlsFileError {
                file: PemFile::Certificate,
                path: path.display().to_string(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| fault(pem_reason(e)))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| fault(format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(fault("no CERTIFICATE block in the file".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = ring();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError {
            file: PemFile::Certificate,
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The crypto both sides use: ring, not aws-lc-rs (no C/CMake build step).
/// rustls marks it deprecated for lacking post-quantum key exchange, which
/// SIP phones and providers do not offer.
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn reads_a_matching_pair_and_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        assert!(server_config(&cert, &key).is_ok());
        let e = server_config(&dir.path().join("missing.pem"), &key).unwrap_err();
        assert_eq!(e.file, PemFile::Certificate);
        assert!(e.to_string().contains("missing.pem: cannot read"), "{e}");
        // A key file given as the certificate: no certificate in it.
        let e = server_config(&key, &key).unwrap_err();
        assert_eq!(e.file, PemFile::Certificate);
        // The key of another certificate.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path());
        let e = server_config(&cert, &other_key).unwrap_err();
        assert_eq!(e.file, PemFile::PrivateKey);
        assert!(e.to_string().contains("does not go with the certificate"), "{e}");
    }
}
