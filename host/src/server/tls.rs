//! TLS server configuration: PEM files, or a self-signed certificate made
//! at start so STARTTLS works out of the box.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn pem_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Build the rustls server configuration. Returns it and whether the
/// certificate is self-signed.
pub fn server_config(
    tls: Option<&TlsConfig>,
    hostname: &str,
) -> Result<(Arc<ServerConfig>, bool), TlsError> {
    let (certs, key, self_signed) = match tls {
        Some(t) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
                .map_err(|e| pem_err(&t.cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| pem_err(&t.cert, e))?;
            if certs.is_empty() {
                return Err(pem_err(&t.cert, "no certificate found"));
            }
            let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| pem_err(&t.key, e))?;
            (certs, key, false)
        }
        None => {
            let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
            let cert = ck.cert.der().clone();
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| pem_err(Path::new("<generated>"), e))?;
            (vec![cert], key, true)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((Arc::new(cfg), self_signed))
}
