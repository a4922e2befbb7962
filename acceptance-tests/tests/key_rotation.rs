//! Access-key and SSH-key rotation declared with Terraform: an `AccessKey` secret under
//! an `access_key` policy and an `Ssh` secret under an `ssh_key` policy (against a real
//! sshd on a free loopback port), rotated by the engine; `terraform plan` stays empty.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strongbox_acceptance_tests::strongbox_client::{Client, ClientConfig, ErrorCode};
use strongbox_acceptance_tests::{config, for_each_variant};

const ACCESS_BODY: &str = r#"
resource "strongbox_policy" "read_own" {
  name     = "ci-reads-its-token"
  document = jsonencode({
    Version   = "1"
    Statement = [{ Effect = "Allow", Action = ["kms:GetSecretValue"], Resource = ["secret/ci/token"] }]
  })
}

resource "strongbox_principal" "ci" {
  name     = "ci-runner"
  policies = [strongbox_policy.read_own.name]
}

resource "strongbox_rotation_policy" "tokens" {
  name     = "ci-tokens"
  interval = "30d"
  strategy = "access_key"
  settings = { principals = "ci-*" }
}

# The first rotation issues the first token.
resource "strongbox_secret" "token" {
  name            = "ci/token"
  secret_type     = "AccessKey"
  secret_data     = jsonencode({ PrincipalName = strongbox_principal.ci.name })
  rotation_policy = strongbox_rotation_policy.tokens.name
}
"#;

#[test]
fn an_access_key_secret_applied_with_terraform_rotates_without_drift() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        tf.write_config(&config(ACCESS_BODY));
        tf.init();
        tf.apply();
        tf.assert_no_changes();
        let c = srv.client();
        let app = |token: &str| {
            Client::new(ClientConfig {
                address: srv.addr().to_string(),
                token: token.into(),
                ca_cert_pem: Some(std::fs::read(srv.ca_cert()).unwrap()),
                timeout: None,
            })
            .unwrap()
        };
        let mut tokens: Vec<String> = Vec::new();
        for _ in 0..3 {
            srv.block_on(c.rotate_secret("ci/token", None)).unwrap();
            let v = srv
                .block_on(c.get_secret_value("ci/token", None, None))
                .unwrap();
            let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
            assert_eq!(doc["PrincipalName"], "ci-runner");
            let token = doc["Token"].as_str().unwrap().to_string();
            // The application reads its own secret with the new token.
            srv.block_on(app(&token).get_secret_value("ci/token", None, None))
                .unwrap();
            tokens.push(token);
        }
        // Two versions old: refused.
        let e = srv
            .block_on(app(&tokens[0]).get_secret_value("ci/token", None, None))
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));
        srv.block_on(app(&tokens[1]).get_secret_value("ci/token", None, None))
            .unwrap();
        tf.assert_no_changes();
    });
}

const USER: &str = "sbtest";

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A real sshd on a free loopback port with its own host key; killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    host_key: String,
    dir: tempfile::TempDir,
    home: PathBuf,
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path),
    );
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string(),
    )
}

impl Sshd {
    fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: run scripts/install-sshd.sh"
        );
        let entry = Command::new("getent")
            .args(["passwd", USER])
            .output()
            .unwrap();
        assert!(
            entry.status.success(),
            "the account {USER} is missing: run scripts/install-sshd.sh"
        );
        let home = PathBuf::from(
            String::from_utf8_lossy(&entry.stdout)
                .trim()
                .split(':')
                .nth(5)
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let (_, host_key) = keygen(dir.path(), "host_key");
        let cfg = dir.path().join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin no\nAllowUsers {USER}\n",
                dir.path().join("host_key").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&cfg)
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        host_key,
                        dir,
                        home,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start");
    }

    fn authorize_only(&self, line: &str) {
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("authorized_keys"), format!("{line}\n")).unwrap();
        run_ok(
            Command::new("chown")
                .args(["-R", &format!("{USER}:{USER}")])
                .arg(&ssh),
        );
        run_ok(Command::new("chmod").args(["-R", "go-rwx"]).arg(&ssh));
    }

    fn key_logs_in(&self, private_key: &str) -> bool {
        let key = self.dir.path().join("try_key");
        std::fs::write(&key, private_key).unwrap();
        run_ok(Command::new("chmod").arg("600").arg(&key));
        let known = self.dir.path().join("known_hosts");
        std::fs::write(
            &known,
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key),
        )
        .unwrap();
        let out = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-p",
                &self.port.to_string(),
                "-o",
                "BatchMode=yes",
            ])
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
            ])
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(&key)
            .arg(format!("{USER}@127.0.0.1"))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            // A refused key, not any failure (sshd gone, host key mismatch).
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("Permission denied"),
                "the login failed for another reason than a refused key: {stderr}"
            );
        }
        out.status.success()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_ssh_secret_applied_with_terraform_rotates_without_drift() {
    for_each_variant(|v| {
        let sshd = Sshd::start();
        let (private, public) = keygen(sshd.dir.path(), "first");
        sshd.authorize_only(&public);
        let (srv, tf) = v.start();
        let body = format!(
            r#"
resource "strongbox_rotation_policy" "ssh" {{
  name     = "ssh-keys"
  interval = "30d"
  strategy = "ssh_key"
}}

resource "strongbox_secret" "login" {{
  name            = "hosts/web/{USER}"
  secret_type     = "Ssh"
  secret_data     = jsonencode({{ UserName = "{USER}", PublicKey = {public:?}, PrivateKey = {private:?} }})
  extended_config = jsonencode({{ Host = "127.0.0.1", Port = {port}, HostKey = {host_key:?} }})
  rotation_policy = strongbox_rotation_policy.ssh.name
}}
"#,
            port = sshd.port,
            host_key = sshd.host_key,
        );
        tf.write_config(&config(&body));
        tf.init();
        tf.apply();
        tf.assert_no_changes();
        let c = srv.client();
        let name = format!("hosts/web/{USER}");
        let mut keys = vec![private.clone()];
        for _ in 0..2 {
            srv.block_on(c.rotate_secret(&name, None)).unwrap();
            let v = srv.block_on(c.get_secret_value(&name, None, None)).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
            let key = doc["PrivateKey"].as_str().unwrap().to_string();
            assert!(sshd.key_logs_in(&key));
            keys.push(key);
        }
        assert!(!sshd.key_logs_in(&keys[0]), "two versions old");
        assert!(sshd.key_logs_in(&keys[1]), "the previous key");
        tf.assert_no_changes();
    });
}
