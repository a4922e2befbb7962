//! The `ssh_key` strategy against a real OpenSSH server (Debian's `/usr/sbin/sshd`,
//! installed by `scripts/install-sshd.sh`), started by each test on a free loopback
//! port with its own host key, logging in as the unprivileged account `sbtest`. Logins
//! are checked with the real OpenSSH client, which pins the host key too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use strongbox_client::ErrorCode;
use strongbox_schemas::{self as api, RotationStatus, RotationStrategy, STAGE_PREVIOUS};

use crate::common::*;
use crate::rotation::{fast_config, policy};
use strongbox_server::service::EgressPolicy;

const USER: &str = "sbtest";
const SSHD: &str = "/usr/sbin/sshd";

/// Tests that change the account's files take turns.
static ACCOUNT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The account's home, creating the account when missing (tests run as root).
fn ensure_account() -> PathBuf {
    assert!(
        Path::new(SSHD).exists() && Path::new("/usr/bin/ssh").exists(),
        "{SSHD} or /usr/bin/ssh is missing: run scripts/install-sshd.sh (apt-get install openssh-server openssh-client)"
    );
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .output()
            .expect("useradd (the tests must run as root to create the account sbtest)");
        // Another test binary may have created it meanwhile.
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
            "useradd {USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let entry = run_ok(Command::new("getent").args(["passwd", USER]));
    PathBuf::from(entry.trim().split(':').nth(5).unwrap())
}

/// A key pair made by ssh-keygen: (private key text, public key line).
fn keygen(dir: &Path, name: &str, kind: &str) -> (String, String) {
    let path = dir.join(name);
    run_ok(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        kind,
        "-N",
        "",
        "-C",
        name,
        "-f",
        path.to_str().unwrap(),
    ]));
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string(),
    )
}

/// A running sshd of the test's own; killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    host_key: String,
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Sshd {
    fn start() -> Self {
        Self::start_with_host_keys(&["ed25519"], "ed25519")
    }

    /// An sshd with a host key of each of `kinds`; `host_key` is the one of `pin`.
    fn start_with_host_keys(kinds: &[&str], pin: &str) -> Self {
        let home = ensure_account();
        let dir = tempfile::tempdir().unwrap();
        let mut host_key = String::new();
        let mut host_key_lines = String::new();
        for kind in kinds {
            let name = format!("host_key_{kind}");
            let (_, public) = keygen(dir.path(), &name, kind);
            if *kind == pin {
                host_key = public;
            }
            host_key_lines.push_str(&format!("HostKey {}\n", dir.path().join(&name).display()));
        }
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 {host_key_lines}\
                 PidFile none\n\
                 AuthorizedKeysFile .ssh/authorized_keys\n\
                 UsePAM yes\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin no\n\
                 AllowUsers {USER}\n\
                 MaxStartups 100\n\
                 LogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        // A free port: bind, note it, release it; retried if sshd loses the race.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("sshd exited with {status}");
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let sshd = Self {
                        child,
                        port,
                        host_key: host_key.clone(),
                        dir,
                        home,
                    };
                    std::fs::write(
                        sshd.dir.path().join("known_hosts"),
                        format!("[127.0.0.1]:{port} {host_key}\n"),
                    )
                    .unwrap();
                    return sshd;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start: {}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    /// Makes `authorized_keys` hold exactly these lines.
    fn authorize_only(&self, lines: &[&str]) {
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let file = ssh.join("authorized_keys");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&file, text).unwrap();
        run_ok(Command::new("chown").args([
            "-R",
            &format!("{USER}:{USER}"),
            ssh.to_str().unwrap(),
        ]));
        run_ok(Command::new("chmod").args(["700", ssh.to_str().unwrap()]));
        run_ok(Command::new("chmod").args(["600", file.to_str().unwrap()]));
    }

    fn authorized_keys(&self) -> String {
        std::fs::read_to_string(self.home.join(".ssh/authorized_keys")).unwrap()
    }

    fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "NumberOfPasswordPrompts=1",
            ])
            .stdin(Stdio::null());
        c
    }

    /// Whether the OpenSSH client logs in with this private key and runs a command.
    fn key_logs_in(&self, private_key: &str) -> bool {
        let file = self.dir.path().join("try_key");
        std::fs::write(&file, private_key).unwrap();
        run_ok(Command::new("chmod").args(["600", file.to_str().unwrap()]));
        let out = self
            .ssh()
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "PreferredAuthentications=publickey", "-i"])
            .arg(&file)
            .arg(format!("{USER}@127.0.0.1"))
            .arg("echo logged-in-as-$(id -un)")
            .output()
            .unwrap();
        std::fs::remove_file(&file).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && stdout.trim() == format!("logged-in-as-{USER}");
        if !ok {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "the login failed for another reason than a refused key: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ok
    }

    /// Password logins sshd refused so far.
    fn failed_passwords(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Failed password for")
            .count()
    }

    /// Whether the OpenSSH client logs in with this password; a failure for another
    /// reason than a refused password (e.g. sshd not answering) fails the test.
    fn password_logs_in(&self, password: &str) -> bool {
        let askpass = self.dir.path().join("askpass.sh");
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$SB_TEST_PASSWORD\"\n",
        )
        .unwrap();
        run_ok(Command::new("chmod").args(["700", askpass.to_str().unwrap()]));
        let out = self
            .ssh()
            .args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password"])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env("SB_TEST_PASSWORD", password)
            .arg(format!("{USER}@127.0.0.1"))
            .arg("echo logged-in-as-$(id -un)")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && stdout.trim() == format!("logged-in-as-{USER}");
        if !ok {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "the login failed for another reason than a refused password: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ok
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_secret(
    name: &str,
    value: serde_json::Value,
    config: serde_json::Value,
    policy: &str,
) -> api::CreateSecretRequest {
    let mut r = text_secret(name, &value.to_string());
    r.secret_type = api::SecretType::Ssh;
    r.extended_config = Some(config.as_object().unwrap().clone());
    r.rotation_policy = Some(policy.into());
    r
}

/// Gives the account a new random password (as root, with chpasswd) and returns it.
fn new_account_password() -> String {
    let password = format!("First-pass-{:016x}", rand::random::<u64>());
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = chpasswd.stdin.take().unwrap();
        writeln!(stdin, "{USER}:{password}").unwrap();
    }
    assert!(chpasswd.wait().unwrap().success());
    password
}

/// A server with secret `hosts/web/password` (sub-type `Password`, value the account's
/// password `first`) on `sshd`, attached to a policy of 24-character passwords.
async fn password_secret(sshd: &Sshd, first: &str) -> TestServer {
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy(
            "ssh-passwords",
            "30d",
            RotationStrategy::SshKey,
            &[("length", "24")],
        ))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "hosts/web/password",
            json!({"UserName": USER, "Password": first}),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key,
                   "SecretSubType": "Password"}),
            "ssh-passwords",
        ))
        .await
        .unwrap();
    s
}

async fn value_at(s: &TestServer, name: &str, stage: Option<&str>) -> serde_json::Value {
    let v = s.client.get_secret_value(name, None, stage).await.unwrap();
    serde_json::from_str(&v.secret_data).unwrap()
}

#[tokio::test]
async fn ten_ssh_key_rotations_against_a_real_sshd() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (first_private, first_public) = keygen(sshd.dir.path(), "first", "ed25519");
    // An unrelated key the rotations must leave alone.
    let (_, other_public) = keygen(sshd.dir.path(), "other", "ed25519");
    sshd.authorize_only(&[&first_public, &other_public]);
    assert!(sshd.key_logs_in(&first_private));

    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "hosts/web/sbtest",
            json!({"UserName": USER, "PublicKey": first_public, "PrivateKey": first_private}),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key}),
            "ssh-keys",
        ))
        .await
        .unwrap();

    let mut history = vec![first_private];
    let mut took = Vec::new();
    for round in 1..=10 {
        let started = Instant::now();
        s.client
            .rotate_secret("hosts/web/sbtest", None)
            .await
            .unwrap();
        took.push(started.elapsed());
        let cur = value_at(&s, "hosts/web/sbtest", None).await;
        assert_eq!(cur["UserName"], USER);
        let public = cur["PublicKey"].as_str().unwrap();
        assert!(
            public.starts_with("ssh-ed25519 "),
            "round {round}: {public}"
        );
        let private = cur["PrivateKey"].as_str().unwrap().to_string();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(!history.contains(&private));
        history.push(private.clone());

        assert!(sshd.key_logs_in(&private), "round {round}: the new key");
        let prev = value_at(&s, "hosts/web/sbtest", Some(STAGE_PREVIOUS)).await;
        assert_eq!(
            prev["PrivateKey"].as_str().unwrap(),
            history[history.len() - 2]
        );
        assert!(
            sshd.key_logs_in(&history[history.len() - 2]),
            "round {round}: the previous key"
        );
        if history.len() >= 3 {
            assert!(
                !sshd.key_logs_in(&history[history.len() - 3]),
                "round {round}: the key two versions old"
            );
        }
        let keys = sshd.authorized_keys();
        assert_eq!(
            keys.lines().filter(|l| !l.trim().is_empty()).count(),
            3,
            "round {round}: the current, previous and unrelated keys:\n{keys}"
        );
        assert!(keys.contains(other_public.split_whitespace().nth(1).unwrap()));
    }
    let d = s.client.describe_secret("hosts/web/sbtest").await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    took.sort();
    // A measurement for the report, not a goal: three SSH logins per rotation.
    eprintln!(
        "ssh_key: 10 rotations, median {:?}, slowest {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

#[tokio::test]
async fn a_wrong_host_key_is_refused_and_nothing_changes() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (private, public) = keygen(sshd.dir.path(), "first", "ed25519");
    sshd.authorize_only(&[&public]);
    let (_, impostor) = keygen(sshd.dir.path(), "not_the_host", "ed25519");

    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    let value = json!({"UserName": USER, "PublicKey": public, "PrivateKey": private});
    s.client
        .create_secret(&ssh_secret(
            "wrong-host-key",
            value.clone(),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": impostor}),
            "ssh-keys",
        ))
        .await
        .unwrap();
    assert_code(
        s.client.rotate_secret("wrong-host-key", None).await,
        ErrorCode::RotationFailed,
        "another host key than extended_config.HostKey",
    );
    // No host key at all is refused as well: never trust on first use.
    s.client
        .create_secret(&ssh_secret(
            "no-host-key",
            value.clone(),
            json!({"Host": "127.0.0.1", "Port": sshd.port}),
            "ssh-keys",
        ))
        .await
        .unwrap();
    assert_code(
        s.client.rotate_secret("no-host-key", None).await,
        ErrorCode::RotationFailed,
        "extended_config.HostKey",
    );
    assert_eq!(value_at(&s, "wrong-host-key", None).await, value);
    assert_eq!(sshd.authorized_keys().trim(), public);
    let d = s.client.describe_secret("wrong-host-key").await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Failed));
    let err = d.last_rotation_error.unwrap();
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[tokio::test]
async fn an_ssh_host_outside_the_egress_allow_list_is_never_contacted() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (private, public) = keygen(sshd.dir.path(), "first", "ed25519");
    sshd.authorize_only(&[&public]);
    let value = json!({"UserName": USER, "PublicKey": public, "PrivateKey": private});
    let config = json!({"Host": "localhost", "Port": sshd.port, "HostKey": sshd.host_key});

    let mut refusing = fast_config();
    refusing.rotation.egress = EgressPolicy::parse("10.0.0.0/8").unwrap();
    let s = TestServer::start_with(refusing).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "outside",
            value.clone(),
            config.clone(),
            "ssh-keys",
        ))
        .await
        .unwrap();
    assert_code(
        s.client.rotate_secret("outside", None).await,
        ErrorCode::RotationFailed,
        "host localhost has no address this server may connect to",
    );
    assert_eq!(value_at(&s, "outside", None).await, value);
    assert_eq!(sshd.authorized_keys().trim(), public);

    // Allowed, the same secret rotates (by name, through the policy's resolution).
    let mut allowing = fast_config();
    allowing.rotation.egress = EgressPolicy::parse("127.0.0.0/8,::1").unwrap();
    let s = TestServer::start_with(allowing).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret("inside", value.clone(), config, "ssh-keys"))
        .await
        .unwrap();
    s.client.rotate_secret("inside", None).await.unwrap();
    let now = value_at(&s, "inside", None).await;
    assert_ne!(now["PublicKey"], value["PublicKey"]);
    assert!(sshd.key_logs_in(now["PrivateKey"].as_str().unwrap()));
}

#[tokio::test]
async fn rsa_keys_when_the_policy_asks_for_them() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (private, public) = keygen(sshd.dir.path(), "first", "ed25519");
    sshd.authorize_only(&[&public]);
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy(
            "rsa-keys",
            "30d",
            RotationStrategy::SshKey,
            &[("key_type", "rsa"), ("rsa_bits", "2048")],
        ))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "hosts/rsa",
            json!({"UserName": USER, "PublicKey": public, "PrivateKey": private}),
            json!({"Host": "127.0.0.1", "Port": sshd.port.to_string(), "HostKey": sshd.host_key}),
            "rsa-keys",
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        s.client.rotate_secret("hosts/rsa", None).await.unwrap();
        let cur = value_at(&s, "hosts/rsa", None).await;
        assert!(cur["PublicKey"].as_str().unwrap().starts_with("ssh-rsa "));
        assert!(sshd.key_logs_in(cur["PrivateKey"].as_str().unwrap()));
    }
    assert!(!sshd.key_logs_in(&private));
}

#[tokio::test]
async fn the_password_sub_type_changes_the_accounts_password_over_ssh() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let first = new_account_password();
    assert!(sshd.password_logs_in(&first));

    let s = password_secret(&sshd, &first).await;
    let mut history = vec![first];
    for round in 1..=3 {
        s.client
            .rotate_secret("hosts/web/password", None)
            .await
            .unwrap();
        let cur = value_at(&s, "hosts/web/password", None).await;
        let pw = cur["Password"].as_str().unwrap().to_string();
        assert_eq!(pw.chars().count(), 24);
        assert!(
            sshd.password_logs_in(&pw),
            "round {round}: the new password"
        );
        assert!(
            !sshd.password_logs_in(history.last().unwrap()),
            "round {round}: the old password"
        );
        history.push(pw);
    }
}

/// When `passwd` itself refuses (here a minimum password age, as on hardened hosts), the
/// set step fails without trying the pending password: that login is bound to fail, and
/// lockout policies (pam_faillock) count every one, on every retry of the step.
#[tokio::test]
async fn a_password_change_passwd_refuses_tries_no_login_bound_to_fail() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let first = new_account_password();
    // Changed today (by chpasswd), and not to be changed again before tomorrow.
    struct MinAge;
    impl Drop for MinAge {
        fn drop(&mut self) {
            let _ = Command::new("chage").args(["-m", "0", USER]).status();
        }
    }
    let _reset = MinAge;
    run_ok(Command::new("chage").args(["-m", "1", USER]));
    assert!(sshd.password_logs_in(&first));

    let s = password_secret(&sshd, &first).await;
    let refused_before = sshd.failed_passwords();
    let e = s
        .client
        .rotate_secret("hosts/web/password", None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("changing the password with passwd"),
        "{e}"
    );
    assert_eq!(
        sshd.failed_passwords(),
        refused_before,
        "a password login was refused: {}",
        std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
    );
    assert!(sshd.password_logs_in(&first), "the password is unchanged");
}

/// A password changed outside Strongbox is found at *create*, before anything is
/// pending: one refused login an attempt, not two on every retry of *set*, resumed
/// without end (lockout policies count each one).
#[tokio::test]
async fn a_password_changed_outside_fails_create_and_leaves_nothing_pending() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let first = new_account_password();
    let s = password_secret(&sshd, &first).await;
    let changed = new_account_password();
    let refused_before = sshd.failed_passwords();
    let e = s
        .client
        .rotate_secret("hosts/web/password", None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("logging in with the current password"),
        "{e}"
    );
    let refused = sshd.failed_passwords() - refused_before;
    assert!((1..=3).contains(&refused), "{refused} refused logins");
    let versions = s
        .client
        .list_secret_versions("hosts/web/password")
        .await
        .unwrap()
        .versions;
    assert_eq!(versions.len(), 1, "nothing pending: {versions:?}");
    assert!(sshd.password_logs_in(&changed), "the password is unchanged");
}

#[tokio::test]
async fn the_ssh_key_strategy_passes_the_conformance_suite() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (private, public) = keygen(sshd.dir.path(), "first", "ed25519");
    sshd.authorize_only(&[&public]);
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "conformance",
            json!({"UserName": USER, "PublicKey": public, "PrivateKey": private}),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key}),
            "ssh-keys",
        ))
        .await
        .unwrap();
    // Every step twice: the new key is added once, and logs in.
    let value = s.service.rotation_conformance("conformance").await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&value).unwrap();
    let new_public = doc["PublicKey"].as_str().unwrap();
    let blob = new_public.split_whitespace().nth(1).unwrap();
    let keys = sshd.authorized_keys();
    assert_eq!(keys.matches(blob).count(), 1, "{keys}");
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(sshd.key_logs_in(doc["PrivateKey"].as_str().unwrap()));
    assert!(sshd.key_logs_in(&private));
}

/// An sshd whose account has two keys, `first` and an unrelated `other`, and a server
/// with an `ssh_key` policy and a secret `name` holding `first`. Returns the sshd, the
/// server and the (private, public) pairs of `first` and `other`.
async fn two_keys_and_a_secret(
    name: &str,
) -> (Sshd, TestServer, (String, String), (String, String)) {
    let sshd = Sshd::start();
    let (first_private, first_public) = keygen(sshd.dir.path(), "first", "ed25519");
    let (other_private, other_public) = keygen(sshd.dir.path(), "other", "ed25519");
    sshd.authorize_only(&[&first_public, &other_public]);
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("ssh-keys", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            name,
            json!({"UserName": USER, "PublicKey": first_public, "PrivateKey": first_private}),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key}),
            "ssh-keys",
        ))
        .await
        .unwrap();
    (
        sshd,
        s,
        (first_private, first_public),
        (other_private, other_public),
    )
}

#[tokio::test]
async fn a_value_whose_public_key_is_another_key_never_removes_that_key() {
    let _turn = ACCOUNT.lock().await;
    let name = "hosts/web/mixed";
    let (sshd, s, (first_private, _), (other_private, other_public)) =
        two_keys_and_a_secret(name).await;
    // A caller who may only put values writes one whose PublicKey is the unrelated
    // key: once that version is ACSPrevious, finish would remove the key it names.
    let putter = s
        .principal_with(
            "putter",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:PutSecretValue"], "Resource": format!("secret/{name}")}]}),
        )
        .await;
    putter
        .put_secret_value(
            name,
            &put(&json!({"UserName": USER, "PublicKey": other_public,
                         "PrivateKey": first_private})
            .to_string()),
        )
        .await
        .unwrap();
    assert_code(
        s.client.rotate_secret(name, None).await,
        ErrorCode::RotationFailed,
        "PublicKey is not the public half of its PrivateKey",
    );
    assert!(sshd.key_logs_in(&other_private));
    // A value with a matching PublicKey (or none: it is derived) rotates, and the
    // unrelated key stays through the rotations that remove old keys.
    s.client
        .put_secret_value(
            name,
            &put(&json!({"UserName": USER, "PrivateKey": first_private}).to_string()),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        s.client.rotate_secret(name, None).await.unwrap();
    }
    assert!(sshd.key_logs_in(&other_private));
    assert!(
        !sshd.key_logs_in(&first_private),
        "the first key was removed"
    );
    let keys = sshd.authorized_keys();
    assert_eq!(
        keys.lines().filter(|l| !l.trim().is_empty()).count(),
        3,
        "the current, previous and unrelated keys:\n{keys}"
    );
    // The file was replaced by a rename: no temporary file is left next to it.
    let dir = sshd.home.join(".ssh");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("authorized_keys.")),
        "{names:?}"
    );
}

/// The options in front of the key's line (`from=`, `no-agent-forwarding`, …) stay in
/// front of each new key: a rotation does not lift the key's restrictions.
#[tokio::test]
async fn a_rotated_key_keeps_the_restrictions_of_the_key_it_replaces() {
    let _turn = ACCOUNT.lock().await;
    let sshd = Sshd::start();
    let (first_private, first_public) = keygen(sshd.dir.path(), "first", "ed25519");
    let options = r#"no-agent-forwarding,from="127.0.0.1""#;
    // A commented-out copy of the key comes first (its "options" are not the key's),
    // and an unrelated line ends in CR (kept as it is).
    let (_, other_public) = keygen(sshd.dir.path(), "other", "ed25519");
    let other_line = format!("{other_public}\r");
    sshd.authorize_only(&[
        &format!("# {first_public}"),
        &format!("{options} {first_public}"),
        &other_line,
    ]);
    assert!(sshd.key_logs_in(&first_private));
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("ssh-opts", "30d", RotationStrategy::SshKey, &[]))
        .await
        .unwrap();
    s.client
        .create_secret(&ssh_secret(
            "hosts/web/opts",
            json!({"UserName": USER, "PublicKey": first_public, "PrivateKey": first_private}),
            json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key}),
            "ssh-opts",
        ))
        .await
        .unwrap();
    for round in 1..=2 {
        s.client
            .rotate_secret("hosts/web/opts", None)
            .await
            .unwrap();
        let cur = value_at(&s, "hosts/web/opts", None).await;
        let private = cur["PrivateKey"].as_str().unwrap();
        assert!(sshd.key_logs_in(private), "round {round}");
        let blob = cur["PublicKey"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let keys = sshd.authorized_keys();
        let line = keys
            .lines()
            .find(|l| l.contains(&blob))
            .unwrap_or_else(|| panic!("round {round}: no line for the new key:\n{keys}"));
        assert!(
            line.starts_with(&format!("{options} ssh-ed25519 ")),
            "round {round}: {line}"
        );
        assert!(
            keys.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && *l != other_public)
                .all(|l| l.starts_with(options)),
            "round {round}: every key line keeps the options:\n{keys}"
        );
        // (`lines()` takes "\r\n" as a line end, so the CR is looked for in the text.)
        assert!(keys.contains(&format!("{other_line}\n")), "{keys:?}");
    }
}

/// A host with several host keys (as Debian's sshd has by default) pinned by its RSA or
/// ECDSA key: the connection negotiates that key's algorithm, so the pin matches.
#[tokio::test]
async fn a_pinned_rsa_or_ecdsa_host_key_matches_on_a_host_with_several() {
    let _turn = ACCOUNT.lock().await;
    for pin in ["rsa", "ecdsa"] {
        let sshd = Sshd::start_with_host_keys(&["ed25519", "ecdsa", "rsa"], pin);
        let (first_private, first_public) = keygen(sshd.dir.path(), "first", "ed25519");
        sshd.authorize_only(&[&first_public]);
        let s = TestServer::start_with(fast_config()).await;
        s.client
            .create_rotation_policy(&policy("ssh-pin", "30d", RotationStrategy::SshKey, &[]))
            .await
            .unwrap();
        s.client
            .create_secret(&ssh_secret(
                "hosts/web/pinned",
                json!({"UserName": USER, "PublicKey": first_public, "PrivateKey": first_private}),
                json!({"Host": "127.0.0.1", "Port": sshd.port, "HostKey": sshd.host_key}),
                "ssh-pin",
            ))
            .await
            .unwrap();
        s.client
            .rotate_secret("hosts/web/pinned", None)
            .await
            .unwrap_or_else(|e| panic!("pinned {pin}: {e}"));
        let cur = value_at(&s, "hosts/web/pinned", None).await;
        assert!(
            sshd.key_logs_in(cur["PrivateKey"].as_str().unwrap()),
            "{pin}"
        );
    }
}

/// Starts a rotation of `name` (as `version_id`) that stops after *set*, then abandons
/// it (takes `ACSPending` off its version); returns the value it made.
async fn abandon_after_set(s: &TestServer, name: &str, version_id: &str) -> serde_json::Value {
    s.service.set_rotation_halt(Some("set"));
    s.client
        .rotate_secret(name, Some(version_id))
        .await
        .unwrap_err();
    s.service.set_rotation_halt(None);
    let made = value_at(s, name, Some(api::STAGE_PENDING)).await;
    s.client
        .update_secret_stage(
            name,
            &api::UpdateSecretStageRequest {
                version_stage: api::STAGE_PENDING.into(),
                move_to_version: None,
                remove_from_version: Some(version_id.into()),
            },
        )
        .await
        .unwrap();
    made
}

/// A rotation stopped after *set* has authorized its key; abandoned (its `ACSPending`
/// taken off by hand), nobody reads that key any more, so the next rotation's *finish*
/// removes it with the key two versions old. The current, previous and unrelated keys
/// stay.
#[tokio::test]
async fn the_key_of_an_abandoned_rotation_is_removed_by_the_next_one() {
    let _turn = ACCOUNT.lock().await;
    let name = "hosts/web/abandoned";
    let (sshd, s, (first_private, _), (_, other_public)) = two_keys_and_a_secret(name).await;

    let stuck = abandon_after_set(&s, name, "stuck").await;
    let stuck_private = stuck["PrivateKey"].as_str().unwrap().to_string();
    assert!(
        sshd.key_logs_in(&stuck_private),
        "set authorized the new key"
    );

    s.client.rotate_secret(name, None).await.unwrap();
    let current = value_at(&s, name, None).await;
    let current_private = current["PrivateKey"].as_str().unwrap();
    assert!(sshd.key_logs_in(current_private));
    assert!(
        sshd.key_logs_in(&first_private),
        "ACSPrevious still logs in"
    );
    assert!(
        !sshd.key_logs_in(&stuck_private),
        "the abandoned rotation's key was left authorized:\n{}",
        sshd.authorized_keys()
    );
    let keys = sshd.authorized_keys();
    assert_eq!(
        keys.lines().filter(|l| !l.trim().is_empty()).count(),
        3,
        "the current, previous and unrelated keys:\n{keys}"
    );
    assert!(keys.contains(other_public.split_whitespace().nth(1).unwrap()));

    // Under a key of its own, abandoned again; then the secret moves to another key and
    // the first is disabled: the abandoned version (left under it) cannot be read. Its
    // key stays authorized, and the next rotation finishes all the same.
    let move_to = |key: String| api::UpdateSecretRequest {
        encryption_key_id: Some(key),
        ..Default::default()
    };
    let new_key = || async {
        s.client
            .create_key(&api::CreateKeyRequest::default())
            .await
            .unwrap()
            .key_id
    };
    let old_key = new_key().await;
    s.client
        .update_secret(name, &move_to(old_key.clone()))
        .await
        .unwrap();
    let stuck_again = abandon_after_set(&s, name, "stuck-again").await;
    s.client
        .update_secret(name, &move_to(new_key().await))
        .await
        .unwrap();
    s.client.disable_key(&old_key).await.unwrap();
    s.client.rotate_secret(name, None).await.unwrap();
    let d = s.client.describe_secret(name).await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    let current = value_at(&s, name, None).await;
    assert!(sshd.key_logs_in(current["PrivateKey"].as_str().unwrap()));
    assert!(
        sshd.key_logs_in(stuck_again["PrivateKey"].as_str().unwrap()),
        "a key whose version could not be read is left as it was"
    );
}
