//! TLS for database connections: rustls with aws-lc-rs, as everywhere in Strongbox.
//!
//! - `require`: encrypted, the server's certificate not checked (libpq's meaning);
//!   the handshake signature is still verified.
//! - `verify-full`: the certificate chain is verified against `CaCert` (the only CA
//!   trusted when given) or the system's roots, and the host name is checked.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::{RdsConfig, TlsMode};
use crate::error::{Error, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The roots in a PEM bundle (`extended_config.CaCert`).
pub(crate) fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore> {
    let field = "extended_config.CaCert";
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::invalid(field, "not a PEM certificate"))?;
    if certs.is_empty() {
        return Err(Error::invalid(field, "holds no PEM certificate"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| Error::invalid(field, e))?;
    }
    Ok(roots)
}

/// The system's root certificates (DER), for drivers that take roots as bytes.
pub(crate) fn system_root_ders() -> Vec<Vec<u8>> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        let _ = roots.add(c);
    }
    roots
}

/// `require`: any certificate, but a valid handshake signature.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration for `cfg.tls`; `None` for `disable`.
pub(crate) fn client_config(cfg: &RdsConfig) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?;
    let config = match cfg.tls {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertCheck(p)))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let roots = match &cfg.ca_cert {
                Some(pem) => roots_from_pem(pem)?,
                None => system_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}
