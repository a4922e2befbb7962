//! The real binary as Terraform starts it: magic cookie, negotiation, the handshake line,
//! AutoMTLS pinned to the announced client certificate (a P-521, CA:TRUE certificate like
//! go-plugin's), a gRPC call over that TLS, and a prompt exit on Shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use terraform_provider_strongbox::plugin::grpc_controller_client::GrpcControllerClient;
use terraform_provider_strongbox::tfplugin6::provider_client::ProviderClient;
use terraform_provider_strongbox::{plugin, tfplugin6};

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-strongbox");

/// A certificate shaped like go-plugin's AutoMTLS client certificate.
fn terraform_like_cert() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec(), key.serialize_der())
}

struct Plugin {
    child: Child,
    addr: String,
    server_der: Vec<u8>,
    version: String,
}

/// Starts the binary as go-plugin does (with `PLUGIN_CLIENT_CERT` when given) and
/// returns it with the six fields of its handshake line.
fn spawn_managed(client_pem: Option<&str>, offered: &str) -> (Child, Vec<String>) {
    let mut cmd = Command::new(BIN);
    cmd.env(
        "TF_PLUGIN_MAGIC_COOKIE",
        "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
    )
    .env("PLUGIN_PROTOCOL_VERSIONS", offered)
    .env_remove("PLUGIN_CLIENT_CERT")
    .env_remove("STRONGBOX_PROVIDER_PROTOCOLS")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(pem) = client_pem {
        cmd.env("PLUGIN_CLIENT_CERT", pem);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let parts: Vec<String> = line.trim_end().split('|').map(str::to_string).collect();
    assert_eq!(parts.len(), 6, "{line}");
    (child, parts)
}

fn launch(client_pem: &str, offered: &str) -> Plugin {
    let (child, parts) = spawn_managed(Some(client_pem), offered);
    assert_eq!(
        (parts[0].as_str(), parts[2].as_str(), parts[4].as_str()),
        ("1", "tcp", "grpc"),
        "{parts:?}"
    );
    let server_der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&parts[5])
        .unwrap();
    Plugin {
        child,
        addr: parts[3].clone(),
        server_der,
        version: parts[1].clone(),
    }
}

fn tls_client(server_der: &[u8], client: Option<(Vec<u8>, Vec<u8>)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_der.to_vec()))
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::try_from(key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn channel(
    addr: String,
    connector: tokio_rustls::TlsConnector,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let (addr, connector) = (addr.clone(), connector.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

#[tokio::test]
async fn pinned_client_certificate_is_required_and_shutdown_is_prompt() {
    let (pem, der, key) = terraform_like_cert();
    let mut p = launch(&pem, "5,6");
    assert_eq!(p.version, "6", "highest common version");

    // Terraform's certificate: a real gRPC call works.
    let ch = channel(
        p.addr.clone(),
        tls_client(&p.server_der, Some((der.clone(), key.clone()))),
    )
    .await
    .unwrap();
    let schema = ProviderClient::new(ch.clone())
        .get_provider_schema(tfplugin6::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(schema.resource_schemas.contains_key("strongbox_secret"));
    assert!(schema.server_capabilities.unwrap().plan_destroy);

    // A foreign certificate and no certificate are refused.
    let (_, other_der, other_key) = terraform_like_cert();
    for client in [Some((other_der, other_key)), None] {
        let refused = async {
            let ch = channel(p.addr.clone(), tls_client(&p.server_der, client)).await?;
            ProviderClient::new(ch)
                .get_provider_schema(tfplugin6::get_provider_schema::Request {})
                .await
                .map_err(|s| std::io::Error::other(s.to_string()))?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(10), refused)
                .await
                .unwrap()
                .is_err()
        );
    }

    // Shutdown: the process exits well inside Terraform's 2-second grace.
    let started = Instant::now();
    GrpcControllerClient::new(ch)
        .shutdown(plugin::Empty {})
        .await
        .unwrap();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still running after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn protocol_five_only_terraform_gets_five() {
    let (pem, _, _) = terraform_like_cert();
    let mut p = launch(&pem, "5");
    assert_eq!(p.version, "5");
    p.child.kill().unwrap();
}

#[test]
fn started_by_hand_it_explains_and_exits_1() {
    let out = Command::new(BIN)
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(String::from_utf8_lossy(&out.stderr).contains("This binary is a plugin"));
}

#[test]
fn sigint_is_ignored_like_go_plugins_do() {
    let (pem, der, key) = terraform_like_cert();
    let mut p = launch(&pem, "5,6");
    send_signal(p.child.id(), "-INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the provider died on SIGINT"
    );
    // And it still answers.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = channel(p.addr.clone(), tls_client(&p.server_der, Some((der, key))))
            .await
            .unwrap();
        ProviderClient::new(ch)
            .get_provider_schema(tfplugin6::get_provider_schema::Request {})
            .await
            .unwrap();
    });
    p.child.kill().unwrap();
}

/// A channel over a Unix socket.
async fn unix_channel(path: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap()
}

/// The socket of a plaintext provider is in a directory of its own that only its user
/// may enter (so no other local user can drive it), as go-plugin's are.
fn assert_private_socket(path: &str) {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
    let sock = std::path::Path::new(path);
    assert!(
        std::fs::metadata(sock).unwrap().file_type().is_socket(),
        "{path}"
    );
    let dir = std::fs::metadata(sock.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700, "{path}");
    let mine = tempfile::NamedTempFile::new().unwrap();
    let me = mine.as_file().metadata().unwrap().uid();
    assert_eq!(dir.uid(), me, "{path}");
}

/// Sends `signal` (`-INT`, `-TERM`) to process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The exit status of `child`, which must exit within 10 s.
fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the provider did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn schema_has_cmk(ch: tonic::transport::Channel) {
    let s = ProviderClient::new(ch)
        .get_provider_schema(tfplugin6::get_provider_schema::Request {})
        .await
        .unwrap();
    assert!(
        s.into_inner()
            .resource_schemas
            .contains_key("strongbox_cmk")
    );
}

/// Starts the binary with `--debug` (and `env`); returns it with its
/// `TF_REATTACH_PROVIDERS` value.
fn debug_provider(env: &[(&str, &std::ffi::OsStr)]) -> (Child, serde_json::Value) {
    let mut child = Command::new(BIN)
        .arg("--debug")
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(v) = line.trim().strip_prefix("export TF_REATTACH_PROVIDERS='") {
            let json = serde_json::from_str(v.trim_end_matches('\'')).unwrap();
            return (child, json);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("no reattach line");
}

#[test]
fn debug_mode_prints_reattach_and_serves_plaintext_on_a_private_socket() {
    let (mut child, json) = debug_provider(&[]);
    let entry = &json["registry.terraform.io/strongbox/strongbox"];
    assert_eq!(entry["Protocol"], "grpc");
    assert_eq!(entry["ProtocolVersion"], 6);
    assert_eq!(entry["Addr"]["Network"], "unix");
    let path = entry["Addr"]["String"].as_str().unwrap().to_string();
    assert_private_socket(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { schema_has_cmk(unix_channel(path.clone()).await).await });
    // Ctrl-C ends debug mode, and the socket's directory goes with it.
    send_signal(child.id(), "-INT");
    let status = exit_of(&mut child);
    assert!(status.success(), "{status}");
    let dir = std::path::Path::new(&path).parent().unwrap().to_path_buf();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A socket path must fit in 108 bytes: under a temp dir with a long name the socket's
/// directory goes to /tmp instead, and the provider still starts.
#[tokio::test]
async fn a_temp_dir_too_long_for_a_socket_path_falls_back_to_tmp() {
    let outer = tempfile::tempdir().unwrap();
    let long = outer.path().join("d".repeat(100));
    std::fs::create_dir(&long).unwrap();
    let (mut child, json) = debug_provider(&[("TMPDIR", long.as_os_str())]);
    let addr = &json["registry.terraform.io/strongbox/strongbox"]["Addr"]["String"];
    let path = addr.as_str().expect("a socket path").to_string();
    assert!(path.starts_with("/tmp/strongbox-plugin-"), "{path}");
    assert_private_socket(&path);
    schema_has_cmk(unix_channel(path.clone()).await).await;
    // SIGTERM ends it at once, and the socket's directory goes with it.
    send_signal(child.id(), "-TERM");
    assert_eq!(exit_of(&mut child).code(), Some(143));
    let dir = std::path::Path::new(&path).parent().unwrap().to_path_buf();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Terraform run with TF_DISABLE_PLUGIN_TLS sends no client certificate: the handshake
/// names a private Unix socket, not a loopback port, and Shutdown removes it.
#[tokio::test]
async fn without_a_client_certificate_the_plugin_serves_on_a_private_socket() {
    let (mut child, parts) = spawn_managed(None, "5,6");
    assert_eq!(parts, ["1", "6", "unix", &parts[3], "grpc", ""]);
    let path = parts[3].clone();
    assert_private_socket(&path);
    let ch = unix_channel(path.clone()).await;
    schema_has_cmk(ch.clone()).await;
    GrpcControllerClient::new(ch)
        .shutdown(plugin::Empty {})
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after Shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = std::path::Path::new(&path).parent().unwrap().to_path_buf();
    assert!(!dir.exists(), "{} left behind", dir.display());
}
