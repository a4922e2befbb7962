use super::*;

const MATERIAL: [u8; 32] = [0x11; 32];
const SALT: [u8; 32] = [0x22; 32];
const NONCE: [u8; 12] = [0x33; 12];
/// Golden vector: key id `k-1`, version 7, secret `app/db`, version `v1`, plaintext `hello`.
const GOLDEN_HEX: &str = "01036b2d31000000072222222222222222222222222222222222222222222222222222222222222222333333333333333333333333845adb2c4757a01e4dc527d027d7e6d7d3cdc8ad61";

fn header() -> SealedHeader {
    SealedHeader {
        key_id: "k-1".into(),
        key_version: 7,
    }
}
fn binding() -> SecretBinding<'static> {
    SecretBinding {
        name: "app/db",
        version_id: "v1",
    }
}

#[test]
fn golden_vector_is_stable() {
    let m = Secret32::from_bytes(MATERIAL);
    let ct = seal_secret_with(&m, &header(), binding(), b"hello", &SALT, &NONCE).unwrap();
    assert_eq!(hex::encode(&ct), GOLDEN_HEX);
    assert_eq!(
        open_secret(&m, binding(), &ct).unwrap().as_slice(),
        b"hello"
    );
    assert_eq!(sealed_header(&ct).unwrap(), header());
}

/// A second, independent implementation (aws-lc-rs HKDF and AES-GCM) opens the golden
/// vector from the layout in `docs/design/crypto.md`, not from our code.
#[test]
fn golden_vector_opens_with_aws_lc_rs() {
    let ct = hex::decode(GOLDEN_HEX).unwrap();
    assert_eq!(ct[0], 0x01);
    let l = ct[1] as usize;
    let key_id = &ct[2..2 + l];
    assert_eq!(key_id, b"k-1");
    assert_eq!(&ct[2 + l..6 + l], &7u32.to_be_bytes());
    let salt = &ct[6 + l..38 + l];
    let nonce = &ct[38 + l..50 + l];
    let body = &ct[50 + l..];

    let dk = hkdf_by_aws_lc(salt, &MATERIAL, b"strongbox/v1/secret-data-key");

    let mut aad = b"strongbox/v1/secret".to_vec();
    aad.extend_from_slice(&6u16.to_be_bytes());
    aad.extend_from_slice(b"app/db");
    aad.extend_from_slice(&2u16.to_be_bytes());
    aad.extend_from_slice(b"v1");
    aad.extend_from_slice(&ct[..38 + l]);

    assert_eq!(open_by_aws_lc(&dk, nonce, &aad, body), b"hello");
}

#[test]
fn moved_ciphertext_does_not_open() {
    let m = Secret32::from_bytes(MATERIAL);
    let ct = seal_secret(&m, &header(), binding(), b"hello").unwrap();
    // Another secret, another version.
    for other in [
        SecretBinding {
            name: "app/db2",
            version_id: "v1",
        },
        SecretBinding {
            name: "app/db",
            version_id: "v2",
        },
    ] {
        assert!(open_secret(&m, other, &ct).is_err(), "{other:?}");
    }
    // Another key's material.
    assert!(open_secret(&Secret32::from_bytes([0x12; 32]), binding(), &ct).is_err());
    // Header rewritten to claim another key id or version (same material): AAD covers it.
    let mut relabelled = ct.clone();
    relabelled[5] ^= 0x01; // last byte of "k-1" -> "k-0"
    assert!(open_secret(&m, binding(), &relabelled).is_err());
    let mut reversioned = ct.clone();
    reversioned[2 + 3 + 3] ^= 0x01;
    assert!(open_secret(&m, binding(), &reversioned).is_err());
    // Any flipped bit in the body.
    let mut flipped = ct;
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    assert!(open_secret(&m, binding(), &flipped).is_err());
}

#[test]
fn wrapped_cmk_is_bound_to_key_and_version() {
    let b = Barrier::new(&Secret32::from_bytes([0x44; 32]));
    let m = Secret32::random();
    let w = b.wrap_cmk("key-a", 1, &m);
    assert_eq!(b.unwrap_cmk("key-a", 1, &w).unwrap().bytes(), m.bytes());
    assert!(b.unwrap_cmk("key-b", 1, &w).is_err());
    assert!(b.unwrap_cmk("key-a", 2, &w).is_err());
    let other_root = Barrier::new(&Secret32::from_bytes([0x45; 32]));
    assert!(other_root.unwrap_cmk("key-a", 1, &w).is_err());
}

#[test]
fn keycheck_refuses_wrong_root() {
    let b = Barrier::new(&Secret32::from_bytes([0x44; 32]));
    let rec = b.keycheck_record();
    assert!(b.verify_keycheck(&rec).is_ok());
    let wrong = Barrier::new(&Secret32::from_bytes([0x46; 32]));
    assert_eq!(wrong.verify_keycheck(&rec), Err(BarrierError::WrongRootKey));
}

#[test]
fn root_key_base64_round_trip_and_debug_redacts() {
    let k = RootKey::random();
    let again = RootKey::from_base64(&k.to_base64()).unwrap();
    assert_eq!(k.bytes(), again.bytes());
    assert_eq!(format!("{k:?}"), "Secret32(<redacted>)");
    assert_eq!(
        RootKey::from_base64("c2hvcnQ=").unwrap_err(),
        BarrierError::BadRootKey
    );
}

#[test]
fn value_mac_binds_name_and_version() {
    let b = Barrier::new(&Secret32::from_bytes([0x44; 32]));
    let a = b.value_mac(binding(), b"x");
    assert_eq!(a, b.value_mac(binding(), b"x"));
    assert_ne!(a, b.value_mac(binding(), b"y"));
    assert_ne!(
        a,
        b.value_mac(
            SecretBinding {
                name: "app/db",
                version_id: "v2"
            },
            b"x"
        )
    );
}

/// A purpose key (HKDF-SHA256 of the root key, no salt, `info`), derived by aws-lc-rs.
fn purpose_key_by_aws_lc(root: &[u8; 32], info: &[u8]) -> [u8; 32] {
    hkdf_by_aws_lc(&[], root, info)
}

/// HKDF-SHA256 to 32 bytes, by aws-lc-rs.
fn hkdf_by_aws_lc(salt: &[u8], ikm: &[u8; 32], info: &[u8]) -> [u8; 32] {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    struct Len32;
    impl aws_lc_rs::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut k = [0u8; 32];
    Salt::new(HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Len32)
        .unwrap()
        .fill(&mut k)
        .unwrap();
    k
}

/// AES-256-GCM open, by aws-lc-rs.
fn open_by_aws_lc(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as LcNonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = sealed.to_vec();
    let pt = key
        .open_in_place(
            LcNonce::try_assume_unique_for_key(nonce).unwrap(),
            Aad::from(aad),
            &mut buf,
        )
        .unwrap();
    pt.to_vec()
}

/// The audit chain MACs, recomputed with aws-lc-rs from `docs/design/crypto.md` alone.
#[test]
fn audit_macs_match_an_independent_implementation() {
    use aws_lc_rs::hmac;
    let root = [0x44u8; 32];
    let k = purpose_key_by_aws_lc(&root, b"strongbox/v1/audit-hmac");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
    let prev = [0x55u8; 32];
    let mut msg = b"strongbox/v1/audit-record".to_vec();
    msg.extend_from_slice(&9u64.to_be_bytes());
    msg.extend_from_slice(&prev);
    msg.extend_from_slice(b"{\"seq\":9}");
    let expected = hmac::sign(&key, &msg);
    let b = Barrier::new(&Secret32::from_bytes(root));
    let got = b.audit_record_mac(9, &prev, b"{\"seq\":9}");
    assert_eq!(got.as_slice(), expected.as_ref());
    assert_eq!(
        hex::encode(got),
        "03f3d95023d28c8e22c76f602fbc25e0e5780dadd96017f53b1ba44982941edb",
        "golden audit record MAC"
    );
    let mut head = b"strongbox/v1/audit-head".to_vec();
    head.extend_from_slice(&9u64.to_be_bytes());
    head.extend_from_slice(&got);
    assert_eq!(
        b.audit_head_mac(9, &got).as_slice(),
        hmac::sign(&key, &head).as_ref()
    );
    // The base a prune leaves: the same fields under its own tag, so a head is never one.
    let mut base = b"strongbox/v1/audit-base".to_vec();
    base.extend_from_slice(&9u64.to_be_bytes());
    base.extend_from_slice(&got);
    assert_eq!(
        b.audit_base_mac(9, &got).as_slice(),
        hmac::sign(&key, &base).as_ref()
    );
    assert_ne!(b.audit_base_mac(9, &got), b.audit_head_mac(9, &got));
    // Another root key gives other MACs: a chain recomputed without the key never verifies.
    let other = Barrier::new(&Secret32::from_bytes([0x45; 32]));
    assert_ne!(other.audit_record_mac(9, &prev, b"{\"seq\":9}"), got);
}

/// The backup file MAC, recomputed with aws-lc-rs from `docs/design/crypto.md` and
/// `docs/design/storage.md` ("Backups") alone, and pinned: backups are kept for years.
#[test]
fn the_backup_mac_matches_an_independent_implementation() {
    use aws_lc_rs::hmac;
    let root = [0x44u8; 32];
    let k = purpose_key_by_aws_lc(&root, b"strongbox/v1/backup-mac");
    // The smallest backup: no entries.
    let mut body = b"SBBK1".to_vec();
    body.push(0xFF);
    body.extend_from_slice(&0u64.to_be_bytes());
    let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), &body);
    let b = Barrier::new(&Secret32::from_bytes(root));
    let mut mac = b.backup_mac();
    mac.update(&body[..3]);
    mac.update(&body[3..]);
    let got = mac.finish();
    assert_eq!(got.as_slice(), expected.as_ref());
    assert_eq!(
        hex::encode(got),
        "cfade09c354b6066b83c0d3115b19641f3e754b9f39d510a8ac0a6901f6435ee",
        "golden backup MAC"
    );
    let mut check = b.backup_mac();
    check.update(&body);
    assert!(check.verify(&got));
    let mut other = Barrier::new(&Secret32::from_bytes([0x45; 32])).backup_mac();
    other.update(&body);
    assert!(!other.verify(&got), "another root key does not check it");
}

/// The cipher that `Aes256Gcm` builds from each data key wipes its key schedule when
/// dropped: a compile-time check that the `zeroize` feature reaches the `aes` crate
/// (workspace Cargo.toml). `ghash` and `polyval` get the same feature there; they wipe
/// in `Drop` without the marker trait, so only `aes` can be checked this way.
#[test]
fn the_cipher_wipes_its_key_schedule() {
    fn wiped<T: zeroize::ZeroizeOnDrop>() {}
    wiped::<aes::Aes256>();
}

/// The hash states inside HMAC and HKDF (`sha2`'s, which after absorbing a key are key
/// material) are wiped when dropped: the `zeroize` features of `sha2` and `hmac` stay on.
#[test]
fn hash_states_are_wiped_on_drop() {
    fn wiped<T: zeroize::ZeroizeOnDrop>() {}
    wiped::<sha2::Sha256>();
}

/// Golden blob of the key routes: key `k-1` version 7, context `{"app": "billing"}`,
/// plaintext `hello`.
const BLOB_GOLDEN_HEX: &str = "53424b31036b2d310000000722222222222222222222222222222222222222222222222222222222222222223333333333333333333333335b5a1c3c4abbbdb963c209c4bfd6e18b87850e52e1";

fn context(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn blob_golden_vector_is_stable() {
    let m = Secret32::from_bytes(MATERIAL);
    let ctx = context(&[("app", "billing")]);
    let blob = seal_blob_with(&m, &header(), &ctx, b"hello", &SALT, &NONCE).unwrap();
    assert_eq!(hex::encode(&blob), BLOB_GOLDEN_HEX);
    assert_eq!(open_blob(&m, &ctx, &blob).unwrap().as_slice(), b"hello");
    assert_eq!(blob_key(&blob).unwrap(), header());
}

/// aws-lc-rs opens the golden blob from the layout in `docs/design/crypto.md`.
#[test]
fn blob_golden_vector_opens_with_aws_lc_rs() {
    let blob = hex::decode(BLOB_GOLDEN_HEX).unwrap();
    assert_eq!(&blob[..4], b"SBK1");
    let l = blob[4] as usize;
    assert_eq!(&blob[5..5 + l], b"k-1");
    assert_eq!(&blob[5 + l..9 + l], &7u32.to_be_bytes());
    let salt = &blob[9 + l..41 + l];
    let nonce = &blob[41 + l..53 + l];
    let dk = hkdf_by_aws_lc(salt, &MATERIAL, b"strongbox/v1/kms-blob-key");
    let mut aad = b"strongbox/v1/kms-blob".to_vec();
    aad.extend_from_slice(&blob[..41 + l]);
    aad.extend_from_slice(&1u32.to_be_bytes());
    for s in ["app", "billing"] {
        aad.extend_from_slice(&(s.len() as u32).to_be_bytes());
        aad.extend_from_slice(s.as_bytes());
    }
    assert_eq!(open_by_aws_lc(&dk, nonce, &aad, &blob[53 + l..]), b"hello");
}

#[test]
fn a_blob_opens_only_with_its_context_material_and_bytes() {
    let m = Secret32::from_bytes(MATERIAL);
    let ctx = context(&[("app", "billing"), ("env", "prod")]);
    let blob = seal_blob(&m, &header(), &ctx, b"data").unwrap();
    assert_eq!(open_blob(&m, &ctx, &blob).unwrap().as_slice(), b"data");
    // Another context: one value changed, one pair missing, one more, none, and the same
    // bytes split differently between name and value.
    for other in [
        context(&[("app", "billing"), ("env", "dev")]),
        context(&[("app", "billing")]),
        context(&[("app", "billing"), ("env", "prod"), ("x", "")]),
        context(&[]),
        context(&[("app", "billing"), ("envp", "rod")]),
    ] {
        assert!(open_blob(&m, &other, &blob).is_err(), "{other:?}");
    }
    // Other material (another key, or another version of it).
    assert!(open_blob(&Secret32::from_bytes([0x12; 32]), &ctx, &blob).is_err());
    // A header naming another key or version, and every single flipped byte.
    let mut moved = blob.clone();
    moved[5 + 2] = b'2';
    assert!(open_blob(&m, &ctx, &moved).is_err());
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        assert!(open_blob(&m, &ctx, &b).is_err(), "byte {i} flipped");
    }
    // Cut short anywhere.
    for n in 0..blob.len() {
        assert!(open_blob(&m, &ctx, &blob[..n]).is_err(), "cut at {n}");
    }
    // A secret's sealed value is not a blob, nor a blob a secret's value.
    let sealed = seal_secret(&m, &header(), binding(), b"data").unwrap();
    assert!(open_blob(&m, &ctx, &sealed).is_err());
    assert!(open_secret(&m, binding(), &blob).is_err());
}
