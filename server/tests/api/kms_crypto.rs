//! Cryptography with a CMK for callers: encrypt, decrypt and data keys (KMS's
//! `Encrypt`, `Decrypt`, `GenerateDataKey`, `GenerateDataKeyWithoutPlaintext`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::json;
use strongbox_client::ErrorCode;
use strongbox_schemas::{self as api, DataKeySpec, GenerateDataKeyRequest};

use crate::common::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The blob with one byte changed at `at` (counted from the end when negative).
fn altered(blob: &str, at: isize) -> String {
    let mut raw = B64.decode(blob).unwrap();
    let i = if at < 0 {
        (raw.len() as isize + at) as usize
    } else {
        at as usize
    };
    raw[i] ^= 0x40;
    B64.encode(raw)
}

#[tokio::test]
async fn encrypt_and_decrypt_through_aliases_rotation_and_contexts() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = new_key(&s).await;
    c.put_alias("alias/billing", &k).await.unwrap();
    let billing = ctx(&[("app", "billing"), ("env", "prod")]);

    // Every byte value, through the alias: the answer names the key id and version 1.
    let data: Vec<u8> = (0..=255u8).collect();
    let made = c.encrypt("alias/billing", &data, &billing).await.unwrap();
    assert_eq!((made.key_id.as_str(), made.key_version), (k.as_str(), 1));
    assert_eq!(
        api::ciphertext_blob_key(&B64.decode(&made.ciphertext_blob).unwrap()),
        Some((k.as_str(), 1)),
        "the blob's header names the key"
    );
    assert_eq!(
        c.decrypt(&made.ciphertext_blob, &billing)
            .await
            .unwrap()
            .as_slice(),
        data
    );
    let again = c.encrypt(&k, &data, &billing).await.unwrap();
    assert_ne!(
        again.ciphertext_blob, made.ciphertext_blob,
        "each encryption has its own salt and nonce"
    );
    let by_alias = c
        .decrypt_under("alias/billing", &made.ciphertext_blob, &billing)
        .await
        .unwrap();
    assert_eq!(
        (by_alias.key_id.as_str(), by_alias.key_version),
        (k.as_str(), 1)
    );
    assert_eq!(B64.decode(&by_alias.plaintext).unwrap(), data);

    // A rotation: new blobs are made by version 2, old ones still open with version 1.
    c.rotate_key(&k).await.unwrap();
    let newer = c.encrypt(&k, b"after", &billing).await.unwrap();
    assert_eq!(newer.key_version, 2);
    assert_eq!(
        c.decrypt(&made.ciphertext_blob, &billing)
            .await
            .unwrap()
            .as_slice(),
        data
    );
    assert_eq!(
        c.decrypt_under(&k, &newer.ciphertext_blob, &billing)
            .await
            .unwrap()
            .key_version,
        2
    );

    // Another context (a value changed, a pair missing, none at all) does not open it.
    for other in [
        ctx(&[("app", "billing"), ("env", "dev")]),
        ctx(&[("app", "billing")]),
        ctx(&[]),
    ] {
        assert_code(
            c.decrypt(&made.ciphertext_blob, &other).await,
            ErrorCode::InvalidCiphertext,
            "encryption context",
        );
    }
    // Nor does a damaged blob: in the tag, in the sealed data, in the salt (which starts
    // after "SBK1", the id's length, the id and the version).
    let salt_at = (9 + k.len()) as isize;
    for at in [-1, -20, salt_at, salt_at + 31] {
        assert_code(
            c.decrypt_under(&k, &altered(&made.ciphertext_blob, at), &billing)
                .await,
            ErrorCode::InvalidCiphertext,
            "does not open",
        );
    }
    // A damaged version: a version the key does not have is named as such.
    assert_code(
        c.decrypt_under(&k, &altered(&made.ciphertext_blob, salt_at - 1), &billing)
            .await,
        ErrorCode::InvalidCiphertext,
        "names a version this key does not have",
    );
    // Another key's blob sent to this key; a blob naming a version the key never had.
    let other_key = new_key(&s).await;
    let foreign = c.encrypt(&other_key, b"x", &billing).await.unwrap();
    assert_code(
        c.decrypt_under(&k, &foreign.ciphertext_blob, &billing)
            .await,
        ErrorCode::InvalidCiphertext,
        "not made under this key",
    );
    let mut raw = B64.decode(&made.ciphertext_blob).unwrap();
    let at = 5 + k.len();
    raw[at..at + 4].copy_from_slice(&9u32.to_be_bytes());
    assert_code(
        c.decrypt_under(&k, &B64.encode(&raw), &billing).await,
        ErrorCode::InvalidCiphertext,
        "version this key does not have",
    );
    // Not base64, not a blob, longer than any blob.
    for (blob, needle) in [
        ("%%%".to_string(), "base64"),
        (B64.encode(b"not a blob"), "not a Strongbox ciphertext blob"),
        ("A".repeat(12_000), "longer than any blob"),
    ] {
        assert_code(
            c.decrypt_under(&k, &blob, &billing).await,
            ErrorCode::InvalidCiphertext,
            needle,
        );
    }

    // Sizes: 6144 bytes is the most; empty is refused.
    let most = vec![7u8; api::MAX_ENCRYPT_PLAINTEXT_BYTES];
    let big = c.encrypt(&k, &most, &BTreeMap::new()).await.unwrap();
    assert_eq!(
        c.decrypt(&big.ciphertext_blob, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        most
    );
    assert_code(
        c.encrypt(
            &k,
            &[0; api::MAX_ENCRYPT_PLAINTEXT_BYTES + 1],
            &BTreeMap::new(),
        )
        .await,
        ErrorCode::PayloadTooLarge,
        "generate-data-key",
    );
    assert_code(
        c.encrypt(&k, b"", &BTreeMap::new()).await,
        ErrorCode::InvalidParameter,
        "plaintext: must not be empty",
    );
    // A context with an empty name, or too large; neither is echoed.
    assert_code(
        c.encrypt(&k, b"x", &ctx(&[("", "v")])).await,
        ErrorCode::InvalidParameter,
        "encryption_context: a name may not be empty",
    );
    let huge = "h".repeat(api::MAX_ENCRYPTION_CONTEXT_BYTES);
    match c.encrypt(&k, b"x", &ctx(&[("k", &huge)])).await {
        Err(strongbox_client::Error::Api { code, message, .. }) => {
            assert_eq!(code, ErrorCode::InvalidParameter);
            assert!(
                message.contains("encryption_context: at most 8192 bytes"),
                "{message}"
            );
            assert!(!message.contains("hhhh"), "the context is not echoed");
        }
        other => panic!("{other:?}"),
    }
    // A key or alias that does not exist.
    assert_code(
        c.encrypt("no-such-key", b"x", &BTreeMap::new()).await,
        ErrorCode::KeyNotFound,
        "no-such-key",
    );
    assert_code(
        c.encrypt("alias/nothing", b"x", &BTreeMap::new()).await,
        ErrorCode::AliasNotFound,
        "alias/nothing",
    );
    // The default key seals the secrets that name none, and nothing else; its alias is
    // refused as such also before it exists (before a secret named no key), so the
    // answer does not tell whether one did.
    assert_code(
        c.encrypt("alias/strongbox/default", b"x", &BTreeMap::new())
            .await,
        ErrorCode::InvalidParameter,
        "seals only the secrets that name no key",
    );
    c.create_secret(&text_secret("uses/default", "v"))
        .await
        .unwrap();
    for key in [
        "alias/strongbox/default",
        &s.client
            .describe_key("alias/strongbox/default")
            .await
            .unwrap()
            .key_id,
    ] {
        assert_code(
            c.encrypt(key, b"x", &BTreeMap::new()).await,
            ErrorCode::InvalidParameter,
            "seals only the secrets that name no key",
        );
        assert_code(
            c.generate_data_key(key, &Default::default()).await,
            ErrorCode::InvalidParameter,
            "seals only the secrets that name no key",
        );
    }
}

#[tokio::test]
async fn data_keys_in_the_clear_and_only_encrypted() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = new_key(&s).await;
    let app = ctx(&[("file", "report.pdf")]);

    let dk = c
        .generate_data_key(
            &k,
            &GenerateDataKeyRequest {
                encryption_context: app.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let plain = B64.decode(&dk.plaintext).unwrap();
    assert_eq!(plain.len(), 32, "AES_256 by default");
    assert_eq!((dk.key_id.as_str(), dk.key_version), (k.as_str(), 1));
    assert_eq!(
        c.decrypt(&dk.ciphertext_blob, &app)
            .await
            .unwrap()
            .as_slice(),
        plain,
        "decrypt gives the data key back"
    );
    let second = c.generate_data_key(&k, &Default::default()).await.unwrap();
    assert_ne!(second.plaintext, dk.plaintext, "each data key is fresh");

    for (req, len) in [
        (Some(DataKeySpec::Aes128), None),
        (Some(DataKeySpec::Aes256), None),
        (None, Some(1)),
        (None, Some(1024)),
    ]
    .map(|(spec, n)| {
        let len = match (spec, n) {
            (Some(DataKeySpec::Aes128), _) => 16,
            (_, Some(n)) => n as usize,
            _ => 32,
        };
        (
            GenerateDataKeyRequest {
                key_spec: spec,
                number_of_bytes: n,
                ..Default::default()
            },
            len,
        )
    }) {
        let dk = c.generate_data_key(&k, &req).await.unwrap();
        assert_eq!(B64.decode(&dk.plaintext).unwrap().len(), len, "{req:?}");
        assert_eq!(
            c.decrypt(&dk.ciphertext_blob, &BTreeMap::new())
                .await
                .unwrap()
                .len(),
            len
        );
    }
    for (req, needle) in [
        (
            GenerateDataKeyRequest {
                number_of_bytes: Some(0),
                ..Default::default()
            },
            "number_of_bytes: 1–1024",
        ),
        (
            GenerateDataKeyRequest {
                number_of_bytes: Some(1025),
                ..Default::default()
            },
            "number_of_bytes: 1–1024",
        ),
        (
            GenerateDataKeyRequest {
                key_spec: Some(DataKeySpec::Aes256),
                number_of_bytes: Some(32),
                ..Default::default()
            },
            "not both",
        ),
    ] {
        assert_code(
            c.generate_data_key(&k, &req).await,
            ErrorCode::InvalidParameter,
            needle,
        );
    }

    // Without plaintext: the answer has no plaintext field at all; the blob opens to a
    // 32-byte key. The body may be left out.
    let r = call(
        &s,
        Some(&s.token),
        "POST",
        &["v1", "keys", &k, "generate-data-key-without-plaintext"],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let fields: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["ciphertext_blob", "key_id", "key_version"]);
    let blob = r.body["ciphertext_blob"].as_str().unwrap();
    assert_eq!(c.decrypt(blob, &BTreeMap::new()).await.unwrap().len(), 32);
    let typed = c
        .generate_data_key_without_plaintext(&k, &GenerateDataKeyRequest::default())
        .await
        .unwrap();
    assert_eq!(typed.key_version, 1);
}

#[tokio::test]
async fn the_key_state_decides_as_for_secrets() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = new_key(&s).await;
    c.put_alias("alias/short-lived", &k).await.unwrap();
    let none = BTreeMap::new();
    let blob = c.encrypt(&k, b"kept", &none).await.unwrap().ciphertext_blob;

    c.disable_key(&k).await.unwrap();
    assert_code(c.encrypt(&k, b"x", &none).await, ErrorCode::KeyDisabled, &k);
    assert_code(c.decrypt(&blob, &none).await, ErrorCode::KeyDisabled, &k);
    assert_code(
        c.generate_data_key(&k, &Default::default()).await,
        ErrorCode::KeyDisabled,
        &k,
    );
    c.enable_key(&k).await.unwrap();
    assert_eq!(c.decrypt(&blob, &none).await.unwrap().as_slice(), b"kept");

    c.schedule_key_deletion(&k, Some(7)).await.unwrap();
    assert_code(
        c.decrypt(&blob, &none).await,
        ErrorCode::KeyPendingDeletion,
        &k,
    );
    assert_code(
        c.generate_data_key_without_plaintext(&k, &Default::default())
            .await,
        ErrorCode::KeyPendingDeletion,
        &k,
    );
    c.cancel_key_deletion(&k).await.unwrap();
    assert_eq!(c.decrypt(&blob, &none).await.unwrap().as_slice(), b"kept");

    // Destroyed: the blob never opens again; the alias went with the key.
    c.schedule_key_deletion(&k, Some(7)).await.unwrap();
    assert_eq!(s.advance_and_tick(7 * 86_400).await.destroyed_keys, 1);
    assert_code(c.decrypt(&blob, &none).await, ErrorCode::KeyDeleted, &k);
    assert_code(c.encrypt(&k, b"x", &none).await, ErrorCode::KeyDeleted, &k);
    assert_code(
        c.encrypt("alias/short-lived", b"x", &none).await,
        ErrorCode::AliasNotFound,
        "alias/short-lived",
    );
}

#[tokio::test]
async fn each_operation_needs_its_own_right_on_the_key_it_uses() {
    let s = TestServer::start().await;
    let c = &s.client;
    let mine = new_key(&s).await;
    let theirs = new_key(&s).await;
    c.put_alias("alias/mine", &mine).await.unwrap();
    c.put_alias("alias/points-at-theirs", &theirs)
        .await
        .unwrap();
    let none = BTreeMap::new();
    let theirs_blob = c
        .encrypt(&theirs, b"t", &none)
        .await
        .unwrap()
        .ciphertext_blob;
    let writer = s
        .principal_with(
            "encrypter",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow",
                 "Action": ["kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext"],
                 "Resource": [format!("key/{mine}"), "key/alias/*"]}]}),
        )
        .await;
    let made = writer.encrypt(&mine, b"m", &none).await.unwrap();
    writer.encrypt("alias/mine", b"m", &none).await.unwrap();
    writer
        .generate_data_key_without_plaintext(&mine, &Default::default())
        .await
        .unwrap();
    // What it may not: decrypt what it made, get a data key in the clear, use another
    // key (also through an alias it may name).
    assert_code(
        writer.decrypt(&made.ciphertext_blob, &none).await,
        ErrorCode::Forbidden,
        "kms:Decrypt",
    );
    assert_code(
        writer.generate_data_key(&mine, &Default::default()).await,
        ErrorCode::Forbidden,
        "kms:GenerateDataKey",
    );
    assert_code(
        writer.encrypt(&theirs, b"x", &none).await,
        ErrorCode::Forbidden,
        "kms:Encrypt",
    );
    assert_code(
        writer.encrypt("alias/points-at-theirs", b"x", &none).await,
        ErrorCode::Forbidden,
        "kms:Encrypt",
    );
    // Rights on an alias alone do not reach the key behind it.
    c.put_alias("alias/also-mine", &mine).await.unwrap();
    let alias_only = s
        .principal_with(
            "alias-decrypter",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "key/alias/*"}]}),
        )
        .await;
    assert_code(
        alias_only
            .decrypt_under("alias/also-mine", &made.ciphertext_blob, &none)
            .await,
        ErrorCode::Forbidden,
        "kms:Decrypt",
    );
    let reader = s
        .principal_with(
            "decrypter",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": format!("key/{mine}")}]}),
        )
        .await;
    assert_eq!(
        reader
            .decrypt(&made.ciphertext_blob, &none)
            .await
            .unwrap()
            .as_slice(),
        b"m"
    );
    // Sending another key's blob to the key it may use does not open it.
    assert_code(
        reader.decrypt_under(&mine, &theirs_blob, &none).await,
        ErrorCode::InvalidCiphertext,
        "not made under this key",
    );
    assert_code(
        reader.decrypt(&theirs_blob, &none).await,
        ErrorCode::Forbidden,
        "kms:Decrypt",
    );
    assert_denied(
        &s,
        "encrypter",
        &["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"],
    )
    .await;
}

/// One audit record per operation, naming the action and the key; neither the data, the
/// data key nor the encryption context is in it.
#[tokio::test]
async fn the_audit_trail_records_each_operation_and_none_of_its_data() {
    let s = TestServer::start().await;
    let k = new_key(&s).await;
    let marker = "plain-MARKER-7f3a";
    let context_marker = "ctx-MARKER-19bd";
    let cx = ctx(&[("purpose", context_marker)]);
    let token = s.token.clone();
    let enc = call(
        &s,
        Some(&token),
        "POST",
        &["v1", "keys", &k, "encrypt"],
        Some(&json!({"plaintext": B64.encode(marker), "encryption_context": cx})),
    )
    .await;
    assert_eq!(enc.status, 200);
    let blob = enc.body["ciphertext_blob"].as_str().unwrap().to_string();
    let dec = call(
        &s,
        Some(&token),
        "POST",
        &["v1", "keys", &k, "decrypt"],
        Some(&json!({"ciphertext_blob": blob, "encryption_context": cx})),
    )
    .await;
    assert_eq!(dec.status, 200);
    assert_eq!(dec.body["plaintext"], B64.encode(marker));
    let made_key = call(
        &s,
        Some(&token),
        "POST",
        &["v1", "keys", &k, "generate-data-key"],
        Some(&json!({"encryption_context": cx})),
    )
    .await;
    let data_key = made_key.body["plaintext"].as_str().unwrap().to_string();
    let failed = call(
        &s,
        Some(&token),
        "POST",
        &["v1", "keys", &k, "decrypt"],
        Some(&json!({"ciphertext_blob": blob, "encryption_context": {"purpose": "other"}})),
    )
    .await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.body["code"], "InvalidCiphertext");

    for (reply, action, outcome) in [
        (&enc, "kms:Encrypt", api::AuditOutcome::Succeeded),
        (&dec, "kms:Decrypt", api::AuditOutcome::Succeeded),
        (
            &made_key,
            "kms:GenerateDataKey",
            api::AuditOutcome::Succeeded,
        ),
        (&failed, "kms:Decrypt", api::AuditOutcome::Failed),
    ] {
        let records = records_of(&s, &reply.request_id).await;
        assert_eq!(records.len(), 1, "{action}");
        assert_eq!(records[0].action, action);
        assert_eq!(records[0].resource, format!("key/{k}"));
        assert_eq!(records[0].outcome, outcome, "{action}");
    }
    let trail = serde_json::to_string(
        &s.client
            .list_audit(&strongbox_client::AuditQuery {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap(),
    )
    .unwrap();
    for needle in [
        marker.to_string(),
        B64.encode(marker),
        context_marker.to_string(),
        data_key.clone(),
        blob.clone(),
    ] {
        assert!(!trail.contains(&needle), "the audit trail holds {needle}");
    }
}

/// Re-encrypt: a blob moves to the new primary version after a rotation, or to another
/// key and context, without its data reaching the caller; it needs kms:ReEncryptFrom on
/// the key that made the blob and kms:ReEncryptTo on the new one.
#[tokio::test]
async fn re_encrypt_moves_a_blob_without_showing_its_data() {
    let s = TestServer::start().await;
    let c = &s.client;
    let old_key = new_key(&s).await;
    let new = new_key(&s).await;
    c.put_alias("alias/archive", &new).await.unwrap();
    let a = ctx(&[("app", "a")]);
    let b = ctx(&[("app", "b")]);
    let blob = c
        .encrypt(&old_key, b"moving", &a)
        .await
        .unwrap()
        .ciphertext_blob;

    // The same key after a rotation: version 1 to version 2, the data the same.
    c.rotate_key(&old_key).await.unwrap();
    let req = |blob: &str,
               source: Option<&str>,
               from: &BTreeMap<String, String>,
               to: &BTreeMap<String, String>| {
        api::ReEncryptRequest {
            ciphertext_blob: blob.to_string(),
            source_key_id: source.map(str::to_string),
            source_encryption_context: from.clone(),
            destination_encryption_context: Some(to.clone()),
        }
    };
    let moved = c
        .re_encrypt(&old_key, &req(&blob, None, &a, &a))
        .await
        .unwrap();
    assert_eq!(
        (moved.source_key_version, moved.key_version),
        (1, 2),
        "{moved:?}"
    );
    assert_eq!(
        c.decrypt(&moved.ciphertext_blob, &a)
            .await
            .unwrap()
            .as_slice(),
        b"moving"
    );

    // To another key (by alias) and another context: only the new context opens it.
    let there = c
        .re_encrypt("alias/archive", &req(&blob, Some(&old_key), &a, &b))
        .await
        .unwrap();
    assert_eq!(
        (there.source_key_id.as_str(), there.key_id.as_str()),
        (old_key.as_str(), new.as_str())
    );
    assert_eq!(
        c.decrypt(&there.ciphertext_blob, &b)
            .await
            .unwrap()
            .as_slice(),
        b"moving"
    );
    assert_code(
        c.decrypt(&there.ciphertext_blob, &a).await,
        ErrorCode::InvalidCiphertext,
        "encryption context",
    );
    // Without a destination context the new blob keeps the source's; `{}` drops it.
    let kept = c
        .re_encrypt(
            &new,
            &api::ReEncryptRequest {
                destination_encryption_context: None,
                ..req(&blob, None, &a, &a)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        c.decrypt(&kept.ciphertext_blob, &a)
            .await
            .unwrap()
            .as_slice(),
        b"moving"
    );
    let dropped = c
        .re_encrypt(&new, &req(&blob, None, &a, &BTreeMap::new()))
        .await
        .unwrap();
    assert_eq!(
        c.decrypt(&dropped.ciphertext_blob, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        b"moving"
    );
    // The source context must be the blob's; a source key that did not make it is refused.
    assert_code(
        c.re_encrypt(&new, &req(&blob, None, &b, &b)).await,
        ErrorCode::InvalidCiphertext,
        "does not open",
    );
    assert_code(
        c.re_encrypt(&new, &req(&blob, Some(&new), &a, &a)).await,
        ErrorCode::InvalidCiphertext,
        "not made under source_key_id",
    );

    // Rights: ReEncryptTo on the new key alone is not enough; with ReEncryptFrom on the
    // old one it is, and the caller never needed kms:Decrypt.
    let to_only = s
        .principal_with(
            "re-encrypt-to",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ReEncryptTo", "Resource": format!("key/{new}")}]}),
        )
        .await;
    assert_code(
        to_only.re_encrypt(&new, &req(&blob, None, &a, &a)).await,
        ErrorCode::Forbidden,
        "kms:ReEncryptFrom",
    );
    let both = s
        .principal_with(
            "re-encrypt-both",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ReEncryptTo", "Resource": format!("key/{new}")},
                {"Effect": "Allow", "Action": "kms:ReEncryptFrom", "Resource": format!("key/{old_key}")}]}),
        )
        .await;
    let done = both
        .re_encrypt(&new, &req(&blob, None, &a, &a))
        .await
        .unwrap();
    assert_code(
        both.decrypt(&done.ciphertext_blob, &a).await,
        ErrorCode::Forbidden,
        "kms:Decrypt",
    );
    assert_eq!(
        c.decrypt(&done.ciphertext_blob, &a)
            .await
            .unwrap()
            .as_slice(),
        b"moving"
    );
    // Through an alias the source is also the key it names: a Deny on the key id holds.
    c.put_alias("alias/old", &old_key).await.unwrap();
    let via_alias = s
        .principal_with(
            "re-encrypt-via-alias",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ReEncrypt*", "Resource": "*"},
                {"Effect": "Deny", "Action": "kms:ReEncryptFrom", "Resource": format!("key/{old_key}")}]}),
        )
        .await;
    assert_code(
        via_alias
            .re_encrypt(&new, &req(&blob, Some("alias/old"), &a, &a))
            .await,
        ErrorCode::Forbidden,
        "kms:ReEncryptFrom",
    );
    // A source the caller may not use is refused alike whether it exists or not.
    let missing = format!("{}x", &old_key[..old_key.len() - 1]);
    for source in [old_key.as_str(), missing.as_str()] {
        match to_only
            .re_encrypt(&new, &req(&blob, Some(source), &a, &a))
            .await
        {
            Err(strongbox_client::Error::Api { code, message, .. }) => {
                assert_eq!(code, ErrorCode::Forbidden);
                assert!(
                    message.contains(&format!("kms:ReEncryptFrom on key/{source}")),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // The audit record names the source key too, and a search by it finds the request.
    let by_source = c
        .list_audit(&strongbox_client::AuditQuery {
            resource_prefix: Some(format!("key/{old_key}")),
            action: Some("kms:ReEncryptTo".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let denied = by_source
        .records
        .iter()
        .find(|r| r.principal == "re-encrypt-to")
        .expect("the refused re-encrypt is found by its source key");
    assert_eq!(denied.resource, format!("key/{new}"));
    assert_eq!(denied.related_resources, [format!("key/{old_key}")]);
    assert_eq!(denied.outcome, api::AuditOutcome::Denied);
    // Named by alias: the record names the alias and the key behind it.
    let through_alias = by_source
        .records
        .iter()
        .find(|r| r.principal == "re-encrypt-via-alias")
        .expect("the refused re-encrypt through an alias is found by the key id");
    assert_eq!(
        through_alias.related_resources,
        ["key/alias/old".to_string(), format!("key/{old_key}")]
    );
    // A disabled source key, a disabled or default destination are refused.
    c.disable_key(&new).await.unwrap();
    assert_code(
        c.re_encrypt(&new, &req(&blob, None, &a, &a)).await,
        ErrorCode::KeyDisabled,
        &new,
    );
    c.enable_key(&new).await.unwrap();
    c.create_secret(&text_secret("uses/default", "v"))
        .await
        .unwrap();
    assert_code(
        c.re_encrypt("alias/strongbox/default", &req(&blob, None, &a, &a))
            .await,
        ErrorCode::InvalidParameter,
        "seals only the secrets that name no key",
    );
    c.disable_key(&old_key).await.unwrap();
    assert_code(
        c.re_encrypt(&new, &req(&blob, None, &a, &a)).await,
        ErrorCode::KeyDisabled,
        &old_key,
    );
}
