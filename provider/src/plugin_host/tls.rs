//! AutoMTLS: our certificate for the handshake line, and a client verifier that accepts
//! exactly the certificate Terraform announced in `PLUGIN_CLIENT_CERT`.
//!
//! Terraform's client certificate is a self-signed ECDSA P-521 certificate marked CA, so
//! the stock WebPKI verifier refuses it (a CA used as an end entity) and ring cannot
//! verify P-521 at all: we use the aws-lc-rs provider and compare DER bytes.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts one client certificate, byte for byte.
#[derive(Debug)]
pub struct PinnedClientCert {
    der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl PinnedClientCert {
    /// Pins `der`.
    pub fn new(der: Vec<u8>, provider: Arc<CryptoProvider>) -> Self {
        Self { der, provider }
    }
}

impl ClientCertVerifier for PinnedClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "client certificate is not the one Terraform announced".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A fresh self-signed server certificate for `localhost` (Ed25519, serverAuth).
/// Returns (certificate DER, PKCS#8 private key DER).
///
/// Ed25519 because its signatures need no random nonce: the seed comes from the operating
/// system and nothing here touches aws-lc's random generator, whose first use costs tens
/// of milliseconds. That cost then overlaps with Terraform reading the handshake line
/// (see `warm_up`), instead of delaying the line.
pub fn server_identity() -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(seed.as_ref());
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.clone()),
        &rcgen::PKCS_ED25519,
    )?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), pkcs8))
}

/// Initialises aws-lc's random generator on another thread, so that its one-time cost
/// overlaps with Terraform's work between the handshake line and the first connection.
pub fn warm_up() {
    std::thread::spawn(|| {
        let mut b = [0u8; 1];
        let _ = rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut b);
    });
}

/// Server TLS configuration pinned to the client certificate in `client_pem`.
pub(super) fn server_config(
    client_pem: &str,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Vec<u8>)> {
    let client_der = rustls_pemfile::certs(&mut client_pem.as_bytes())
        .next()
        .context("PLUGIN_CLIENT_CERT holds no certificate")?
        .context("PLUGIN_CLIENT_CERT is not PEM")?
        .to_vec();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedClientCert::new(client_der, provider.clone()));
    let (cert_der, key_der) = server_identity()?;
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(key_der).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(cfg), cert_der))
}
