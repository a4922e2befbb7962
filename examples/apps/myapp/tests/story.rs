//! The seed's story end to end: an administrator's database account, a secret
//! `MyDbCreds` with a dual-account `postgresql` rotation policy, and MyApp (the real
//! binary) reading it over HTTPS and connecting to PostgreSQL while Strongbox rotates
//! the account five times: no request fails; MyApp re-reads the secret when a login is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../../../../server/tests/api/pg_cluster.rs"]
mod pg_cluster;

use std::sync::Arc;
use std::time::Duration;

use pg_cluster::{PgCluster, account};
use strongbox_client::{Client, ClientConfig};
use strongbox_schemas as api;
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::SystemClock;
use strongbox_server::server::{self, ServeOptions};
use strongbox_server::service::ServiceConfig;
use strongbox_server::storage::{Backend, RedbBackend};
use strongbox_server::tls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn myapp_keeps_working_across_dual_account_rotations() {
    // The database: an application account with a table, and the administrator.
    let pg = PgCluster::start();
    let e = pg
        .psql("postgres", "wrong", "SELECT 1")
        .expect_err("a wrong password must be refused");
    assert!(e.contains("password authentication failed"), "{e}");
    pg.psql(
        "postgres",
        &pg.admin_password,
        "CREATE ROLE myapp LOGIN PASSWORD 'first-password'; CREATE TABLE orders (id int); \
         GRANT SELECT ON orders TO myapp;",
    )
    .unwrap();

    // Strongbox over HTTPS, in this process.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = RootKey::random();
    let token = server::init(&data, Some(&dir.path().join("root-key")), &key).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(&server::db_path(&data)).unwrap());
    let u = server::unseal(
        backend,
        &key,
        Arc::new(SystemClock),
        ServiceConfig::default(),
    )
    .unwrap();
    let certs = tls::dev_certificates().unwrap();
    let running = server::start(
        u,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).unwrap(),
            tick_interval: Duration::from_secs(3600),
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    let addr = format!("https://127.0.0.1:{}", running.addr.port());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let admin = Client::new(ClientConfig {
        address: addr.clone(),
        token: token.to_string(),
        ca_cert_pem: Some(certs.ca_pem.as_bytes().to_vec()),
        timeout: None,
    })
    .unwrap();

    // The administrator stores the admin account and MyDbCreds with a rotation policy.
    admin
        .create_secret(&api::CreateSecretRequest {
            name: "db/admin".into(),
            secret_data: pg.admin_value(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_rotation_policy(&api::CreateRotationPolicyRequest {
            name: "db-monthly".into(),
            interval: api::Interval::parse("30d").unwrap(),
            window: None,
            strategy: api::RotationStrategy::Postgresql,
            settings: None,
            enabled: None,
        })
        .await
        .unwrap();
    admin
        .create_secret(&api::CreateSecretRequest {
            name: "MyDbCreds".into(),
            secret_data: account("myapp", "first-password"),
            secret_type: api::SecretType::Rds,
            extended_config: pg.config("DoubleUsers", "db/admin").as_object().cloned(),
            rotation_policy: Some("db-monthly".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    // MyApp's own principal may read MyDbCreds and describe it (where the database is),
    // nothing else: the two rights README.md names.
    admin
        .create_policy(&api::CreatePolicyRequest {
            name: "myapp-reads-its-db".into(),
            description: None,
            document: r#"{"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:GetSecretValue", "kms:DescribeSecret"],
                "Resource": ["secret/MyDbCreds"]}]}"#
                .parse()
                .unwrap(),
        })
        .await
        .unwrap();
    admin
        .create_principal(&api::CreatePrincipalRequest {
            name: "myapp".into(),
            description: None,
            policies: Some(vec!["myapp-reads-its-db".into()]),
        })
        .await
        .unwrap();
    let app_token = admin
        .create_token("myapp", &api::CreateTokenRequest::default())
        .await
        .unwrap()
        .token;

    // MyApp runs with Strongbox's address, its token and the CA: no password. It runs
    // until its stdin is closed and reports its progress after every request, so the
    // test waits for conditions, never for a fixed time.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_myapp"))
        .env("STRONGBOX_ADDR", &addr)
        .env("STRONGBOX_TOKEN", &app_token)
        .env("STRONGBOX_CACERT", &ca)
        .env("MYAPP_UNTIL_EOF", "1")
        .env("MYAPP_INTERVAL_MS", "10")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("myapp printed a non-JSON line: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    // Reads progress lines until `cond` holds for the latest (blocking; myapp exiting
    // early is a failure).
    fn wait_until(
        rx: &std::sync::mpsc::Receiver<serde_json::Value>,
        last: &mut serde_json::Value,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) {
        while !cond(last) {
            *last = rx
                .recv()
                .unwrap_or_else(|_| panic!("myapp stopped before {what}; last: {last}"));
            assert_eq!(last["failures"], 0, "{last}");
        }
    }
    fn n(v: &serde_json::Value, k: &str) -> u64 {
        v[k].as_u64().unwrap_or(0)
    }
    let mut last = serde_json::Value::Null;
    wait_until(&rx, &mut last, "its first request", |v| {
        n(v, "requests") >= 1
    });
    let mut rotated = Vec::new();
    for i in 0..5 {
        admin.rotate_secret("MyDbCreds", None).await.unwrap();
        rotated.push(
            admin
                .get_secret_value("MyDbCreds", None, None)
                .await
                .unwrap()
                .version_id,
        );
        // MyApp keeps serving after every rotation: a few more requests, whatever the
        // machine's speed.
        let seen = n(&last, "requests");
        let what = format!("serving after rotation {}", i + 1);
        tokio::task::block_in_place(|| {
            wait_until(&rx, &mut last, &what, |v| n(v, "requests") >= seen + 3)
        });
        println!("myapp after rotation {}: {last}", i + 1);
    }
    drop(stdin); // MyApp stops and prints its summary.
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "myapp failed: {stderr}");
    reader.join().unwrap();
    let summary = rx.iter().last().unwrap_or(last);
    println!("myapp: {summary}");
    assert_eq!(summary["failures"], 0, "{stderr}");
    // Rotations reset the account MyApp held every second time: it noticed, read
    // MyDbCreds again and carried on, serving with at least two rotated values.
    assert!(n(&summary, "refreshes") >= 2, "{summary}");
    let used: Vec<&str> = summary["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|v| rotated.iter().any(|r| r == v))
        .collect();
    assert!(
        used.len() >= 2,
        "rotated values used: {used:?} of {rotated:?}"
    );
    assert!(!summary["accounts"].as_array().unwrap().is_empty());
    // The first password is gone from the database.
    let e = pg
        .psql("myapp", "first-password", "SELECT 1")
        .expect_err("the first password was rotated away");
    assert!(e.contains("password authentication failed"), "{e}");
}
