//! Provider start-to-handshake time: from spawning the binary (as Terraform does, with
//! AutoMTLS) to reading its handshake line. `cargo bench -p terraform-provider-strongbox --bench handshake`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-strongbox");
const RUNS: usize = 40;

struct ClientCert {
    pem: String,
    der: Vec<u8>,
    key: Vec<u8>,
}

fn client_cert() -> ClientCert {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let c = p.self_signed(&key).expect("cert");
    ClientCert {
        pem: c.pem(),
        der: c.der().to_vec(),
        key: key.serialize_der(),
    }
}

/// Spawn to a completed mutual-TLS handshake on the provider's port (what Terraform
/// waits for before its first RPC).
fn once_to_tls(cert: &ClientCert, rt: &tokio::runtime::Runtime) -> Duration {
    use base64::Engine as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .env(
            "TF_PLUGIN_MAGIC_COOKIE",
            "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_CLIENT_CERT", &cert.pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    let parts: Vec<&str> = line.trim_end().split('|').collect();
    let server_der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(parts[5])
        .expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_der)).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(cert.der.clone())],
        PrivateKeyDer::try_from(cert.key.clone()).expect("key"),
    )
    .expect("client auth");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let addr = parts[3].to_string();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls");
        // The server's verdict on our certificate arrives with its first bytes.
        use tokio::io::AsyncWriteExt as _;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        use tokio::io::AsyncReadExt as _;
        let mut b = [0u8; 9];
        tls.read_exact(&mut b).await.expect("server settings");
    });
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn once(cert: Option<&str>) -> Duration {
    let start = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.env(
        "TF_PLUGIN_MAGIC_COOKIE",
        "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
    )
    .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    match cert {
        Some(c) => cmd.env("PLUGIN_CLIENT_CERT", c),
        None => cmd.env_remove("PLUGIN_CLIENT_CERT"),
    };
    let mut child = cmd.spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    let took = start.elapsed();
    assert!(line.starts_with("1|"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} min {:>6.2} ms   median {:>6.2} ms   p90 {:>6.2} ms   ({} runs)",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        v.len()
    );
}

fn main() {
    let cert = client_cert();
    once(Some(&cert.pem)); // warm the page cache
    report(
        "handshake, AutoMTLS",
        (0..RUNS).map(|_| once(Some(&cert.pem))).collect(),
    );
    report(
        "handshake, plaintext",
        (0..RUNS).map(|_| once(None)).collect(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    report(
        "to first mTLS exchange",
        (0..RUNS).map(|_| once_to_tls(&cert, &rt)).collect(),
    );
}
