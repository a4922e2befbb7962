//! Database rotation against real databases: a throwaway PostgreSQL cluster with SCRAM
//! authentication and the local MariaDB. Every test first proves that a wrong password
//! is refused. Conformance (each step twice), validation of `Rds` secrets, zero failed
//! logins across 20 dual-account rotations (with the single-user window reported), and
//! crashes after each step with the database checked at every point. TLS is tested on a
//! throwaway PostgreSQL cluster and a throwaway MariaDB server that accept only TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strongbox_client::ErrorCode;
use strongbox_schemas::{self as api, RotationStrategy, STAGE_CURRENT, STAGE_PREVIOUS};
use strongbox_server::service::{Actor, EgressPolicy, Principal, database_conformance};

use crate::common::*;
use crate::dbs::*;
use crate::rotation::{Engine, fast_config, policy};

#[derive(serde::Deserialize)]
struct Creds {
    #[serde(rename = "AccountName")]
    name: String,
    #[serde(rename = "AccountPassword")]
    password: String,
}

fn creds(v: &[u8]) -> Creds {
    serde_json::from_slice(v).unwrap()
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

/// A PostgreSQL role `app` with `password` and `SELECT` on table `t` (one row).
async fn pg_app(pg: &PgCluster, name: &str, password: &str) {
    let admin = pg.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS t (x int); DELETE FROM t; INSERT INTO t VALUES (42);
             CREATE ROLE {name} LOGIN PASSWORD '{password}'; GRANT SELECT ON t TO {name};"
        ))
        .await
        .unwrap();
}

async fn pg_read_table(pg: &PgCluster, user: &str, password: &str) -> Result<i32, String> {
    let c = pg
        .connect(user, password, "postgres")
        .await
        .map_err(|e| e.to_string())?;
    let row = c
        .query_one("SELECT x FROM t", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_single_and_dual_pass_the_conformance_suite_with_scram_verifiers() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "app", "initial-pw").await;
    assert_eq!(pg.login("app", "initial-pw").await, Ok(()));
    assert_eq!(pg.login("app", "wrong").await, Err("28P01".into()));
    let admin = pg.admin_value();

    // Single user: the same account, a new password; the old one is refused.
    let v0 = account("app", "initial-pw");
    let single = pg.config("SingleUser", "db/admin");
    let v1 = database_conformance(
        RotationStrategy::Postgresql,
        &obj(single),
        admin.as_bytes(),
        v0.as_bytes(),
        None,
    )
    .await
    .unwrap();
    let c1 = creds(&v1);
    assert_eq!(c1.name, "app");
    assert_eq!(pg.login("app", &c1.password).await, Ok(()));
    assert_eq!(pg.login("app", "initial-pw").await, Err("28P01".into()));

    // Dual: the first rotation creates app_clone with app's grants; app is untouched.
    let dual = obj(pg.config("DoubleUsers", "db/admin"));
    let v2 = database_conformance(
        RotationStrategy::Postgresql,
        &dual,
        admin.as_bytes(),
        &v1,
        None,
    )
    .await
    .unwrap();
    let c2 = creds(&v2);
    assert_eq!(c2.name, "app_clone");
    assert_eq!(pg_read_table(&pg, "app_clone", &c2.password).await, Ok(42));
    assert_eq!(pg.login("app", &c1.password).await, Ok(()), "app untouched");
    // The next one resets the account behind ACSPrevious (app); the clone stays valid.
    let v3 = database_conformance(
        RotationStrategy::Postgresql,
        &dual,
        admin.as_bytes(),
        &v2,
        Some(&v1),
    )
    .await
    .unwrap();
    let c3 = creds(&v3);
    assert_eq!(c3.name, "app");
    assert_eq!(pg_read_table(&pg, "app", &c3.password).await, Ok(42));
    assert_eq!(pg.login("app", &c1.password).await, Err("28P01".into()));
    assert_eq!(pg.login("app_clone", &c2.password).await, Ok(()));

    // The server logged every statement: verifiers, never a plaintext password.
    let log = std::fs::read_to_string(&pg.log).unwrap();
    assert!(log.contains("SCRAM-SHA-256$4096:"), "statements are logged");
    for p in [&c1.password, &c2.password, &c3.password] {
        assert!(
            !log.contains(p.as_str()),
            "a plaintext password reached the log"
        );
    }

    // A wrong admin password fails the step with a clear error, no value in it.
    let e = database_conformance(
        RotationStrategy::Postgresql,
        &dual,
        account("postgres", "nope").as_bytes(),
        &v3,
        Some(&v2),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, strongbox_schemas::ErrorCode::RotationFailed);
    assert!(e.message.contains("28P01"), "{}", e.message);
    assert!(!e.message.contains(&c3.password) && !e.message.contains("nope"));
}

/// MySQL logins cannot be bound to their TLS connection: `ChannelBinding: require` is
/// refused before anything is sent, naming why, and the password is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_refuses_channel_binding_require() {
    let app = MysqlApp::create("cbind", "initial-pw").await;
    let mut cfg = app.config("SingleUser", "db/admin");
    cfg["ChannelBinding"] = serde_json::json!("require");
    let e = database_conformance(
        RotationStrategy::Mysql,
        &obj(cfg),
        MysqlApp::admin_value().as_bytes(),
        account(&app.user, "initial-pw").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains("MySQL logins have no channel binding"),
        "{}",
        e.message
    );
    assert_eq!(app.read_table(&app.user, "initial-pw").await, Ok(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_single_and_dual_pass_the_conformance_suite_on_mariadb() {
    let app = MysqlApp::create("conf", "initial-pw").await;
    assert_eq!(
        mysql_login(&app.user, "wrong", &app.db).await,
        Err("1045".into()),
        "a wrong password must be refused, or the test proves nothing"
    );
    assert_eq!(app.read_table(&app.user, "initial-pw").await, Ok(42));
    let admin = MysqlApp::admin_value();

    let v0 = account(&app.user, "initial-pw");
    let v1 = database_conformance(
        RotationStrategy::Mysql,
        &obj(app.config("SingleUser", "db/admin")),
        admin.as_bytes(),
        v0.as_bytes(),
        None,
    )
    .await
    .unwrap();
    let c1 = creds(&v1);
    assert_eq!(c1.name, app.user);
    assert_eq!(app.read_table(&app.user, &c1.password).await, Ok(42));
    assert_eq!(
        mysql_login(&app.user, "initial-pw", &app.db).await,
        Err("1045".into())
    );

    let dual = obj(app.config("DoubleUsers", "db/admin"));
    let v2 = database_conformance(RotationStrategy::Mysql, &dual, admin.as_bytes(), &v1, None)
        .await
        .unwrap();
    let c2 = creds(&v2);
    assert_eq!(c2.name, format!("{}_clone", app.user));
    assert_eq!(
        app.read_table(&c2.name, &c2.password).await,
        Ok(42),
        "same grants"
    );
    assert_eq!(app.read_table(&app.user, &c1.password).await, Ok(42));
    let v3 = database_conformance(
        RotationStrategy::Mysql,
        &dual,
        admin.as_bytes(),
        &v2,
        Some(&v1),
    )
    .await
    .unwrap();
    let c3 = creds(&v3);
    assert_eq!(c3.name, app.user);
    assert_eq!(app.read_table(&app.user, &c3.password).await, Ok(42));
    assert_eq!(
        mysql_login(&app.user, &c1.password, &app.db).await,
        Err("1045".into())
    );
    assert_eq!(app.read_table(&c2.name, &c2.password).await, Ok(42));

    let e = database_conformance(
        RotationStrategy::Mysql,
        &dual,
        account("root", "nope").as_bytes(),
        &v3,
        Some(&v2),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("1045"), "{}", e.message);
    app.drop_all().await;
}

fn rds_request(name: &str, value: &str, config: serde_json::Value) -> api::CreateSecretRequest {
    api::CreateSecretRequest {
        name: name.into(),
        secret_data: value.into(),
        secret_type: api::SecretType::Rds,
        extended_config: Some(obj(config)),
        ..Default::default()
    }
}

#[tokio::test]
async fn rds_secrets_are_validated_with_field_named_errors() {
    let s = TestServer::start().await;
    let c = &s.client;
    let good = serde_json::json!({"SecretSubType": "SingleUser", "Host": "db", "Port": 5432,
        "Database": "app", "TlsMode": "require", "AdminSecret": "db/admin"});
    let value = account("app", "pw");
    for (key, bad, field) in [
        ("Port", serde_json::json!("5432"), "extended_config.Port"),
        (
            "SecretSubType",
            serde_json::json!("Many"),
            "extended_config.SecretSubType",
        ),
        (
            "TlsMode",
            serde_json::json!("prefer"),
            "extended_config.TlsMode",
        ),
        (
            "AdminSecret",
            serde_json::json!(""),
            "extended_config.AdminSecret",
        ),
        // A socket path would reach the database on the Strongbox host.
        (
            "Host",
            serde_json::json!("/var/run/postgresql"),
            "extended_config.Host",
        ),
        ("Host", serde_json::json!("db:5432"), "extended_config.Host"),
    ] {
        let mut cfg = good.clone();
        cfg[key] = bad;
        assert_code(
            c.create_secret(&rds_request("bad", &value, cfg)).await,
            ErrorCode::InvalidParameter,
            field,
        );
    }
    let mut no_host = good.clone();
    no_host.as_object_mut().unwrap().remove("Host");
    assert_code(
        c.create_secret(&rds_request("bad", &value, no_host)).await,
        ErrorCode::InvalidParameter,
        "extended_config.Host",
    );
    assert_code(
        c.create_secret(&rds_request("bad", "s3cret-not-json", good.clone()))
            .await,
        ErrorCode::InvalidParameter,
        "secret_data",
    );
    assert_code(
        c.create_secret(&rds_request(
            "bad",
            r#"{"AccountName":"app"}"#,
            good.clone(),
        ))
        .await,
        ErrorCode::InvalidParameter,
        "secret_data.AccountPassword",
    );
    // Nothing was created; the good one is.
    assert_code(
        c.describe_secret("bad").await,
        ErrorCode::SecretNotFound,
        "bad",
    );
    c.create_secret(&rds_request("db/app", &value, good.clone()))
        .await
        .unwrap();
    // Update and put-value are checked too.
    let mut cfg = good.clone();
    cfg["Port"] = serde_json::json!(0);
    assert_code(
        c.update_secret(
            "db/app",
            &api::UpdateSecretRequest {
                extended_config: Some(obj(cfg)),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "extended_config.Port",
    );
    assert_code(
        c.put_secret_value("db/app", &put(r#"{"AccountPassword":"x"}"#))
            .await,
        ErrorCode::InvalidParameter,
        "secret_data.AccountName",
    );
    let d = c.describe_secret("db/app").await.unwrap();
    assert_eq!(d.extended_config.unwrap()["Port"], 5432);
    c.put_secret_value("db/app", &put(&account("app", "pw2")))
        .await
        .unwrap();
    // The admin account is never an Rds secret's account: at create, put-value and
    // when extended_config points at an admin secret naming it.
    c.create_secret(&text_secret("db/admin", &account("postgres", "admin-pw")))
        .await
        .unwrap();
    assert_code(
        c.create_secret(&rds_request("bad", &account("postgres", "x"), good.clone()))
            .await,
        ErrorCode::InvalidParameter,
        "secret_data.AccountName",
    );
    assert_code(
        c.put_secret_value("db/app", &put(&account("postgres", "x")))
            .await,
        ErrorCode::InvalidParameter,
        "must not be the admin account",
    );
    c.create_secret(&text_secret("db/admin2", &account("app", "admin-pw")))
        .await
        .unwrap();
    let mut to_app_admin = good.clone();
    to_app_admin["AdminSecret"] = serde_json::json!("db/admin2");
    assert_code(
        c.update_secret(
            "db/app",
            &api::UpdateSecretRequest {
                extended_config: Some(obj(to_app_admin)),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "secret_data.AccountName",
    );
    // A database policy on a Generic secret fails the rotation with a clear error.
    c.create_rotation_policy(&policy("pg", "30d", RotationStrategy::Postgresql, &[]))
        .await
        .unwrap();
    let mut g = text_secret("generic", &account("app", "pw"));
    g.rotation_policy = Some("pg".into());
    c.create_secret(&g).await.unwrap();
    assert_code(
        c.rotate_secret("generic", None).await,
        ErrorCode::RotationFailed,
        "not an Rds secret",
    );
    // Policy settings are the password rules, checked as such.
    assert_code(
        c.create_rotation_policy(&policy(
            "pg2",
            "30d",
            RotationStrategy::Postgresql,
            &[("length", "3")],
        ))
        .await,
        ErrorCode::InvalidParameter,
        "settings.length: must be a whole number from 8 to 128",
    );
    // `password_length`, the name these policies took before, is another name of `length`.
    assert_code(
        c.create_rotation_policy(&policy(
            "pg2",
            "30d",
            RotationStrategy::Mysql,
            &[("password_length", "3")],
        ))
        .await,
        ErrorCode::InvalidParameter,
        "settings.password_length: must be a whole number from 8 to 128",
    );
    c.create_rotation_policy(&policy(
        "pg2",
        "30d",
        RotationStrategy::Mysql,
        &[("password_length", "16")],
    ))
    .await
    .unwrap();
    // A policy stored by an earlier release with a value that is no length at all (it
    // was accepted and ignored then) stays updatable, also when its settings are sent
    // back unchanged, as Terraform does; a new value is checked.
    use strongbox_server::storage::{Mutation, Table};
    let stored = s
        .backend
        .get(Table::RotationPolicies, b"pg2")
        .unwrap()
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    rec["settings"]["password_length"] = serde_json::json!("4");
    s.backend
        .commit(&[Mutation::Put(
            Table::RotationPolicies,
            b"pg2".to_vec(),
            serde_json::to_vec(&rec).unwrap(),
        )])
        .unwrap();
    let update = |settings: Option<&str>| api::UpdateRotationPolicyRequest {
        enabled: Some(false),
        settings: settings.map(|l| [("password_length".to_string(), l.to_string())].into()),
        ..Default::default()
    };
    c.update_rotation_policy("pg2", &update(None))
        .await
        .unwrap();
    c.update_rotation_policy("pg2", &update(Some("4")))
        .await
        .unwrap();
    assert_code(
        c.update_rotation_policy("pg2", &update(Some("5"))).await,
        ErrorCode::InvalidParameter,
        "settings.password_length",
    );
}

/// A database the zero-downtime test logs into.
#[derive(Clone)]
enum Db {
    Pg(Arc<PgCluster>),
    My(Arc<MysqlApp>),
}

impl Db {
    async fn login(&self, user: &str, password: &str) -> Result<(), String> {
        match self {
            Db::Pg(pg) => pg.login(user, password).await,
            Db::My(app) => mysql_login(user, password, &app.db).await,
        }
    }
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    ok: AtomicU64,
    first_try_failures: AtomicU64,
    failed_after_reread: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.attempts.load(Ordering::SeqCst),
            self.ok.load(Ordering::SeqCst),
            self.first_try_failures.load(Ordering::SeqCst),
            self.failed_after_reread.load(Ordering::SeqCst),
        )
    }
}

/// Pause between two logins of one client: paced to attempt 25 logins/s at most
/// (the target is >= 20/s per client; the measured rate is printed, not asserted).
const PACE: Duration = Duration::from_millis(40);

/// Logs in continuously with the `ACSCurrent` value, as a caching client does: the
/// cached value until a login fails, then a fresh read and one more try. Every attempt
/// is counted with its outcome.
async fn login_loop(
    client: strongbox_client::Client,
    db: Db,
    secret: String,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let read = || async {
        let v = client.get_secret_value(&secret, None, None).await.unwrap();
        creds(v.secret_data.as_bytes())
    };
    let mut cached = read().await;
    while !stop.load(Ordering::SeqCst) {
        let paced = tokio::time::sleep(PACE);
        counts.attempts.fetch_add(1, Ordering::SeqCst);
        if db.login(&cached.name, &cached.password).await.is_ok() {
            counts.ok.fetch_add(1, Ordering::SeqCst);
        } else {
            counts.first_try_failures.fetch_add(1, Ordering::SeqCst);
            cached = read().await;
            counts.attempts.fetch_add(1, Ordering::SeqCst);
            if db.login(&cached.name, &cached.password).await.is_ok() {
                counts.ok.fetch_add(1, Ordering::SeqCst);
            } else {
                counts.failed_after_reread.fetch_add(1, Ordering::SeqCst);
            }
        }
        paced.await;
    }
}

/// Waits until `counts` has seen at least `n` attempts (by condition, not by time);
/// panics if a client stopped (it panicked).
async fn wait_attempts(counts: &Counts, n: u64, clients: &[tokio::task::JoinHandle<()>]) {
    while counts.attempts.load(Ordering::SeqCst) < n {
        assert!(
            clients.iter().all(|c| !c.is_finished()),
            "a login client stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs at least `rotations` rotations of `secret` while two clients log in, each
/// rotation starting only once the clients made 2 more attempts, and until at least
/// `min_attempts` attempts were made between the first rotation's start and the last
/// one's end. Returns the counts, the attempts made during the rotations and the
/// measured logins per second (reported only).
async fn rotate_under_load(
    s: &TestServer,
    db: &Db,
    secret: &str,
    rotations: usize,
    min_attempts: u64,
) -> (Arc<Counts>, u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(tokio::spawn(login_loop(
            s.client.clone(),
            db.clone(),
            secret.to_string(),
            stop.clone(),
            counts.clone(),
        )));
    }
    wait_attempts(&counts, 2, &clients).await;
    let start = Instant::now();
    let before = counts.attempts.load(Ordering::SeqCst);
    let mut done = 0;
    loop {
        s.client.rotate_secret(secret, None).await.unwrap();
        done += 1;
        let during = counts.attempts.load(Ordering::SeqCst) - before;
        if done >= rotations && during >= min_attempts {
            break;
        }
        // Logins happen between every two rotations, whatever the machine's speed.
        wait_attempts(
            &counts,
            counts.attempts.load(Ordering::SeqCst) + 2,
            &clients,
        )
        .await;
    }
    let during = counts.attempts.load(Ordering::SeqCst) - before;
    let rate = during as f64 / start.elapsed().as_secs_f64();
    // A few more logins after the last rotation, then stop.
    wait_attempts(
        &counts,
        counts.attempts.load(Ordering::SeqCst) + 2,
        &clients,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    println!("{secret}: {done} rotations, {during} logins during them ({rate:.1}/s for 2 clients)");
    (counts, during, rate)
}

/// One database's side of the zero-downtime test: `extended_config` and first value of
/// a dual and a single account secret, and the admin secret's value.
struct Setup {
    db: Db,
    strategy: RotationStrategy,
    dual: (serde_json::Value, String),
    single: (serde_json::Value, String),
    admin: String,
}

async fn zero_downtime(s: &TestServer, setup: Setup) {
    let Setup {
        db,
        strategy,
        dual: (dual, dual_value),
        single: (single, single_value),
        admin,
    } = setup;
    let c = &s.client;
    c.create_secret(&text_secret("db/admin", &admin))
        .await
        .unwrap();
    // The policy's settings are the password rules of `random`, and rotations obey them.
    c.create_rotation_policy(&policy(
        "db",
        "30d",
        strategy,
        &[("length", "24"), ("exclude_punctuation", "true")],
    ))
    .await
    .unwrap();
    let mut req = rds_request("MyDbCreds", &dual_value, dual);
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();

    let (counts, during, rate) = rotate_under_load(s, &db, "MyDbCreds", 20, 40).await;
    let (attempts, ok, first, failed) = counts.get();
    println!(
        "{strategy:?} dual: {attempts} logins ({during} during the rotations, {rate:.1}/s), {first} refused with a cached value, {failed} after a re-read"
    );
    assert_eq!(attempts, ok + first + failed, "every attempt is counted");
    assert!(during >= 40, "{during} logins during the rotations");
    assert_eq!(failed, 0, "failed logins after a re-read of ACSCurrent");
    let d = c.describe_secret("MyDbCreds").await.unwrap();
    assert_eq!(d.rotation_status, Some(api::RotationStatus::Succeeded));
    let cur = c.get_secret_value("MyDbCreds", None, None).await.unwrap();
    let prev = c
        .get_secret_value("MyDbCreds", None, Some(STAGE_PREVIOUS))
        .await
        .unwrap();
    let (cur, prev) = (
        creds(cur.secret_data.as_bytes()),
        creds(prev.secret_data.as_bytes()),
    );
    assert_ne!(cur.name, prev.name, "the two accounts alternate");
    assert_eq!(db.login(&cur.name, &cur.password).await, Ok(()));
    assert_eq!(
        db.login(&prev.name, &prev.password).await,
        Ok(()),
        "valid for a full cycle"
    );

    // Single user: the window between set and finish, reported (not zero by design).
    let mut req = rds_request("single", &single_value, single);
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();
    let (counts, during, rate) = rotate_under_load(s, &db, "single", 5, 10).await;
    let (attempts, ok, first, failed) = counts.get();
    println!(
        "{strategy:?} single-user window: {attempts} logins ({during} during the rotations, {rate:.1}/s), {first} refused with a cached value, {failed} refused after a re-read (the window) over 5 rotations"
    );
    assert_eq!(attempts, ok + first + failed, "every attempt is counted");
    let cur = c
        .get_secret_value("single", None, Some(STAGE_CURRENT))
        .await
        .unwrap();
    let cur = creds(cur.secret_data.as_bytes());
    assert_eq!(db.login(&cur.name, &cur.password).await, Ok(()));
    assert_eq!(cur.password.chars().count(), 24, "the policy's length");
    assert!(
        cur.password.chars().all(|ch| ch.is_ascii_alphanumeric()),
        "exclude_punctuation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_dual_postgres_rotations_under_continuous_logins_fail_no_login() {
    let pg = Arc::new(PgCluster::start());
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "app", "pw-dual").await;
    pg_app(&pg, "solo", "pw-single").await;
    let s = TestServer::start_with(fast_config()).await;
    let setup = Setup {
        db: Db::Pg(pg.clone()),
        strategy: RotationStrategy::Postgresql,
        dual: (
            pg.config("DoubleUsers", "db/admin"),
            account("app", "pw-dual"),
        ),
        single: (
            pg.config("SingleUser", "db/admin"),
            account("solo", "pw-single"),
        ),
        admin: pg.admin_value(),
    };
    zero_downtime(&s, setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_dual_mariadb_rotations_under_continuous_logins_fail_no_login() {
    let dual = Arc::new(MysqlApp::create("zd", "pw-dual").await);
    let single = MysqlApp::create("zs", "pw-single").await;
    assert_eq!(
        mysql_login(&dual.user, "wrong", &dual.db).await,
        Err("1045".into())
    );
    let s = TestServer::start_with(fast_config()).await;
    let mut single_cfg = single.config("SingleUser", "db/admin");
    single_cfg["Database"] = serde_json::json!(dual.db);
    // The single account logs into the same database.
    let mut root = mysql_root().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("GRANT SELECT ON `{}`.* TO '{}'@'%'", dual.db, single.user),
    )
    .await
    .unwrap();
    let setup = Setup {
        db: Db::My(dual.clone()),
        strategy: RotationStrategy::Mysql,
        dual: (
            dual.config("DoubleUsers", "db/admin"),
            account(&dual.user, "pw-dual"),
        ),
        single: (single_cfg, account(&single.user, "pw-single")),
        admin: MysqlApp::admin_value(),
    };
    zero_downtime(&s, setup).await;
    dual.drop_all().await;
    single.drop_all().await;
}

impl Engine {
    /// Starts rotation `version_id` of `MyDbCreds` and has the engine stop after `step`.
    async fn rotate_halted_after(&self, step: &str, version_id: &str) {
        self.service.set_rotation_halt(Some(step));
        let halted = self
            .service
            .rotate_secret(
                "MyDbCreds",
                api::RotateSecretRequest {
                    version_id: Some(version_id.into()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(halted.code, strongbox_schemas::ErrorCode::Unavailable);
    }

    fn value(&self, stage: &str) -> Creds {
        let v = self
            .service
            .get_secret_value("MyDbCreds", None, Some(stage))
            .unwrap();
        creds(v.secret_data.as_bytes())
    }
}

/// An engine with the admin secret `db/admin` (`admin`), the rotation policy `db`
/// (`strategy`, 30d) and the Rds secret `MyDbCreds` (`value`, `config`) under it.
async fn rds_engine(
    admin: &str,
    strategy: RotationStrategy,
    value: &str,
    config: serde_json::Value,
) -> Engine {
    let e = Engine::start(None);
    let root = Actor::Trusted(Principal::Named("root".into()));
    e.service
        .create_secret(text_secret("db/admin", admin), &root)
        .await
        .unwrap();
    e.service
        .create_rotation_policy(policy("db", "30d", strategy, &[]), &root)
        .await
        .unwrap();
    let mut req = rds_request("MyDbCreds", value, config);
    req.rotation_policy = Some("db".into());
    e.service.create_secret(req, &root).await.unwrap();
    e
}

/// Halts the engine after each step of a dual-account rotation, restarts it, and checks
/// that the database accepts `ACSCurrent` (and `ACSPrevious`) at every point.
async fn crash_after_each_step(
    db: Db,
    strategy: RotationStrategy,
    config: serde_json::Value,
    first: String,
    admin: String,
) {
    let mut e = rds_engine(&admin, strategy, &first, config).await;
    for (i, step) in ["create", "set", "test", "finish"].into_iter().enumerate() {
        let before = e.value(STAGE_CURRENT);
        let id = format!("v{i}");
        e.rotate_halted_after(step, &id).await;
        // Stopped after the step: the database accepts ACSCurrent.
        let cur = e.value(STAGE_CURRENT);
        assert_eq!(
            db.login(&cur.name, &cur.password).await,
            Ok(()),
            "after {step}"
        );
        if step != "finish" {
            assert_eq!(cur.name, before.name, "{step}");
        }
        e.restart();
        let cur = e.value(STAGE_CURRENT);
        assert_eq!(
            db.login(&cur.name, &cur.password).await,
            Ok(()),
            "restarted after {step}"
        );
        let r = e.service.tick().await.unwrap();
        assert_eq!(r.failed_rotations, 0, "{step}");
        let cur = e.value(STAGE_CURRENT);
        let v = e.service.get_secret_value("MyDbCreds", None, None).unwrap();
        assert_eq!(v.version_id, id, "{step}: the rotation completed");
        assert_ne!(cur.name, before.name, "{step}: the accounts swapped");
        assert_eq!(
            db.login(&cur.name, &cur.password).await,
            Ok(()),
            "resumed after {step}"
        );
        let prev = e.value(STAGE_PREVIOUS);
        assert_eq!(
            db.login(&prev.name, &prev.password).await,
            Ok(()),
            "previous after {step}"
        );
        e.clock.advance(60);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_of_a_dual_postgres_rotation_resumes_and_current_always_logs_in() {
    let pg = Arc::new(PgCluster::start());
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "app", "pw0").await;
    let (config, admin) = (pg.config("DoubleUsers", "db/admin"), pg.admin_value());
    crash_after_each_step(
        Db::Pg(pg),
        RotationStrategy::Postgresql,
        config,
        account("app", "pw0"),
        admin,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_of_a_dual_mariadb_rotation_resumes_and_current_always_logs_in() {
    let app = Arc::new(MysqlApp::create("crash", "pw0").await);
    assert_eq!(
        mysql_login(&app.user, "wrong", &app.db).await,
        Err("1045".into())
    );
    crash_after_each_step(
        Db::My(app.clone()),
        RotationStrategy::Mysql,
        app.config("DoubleUsers", "db/admin"),
        account(&app.user, "pw0"),
        MysqlApp::admin_value(),
    )
    .await;
    app.drop_all().await;
}

/// A relay in the middle of a PostgreSQL connection, as someone with their own
/// certificate can be when the client does not check it (`TlsMode` `require`): it
/// answers the client's TLS request with `certs`, opens its own TLS connection to the
/// server (trusting `server_ca`), and passes the bytes between them. Returns its port.
async fn pg_tls_relay(
    server_port: u16,
    certs: &strongbox_server::tls::DevCertificates,
    server_ca: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let acceptor = tokio_rustls::TlsAcceptor::from(
        strongbox_server::tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(strongbox_server::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, connector) = (acceptor.clone(), connector.clone());
            tokio::spawn(async move {
                // PostgreSQL's SSLRequest (8 bytes), answered "S", then TLS; the same
                // towards the server.
                let mut request = [0u8; 8];
                client.read_exact(&mut request).await?;
                client.write_all(b"S").await?;
                let mut inside = acceptor.accept(client).await?;
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await?;
                server.write_all(&request).await?;
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut outside = connector.connect(name, server).await?;
                tokio::io::copy_bidirectional(&mut inside, &mut outside).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

/// Channel binding: through a relay that holds another certificate (possible under
/// `TlsMode` `require`, which checks none), a login that is not bound gets through (the
/// control: psql with `channel_binding=disable`), but the rotation engine binds its
/// SCRAM logins to the certificate it was shown (SCRAM-SHA-256-PLUS), so the server
/// refuses them. Directly, the same rotation succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logins_through_a_tls_relay_are_refused_by_channel_binding() {
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let stranger = strongbox_server::tls::dev_certificates().unwrap();
    let pg = PgCluster::start_with(Some((&certs.cert_pem, &certs.key_pem)));
    pg.psql(
        "postgres",
        &pg.admin_password,
        "CREATE ROLE app LOGIN PASSWORD 'pw0'",
    )
    .unwrap();
    let relay = pg_tls_relay(pg.port, &stranger, &certs.ca_pem).await;
    let unbound = [
        ("PGSSLMODE", "require"),
        ("PGCHANNELBINDING", "disable"),
        ("PGGSSENCMODE", "disable"),
    ];
    assert_eq!(
        pg.psql_at(relay, &unbound, "app", "pw0", "SELECT current_user"),
        Ok("app".into()),
        "the relay passes an unbound login"
    );
    // One single-user rotation of `current` on `pg` (its config changed by `edit`).
    async fn rotate(
        pg: &PgCluster,
        edit: impl FnOnce(&mut serde_json::Value),
        current: &[u8],
    ) -> Result<Vec<u8>, strongbox_server::Error> {
        let mut cfg = pg.config("SingleUser", "db/admin");
        edit(&mut cfg);
        let admin = pg.admin_value();
        database_conformance(
            RotationStrategy::Postgresql,
            &obj(cfg),
            admin.as_bytes(),
            current,
            None,
        )
        .await
    }
    let through = |port: u16, binding: Option<&'static str>| {
        move |cfg: &mut serde_json::Value| {
            cfg["TlsMode"] = serde_json::json!("require");
            cfg["Port"] = serde_json::json!(port);
            if let Some(b) = binding {
                cfg["ChannelBinding"] = serde_json::json!(b);
            }
        }
    };
    let v0 = account("app", "pw0").into_bytes();
    let e = rotate(&pg, through(relay, None), &v0).await.unwrap_err();
    assert!(
        e.message.contains("login as postgres failed") && e.message.contains("channel binding"),
        "{}",
        e.message
    );
    assert_eq!(
        pg.psql("app", "pw0", "SELECT current_user"),
        Ok("app".into()),
        "nothing changed"
    );
    // Directly: bound, and it logs in.
    let v1 = rotate(&pg, through(pg.port, None), &v0).await.unwrap();
    assert_eq!(
        pg.psql("app", &creds(&v1).password, "SELECT current_user"),
        Ok("app".into())
    );
    // The opt-out, for a proxy that is meant to be there: unbound, the relay passes it.
    rotate(&pg, through(relay, Some("disable")), &v1)
        .await
        .unwrap();
    // `require` where no binding is possible (a cluster without TLS, SCRAM logins):
    // refused before the password goes out; `prefer` there logs in unbound.
    let plain = PgCluster::start();
    plain
        .psql(
            "postgres",
            &plain.admin_password,
            "CREATE ROLE app LOGIN PASSWORD 'pw0'",
        )
        .unwrap();
    let binding = |b: &'static str| {
        move |cfg: &mut serde_json::Value| {
            cfg["ChannelBinding"] = serde_json::json!(b);
        }
    };
    let e = rotate(&plain, binding("require"), &v0).await.unwrap_err();
    assert!(
        e.message.contains("login as postgres failed")
            && e.message.contains("did not use channel binding"),
        "{}",
        e.message
    );
    rotate(&plain, binding("prefer"), &v0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_speaks_tls_with_require_and_verify_full() {
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let stranger = strongbox_server::tls::dev_certificates().unwrap();
    let pg = PgCluster::start_with(Some((&certs.cert_pem, &certs.key_pem)));
    // Only TLS logins are accepted, and a wrong password is refused.
    let e = pg
        .psql("postgres", "not-the-password", "SELECT 1")
        .unwrap_err();
    assert!(e.contains("password authentication failed"), "{e}");
    pg.psql(
        "postgres",
        &pg.admin_password,
        "CREATE ROLE app LOGIN PASSWORD 'pw0'",
    )
    .unwrap();
    let admin = pg.admin_value();
    let run = |tls: &str, ca: Option<&str>, current: Vec<u8>| {
        let mut cfg = pg.config("SingleUser", "db/admin");
        cfg["TlsMode"] = serde_json::json!(tls);
        if let Some(ca) = ca {
            cfg["CaCert"] = serde_json::json!(ca);
        }
        let admin = admin.clone();
        async move {
            database_conformance(
                RotationStrategy::Postgresql,
                &obj(cfg),
                admin.as_bytes(),
                &current,
                None,
            )
            .await
        }
    };
    let v0 = account("app", "pw0").into_bytes();
    // Plain TCP is rejected by the server (pg_hba: hostssl only).
    let e = run("disable", None, v0.clone()).await.unwrap_err();
    assert!(e.message.contains("28000"), "{}", e.message);
    // require: encrypted, certificate not checked.
    let v1 = run("require", None, v0).await.unwrap();
    // verify-full against the right CA (the certificate names 127.0.0.1).
    let v2 = run("verify-full", Some(&certs.ca_pem), v1).await.unwrap();
    let c2 = creds(&v2);
    assert_eq!(
        pg.psql("app", &c2.password, "SELECT current_user"),
        Ok("app".into())
    );
    // verify-full against another CA: refused before any password is sent.
    let e = run("verify-full", Some(&stranger.ca_pem), v2)
        .await
        .unwrap_err();
    // (The first login is the admin's, in *create*'s check of the accounts.)
    assert!(
        e.message
            .contains("login as postgres failed: error performing TLS handshake"),
        "{}",
        e.message
    );
    assert!(!e.message.contains(&c2.password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_to_rotate_the_admin_or_a_privileged_role() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE ROLE boss SUPERUSER LOGIN PASSWORD 'boss-pw';
             CREATE ROLE maker CREATEROLE LOGIN PASSWORD 'maker-pw';
             CREATE ROLE peeker BYPASSRLS LOGIN PASSWORD 'peeker-pw';
             CREATE ROLE shell LOGIN PASSWORD 'shell-pw' IN ROLE pg_execute_server_program;
             CREATE ROLE streamer REPLICATION LOGIN PASSWORD 'streamer-pw';
             CREATE ROLE reader LOGIN PASSWORD 'reader-pw' IN ROLE pg_read_all_data;
             CREATE ROLE ops NOLOGIN SUPERUSER;
             CREATE ROLE team NOLOGIN IN ROLE ops;
             CREATE ROLE deputy LOGIN PASSWORD 'deputy-pw' IN ROLE team;",
        )
        .await
        .unwrap();
    let admin_value = pg.admin_value();
    let rotate = |sub: &'static str, value: String| {
        let cfg = obj(pg.config(sub, "db/admin"));
        let admin_value = admin_value.clone();
        async move {
            database_conformance(
                RotationStrategy::Postgresql,
                &cfg,
                admin_value.as_bytes(),
                value.as_bytes(),
                None,
            )
            .await
            .unwrap_err()
        }
    };
    for sub in ["SingleUser", "DoubleUsers"] {
        // The admin account itself.
        let e = rotate(sub, account("postgres", "whatever")).await;
        assert_eq!(e.code, strongbox_schemas::ErrorCode::RotationFailed);
        assert!(
            e.message.contains("must not be the admin account"),
            "{}",
            e.message
        );
        for (role, pw, attr) in [
            ("boss", "boss-pw", "SUPERUSER"),
            ("maker", "maker-pw", "CREATEROLE"),
            ("peeker", "peeker-pw", "BYPASSRLS"),
            (
                "shell",
                "shell-pw",
                "membership in pg_execute_server_program",
            ),
            ("streamer", "streamer-pw", "REPLICATION"),
            ("reader", "reader-pw", "membership in pg_read_all_data"),
            // A superuser role two memberships away.
            ("deputy", "deputy-pw", "membership in ops"),
        ] {
            let e = rotate(sub, account(role, pw)).await;
            assert!(
                e.message
                    .contains(&format!("AccountName {role} has {attr}")),
                "{sub} {role}: {}",
                e.message
            );
            assert!(!e.message.contains(pw));
            // Nothing changed: the password still works, no clone was made.
            assert_eq!(pg.login(role, pw).await, Ok(()), "{sub} {role}");
            assert_eq!(
                pg.login(&format!("{role}_clone"), "x").await,
                Err("28P01".into())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_refuses_to_rotate_root_or_a_privileged_account() {
    let app = MysqlApp::create("priv", "pw-priv").await;
    assert_eq!(
        mysql_login(&app.user, "wrong", &app.db).await,
        Err("1045".into())
    );
    let mut root = mysql_root().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!(
            "GRANT SELECT ON *.* TO '{}'@'%' WITH GRANT OPTION",
            app.user
        ),
    )
    .await
    .unwrap();
    let admin = MysqlApp::admin_value();
    for sub in ["SingleUser", "DoubleUsers"] {
        let cfg = obj(app.config(sub, "db/admin"));
        // root (here also the admin account).
        let e = database_conformance(
            RotationStrategy::Mysql,
            &cfg,
            admin.as_bytes(),
            account("root", "").as_bytes(),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.message.contains("must not be the admin account"),
            "{}",
            e.message
        );
        // root with another admin account is refused by name.
        let e = database_conformance(
            RotationStrategy::Mysql,
            &cfg,
            account(&app.user, "pw-priv").as_bytes(),
            account("root", "").as_bytes(),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("root"), "{}", e.message);
        // GRANT OPTION on *.*.
        let e = database_conformance(
            RotationStrategy::Mysql,
            &cfg,
            admin.as_bytes(),
            account(&app.user, "pw-priv").as_bytes(),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.message
                .contains(&format!("AccountName {} holds global", app.user)),
            "{sub}: {}",
            e.message
        );
        assert_eq!(app.read_table(&app.user, "pw-priv").await, Ok(42), "{sub}");
    }

    // The same privileges through a role, two grants away.
    let deputy = MysqlApp::create("deputy", "pw-deputy").await;
    let (boss, team) = (unique("boss"), unique("team"));
    for sql in [
        format!("CREATE ROLE {boss}"),
        format!("GRANT ALL ON *.* TO {boss} WITH GRANT OPTION"),
        format!("CREATE ROLE {team}"),
        format!("GRANT {boss} TO {team}"),
        format!("GRANT {team} TO '{}'@'%'", deputy.user),
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut root, sql)
            .await
            .unwrap();
    }
    for sub in ["SingleUser", "DoubleUsers"] {
        let e = database_conformance(
            RotationStrategy::Mysql,
            &obj(deputy.config(sub, "db/admin")),
            admin.as_bytes(),
            account(&deputy.user, "pw-deputy").as_bytes(),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.message.contains(&format!(
                "AccountName {} has roles holding global ALL, SUPER, GRANT OPTION, CREATE USER or FILE ({boss})",
                deputy.user
            )),
            "{sub}: {}",
            e.message
        );
        assert_eq!(
            mysql_login(&deputy.user, "pw-deputy", &deputy.db).await,
            Ok(()),
            "{sub}: unchanged"
        );
    }
    // FILE, which reads and writes the server's files.
    let filer = MysqlApp::create("filer", "pw-filer").await;
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("GRANT FILE ON *.* TO '{}'@'%'", filer.user),
    )
    .await
    .unwrap();
    let e = database_conformance(
        RotationStrategy::Mysql,
        &obj(filer.config("SingleUser", "db/admin")),
        admin.as_bytes(),
        account(&filer.user, "pw-filer").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains(&format!(
            "AccountName {} holds global ALL, SUPER, GRANT OPTION, CREATE USER or FILE",
            filer.user
        )),
        "{}",
        e.message
    );
    assert_eq!(
        mysql_login(&filer.user, "pw-filer", &filer.db).await,
        Ok(())
    );
    filer.drop_all().await;
    for sql in [format!("DROP ROLE {team}"), format!("DROP ROLE {boss}")] {
        mysql_async::prelude::Queryable::query_drop(&mut root, sql)
            .await
            .unwrap();
    }
    let _ = root.disconnect().await;
    app.drop_all().await;
    deputy.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dual_rotation_does_not_adopt_a_role_it_did_not_create() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "app", "pw-app").await;
    // An unrelated role that happens to have the clone's name.
    pg.admin()
        .await
        .batch_execute("CREATE ROLE app_clone LOGIN PASSWORD 'other-pw'")
        .await
        .unwrap();
    let e = database_conformance(
        RotationStrategy::Postgresql,
        &obj(pg.config("DoubleUsers", "db/admin")),
        pg.admin_value().as_bytes(),
        account("app", "pw-app").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    // Refused by create, before anything is pending: a rotation that could never
    // finish leaves nothing behind.
    assert!(
        e.message
            .contains("postgresql create: account app_clone exists and is not a member of app"),
        "{}",
        e.message
    );
    // Untouched: its password still works, and it got no grant.
    assert_eq!(pg.login("app_clone", "other-pw").await, Ok(()));
    assert!(pg_read_table(&pg, "app_clone", "other-pw").await.is_err());
    assert_eq!(pg.login("app", "pw-app").await, Ok(()));
}

/// MySQL has no role membership to tell a clone Strongbox made from an unrelated account
/// of that name: a clone no version of the secret names must not exist yet. An existing
/// one is refused at *create* and keeps its password and grants; named as `ACSPrevious`
/// it is rotated into (the operator's own second account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_dual_rotation_does_not_adopt_an_account_it_did_not_create() {
    let app = MysqlApp::create("adopt", "pw-adopt").await;
    let clone = format!("{}_clone", app.user);
    let mut root = mysql_root().await;
    for sql in [
        format!("CREATE USER '{clone}'@'%' IDENTIFIED BY 'other-pw'"),
        format!("GRANT SELECT, INSERT ON `{}`.* TO '{clone}'@'%'", app.db),
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut root, sql)
            .await
            .unwrap();
    }
    let config = obj(app.config("DoubleUsers", "db/admin"));
    let e = database_conformance(
        RotationStrategy::Mysql,
        &config,
        MysqlApp::admin_value().as_bytes(),
        account(&app.user, "pw-adopt").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains(&format!(
            "mysql create: account {clone} exists and no version of the secret names it"
        )),
        "{}",
        e.message
    );
    // Untouched: its password still works, and it keeps its own grants.
    assert_eq!(mysql_login(&clone, "other-pw", &app.db).await, Ok(()));
    let grants: Vec<String> =
        mysql_async::prelude::Queryable::query(&mut root, format!("SHOW GRANTS FOR '{clone}'@'%'"))
            .await
            .unwrap();
    assert!(grants.iter().any(|g| g.contains("INSERT")), "{grants:?}");
    // Named as ACSPrevious, it is the operator's second account: rotated into.
    let v = database_conformance(
        RotationStrategy::Mysql,
        &config,
        MysqlApp::admin_value().as_bytes(),
        account(&app.user, "pw-adopt").as_bytes(),
        Some(account(&clone, "other-pw").as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(creds(&v).name, clone);
    let _ = root.disconnect().await;
    app.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_dual_rotation_takes_names_up_to_80_characters() {
    // 42 characters: over MySQL's 32, within MariaDB's 80.
    let app = MysqlApp::create(&"l".repeat(30), "pw-long").await;
    assert_eq!(app.user.chars().count(), 42);
    assert_eq!(
        mysql_login(&app.user, "wrong", &app.db).await,
        Err("1045".into())
    );
    let dual = obj(app.config("DoubleUsers", "db/admin"));
    let admin = MysqlApp::admin_value();
    let v0 = account(&app.user, "pw-long");
    let v1 = database_conformance(
        RotationStrategy::Mysql,
        &dual,
        admin.as_bytes(),
        v0.as_bytes(),
        None,
    )
    .await
    .unwrap();
    let c1 = creds(&v1);
    assert_eq!(c1.name, format!("{}_clone", app.user), "not cut on MariaDB");
    assert_eq!(app.read_table(&c1.name, &c1.password).await, Ok(42));
    // The next rotation resets the long original account.
    let v2 = database_conformance(
        RotationStrategy::Mysql,
        &dual,
        admin.as_bytes(),
        &v1,
        Some(v0.as_bytes()),
    )
    .await
    .unwrap();
    let c2 = creds(&v2);
    assert_eq!(c2.name, app.user);
    assert_eq!(app.read_table(&app.user, &c2.password).await, Ok(42));
    // Single user rotates it too.
    let v3 = database_conformance(
        RotationStrategy::Mysql,
        &obj(app.config("SingleUser", "db/admin")),
        admin.as_bytes(),
        &v2,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        app.read_table(&app.user, &creds(&v3).password).await,
        Ok(42)
    );
    assert_eq!(
        mysql_login(&app.user, &c2.password, &app.db).await,
        Err("1045".into())
    );
    app.drop_all().await;
}

/// A throwaway MariaDB server (`mariadb-install-db` + `mariadbd` on a free port) that
/// accepts only TLS connections over TCP (`require_secure_transport`), with `cert_pem`
/// for 127.0.0.1 and localhost. Setup SQL runs as root over the Unix socket. Killed
/// and its directory removed when dropped.
struct TlsMariadb {
    port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl TlsMariadb {
    fn start(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Self {
        use std::process::{Command, Stdio};
        let find = |names: &[&str]| {
            names
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| {
                    panic!("none of {names:?} exists; run scripts/install-databases.sh")
                })
        };
        let install = find(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"]);
        let server = find(&["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]);
        let dir = tempfile::Builder::new()
            .prefix("sbx-maria-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
            || Command::new("id")
                .arg("-u")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
                .unwrap_or(false);
        let user: Vec<String> = if root {
            vec!["--user=root".into()]
        } else {
            vec![]
        };
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(&user)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            install.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, pem) in [
            ("cert.pem", cert_pem),
            ("key.pem", key_pem),
            ("ca.pem", ca_pem),
        ] {
            strongbox_server::tls::write_private(&dir.path().join(name), pem.as_bytes()).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let child = Command::new(&server)
            .arg("--no-defaults")
            .args(&user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", p("sock")))
            .arg(format!("--pid-file={}", p("pid")))
            .arg(format!("--log-error={}", p("error.log")))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--ssl-cert={}", p("cert.pem")))
            .arg(format!("--ssl-key={}", p("key.pem")))
            .arg(format!("--ssl-ca={}", p("ca.pem")))
            .args([
                "--require-secure-transport=ON",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} did not start: {e}", server.display()));
        let mut db = Self { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match db.sql("SELECT 1") {
                Ok(_) => break,
                Err(e) => e,
            };
            let exited = db.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "mariadbd did not come up (exit: {exited:?}, last client error: {last}): {}",
                std::fs::read_to_string(db.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    /// Runs SQL as root over the Unix socket: the output or the client's error text.
    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = std::process::Command::new("mariadb")
            .args(["--no-defaults", "-N", "-B", "-uroot"])
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-e", sql])
            .output()
            .map_err(|e| format!("running the mariadb client: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Logs in over TCP as `user` (TLS verified against `ca_pem`, or plain without it)
    /// and reads `tls.t`: the value and the session's TLS cipher, or the refusal.
    async fn read(
        &self,
        user: &str,
        password: &str,
        ca_pem: Option<&str>,
    ) -> Result<(i32, String), String> {
        let mut opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .db_name(Some("tls"))
            .prefer_socket(false);
        if let Some(ca) = ca_pem {
            opts = opts.ssl_opts(Some(
                mysql_async::SslOpts::default()
                    .with_root_certs(vec![ca.as_bytes().to_vec().into()])
                    .with_disable_built_in_roots(true),
            ));
        }
        let mut c = match mysql_async::Conn::new(opts).await {
            Ok(c) => c,
            Err(mysql_async::Error::Server(s)) => return Err(s.code.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        use mysql_async::prelude::Queryable as _;
        let x: Option<i32> = c
            .query_first("SELECT x FROM t")
            .await
            .map_err(|e| e.to_string())?;
        let cipher: Option<(String, String)> = c
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .map_err(|e| e.to_string())?;
        let _ = c.disconnect().await;
        Ok((
            x.ok_or("no row")?,
            cipher.map(|(_, v)| v).unwrap_or_default(),
        ))
    }

    fn config(&self, sub_type: &str, tls: &str, ca: Option<&str>) -> serde_json::Value {
        let mut cfg = serde_json::json!({
            "SecretSubType": sub_type, "Host": "127.0.0.1", "Port": self.port,
            "Database": "tls", "TlsMode": tls, "AdminSecret": "db/admin",
        });
        if let Some(ca) = ca {
            cfg["CaCert"] = serde_json::json!(ca);
        }
        cfg
    }
}

impl Drop for TlsMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_rotation_speaks_tls_with_require_and_verify_full_on_a_throwaway_mariadb() {
    let started = Instant::now();
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let stranger = strongbox_server::tls::dev_certificates().unwrap();
    let db = TlsMariadb::start(&certs.cert_pem, &certs.key_pem, &certs.ca_pem);
    println!(
        "throwaway TLS MariaDB on port {} up in {:?}",
        db.port,
        started.elapsed()
    );
    db.sql(
        "CREATE DATABASE tls; CREATE TABLE tls.t (x INT); INSERT INTO tls.t VALUES (42);
         CREATE USER 'sbxadmin'@'%' IDENTIFIED BY 'admin-pw';
         GRANT ALL PRIVILEGES ON *.* TO 'sbxadmin'@'%' WITH GRANT OPTION;
         CREATE USER 'app'@'%' IDENTIFIED BY 'pw0' REQUIRE SSL; GRANT SELECT ON tls.* TO 'app'@'%';
         CREATE USER 'solo'@'%' IDENTIFIED BY 'solo0'; GRANT SELECT ON tls.* TO 'solo'@'%';",
    )
    .unwrap();
    let ca = Some(certs.ca_pem.as_str());
    // Over TLS the right password logs in and a wrong one is refused; without TLS even
    // the right password is refused (require_secure_transport).
    let (x, cipher) = db.read("app", "pw0", ca).await.unwrap();
    assert_eq!(x, 42);
    assert!(!cipher.is_empty(), "the session is encrypted");
    assert_eq!(db.read("app", "wrong", ca).await, Err("1045".into()));
    let plain = db.read("app", "pw0", None).await;
    println!("plain TCP login with the right password: {plain:?}");
    assert_eq!(plain, Err("1045".into()), "plain TCP login");
    assert_eq!(db.sql("SELECT @@require_secure_transport"), Ok("1".into()));
    assert!(db.read("sbxadmin", "admin-pw", None).await.is_err());

    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("db/admin", &account("sbxadmin", "admin-pw")))
        .await
        .unwrap();
    c.create_rotation_policy(&policy("db", "30d", RotationStrategy::Mysql, &[]))
        .await
        .unwrap();
    let current = |name: &'static str| async move {
        let v = c.get_secret_value(name, None, None).await.unwrap();
        creds(v.secret_data.as_bytes())
    };

    // require, dual accounts: two rotations (app -> app_clone -> app).
    let mut req = rds_request(
        "tls/require",
        &account("app", "pw0"),
        db.config("DoubleUsers", "require", None),
    );
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();
    for expected in ["app_clone", "app"] {
        c.rotate_secret("tls/require", None).await.unwrap();
        let cur = current("tls/require").await;
        assert_eq!(cur.name, expected);
        assert_eq!(db.read(&cur.name, &cur.password, ca).await.unwrap().0, 42);
        assert!(db.read(&cur.name, &cur.password, None).await.is_err());
    }
    // app REQUIRE SSL: its clone requires TLS too (not only because of this server's
    // require_secure_transport).
    assert_eq!(
        db.sql("SELECT ssl_type FROM mysql.user WHERE User = 'app_clone'"),
        Ok("ANY".into())
    );

    // verify-full with the right CaCert (the certificate names 127.0.0.1), single user.
    let mut req = rds_request(
        "tls/verify",
        &account("solo", "solo0"),
        db.config("SingleUser", "verify-full", ca),
    );
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();
    c.rotate_secret("tls/verify", None).await.unwrap();
    let solo = current("tls/verify").await;
    assert_eq!(solo.name, "solo");
    assert_eq!(db.read("solo", &solo.password, ca).await.unwrap().0, 42);
    assert_eq!(db.read("solo", "solo0", ca).await, Err("1045".into()));

    // verify-full with another CA: the rotation fails and ACSCurrent is unchanged.
    let mut req = rds_request(
        "tls/stranger",
        &account("solo", &solo.password),
        db.config("SingleUser", "verify-full", Some(&stranger.ca_pem)),
    );
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();
    assert_code(
        c.rotate_secret("tls/stranger", None).await,
        ErrorCode::RotationFailed,
        "TLS failed",
    );
    let d = c.describe_secret("tls/stranger").await.unwrap();
    assert_eq!(d.rotation_status, Some(api::RotationStatus::Failed));
    let err = d.last_rotation_error.unwrap_or_default();
    println!("verify-full with another CA: {err}");
    assert!(
        !err.contains(&solo.password) && !err.contains("admin-pw"),
        "{err}"
    );
    let after = current("tls/stranger").await;
    assert_eq!(
        (after.name.as_str(), after.password.as_str()),
        ("solo", solo.password.as_str())
    );
    assert_eq!(db.read("solo", &solo.password, ca).await.unwrap().0, 42);
    println!("TLS MariaDB rotation test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_rotations_connect_only_where_the_egress_policy_allows() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "egress_app", "pw-pg").await;
    let my = MysqlApp::create("eg", "pw-my").await;
    let cases = [
        (
            RotationStrategy::Postgresql,
            "pg",
            account("egress_app", "pw-pg"),
            pg.config("SingleUser", "db/pg-admin"),
        ),
        (
            RotationStrategy::Mysql,
            "my",
            account(&my.user, "pw-my"),
            my.config("SingleUser", "db/my-admin"),
        ),
    ];
    let start = |allow: &str| {
        let mut config = fast_config();
        config.rotation.egress = EgressPolicy::parse(allow).unwrap();
        TestServer::start_with(config)
    };
    let prepare = |s: &TestServer| {
        let c = s.client.clone();
        let cases = cases.clone();
        let (pg_admin, my_admin) = (pg.admin_value(), MysqlApp::admin_value());
        async move {
            c.create_secret(&text_secret("db/pg-admin", &pg_admin))
                .await
                .unwrap();
            c.create_secret(&text_secret("db/my-admin", &my_admin))
                .await
                .unwrap();
            for (strategy, name, value, cfg) in cases {
                c.create_rotation_policy(&policy(name, "30d", strategy, &[]))
                    .await
                    .unwrap();
                let mut req = rds_request(name, &value, cfg);
                req.rotation_policy = Some(name.into());
                c.create_secret(&req).await.unwrap();
            }
        }
    };

    // Outside the allow list: refused before any connection; nothing changes.
    let s = start("10.0.0.0/8").await;
    prepare(&s).await;
    for (_, name, value, _) in &cases {
        assert_code(
            s.client.rotate_secret(name, None).await,
            ErrorCode::RotationFailed,
            "host 127.0.0.1 has no address this server may connect to",
        );
        let v = s.client.get_secret_value(name, None, None).await.unwrap();
        assert_eq!(&v.secret_data, value);
    }
    assert_eq!(pg.login("egress_app", "pw-pg").await, Ok(()));
    assert_eq!(mysql_login(&my.user, "pw-my", &my.db).await, Ok(()));

    // Inside it, both rotate, and the new passwords log in.
    let s = start("127.0.0.0/8").await;
    prepare(&s).await;
    for (_, name, _, _) in &cases {
        s.client.rotate_secret(name, None).await.unwrap();
    }
    let pg_now = creds(
        s.client
            .get_secret_value("pg", None, None)
            .await
            .unwrap()
            .secret_data
            .as_bytes(),
    );
    let my_now = creds(
        s.client
            .get_secret_value("my", None, None)
            .await
            .unwrap()
            .secret_data
            .as_bytes(),
    );
    assert_eq!(pg.login("egress_app", &pg_now.password).await, Ok(()));
    assert_eq!(pg.login("egress_app", "pw-pg").await, Err("28P01".into()));
    assert_eq!(
        mysql_login(&my.user, &my_now.password, &my.db).await,
        Ok(())
    );
    assert!(mysql_login(&my.user, "pw-my", &my.db).await.is_err());
    my.drop_all().await;
}

/// A single-user rotation changes the only password the applications have, so it
/// first proves the account can log in from Strongbox: one that cannot (PostgreSQL
/// `NOLOGIN`, a locked MariaDB account) is refused before anything changes, where
/// *test* would otherwise fail for ever after the change. A current password that
/// merely drifted (refused as wrong) is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_set_changes_nothing_for_an_account_that_cannot_log_in() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "blocked", "pw-blocked").await;
    pg_app(&pg, "drifted", "pw-real").await;
    let admin = pg.admin().await;
    admin
        .batch_execute("ALTER ROLE blocked NOLOGIN")
        .await
        .unwrap();
    let verifier = |name: &'static str| {
        let pg = &pg;
        async move {
            let row = pg
                .admin()
                .await
                .query_one(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&name],
                )
                .await
                .unwrap();
            row.get::<_, Option<String>>(0)
        }
    };
    let before = verifier("blocked").await;
    let single = obj(pg.config("SingleUser", "db/admin"));
    let e = database_conformance(
        RotationStrategy::Postgresql,
        &single,
        pg.admin_value().as_bytes(),
        account("blocked", "pw-blocked").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message
            .contains("account blocked cannot log in from Strongbox, so a new password could not be tested; nothing was changed"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("pw-blocked"));
    assert_eq!(
        verifier("blocked").await,
        before,
        "the password was not changed"
    );
    // A drifted current password: the rotation sets a new one, which works.
    let v = database_conformance(
        RotationStrategy::Postgresql,
        &single,
        pg.admin_value().as_bytes(),
        account("drifted", "pw-stale").as_bytes(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(pg.login("drifted", &creds(&v).password).await, Ok(()));

    // MariaDB: a locked account.
    let locked = MysqlApp::create("locked", "pw-locked").await;
    let mut root = mysql_root().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("ALTER USER '{}'@'%' ACCOUNT LOCK", locked.user),
    )
    .await
    .unwrap();
    let before = mysql_hash(&mut root, &locked.user).await;
    let e = database_conformance(
        RotationStrategy::Mysql,
        &obj(locked.config("SingleUser", "db/admin")),
        MysqlApp::admin_value().as_bytes(),
        account(&locked.user, "pw-locked").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains(&format!(
            "account {} cannot log in from Strongbox",
            locked.user
        )),
        "{}",
        e.message
    );
    assert_eq!(mysql_hash(&mut root, &locked.user).await, before);

    // MySQL refuses a login from a host the account does not allow as if the password
    // were wrong (1045): the admin is asked, and the account is left alone.
    let elsewhere = unique("elsewhere");
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("CREATE USER '{elsewhere}'@'10.9.9.%' IDENTIFIED BY 'pw-elsewhere'"),
    )
    .await
    .unwrap();
    let before = mysql_hash(&mut root, &elsewhere).await;
    let e = database_conformance(
        RotationStrategy::Mysql,
        &obj(locked.config("SingleUser", "db/admin")),
        MysqlApp::admin_value().as_bytes(),
        account(&elsewhere, "pw-elsewhere").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message
            .contains("no host entry of the account matches this host"),
        "{}",
        e.message
    );
    assert_eq!(mysql_hash(&mut root, &elsewhere).await, before);
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("DROP USER '{elsewhere}'@'10.9.9.%'"),
    )
    .await
    .unwrap();

    // MySQL also refuses as a wrong password (1045) a right password from a login that
    // lacks what the account REQUIREs: TLS (here TlsMode is disable), or a client
    // certificate, which Strongbox never presents. Such an account is left alone, where
    // its password would be changed as one that drifted, for good.
    for require in ["SSL", "X509"] {
        let name = unique("requires");
        mysql_async::prelude::Queryable::query_drop(
            &mut root,
            format!("CREATE USER '{name}'@'%' IDENTIFIED BY 'pw-require' REQUIRE {require}"),
        )
        .await
        .unwrap();
        let before = mysql_hash(&mut root, &name).await;
        let e = database_conformance(
            RotationStrategy::Mysql,
            &obj(locked.config("SingleUser", "db/admin")),
            MysqlApp::admin_value().as_bytes(),
            account(&name, "pw-require").as_bytes(),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.message
                .contains(&format!("account {name} cannot log in from Strongbox"))
                && e.message.contains("requires TLS or a client certificate"),
            "REQUIRE {require}: {}",
            e.message
        );
        assert_eq!(
            mysql_hash(&mut root, &name).await,
            before,
            "REQUIRE {require}: the password was changed"
        );
        mysql_async::prelude::Queryable::query_drop(&mut root, format!("DROP USER '{name}'@'%'"))
            .await
            .unwrap();
    }

    // MariaDB refuses an account that logs in through unix_socket without checking the
    // password (1698); it also answers 1698 for a name with no entry for this host when
    // the stand-in account it authenticates against uses unix_socket, which made the
    // case above depend on the random name. Such an account is not given a password: that
    // would change how it logs in.
    let socket = unique("socket");
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("CREATE USER '{socket}'@'%' IDENTIFIED VIA unix_socket"),
    )
    .await
    .unwrap();
    assert_eq!(
        mysql_plugin(&mut root, &socket).await.as_deref(),
        Some("unix_socket")
    );
    let e = database_conformance(
        RotationStrategy::Mysql,
        &obj(locked.config("SingleUser", "db/admin")),
        MysqlApp::admin_value().as_bytes(),
        account(&socket, "pw-socket").as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message
            .contains(&format!("account {socket} cannot log in from Strongbox"))
            && !e.message.contains("no host entry"),
        "{}",
        e.message
    );
    assert_eq!(
        mysql_plugin(&mut root, &socket).await.as_deref(),
        Some("unix_socket")
    );
    mysql_async::prelude::Queryable::query_drop(&mut root, format!("DROP USER '{socket}'@'%'"))
        .await
        .unwrap();
    let _ = root.disconnect().await;
    locked.drop_all().await;
}

/// An engine with the single-user MariaDB secret `MyDbCreds` (`app`'s account, password
/// `pw0`, admin secret `db/admin`) under the `mysql` policy `db`.
async fn single_user_mysql_engine(app: &MysqlApp) -> Engine {
    rds_engine(
        &MysqlApp::admin_value(),
        RotationStrategy::Mysql,
        &account(&app.user, "pw0"),
        app.config("SingleUser", "db/admin"),
    )
    .await
}

/// [`single_user_mysql_engine`], with a rotation (`v1`) begun and halted after `step`.
async fn single_user_mysql_rotation_halted_after(app: &MysqlApp, step: &str) -> Engine {
    let e = single_user_mysql_engine(app).await;
    e.rotate_halted_after(step, "v1").await;
    e
}

/// A single-user MySQL account has one entry per host, and *set* changes them one after
/// the other: when a set stopped after the entry Strongbox logs in through, the resumed
/// rotation sets the others too, rather than take the pending password's login from here
/// for done and make it current while the other hosts' entries keep the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_single_user_mysql_set_reaches_every_host_entry() {
    let app = MysqlApp::create("hosts", "pw0").await;
    let mut root = mysql_root().await;
    // An entry Strongbox (on 127.0.0.1) never logs in through.
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("CREATE USER '{}'@'10.9.9.%' IDENTIFIED BY 'pw0'", app.user),
    )
    .await
    .unwrap();
    let mut e = single_user_mysql_rotation_halted_after(&app, "create").await;
    // A set that stopped after the first entry: '%' has the pending password.
    let pending = e.value("ACSPending");
    // DDL takes no parameters: the random password is written as a quoted literal.
    let literal = pending.password.replace('\\', "\\\\").replace('\'', "''");
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("ALTER USER '{}'@'%' IDENTIFIED BY '{literal}'", app.user),
    )
    .await
    .unwrap();
    e.restart();
    let r = e.service.tick().await.unwrap();
    assert_eq!(r.failed_rotations, 0);
    let cur = e.value(STAGE_CURRENT);
    assert_eq!(cur.password, pending.password, "the rotation completed");
    let hashes: Vec<(String, String)> = mysql_async::prelude::Queryable::exec(
        &mut root,
        "SELECT Host, authentication_string FROM mysql.user WHERE User = ?",
        (app.user.clone(),),
    )
    .await
    .unwrap();
    assert_eq!(hashes.len(), 2);
    assert_eq!(
        hashes[0].1, hashes[1].1,
        "a host entry kept the old password: {hashes:?}"
    );
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("DROP USER '{}'@'10.9.9.%'", app.user),
    )
    .await
    .unwrap();
    let _ = root.disconnect().await;
    app.drop_all().await;
}

/// A rotation stopped after *set* is tested and finished also while its admin secret
/// cannot be read (here pending deletion): only *create* and *set* need the admin, and
/// the database already has the new password, which only the finish makes current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_stopped_after_set_finishes_without_its_admin_secret() {
    let app = MysqlApp::create("noadmin", "pw0").await;
    let mut e = single_user_mysql_rotation_halted_after(&app, "set").await;
    let pending = e.value("ACSPending");
    assert_eq!(
        mysql_login(&app.user, &pending.password, &app.db).await,
        Ok(())
    );
    e.service
        .delete_secret(
            "db/admin",
            None,
            false,
            &Actor::Trusted(Principal::Named("root".into())),
        )
        .await
        .unwrap();
    e.restart();
    let r = e.service.tick().await.unwrap();
    assert_eq!(r.failed_rotations, 0);
    let cur = e.value(STAGE_CURRENT);
    assert_eq!(cur.password, pending.password, "the rotation finished");
    assert_eq!(mysql_login(&app.user, &cur.password, &app.db).await, Ok(()));
    app.drop_all().await;
}

/// A MySQL secret (`sub_type`) first written as `v0` under a key since destroyed, then
/// moved to another key and put again as each of `puts`.
async fn after_a_destroyed_key(app: &MysqlApp, sub_type: &str, puts: &[&str]) -> Engine {
    let e = Engine::start(None);
    let trusted = Actor::Trusted(Principal::Named("root".into()));
    let old_key = e.service.create_key(Default::default()).await.unwrap();
    let new_key = e.service.create_key(Default::default()).await.unwrap();
    e.service
        .create_secret(text_secret("db/admin", &MysqlApp::admin_value()), &trusted)
        .await
        .unwrap();
    e.service
        .create_rotation_policy(policy("db", "30d", RotationStrategy::Mysql, &[]), &trusted)
        .await
        .unwrap();
    let value = account(&app.user, "pw0");
    let mut req = rds_request("MyDbCreds", &value, app.config(sub_type, "db/admin"));
    req.encryption_key_id = Some(old_key.key_id.clone());
    req.version_id = Some("v0".into());
    e.service.create_secret(req, &trusted).await.unwrap();
    e.service
        .schedule_key_deletion(&old_key.key_id, Some(7), &trusted)
        .await
        .unwrap();
    e.clock.advance(8 * 86_400);
    e.service.tick().await.unwrap();
    e.service
        .update_secret(
            "MyDbCreds",
            api::UpdateSecretRequest {
                encryption_key_id: Some(new_key.key_id.clone()),
                rotation_policy: Some("db".into()),
                ..Default::default()
            },
            &trusted,
        )
        .await
        .unwrap();
    for id in puts {
        let put = api::PutSecretValueRequest {
            secret_data: value.clone(),
            version_id: Some(id.to_string()),
            ..Default::default()
        };
        e.service
            .put_secret_value("MyDbCreds", put, &trusted)
            .await
            .unwrap();
    }
    e
}

/// A single-user rotation never looks at `ACSPrevious`: one left under a destroyed key
/// does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_user_rotation_does_not_need_acsprevious() {
    let app = MysqlApp::create("oneprev", "pw0").await;
    let e = after_a_destroyed_key(&app, "SingleUser", &["v1"]).await;
    assert_eq!(
        e.service
            .get_secret_value("MyDbCreds", None, Some(STAGE_PREVIOUS))
            .unwrap_err()
            .code,
        strongbox_schemas::ErrorCode::KeyDeleted
    );
    e.service
        .rotate_secret(
            "MyDbCreds",
            api::RotateSecretRequest {
                version_id: Some("v2".into()),
            },
        )
        .await
        .unwrap();
    let cur = e.value(STAGE_CURRENT);
    assert_eq!(cur.name, app.user);
    assert_ne!(cur.password, "pw0");
    assert_eq!(mysql_login(&cur.name, &cur.password, &app.db).await, Ok(()));
    app.drop_all().await;
}

/// Only *create* looks at `ACSPrevious` (a dual-account rotation resets the account behind
/// it): once the pending version is made, an `ACSPrevious` that can no longer be read (here
/// moved by hand onto a version whose key was destroyed) does not stop *set*, *test* and
/// *finish*.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_rotation_stopped_after_create_finishes_without_acsprevious() {
    let app = MysqlApp::create("noprev", "pw0").await;
    let mut e = after_a_destroyed_key(&app, "DoubleUsers", &["v1", "v2"]).await;
    let trusted = Actor::Trusted(Principal::Named("root".into()));
    e.rotate_halted_after("create", "v3").await;
    let pending = e.value("ACSPending");
    assert_eq!(pending.name, format!("{}_clone", app.user));
    let moved = api::UpdateSecretStageRequest {
        version_stage: STAGE_PREVIOUS.into(),
        move_to_version: Some("v0".into()),
        remove_from_version: Some("v1".into()),
    };
    e.service
        .update_secret_stage("MyDbCreds", moved, &trusted)
        .await
        .unwrap();
    assert_eq!(
        e.service
            .get_secret_value("MyDbCreds", None, Some(STAGE_PREVIOUS))
            .unwrap_err()
            .code,
        strongbox_schemas::ErrorCode::KeyDeleted
    );
    e.restart();
    let r = e.service.tick().await.unwrap();
    assert_eq!(r.failed_rotations, 0);
    let v = e.service.get_secret_value("MyDbCreds", None, None).unwrap();
    assert_eq!(v.version_id, "v3", "the rotation finished");
    let cur = e.value(STAGE_CURRENT);
    assert_eq!(cur.password, pending.password);
    assert_eq!(mysql_login(&cur.name, &cur.password, &app.db).await, Ok(()));
    app.drop_all().await;
}

/// A failed rotation's `last_rotation_error` is shown to whoever may describe the secret,
/// and its error answers whoever may rotate it, who may not read its value: both withhold
/// the account names (the value's, its clone's, the admin's), which the server's log keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_rotation_error_withholds_account_names() {
    let app = MysqlApp::create("withheld", "pw0").await;
    let mut root = mysql_root().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("ALTER USER '{}'@'%' ACCOUNT LOCK", app.user),
    )
    .await
    .unwrap();
    let _ = root.disconnect().await;
    let e = single_user_mysql_engine(&app).await;
    let answer = e
        .service
        .rotate_secret("MyDbCreds", Default::default())
        .await
        .unwrap_err();
    assert!(
        answer
            .message
            .contains("account <account withheld> cannot log in"),
        "{}",
        answer.message
    );
    assert!(!answer.message.contains(&app.user), "{}", answer.message);
    let kept = e
        .service
        .describe_secret("MyDbCreds")
        .unwrap()
        .last_rotation_error
        .unwrap();
    assert!(
        kept.contains("account <account withheld> cannot log in"),
        "{kept}"
    );
    assert!(!kept.contains(&app.user), "{kept}");
    app.drop_all().await;
}

async fn mysql_plugin(root: &mut mysql_async::Conn, user: &str) -> Option<String> {
    mysql_async::prelude::Queryable::query_first::<String, _>(
        root,
        format!("SELECT plugin FROM mysql.user WHERE User = '{user}'"),
    )
    .await
    .unwrap()
}

async fn mysql_hash(root: &mut mysql_async::Conn, user: &str) -> Option<String> {
    mysql_async::prelude::Queryable::query_first::<String, _>(
        root,
        format!("SELECT authentication_string FROM mysql.user WHERE User = '{user}'"),
    )
    .await
    .unwrap()
}

/// An account whose privileges come from a role it has on at login (a default role):
/// the clone gets the role and has it on at login too, so the application's queries
/// keep working after the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_clones_get_the_default_role_of_the_account_they_copy() {
    let app = MysqlApp::create("roled", "pw-roled").await;
    let reader = unique("reader");
    let mut root = mysql_root().await;
    for sql in [
        format!("REVOKE SELECT ON `{}`.* FROM '{}'@'%'", app.db, app.user),
        format!("CREATE ROLE {reader}"),
        format!("GRANT SELECT ON `{}`.* TO {reader}", app.db),
        format!("GRANT {reader} TO '{}'@'%'", app.user),
        format!("SET DEFAULT ROLE {reader} FOR '{}'@'%'", app.user),
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut root, sql)
            .await
            .unwrap();
    }
    assert_eq!(
        app.read_table(&app.user, "pw-roled").await,
        Ok(42),
        "through the role"
    );
    let v = database_conformance(
        RotationStrategy::Mysql,
        &obj(app.config("DoubleUsers", "db/admin")),
        MysqlApp::admin_value().as_bytes(),
        account(&app.user, "pw-roled").as_bytes(),
        None,
    )
    .await
    .unwrap();
    let clone = creds(&v);
    assert_eq!(clone.name, format!("{}_clone", app.user));
    assert_eq!(
        app.read_table(&clone.name, &clone.password).await,
        Ok(42),
        "the clone reads through the same role, on at login"
    );
    mysql_async::prelude::Queryable::query_drop(&mut root, format!("DROP ROLE {reader}"))
        .await
        .unwrap();
    let _ = root.disconnect().await;
    app.drop_all().await;
}

/// A dual-account rotation gives the account it resets exactly the rights of the current
/// one: a privilege or a role revoked from the current account since (during an
/// incident, say) is taken from the other one too, instead of coming back at the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_dual_rotation_takes_back_what_the_current_account_no_longer_has() {
    let app = MysqlApp::create("revoked", "pw-revoked").await;
    let clone = format!("{}_clone", app.user);
    let extra = unique("extra");
    let mut root = mysql_root().await;
    // Both accounts could insert and the clone had a role of its own; then the DBA
    // revoked INSERT from the current account.
    // It also had everything on the table, with the grant option, and an entry on a
    // host the current account no longer has.
    for sql in [
        format!("CREATE USER '{clone}'@'%' IDENTIFIED BY 'pw-old-clone'"),
        format!("GRANT SELECT, INSERT ON `{}`.* TO '{clone}'@'%'", app.db),
        format!(
            "GRANT ALL PRIVILEGES ON `{}`.t TO '{clone}'@'%' WITH GRANT OPTION",
            app.db
        ),
        format!("CREATE USER '{clone}'@'10.255.%' IDENTIFIED BY 'pw-old-clone'"),
        format!("GRANT SELECT ON `{}`.* TO '{clone}'@'10.255.%'", app.db),
        format!("GRANT INSERT ON `{}`.* TO '{}'@'%'", app.db, app.user),
        format!("CREATE ROLE {extra}"),
        format!("GRANT {extra} TO '{clone}'@'%'"),
        format!("REVOKE INSERT ON `{}`.* FROM '{}'@'%'", app.db, app.user),
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut root, sql)
            .await
            .unwrap();
    }
    let v = database_conformance(
        RotationStrategy::Mysql,
        &obj(app.config("DoubleUsers", "db/admin")),
        MysqlApp::admin_value().as_bytes(),
        account(&app.user, "pw-revoked").as_bytes(),
        Some(account(&clone, "pw-old-clone").as_bytes()),
    )
    .await
    .unwrap();
    let new = creds(&v);
    assert_eq!(new.name, clone);
    assert_eq!(app.read_table(&new.name, &new.password).await, Ok(42));
    let grants: Vec<String> =
        mysql_async::prelude::Queryable::query(&mut root, format!("SHOW GRANTS FOR '{clone}'@'%'"))
            .await
            .unwrap();
    assert!(
        grants.iter().all(|g| !g.contains("INSERT")
            && !g.contains("ALL PRIVILEGES")
            && !g.contains("GRANT OPTION")
            && !g.contains(&extra)),
        "{grants:?}"
    );
    assert!(
        grants.iter().any(|g| g.contains("GRANT SELECT ON")),
        "{grants:?}"
    );
    let elsewhere: Vec<String> = mysql_async::prelude::Queryable::query(
        &mut root,
        format!("SHOW GRANTS FOR '{clone}'@'10.255.%'"),
    )
    .await
    .unwrap();
    assert!(
        elsewhere
            .iter()
            .all(|g| g.starts_with("GRANT USAGE ON *.*")),
        "{elsewhere:?}"
    );
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!("DROP USER '{clone}'@'10.255.%'"),
    )
    .await
    .unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut root, format!("DROP ROLE {extra}"))
        .await
        .unwrap();
    let _ = root.disconnect().await;
    app.drop_all().await;
}

/// A database that accepts the connection and never answers cannot hold the engine: each
/// attempt of the step is cut off at the step timeout, the rotation fails with that
/// reason, and the tick ends (keys, purges and other rotations are not held up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_fails_the_step_at_its_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = silent.accept().await {
            // Accepted, never read from nor written to, never closed.
            keep.lock().unwrap().push(sock);
        }
    });
    let mut config = fast_config();
    config.rotation.step_timeout = Duration::from_millis(500);
    config.rotation.step_attempts = 2;
    let s = TestServer::start_with(config).await;
    let c = &s.client;
    c.create_secret(&text_secret("db/admin", &account("postgres", "pw")))
        .await
        .unwrap();
    for (name, strategy) in [
        ("pg", RotationStrategy::Postgresql),
        ("my", RotationStrategy::Mysql),
    ] {
        c.create_rotation_policy(&policy(name, "30d", strategy, &[]))
            .await
            .unwrap();
        let cfg = serde_json::json!({"SecretSubType": "SingleUser", "Host": "127.0.0.1",
            "Port": port, "Database": "app", "TlsMode": "disable", "AdminSecret": "db/admin"});
        let mut req = rds_request(&format!("silent/{name}"), &account("app", "pw"), cfg);
        req.rotation_policy = Some(name.into());
        c.create_secret(&req).await.unwrap();
        let started = Instant::now();
        assert_code(
            c.rotate_secret(&format!("silent/{name}"), None).await,
            ErrorCode::RotationFailed,
            "did not finish within 0.5 s",
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{strategy:?}: cut off at the step timeout"
        );
    }
    assert!(!held.lock().unwrap().is_empty(), "the database was reached");
}

/// Dual users alternate between two accounts even after someone puts the current
/// account's value again (a break-glass reset, say), which leaves ACSPrevious naming the
/// same account as ACSCurrent: the next rotation resets the other account, found in the
/// versions, instead of making a clone of the clone and leaving the first account's
/// password valid and untracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_rotation_after_a_put_of_the_current_account_resets_the_other_one() {
    let pg = PgCluster::start();
    pg.assert_wrong_password_refused().await;
    pg_app(&pg, "app", "pw0").await;
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_secret(&text_secret("db/admin", &pg.admin_value()))
        .await
        .unwrap();
    c.create_rotation_policy(&policy("db", "30d", RotationStrategy::Postgresql, &[]))
        .await
        .unwrap();
    let mut req = rds_request(
        "dual",
        &account("app", "pw0"),
        pg.config("DoubleUsers", "db/admin"),
    );
    req.rotation_policy = Some("db".into());
    c.create_secret(&req).await.unwrap();
    let current = || async {
        creds(
            c.get_secret_value("dual", None, None)
                .await
                .unwrap()
                .secret_data
                .as_bytes(),
        )
    };
    c.rotate_secret("dual", None).await.unwrap();
    let first = current().await;
    assert_eq!(first.name, "app_clone");
    c.put_secret_value("dual", &put(&account("app_clone", &first.password)))
        .await
        .unwrap();
    c.rotate_secret("dual", None).await.unwrap();
    let second = current().await;
    assert_eq!(
        second.name, "app",
        "the other account, not a clone of the clone"
    );
    assert_eq!(pg.login("app", &second.password).await, Ok(()));
    assert_eq!(
        pg.login("app", "pw0").await,
        Err("28P01".into()),
        "pw0 rotated away"
    );
    let admin = creds(pg.admin_value().as_bytes());
    assert_eq!(
        pg.psql(
            &admin.name,
            &admin.password,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'app_clone_clone'"
        )
        .unwrap()
        .trim(),
        "0"
    );
    // Moved to another account (put twice, so ACSPrevious names it too): the next
    // rotation clones that account, and leaves the old pair alone.
    pg_app(&pg, "fresh", "pw-f").await;
    for _ in 0..2 {
        c.put_secret_value("dual", &put(&account("fresh", "pw-f")))
            .await
            .unwrap();
    }
    c.rotate_secret("dual", None).await.unwrap();
    assert_eq!(current().await.name, "fresh_clone");
    assert_eq!(
        pg.login("app", &second.password).await,
        Ok(()),
        "the old pair is not touched"
    );
}
