//! The real `strongbox` binary: dev server output, SIGKILL durability, wrong root keys,
//! and no plaintext in files or logs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use strongbox_client::{Client, ClientConfig};

use crate::common::{put, text_secret};

const BIN: &str = env!("CARGO_BIN_EXE_strongbox");

/// A server process, killed when dropped: a test that ends (or fails) while its server
/// runs leaves none behind.
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Dev {
    child: Server,
    client: Client,
    exports: Vec<String>,
}

/// Starts `strongbox server --dev` and waits for its three export lines.
fn start_dev(data_dir: &Path, log: Option<&Path>) -> Dev {
    start_dev_on(data_dir, log, "127.0.0.1:0")
}

/// [`start_dev`] listening on `listen`.
fn start_dev_on(data_dir: &Path, log: Option<&Path>, listen: &str) -> Dev {
    start_dev_with(data_dir, log, listen, &[])
}

/// [`start_dev_on`] with more arguments.
fn start_dev_with(data_dir: &Path, log: Option<&Path>, listen: &str, more: &[&str]) -> Dev {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--dev", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(more)
        .stdout(Stdio::piped())
        .env("STRONGBOX_LOG", "trace");
    match log {
        Some(p) => cmd.stderr(std::fs::File::create(p).unwrap()),
        None => cmd.stderr(Stdio::null()),
    };
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    while out.len() < 3 {
        let line = lines
            .next()
            .expect("dev server exited before printing its exports")
            .unwrap();
        out.push(line);
    }
    let get = |prefix: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("missing {prefix} in {out:?}"))
            .to_string()
    };
    let addr = get("export STRONGBOX_ADDR=");
    let token = get("export STRONGBOX_TOKEN=");
    let ca = get("export STRONGBOX_CACERT=");
    assert!(
        out[0].starts_with("export STRONGBOX_ADDR=https://127.0.0.1:"),
        "{out:?}"
    );
    assert!(out[1].starts_with("export STRONGBOX_TOKEN=sbx_"), "{out:?}");
    assert!(
        Path::new(&ca).is_absolute() && Path::new(&ca).exists(),
        "{ca}"
    );
    let client = Client::new(ClientConfig {
        address: addr,
        token,
        ca_cert_pem: Some(std::fs::read(&ca).unwrap()),
        timeout: Some(Duration::from_secs(10)),
    })
    .unwrap();
    Dev {
        child: Server(child),
        client,
        exports: out,
    }
}

/// Started with the usual soft limit of open files under a low hard one, the server
/// raises the soft limit to the hard one and serves no more connections than it holds
/// (with room for its other files), saying so.
#[test]
fn the_server_raises_the_open_file_limit_and_fits_its_connections_to_it_and_dumps_no_core() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 300 && ulimit -Hn 600 && exec \"$0\" server --dev --listen 127.0.0.1:0 --data-dir \"$1\"")
        .arg(BIN)
        .arg(root.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines
            .next()
            .expect("the server printed its exports")
            .unwrap();
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    // The soft and hard values of a line of /proc/PID/limits.
    let limit = |name: &str| {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(limit("Max open files"), ["600", "600"], "{limits}");
    // What it holds stays out of core dumps.
    assert_eq!(limit("Max core file size"), ["0", "0"], "{limits}");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("--max-connections lowered"), "{log}");
    assert!(log.contains("serving=344"), "{log}");
}

/// `--unauthenticated-rate-limit` sets how many requests without a valid token one
/// address gets a second (in bursts of ten seconds' worth): at 1, a burst of 15 is cut
/// after 10 or so with 429, and the log says the address was limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unauthenticated_rate_limit_is_set_by_its_flag() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("log");
    let dev = start_dev_with(
        &root.path().join("data"),
        Some(&log),
        "127.0.0.1:0",
        &["--unauthenticated-rate-limit", "1"],
    );
    let export = |name: &str| {
        let prefix = format!("export {name}=");
        dev.exports
            .iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap()
            .to_string()
    };
    let wrong = Client::new(ClientConfig {
        address: export("STRONGBOX_ADDR"),
        token: "sbx_not-a-token".into(),
        ca_cert_pem: Some(std::fs::read(export("STRONGBOX_CACERT")).unwrap()),
        timeout: Some(Duration::from_secs(10)),
    })
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let e = wrong.describe_secret("x").await.unwrap_err();
        statuses.push(e.status().unwrap());
    }
    // The burst of 10 is answered, then 429 (a refill on a slow machine may answer
    // one now and then).
    let leading = statuses.iter().take_while(|&&s| s == 401).count();
    assert!(leading >= 10, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 429),
        "{statuses:?}"
    );
    // A valid token is not limited.
    dev.client.list_secrets(&Default::default()).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("exceed its limit"), "{text}");
}

/// `--audit-min-retention` sets what a prune must leave: with 1s, records two seconds
/// old are pruned, and asking for less than 1s is refused naming it. Killed right after
/// the prune, the server starts again with the prune in place (replayed from the commit
/// journal) and the trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_min_retention_is_set_by_its_flag() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut dev = start_dev_with(&data, None, "127.0.0.1:0", &["--audit-min-retention", "1s"]);
    let c = &dev.client;
    c.list_secrets(&Default::default()).await.unwrap();
    let older_than = |t: &str| strongbox_schemas::PruneAuditRequest {
        older_than: strongbox_schemas::Interval::parse(t).unwrap(),
    };
    let e = c.prune_audit(&older_than("0s")).await.unwrap_err();
    assert!(e.to_string().contains("must be at least 1s"), "{e}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.prune_audit(&older_than("1s")).await.unwrap();
    assert!(r.pruned >= 2 && !r.more, "{r:?}");
    dev.child.kill().unwrap(); // SIGKILL: no checkpoint at stop
    dev.child.wait().unwrap();
    let dev = start_dev(&data, None);
    let v = dev.client.verify_audit().await.unwrap();
    assert!(v.intact && v.pruned == r.first_seq - 1, "{v:?} after {r:?}");
}

/// `--audit-retention` prunes in the background (here every second, records older than
/// two); one shorter than `--audit-min-retention` is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_retention_prunes_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("refused"))
        .args(["--audit-retention", "1d"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--audit-retention 1d is shorter than --audit-min-retention 30d"),
        "{stderr}"
    );
    let dev = start_dev_with(
        &root.path().join("data"),
        None,
        "127.0.0.1:0",
        &[
            "--audit-min-retention",
            "1s",
            "--audit-retention",
            "2s",
            "--tick-interval",
            "1",
        ],
    );
    let c = &dev.client;
    for _ in 0..3 {
        c.list_secrets(&Default::default()).await.unwrap();
    }
    // Every record so far, these requests' too, is pruned within a few seconds.
    let so_far = c
        .list_audit(&strongbox_client::AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .count;
    let mut v = c.verify_audit().await.unwrap();
    for _ in 0..100 {
        if v.pruned >= so_far {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v = c.verify_audit().await.unwrap();
    }
    assert!(
        v.intact && v.pruned >= so_far,
        "{v:?}, {so_far} records before"
    );
}

/// Listening on every address, the dev server prints the loopback address, which its
/// certificate names, so that the exports work as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_server_on_every_address_prints_an_address_its_certificate_names() {
    let root = tempfile::tempdir().unwrap();
    let mut dev = start_dev_on(&root.path().join("data"), None, "0.0.0.0:0");
    dev.client.health().await.unwrap();
    dev.client
        .create_secret(&text_secret("reachable", "v"))
        .await
        .unwrap();
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut dev = start_dev(&data, None);
    assert_eq!(dev.exports.len(), 3);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..6 {
        let (c, acked) = (dev.client.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            c.create_secret(&text_secret(&format!("w{w}"), "v0"))
                .await
                .unwrap();
            for i in 1.. {
                let v = format!("v{i}");
                if c.put_secret_value(&format!("w{w}"), &put(&v))
                    .await
                    .is_err()
                {
                    break; // the server is gone
                }
                acked.lock().unwrap().push((format!("w{w}"), v));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    dev.child.kill().unwrap(); // SIGKILL
    dev.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "only {} writes before the kill",
        acked.len()
    );

    let mut dev2 = start_dev(&data, None);
    // The last acknowledged value of each secret is its current value (or a later one
    // whose acknowledgement was lost with the process).
    for w in 0..6 {
        let name = format!("w{w}");
        let last = acked
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v[1..].parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        let cur = dev2
            .client
            .get_secret_value(&name, None, None)
            .await
            .unwrap();
        let cur_n: u64 = cur.secret_data[1..].parse().unwrap();
        assert!(
            cur_n >= last,
            "{name}: current v{cur_n} is older than acknowledged v{last}"
        );
        for (_, v) in acked.iter().filter(|(n, _)| *n == name).rev().take(9) {
            // Every acknowledged version still within the kept window is readable.
            let versions = dev2
                .client
                .list_secret_versions(&name)
                .await
                .unwrap()
                .versions;
            assert!(versions.len() <= 10);
            let _ = v;
        }
    }
    dev2.child.kill().unwrap();
    dev2.child.wait().unwrap();
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_reaches_disk_or_logs() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let log = root.path().join("server.log");
    let marker = format!("MARKER{}", uuid_like());
    let marker2 = format!("{marker}-second");
    let mut dev = start_dev(&data, Some(&log));
    let c = &dev.client;
    let mut req = text_secret("scan/me", &marker);
    req.version_id = Some("v1".into());
    c.create_secret(&req).await.unwrap();
    c.put_secret_value("scan/me", &put(&marker2)).await.unwrap();
    assert_eq!(
        c.get_secret_value("scan/me", Some("v1"), None)
            .await
            .unwrap()
            .secret_data,
        marker
    );
    // Error paths too: a conflicting retry and an oversized value carry the marker.
    let conflict = strongbox_schemas::PutSecretValueRequest {
        version_id: Some("v1".into()),
        ..put(&marker2)
    };
    assert!(c.put_secret_value("scan/me", &conflict).await.is_err());
    assert!(
        c.create_secret(&text_secret("bad name", &marker))
            .await
            .is_err()
    );
    // The key routes: data encrypted and decrypted, a data key made and decrypted, with
    // a context; a decrypt with another context, an encrypt too large. None of the data,
    // the data key or the context is kept or logged.
    let marker3 = format!("{marker}-encrypted");
    let context_marker = format!("{marker}-context");
    let cx: std::collections::BTreeMap<String, String> =
        [("purpose".to_string(), context_marker.clone())].into();
    let k = c.create_key(&Default::default()).await.unwrap().key_id;
    let blob = c
        .encrypt(&k, marker3.as_bytes(), &cx)
        .await
        .unwrap()
        .ciphertext_blob;
    assert_eq!(
        c.decrypt(&blob, &cx).await.unwrap().as_slice(),
        marker3.as_bytes()
    );
    assert!(c.decrypt(&blob, &Default::default()).await.is_err());
    assert!(
        c.encrypt(&k, marker3.repeat(200).as_bytes(), &cx)
            .await
            .is_err()
    );
    let dk = c
        .generate_data_key(
            &k,
            &strongbox_schemas::GenerateDataKeyRequest {
                encryption_context: cx.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let data_key = base64::engine::general_purpose::STANDARD
        .decode(&dk.plaintext)
        .unwrap();
    assert_eq!(
        c.decrypt(&dk.ciphertext_blob, &cx)
            .await
            .unwrap()
            .as_slice(),
        data_key
    );
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();

    let mut files = Vec::new();
    all_files(root.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("strongbox.redb")));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "logs were captured at trace level"
    );
    let needles: [&[u8]; 5] = [
        marker.as_bytes(),
        marker2.as_bytes(),
        marker3.as_bytes(),
        context_marker.as_bytes(),
        &data_key,
    ];
    for m in needles {
        let forms = [
            m.to_vec(),
            base64::engine::general_purpose::STANDARD
                .encode(m)
                .into_bytes(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(m)
                .into_bytes(),
            hex::encode(m).into_bytes(),
            hex::encode_upper(m).into_bytes(),
        ];
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            for form in &forms {
                assert!(
                    !contains(&bytes, form),
                    "{} holds the plaintext marker ({})",
                    f.display(),
                    String::from_utf8_lossy(form)
                );
            }
        }
    }
}

/// At trace level the server's log holds no database password, old or new, nor the
/// SCRAM verifier a PostgreSQL rotation sets: tokio-postgres logs each statement it sends
/// at debug level, and an `ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'` is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_rotation_logs_no_password_nor_verifier_at_trace_level() {
    use strongbox_schemas as api;
    let pg = crate::pg_cluster::PgCluster::start();
    pg.admin()
        .await
        .batch_execute("CREATE ROLE logscan LOGIN PASSWORD 'pw-logscan-0'")
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("server.log");
    let mut dev = start_dev(&root.path().join("data"), Some(&log));
    let c = &dev.client;
    c.create_secret(&text_secret("db/admin", &pg.admin_value()))
        .await
        .unwrap();
    c.create_rotation_policy(&crate::rotation::policy(
        "pg",
        "30d",
        api::RotationStrategy::Postgresql,
        &[],
    ))
    .await
    .unwrap();
    let config = pg.config("SingleUser", "db/admin");
    c.create_secret(&api::CreateSecretRequest {
        name: "db/app".into(),
        secret_data: crate::pg_cluster::account("logscan", "pw-logscan-0"),
        secret_type: api::SecretType::Rds,
        extended_config: config.as_object().cloned(),
        rotation_policy: Some("pg".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.rotate_secret("db/app", None).await.unwrap();
    let value: serde_json::Value = serde_json::from_str(
        &c.get_secret_value("db/app", None, None)
            .await
            .unwrap()
            .secret_data,
    )
    .unwrap();
    let new_password = value["AccountPassword"].as_str().unwrap().to_string();
    assert_ne!(new_password, "pw-logscan-0");
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE"), "logs were captured at trace level");
    for needle in ["SCRAM-SHA-256$", "pw-logscan-0", new_password.as_str()] {
        assert!(!text.contains(needle), "the log holds {needle}");
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{n:x}{:x}", std::process::id())
}

fn hash_dir(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    all_files(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect()
}

/// The README's `strongbox init --root-key-file /etc/strongbox/root.key` on a host where
/// that directory does not exist yet: init makes it, private (0700), and a directory that
/// exists keeps its mode.
#[test]
fn init_makes_a_missing_key_directory_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let key_dir = root.path().join("etc/strongbox");
    let key = key_dir.join("root.key");
    let out = init_command(root.path().join("data"), &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&key_dir), 0o700);
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = init_command(root.path().join("data2"), shared.join("root.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        mode(&shared),
        0o755,
        "an existing directory is left as it is"
    );
}
/// An init that fails after it made the data dir (and the key's directory) leaves
/// neither behind: here the key file's parent is a file, so the key cannot be written.
/// A directory that was there stays, and init then succeeds where it can.
#[test]
fn a_failed_init_leaves_no_directory_it_made() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let data = root.path().join("deep/data");
    let out = init_command(&data, blocker.join("root.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!data.exists(), "the data dir it made is gone");
    assert!(!root.path().join("deep").exists(), "and its parent it made");
    // Failing half-way through making the data dir's path (a name too long for the file
    // system below a directory it made) leaves nothing either.
    let too_long = root.path().join("half").join("x".repeat(300));
    let out = init_command(&too_long, root.path().join("k/root.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !root.path().join("half").exists(),
        "the level it made is gone"
    );
    // A key directory it made, under a data dir that existed (and stays).
    let existing = root.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let out = init_command(&existing, blocker.join("sub/root.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(existing.exists(), "a data dir that was there stays");
    assert_eq!(
        std::fs::read_dir(&existing).unwrap().count(),
        0,
        "and holds nothing"
    );
    let out = init_command(&data, root.path().join("keys/root.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("strongbox.redb").exists());
}

#[test]
fn init_then_wrong_root_key_is_refused_and_nothing_changes() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let key = root.path().join("root.key");
    let out = init_command(&data, &key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("sbx_").count(),
        1,
        "the root token is printed once: {stdout}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Again on the same data dir: refused.
    let again = init_command(&data, root.path().join("k2"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    // A key file inside the data dir: refused.
    let inside = init_command(root.path().join("d3"), root.path().join("d3/key"))
        .output()
        .unwrap();
    assert!(!inside.status.success());
    assert!(String::from_utf8_lossy(&inside.stderr).contains("apart from the data dir"));
    // Also when neither exists yet and the paths are written differently: through
    // `..`, or through a link to the data dir to be.
    std::os::unix::fs::symlink(root.path().join("d5"), root.path().join("to-d5")).unwrap();
    for (data_dir, key_file) in [
        (
            root.path().join("nowhere/../d4"),
            root.path().join("d4/key"),
        ),
        (root.path().join("d5"), root.path().join("to-d5/key")),
    ] {
        let inside = init_command(&data_dir, &key_file).output().unwrap();
        assert!(!inside.status.success(), "{data_dir:?} {key_file:?}");
        assert!(
            String::from_utf8_lossy(&inside.stderr).contains("apart from the data dir"),
            "{}",
            String::from_utf8_lossy(&inside.stderr)
        );
        assert!(!key_file.exists() && !strongbox_server::server::db_path(&data_dir).exists());
    }
    // An init stopped before it finished leaves a database file with nothing in it: init
    // and the server say to remove it and start again (not "already holds a database"
    // and "run strongbox init"), and once it is removed, init works.
    let unfinished = root.path().join("d6");
    std::fs::create_dir_all(&unfinished).unwrap();
    let db = strongbox_server::server::db_path(&unfinished);
    std::fs::File::create(&db).unwrap();
    let again = init_command(&unfinished, root.path().join("k6"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    let opened = strongbox_server::server::open(
        &unfinished,
        &strongbox_server::barrier::RootKey::random(),
        Default::default(),
    )
    .err()
    .expect("refused");
    for said in [
        String::from_utf8_lossy(&again.stderr).into_owned(),
        format!("{opened:#}"),
    ] {
        assert!(
            said.contains("remove the file strongbox.redb") && !said.contains("already holds"),
            "{said}"
        );
    }
    std::fs::remove_file(&db).unwrap();
    let fresh = init_command(&unfinished, root.path().join("k6"))
        .output()
        .unwrap();
    assert!(fresh.status.success());
    // Killed in the last instant, the key file named and the database written but for
    // its root-key check: the store is an unfinished init, for init (before it looks at
    // the key file) and for the server with that very key.
    let killed = root.path().join("d7");
    let killed_key = root.path().join("k7");
    let out = init_command(&killed, &killed_key)
        .env("STRONGBOX_FAILPOINT_INIT_ABORT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(killed_key.exists(), "named before the check");
    let again = init_command(&killed, &killed_key).output().unwrap();
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        !again.status.success()
            && said.contains("did not finish")
            && said.contains("root key file"),
        "{said}"
    );
    let killed_root = strongbox_server::server::load_root_key(Some(&killed_key), None).unwrap();
    let opened = strongbox_server::server::open(&killed, &killed_root, Default::default())
        .err()
        .expect("refused");
    assert!(
        format!("{opened:#}").contains("remove the file strongbox.redb"),
        "{opened:#}"
    );

    let certs = strongbox_server::tls::dev_certificates().unwrap();
    std::fs::write(root.path().join("cert.pem"), &certs.cert_pem).unwrap();
    write_tls_key(root.path().join("key.pem"), &certs.key_pem);
    let wrong = root.path().join("wrong.key");
    std::fs::write(
        &wrong,
        strongbox_server::barrier::RootKey::random()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
    let before = hash_dir(&data);
    let start_with_key_file = |file: &std::path::Path| {
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--root-key-file")
            .arg(file)
            .arg("--tls-cert")
            .arg(root.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(root.path().join("key.pem"))
            .output_within()
            .unwrap()
    };
    // A key file every user may read is refused before it is used.
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = start_with_key_file(&wrong);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every user may read it"), "{err}");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    // So is a TLS key file every user may read (the right root key this time).
    let tls_key = root.path().join("key.pem");
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = start_with_key_file(&key);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS key file") && err.contains("other users may read or change it"),
        "{err}"
    );
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Given two ways at once: refused, not one of them picked silently.
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--root-key-file")
        .arg(&key)
        .env("STRONGBOX_ROOT_KEY", "x")
        .arg("--tls-cert")
        .arg(root.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(root.path().join("key.pem"))
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give the root key one way"), "{err}");
    let out = start_with_key_file(&wrong);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root key does not match"), "{err}");
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");

    // The key itself comes only from the environment, never the command line (where
    // any local user could read it): the wrong one is refused that way too, and there
    // is no flag that would take it.
    let wrong_key = std::fs::read_to_string(&wrong).unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(root.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(root.path().join("key.pem"))
        .env("STRONGBOX_ROOT_KEY", wrong_key.trim())
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root key does not match"), "{err}");
    let out = Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(&data)
        .args(["--root-key", wrong_key.trim()])
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unexpected argument '--root-key'"), "{err}");
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");

    // Without TLS files the server refuses to start: never plain HTTP.
    let out = Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(&data)
        .arg("--root-key-file")
        .arg(&key)
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never serves plain HTTP"));
}

/// A store written by an older version lacks tables that later versions added. Opened
/// with a wrong root key, it is refused with nothing on disk changed: no table is
/// created before the key is checked. With the right key it opens (tables come with
/// their first write).
#[tokio::test]
async fn a_wrong_root_key_leaves_an_older_store_untouched() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let key = root.path().join("root.key");
    let out = init_command(&data, &key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As an older version left it: no rotation schedule table.
    {
        let db = redb::Database::create(strongbox_server::server::db_path(&data)).unwrap();
        let tx = db.begin_write().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new(strongbox_server::storage::Table::RotationSchedule.name());
        let _ = tx.delete_table(def).unwrap();
        tx.commit().unwrap();
    }
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    std::fs::write(root.path().join("cert.pem"), &certs.cert_pem).unwrap();
    write_tls_key(root.path().join("key.pem"), &certs.key_pem);
    let wrong = strongbox_server::barrier::RootKey::random().to_base64();
    let before = hash_dir(&data);
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(root.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(root.path().join("key.pem"))
        .env("STRONGBOX_ROOT_KEY", wrong.as_str())
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("root key does not match"));
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");
    // The right key opens it.
    let key = std::fs::read_to_string(&key).unwrap();
    let u = strongbox_server::server::open(
        &data,
        &strongbox_server::server::load_root_key(None, Some(key.trim())).unwrap(),
        Default::default(),
    );
    assert!(u.is_ok(), "{:?}", u.err());
}

/// After a crash the open writes to disk (redb repairs its file, the journal's commits
/// go into it), so a wrong root key is checked against the store as that open would
/// leave it, opened in memory: refused, with nothing on disk changed, and the right key
/// then finds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_root_key_after_a_crash_changes_nothing_on_disk() {
    let root = tempfile::tempdir().unwrap();
    let (data, key) = (root.path().join("data"), root.path().join("root.key"));
    let token = printed_token(&init_command(&data, &key).output().unwrap());
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let (cert, tls_key) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    std::fs::write(&cert, &certs.cert_pem).unwrap();
    write_tls_key(&tls_key, &certs.key_pem);
    let log = root.path().join("server.log");
    let (mut server, addr) = start_server(&data, &key, &cert, &tls_key, &log).await;
    let client = |addr: &str| {
        Client::new(ClientConfig {
            address: addr.to_string(),
            token: token.clone(),
            ca_cert_pem: Some(certs.ca_pem.as_bytes().to_vec()),
            timeout: Some(Duration::from_secs(10)),
        })
        .unwrap()
    };
    let c = client(&addr);
    for i in 0..5 {
        c.create_secret(&text_secret(&format!("crash/{i}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    // What the real open has to do here: redb repairs the file, and the journal holds
    // commits the database lacks (both shown on copies).
    let db = strongbox_server::server::db_path(&data);
    let journal = strongbox_server::storage::journal_path(&db);
    let copy = root.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let copied = strongbox_server::server::db_path(&copy);
    std::fs::copy(&db, &copied).unwrap();
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    drop(
        redb::Database::builder()
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .open(&copied)
            .unwrap(),
    );
    assert!(repaired.load(std::sync::atomic::Ordering::SeqCst));
    assert!(std::fs::metadata(&journal).unwrap().len() > 0);

    let wrong = root.path().join("wrong.key");
    write_foreign_root_key(&wrong);
    let before = hash_dir(&data);
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--root-key-file")
        .arg(&wrong)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&tls_key)
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root key does not match"), "{err}");
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");
    // `reset-root-token` opens the same way.
    let out = Command::new(BIN)
        .args(["reset-root-token", "--data-dir"])
        .arg(&data)
        .arg("--root-key-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");

    let (mut server, addr) = start_server(&data, &key, &cert, &tls_key, &log).await;
    let c = client(&addr);
    for i in 0..5 {
        let v = c
            .get_secret_value(&format!("crash/{i}"), None, None)
            .await
            .unwrap();
        assert_eq!(v.secret_data.as_str(), format!("v{i}"));
    }
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());
}

/// `command` run as `nobody` (uid and gid 65534, no supplementary groups).
fn as_nobody(command: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.env("LC_ALL", "C");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        command,
    ]);
    c
}

/// The server makes itself non-dumpable at start, so another process of the same user
/// cannot read its memory or its environment, where `STRONGBOX_ROOT_KEY` may be. Shown
/// as `nobody` (root may read any process): reading a plain process's environment (the
/// control) works, reading the server's is refused, and root finds the key there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_of_the_same_user_cannot_read_the_servers_environment() {
    assert!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
        "this test runs processes as nobody with setpriv, which needs root"
    );
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = home.join("strongbox");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, key) = (home.join("data"), home.join("root.key"));
    let out = as_nobody(bin.to_str().unwrap())
        .args(["init", "--data-dir"])
        .arg(&data)
        .arg("--root-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let (cert, tls_key) = (home.join("cert.pem"), home.join("key.pem"));
    for (path, pem) in [(&cert, &certs.cert_pem), (&tls_key, &certs.key_pem)] {
        std::fs::write(path, pem).unwrap();
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root_key = std::fs::read_to_string(&key).unwrap().trim().to_string();
    let log = root.path().join("server.log");
    let server = Server(
        as_nobody(bin.to_str().unwrap())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&tls_key)
            .env("STRONGBOX_ROOT_KEY", &root_key)
            .env("STRONGBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("serving HTTPS")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("serving HTTPS"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let read_environ = |pid: u32| {
        as_nobody("cat")
            .arg(format!("/proc/{pid}/environ"))
            .output()
            .unwrap()
    };
    // The control: a plain process of nobody's, its environment read by nobody.
    let mut plain = Server(
        as_nobody("sleep")
            .arg("30")
            .env("PLAIN_MARKER", "plain-4c1e")
            .spawn()
            .unwrap(),
    );
    // Once setpriv has made way for sleep (until then the process is setpriv's).
    for _ in 0..100 {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", plain.id()));
        if comm.is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = read_environ(plain.id());
    assert!(
        seen.status.success(),
        "{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    assert!(String::from_utf8_lossy(&seen.stdout).contains("plain-4c1e"));
    plain.kill().unwrap();
    // The server's: refused to the same user, there for root.
    let refused = read_environ(server.id());
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains(&root_key));
    let as_root = std::fs::read(format!("/proc/{}/environ", server.id())).unwrap();
    assert!(String::from_utf8_lossy(&as_root).contains(&root_key));
}

/// `--dev` makes its own root key and certificate: the flags and the variable that would
/// name others are refused instead of being silently ignored, and two dev data dirs whose
/// names differ only after a dot keep keys of their own.
#[test]
fn dev_refuses_the_settings_it_would_ignore_and_keeps_one_key_per_dir() {
    let root = tempfile::tempdir().unwrap();
    for flag in ["--root-key-file", "--tls-cert", "--tls-key"] {
        let out = Command::new(BIN)
            .args(["server", "--dev", flag, "/nonexistent"])
            .output_within()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot be used with"), "{flag}: {err}");
    }
    let out = Command::new(BIN)
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("d"))
        .env("STRONGBOX_ROOT_KEY", "x")
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRONGBOX_ROOT_KEY"));
    assert!(!root.path().join("d.root-key").exists(), "nothing was made");
    // A store `strongbox init` made (its key kept elsewhere) is not opened by --dev,
    // which would replace its root token; nothing in it changes.
    // Nor one whose key its operator kept where --dev would keep it.
    for (dir, key) in [
        ("prod", "keys-elsewhere.key"),
        ("beside", "beside.root-key"),
    ] {
        let store = root.path().join(dir);
        let out = init_command(&store, root.path().join(key))
            .output()
            .unwrap();
        assert!(out.status.success());
        let before = hash_dir(&store);
        let err = dev_refused(&store);
        assert!(err.contains("a database that --dev did not make"), "{err}");
        assert_eq!(hash_dir(&store), before, "nothing in {dir} changed");
    }
    assert!(!root.path().join("prod.root-key").exists());
    // A dev store of an earlier release (its certificate files, no marker) beside a key
    // that is not its own: refused by the key check, and the marker is not left behind.
    let old = root.path().join("old");
    assert!(
        init_command(&old, root.path().join("old-elsewhere.key"))
            .output()
            .unwrap()
            .status
            .success()
    );
    std::fs::copy(
        root.path().join("keys-elsewhere.key"),
        root.path().join("old.root-key"),
    )
    .unwrap();
    std::fs::write(old.join("ca.pem"), "earlier release").unwrap();
    std::fs::write(old.join("tls-key.pem"), "earlier release").unwrap();
    let before = hash_dir(&old);
    let err = dev_refused(&old);
    assert!(!err.contains("--dev did not make"), "{err}");
    assert_eq!(hash_dir(&old), before, "nothing in old changed");
    // A key where an earlier release kept it for `sb.v0` is not taken for a new store's.
    std::fs::write(root.path().join("sb.root-key"), "from an earlier release").unwrap();
    for dir in ["sb.v1", "sb.v2"] {
        let mut dev = start_dev(&root.path().join(dir), None);
        assert!(
            root.path().join(format!("{dir}.root-key")).exists(),
            "{dir}"
        );
        dev.child.kill().unwrap();
        dev.child.wait().unwrap();
    }
}

/// Runs `server --dev` on `dir`, which must refuse it: its standard error.
fn dev_refused(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .output_within()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// [`Command::output`] for a server that must exit by itself (refusing to start): one
/// that keeps running is stopped after 30 s and the test fails, instead of waiting for
/// it for ever.
trait OutputWithin {
    fn output_within(&mut self) -> std::io::Result<std::process::Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self) -> std::io::Result<std::process::Output> {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server kept running: {self:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output()
    }
}

/// An init whose root token cannot be shown (standard output is a full device) keeps
/// nothing: no database whose root token nobody saw, no key file; run again, it works.
#[test]
fn an_init_whose_root_token_cannot_be_shown_keeps_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let key = root.path().join("root.key");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = init_command(&data, &key)
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nothing was kept"), "{err}");
    assert!(!key.exists());
    assert!(!strongbox_server::server::db_path(&data).exists());
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("root.key"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A reader that went away: said as well, not the quiet status of a closed pipe.
    let mut child = init_command(&data, &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was kept"), "{err}");
    assert!(!key.exists());
    let out = init_command(&data, &key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sbx_"));
}

/// What init and the server would misread is refused, saying what it is, and nothing
/// changes: a data dir that is a file (its mode stays), a root key file that is a
/// symbolic link to nothing yet (refused before the root token is shown), and a data
/// dir the user cannot look into (not "run strongbox init").
#[test]
fn init_and_open_refuse_what_they_would_misread() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("notes.txt");
    std::fs::write(&file, b"x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = init_command(&file, root.path().join("k1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a directory"), "{err}");
    assert!(!err.contains("already holds"), "{err}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(!root.path().join("k1").exists());

    let link = root.path().join("root.key");
    std::os::unix::fs::symlink(root.path().join("mounted/root.key"), &link).unwrap();
    let data = root.path().join("data");
    let out = init_command(&data, &link).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("a symbolic link"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sbx_"));
    assert!(!data.exists());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A store the user cannot look into (root's 0700 temp dir, as nobody; the key
    // given in the environment, so that the store is the first thing it cannot read).
    let key = root.path().join("keys/root.key");
    let out = init_command(&data, &key).output().unwrap();
    assert!(out.status.success());
    let out = as_nobody(BIN)
        .args(["reset-root-token", "--data-dir"])
        .arg(&data)
        .env(
            "STRONGBOX_ROOT_KEY",
            std::fs::read_to_string(&key).unwrap().trim(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("strongbox init"), "{err}");
    assert!(err.contains("ermission denied"), "{err}");
}

/// `strongbox init --data-dir DATA --root-key-file KEY`.
fn init_command(data: impl AsRef<std::path::Path>, key: impl AsRef<std::path::Path>) -> Command {
    let mut c = Command::new(BIN);
    c.args(["init", "--data-dir"])
        .arg(data.as_ref())
        .arg("--root-key-file")
        .arg(key.as_ref());
    c
}

/// The commit journal holds what the database does not until a checkpoint: after a
/// crash, a start without it is refused (naming the file and the way out), while after a
/// clean stop (SIGTERM checkpoints and closes the database, so that redb has nothing to
/// repair) the database stands alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_journal_is_refused_after_a_crash_but_not_after_a_clean_stop() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let journal =
        strongbox_server::storage::journal_path(&strongbox_server::server::db_path(&data));
    let start_refused = || {
        let out = Command::new(BIN)
            .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .output_within()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let mut dev = start_dev(&data, None);
    dev.client
        .create_secret(&text_secret("j/crash", "v1"))
        .await
        .unwrap();
    dev.child.kill().unwrap(); // SIGKILL
    dev.child.wait().unwrap();
    std::fs::remove_file(&journal).unwrap();
    let err = start_refused();
    assert!(
        err.contains("is missing") && err.contains(&journal.display().to_string()),
        "{err}"
    );
    assert!(err.contains("create an empty file"), "{err}");

    // The way out the message names: an empty journal, and the lost commit is lost.
    std::fs::write(&journal, b"").unwrap();
    let dev = start_dev(&data, None);
    assert!(
        dev.client
            .get_secret_value("j/crash", None, None)
            .await
            .is_err()
    );
    dev.client
        .create_secret(&text_secret("j/clean", "v2"))
        .await
        .unwrap();
    let Dev {
        mut child, client, ..
    } = dev;
    drop(client);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    // The process closed the database before it ended: redb finds no repair to do.
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .open(strongbox_server::server::db_path(&data))
        .unwrap();
    drop(db);
    assert!(
        !repaired.load(std::sync::atomic::Ordering::SeqCst),
        "the database was not closed cleanly"
    );
    std::fs::remove_file(&journal).unwrap();
    let dev = start_dev(&data, None);
    let v = dev
        .client
        .get_secret_value("j/clean", None, None)
        .await
        .unwrap();
    assert_eq!(v.secret_data.as_str(), "v2");
}

/// Whether a new connection to `addr` completes a health request trusting only `ca`.
async fn trusted_by(addr: &str, ca: &str) -> bool {
    let client = Client::new(ClientConfig {
        address: addr.to_string(),
        token: "unused".into(),
        ca_cert_pem: Some(ca.as_bytes().to_vec()),
        timeout: Some(Duration::from_secs(5)),
    })
    .unwrap();
    client.health().await.is_ok()
}

/// Sends `signal` (a name `kill` knows) to the process.
fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Starts `strongbox server` (not `--dev`) on `data` with the root key file `key` and
/// the TLS files, logging to `log`; returns it and its `https://` address, from the log
/// line that says it serves.
async fn start_server(
    data: &Path,
    key: &Path,
    cert: &Path,
    tls_key: &Path,
    log: &Path,
) -> (Server, String) {
    let server = Server(
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--root-key-file")
            .arg(key)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(tls_key)
            .env("STRONGBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    for _ in 0..200 {
        let addr = log_text().lines().find_map(|l| {
            let rest = &l[l.find("serving HTTPS")?..];
            let a = rest[rest.find("addr=")? + 5..].split_whitespace().next()?;
            Some(format!("https://{a}"))
        });
        if let Some(addr) = addr {
            return (server, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start: {}", log_text());
}

/// SIGHUP reads `--tls-cert` and `--tls-key` again: new connections get the new
/// certificate without a restart. Files that do not belong together (a renewal half
/// written) are refused, the certificate in place stays, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tls_certificate_and_keeps_it_when_the_new_files_are_bad() {
    let root = tempfile::tempdir().unwrap();
    let (data, key) = (root.path().join("data"), root.path().join("root.key"));
    let out = init_command(&data, &key).output().unwrap();
    assert!(out.status.success());
    let first = strongbox_server::tls::dev_certificates().unwrap();
    let second = strongbox_server::tls::dev_certificates().unwrap();
    let (cert, tls_key) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    std::fs::write(&cert, &first.cert_pem).unwrap();
    write_tls_key(&tls_key, &first.key_pem);
    let log = root.path().join("server.log");
    let (server, addr) = start_server(&data, &key, &cert, &tls_key, &log).await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(trusted_by(&addr, &first.ca_pem).await);
    assert!(!trusted_by(&addr, &second.ca_pem).await);

    // The new certificate with the old key: refused, the old certificate stays.
    std::fs::write(&cert, &second.cert_pem).unwrap();
    signal(&server, "HUP");
    assert!(
        log_shows(&log, "TLS certificate not reloaded").await,
        "{}",
        log_text()
    );
    assert!(log_text().contains("do not match"), "{}", log_text());
    assert!(trusted_by(&addr, &first.ca_pem).await);
    assert!(!trusted_by(&addr, &second.ca_pem).await);

    // Both files renewed: new connections get the new certificate.
    write_tls_key(&tls_key, &second.key_pem);
    signal(&server, "HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        reloaded = trusted_by(&addr, &second.ca_pem).await;
        if reloaded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "{}", log_text());
    assert!(!trusted_by(&addr, &first.ca_pem).await);
    assert!(
        log_text().contains("TLS certificate reloaded"),
        "{}",
        log_text()
    );
    // A key file every user may read is not taken either.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&cert, &first.cert_pem).unwrap();
    write_tls_key(&tls_key, &first.key_pem);
    signal(&server, "HUP");
    assert!(
        log_shows(&log, "has mode 644: other users may read or change it").await,
        "{}",
        log_text()
    );
    assert!(trusted_by(&addr, &second.ca_pem).await);
    // The key never reaches the log.
    let key_body: String = second
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!log_text().contains(&key_body));

    // Still serving, and SIGTERM still stops it cleanly.
    let mut server = server;
    assert!(matches!(server.try_wait(), Ok(None)));
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());
}

/// Whether the log at `log` says `needle` within 5 s.
async fn log_shows(log: &Path, needle: &str) -> bool {
    for _ in 0..100 {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Writes a TLS private key as an operator would keep it: readable by its owner only.
fn write_tls_key(path: impl AsRef<Path>, pem: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
}

/// The token an `init` or `reset-root-token` printed last.
fn printed_token(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text.lines().last().unwrap_or_default().trim().to_string();
    assert!(token.starts_with("sbx_"), "{text}");
    token
}

/// A lost root token is replaced with the root key while the server is stopped: the
/// new token works, the old one no longer does, the audit trail records who did it
/// (the holder of the root key), and neither a wrong root key nor a running server's
/// open database lets it happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_root_token_is_replaced_with_the_root_key_while_the_server_is_stopped() {
    let root = tempfile::tempdir().unwrap();
    let (data, key) = (root.path().join("data"), root.path().join("root.key"));
    let old = printed_token(&init_command(&data, &key).output().unwrap());
    let reset = |key_file: &Path| {
        Command::new(BIN)
            .args(["reset-root-token", "--data-dir"])
            .arg(&data)
            .arg("--root-key-file")
            .arg(key_file)
            .output()
            .unwrap()
    };
    let wrong = root.path().join("wrong.key");
    write_foreign_root_key(&wrong);
    let before = hash_dir(&data);
    let refused = reset(&wrong);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("root key does not match"));
    assert_eq!(hash_dir(&data), before, "nothing on disk changed");
    let new = printed_token(&reset(&key));
    assert_ne!(new, old);

    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let (cert, tls_key) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    std::fs::write(&cert, &certs.cert_pem).unwrap();
    write_tls_key(&tls_key, &certs.key_pem);
    let (mut server, addr) = start_server(
        &data,
        &key,
        &cert,
        &tls_key,
        &root.path().join("server.log"),
    )
    .await;
    let client = |token: &str| {
        Client::new(ClientConfig {
            address: addr.clone(),
            token: token.to_string(),
            ca_cert_pem: Some(certs.ca_pem.as_bytes().to_vec()),
            timeout: Some(Duration::from_secs(10)),
        })
        .unwrap()
    };
    let q = strongbox_client::AuditQuery {
        action: Some("ram:ResetRootToken".into()),
        ..Default::default()
    };
    let e = client(&old).list_audit(&q).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(strongbox_client::ErrorCode::Unauthenticated),
        "{e}"
    );
    let records = client(&new).list_audit(&q).await.unwrap().records;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].principal, "(root-key)");
    assert_eq!(records[0].resource, "principal/root");
    assert_eq!(records[0].user_agent, "strongbox reset-root-token");

    // The running server holds the database: refused, and the token in place stays.
    let busy = reset(&key);
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("open in another process"), "{err}");
    client(&new).list_audit(&q).await.unwrap();
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());
}

/// A root key file (mode 0600) that is not this store's.
fn write_foreign_root_key(path: &Path) {
    strongbox_server::tls::write_private(
        path,
        strongbox_server::barrier::RootKey::random()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
}
