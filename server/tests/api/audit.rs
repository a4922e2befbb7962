//! The audit trail: outcomes, tamper evidence (edit, recomputed chain, cut-off tail),
//! a failing audit write failing the request, no values or tokens in records, read
//! records sharing commits, filters and paging, and the `audit verify|tail` commands.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::{Value, json};
use strongbox_client::{AuditQuery, ErrorCode};
use strongbox_schemas::{self as api, AuditOutcome};
use strongbox_server::storage::{Backend, Mutation, Table};

use crate::common::*;

fn key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// Splits a stored record into MAC and JSON body (`0x01 ‖ MAC(32) ‖ JSON`).
fn stored(b: &dyn Backend, seq: u64) -> ([u8; 32], Value) {
    let v = b.get(Table::Audit, &key(seq)).unwrap().unwrap();
    assert_eq!(v[0], 1);
    (
        v[1..33].try_into().unwrap(),
        serde_json::from_slice(&v[33..]).unwrap(),
    )
}

fn put_stored(b: &dyn Backend, seq: u64, mac: &[u8; 32], body: &Value) {
    let mut v = vec![1u8];
    v.extend_from_slice(mac);
    v.extend(serde_json::to_vec(body).unwrap());
    b.commit(&[Mutation::Put(Table::Audit, key(seq), v)])
        .unwrap();
}

/// Some traffic of every kind: writes, reads, a refusal, a failure.
async fn traffic(s: &TestServer, name: &str) {
    let c = &s.client;
    c.create_secret(&text_secret(name, "v")).await.unwrap();
    c.get_secret_value(name, None, None).await.unwrap();
    c.describe_secret("t/missing").await.unwrap_err();
    s.client_with_token("sbx_nope")
        .list_keys(None, None)
        .await
        .unwrap_err();
    c.put_secret_value(name, &put("v2")).await.unwrap();
    c.list_secrets(&Default::default()).await.unwrap();
}

/// Runs the CLI off the async threads (the server answers it from this runtime).
async fn run(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn verify(s: &TestServer) -> api::AuditVerifyReport {
    s.client.verify_audit().await.unwrap()
}

#[tokio::test]
async fn an_edited_record_is_named_by_verify() {
    let s = TestServer::start().await;
    traffic(&s, "t/a1").await;
    let r = verify(&s).await;
    assert!(r.intact, "{r:?}");
    assert!(r.verified >= 6 && r.verified == r.count, "{r:?}");
    // An attacker with the disk (not the root key) changes who read a secret.
    let b = s.backend.as_ref();
    let original = b.get(Table::Audit, &key(3)).unwrap().unwrap();
    let (mac, mut edited) = stored(b, 3);
    edited["principal"] = json!("mallory");
    put_stored(b, 3, &mac, &edited);
    let r = verify(&s).await;
    assert!(!r.intact);
    assert_eq!(r.first_bad_seq, Some(3), "{r:?}");
    assert_eq!(r.verified, 2);
    assert!(r.problem.unwrap().contains("record 3"));
    // Through the CLI too, which exits non-zero naming the record.
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN at record 3"), "{err}");
    // Put back exactly as it was: the chain holds again.
    b.commit(&[Mutation::Put(Table::Audit, key(3), original)])
        .unwrap();
    assert!(verify(&s).await.intact);
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("intact"), "{stdout}");
    // It prints an anchor to keep elsewhere; a later verify --since it passes while the
    // trail holds what it saw, and fails (exit 1) against one claiming more records.
    let anchor = stdout
        .lines()
        .find_map(|l| l.strip_prefix("anchor: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "verify", "--since", &anchor]);
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, mac) = anchor.split_once(':').unwrap();
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "verify", "--since", &format!("1000000:{mac}")]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut off"), "{err}");
    // Not being able to ask is no verdict on the trail: exit 2, not 1.
    let mut cmd = s.cli("sbx_not-a-token");
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not verify"));
}

#[tokio::test]
async fn a_chain_recomputed_without_the_key_fails_at_the_edit() {
    use aws_lc_rs::hmac;
    let s = TestServer::start().await;
    traffic(&s, "t/a2").await;
    let b = s.backend.as_ref();
    // The attacker edits record 4 and recomputes every MAC from there, and the head,
    // with the construction from docs/design but a key of their own.
    let guess = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
    let count = s.service.audit_count().unwrap();
    let (mut prev, _) = stored(b, 3);
    for seq in 4..=count {
        let (_, mut body) = stored(b, seq);
        if seq == 4 {
            body["outcome"] = json!("Succeeded");
            body["resource"] = json!("secret/innocent");
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let mut m = b"strongbox/v1/audit-record".to_vec();
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&prev);
        m.extend_from_slice(&bytes);
        let mac: [u8; 32] = hmac::sign(&guess, &m).as_ref().try_into().unwrap();
        put_stored(b, seq, &mac, &body);
        prev = mac;
    }
    let mut h = b"strongbox/v1/audit-head".to_vec();
    h.extend_from_slice(&count.to_be_bytes());
    h.extend_from_slice(&prev);
    let mut head = count.to_be_bytes().to_vec();
    head.extend_from_slice(&prev);
    head.extend_from_slice(hmac::sign(&guess, &h).as_ref());
    b.commit(&[Mutation::Put(Table::Meta, b"audit_head".to_vec(), head)])
        .unwrap();
    let r = verify(&s).await;
    assert_eq!(
        (r.intact, r.first_bad_seq, r.verified),
        (false, Some(4), 3),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_cut_off_tail_is_detected() {
    let s = TestServer::start().await;
    traffic(&s, "t/a3").await;
    let b = s.backend.as_ref();
    let count = s.service.audit_count().unwrap();
    b.commit(&[Mutation::Delete(Table::Audit, key(count))])
        .unwrap();
    let r = verify(&s).await;
    assert_eq!(
        (r.intact, r.first_bad_seq, r.verified, r.count),
        (false, Some(count), count - 1, count),
        "{r:?}"
    );
    assert!(r.problem.unwrap().contains("cut off"));
    // Later records do not paper over the hole.
    traffic(&s, "t/a4").await;
    let r = verify(&s).await;
    assert_eq!(r.first_bad_seq, Some(count), "{r:?}");

    // Cutting and rewriting the head to match, without the key, is caught at the head.
    let s = TestServer::start().await;
    traffic(&s, "t/a5").await;
    let b = s.backend.as_ref();
    let count = s.service.audit_count().unwrap();
    let (mac_before, _) = stored(b, count - 1);
    let mut head = (count - 1).to_be_bytes().to_vec();
    head.extend_from_slice(&mac_before);
    head.extend_from_slice(&[0u8; 32]);
    b.commit(&[
        Mutation::Delete(Table::Audit, key(count)),
        Mutation::Put(Table::Meta, b"audit_head".to_vec(), head),
    ])
    .unwrap();
    let r = verify(&s).await;
    assert!(!r.intact, "{r:?}");
    assert!(r.problem.unwrap().contains("head"));

    // A forged head (its MAC fails) is named as such, whatever its count says: lowered,
    // a genuine record is not blamed; raised, no record that never existed is named.
    for delta in [-2i64, 5] {
        let s = TestServer::start().await;
        traffic(&s, "t/a6").await;
        let b = s.backend.as_ref();
        let count = s.service.audit_count().unwrap();
        let (last_mac, _) = stored(b, count);
        let forged = count.checked_add_signed(delta).unwrap();
        let mut head = forged.to_be_bytes().to_vec();
        head.extend_from_slice(&last_mac);
        head.extend_from_slice(&[7u8; 32]);
        b.commit(&[Mutation::Put(Table::Meta, b"audit_head".to_vec(), head)])
            .unwrap();
        let r = verify(&s).await;
        assert!(!r.intact, "{r:?}");
        assert_eq!(r.first_bad_seq, None, "{r:?}");
        let problem = r.problem.unwrap();
        assert!(
            problem.contains("the head does not verify: it was forged"),
            "{problem}"
        );
    }

    // A head overwritten with bytes that do not decode is a verdict too, not an error
    // (the server then refuses requests, which it can no longer record).
    let s = TestServer::start().await;
    traffic(&s, "t/a7").await;
    s.backend
        .commit(&[Mutation::Put(
            Table::Meta,
            b"audit_head".to_vec(),
            b"junk".to_vec(),
        )])
        .unwrap();
    let r = s.service.verify_audit().unwrap();
    assert!(!r.intact, "{r:?}");
    assert!(r.problem.unwrap().contains("malformed"));
}

/// A new store in memory, and a way to unseal it again after changing it "on disk".
fn stopped_store() -> (
    Arc<dyn Backend>,
    impl Fn() -> anyhow::Result<strongbox_server::server::Unsealed>,
) {
    use strongbox_server::barrier::RootKey;
    use strongbox_server::clock::ManualClock;
    use strongbox_server::server;
    use strongbox_server::service::ServiceConfig;
    use strongbox_server::storage::MemoryBackend;
    let key = RootKey::random();
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    server::initialize(b.as_ref(), &key).unwrap();
    let backend = b.clone();
    let open = move || {
        server::unseal(
            backend.clone(),
            &key,
            Arc::new(ManualClock::new(T0)),
            ServiceConfig::default(),
        )
    };
    (b, open)
}

fn slot() -> strongbox_server::service::AuditSlot {
    use strongbox_server::service::{AuditEntry, AuditSlot};
    AuditSlot::new(AuditEntry::default())
}

#[tokio::test]
async fn a_tampered_head_refuses_to_unseal() {
    let (b, open) = stopped_store();
    let svc = open().unwrap().service;
    for _ in 0..3 {
        svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
            .await
            .unwrap();
    }
    assert!(svc.verify_audit().unwrap().intact);
    drop(svc);
    assert!(open().is_ok(), "an intact trail unseals");
    // The last record's body edited, its MAC kept: refused too, not built upon.
    let original = b.get(Table::Audit, &key_of(3)).unwrap().unwrap();
    let mut edited = original.clone();
    edited.push(b' ');
    b.commit(&[Mutation::Put(Table::Audit, key_of(3), edited)])
        .unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("audit record 3"), "{e}");
    b.commit(&[Mutation::Put(Table::Audit, key_of(3), original)])
        .unwrap();
    assert!(open().is_ok(), "restored, it unseals again");
    // A record planted past the head, with a gap or a key of another length: refused,
    // so that the server's own next records do not overwrite the evidence.
    for planted in [key_of(5), key_of(u64::MAX), vec![0xff; 9]] {
        b.commit(&[Mutation::Put(Table::Audit, planted.clone(), b"x".to_vec())])
            .unwrap();
        let e = open().err().unwrap().to_string();
        assert!(e.contains("audit records follow the head (3)"), "{e}");
        b.commit(&[Mutation::Delete(Table::Audit, planted)])
            .unwrap();
    }
    assert!(open().is_ok());
    // A format this release does not know is refused before anything is written.
    b.commit(&[Mutation::Put(
        Table::Meta,
        b"format_version".to_vec(),
        b"5".to_vec(),
    )])
    .unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("format \"5\""), "{e}");
    b.commit(&[Mutation::Put(
        Table::Meta,
        b"format_version".to_vec(),
        b"2".to_vec(),
    )])
    .unwrap();
    b.commit(&[Mutation::Delete(Table::Audit, key_of(3))])
        .unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("audit"), "{e}");
    b.commit(&[Mutation::Delete(Table::Meta, b"audit_head".to_vec())])
        .unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("no head"), "{e}");
}

/// A trail cut back to an older head of its own (each head was genuine once, and old ones
/// lie in the commit journal, in backups and in free pages) verifies and unseals: the MACs
/// prove what records say, not that no later record was there. The anchor of an earlier
/// verify, kept outside the server, shows the cut, also once the server has written past
/// the anchor's count again; it is checked at the base too, and refused when malformed.
#[tokio::test]
async fn an_anchor_kept_elsewhere_shows_a_tail_cut_back_to_an_older_head() {
    let (b, open) = stopped_store();
    // Records of requests with ids `{tag}{i}`.
    let append = |svc: strongbox_server::service::Service, n: usize, tag: &'static str| async move {
        use strongbox_server::service::{AuditEntry, AuditSlot};
        for i in 0..n {
            let entry = AuditEntry {
                request_id: format!("{tag}{i}"),
                ..Default::default()
            };
            svc.finish_audit(&AuditSlot::new(entry), AuditOutcome::Succeeded, None)
                .await
                .unwrap();
        }
    };
    let svc = open().unwrap().service;
    append(svc.clone(), 2, "a").await;
    let head_at_2 = b.get(Table::Meta, b"audit_head").unwrap().unwrap();
    append(svc.clone(), 3, "b").await;
    let v = svc.verify_audit().unwrap();
    assert!(v.intact && v.count == 5, "{v:?}");
    let anchor = v.anchor.unwrap();
    assert!(anchor.starts_with("5:"), "{anchor}");
    let v = svc.verify_audit_since(Some(&anchor)).unwrap();
    assert!(v.intact, "the trail holds what the anchor saw: {v:?}");
    drop(svc);

    // Cut back to record 2, with the head of that time.
    b.commit(&[
        Mutation::Delete(Table::Audit, key(3)),
        Mutation::Delete(Table::Audit, key(4)),
        Mutation::Delete(Table::Audit, key(5)),
        Mutation::Put(Table::Meta, b"audit_head".to_vec(), head_at_2),
    ])
    .unwrap();
    let svc = open().unwrap().service;
    let v = svc.verify_audit().unwrap();
    assert!(v.intact && v.count == 2, "without the anchor: {v:?}");
    let v = svc.verify_audit_since(Some(&anchor)).unwrap();
    assert_eq!((v.intact, v.first_bad_seq), (false, Some(3)), "{v:?}");
    assert!(v.problem.unwrap().contains("cut off"));

    // The server writes records 3 to 6 again: the count is back past the anchor's, but
    // record 5 is not the one it saw.
    append(svc.clone(), 4, "c").await;
    let v = svc.verify_audit_since(Some(&anchor)).unwrap();
    assert_eq!((v.intact, v.first_bad_seq), (false, Some(5)), "{v:?}");
    assert!(
        v.problem
            .unwrap()
            .contains("not the one an earlier verify saw")
    );
    assert!(svc.verify_audit().unwrap().intact);

    // An anchor at the base a prune left is checked against the base.
    let at_6 = svc.verify_audit().unwrap().anchor.unwrap();
    svc.prune_audit(&older_than("30d")).await.unwrap();
    let v = svc.verify_audit_since(Some(&at_6)).unwrap();
    assert!(v.intact && v.pruned == 6, "{v:?}");
    let v = svc.verify_audit_since(Some(&anchor)).unwrap();
    assert!(v.intact, "pruned past it, only its count is checked: {v:?}");
    let mut other = at_6.clone();
    let last = other.pop().unwrap();
    other.push(if last == '0' { '1' } else { '0' });
    let v = svc.verify_audit_since(Some(&other)).unwrap();
    assert_eq!((v.intact, v.first_bad_seq), (false, Some(6)), "{v:?}");

    for bad in ["", "5", "x:00", "5:zz", "5:0011"] {
        let e = svc.verify_audit_since(Some(bad)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameter, "{bad}");
    }
}

/// A new store has an (empty) trail with a head; deleting every record and the head — a
/// trail wiped while the server was down — is refused at unseal and reported by verify,
/// not taken for a new store.
#[tokio::test]
async fn a_deleted_trail_is_not_taken_for_a_new_one() {
    let (b, open) = stopped_store();
    // A fresh store: intact, no records.
    let svc = open().unwrap().service;
    let r = svc.verify_audit().unwrap();
    assert!(r.intact && r.count == 0, "{r:?}");
    for _ in 0..2 {
        svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
            .await
            .unwrap();
    }
    // Wiped while running: verify says so.
    b.commit(&[
        Mutation::Delete(Table::Audit, key_of(1)),
        Mutation::Delete(Table::Audit, key_of(2)),
        Mutation::Delete(Table::Meta, b"audit_head".to_vec()),
    ])
    .unwrap();
    let r = svc.verify_audit().unwrap();
    assert!(!r.intact, "{r:?}");
    assert!(r.problem.unwrap_or_default().contains("head is missing"));
    drop(svc);
    // And the next unseal refuses it.
    let e = open().err().unwrap().to_string();
    assert!(e.contains("no head"), "{e}");
}

fn key_of(seq: u64) -> Vec<u8> {
    key(seq)
}

#[tokio::test]
async fn a_request_that_cannot_be_audited_fails_and_changes_nothing() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("kept", "v1")).await.unwrap();
    let nobody = s
        .principal_token(
            "nobody",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}),
        )
        .await;
    let before = s.service.audit_count().unwrap();
    s.service.set_audit_failpoint(true);
    assert_code(
        c.create_secret(&text_secret("never", "x")).await,
        ErrorCode::Unavailable,
        "audit",
    );
    assert_code(
        c.put_secret_value("kept", &put("v2")).await,
        ErrorCode::Unavailable,
        "nothing was changed",
    );
    // A refused change, a denied request and a read fail too: a read's value is not
    // handed out.
    assert_code(
        c.create_secret(&text_secret("kept", "dup")).await,
        ErrorCode::Unavailable,
        "audit",
    );
    let r = call(&s, Some(&nobody), "GET", &["v1", "secrets", "kept"], None).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    let r = call(
        &s,
        Some(&s.token),
        "GET",
        &["v1", "secrets", "kept", "value"],
        None,
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.body.get("secret_data").is_none());
    assert_eq!(r.body["code"], "Unavailable");
    s.service.set_audit_failpoint(false);
    assert_eq!(
        s.service.audit_count().unwrap(),
        before,
        "nothing was recorded"
    );
    assert_code(
        c.describe_secret("never").await,
        ErrorCode::SecretNotFound,
        "never",
    );
    let v = c.get_secret_value("kept", None, None).await.unwrap();
    assert_eq!(v.secret_data, "v1", "the put did not happen");
    assert!(verify(&s).await.intact);
}

/// A write whose audit record cannot be appended for another reason than the failpoint
/// (here a stored head that does not decode) commits nothing, and says so: not that
/// whether the change was kept is unknown.
#[tokio::test]
async fn a_write_whose_record_cannot_be_chained_says_nothing_was_changed() {
    use strongbox_server::storage::{Reader as _, Table};
    let s = TestServer::start().await;
    let keys = || {
        s.service
            .store()
            .scan(Table::Keys, b"", None, 100)
            .unwrap()
            .len()
    };
    let before = keys();
    s.service
        .store()
        .write(|t| {
            t.put(Table::Meta, b"audit_head", vec![7; 10]);
            Ok::<_, strongbox_server::storage::StorageError>(())
        })
        .await
        .unwrap();
    assert_code(
        s.client.create_key(&Default::default()).await,
        ErrorCode::Unavailable,
        "nothing was changed",
    );
    assert_eq!(keys(), before, "the key was kept");
}

/// A request whose write job panics changed nothing, and it is recorded, as failed:
/// it is not taken for a failed commit (whose outcome would be unknown).
#[tokio::test]
async fn a_request_whose_write_panics_is_recorded_as_failed_and_changes_nothing() {
    let s = TestServer::start().await;
    let c = &s.client;
    s.service.panic_next_write();
    let r = call(
        &s,
        Some(&s.token),
        "POST",
        &["v1", "secrets"],
        Some(&json!({"name": "p/never", "secret_data": "v"})),
    )
    .await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(r.body["code"], "InternalError");
    let request_id = r.body["request_id"].as_str().unwrap().to_string();
    assert_code(
        c.describe_secret("p/never").await,
        ErrorCode::SecretNotFound,
        "p/never",
    );
    let recs = c
        .list_audit(&strongbox_client::AuditQuery {
            request_id: Some(request_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].outcome, AuditOutcome::Failed);
    assert_eq!(recs[0].error_code, Some(ErrorCode::InternalError));
    assert_eq!(recs[0].action, "kms:CreateSecret");
    // The writer goes on.
    c.create_secret(&text_secret("p/later", "v")).await.unwrap();
    assert!(verify(&s).await.intact);
}

#[tokio::test]
async fn each_outcome_is_one_record() {
    let s = TestServer::start().await;
    let c = &s.client;
    let ok = call(
        &s,
        Some(&s.token),
        "POST",
        &["v1", "secrets"],
        Some(&json!({"name": "o/a", "secret_data": "v"})),
    )
    .await;
    let dup = call(
        &s,
        Some(&s.token),
        "POST",
        &["v1", "secrets"],
        Some(&json!({"name": "o/a", "secret_data": "v"})),
    )
    .await;
    let bad = call(
        &s,
        Some(&s.token),
        "POST",
        &["v1", "secrets"],
        Some(&json!({"name": "bad name", "secret_data": "v"})),
    )
    .await;
    let missing = call(
        &s,
        Some(&s.token),
        "GET",
        &["v1", "secrets", "o/none", "value"],
        None,
    )
    .await;
    let no_route = call(&s, Some(&s.token), "GET", &["v1", "nothing"], None).await;
    let expired = {
        let p = s
            .principal_token(
                "temp",
                json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
            )
            .await;
        let t = c
            .create_token(
                "temp",
                &api::CreateTokenRequest {
                    expires_at: Some(api::Timestamp::from_unix(T0 + 60)),
                    description: None,
                },
            )
            .await
            .unwrap();
        s.clock.advance(61);
        let r = call(&s, Some(&t.token), "GET", &["v1", "keys"], None).await;
        assert_eq!(r.body["message"], "the token has expired");
        // The other token of the principal never expires.
        assert_eq!(
            call(&s, Some(&p), "GET", &["v1", "keys"], None)
                .await
                .status,
            200
        );
        r
    };
    for (reply, principal, action, resource, outcome, code) in [
        (
            &ok,
            "root",
            "kms:CreateSecret",
            "secret/o/a",
            AuditOutcome::Succeeded,
            None,
        ),
        (
            &dup,
            "root",
            "kms:CreateSecret",
            "secret/o/a",
            AuditOutcome::Failed,
            Some(ErrorCode::AlreadyExists),
        ),
        (
            &bad,
            "root",
            "kms:CreateSecret",
            "secret/bad name",
            AuditOutcome::Failed,
            Some(ErrorCode::InvalidParameter),
        ),
        (
            &missing,
            "root",
            "kms:GetSecretValue",
            "secret/o/none",
            AuditOutcome::Failed,
            Some(ErrorCode::SecretNotFound),
        ),
        (
            &no_route,
            "root",
            "",
            "",
            AuditOutcome::Failed,
            Some(ErrorCode::NotFound),
        ),
        (
            &expired,
            "anonymous",
            "kms:ListKeys",
            "*",
            AuditOutcome::Denied,
            Some(ErrorCode::Unauthenticated),
        ),
    ] {
        let recs = records_of(&s, &reply.request_id).await;
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        assert_eq!(
            (
                r.principal.as_str(),
                r.action.as_str(),
                r.resource.as_str(),
                r.outcome,
                r.error_code
            ),
            (principal, action, resource, outcome, code)
        );
    }
}

#[tokio::test]
async fn no_secret_value_and_no_token_ever_reaches_the_trail() {
    let s = TestServer::start().await;
    let c = &s.client;
    let marker = format!("MARKER{}", uuid::Uuid::new_v4().simple());
    let marker2 = format!("{marker}-second");
    c.create_secret(&text_secret("scan/me", &marker))
        .await
        .unwrap();
    c.put_secret_value("scan/me", &put(&marker2)).await.unwrap();
    c.get_secret_value("scan/me", None, None).await.unwrap();
    c.put_secret_value(
        "scan/me",
        &api::PutSecretValueRequest {
            version_id: Some("fixed".into()),
            ..put(&marker)
        },
    )
    .await
    .unwrap();
    c.put_secret_value(
        "scan/me",
        &api::PutSecretValueRequest {
            version_id: Some("fixed".into()),
            ..put(&marker2)
        },
    )
    .await
    .unwrap_err();
    let mut tokens = vec![s.token.clone()];
    for i in 0..5 {
        let t = s
            .principal_token(
                &format!("scanner{i}"),
                json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/scan/*"}]}),
            )
            .await;
        let other = c
            .create_token(&format!("scanner{i}"), &Default::default())
            .await
            .unwrap();
        let cl = s.client_with_token(&t);
        cl.get_secret_value("scan/me", None, None).await.unwrap();
        cl.describe_secret("scan/me").await.unwrap_err();
        c.delete_token(&format!("scanner{i}"), &other.token_id)
            .await
            .unwrap();
        s.client_with_token(&other.token)
            .list_keys(None, None)
            .await
            .unwrap_err();
        tokens.push(t);
        tokens.push(other.token);
    }
    let mut raw = Vec::new();
    for (_, v) in s.backend.scan(Table::Audit, b"", None, usize::MAX).unwrap() {
        raw.extend_from_slice(&v);
    }
    let listed = serde_json::to_vec(
        &c.list_audit(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(listed.len() > 1000, "the trail is not empty");
    for hay in [&raw, &listed] {
        for needle in [marker.as_str(), marker2.as_str()]
            .into_iter()
            .chain(tokens.iter().map(String::as_str))
            .chain(tokens.iter().map(|t| &t[4..]))
        {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the audit trail holds {needle}"
            );
        }
    }
}

/// A read whose client goes away while the handler works is dropped with its
/// connection's task; it is recorded all the same, once, as abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_client_goes_away_is_recorded_as_abandoned() {
    use tokio::io::AsyncWriteExt as _;
    let s = TestServer::start().await;
    let count0 = s.service.audit_count().unwrap();
    let reached = s.service.hold_next_audit_list();
    let mut tls = crate::edge::tls_connect_alpn(&s, &[]).await;
    let request = format!(
        "GET /v1/audit?action=kms%3ANone HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nUser-Agent: goes-away/1\r\n\r\n",
        s.token
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), reached.notified())
        .await
        .expect("the request reached its handler");
    assert_eq!(
        s.service.audit_count().unwrap(),
        count0,
        "not recorded while it is being served"
    );
    drop(tls);

    let q = AuditQuery {
        action: Some("audit:Read".into()),
        ..Default::default()
    };
    let mut found = Vec::new();
    for _ in 0..100 {
        found = s
            .client
            .list_audit(&q)
            .await
            .unwrap()
            .records
            .into_iter()
            .filter(|r| r.user_agent == "goes-away/1")
            .collect();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        found.len(),
        1,
        "one record of the abandoned read: {found:?}"
    );
    let r = &found[0];
    assert_eq!(r.outcome, AuditOutcome::Failed);
    assert_eq!(r.error_code, Some(ErrorCode::ClientClosedRequest));
    assert_eq!(r.resource, "*");
    assert_ne!(r.principal, "anonymous");
    assert!(verify(&s).await.intact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_audit_commits() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("hot", "v"))
        .await
        .unwrap();
    let st = s.service.store().stats();
    let count0 = s.service.audit_count().unwrap();
    // Hold the writer thread busy so that every read's record queues behind it: the
    // group-commit writer then takes them all in one batch and syncs once.
    let busy = hold_writer(&s.service, std::time::Duration::from_millis(1500)).await;
    let commits0 = st.commits.load(Relaxed);
    const READS: u64 = 40;
    let mut tasks = Vec::new();
    for _ in 0..READS {
        let c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            c.get_secret_value("hot", None, None).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    busy.await.unwrap().unwrap();
    let commits = st.commits.load(Relaxed) - commits0;
    assert_eq!(
        s.service.audit_count().unwrap() - count0,
        READS,
        "one record each"
    );
    assert!(
        commits <= 3,
        "{READS} read records took {commits} commits: not batched"
    );
    assert!(s.client.verify_audit().await.unwrap().intact);
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let s = TestServer::start().await;
    let c = &s.client;
    for i in 0..5 {
        c.create_secret(&text_secret(&format!("f/a{i}"), "v"))
            .await
            .unwrap();
        s.clock.advance(10);
    }
    let app = s
        .principal_with(
            "app",
            json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/f/*"}]}),
        )
        .await;
    for i in 0..3 {
        app.get_secret_value(&format!("f/a{i}"), None, None)
            .await
            .unwrap();
    }
    let list = |q: AuditQuery| async move { c.list_audit(&q).await.unwrap() };
    let by_app = list(AuditQuery {
        principal: Some("app".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_app.records.len(), 3);
    assert!(
        by_app
            .records
            .iter()
            .all(|r| r.action == "kms:GetSecretValue")
    );
    let creates = list(AuditQuery {
        action: Some("kms:CreateSecret".into()),
        resource_prefix: Some("secret/f/".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(creates.records.len(), 5);
    let window = list(AuditQuery {
        action: Some("kms:CreateSecret".into()),
        start_time: Some(api::Timestamp::from_unix(T0 + 10)),
        end_time: Some(api::Timestamp::from_unix(T0 + 30)),
        ..Default::default()
    })
    .await;
    let names: Vec<&str> = window.records.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(names, ["secret/f/a1", "secret/f/a2"]);
    // Times with a fraction of a second (records keep whole seconds): a start half a
    // second after a record leaves it out, an end half a second after one takes it in.
    let half_past = |secs: i64| {
        api::Timestamp::from_unix(secs)
            .to_string()
            .replace('Z', ".5Z")
    };
    let r = s
        .http()
        .get(format!("{}/v1/audit", s.base()))
        .query(&[
            ("action", "kms:CreateSecret".to_string()),
            ("start_time", half_past(T0 + 10)),
            ("end_time", half_past(T0 + 30)),
        ])
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: api::ListAuditResponse = r.json().await.unwrap();
    let names: Vec<&str> = page.records.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(names, ["secret/f/a2", "secret/f/a3"]);
    // Pages of 4 walk the whole trail in order, without gaps.
    let mut q = AuditQuery {
        limit: Some(4),
        ..Default::default()
    };
    let mut seqs = Vec::new();
    loop {
        let page = list(q.clone()).await;
        assert!(page.records.len() <= 4);
        seqs.extend(page.records.iter().map(|r| r.seq));
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 12);
    assert_code(
        c.list_audit(&AuditQuery {
            page_token: Some("x".into()),
            ..Default::default()
        })
        .await,
        ErrorCode::InvalidParameter,
        "page_token",
    );
    // audit:Read is its own permission.
    assert_code(
        app.list_audit(&Default::default()).await,
        ErrorCode::Forbidden,
        "audit:Read",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tail_follows_new_records() {
    use std::io::{BufRead, BufReader};
    let s = TestServer::start().await;
    let tailer = s
        .principal_token(
            "tailer",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "audit:Read", "Resource": "*"}]}),
        )
        .await;
    s.client
        .create_secret(&text_secret("tail/a", "v"))
        .await
        .unwrap();
    let mut child = s
        .cli(&tailer)
        .args([
            "audit",
            "tail",
            "-n",
            "1",
            "--interval",
            "0.1",
            "--max",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<api::AuditRecord>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    // Wait for the tail's first poll (its own audit:Read record), asking the service
    // directly so that the waiting adds no records.
    let polled = strongbox_server::service::AuditQuery {
        principal: Some("tailer".into()),
        limit: 10,
        ..Default::default()
    };
    while s.service.list_audit(&polled).unwrap().records.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for i in 0..3 {
        s.client
            .get_secret_value("tail/a", None, None)
            .await
            .unwrap();
        s.client
            .describe_secret(&format!("tail/none{i}"))
            .await
            .unwrap_err();
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let recs = lines.join().unwrap();
    assert_eq!(recs.len(), 4, "{recs:#?}");
    assert_eq!(
        recs[0].action, "kms:CreateSecret",
        "the last record before following"
    );
    assert_eq!(recs[1].action, "kms:GetSecretValue");
    assert_eq!(recs[2].action, "kms:DescribeSecret");
    assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        recs.iter().all(|r| r.action != "audit:Read"),
        "its own polls are hidden"
    );
}

/// `strongbox audit tail | head -1`: once its reader goes away, the tail ends quietly
/// with the status a shell gives a process SIGPIPE stopped (141), not with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tail_ends_quietly_when_its_reader_goes_away() {
    use std::io::{BufRead, BufReader};
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("tail/pipe", "v"))
        .await
        .unwrap();
    let mut child = s
        .cli(&s.token)
        .args(["audit", "tail", "-n", "1", "--interval", "0.1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.contains("kms:CreateSecret"), "{first}");
    // The reader is gone (dropped with its BufReader); new records are to be printed.
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut status = None;
    for _ in 0..100 {
        s.client
            .get_secret_value("tail/pipe", None, None)
            .await
            .unwrap();
        if let Some(st) = child.try_wait().unwrap() {
            status = Some(st);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the tail went on without a reader");
    };
    let errors = errors.join().unwrap();
    assert_eq!(status.code(), Some(141), "{errors}");
    assert!(!errors.contains("panicked"), "{errors}");
}

/// `audit tail` outlives a server it cannot reach for a while (a restart, a dropped
/// connection): it retries from where it was, so the records made meanwhile are printed,
/// once each. The connection goes through a proxy that the test cuts and restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tail_keeps_following_across_an_outage() {
    use std::io::{BufRead, BufReader};
    let s = TestServer::start().await;
    let relay = Relay::to(s.addr).await;
    let proxy_addr = relay.addr;
    let mut child = s
        .cli(&s.token)
        .env(
            "STRONGBOX_ADDR",
            format!("https://127.0.0.1:{}", proxy_addr.port()),
        )
        .args([
            "audit",
            "tail",
            "-n",
            "0",
            "--interval",
            "0.1",
            "--max",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<api::AuditRecord>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    // Its first poll is its own audit:Read record.
    let polls = strongbox_server::service::AuditQuery {
        action: Some("audit:Read".into()),
        limit: 1000,
        ..Default::default()
    };
    while s.service.list_audit(&polls).unwrap().records.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.client
        .create_secret(&text_secret("tail/before", "v"))
        .await
        .unwrap();
    // Cut: connections under way are dropped, new ones refused.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    relay.set(false);
    s.client
        .create_secret(&text_secret("tail/during", "v"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    relay.set(true);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let errors = errors.join().unwrap();
    assert!(status.success(), "{errors}");
    assert!(errors.contains("trying again"), "{errors}");
    let recs = lines.join().unwrap();
    let resources: Vec<&str> = recs.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(resources, ["secret/tail/before", "secret/tail/during"]);
}

fn format_of(svc: &strongbox_server::service::Service) -> Option<String> {
    strongbox_server::server::format_version(svc.store()).unwrap()
}

/// A store of format 1 (init wrote no audit head) that never audited a request is
/// upgraded at unseal: it gets the head of the empty trail and format 3. One that has
/// records but no head is still refused. A store of format 2 (its trail one record per
/// key) becomes format 3 (the trail may be in packed runs, which a release that reads
/// only formats 1 and 2 would take for a deleted trail).
#[tokio::test]
async fn a_format_1_store_that_never_audited_is_upgraded() {
    let as_format_1 = |b: &Arc<dyn Backend>| {
        b.commit(&[
            Mutation::Put(Table::Meta, b"format_version".to_vec(), b"1".to_vec()),
            Mutation::Delete(Table::Meta, b"audit_head".to_vec()),
        ])
        .unwrap();
    };
    let (b, open) = stopped_store();
    as_format_1(&b);
    let svc = open().unwrap().service;
    assert_eq!(format_of(&svc), Some("3".into()));
    let r = svc.verify_audit().unwrap();
    assert!(r.intact && r.count == 0, "{r:?}");
    svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
        .await
        .unwrap();
    drop(svc);
    assert!(open().is_ok());
    b.commit(&[Mutation::Put(
        Table::Meta,
        b"format_version".to_vec(),
        b"2".to_vec(),
    )])
    .unwrap();
    let svc = open().unwrap().service;
    assert_eq!(format_of(&svc), Some("3".into()));
    assert!(svc.verify_audit().unwrap().intact);
    drop(svc);

    // Format 1 with records but no head: refused, as a cut trail, and left as found
    // (still format 1, no head written, no root principal re-created).
    as_format_1(&b);
    // (As a store from before principals existed: a root token record to upgrade.)
    b.commit(&[
        Mutation::Delete(Table::Principals, b"root".to_vec()),
        Mutation::Put(Table::Meta, b"root_token_sha256".to_vec(), vec![7; 32]),
    ])
    .unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("no head"), "{e}");
    assert_eq!(
        b.get(Table::Meta, b"format_version").unwrap().as_deref(),
        Some(b"1".as_slice())
    );
    assert!(b.get(Table::Meta, b"audit_head").unwrap().is_none());
    assert!(b.get(Table::Principals, b"root").unwrap().is_none());
}

/// Requests without a valid token past an address's allowance are refused with 429,
/// and only the first refusal is recorded; valid tokens, other addresses and the public
/// routes are not limited.
#[tokio::test]
async fn requests_without_a_valid_token_past_an_address_limit_are_refused_and_not_recorded() {
    let s = TestServer::start_with_limits(strongbox_server::tls::ConnectionLimits {
        unauthenticated_per_second: 1,
        ..Default::default()
    })
    .await;
    let base = s.base();
    let h = s.http();
    let before = s.service.audit_count().unwrap();
    // 1 a second, in bursts of 10: 30 requests sent at once outrun it. (On a slow
    // machine a refill may answer one more now and then: nothing below needs an order.)
    let (mut statuses, mut denied, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..30 {
        let mut rb = h.get(format!("{base}/v1/secrets"));
        if i % 2 == 0 {
            rb = rb.bearer_auth("not-a-token");
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = r.json().await.unwrap();
        statuses.push(status);
        match status {
            401 => denied.push(id),
            429 => {
                assert_eq!(body["code"], "TooManyRequests", "{body}");
                assert_eq!(retry.unwrap(), "1");
                refused.push(id);
            }
            other => panic!("request {i}: {other} {body}"),
        }
        if i == 20 {
            // A valid token is never limited.
            s.client.list_secrets(&Default::default()).await.unwrap();
        }
    }
    let leading = statuses.iter().take_while(|&&st| st == 401).count();
    assert!(leading >= 10, "the burst of 10 is answered: {statuses:?}");
    assert!(refused.len() >= 2, "{statuses:?}");
    // Another address has its own allowance: its burst is answered at once, where one
    // shared with the first would give a refill a second at most.
    let ca = reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).unwrap();
    let other = reqwest::Client::builder()
        .tls_certs_only([ca])
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut other_ids = Vec::new();
    for _ in 0..10 {
        let r = other
            .get(format!("{base}/v1/secrets"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        other_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    // The public routes are not counted.
    let r = h.get(format!("{base}/v1/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Each 401 and the first 429 are recorded, and the valid request; no other 429.
    let after = s.service.audit_count().unwrap();
    assert_eq!(after - before, denied.len() as u64 + 2 + 10);
    for id in &denied {
        assert_eq!(records_of(&s, id).await.len(), 1, "{id}");
    }
    let first = records_of(&s, &refused[0]).await;
    assert_eq!(first.len(), 1, "the first refusal is recorded");
    assert_eq!(first[0].outcome, api::AuditOutcome::Denied);
    assert_eq!(first[0].error_code, Some(api::ErrorCode::TooManyRequests));
    assert_eq!(first[0].principal, "anonymous");
    for id in &refused[1..] {
        assert!(records_of(&s, id).await.is_empty(), "{id} was recorded");
    }
    let rec = records_of(&s, &other_ids[0]).await;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert!(rec[0].source.starts_with("127.0.0.2:"), "{rec:?}");
    let metrics = s.client.metrics().await.unwrap();
    let unrecorded = format!(
        "strongbox_unauthenticated_requests_unrecorded_total {}\n",
        refused.len() - 1
    );
    assert!(metrics.contains(&unrecorded), "{unrecorded} in {metrics}");
}

fn older_than(text: &str) -> api::PruneAuditRequest {
    api::PruneAuditRequest {
        older_than: api::Interval::parse(text).unwrap(),
    }
}

/// A prune deletes the records older than `older_than`, in batches, records itself, and
/// leaves a trail that verifies from its base; one within the minimum retention is
/// refused; a trail that does not verify is not pruned.
#[tokio::test]
async fn pruning_deletes_the_oldest_records_and_the_trail_still_verifies() {
    let s = TestServer::start_with(strongbox_server::service::ServiceConfig {
        audit_prune_batch: 5,
        ..Default::default()
    })
    .await;
    let c = &s.client;
    traffic(&s, "p/a").await;
    assert_code(
        c.prune_audit(&older_than("29d")).await,
        ErrorCode::InvalidParameter,
        "older_than: must be at least 30d",
    );
    let old = s.service.audit_count().unwrap();
    s.clock.advance(40 * 86_400);
    traffic(&s, "p/b").await;
    // Nothing is as old as 41 days.
    let r = c.prune_audit(&older_than("41d")).await.unwrap();
    assert_eq!((r.pruned, r.first_seq, r.more), (0, 1, false));

    let mut calls = Vec::new();
    loop {
        let r = c.prune_audit(&older_than("30d")).await.unwrap();
        calls.push(r.clone());
        if !r.more {
            break;
        }
    }
    let pruned: u64 = calls.iter().map(|r| r.pruned).sum();
    assert_eq!(pruned, old, "{calls:?}");
    assert!(calls.len() >= 2 && calls[0].pruned == 5, "{calls:?}");
    assert_eq!(calls.last().unwrap().first_seq, old + 1);
    // Nothing left to prune; the trail begins after the base.
    let r = c.prune_audit(&older_than("30d")).await.unwrap();
    assert_eq!((r.pruned, r.first_seq, r.more), (0, old + 1, false));
    for seq in 1..=old {
        assert!(s.backend.get(Table::Audit, &key(seq)).unwrap().is_none());
    }
    let page = c.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!((page.records[0].seq, page.first_seq), (old + 1, old + 1));
    // A pruned store is format 4: a release that does not know bases refuses it rather
    // than taking the pruned records for deleted ones.
    assert_eq!(
        strongbox_server::server::format_version(s.service.store())
            .unwrap()
            .as_deref(),
        Some("4")
    );
    // (Counted before verify adds its own record.)
    let count = s.service.audit_count().unwrap();
    let v = verify(&s).await;
    assert!(v.intact, "{v:?}");
    assert_eq!((v.pruned, v.verified), (old, count - old), "{v:?}");
    // Each prune is recorded, by whom.
    let prunes = c
        .list_audit(&AuditQuery {
            action: Some("sys:PruneAudit".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert_eq!(prunes.len(), calls.len() + 2, "{prunes:?}");
    assert!(prunes.iter().all(|r| r.principal == "root"), "{prunes:?}");

    // A prune and its record commit together: one that cannot be recorded deletes
    // nothing.
    s.clock.advance(40 * 86_400);
    let count = s.service.audit_count().unwrap();
    s.service.set_audit_failpoint(true);
    assert_code(
        c.prune_audit(&older_than("30d")).await,
        ErrorCode::Unavailable,
        "could not be recorded",
    );
    s.service.set_audit_failpoint(false);
    assert!(
        s.backend
            .get(Table::Audit, &key(old + 1))
            .unwrap()
            .is_some()
    );
    assert_eq!(s.service.audit_count().unwrap(), count);

    // A trail that does not verify is not pruned: the evidence stays.
    let first = old + 1;
    let (mac, mut body) = stored(s.backend.as_ref(), first + 1);
    body["principal"] = json!("someone-else");
    put_stored(s.backend.as_ref(), first + 1, &mac, &body);
    assert_code(
        c.prune_audit(&older_than("30d")).await,
        ErrorCode::InvalidState,
        &format!("record {} is missing or altered", first + 1),
    );
    assert!(s.backend.get(Table::Audit, &key(first)).unwrap().is_some());
}

/// After a prune, a record put back, the first kept record deleted, or a base moved on
/// (a forged one, or an old head passed off as a base) is still caught by verify, a
/// moved base also at unseal, and a trail with a forged base is not pruned further.
#[tokio::test]
async fn a_pruned_trail_still_shows_tampering() {
    let (b, open) = stopped_store();
    let svc = open().unwrap().service;
    for _ in 0..4 {
        svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
            .await
            .unwrap();
    }
    let record_2 = b.get(Table::Audit, &key(2)).unwrap().unwrap();
    // Outside a request a prune records nothing: every record goes, the base is the last.
    let r = svc.prune_audit(&older_than("30d")).await.unwrap();
    assert_eq!((r.pruned, r.first_seq, r.more), (4, 5, false));
    let v = svc.verify_audit().unwrap();
    assert!(v.intact && v.pruned == 4 && v.verified == 0, "{v:?}");
    drop(svc);
    assert!(open().is_ok(), "a trail pruned whole unseals");
    let svc = open().unwrap().service;
    svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
        .await
        .unwrap();
    assert!(open().is_ok(), "the first record after the base unseals");
    // The head when the trail ended at record 5: genuine, the same fields as a base.
    let head_at_5 = b.get(Table::Meta, b"audit_head").unwrap().unwrap();
    svc.finish_audit(&slot(), AuditOutcome::Succeeded, None)
        .await
        .unwrap();
    let v = svc.verify_audit().unwrap();
    assert!(v.intact && v.pruned == 4 && v.verified == 2, "{v:?}");
    assert!(open().is_ok(), "records after the base unseal");

    // A pruned record put back.
    b.commit(&[Mutation::Put(Table::Audit, key(2), record_2)])
        .unwrap();
    let v = svc.verify_audit().unwrap();
    assert_eq!((v.intact, v.first_bad_seq), (false, Some(2)), "{v:?}");
    assert!(v.problem.unwrap().contains("put back"));
    b.commit(&[Mutation::Delete(Table::Audit, key(2))]).unwrap();

    // A key that is no record's, sorting before the base.
    b.commit(&[Mutation::Put(Table::Audit, vec![0x00], b"x".to_vec())])
        .unwrap();
    let v = svc.verify_audit().unwrap();
    assert!(!v.intact && v.problem.unwrap().contains("malformed key"));
    b.commit(&[Mutation::Delete(Table::Audit, vec![0x00])])
        .unwrap();

    // The first record after the base deleted.
    let record_5 = b.get(Table::Audit, &key(5)).unwrap().unwrap();
    b.commit(&[Mutation::Delete(Table::Audit, key(5))]).unwrap();
    let v = svc.verify_audit().unwrap();
    assert_eq!((v.intact, v.first_bad_seq), (false, Some(5)), "{v:?}");
    b.commit(&[Mutation::Put(Table::Audit, key(5), record_5.clone())])
        .unwrap();
    assert!(svc.verify_audit().unwrap().intact);

    // The base moved on to hide record 5: with a MAC made without the root key, or as
    // the genuine head of when the trail ended at record 5 (which would chain on to
    // record 6 exactly, were a base's MAC not under a tag of its own).
    let real_base = b.get(Table::Meta, b"audit_base").unwrap().unwrap();
    let mut forged = 5u64.to_be_bytes().to_vec();
    forged.extend_from_slice(&record_5[1..33]);
    forged.extend_from_slice(&[9u8; 32]);
    for fake in [forged, head_at_5] {
        b.commit(&[
            Mutation::Delete(Table::Audit, key(5)),
            Mutation::Put(Table::Meta, b"audit_base".to_vec(), fake),
        ])
        .unwrap();
        let v = svc.verify_audit().unwrap();
        assert!(!v.intact, "{v:?}");
        assert!(v.problem.unwrap().contains("forged"));
        let e = open().err().unwrap().to_string();
        assert!(e.contains("base"), "{e}");
        // Nor is a trail with a forged base pruned further.
        let e = svc.prune_audit(&older_than("30d")).await.unwrap_err();
        assert_eq!(e.code, api::ErrorCode::InvalidState, "{e}");
        b.commit(&[
            Mutation::Put(Table::Audit, key(5), record_5.clone()),
            Mutation::Put(Table::Meta, b"audit_base".to_vec(), real_base.clone()),
        ])
        .unwrap();
    }
    assert!(svc.verify_audit().unwrap().intact);
    assert!(open().is_ok());
}

/// `strongbox audit prune` deletes in batches until nothing older is left, and `audit
/// verify` says how much was pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_command_prunes_in_batches() {
    let s = TestServer::start_with(strongbox_server::service::ServiceConfig {
        audit_prune_batch: 3,
        ..Default::default()
    })
    .await;
    traffic(&s, "p/cli").await;
    let old = s.service.audit_count().unwrap();
    s.clock.advance(31 * 86_400);
    // The archive first: every record, oldest first (or up to --through).
    let export = |through: Option<u64>| {
        let mut cmd = s.cli(&s.token);
        cmd.args(["audit", "export"]);
        if let Some(t) = through {
            cmd.args(["--through", &t.to_string()]);
        }
        async move {
            let out = run(cmd).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<api::AuditRecord>(l).unwrap().seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(export(Some(old)).await, (1..=old).collect::<Vec<_>>());
    assert_eq!(
        export(None).await[..old as usize],
        (1..=old).collect::<Vec<_>>()[..]
    );
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "prune", "--older-than", "30d"]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "pruned {old} audit records; the trail begins at record {}",
            old + 1
        )),
        "{stdout}"
    );
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("(records 1 to {old} were pruned)")),
        "{stdout}"
    );
    assert_eq!(
        export(None).await[0],
        old + 1,
        "the trail begins after the base"
    );
    let mut cmd = s.cli(&s.token);
    cmd.args(["audit", "export"]);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("records 1 to {old} were pruned before")),
        "{stderr}"
    );
}

/// With a retention configured, the background tick prunes what is older, in batches,
/// each recorded by `(retention)`; what is younger stays, and a tick with nothing to
/// prune records nothing.
#[tokio::test]
async fn the_retention_is_applied_by_the_background_tick() {
    let s = TestServer::start_with(strongbox_server::service::ServiceConfig {
        audit_retention_secs: Some(40 * 86_400),
        audit_prune_batch: 4,
        ..Default::default()
    })
    .await;
    traffic(&s, "r/a").await;
    let old = s.service.audit_count().unwrap();
    let r = s.advance_and_tick(39 * 86_400).await;
    assert_eq!(r.pruned_audit_records, 0, "{r:?}");
    let r = s.advance_and_tick(2 * 86_400).await;
    assert_eq!(r.pruned_audit_records, old, "{r:?}");
    let v = verify(&s).await;
    assert!(v.intact && v.pruned == old, "{v:?}");
    let by_retention = |s: &TestServer| {
        let q = AuditQuery {
            principal: Some("(retention)".into()),
            ..Default::default()
        };
        let c = s.client.clone();
        async move { c.list_audit(&q).await.unwrap().records }
    };
    let batches = by_retention(&s).await;
    assert_eq!(batches.len() as u64, old.div_ceil(4), "{batches:?}");
    assert!(
        batches
            .iter()
            .all(|r| r.action == "sys:PruneAudit" && r.outcome == AuditOutcome::Succeeded),
        "{batches:?}"
    );
    // Nothing older left: nothing done, nothing recorded.
    let r = s.advance_and_tick(60).await;
    assert_eq!(r.pruned_audit_records, 0, "{r:?}");
    assert_eq!(by_retention(&s).await.len(), batches.len());

    // A trail that does not verify is not pruned: the failure is recorded once, and
    // tried again only an hour later.
    let first = old + 1;
    let (mac, mut body) = stored(s.backend.as_ref(), first + 1);
    body["principal"] = json!("someone-else");
    put_stored(s.backend.as_ref(), first + 1, &mac, &body);
    let r = s.advance_and_tick(41 * 86_400).await;
    assert_eq!(r.pruned_audit_records, 0, "{r:?}");
    let failed = |records: Vec<api::AuditRecord>| {
        records
            .into_iter()
            .filter(|r| r.outcome == AuditOutcome::Failed)
            .count()
    };
    assert_eq!(failed(by_retention(&s).await), 1);
    s.advance_and_tick(60).await;
    assert_eq!(failed(by_retention(&s).await), 1, "not a record each tick");
    s.advance_and_tick(3_600).await;
    assert_eq!(
        failed(by_retention(&s).await),
        2,
        "tried again an hour later"
    );
    assert!(s.backend.get(Table::Audit, &key(first)).unwrap().is_some());
}
