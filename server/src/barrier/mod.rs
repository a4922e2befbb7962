//! The barrier: the only module that touches `aes-gcm`, `hkdf` and `hmac`.
//!
//! Key hierarchy (drawn in `docs/design/crypto.md`):
//! root key (256 bit, never stored in the database)
//!   ├─ HKDF-SHA256 info `strongbox/v1/keycheck`  → proves an unseal used the right root key
//!   ├─ HKDF-SHA256 info `strongbox/v1/cmk-wrap`  → wraps each CMK version's material
//!   ├─ HKDF-SHA256 info `strongbox/v1/value-mac` → HMAC of values for idempotency checks
//!   └─ HKDF-SHA256 info `strongbox/v1/audit-hmac` → HMAC chain over the audit trail
//! CMK version material (256 bit, random, stored wrapped)
//!   └─ HKDF-SHA256 salt = 32 random bytes per secret version, info `strongbox/v1/secret-data-key`
//!      → a fresh data key per secret version, sealing the value with AES-256-GCM.
//!   └─ HKDF-SHA256 salt = 32 random bytes per blob, info `strongbox/v1/kms-blob-key`
//!      → a fresh key per ciphertext blob of the key routes (`encrypt`, `generate-data-key`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit as MacKeyInit, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Format byte of every ciphertext this version writes.
pub const FORMAT_V1: u8 = 0x01;
const INFO_KEYCHECK: &[u8] = b"strongbox/v1/keycheck";
const INFO_CMK_WRAP: &[u8] = b"strongbox/v1/cmk-wrap";
const INFO_VALUE_MAC: &[u8] = b"strongbox/v1/value-mac";
const INFO_AUDIT_HMAC: &[u8] = b"strongbox/v1/audit-hmac";
const INFO_BACKUP_MAC: &[u8] = b"strongbox/v1/backup-mac";
const INFO_ROTATION_TOKEN_ID: &[u8] = b"strongbox/v1/rotation-token-id";
const TAG_AUDIT_RECORD: &[u8] = b"strongbox/v1/audit-record";
const TAG_AUDIT_HEAD: &[u8] = b"strongbox/v1/audit-head";
const TAG_AUDIT_BASE: &[u8] = b"strongbox/v1/audit-base";
const INFO_SECRET_DATA_KEY: &[u8] = b"strongbox/v1/secret-data-key";
const INFO_KMS_BLOB_KEY: &[u8] = b"strongbox/v1/kms-blob-key";
const AAD_KMS_BLOB: &[u8] = b"strongbox/v1/kms-blob";
const AAD_CMK: &[u8] = b"strongbox/v1/cmk";
const AAD_SECRET: &[u8] = b"strongbox/v1/secret";
const AAD_KEYCHECK: &[u8] = b"strongbox/v1/keycheck";
const KEYCHECK_PLAINTEXT: &[u8] = b"strongbox root key check";

/// Errors of the barrier. None carries key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BarrierError {
    /// The root key does not open this database.
    #[error("the root key does not match this database")]
    WrongRootKey,
    /// The root key text is not 32 bytes of base64.
    #[error("a root key is 32 bytes written as base64 (44 characters)")]
    BadRootKey,
    /// A ciphertext failed authentication or is malformed.
    #[error("ciphertext does not open: {0}")]
    Open(&'static str),
}

/// 256 bits of key material, wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret32(Zeroizing<[u8; 32]>);

impl Secret32 {
    /// Fresh random material from the operating system.
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// From raw bytes (tests and golden vectors).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Zeroizing::new(b))
    }

    /// From a slice of 32 bytes, copied straight into the wiped buffer (no copy of the
    /// material left behind on the stack); `None` for another length.
    fn from_slice(b: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        if b.len() != k.len() {
            return None;
        }
        k.copy_from_slice(b);
        Some(Self(k))
    }

    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// The root key: unseals the server; never written into the database.
pub type RootKey = Secret32;
/// One CMK version's material.
pub type CmkMaterial = Secret32;

impl RootKey {
    /// Parses the base64 form kept in the root key file or `STRONGBOX_ROOT_KEY`.
    pub fn from_base64(text: &str) -> Result<Self, BarrierError> {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| BarrierError::BadRootKey)?,
        );
        Self::from_slice(&raw).ok_or(BarrierError::BadRootKey)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes()))
    }
}

fn derive(ikm: &[u8], salt: Option<&[u8]>, info: &[u8]) -> Secret32 {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(info, out.as_mut()).is_err() {
        unreachable!("HKDF-SHA256 expand of 32 bytes");
    }
    Secret32(out)
}

fn seal(key: &Secret32, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes()));
    match cipher.encrypt(
        Nonce::from_slice(nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        Ok(ct) => ct,
        // AES-GCM encryption only fails for inputs over 64 GiB.
        Err(_) => unreachable!("AES-256-GCM seal of a bounded input"),
    }
}

fn open(
    key: &Secret32,
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes()));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| BarrierError::Open("authentication failed"))
}

fn random_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    OsRng.fill_bytes(&mut n);
    n
}

/// What a secret ciphertext is bound to, besides the CMK named in its header.
#[derive(Debug, Clone, Copy)]
pub struct SecretBinding<'a> {
    /// Secret name.
    pub name: &'a str,
    /// Version id.
    pub version_id: &'a str,
}

/// Header fields of a sealed secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// CMK id.
    pub key_id: String,
    /// CMK version.
    pub key_version: u32,
}

/// Purpose keys derived from the root key.
pub struct Barrier {
    keycheck: Secret32,
    cmk_wrap: Secret32,
    value_mac: Secret32,
    audit_hmac: Secret32,
    backup_mac: Secret32,
    rotation_token_id: Secret32,
}

fn hmac_sha256(key: &Secret32, parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = match <Hmac<Sha256> as MacKeyInit>::new_from_slice(key.bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl Barrier {
    /// Derives the purpose keys.
    pub fn new(root: &RootKey) -> Self {
        Self {
            keycheck: derive(root.bytes(), None, INFO_KEYCHECK),
            cmk_wrap: derive(root.bytes(), None, INFO_CMK_WRAP),
            value_mac: derive(root.bytes(), None, INFO_VALUE_MAC),
            audit_hmac: derive(root.bytes(), None, INFO_AUDIT_HMAC),
            backup_mac: derive(root.bytes(), None, INFO_BACKUP_MAC),
            rotation_token_id: derive(root.bytes(), None, INFO_ROTATION_TOKEN_ID),
        }
    }

    /// The id of the token the rotation of `secret` issues for its version `version_id`:
    /// the same every time (a step run again finds its token), and keyed, so that an id
    /// tells nothing of the secret to whoever may list the principal's tokens but not
    /// describe the secret (who could otherwise test guesses of its name).
    pub fn rotation_token_id(&self, secret: &str, version_id: &str) -> String {
        let h = hmac_sha256(
            &self.rotation_token_id,
            &[
                &(secret.len() as u64).to_be_bytes(),
                secret.as_bytes(),
                version_id.as_bytes(),
            ],
        );
        format!("tok_{}", hex::encode(&h[..12]))
    }

    /// A record that only this root key opens; stored at init.
    pub fn keycheck_record(&self) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = vec![FORMAT_V1];
        out.extend_from_slice(&nonce);
        out.extend(seal(
            &self.keycheck,
            &nonce,
            AAD_KEYCHECK,
            KEYCHECK_PLAINTEXT,
        ));
        out
    }

    /// Checks the stored record against this root key.
    pub fn verify_keycheck(&self, record: &[u8]) -> Result<(), BarrierError> {
        if record.len() < 13 || record[0] != FORMAT_V1 {
            return Err(BarrierError::WrongRootKey);
        }
        let pt = open(&self.keycheck, &record[1..13], AAD_KEYCHECK, &record[13..])
            .map_err(|_| BarrierError::WrongRootKey)?;
        if pt.as_slice() != KEYCHECK_PLAINTEXT {
            return Err(BarrierError::WrongRootKey);
        }
        Ok(())
    }

    fn cmk_aad(key_id: &str, version: u32) -> Vec<u8> {
        let mut aad = AAD_CMK.to_vec();
        aad.extend_from_slice(&(key_id.len() as u16).to_be_bytes());
        aad.extend_from_slice(key_id.as_bytes());
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    /// Wraps CMK material for storage: `format ‖ nonce(12) ‖ AES-GCM(material)`.
    pub fn wrap_cmk(&self, key_id: &str, version: u32, material: &CmkMaterial) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = vec![FORMAT_V1];
        out.extend_from_slice(&nonce);
        out.extend(seal(
            &self.cmk_wrap,
            &nonce,
            &Self::cmk_aad(key_id, version),
            material.bytes(),
        ));
        out
    }

    /// Unwraps stored CMK material.
    pub fn unwrap_cmk(
        &self,
        key_id: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<CmkMaterial, BarrierError> {
        if wrapped.len() != 1 + 12 + 32 + 16 || wrapped[0] != FORMAT_V1 {
            return Err(BarrierError::Open("bad wrapped key length or format"));
        }
        let pt = open(
            &self.cmk_wrap,
            &wrapped[1..13],
            &Self::cmk_aad(key_id, version),
            &wrapped[13..],
        )?;
        Secret32::from_slice(&pt).ok_or(BarrierError::Open("bad key length"))
    }

    /// HMAC-SHA256 of a value bound to its secret and version: lets a retried write be
    /// recognised as the same without decrypting, and without storing the value.
    pub fn value_mac(&self, binding: SecretBinding<'_>, data: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.value_mac,
            &[
                &(binding.name.len() as u16).to_be_bytes(),
                binding.name.as_bytes(),
                &(binding.version_id.len() as u16).to_be_bytes(),
                binding.version_id.as_bytes(),
                data,
            ],
        )
    }

    /// The MAC of audit record `seq`: covers its stored body and the previous record's
    /// MAC (zeros for the first), so an edit anywhere breaks every later link, and
    /// nobody without the root key can compute a new chain.
    pub fn audit_record_mac(&self, seq: u64, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.audit_hmac,
            &[TAG_AUDIT_RECORD, &seq.to_be_bytes(), prev, body],
        )
    }

    /// The MAC of the audit trail's base, left by a prune: the last record it deleted
    /// (`seq`) and that record's MAC, from which the chain goes on. Its own tag, so that
    /// an old head cannot be passed off as a base (which would let records be deleted
    /// from the start unseen).
    pub fn audit_base_mac(&self, seq: u64, last: &[u8; 32]) -> [u8; 32] {
        hmac_sha256(
            &self.audit_hmac,
            &[TAG_AUDIT_BASE, &seq.to_be_bytes(), last],
        )
    }

    /// The MAC of the audit head (record count and last record's MAC), so that cutting
    /// records off the end of the trail cannot be hidden by rewriting the head.
    pub fn audit_head_mac(&self, count: u64, last: &[u8; 32]) -> [u8; 32] {
        hmac_sha256(
            &self.audit_hmac,
            &[TAG_AUDIT_HEAD, &count.to_be_bytes(), last],
        )
    }
}

/// The HMAC-SHA256 of a backup file, fed as the file is written or read: only the root
/// key of the database it was taken from makes or checks it.
pub struct BackupMac(Hmac<Sha256>);

impl BackupMac {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The MAC of everything added.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of everything added (compared in constant time).
    pub fn verify(self, tag: &[u8]) -> bool {
        self.0.verify_slice(tag).is_ok()
    }
}

impl Barrier {
    /// A MAC for a backup file.
    pub fn backup_mac(&self) -> BackupMac {
        match <Hmac<Sha256> as MacKeyInit>::new_from_slice(self.backup_mac.bytes()) {
            Ok(m) => BackupMac(m),
            Err(_) => unreachable!("HMAC takes any key length"),
        }
    }
}

/// The signature of a rotation webhook call: HMAC-SHA256 keyed with the signing
/// secret's value over `timestamp ‖ "." ‖ body` (the `X-Strongbox-Timestamp` header
/// and the exact request body). Receivers recompute it and compare in constant time.
pub fn webhook_signature(key: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as MacKeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// SHA-256, for token look-ups (tokens are 256-bit random, so no slow hash is needed).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two digests.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// 32 random bytes, e.g. for tokens.
pub fn random_bytes32() -> [u8; 32] {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

fn secret_header(key_id: &str, key_version: u32, salt: &[u8; 32]) -> Result<Vec<u8>, BarrierError> {
    let id_len = u8::try_from(key_id.len()).map_err(|_| BarrierError::Open("key id too long"))?;
    let mut h = Vec::with_capacity(2 + key_id.len() + 4 + 32);
    h.push(FORMAT_V1);
    h.push(id_len);
    h.extend_from_slice(key_id.as_bytes());
    h.extend_from_slice(&key_version.to_be_bytes());
    h.extend_from_slice(salt);
    Ok(h)
}

fn secret_aad(binding: SecretBinding<'_>, header: &[u8]) -> Vec<u8> {
    let mut aad = AAD_SECRET.to_vec();
    aad.extend_from_slice(&(binding.name.len() as u16).to_be_bytes());
    aad.extend_from_slice(binding.name.as_bytes());
    aad.extend_from_slice(&(binding.version_id.len() as u16).to_be_bytes());
    aad.extend_from_slice(binding.version_id.as_bytes());
    aad.extend_from_slice(header);
    aad
}

/// Seals a secret version's value under a CMK version, with a fresh data key.
pub fn seal_secret(
    material: &CmkMaterial,
    header: &SealedHeader,
    binding: SecretBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    let mut salt = [0u8; 32];
    OsRng.fill_bytes(&mut salt);
    seal_secret_with(material, header, binding, plaintext, &salt, &random_nonce())
}

/// [`seal_secret`] with a given salt and nonce (and golden test vectors).
fn seal_secret_with(
    material: &CmkMaterial,
    header: &SealedHeader,
    binding: SecretBinding<'_>,
    plaintext: &[u8],
    salt: &[u8; 32],
    nonce: &[u8; 12],
) -> Result<Vec<u8>, BarrierError> {
    let mut out = secret_header(&header.key_id, header.key_version, salt)?;
    let data_key = derive(material.bytes(), Some(salt), INFO_SECRET_DATA_KEY);
    let aad = secret_aad(binding, &out);
    out.extend_from_slice(nonce);
    out.extend(seal(&data_key, nonce, &aad, plaintext));
    Ok(out)
}

/// Reads the CMK id and version from a sealed value's header.
pub fn sealed_header(ct: &[u8]) -> Result<SealedHeader, BarrierError> {
    if ct.len() < 2 || ct[0] != FORMAT_V1 {
        return Err(BarrierError::Open("unknown format"));
    }
    let l = ct[1] as usize;
    if ct.len() < 2 + l + 4 + 32 + 12 + 16 {
        return Err(BarrierError::Open("truncated"));
    }
    let key_id = std::str::from_utf8(&ct[2..2 + l])
        .map_err(|_| BarrierError::Open("key id not UTF-8"))?
        .to_string();
    let mut v = [0u8; 4];
    v.copy_from_slice(&ct[2 + l..6 + l]);
    Ok(SealedHeader {
        key_id,
        key_version: u32::from_be_bytes(v),
    })
}

/// Opens a sealed secret value with the CMK version named in its header.
pub fn open_secret(
    material: &CmkMaterial,
    binding: SecretBinding<'_>,
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let header = sealed_header(ct)?;
    let hlen = 2 + header.key_id.len() + 4 + 32;
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&ct[hlen - 32..hlen]);
    let data_key = derive(material.bytes(), Some(&salt), INFO_SECRET_DATA_KEY);
    let aad = secret_aad(binding, &ct[..hlen]);
    open(&data_key, &ct[hlen..hlen + 12], &aad, &ct[hlen + 12..])
}

/// The clear header of a ciphertext blob: magic, key id, key version and salt.
fn blob_header(header: &SealedHeader, salt: &[u8; 32]) -> Result<Vec<u8>, BarrierError> {
    let id_len =
        u8::try_from(header.key_id.len()).map_err(|_| BarrierError::Open("key id too long"))?;
    let mut h = Vec::with_capacity(4 + 1 + header.key_id.len() + 4 + 32);
    h.extend_from_slice(strongbox_schemas::CIPHERTEXT_BLOB_MAGIC);
    h.push(id_len);
    h.extend_from_slice(header.key_id.as_bytes());
    h.extend_from_slice(&header.key_version.to_be_bytes());
    h.extend_from_slice(salt);
    Ok(h)
}

/// What a blob is bound to besides its header: the encryption context, each name and
/// value with its length, in name order (a `BTreeMap` iterates so), so that no two
/// different maps give the same bytes.
fn blob_aad(context: &std::collections::BTreeMap<String, String>, header: &[u8]) -> Vec<u8> {
    let mut aad = AAD_KMS_BLOB.to_vec();
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        aad.extend_from_slice(&(k.len() as u32).to_be_bytes());
        aad.extend_from_slice(k.as_bytes());
        aad.extend_from_slice(&(v.len() as u32).to_be_bytes());
        aad.extend_from_slice(v.as_bytes());
    }
    aad
}

/// Encrypts caller data under a CMK version for the key routes, with a fresh key derived
/// from the material and a random salt: `"SBK1" ‖ id len u8 ‖ key id ‖ version u32 ‖
/// salt(32) ‖ nonce(12) ‖ AES-256-GCM(plaintext) ‖ tag(16)`, the context in the AAD.
pub fn seal_blob(
    material: &CmkMaterial,
    header: &SealedHeader,
    context: &std::collections::BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    let mut salt = [0u8; 32];
    OsRng.fill_bytes(&mut salt);
    seal_blob_with(material, header, context, plaintext, &salt, &random_nonce())
}

/// [`seal_blob`] with a given salt and nonce (and golden test vectors).
fn seal_blob_with(
    material: &CmkMaterial,
    header: &SealedHeader,
    context: &std::collections::BTreeMap<String, String>,
    plaintext: &[u8],
    salt: &[u8; 32],
    nonce: &[u8; 12],
) -> Result<Vec<u8>, BarrierError> {
    let mut out = blob_header(header, salt)?;
    let key = derive(material.bytes(), Some(salt), INFO_KMS_BLOB_KEY);
    let aad = blob_aad(context, &out);
    out.extend_from_slice(nonce);
    out.extend(seal(&key, nonce, &aad, plaintext));
    Ok(out)
}

/// The key id and version a blob's header names.
pub fn blob_key(blob: &[u8]) -> Result<SealedHeader, BarrierError> {
    let (key_id, key_version) = strongbox_schemas::ciphertext_blob_key(blob)
        .ok_or(BarrierError::Open("not a ciphertext blob"))?;
    Ok(SealedHeader {
        key_id: key_id.to_string(),
        key_version,
    })
}

/// Opens a blob of [`seal_blob`] with the material of the version its header names.
pub fn open_blob(
    material: &CmkMaterial,
    context: &std::collections::BTreeMap<String, String>,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let header = blob_key(blob)?;
    let hlen = 4 + 1 + header.key_id.len() + 4 + 32;
    if blob.len() < hlen + 12 + 16 {
        return Err(BarrierError::Open("truncated"));
    }
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&blob[hlen - 32..hlen]);
    let key = derive(material.bytes(), Some(&salt), INFO_KMS_BLOB_KEY);
    let aad = blob_aad(context, &blob[..hlen]);
    open(&key, &blob[hlen..hlen + 12], &aad, &blob[hlen + 12..])
}

/// `n` random bytes from the operating system (data keys), wiped when dropped.
pub fn random_secret_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    OsRng.fill_bytes(b.as_mut_slice());
    b
}

#[cfg(test)]
mod tests;
