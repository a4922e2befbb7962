//! Provider start-to-handshake time: from spawning the binary (as Terraform does, with
//! AutoMTLS) to reading its handshake line. `cargo bench -p terraform-provider-strongbox --bench handshake`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-strongbox");
const RUNS: usize = 40;

fn client_cert() -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.self_signed(&key).expect("cert").pem()
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
    once(Some(&cert)); // warm the page cache
    report(
        "handshake, AutoMTLS",
        (0..RUNS).map(|_| once(Some(&cert))).collect(),
    );
    report(
        "handshake, plaintext",
        (0..RUNS).map(|_| once(None)).collect(),
    );
}
