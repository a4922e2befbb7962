//! Database rotation benchmark: dual-account rotations/s on PostgreSQL and MariaDB, and
//! the single-user window (how long logins with a freshly read `ACSCurrent` fail).
//!
//! `cargo bench -p strongbox-server --bench rotation_db`
//!
//! Needs the databases of `scripts/install-databases.sh`: a throwaway PostgreSQL
//! cluster (SCRAM, on a free port) and MariaDB on 127.0.0.1:3306 (root, no password).
//! In-process services over redb (no HTTP): a rotation is four durable writes plus the
//! strategy's work — an admin login, the password statement(s), a login with the new
//! password.
//!
//! The single-user window is measured from outside, as an application sees it: a probe
//! reads `ACSCurrent` and logs in with it, back to back, while the secret rotates; a
//! window is a run of refused logins, from the first refusal to the next success
//! (resolution: one probe, a few ms).

#[path = "../tests/api/pg_cluster.rs"]
mod pg_cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable as _;
use pg_cluster::{PgCluster, account};
use strongbox_schemas::{self as api, Interval, RotationStrategy};
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, Service, ServiceConfig};
use strongbox_server::storage::{Backend, RedbBackend};

const T0: i64 = 1_767_225_600;
const RUN: Duration = Duration::from_secs(5);
const SINGLE_ROTATIONS: usize = 20;

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Pg(u16),
    My,
}

fn creds(svc: &Service, name: &str) -> (String, String) {
    let v = svc.get_secret_value(name, None, None).expect("value");
    let j: serde_json::Value = serde_json::from_str(&v.secret_data).expect("json");
    (
        j["AccountName"].as_str().expect("name").to_string(),
        j["AccountPassword"].as_str().expect("password").to_string(),
    )
}

async fn login(db: Db, user: &str, password: &str, database: &str) -> bool {
    match db {
        Db::Pg(port) => {
            let mut c = tokio_postgres::Config::new();
            c.host("127.0.0.1")
                .port(port)
                .user(user)
                .password(password)
                .dbname(database);
            match c.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client.simple_query("SELECT 1").await.is_ok()
                }
                Err(_) => false,
            }
        }
        Db::My => {
            let o = mysql_async::OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(3306)
                .user(Some(user))
                .pass(Some(password))
                .db_name(Some(database))
                .prefer_socket(false);
            match mysql_async::Conn::new(o).await {
                Ok(mut c) => {
                    let ok = c.query_drop("SELECT 1").await.is_ok();
                    let _ = c.disconnect().await;
                    ok
                }
                Err(_) => false,
            }
        }
    }
}

fn service() -> (Service, tempfile::TempDir) {
    let dir = tempfile::tempdir_in(".").expect("temp dir");
    let backend: Arc<dyn Backend> =
        Arc::new(RedbBackend::open(&dir.path().join("bench.redb")).expect("redb"));
    let key = RootKey::random();
    server::initialize(backend.as_ref(), &key).expect("init");
    let svc = server::unseal(
        backend,
        &key,
        Arc::new(ManualClock::new(T0)),
        ServiceConfig::default(),
    )
    .expect("unseal")
    .service;
    (svc, dir)
}

fn rds(name: &str, value: String, config: serde_json::Value) -> api::CreateSecretRequest {
    let policy = if name.starts_with("postgresql/") {
        "pg"
    } else {
        "my"
    };
    api::CreateSecretRequest {
        name: name.into(),
        secret_data: value,
        secret_type: api::SecretType::Rds,
        extended_config: config.as_object().cloned(),
        rotation_policy: Some(policy.into()),
        ..Default::default()
    }
}

async fn measure(
    label: &str,
    db: Db,
    svc: &Service,
    config: &dyn Fn(&str) -> serde_json::Value,
    database: &str,
    users: &[String],
) {
    let who = Actor::Trusted(Principal::Named("root".into()));
    // Dual account: rotations/s with 1 and 4 secrets rotating at once.
    for callers in [1usize, 4] {
        for (i, u) in users.iter().take(callers).enumerate() {
            let name = format!("{label}/dual/{callers}/{i}");
            svc.create_secret(rds(&name, account(u, "pw0"), config("DoubleUsers")), &who)
                .await
                .expect("secret");
        }
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..callers {
            let svc = svc.clone();
            let name = format!("{label}/dual/{callers}/{i}");
            set.spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    svc.rotate_secret(&name, Default::default())
                        .await
                        .expect("rotate");
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(r) = set.join_next().await {
            total += r.expect("task");
        }
        println!(
            "{label} dual-account, {callers} secret(s) at once  {:>6.1} rotations/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
        // Users alternate: reset the passwords for the next round.
        for (i, _) in users.iter().take(callers).enumerate() {
            let name = format!("{label}/dual/{callers}/{i}");
            let (u, p) = creds(svc, &name);
            assert!(login(db, &u, &p, database).await, "current logs in");
        }
    }

    // Single user: the window in which a freshly read ACSCurrent is refused.
    let name = format!("{label}/single");
    let user = users.last().expect("user").clone();
    svc.create_secret(
        rds(&name, account(&user, "pw0"), config("SingleUser")),
        &who,
    )
    .await
    .expect("secret");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (svc, name, stop, database) = (
            svc.clone(),
            name.clone(),
            stop.clone(),
            database.to_string(),
        );
        tokio::spawn(async move {
            let (mut probes, mut windows) = (0u64, Vec::new());
            let mut failing_since: Option<Instant> = None;
            while !stop.load(Ordering::SeqCst) {
                let (u, p) = creds(&svc, &name);
                let ok = login(db, &u, &p, &database).await;
                probes += 1;
                match (ok, failing_since) {
                    (false, None) => failing_since = Some(Instant::now()),
                    (true, Some(t)) => {
                        windows.push(t.elapsed());
                        failing_since = None;
                    }
                    _ => {}
                }
            }
            (probes, windows)
        })
    };
    let start = Instant::now();
    for _ in 0..SINGLE_ROTATIONS {
        svc.rotate_secret(&name, Default::default())
            .await
            .expect("rotate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (probes, mut windows) = probe.await.expect("probe");
    windows.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let probe_ms = start.elapsed().as_secs_f64() * 1000.0 / probes as f64;
    match (
        windows.first(),
        windows.get(windows.len() / 2),
        windows.last(),
    ) {
        (Some(min), Some(med), Some(max)) => println!(
            "{label} single-user window over {SINGLE_ROTATIONS} rotations: {} seen, min {:.1} ms, median {:.1} ms, max {:.1} ms (probe every {probe_ms:.1} ms)",
            windows.len(),
            ms(*min),
            ms(*med),
            ms(*max)
        ),
        _ => println!(
            "{label} single-user window over {SINGLE_ROTATIONS} rotations: none seen (probe every {probe_ms:.1} ms)"
        ),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    println!(
        "strongbox database rotation benchmark: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (svc, _dir) = service();
    for (name, strategy) in [
        ("pg", RotationStrategy::Postgresql),
        ("my", RotationStrategy::Mysql),
    ] {
        svc.create_rotation_policy(
            api::CreateRotationPolicyRequest {
                name: name.into(),
                interval: Interval::parse("30d").expect("interval"),
                window: None,
                strategy,
                settings: None,
                enabled: None,
            },
            &Actor::Trusted(Principal::Named("root".into())),
        )
        .await
        .expect("policy");
    }
    let who = Actor::Trusted(Principal::Named("root".into()));

    // PostgreSQL: a throwaway SCRAM cluster.
    let pg = PgCluster::start();
    let users: Vec<String> = (0..5).map(|i| format!("bench{i}")).collect();
    for u in &users {
        pg.psql(
            "postgres",
            &pg.admin_password,
            &format!("CREATE ROLE {u} LOGIN PASSWORD 'pw0'"),
        )
        .expect("role");
    }
    svc.create_secret(
        api::CreateSecretRequest {
            name: "pg/admin".into(),
            secret_data: pg.admin_value(),
            ..Default::default()
        },
        &who,
    )
    .await
    .expect("admin");
    let port = pg.port;
    let pg_config = move |sub: &str| {
        serde_json::json!({"SecretSubType": sub, "Host": "127.0.0.1", "Port": port,
            "Database": "postgres", "TlsMode": "disable", "AdminSecret": "pg/admin"})
    };
    measure(
        "postgresql",
        Db::Pg(port),
        &svc,
        &pg_config,
        "postgres",
        &users,
    )
    .await;

    // MariaDB: accounts and a database on 127.0.0.1:3306.
    let tag = format!("sbxb{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut root = mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some("root"))
            .pass(Some(""))
            .prefer_socket(false),
    )
    .await
    .expect("MariaDB on 127.0.0.1:3306 as root (run scripts/install-databases.sh)");
    root.query_drop(format!("CREATE DATABASE {tag}"))
        .await
        .expect("db");
    let my_users: Vec<String> = (0..5).map(|i| format!("{tag}_{i}")).collect();
    for u in &my_users {
        root.query_drop(format!("CREATE USER '{u}'@'%' IDENTIFIED BY 'pw0'"))
            .await
            .expect("user");
        root.query_drop(format!("GRANT SELECT ON {tag}.* TO '{u}'@'%'"))
            .await
            .expect("grant");
    }
    svc.create_secret(
        api::CreateSecretRequest {
            name: "my/admin".into(),
            secret_data: account("root", ""),
            ..Default::default()
        },
        &who,
    )
    .await
    .expect("admin");
    let db = tag.clone();
    let my_config = move |sub: &str| {
        serde_json::json!({"SecretSubType": sub, "Host": "127.0.0.1", "Port": 3306,
            "Database": db, "TlsMode": "disable", "AdminSecret": "my/admin"})
    };
    measure("mariadb", Db::My, &svc, &my_config, &tag, &my_users).await;
    for u in &my_users {
        for n in [u.clone(), format!("{u}_clone")] {
            root.query_drop(format!("DROP USER IF EXISTS '{n}'@'%'"))
                .await
                .expect("drop");
        }
    }
    root.query_drop(format!("DROP DATABASE {tag}"))
        .await
        .expect("drop");
}
