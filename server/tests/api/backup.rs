//! `strongbox backup` (through the API) and `strongbox restore` (offline, with the root
//! key), as an operator would run them.

use std::process::{Command, Output};

use strongbox_client::ErrorCode;
use strongbox_schemas as api;
use strongbox_server::barrier::RootKey;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, ServiceConfig};

use crate::common::*;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn restore_cmd(
    from: &std::path::Path,
    data_dir: &std::path::Path,
    key: &std::path::Path,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strongbox"));
    c.arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--root-key-file")
        .arg(key)
        .env_remove("STRONGBOX_ROOT_KEY")
        .env_remove("RUST_BACKTRACE");
    c
}

/// `strongbox backup --out FILE` with the root token; it must succeed.
async fn backup_to(s: &TestServer, file: &std::path::Path) -> Output {
    let mut cmd = s.cli(&s.token);
    cmd.arg("backup").arg("--out").arg(file);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// Restores `file` into `DIR/restored` with the server's root key, and opens it as the
/// server opens a data dir.
async fn restore_and_open(
    s: &TestServer,
    file: &std::path::Path,
    dir: &std::path::Path,
) -> server::Unsealed {
    let restored = dir.join("restored");
    let out = run(restore_cmd(file, &restored, &s.root_key_file())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let root = server::load_root_key(Some(&s.root_key_file()), None).unwrap();
    server::open(&restored, &root, ServiceConfig::default()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backup taken while the server runs restores, with the same root key, into a data
/// dir that holds exactly what the server held then: values (still sealed in the file),
/// keys, principals and an intact audit trail. Another root key, a changed byte, a cut-off
/// file and a data dir that holds a database are refused, with nothing written; a
/// principal without `sys:Backup` gets none.
#[tokio::test]
async fn a_backup_restores_with_its_root_key_and_nothing_else() {
    let s = TestServer::start().await;
    let c = &s.client;
    let marker = format!("marker-{:032x}", rand::random::<u128>());
    c.create_secret(&text_secret("app/db", &marker))
        .await
        .unwrap();
    let key = c.create_key(&Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strongbox.backup");

    let out = backup_to(&s, &file).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote a backup of"));
    let bytes = std::fs::read(&file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the value is sealed in the backup"
    );
    // Written after the backup: not in the restore.
    c.put_secret_value(
        "app/db",
        &api::PutSecretValueRequest {
            secret_data: "after-the-backup".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Another root key: refused, and no database is made.
    let other_key = dir.path().join("other-key");
    std::fs::write(
        &other_key,
        format!("{}\n", RootKey::random().to_base64().as_str()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let wrong_dir = dir.path().join("wrong");
    let out = run(restore_cmd(&file, &wrong_dir, &other_key)).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("MAC does not match"),
        "{}",
        stderr(&out)
    );
    assert!(!wrong_dir.exists(), "nothing written");

    // One byte changed, or the end cut off: refused.
    let mut changed = bytes.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 1;
    let changed_file = dir.path().join("changed.backup");
    std::fs::write(&changed_file, &changed).unwrap();
    let out = run(restore_cmd(&changed_file, &wrong_dir, &s.root_key_file())).await;
    assert!(!out.status.success());
    assert!(!wrong_dir.exists(), "nothing written");
    let cut_file = dir.path().join("cut.backup");
    std::fs::write(&cut_file, &bytes[..bytes.len() - 40]).unwrap();
    let out = run(restore_cmd(&cut_file, &wrong_dir, &s.root_key_file())).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(!wrong_dir.exists(), "nothing written");

    // The right key: restored, and the restored data dir opens as the server opens it.
    let restored = dir.path().join("restored");
    let out = run(restore_cmd(&file, &restored, &s.root_key_file())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(restore_cmd(&file, &restored, &s.root_key_file())).await;
    assert!(
        !out.status.success(),
        "a data dir with a database is not restored over"
    );
    assert!(stderr(&out).contains("already holds"), "{}", stderr(&out));

    let root = server::load_root_key(Some(&s.root_key_file()), None).unwrap();
    let u = server::open(&restored, &root, ServiceConfig::default()).unwrap();
    let svc = &u.service;
    assert_eq!(
        svc.get_secret_value("app/db", None, None)
            .unwrap()
            .secret_data,
        marker
    );
    assert_eq!(
        svc.list_secret_versions("app/db").unwrap().versions.len(),
        1
    );
    assert_eq!(
        svc.describe_key(
            &key.key_id,
            &Actor::Trusted(Principal::Named("root".into()))
        )
        .unwrap()
        .key_id,
        key.key_id
    );
    let report = svc.verify_audit().unwrap();
    assert!(report.intact, "{report:?}");
    // The trail says when it came back, and who could: the holder of the root key.
    let restores = svc
        .list_audit(&strongbox_server::service::AuditQuery {
            action: Some("sys:Restore".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .records;
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert_eq!(restores[0].principal, server::ROOT_KEY_HOLDER);
    assert_eq!(restores[0].outcome, api::AuditOutcome::Succeeded);

    // Only with sys:Backup.
    let reader = s
        .principal_with(
            "no-backup",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:*", "audit:*"], "Resource": ["*"]}]}),
        )
        .await;
    let mut sink = Vec::new();
    assert_code(
        reader.backup(&mut sink).await,
        ErrorCode::Forbidden,
        "sys:Backup",
    );
    assert!(sink.is_empty());
}

/// A pruned store (format 4, a base) backs up and restores: the restored trail verifies
/// from its base. And `audit:*` does not grant pruning (`sys:PruneAudit`).
#[tokio::test]
async fn a_pruned_store_backs_up_and_restores() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("app/old", "v")).await.unwrap();
    s.clock.advance(31 * 86_400);
    let prune = api::PruneAuditRequest {
        older_than: api::Interval::parse("30d").unwrap(),
    };
    let auditor = s
        .principal_with(
            "auditor",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["audit:*"], "Resource": ["*"]}]}),
        )
        .await;
    assert_code(
        auditor.prune_audit(&prune).await,
        ErrorCode::Forbidden,
        "sys:PruneAudit",
    );
    let r = c.prune_audit(&prune).await.unwrap();
    assert!(r.pruned >= 1, "{r:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strongbox.backup");
    backup_to(&s, &file).await;
    let u = restore_and_open(&s, &file, dir.path()).await;
    let report = u.service.verify_audit().unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(report.pruned, r.first_seq - 1, "{report:?}");
    assert_eq!(
        server::format_version(u.service.store())
            .unwrap()
            .as_deref(),
        Some("4")
    );
}

/// A backup is one instant of the database while writes go on: restored, every secret
/// it holds opens (its record and its sealed versions agree) and the audit trail's head
/// matches its records, although writers changed both throughout the backup.
#[tokio::test]
async fn a_backup_taken_under_writes_is_one_instant() {
    let s = TestServer::start().await;
    let big = "x".repeat(2048);
    for i in 0..200 {
        s.client
            .create_secret(&text_secret(&format!("bulk/{i:03}"), &big))
            .await
            .unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = s.client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.create_secret(&text_secret(&format!("during/{w}-{n}"), "v"))
                    .await
                    .unwrap();
                c.put_secret_value(
                    &format!("bulk/{:03}", n % 200),
                    &api::PutSecretValueRequest {
                        secret_data: format!("{w}-{n}"),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("under-writes.backup");
    let mut cmd = s.cli(&s.token);
    cmd.arg("backup").arg("--out").arg(&file);
    let out = run(cmd).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(written > 0, "the writers ran");

    let u = restore_and_open(&s, &file, dir.path()).await;
    let report = u.service.verify_audit().unwrap();
    assert!(report.intact, "{report:?}");
    // Every secret of the restored database opens, every version of it.
    let mut q = strongbox_server::service::ListSecretsQuery {
        limit: 100,
        ..Default::default()
    };
    let visible = strongbox_server::service::ListVisibility {
        secret: &|_| true,
        alias: &|_| true,
    };
    let mut checked = 0;
    loop {
        let page = u.service.list_secrets(&q, &visible).unwrap();
        for sec in &page.secrets {
            for v in u.service.list_secret_versions(&sec.name).unwrap().versions {
                u.service
                    .get_secret_value(&sec.name, Some(&v.version_id), None)
                    .unwrap();
                checked += 1;
            }
        }
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    assert!(checked >= 200, "{checked}");
}

/// One backup at a time: each holds a snapshot open while it streams.
#[tokio::test]
async fn backups_are_taken_one_at_a_time() {
    let s = TestServer::start().await;
    let claim = s.service.claim_backup().unwrap();
    let mut sink = Vec::new();
    assert_code(
        s.client.backup(&mut sink).await,
        ErrorCode::InvalidState,
        "a backup is being taken",
    );
    drop(claim);
    assert!(s.client.backup(&mut sink).await.unwrap() > 0);
    assert!(s.service.claim_backup().is_some(), "released when done");
}

/// `strongbox restore --revoke-tokens` revokes every principal's token and replaces the
/// root token, printed once: the backup holds the tokens of its time, also those revoked
/// since, which a plain restore brings back. The revocation is in the restored trail.
#[tokio::test]
async fn a_restore_can_revoke_every_token() {
    let s = TestServer::start().await;
    let app_token = s
        .principal_token(
            "app",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:ListKeys"], "Resource": ["*"]}]}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strongbox.backup");
    backup_to(&s, &file).await;

    // A plain restore: the tokens of the backup's time work, and it says so.
    let out = run(restore_cmd(
        &file,
        &dir.path().join("restored"),
        &s.root_key_file(),
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("also any revoked since") && stdout.contains("--revoke-tokens"),
        "{stdout}"
    );
    let root = server::load_root_key(Some(&s.root_key_file()), None).unwrap();
    let plain = server::open(
        &dir.path().join("restored"),
        &root,
        ServiceConfig::default(),
    )
    .unwrap();
    assert!(plain.service.authenticate(&app_token).is_ok());
    assert!(plain.service.authenticate(&s.token).is_ok());
    plain.service.store().close().await.unwrap();

    // Killed in the last instant before the database takes its name (its restore
    // recorded, its tokens revoked): no database is left where the server would serve
    // the backup's tokens, and the restore runs again.
    let revoked_dir = dir.path().join("revoked");
    let mut cmd = restore_cmd(&file, &revoked_dir, &s.root_key_file());
    cmd.arg("--revoke-tokens")
        .env("STRONGBOX_FAILPOINT_RESTORE_ABORT", "1");
    let out = run(cmd).await;
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("failpoint"), "{}", stderr(&out));
    assert!(!server::db_path(&revoked_dir).exists());
    let mut cmd = restore_cmd(&file, &revoked_dir, &s.root_key_file());
    cmd.arg("--revoke-tokens");
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("Revoked 2 tokens"), "{stdout}");
    let new_root = stdout.lines().last().unwrap().trim().to_string();
    assert!(new_root.starts_with("sbx_"), "{stdout}");
    assert!(!stderr(&out).contains(&new_root), "the token is shown once");
    let root = server::load_root_key(Some(&s.root_key_file()), None).unwrap();
    let u = server::open(&revoked_dir, &root, ServiceConfig::default()).unwrap();
    for old in [&app_token, &s.token] {
        let refused = u.service.authenticate(old).map(drop).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unauthenticated, "{refused:?}");
    }
    assert_eq!(
        u.service.authenticate(&new_root).unwrap().principal(),
        "root"
    );
    let records = u
        .service
        .list_audit(&strongbox_server::service::AuditQuery {
            action: Some("ram:DeleteToken".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .records;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].principal.as_str(), records[0].resource.as_str()),
        ("(root-key)", "principal/*")
    );
    assert!(u.service.verify_audit().unwrap().intact);
    u.service.store().close().await.unwrap();
}
