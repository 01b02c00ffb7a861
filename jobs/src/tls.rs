//! [`CaCert`] and the TLS connector of `rediss://` store URLs.
//!
//! Without a CA file the server's certificate must chain to the system's
//! roots or to the bundled Mozilla roots (`webpki-roots`), so a managed
//! service works even in an image without `ca-certificates`. With one
//! (`VALKEY_CA_CERT`, typically a self-signed CA of your own Valkey), only
//! that CA is trusted: a private store should not accept a certificate any
//! public CA would issue for its name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fred::types::config::{TlsConfig, TlsConnector, TlsHostMapping};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The certificates of a CA file, read and checked at startup.
#[derive(Clone, Debug)]
pub struct CaCert {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

#[derive(Debug, thiserror::Error)]
#[error("CA certificate file {path}: {problem}")]
pub struct CaCertError {
    pub path: PathBuf,
    pub problem: String,
}

impl CaCert {
    /// Reads a PEM file of one or more certificates.
    pub fn load(path: &Path) -> Result<Self, CaCertError> {
        let fail = |problem: String| CaCertError {
            path: path.to_path_buf(),
            problem,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no PEM certificate in it".into()));
        }
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            certs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The TLS settings fred connects with.
pub(crate) fn tls_config(ca: Option<&CaCert>) -> TlsConfig {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            // Checked in `CaCert::load`.
            let _ = roots.add_parsable_certificates(ca.certs.iter().cloned());
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // A missing or partly unreadable system store leaves the bundled roots.
            let system = rustls_native_certs::load_native_certs();
            let _ = roots.add_parsable_certificates(system.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConfig {
        connector: TlsConnector::from(config),
        hostnames: TlsHostMapping::None,
    }
}
