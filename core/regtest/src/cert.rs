//! The RPC server's TLS certificate.
//!
//! btcd generates a P-521 certificate by default, which rustls (and webpki) cannot verify, so
//! the harness hands btcd its own self-signed P-256 certificate for 127.0.0.1 and localhost.

use std::path::{Path, PathBuf};

use super::RegtestError;

/// A certificate and its private key, both PEM.
pub(crate) struct CertPem {
    pub cert: String,
    pub key: String,
}

/// Generates a fresh self-signed P-256 certificate valid for `127.0.0.1` and `localhost`.
pub(crate) fn generate() -> Result<CertPem, RegtestError> {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert, key) =
        flotilla_host::signer_client::tls::self_signed_p256(names, "flotilla regtest btcd")
            .map_err(|e| RegtestError::Cert(e.to_string()))?;
    Ok(CertPem { cert, key })
}

/// Writes a fresh certificate and key into `dir` (key readable by the owner only) and returns
/// their paths.
pub(crate) fn write(dir: &Path) -> Result<(PathBuf, PathBuf), RegtestError> {
    let pem = generate()?;
    let (cert_path, key_path) = paths(dir);
    write_file(&key_path, pem.key.as_bytes(), 0o600)?;
    write_file(&cert_path, pem.cert.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Where [`write`] puts the certificate and the key; a restart reuses them, so clients that
/// already trust the certificate keep working.
pub(crate) fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("rpc.cert"), dir.join("rpc.key"))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RegtestError> {
    flotilla_host::signer_client::tls::write_file(path, bytes, mode)
        .map_err(|e| RegtestError::io(format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::RootCertStore;

    use super::*;

    /// DER encoding of the named-curve OID 1.2.840.10045.3.1.7 (P-256).
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    #[test]
    fn cert_is_p256_and_rustls_accepts_it_for_both_names() {
        let pem = generate().unwrap();
        let der = CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap();
        assert!(der.windows(P256_OID.len()).any(|w| w == P256_OID));
        let key = KeyPair::from_pem(&pem.key).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);

        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        for name in ["127.0.0.1", "localhost"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        // A name not in the SANs must be refused, or the check above proves nothing.
        let other = ServerName::try_from("example.com").unwrap();
        assert!(verifier
            .verify_server_cert(&der, &[], &other, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn writes_key_private_and_replaces_old_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert1, key1) = write(dir.path()).unwrap();
        let first = std::fs::read_to_string(&cert1).unwrap();
        let (cert2, key2) = write(dir.path()).unwrap();
        assert_eq!((&cert1, &key1), (&cert2, &key2));
        assert_ne!(first, std::fs::read_to_string(&cert2).unwrap());
        let mode = std::fs::metadata(&key2).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
