//! Certificates for the signer protocol's TLS, made here with rcgen (P-256, which rustls and
//! every gRPC client verify), never fetched.
//!
//! The hub holds a server certificate issued by a CA of its own; a signer is given only the CA
//! file. The CA's private key is used once, to issue the server certificate, and then dropped:
//! nobody can mint another certificate the signers would trust.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate a signer needs to trust the hub (give it this file).
pub const CA_FILE: &str = "signer-ca.pem";
/// The hub's server certificate.
pub const CERT_FILE: &str = "signer-hub.pem";
/// The hub's server key (owner-readable only).
pub const KEY_FILE: &str = "signer-hub.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no usable PEM {1}")]
    Pem(PathBuf, &'static str),
}

/// The hub's TLS material, all PEM.
#[derive(Clone)]
pub struct HubTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for HubTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTls").finish_non_exhaustive()
    }
}

impl HubTls {
    /// A fresh CA and a server certificate it issued for `host_names` (DNS names or IP
    /// addresses, as signers will dial them).
    pub fn generate(host_names: &[String]) -> Result<HubTls, TlsError> {
        let ca_key = p256_key()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "flotilla signer hub CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = p256_key()?;
        let mut server = CertificateParams::new(host_names.to_vec())?;
        server
            .distinguished_name
            .push(DnType::CommonName, "flotilla signer hub");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let cert = server.signed_by(&key, &issuer)?;
        Ok(HubTls {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads the three files [`HubTls::write`] wrote into `dir`, checking they parse.
    pub fn load(dir: &Path) -> Result<HubTls, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io {
                context: format!("cannot read {}", path.display()),
                source,
            })
        };
        let tls = HubTls {
            ca_pem: read(CA_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: read(KEY_FILE)?,
        };
        if CertificateDer::from_pem_slice(tls.ca_pem.as_bytes()).is_err() {
            return Err(TlsError::Pem(dir.join(CA_FILE), "certificate"));
        }
        if CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).is_err() {
            return Err(TlsError::Pem(dir.join(CERT_FILE), "certificate"));
        }
        if PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).is_err() {
            return Err(TlsError::Pem(dir.join(KEY_FILE), "private key"));
        }
        Ok(tls)
    }

    /// Writes the CA, certificate and key into `dir`, each file replaced whole.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let write = |name: &str, pem: &str, mode| {
            let path = dir.join(name);
            write_file(&path, pem.as_bytes(), mode).map_err(|source| TlsError::Io {
                context: format!("cannot write {}", path.display()),
                source,
            })
        };
        write(KEY_FILE, &self.key_pem, 0o600)?;
        write(CERT_FILE, &self.cert_pem, 0o644)?;
        write(CA_FILE, &self.ca_pem, 0o644)
    }

    /// Loads the material in `dir`, or generates and writes it there if the CA file is absent.
    pub fn load_or_generate(dir: &Path, host_names: &[String]) -> Result<HubTls, TlsError> {
        if dir.join(CA_FILE).exists() {
            return HubTls::load(dir);
        }
        let tls = HubTls::generate(host_names)?;
        tls.write(dir)?;
        Ok(tls)
    }

    /// The CA certificate (PEM) a signer must trust.
    pub fn ca_pem(&self) -> &[u8] {
        self.ca_pem.as_bytes()
    }

    pub(crate) fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// A fresh P-256 key pair.
pub(crate) fn p256_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// A self-signed P-256 certificate for `names` (PEM certificate, PEM key); the regtest
/// harness makes btcd's RPC certificate with it too.
pub fn self_signed_p256(
    names: Vec<String>,
    common_name: &str,
) -> Result<(String, String), rcgen::Error> {
    let key = p256_key()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `bytes` to `path` with `mode`, replacing any older file whole: the data goes to a
/// fresh temporary file first, then a rename, so a crash never leaves a half-written file.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
    use tokio_rustls::rustls::RootCertStore;

    use super::*;

    fn verifier(ca_pem: &[u8]) -> Arc<WebPkiServerVerifier> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap()
    }

    #[test]
    fn server_cert_chains_to_its_ca_only() {
        let names = vec!["127.0.0.1".to_string(), "hub.example".to_string()];
        let tls = HubTls::generate(&names).unwrap();
        let cert = CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).unwrap();
        let ours = verifier(tls.ca_pem());
        for name in &names {
            let name = ServerName::try_from(name.as_str()).unwrap();
            ours.verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let other_name = ServerName::try_from("other.example").unwrap();
        assert!(ours
            .verify_server_cert(&cert, &[], &other_name, &[], UnixTime::now())
            .is_err());
        let other_ca = HubTls::generate(&names).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(verifier(other_ca.ca_pem())
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn written_material_loads_back_and_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let made = HubTls::load_or_generate(dir.path(), &names).unwrap();
        let again = HubTls::load_or_generate(dir.path(), &names).unwrap();
        assert_eq!(made.ca_pem, again.ca_pem);
        assert_eq!(made.key_pem, again.key_pem);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join(format!("{KEY_FILE}.tmp")).exists());

        std::fs::write(dir.path().join(CERT_FILE), "not pem").unwrap();
        assert!(matches!(
            HubTls::load(dir.path()),
            Err(TlsError::Pem(_, "certificate"))
        ));
    }
}
