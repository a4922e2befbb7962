//! Cryptography with a CMK for callers: `encrypt`, `decrypt` and data keys, as KMS's
//! `Encrypt`, `Decrypt`, `GenerateDataKey` and `GenerateDataKeyWithoutPlaintext`. The
//! ciphertext blobs name their key and key version in a clear header and bind the
//! caller's encryption context (`docs/design/crypto.md`). Nothing here is stored: the
//! audit trail records the action and the key, never the data, the data key or the
//! context.

use std::collections::BTreeMap;

use base64::Engine as _;
use strongbox_schemas::{
    self as api, DataKeySpec, ErrorCode, MAX_DATA_KEY_BYTES, MAX_ENCRYPT_PLAINTEXT_BYTES,
    MAX_ENCRYPTION_CONTEXT_BYTES,
};
use zeroize::Zeroizing;

use super::Service;
use super::authz::Actor;
use super::keys::{
    DEFAULT_KEY_ALIAS, check_through_alias, check_usable, is_default_key, resolve_key_to_seal,
};
use super::records::KeyRecord;
use crate::barrier::{self, SealedHeader};
use crate::error::{Error, Result};
use crate::storage::Reader;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The largest blob there can be: the largest plaintext under the longest key id.
const MAX_BLOB_BYTES: usize = MAX_ENCRYPT_PLAINTEXT_BYTES + 4 + 1 + 255 + 4 + 32 + 12 + 16;

fn invalid_ciphertext(why: &str) -> Error {
    Error::new(
        ErrorCode::InvalidCiphertext,
        format!("ciphertext_blob {why}"),
    )
}

/// A blob sent as base64, no longer than any blob can be.
fn decode_blob(text: &str) -> Result<Vec<u8>> {
    if text.len() > MAX_BLOB_BYTES.div_ceil(3) * 4 {
        return Err(invalid_ciphertext(&format!(
            "is longer than any blob (at most {MAX_BLOB_BYTES} bytes)"
        )));
    }
    B64.decode(text)
        .map_err(|_| invalid_ciphertext("is not standard base64"))
}

/// An encryption context: names not empty, and not too much of it. Its names and values
/// are not repeated in errors.
fn check_context(ctx: &BTreeMap<String, String>) -> Result<()> {
    if ctx.keys().any(String::is_empty) {
        return Err(Error::invalid(
            "encryption_context",
            "a name may not be empty",
        ));
    }
    let size: usize = ctx.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENCRYPTION_CONTEXT_BYTES {
        return Err(Error::invalid(
            "encryption_context",
            format!("at most {MAX_ENCRYPTION_CONTEXT_BYTES} bytes of names and values together"),
        ));
    }
    Ok(())
}

/// A data key's length from its request.
fn data_key_len(req: &api::GenerateDataKeyRequest) -> Result<usize> {
    match (req.key_spec, req.number_of_bytes) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "number_of_bytes",
            "give key_spec or number_of_bytes, not both",
        )),
        (Some(DataKeySpec::Aes128), None) => Ok(16),
        (Some(DataKeySpec::Aes256), None) | (None, None) => Ok(32),
        (None, Some(n)) if (1..=MAX_DATA_KEY_BYTES).contains(&n) => Ok(n as usize),
        (None, Some(_)) => Err(Error::invalid(
            "number_of_bytes",
            format!("1–{MAX_DATA_KEY_BYTES}"),
        )),
    }
}

/// `who` may do `action` on key `k`, named `key_ref` (also through an alias), it is not
/// the default key, and it is usable now (see `Service::key_to_use`).
fn check_key_use(
    r: &dyn Reader,
    k: &KeyRecord,
    key_ref: &str,
    action: &str,
    who: &Actor,
) -> Result<()> {
    check_through_alias(who, action, key_ref, k)?;
    if is_default_key(r, &k.key_id)? {
        return Err(default_key_refused());
    }
    check_usable(k)
}

fn default_key_refused() -> Error {
    Error::invalid(
        "key_id",
        format!(
            "{DEFAULT_KEY_ALIAS} seals only the secrets that name no key; create a CMK for your own data"
        ),
    )
}

/// The key a key route names. The default key's alias is refused as such before it is
/// looked up: it exists only once a secret named no key, and the answer must not tell
/// whether one did (404 before, 400 after).
fn resolve_for_use(r: &dyn Reader, key_ref: &str) -> Result<KeyRecord> {
    if key_ref == DEFAULT_KEY_ALIAS {
        return Err(default_key_refused());
    }
    resolve_key_to_seal(r, key_ref)
}

/// What `generate-data-key` made.
pub struct DataKey {
    /// The key that encrypted it.
    pub key_id: String,
    /// Its version.
    pub key_version: u32,
    /// The encrypted copy, base64.
    pub ciphertext_blob: String,
    /// The data key.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl Service {
    /// The key a key route names, if `who` may do `action` on it also through an alias,
    /// and it is usable now. A destroyed key named by its id is `KeyDeleted`. The
    /// default key is the server's, as an AWS managed key is the service's: it seals the
    /// secrets that name no key and nothing else (it can be neither disabled nor
    /// deleted, so data of callers under it could never be shredded).
    fn key_to_use(
        &self,
        r: &dyn Reader,
        key_ref: &str,
        action: &str,
        who: &Actor,
    ) -> Result<KeyRecord> {
        let k = resolve_for_use(r, key_ref)?;
        check_key_use(r, &k, key_ref, action, who)?;
        Ok(k)
    }

    /// Seals `plaintext` under the key's primary version.
    fn seal_under(
        &self,
        k: &KeyRecord,
        context: &BTreeMap<String, String>,
        plaintext: &[u8],
    ) -> Result<(SealedHeader, String)> {
        let material = self.material(k, k.primary_version)?;
        let header = SealedHeader {
            key_id: k.key_id.clone(),
            key_version: k.primary_version,
        };
        let blob = barrier::seal_blob(&material, &header, context, plaintext)?;
        Ok((header, B64.encode(blob)))
    }

    /// Encrypts up to [`MAX_ENCRYPT_PLAINTEXT_BYTES`] under the key's primary version
    /// (`kms:Encrypt`).
    pub fn encrypt(
        &self,
        key_ref: &str,
        req: &api::EncryptRequest,
        who: &Actor,
    ) -> Result<api::EncryptResponse> {
        check_context(&req.encryption_context)?;
        let plaintext = Zeroizing::new(
            B64.decode(&req.plaintext)
                .map_err(|_| Error::invalid("plaintext", "must be standard base64"))?,
        );
        if plaintext.is_empty() {
            return Err(Error::invalid("plaintext", "must not be empty"));
        }
        if plaintext.len() > MAX_ENCRYPT_PLAINTEXT_BYTES {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "plaintext: at most {MAX_ENCRYPT_PLAINTEXT_BYTES} bytes; encrypt more under a data key (generate-data-key)"
                ),
            ));
        }
        let k = self.key_to_use(&*self.store().snapshot()?, key_ref, "kms:Encrypt", who)?;
        let (header, ciphertext_blob) = self.seal_under(&k, &req.encryption_context, &plaintext)?;
        Ok(api::EncryptResponse {
            key_id: header.key_id,
            key_version: header.key_version,
            ciphertext_blob,
        })
    }

    /// Opens a blob made under this key, with the version its header names
    /// (`kms:Decrypt`). A blob of another key, a version the key never had, a damaged
    /// blob and another encryption context are all `InvalidCiphertext`.
    pub fn decrypt(
        &self,
        key_ref: &str,
        req: &api::DecryptRequest,
        who: &Actor,
    ) -> Result<api::DecryptResponse> {
        check_context(&req.encryption_context)?;
        let blob = decode_blob(&req.ciphertext_blob)?;
        let k = self.key_to_use(&*self.store().snapshot()?, key_ref, "kms:Decrypt", who)?;
        let (named, plaintext) = self.open_under(&k, &blob, &req.encryption_context, "this key")?;
        Ok(api::DecryptResponse {
            key_id: named.key_id,
            key_version: named.key_version,
            plaintext: B64.encode(plaintext.as_slice()),
        })
    }

    /// Opens `blob` with key `k`, which must be the one its header names (`called` in
    /// the refusal), with the version it names.
    fn open_under(
        &self,
        k: &KeyRecord,
        blob: &[u8],
        context: &BTreeMap<String, String>,
        called: &str,
    ) -> Result<(SealedHeader, Zeroizing<Vec<u8>>)> {
        let named = barrier::blob_key(blob)
            .map_err(|_| invalid_ciphertext("is not a Strongbox ciphertext blob"))?;
        if named.key_id != k.key_id {
            return Err(invalid_ciphertext(&format!("was not made under {called}")));
        }
        if !k.versions.iter().any(|v| v.version == named.key_version) {
            return Err(invalid_ciphertext("names a version this key does not have"));
        }
        let material = self.material(k, named.key_version)?;
        let plaintext = barrier::open_blob(&material, context, blob).map_err(|_| {
            invalid_ciphertext(
                "does not open: it is damaged, or the encryption context is not the one it was made with",
            )
        })?;
        Ok((named, plaintext))
    }

    /// Decrypts a blob and encrypts its data under this key's primary version, the data
    /// never leaving the server (`kms:ReEncryptTo` on this key, `kms:ReEncryptFrom` on
    /// the key that made the blob, named by `source_key_id` or else by the blob). After
    /// a rotation, a blob re-encrypted under its own key moves to the new primary
    /// version.
    pub fn re_encrypt(
        &self,
        key_ref: &str,
        req: &api::ReEncryptRequest,
        who: &Actor,
    ) -> Result<api::ReEncryptResponse> {
        check_context(&req.source_encryption_context)?;
        if let Some(c) = &req.destination_encryption_context {
            check_context(c)?;
        }
        let blob = decode_blob(&req.ciphertext_blob)?;
        let named = barrier::blob_key(&blob)
            .map_err(|_| invalid_ciphertext("is not a Strongbox ciphertext blob"))?;
        let source_ref = req.source_key_id.as_deref().unwrap_or(&named.key_id);
        // The trail of the source key shows the request too, also when it is refused.
        super::audit::note_related(&format!("key/{source_ref}"));
        // Checked as the caller or the blob named it, before it is looked up: the same
        // refusal whether it exists or not.
        who.require(
            "kms:ReEncryptFrom",
            &format!("key/{source_ref}"),
            "re-encrypting reads the data under the key that made the blob",
        )?;
        // Both keys from one snapshot.
        let snap = self.store().snapshot()?;
        let source = resolve_for_use(&*snap, source_ref)?;
        if source.key_id != source_ref {
            // Named by alias: the key's own trail shows the request too, also when the
            // check through the alias refuses it.
            super::audit::note_related(&format!("key/{}", source.key_id));
        }
        check_key_use(&*snap, &source, source_ref, "kms:ReEncryptFrom", who)?;
        // The new key is checked before anything is opened.
        let k = self.key_to_use(&*snap, key_ref, "kms:ReEncryptTo", who)?;
        let (from, plaintext) = self.open_under(
            &source,
            &blob,
            &req.source_encryption_context,
            "source_key_id",
        )?;
        // No destination context: the blob keeps the one it had.
        let context = req
            .destination_encryption_context
            .as_ref()
            .unwrap_or(&req.source_encryption_context);
        let (header, ciphertext_blob) = self.seal_under(&k, context, &plaintext)?;
        Ok(api::ReEncryptResponse {
            source_key_id: from.key_id,
            source_key_version: from.key_version,
            key_id: header.key_id,
            key_version: header.key_version,
            ciphertext_blob,
        })
    }

    /// A fresh random data key, and a copy of it encrypted under the key's primary
    /// version (`action`: `kms:GenerateDataKey`, or
    /// `kms:GenerateDataKeyWithoutPlaintext` when the caller gets only the copy).
    pub fn generate_data_key(
        &self,
        key_ref: &str,
        req: &api::GenerateDataKeyRequest,
        action: &str,
        who: &Actor,
    ) -> Result<DataKey> {
        check_context(&req.encryption_context)?;
        let len = data_key_len(req)?;
        let k = self.key_to_use(&*self.store().snapshot()?, key_ref, action, who)?;
        let plaintext = barrier::random_secret_bytes(len);
        let (header, ciphertext_blob) = self.seal_under(&k, &req.encryption_context, &plaintext)?;
        Ok(DataKey {
            key_id: header.key_id,
            key_version: header.key_version,
            ciphertext_blob,
            plaintext,
        })
    }
}
