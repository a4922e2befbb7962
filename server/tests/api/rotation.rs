//! The rotation engine: rotate now, idempotency, the random strategy over HTTPS, the
//! scheduler (reads per tick, missed windows, keys), and crashes after each step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strongbox_client::ErrorCode;
use strongbox_schemas::{
    self as api, AuditOutcome, Interval, RotationStatus, RotationStrategy, STAGE_CURRENT,
    STAGE_PENDING, STAGE_PREVIOUS,
};
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, RotationConfig, Service, ServiceConfig};
use strongbox_server::storage::{
    Backend, Entries, Mutation, Reader, RedbBackend, StorageError, Table,
};

use crate::common::*;

pub(crate) fn fast_config() -> ServiceConfig {
    ServiceConfig {
        rotation: RotationConfig {
            step_backoff: Duration::from_millis(10),
            rotate_wait: Duration::from_secs(20),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(crate) fn policy(
    name: &str,
    interval: &str,
    strategy: RotationStrategy,
    settings: &[(&str, &str)],
) -> api::CreateRotationPolicyRequest {
    api::CreateRotationPolicyRequest {
        name: name.into(),
        interval: Interval::parse(interval).unwrap(),
        window: None,
        strategy,
        settings: Some(
            settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        enabled: None,
    }
}

fn with_policy(name: &str, data: &str, policy: &str) -> api::CreateSecretRequest {
    let mut r = text_secret(name, data);
    r.rotation_policy = Some(policy.into());
    r
}

#[tokio::test]
async fn rotate_now_makes_a_random_current_version_and_is_idempotent() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy(
        "weekly",
        "7d",
        RotationStrategy::Random,
        &[("length", "24"), ("exclude_punctuation", "true")],
    ))
    .await
    .unwrap();
    let first = c
        .create_secret(&with_policy("app/db", "initial", "weekly"))
        .await
        .unwrap();
    s.clock.advance(100);

    let r = c.rotate_secret("app/db", None).await.unwrap();
    assert_eq!(r.name, "app/db");
    let cur = c.get_secret_value("app/db", None, None).await.unwrap();
    assert_eq!(cur.version_id, r.version_id);
    assert_eq!(cur.secret_data.chars().count(), 24);
    assert!(cur.secret_data.chars().all(|ch| ch.is_ascii_alphanumeric()));
    let prev = c
        .get_secret_value("app/db", None, Some(STAGE_PREVIOUS))
        .await
        .unwrap();
    assert_eq!(
        (prev.version_id.as_str(), prev.secret_data.as_str()),
        (first.version_id.as_str(), "initial")
    );
    let versions = c.list_secret_versions("app/db").await.unwrap().versions;
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].created_by, "rotation");
    assert_eq!(versions[0].version_stages, vec![STAGE_CURRENT.to_string()]);
    assert!(
        versions
            .iter()
            .all(|v| !v.version_stages.iter().any(|s| s == STAGE_PENDING))
    );

    let d = c.describe_secret("app/db").await.unwrap();
    assert_eq!(d.version_id, r.version_id);
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    assert_eq!(d.last_rotation_error, None);
    assert_eq!(d.last_rotation_date.unwrap().unix(), T0 + 100);
    assert_eq!(d.next_rotation_date.unwrap().unix(), T0 + 100 + 7 * 86_400);

    // The same version_id twice: one rotation, the same answer.
    let a = c.rotate_secret("app/db", Some("r-2")).await.unwrap();
    let b = c.rotate_secret("app/db", Some("r-2")).await.unwrap();
    assert_eq!(
        (a.version_id.as_str(), b.version_id.as_str()),
        ("r-2", "r-2")
    );
    assert_eq!(
        c.list_secret_versions("app/db")
            .await
            .unwrap()
            .versions
            .len(),
        3
    );
    // A version a person wrote is not a rotation's.
    assert_code(
        c.rotate_secret("app/db", Some(&first.version_id)).await,
        ErrorCode::VersionConflict,
        &first.version_id,
    );
    // Repeated after later rotations took its stages, then after it was pruned: still
    // done, not failed, and not rotated again.
    let rotations = |c: &strongbox_client::Client| {
        let c = c.clone();
        async move {
            c.list_secret_versions("app/db")
                .await
                .unwrap()
                .versions
                .iter()
                .filter(|v| v.created_by == "rotation")
                .count()
        }
    };
    let rotate = |from: usize, to: usize| async move {
        for i in from..to {
            c.rotate_secret("app/db", Some(&format!("later-{i}")))
                .await
                .unwrap();
        }
    };
    let repeat = || async { c.rotate_secret("app/db", Some("r-2")).await.unwrap() };
    rotate(0, 2).await;
    let before = rotations(c).await;
    assert_eq!(repeat().await.version_id, "r-2");
    assert_eq!(rotations(c).await, before, "rotated again");
    rotate(2, 14).await;
    let versions = c.list_secret_versions("app/db").await.unwrap().versions;
    assert!(!versions.iter().any(|v| v.version_id == "r-2"), "pruned");
    assert_eq!(repeat().await.version_id, "r-2");
    let cur = c.get_secret_value("app/db", None, None).await.unwrap();
    assert_eq!(cur.version_id, "later-13", "rotated again");
    assert_code(
        c.rotate_secret("app/db", Some("bad id with spaces")).await,
        ErrorCode::InvalidParameter,
        "version_id",
    );
    // No policy, no rotation; no secret, no rotation.
    c.create_secret(&text_secret("plain", "x")).await.unwrap();
    assert_code(
        c.rotate_secret("plain", None).await,
        ErrorCode::InvalidState,
        "rotation policy",
    );
    assert_code(
        c.rotate_secret("missing", None).await,
        ErrorCode::SecretNotFound,
        "missing",
    );
    // The request is audited as the caller's, the rotation as the engine's.
    let recs = c
        .list_audit(&strongbox_client::AuditQuery {
            action: Some("kms:RotateSecret".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert!(recs.iter().any(|r| r.principal == "root"));
    assert!(
        recs.iter()
            .any(|r| r.principal == "rotation" && r.resource == "secret/app/db")
    );
}

#[tokio::test]
async fn a_json_field_rotation_keeps_the_other_fields() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy(
        "db",
        "30d",
        RotationStrategy::Random,
        &[("json_field", "AccountPassword"), ("length", "40")],
    ))
    .await
    .unwrap();
    let original =
        r#"{"AccountName":"app","AccountPassword":"s3cret","Host":"db.internal","Port":5432}"#;
    c.create_secret(&with_policy("rds/app", original, "db"))
        .await
        .unwrap();
    c.rotate_secret("rds/app", None).await.unwrap();
    let v = c.get_secret_value("rds/app", None, None).await.unwrap();
    let new: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
    let old: serde_json::Value = serde_json::from_str(original).unwrap();
    for k in ["AccountName", "Host", "Port"] {
        assert_eq!(new[k], old[k], "{k}");
    }
    let pw = new["AccountPassword"].as_str().unwrap();
    assert_ne!(pw, "s3cret");
    assert_eq!(pw.chars().count(), 40);

    // A value that is not a JSON object fails the rotation and leaves ACSCurrent alone.
    c.create_secret(&with_policy("rds/broken", "not json", "db"))
        .await
        .unwrap();
    assert_code(
        c.rotate_secret("rds/broken", None).await,
        ErrorCode::RotationFailed,
        "json_field",
    );
    let d = c.describe_secret("rds/broken").await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Failed));
    let err = d.last_rotation_error.unwrap();
    assert!(
        err.contains("RotationFailed") && !err.contains("not json"),
        "{err}"
    );
    let cur = c.get_secret_value("rds/broken", None, None).await.unwrap();
    assert_eq!(cur.secret_data, "not json");
    assert_eq!(
        c.list_secret_versions("rds/broken")
            .await
            .unwrap()
            .versions
            .len(),
        1
    );
}

/// A strategy whose values do not fit the secret's type (`random` without a field, on an
/// `Rds` secret) fails at *create*: the secret keeps its current value, and nothing is
/// pending, where `ACSCurrent` would become a bare password no application, and no
/// database rotation, could read.
#[tokio::test]
async fn a_rotation_whose_value_does_not_fit_the_secrets_type_fails_at_create() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy("plain", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    c.create_secret(&text_secret(
        "db/admin",
        r#"{"AccountName": "postgres", "AccountPassword": "admin-pw-1"}"#,
    ))
    .await
    .unwrap();
    let value = r#"{"AccountName": "app", "AccountPassword": "pw-0123456789"}"#;
    let mut req = text_secret("db/app", value);
    req.secret_type = api::SecretType::Rds;
    req.extended_config = serde_json::json!({"SecretSubType": "SingleUser",
        "Host": "db.internal", "Port": 5432, "Database": "app", "TlsMode": "verify-full",
        "AdminSecret": "db/admin"})
    .as_object()
    .cloned();
    req.rotation_policy = Some("plain".into());
    c.create_secret(&req).await.unwrap();
    assert_code(
        c.rotate_secret("db/app", None).await,
        ErrorCode::RotationFailed,
        "not a value of a secret of secret_type Rds",
    );
    assert_eq!(
        c.get_secret_value("db/app", None, None)
            .await
            .unwrap()
            .secret_data,
        value
    );
    let versions = c.list_secret_versions("db/app").await.unwrap().versions;
    assert_eq!(versions.len(), 1, "{versions:?}");
    let described = c.describe_secret("db/app").await.unwrap();
    assert!(
        described
            .last_rotation_error
            .is_some_and(|e| e.contains("secret_type Rds") && !e.contains("pw-0123456789")),
    );
}

#[tokio::test]
async fn the_password_generator_follows_its_rules() {
    let s = TestServer::start().await;
    let c = &s.client;
    let p = c
        .random_password(&[
            ("length", "50"),
            ("exclude_numbers", "true"),
            ("exclude_characters", "abcXYZ"),
        ])
        .await
        .unwrap();
    assert_eq!(p.chars().count(), 50);
    assert!(
        !p.chars()
            .any(|ch| ch.is_ascii_digit() || "abcXYZ".contains(ch)),
        "{p}"
    );
    let d = c.random_password(&[]).await.unwrap();
    assert_eq!(d.chars().count(), 32);
    assert_ne!(d, c.random_password(&[]).await.unwrap());
    assert_code(
        c.random_password(&[("length", "7")]).await,
        ErrorCode::InvalidParameter,
        "length",
    );
    assert_code(
        c.random_password(&[
            ("exclude_lowercase", "true"),
            ("exclude_uppercase", "true"),
            ("exclude_numbers", "true"),
            ("exclude_punctuation", "true"),
        ])
        .await,
        ErrorCode::InvalidParameter,
        "exclude",
    );
}

#[tokio::test]
async fn scheduled_rotation_follows_the_policy_and_keys_use_the_same_schedule() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy("six", "6h", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    let created = c
        .create_secret(&with_policy("sched", "v0", "six"))
        .await
        .unwrap();
    let due = created.next_rotation_date.unwrap().unix();
    assert_eq!(due, T0 + 6 * 3600);
    // Before the window: nothing. After it (6h + at most the 1h window): once.
    assert_eq!(s.advance_and_tick(6 * 3600 - 1).await.rotated_secrets, 0);
    assert_eq!(s.advance_and_tick(3601).await.rotated_secrets, 1);
    assert_eq!(s.advance_and_tick(0).await.rotated_secrets, 0);
    let d = c.describe_secret("sched").await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    assert_eq!(
        d.next_rotation_date.unwrap().unix(),
        T0 + 7 * 3600 + 6 * 3600
    );

    // Disabling the policy takes the secret off the schedule; enabling puts it back.
    c.update_rotation_policy(
        "six",
        &api::UpdateRotationPolicyRequest {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.advance_and_tick(30 * 86_400).await.rotated_secrets, 0);
    c.update_rotation_policy(
        "six",
        &api::UpdateRotationPolicyRequest {
            enabled: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.advance_and_tick(0).await.rotated_secrets, 1);

    // A secret scheduled for deletion does not rotate, and is purged from the schedule.
    c.delete_secret("sched", Default::default()).await.unwrap();
    assert_eq!(s.advance_and_tick(86_400).await.rotated_secrets, 0);
    assert_eq!(s.advance_and_tick(30 * 86_400).await.purged_secrets, 1);

    // CMK automatic rotation runs from the same index.
    let k = c
        .create_key(&api::CreateKeyRequest {
            automatic_rotation: true,
            rotation_interval: Some(Interval::parse("7d").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        k.next_rotation_date.unwrap().unix(),
        s.clock_now() + 7 * 86_400
    );
    assert_eq!(s.advance_and_tick(7 * 86_400 - 1).await.rotated_keys, 0);
    assert_eq!(s.advance_and_tick(1).await.rotated_keys, 1);
    // Missed intervals: one rotation, not one per interval.
    assert_eq!(s.advance_and_tick(30 * 86_400).await.rotated_keys, 1);
    assert_eq!(s.advance_and_tick(0).await.rotated_keys, 0);
    assert_eq!(
        c.describe_key(&k.key_id).await.unwrap().primary_key_version,
        3
    );
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}
impl ClockNow for TestServer {
    fn clock_now(&self) -> i64 {
        use strongbox_server::clock::Clock as _;
        self.clock.now()
    }
}

/// A backend that counts what is read from the `secrets` table (point reads and rows
/// returned by scans, also through snapshots).
struct Counting {
    inner: RedbBackend,
    secret_reads: Arc<AtomicU64>,
}

struct CountingReader<'a> {
    inner: Box<dyn Reader + 'a>,
    secret_reads: Arc<AtomicU64>,
}

fn count(n: &AtomicU64, table: Table, rows: usize) {
    if table == Table::Secrets {
        n.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

impl Reader for CountingReader<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        count(&self.secret_reads, table, 1);
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let r = self.inner.scan(table, prefix, after, limit)?;
        count(&self.secret_reads, table, r.len());
        Ok(r)
    }
}

impl Backend for Counting {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        count(&self.secret_reads, table, 1);
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let r = self.inner.scan(table, prefix, after, limit)?;
        count(&self.secret_reads, table, r.len());
        Ok(r)
    }
    fn commit(&self, m: &[Mutation]) -> Result<(), StorageError> {
        self.inner.commit(m)
    }
    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        Ok(Box::new(CountingReader {
            inner: self.inner.snapshot()?,
            secret_reads: self.secret_reads.clone(),
        }))
    }
}

/// Services over a backend without HTTP; `restart` builds new services over the same
/// storage, as a process restart does (nothing kept in memory).
pub(crate) struct Engine {
    backend: Arc<dyn Backend>,
    key: RootKey,
    pub(crate) clock: ManualClock,
    pub(crate) service: Service,
    _dir: tempfile::TempDir,
}

impl Engine {
    /// `counting` counts reads of the secrets table.
    pub(crate) fn start(counting: Option<Arc<AtomicU64>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbBackend::open(&dir.path().join("db.redb")).unwrap();
        let backend: Arc<dyn Backend> = match counting {
            Some(n) => Arc::new(Counting {
                inner: redb,
                secret_reads: n,
            }),
            None => Arc::new(redb),
        };
        let key = RootKey::random();
        server::initialize(backend.as_ref(), &key).unwrap();
        let clock = ManualClock::new(T0);
        let service = server::unseal(
            backend.clone(),
            &key,
            Arc::new(clock.clone()),
            fast_config(),
        )
        .unwrap()
        .service;
        Self {
            backend,
            key,
            clock,
            service,
            _dir: dir,
        }
    }

    pub(crate) fn restart(&mut self) {
        self.service = server::unseal(
            self.backend.clone(),
            &self.key,
            Arc::new(self.clock.clone()),
            fast_config(),
        )
        .unwrap()
        .service;
    }

    fn current(&self, name: &str) -> api::SecretValue {
        self.service.get_secret_value(name, None, None).unwrap()
    }

    fn rotation_versions(&self, name: &str) -> usize {
        self.service
            .list_secret_versions(name)
            .unwrap()
            .versions
            .iter()
            .filter(|v| v.created_by == "rotation")
            .count()
    }
}

fn root() -> Actor {
    Actor::Trusted(Principal::Named("root".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_reads_only_due_secrets_and_a_restart_after_missed_windows_rotates_once() {
    const ALL: usize = 10_000;
    const DUE: usize = 100;
    let reads = Arc::new(AtomicU64::new(0));
    let mut e = Engine::start(Some(reads.clone()));
    let svc = e.service.clone();
    svc.create_rotation_policy(policy("fast", "6h", RotationStrategy::Random, &[]), &root())
        .await
        .unwrap();
    svc.create_rotation_policy(
        policy("slow", "365d", RotationStrategy::Random, &[]),
        &root(),
    )
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..ALL {
        let svc = svc.clone();
        tasks.spawn(async move {
            let p = if i % (ALL / DUE) == 0 { "fast" } else { "slow" };
            svc.create_secret(with_policy(&format!("s/{i:05}"), "v0", p), &root())
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // The first tick builds nothing (the index is maintained on write) and finds nothing due.
    assert_eq!(svc.tick().await.unwrap().rotated_secrets, 0);

    reads.store(0, Ordering::SeqCst);
    assert_eq!(svc.tick().await.unwrap(), Default::default());
    assert_eq!(
        reads.load(Ordering::SeqCst),
        0,
        "an idle tick reads no secret"
    );

    e.clock.advance(7 * 3600);
    reads.store(0, Ordering::SeqCst);
    let r = svc.tick().await.unwrap();
    assert_eq!((r.rotated_secrets, r.failed_rotations), (DUE, 0));
    let per_rotation = reads.load(Ordering::SeqCst) as f64 / DUE as f64;
    assert!(
        per_rotation < 30.0,
        "{per_rotation} secret reads per rotation: the tick must not read the other {} secrets",
        ALL - DUE
    );
    assert!(reads.load(Ordering::SeqCst) < (ALL / 4) as u64);

    // Down for two and a half intervals: on restart, each due secret rotates once.
    drop(svc);
    e.clock.advance(15 * 3600);
    e.restart();
    let r = e.service.tick().await.unwrap();
    assert_eq!(r.rotated_secrets, DUE);
    assert_eq!(e.service.tick().await.unwrap().rotated_secrets, 0);
    for i in (0..ALL).step_by(ALL / DUE) {
        assert_eq!(e.rotation_versions(&format!("s/{i:05}")), 2, "s/{i:05}");
    }
    assert_eq!(e.rotation_versions("s/00001"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_resumes_and_current_stays_readable() {
    for step in ["create", "set", "test", "finish"] {
        let mut e = Engine::start(None);
        let svc = e.service.clone();
        svc.create_rotation_policy(policy("p", "30d", RotationStrategy::Random, &[]), &root())
            .await
            .unwrap();
        let first = svc
            .create_secret(with_policy("crash", "before", "p"), &root())
            .await
            .unwrap();
        svc.set_rotation_halt(Some(step));
        let halted = svc
            .rotate_secret(
                "crash",
                api::RotateSecretRequest {
                    version_id: Some("next".into()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(halted.code, ErrorCode::Unavailable, "{step}");
        // Stopped after the step: ACSCurrent reads, and only finish has moved it.
        let cur = e.current("crash");
        if step == "finish" {
            assert_eq!(cur.version_id, "next", "{step}");
        } else {
            assert_eq!(
                (cur.version_id.as_str(), cur.secret_data.as_str()),
                (first.version_id.as_str(), "before"),
                "{step}"
            );
            let d = svc.describe_secret("crash").unwrap();
            assert_eq!(
                d.rotation_status,
                Some(RotationStatus::InProgress),
                "{step}"
            );
            let pending = svc
                .get_secret_value("crash", None, Some(STAGE_PENDING))
                .unwrap();
            assert_eq!(pending.version_id, "next");
            // The policy that began it stays until it ends: without it the rotation could
            // neither finish nor be retried.
            let detach = svc
                .update_secret(
                    "crash",
                    api::UpdateSecretRequest {
                        rotation_policy: Some(String::new()),
                        ..Default::default()
                    },
                    &root(),
                )
                .await
                .unwrap_err();
            assert_eq!(detach.code, ErrorCode::RotationInProgress, "{step}");
            assert!(detach.message.contains("take ACSPending off"), "{step}");
            let d = svc.describe_secret("crash").unwrap();
            assert_eq!(d.rotation_policy.as_deref(), Some("p"), "{step}");
            // Nor can the policy's strategy or settings change under it.
            let change = svc
                .update_rotation_policy(
                    "p",
                    api::UpdateRotationPolicyRequest {
                        settings: Some([("length".to_string(), "40".to_string())].into()),
                        ..Default::default()
                    },
                    &root(),
                )
                .await
                .unwrap_err();
            assert_eq!(change.code, ErrorCode::RotationInProgress, "{step}");
        }
        drop(svc);
        e.restart();
        // The restarted engine resumes from the persisted step (the first tick runs at start).
        let r = e.service.tick().await.unwrap();
        let expected = usize::from(step != "finish");
        assert_eq!(r.rotated_secrets, expected, "{step}");
        let cur = e.current("crash");
        assert_eq!(cur.version_id, "next", "{step}");
        assert_ne!(cur.secret_data, "before");
        let versions = e.service.list_secret_versions("crash").unwrap().versions;
        assert_eq!(versions.len(), 2, "{step}: one new version, made once");
        assert!(
            versions
                .iter()
                .all(|v| !v.version_stages.iter().any(|s| s == STAGE_PENDING))
        );
        let prev = e
            .service
            .get_secret_value("crash", None, Some(STAGE_PREVIOUS))
            .unwrap();
        assert_eq!(prev.secret_data, "before");
        let d = e.service.describe_secret("crash").unwrap();
        assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded), "{step}");
        // A rotate-now with the same id returns the finished rotation.
        let again = e
            .service
            .rotate_secret(
                "crash",
                api::RotateSecretRequest {
                    version_id: Some("next".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(again.version_id, "next");
    }
}

/// Starts `strongbox server --dev` on `data_dir` with extra environment; returns the
/// child and a client.
fn start_dev(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, strongbox_client::Client) {
    use std::io::{BufRead, BufReader};
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"));
    cmd.args([
        "server",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--tick-interval",
        "1",
        "--data-dir",
    ])
    .arg(data_dir)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut get = |prefix: &str| {
        let line = lines.next().expect("the dev server exited early").unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?} lacks {prefix}"))
            .to_string()
    };
    let address = get("export STRONGBOX_ADDR=");
    let token = get("export STRONGBOX_TOKEN=");
    let ca = get("export STRONGBOX_CACERT=");
    let client = strongbox_client::Client::new(strongbox_client::ClientConfig {
        address,
        token,
        ca_cert_pem: Some(std::fs::read(ca).unwrap()),
        timeout: Some(Duration::from_secs(10)),
    })
    .unwrap();
    (child, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_process_aborted_after_set_resumes_the_rotation_on_restart() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (mut child, c) = start_dev(&data, &[("STRONGBOX_FAILPOINT_ROTATION_ABORT", "set")]);
    c.create_rotation_policy(&policy("p", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    let first = c
        .create_secret(&with_policy("proc", "before", "p"))
        .await
        .unwrap();
    // The process dies (SIGABRT) right after the set step was persisted.
    let r = c.rotate_secret("proc", Some("v-next")).await;
    assert!(
        matches!(r, Err(strongbox_client::Error::Transport(_))),
        "{r:?}"
    );
    let status = child.wait().unwrap();
    assert!(!status.success());

    let (mut child, c) = start_dev(&data, &[]);
    // The first tick, at start, resumes; meanwhile ACSCurrent is always readable.
    let mut done = false;
    for _ in 0..100 {
        let cur = c.get_secret_value("proc", None, None).await.unwrap();
        if cur.version_id == "v-next" {
            done = true;
            break;
        }
        assert_eq!(cur.version_id, first.version_id);
        assert_eq!(cur.secret_data, "before");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the rotation did not resume");
    let d = c.describe_secret("proc").await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    let versions = c.list_secret_versions("proc").await.unwrap().versions;
    assert_eq!(versions.len(), 2);
    assert!(
        versions
            .iter()
            .all(|v| !v.version_stages.iter().any(|s| s == STAGE_PENDING))
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The tick acts only on the schedule entry a secret's record names. An entry left behind
/// (the secret rotated on request, or its policy was disabled, after the tick read its
/// list of due entries) is dropped, not rotated again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_schedule_entry_does_not_rotate_the_secret_again() {
    use strongbox_server::clock::Clock as _;
    let e = Engine::start(None);
    let svc = e.service.clone();
    svc.create_rotation_policy(policy("p", "30d", RotationStrategy::Random, &[]), &root())
        .await
        .unwrap();
    svc.create_secret(with_policy("s", "v", "p"), &root())
        .await
        .unwrap();
    svc.rotate_secret("s", api::RotateSecretRequest { version_id: None })
        .await
        .unwrap();
    let versions = || svc.list_secret_versions("s").unwrap().versions.len();
    assert_eq!(versions(), 2);
    let stale = |svc: Service, due: i64| async move {
        let mut key = u64::try_from(due).unwrap().to_be_bytes().to_vec();
        key.extend_from_slice(b"secret/s");
        svc.store()
            .write(move |t| {
                t.put(Table::RotationSchedule, &key, Vec::new());
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap();
    };
    stale(svc.clone(), e.clock.now()).await;
    let r = svc.tick().await.unwrap();
    assert_eq!((r.rotated_secrets, r.failed_rotations), (0, 0));
    assert_eq!(versions(), 2, "not rotated again");
    // The same with the policy disabled since: nothing rotates.
    svc.update_rotation_policy(
        "p",
        api::UpdateRotationPolicyRequest {
            enabled: Some(false),
            ..Default::default()
        },
        &root(),
    )
    .await
    .unwrap();
    e.clock.advance(31 * 86_400);
    stale(svc.clone(), e.clock.now()).await;
    let r = svc.tick().await.unwrap();
    assert_eq!((r.rotated_secrets, r.failed_rotations), (0, 0));
    assert_eq!(versions(), 2, "not rotated under a disabled policy");
}

/// The engine's record of a rotation commits with its finish: while the trail cannot be
/// written, the finish is not made (ACSCurrent stays, the rotation waits at *finish*
/// with its failure kept), and once it can, resuming finishes it with exactly one
/// record of success.
#[tokio::test]
async fn a_rotation_finishes_only_together_with_its_audit_record() {
    let e = Engine::start(None);
    let svc = e.service.clone();
    svc.create_rotation_policy(policy("p", "30d", RotationStrategy::Random, &[]), &root())
        .await
        .unwrap();
    let first = svc
        .create_secret(with_policy("audited", "before", "p"), &root())
        .await
        .unwrap();
    let engine_records = |outcome: AuditOutcome| {
        svc.list_audit(&strongbox_server::service::AuditQuery {
            principal: Some("rotation".into()),
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .records
        .iter()
        .filter(|r| r.resource == "secret/audited" && r.outcome == outcome)
        .count()
    };
    svc.set_audit_failpoint(true);
    let refused = svc
        .rotate_secret(
            "audited",
            api::RotateSecretRequest {
                version_id: Some("next".into()),
            },
        )
        .await
        .unwrap_err();
    svc.set_audit_failpoint(false);
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused:?}");
    let cur = e.current("audited");
    assert_eq!(
        cur.version_id, first.version_id,
        "no finish without its record"
    );
    let d = svc.describe_secret("audited").unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Failed));
    let pending = svc
        .get_secret_value("audited", None, Some(STAGE_PENDING))
        .unwrap();
    assert_eq!(
        pending.version_id, "next",
        "the rotation waits to be resumed"
    );
    assert_eq!(engine_records(AuditOutcome::Succeeded), 0);
    // Resumed with the trail writable: finished, and recorded once.
    let done = svc
        .rotate_secret(
            "audited",
            api::RotateSecretRequest {
                version_id: Some("next".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.version_id, "next");
    assert_eq!(e.current("audited").version_id, "next");
    assert_eq!(engine_records(AuditOutcome::Succeeded), 1);
    assert!(svc.verify_audit().unwrap().intact);
}

/// A secret `name` with the value `before` under a new `random` policy `p` (30 days).
async fn random_rotation_secret(
    svc: &strongbox_server::service::Service,
    name: &str,
) -> api::Secret {
    svc.create_rotation_policy(policy("p", "30d", RotationStrategy::Random, &[]), &root())
        .await
        .unwrap();
    svc.create_secret(with_policy(name, "before", "p"), &root())
        .await
        .unwrap()
}

/// A rotation step that panics (a database driver meeting an answer it did not
/// expect) fails the rotation as any failure does: recorded, with its error on the
/// secret and the engine's audit record, ACSCurrent unchanged, and not tried again at
/// every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_panics_is_a_recorded_failure() {
    let e = Engine::start(None);
    let svc = e.service.clone();
    let first = random_rotation_secret(&svc, "panics").await;
    svc.set_rotation_panic(Some("create"));
    let failed = svc
        .rotate_secret(
            "panics",
            api::RotateSecretRequest {
                version_id: Some("next".into()),
            },
        )
        .await
        .unwrap_err();
    svc.set_rotation_panic(None);
    assert_eq!(failed.code, ErrorCode::RotationFailed, "{failed:?}");
    assert_eq!(e.current("panics").version_id, first.version_id);
    let d = svc.describe_secret("panics").unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Failed), "{d:?}");
    assert!(
        d.last_rotation_error
            .as_deref()
            .is_some_and(|m| m.contains("internal error")),
        "{d:?}"
    );
    let engine_failures = svc
        .list_audit(&strongbox_server::service::AuditQuery {
            principal: Some("rotation".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .records
        .into_iter()
        .filter(|r| r.outcome == AuditOutcome::Failed)
        .count();
    assert_eq!(engine_failures, 1);
    assert_eq!(
        svc.tick().await.unwrap().rotated_secrets,
        0,
        "not at once again"
    );
}

/// A rotation begun under a policy that is then disabled (a compromised webhook
/// switched off, say) is not resumed by the scheduler, also not after a restart; a
/// request resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_policy_resumes_nothing() {
    let mut e = Engine::start(None);
    let svc = e.service.clone();
    let first = random_rotation_secret(&svc, "paused").await;
    svc.set_rotation_halt(Some("create"));
    let next = api::RotateSecretRequest {
        version_id: Some("next".into()),
    };
    svc.rotate_secret("paused", next.clone()).await.unwrap_err();
    svc.set_rotation_halt(None);
    svc.update_rotation_policy(
        "p",
        api::UpdateRotationPolicyRequest {
            enabled: Some(false),
            ..Default::default()
        },
        &root(),
    )
    .await
    .unwrap();
    drop(svc);
    e.restart();
    assert_eq!(e.service.tick().await.unwrap().rotated_secrets, 0);
    let cur = e.current("paused");
    assert_eq!(cur.version_id, first.version_id, "nothing resumed");
    let d = e.service.describe_secret("paused").unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::InProgress));
    let done = e.service.rotate_secret("paused", next).await.unwrap();
    assert_eq!(done.version_id, "next");
    assert_eq!(e.current("paused").version_id, "next");
}

/// While a rotation is unfinished (here stopped after *set*), what it depends on stays:
/// a value put as ACSCurrent, ACSCurrent moved by hand and a new extended_config are
/// refused (the finish would replace the value, the steps would go elsewhere); other
/// labels and other fields still change. Once the rotation ends, all of it is allowed.
#[tokio::test]
async fn an_unfinished_rotation_keeps_acscurrent_and_its_target() {
    let e = Engine::start(None);
    let svc = e.service.clone();
    let first = random_rotation_secret(&svc, "held").await;
    svc.set_rotation_halt(Some("set"));
    let next = api::RotateSecretRequest {
        version_id: Some("next".into()),
    };
    svc.rotate_secret("held", next.clone()).await.unwrap_err();
    svc.set_rotation_halt(None);
    let by_hand = || api::PutSecretValueRequest {
        secret_data: "by hand".into(),
        version_id: Some("by-hand".into()),
        ..Default::default()
    };
    let refused = svc
        .put_secret_value("held", by_hand(), &root())
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::RotationInProgress, "{refused:?}");
    assert!(
        refused.message.contains("ACSCurrent cannot change"),
        "{refused:?}"
    );
    let mut labelled = by_hand();
    labelled.version_stages = Some(vec!["Staged".into()]);
    svc.put_secret_value("held", labelled, &root())
        .await
        .unwrap();
    let moved = svc
        .update_secret_stage(
            "held",
            api::UpdateSecretStageRequest {
                version_stage: STAGE_CURRENT.into(),
                move_to_version: Some("by-hand".into()),
                remove_from_version: Some(first.version_id.clone()),
            },
            &root(),
        )
        .await
        .unwrap_err();
    assert_eq!(moved.code, ErrorCode::RotationInProgress);
    let mut config = serde_json::Map::new();
    config.insert("Elsewhere".into(), serde_json::json!(true));
    let retarget = svc
        .update_secret(
            "held",
            api::UpdateSecretRequest {
                extended_config: Some(config.clone()),
                ..Default::default()
            },
            &root(),
        )
        .await
        .unwrap_err();
    assert_eq!(retarget.code, ErrorCode::RotationInProgress);
    svc.update_secret(
        "held",
        api::UpdateSecretRequest {
            description: Some("still editable".into()),
            ..Default::default()
        },
        &root(),
    )
    .await
    .unwrap();
    assert_eq!(e.current("held").version_id, first.version_id);
    // Resumed to its end: the rotation's version is current, and the rest may change.
    assert_eq!(
        svc.rotate_secret("held", next).await.unwrap().version_id,
        "next"
    );
    svc.update_secret(
        "held",
        api::UpdateSecretRequest {
            extended_config: Some(config),
            ..Default::default()
        },
        &root(),
    )
    .await
    .unwrap();
    svc.update_secret_stage(
        "held",
        api::UpdateSecretStageRequest {
            version_stage: STAGE_CURRENT.into(),
            move_to_version: Some("by-hand".into()),
            remove_from_version: Some("next".into()),
        },
        &root(),
    )
    .await
    .unwrap();
    assert_eq!(e.current("held").secret_data, "by hand");
}

/// A secret deleted (with a recovery window) while its rotation is unfinished is not
/// rotated, nor indexed for it, while it waits to be purged; restored, its rotation
/// resumes.
#[tokio::test]
async fn a_secret_pending_deletion_is_not_rotated_until_restored() {
    let e = Engine::start(None);
    let svc = e.service.clone();
    svc.create_rotation_policy(policy("p", "30d", RotationStrategy::Random, &[]), &root())
        .await
        .unwrap();
    svc.create_secret(with_policy("doomed", "before", "p"), &root())
        .await
        .unwrap();
    svc.set_rotation_halt(Some("set"));
    let next = api::RotateSecretRequest {
        version_id: Some("next".into()),
    };
    svc.rotate_secret("doomed", next).await.unwrap_err();
    svc.set_rotation_halt(None);
    svc.delete_secret("doomed", Some(7), false, &root())
        .await
        .unwrap();
    let indexed = |b: &dyn Backend| {
        b.scan(Table::RotationSchedule, b"", None, 1000)
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with(b"secret/doomed"))
            .count()
    };
    assert_eq!(indexed(e.backend.as_ref()), 0);
    e.clock.advance(3600);
    let r = svc.tick().await.unwrap();
    assert_eq!((r.started_rotations, r.failed_rotations), (0, 0), "{r:?}");
    assert_eq!(indexed(e.backend.as_ref()), 0);
    svc.restore_secret("doomed").await.unwrap();
    let r = svc.tick().await.unwrap();
    assert_eq!(r.rotated_secrets, 1, "{r:?}");
    assert_eq!(e.current("doomed").version_id, "next");
}
