//! Customer master keys and their aliases.

use strongbox_schemas::{self as api, ErrorCode, validate_alias_name};

use super::Service;
use super::authz::Actor;
use super::records::{
    KeyRecord, KeyStateRec, KeyVersionRec, alias_arn, decode, encode, list_page, load,
    validate_description, validate_tags,
};
use super::rotation::{ScheduleJob, reindex_key, schedule_entry};
use crate::barrier::{CmkMaterial, Secret32};
use crate::error::{Error, Result, interval_in};
use crate::storage::{Reader, Table, Txn};

/// A key version's material as the cache holds it, with the wrapped bytes it was
/// unwrapped from (see [`Service::material`]).
pub(super) struct CachedMaterial {
    wrapped: Vec<u8>,
    material: CmkMaterial,
}

const META_DEFAULT_KEY: &[u8] = b"default_key_id";
pub(crate) use strongbox_schemas::DEFAULT_KEY_ALIAS;
use strongbox_schemas::RESERVED_ALIAS_PREFIX;
const KEY_ROTATION_MIN: u64 = 7 * 86_400;
const KEY_ROTATION_MAX: u64 = 730 * 86_400;

fn key_not_found(key_ref: &str) -> Error {
    Error::new(ErrorCode::KeyNotFound, format!("key {key_ref} not found"))
}

/// Finds the key id a reference (key id or `alias/NAME`) names; destroyed keys count as absent.
pub(crate) fn resolve_key(r: &(impl Reader + ?Sized), key_ref: &str) -> Result<KeyRecord> {
    let key_id = if key_ref.starts_with("alias/") {
        match r.get(Table::Aliases, key_ref.as_bytes())? {
            Some(id) => String::from_utf8(id).map_err(Error::internal)?,
            None => {
                return Err(Error::new(
                    ErrorCode::AliasNotFound,
                    format!("{key_ref} not found"),
                ));
            }
        }
    } else {
        key_ref.to_string()
    };
    match load::<KeyRecord>(r, Table::Keys, key_id.as_bytes())? {
        Some(k) if k.state != KeyStateRec::Destroyed => Ok(k),
        _ => Err(key_not_found(key_ref)),
    }
}

/// The key a new secret version is sealed under: as [`resolve_key`], except that a
/// destroyed key named by its id is `KeyDeleted` (the secret names a key that existed;
/// reads say the same), not `KeyNotFound`.
pub(crate) fn resolve_key_to_seal(r: &(impl Reader + ?Sized), key_ref: &str) -> Result<KeyRecord> {
    resolve_key(r, key_ref).map_err(|e| {
        let destroyed = e.code == ErrorCode::KeyNotFound
            && matches!(
                load::<KeyRecord>(r, Table::Keys, key_ref.as_bytes()),
                Ok(Some(k)) if k.state == KeyStateRec::Destroyed
            );
        if destroyed {
            Error::new(
                ErrorCode::KeyDeleted,
                format!("key {key_ref} has been deleted and its material destroyed"),
            )
        } else {
            e
        }
    })
}

/// For a key route that named the key by alias: the route's `action` on the key it
/// resolved to (see [`Actor::require_key_behind_alias`]).
pub(crate) fn check_through_alias(
    who: &Actor,
    action: &str,
    key_ref: &str,
    k: &KeyRecord,
) -> Result<()> {
    if key_ref.starts_with("alias/") {
        who.require_key_behind_alias(action, key_ref, &k.key_id)?;
    }
    Ok(())
}

/// Refuses keys that cannot be used for cryptography now.
pub(crate) fn check_usable(k: &KeyRecord) -> Result<()> {
    check_usable_as(k, || format!("key {}", k.key_id))
}

/// [`check_usable`], with the key called `called` in the error: a secret's errors do not
/// name a key the caller may not be allowed to describe.
/// `called` is asked only for an error: a usable key (every read) costs nothing more.
pub(crate) fn check_usable_as(k: &KeyRecord, called: impl FnOnce() -> String) -> Result<()> {
    match k.state {
        KeyStateRec::Enabled => Ok(()),
        KeyStateRec::Disabled => Err(Error::new(
            ErrorCode::KeyDisabled,
            format!("{} is disabled", called()),
        )),
        KeyStateRec::PendingDeletion => Err(Error::new(
            ErrorCode::KeyPendingDeletion,
            format!("{} is scheduled for deletion", called()),
        )),
        KeyStateRec::Destroyed => Err(Error::new(
            ErrorCode::KeyDeleted,
            format!("{} has been deleted and its material destroyed", called()),
        )),
    }
}

/// Most on-demand rotations of one key.
pub(crate) const MAX_ON_DEMAND_ROTATIONS: usize = 25;

/// Whether `key_id` is the default key of the secrets that name none.
pub(crate) fn is_default_key(r: &(impl Reader + ?Sized), key_id: &str) -> Result<bool> {
    Ok(r.get(Table::Meta, META_DEFAULT_KEY)?.as_deref() == Some(key_id.as_bytes()))
}

/// The default key protects every secret that names none: it is the server's, as an
/// AWS managed key is, and cannot be disabled or deleted (that would make those secrets
/// unreadable, then destroy them).
fn refuse_default_key(t: &Txn<'_>, k: &KeyRecord, what: &str) -> Result<()> {
    if is_default_key(t, &k.key_id)? {
        return Err(Error::new(
            ErrorCode::InvalidState,
            format!(
                "key {} is the default key (alias {DEFAULT_KEY_ALIAS}) of the secrets that name no key; it cannot be {what}",
                k.key_id
            ),
        ));
    }
    Ok(())
}

impl Service {
    fn new_key_record(
        &self,
        now: i64,
        description: String,
        tags: std::collections::BTreeMap<String, String>,
    ) -> KeyRecord {
        let key_id = uuid::Uuid::new_v4().to_string();
        let material = Secret32::random();
        let wrapped = self.inner.barrier.wrap_cmk(&key_id, 1, &material);
        KeyRecord {
            key_id,
            description,
            key_spec: api::KeySpec::Aes256,
            state: KeyStateRec::Enabled,
            state_before_deletion: None,
            creation_date: now,
            delete_date: None,
            automatic_rotation: false,
            rotation_interval: None,
            last_rotation_date: None,
            rotation_enabled_date: None,
            schedule_base: None,
            pending_window_days: None,
            tags,
            primary_version: 1,
            versions: vec![KeyVersionRec {
                version: 1,
                created: now,
                on_demand: false,
                wrapped: Some(wrapped),
            }],
            scheduled_rotation: None,
            scheduled_destroy: None,
        }
    }

    /// Creates a CMK with fresh material.
    pub async fn create_key(&self, req: api::CreateKeyRequest) -> Result<api::Key> {
        let description = req.description.unwrap_or_default();
        validate_description(&description)?;
        let tags = req.tags.unwrap_or_default();
        validate_tags(&tags)?;
        if let Some(i) = &req.rotation_interval {
            interval_in("rotation_interval", i, KEY_ROTATION_MIN, KEY_ROTATION_MAX)?;
        }
        let now = self.now();
        let mut rec = self.new_key_record(now, description, tags);
        rec.automatic_rotation = req.automatic_rotation;
        rec.rotation_enabled_date = req.automatic_rotation.then_some(now);
        rec.rotation_interval = req.rotation_interval;
        self.write(move |t| {
            reindex_key(t, &mut rec);
            t.put(Table::Keys, rec.key_id.as_bytes(), encode(&rec));
            Ok(rec.to_api())
        })
        .await
    }

    /// The key a reference names.
    pub fn describe_key(&self, key_ref: &str, who: &Actor) -> Result<api::Key> {
        let k = resolve_key(self.store(), key_ref)?;
        check_through_alias(who, "kms:DescribeKey", key_ref, &k)?;
        Ok(k.to_api())
    }

    /// Keys in id order whose ids pass `visible`, a page at a time.
    pub fn list_keys(
        &self,
        limit: usize,
        page_token: Option<&str>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListKeysResponse> {
        let (keys, next_page_token) =
            list_page(self.store(), Table::Keys, limit, page_token, |_, v| {
                let rec: KeyRecord = decode(v)?;
                Ok(
                    (rec.state != KeyStateRec::Destroyed && visible(&rec.key_id))
                        .then(|| (rec.key_id.clone(), rec.to_api())),
                )
            })?;
        Ok(api::ListKeysResponse {
            keys,
            next_page_token,
        })
    }

    /// Runs `f` on the key `key_ref` names, for a route whose action is `action`.
    async fn modify_key<F>(
        &self,
        key_ref: &str,
        who: &Actor,
        action: &'static str,
        f: F,
    ) -> Result<api::Key>
    where
        F: FnOnce(&mut KeyRecord, i64, &mut Txn<'_>) -> Result<()> + Send + 'static,
    {
        let (key_ref, who) = (key_ref.to_string(), who.clone());
        let now = self.now();
        self.write(move |t| {
            let mut rec = resolve_key(t, &key_ref)?;
            check_through_alias(&who, action, &key_ref, &rec)?;
            f(&mut rec, now, t)?;
            reindex_key(t, &mut rec);
            t.put(Table::Keys, rec.key_id.as_bytes(), encode(&rec));
            Ok(rec.to_api())
        })
        .await
    }

    /// Changes description, tags or automatic rotation.
    pub async fn update_key(
        &self,
        key_ref: &str,
        req: api::UpdateKeyRequest,
        who: &Actor,
    ) -> Result<api::Key> {
        if let Some(d) = &req.description {
            validate_description(d)?;
        }
        if let Some(tags) = &req.tags {
            validate_tags(tags)?;
        }
        if let Some(i) = &req.rotation_interval {
            interval_in("rotation_interval", i, KEY_ROTATION_MIN, KEY_ROTATION_MAX)?;
        }
        self.modify_key(key_ref, who, "kms:UpdateKey", move |k, now, _| {
            if let Some(d) = req.description {
                k.description = d;
            }
            if let Some(tags) = req.tags {
                k.tags = tags;
            }
            if let Some(a) = req.automatic_rotation {
                // Turning it on starts the period (as in KMS): a key created long ago
                // does not rotate the moment rotation is enabled.
                if a && !k.automatic_rotation {
                    k.rotation_enabled_date = Some(now);
                }
                k.automatic_rotation = a;
            }
            if let Some(i) = req.rotation_interval {
                k.rotation_interval = Some(i);
            }
            Ok(())
        })
        .await
    }

    /// Enables a disabled key.
    pub async fn enable_key(&self, key_ref: &str, who: &Actor) -> Result<api::Key> {
        self.set_enabled(key_ref, who, true).await
    }

    /// Disables a key: secrets under it can no longer be read or written.
    pub async fn disable_key(&self, key_ref: &str, who: &Actor) -> Result<api::Key> {
        self.set_enabled(key_ref, who, false).await
    }

    async fn set_enabled(&self, key_ref: &str, who: &Actor, enabled: bool) -> Result<api::Key> {
        let action = if enabled {
            "kms:EnableKey"
        } else {
            "kms:DisableKey"
        };
        self.modify_key(key_ref, who, action, move |k, _, t| {
            if !enabled {
                refuse_default_key(t, k, "disabled")?;
            }
            if k.state == KeyStateRec::PendingDeletion {
                return Err(Error::new(
                    ErrorCode::KeyPendingDeletion,
                    format!(
                        "key {} is scheduled for deletion; cancel the deletion first",
                        k.key_id
                    ),
                ));
            }
            k.state = if enabled {
                KeyStateRec::Enabled
            } else {
                KeyStateRec::Disabled
            };
            Ok(())
        })
        .await
    }

    /// Adds a key version that becomes primary; older versions still decrypt. At most
    /// [`MAX_ON_DEMAND_ROTATIONS`] per key (every version stays in the key's record,
    /// read with each secret under it); the automatic schedule is not moved.
    pub async fn rotate_key(&self, key_ref: &str, who: &Actor) -> Result<api::Key> {
        let barrier_self = self.clone();
        self.modify_key(key_ref, who, "kms:RotateKey", move |k, now, _| {
            check_usable(k)?;
            if k.versions.iter().filter(|v| v.on_demand).count() >= MAX_ON_DEMAND_ROTATIONS {
                return Err(Error::new(
                    ErrorCode::InvalidState,
                    format!(
                        "key {} has been rotated on demand {MAX_ON_DEMAND_ROTATIONS} times, the most a key may be (as KMS limits on-demand rotation); automatic rotation has no such limit",
                        k.key_id
                    ),
                ));
            }
            barrier_self.add_key_version(k, now, true);
            Ok(())
        })
        .await
    }

    /// A new primary version. An automatic one (`on_demand` false) restarts the
    /// automatic schedule; an on-demand one keeps it where it was.
    pub(super) fn add_key_version(&self, k: &mut KeyRecord, now: i64, on_demand: bool) {
        let version = k.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let material = Secret32::random();
        let wrapped = self.inner.barrier.wrap_cmk(&k.key_id, version, &material);
        k.versions.push(KeyVersionRec {
            version,
            created: now,
            on_demand,
            wrapped: Some(wrapped),
        });
        k.primary_version = version;
        if on_demand {
            k.schedule_base = k
                .schedule_base
                .or(k.last_rotation_date)
                .or(Some(k.creation_date));
        } else {
            k.schedule_base = Some(now);
        }
        k.last_rotation_date = Some(now);
    }

    /// Schedules destruction of the key material after 7–366 days (default 30).
    pub async fn schedule_key_deletion(
        &self,
        key_ref: &str,
        days: Option<u32>,
        who: &Actor,
    ) -> Result<api::Key> {
        let asked = days;
        let days = days.unwrap_or(30);
        if !(7..=366).contains(&days) {
            return Err(Error::invalid(
                "pending_window_in_days",
                "must be between 7 and 366",
            ));
        }
        self.modify_key(key_ref, who, "kms:ScheduleKeyDeletion", move |k, now, t| {
            refuse_default_key(t, k, "scheduled for deletion")?;
            if k.state == KeyStateRec::PendingDeletion {
                // Asking again is answered as before; another window is refused, not
                // silently ignored (cancel the deletion, then schedule it again).
                return match (asked, k.pending_window_days) {
                    (Some(a), Some(w)) if a != w => Err(Error::new(
                        ErrorCode::InvalidState,
                        format!(
                            "key {} is already scheduled for deletion with a window of {w} days; cancel the deletion to schedule it with another",
                            k.key_id
                        ),
                    )),
                    _ => Ok(()),
                };
            }
            k.state_before_deletion = Some(k.state);
            k.state = KeyStateRec::PendingDeletion;
            k.delete_date = Some(now + i64::from(days) * 86_400);
            k.pending_window_days = Some(days);
            Ok(())
        })
        .await
    }

    /// Cancels a scheduled deletion; the key returns to the state it had before.
    pub async fn cancel_key_deletion(&self, key_ref: &str, who: &Actor) -> Result<api::Key> {
        self.modify_key(key_ref, who, "kms:CancelKeyDeletion", |k, _, _| {
            if k.state != KeyStateRec::PendingDeletion {
                return Err(Error::new(
                    ErrorCode::InvalidState,
                    format!("key {} is not scheduled for deletion", k.key_id),
                ));
            }
            k.state = k
                .state_before_deletion
                .take()
                .unwrap_or(KeyStateRec::Enabled);
            k.delete_date = None;
            k.pending_window_days = None;
            Ok(())
        })
        .await
    }

    /// The key that protects secrets naming none, created on first use: exactly once,
    /// because write jobs are serialised. A destroyed default is replaced.
    pub(crate) fn default_key(&self, t: &mut Txn<'_>, now: i64) -> Result<KeyRecord> {
        if let Some(id) = t.get(Table::Meta, META_DEFAULT_KEY)?
            && let Some(k) = load::<KeyRecord>(t, Table::Keys, &id)?
            && k.state != KeyStateRec::Destroyed
        {
            // Its alias too, should it be missing: a secret naming the alias must find
            // the key it was sealed under.
            if t.get(Table::Aliases, DEFAULT_KEY_ALIAS.as_bytes())?
                .is_none()
            {
                t.put(Table::Aliases, DEFAULT_KEY_ALIAS.as_bytes(), id);
            }
            return Ok(k);
        }
        let rec = self.new_key_record(
            now,
            "Default key for secrets that name no encryption key".into(),
            Default::default(),
        );
        t.put(Table::Keys, rec.key_id.as_bytes(), encode(&rec));
        t.put(
            Table::Meta,
            META_DEFAULT_KEY,
            rec.key_id.as_bytes().to_vec(),
        );
        t.put(
            Table::Aliases,
            DEFAULT_KEY_ALIAS.as_bytes(),
            rec.key_id.as_bytes().to_vec(),
        );
        tracing::info!(key_id = %rec.key_id, "created the default key");
        Ok(rec)
    }

    /// The key `key_ref` names, through `resolve`; but the default key's alias, before any
    /// secret made the default key, makes it now (as a secret that names no key would),
    /// so that a secret may name the default key by its alias from the start.
    pub(crate) fn or_default_key<'t>(
        &self,
        t: &mut Txn<'t>,
        key_ref: &str,
        now: i64,
        resolve: impl FnOnce(&Txn<'t>, &str) -> Result<KeyRecord>,
    ) -> Result<KeyRecord> {
        if key_ref == DEFAULT_KEY_ALIAS && t.get(Table::Aliases, key_ref.as_bytes())?.is_none() {
            return self.default_key(t, now);
        }
        resolve(t, key_ref)
    }

    /// Material of one key version, if the key is usable.
    ///
    /// The cache is filled by write jobs too, which see their batch's writes before the
    /// batch commits; a batch that fails to commit leaves the version unwritten, and a
    /// later rotation writes other material under the same number. So a cached material
    /// serves only the record holding the very wrapped bytes it came from (each wrapping
    /// has a nonce of its own): never the material of a version that was not kept.
    pub(crate) fn material(&self, k: &KeyRecord, version: u32) -> Result<CmkMaterial> {
        check_usable(k)?;
        let wrapped = k
            .versions
            .iter()
            .find(|v| v.version == version)
            .and_then(|v| v.wrapped.as_deref())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::KeyDeleted,
                    format!("key {} version {version} is gone", k.key_id),
                )
            })?;
        let cache_key = (k.key_id.clone(), version);
        if let Some(m) = self.inner.materials.read().ok().and_then(|c| {
            c.get(&cache_key)
                .filter(|c| c.wrapped == wrapped)
                .map(|c| c.material.clone())
        }) {
            return Ok(m);
        }
        let m = self.inner.barrier.unwrap_cmk(&k.key_id, version, wrapped)?;
        if let Ok(mut c) = self.inner.materials.write() {
            c.insert(
                cache_key,
                Box::new(CachedMaterial {
                    wrapped: wrapped.to_vec(),
                    material: m.clone(),
                }),
            );
        }
        Ok(m)
    }

    /// Destroys a key's material if its scheduled deletion is due at `now` (the tick's
    /// instant, which found the `destroy/` entry due at `entry_due`); returns whether it
    /// did. An entry the record no longer wants (deletion cancelled or put off) goes;
    /// one it still wants stays (the clock read again could have stepped back, and the
    /// index is not put back by a record that did not change).
    pub(super) async fn destroy_key_if_due(
        &self,
        entry_due: i64,
        key_id: &str,
        now: i64,
    ) -> Result<bool> {
        let id = key_id.to_string();
        let destroyed = self
            .write(move |t| {
                let entry = schedule_entry(entry_due, &ScheduleJob::Destroy(id.clone()));
                let Some(mut k) = load::<KeyRecord>(t, Table::Keys, id.as_bytes())? else {
                    t.delete(Table::RotationSchedule, &entry);
                    return Ok(false);
                };
                let due = k.state == KeyStateRec::PendingDeletion
                    && k.delete_date.is_some_and(|d| d <= now);
                if due {
                    // Crypto-shredding: without the wrapped material nothing under this key opens.
                    for v in &mut k.versions {
                        v.wrapped = None;
                    }
                    k.state = KeyStateRec::Destroyed;
                    for (alias, target) in t.scan(Table::Aliases, b"", None, usize::MAX)? {
                        if target == id.as_bytes() {
                            t.delete(Table::Aliases, &alias);
                        }
                    }
                }
                reindex_key(t, &mut k);
                if k.scheduled_destroy != Some(entry_due) {
                    t.delete(Table::RotationSchedule, &entry);
                }
                t.put(Table::Keys, id.as_bytes(), encode(&k));
                Ok::<_, Error>(due)
            })
            .await?;
        if destroyed {
            if let Ok(mut c) = self.inner.materials.write() {
                c.retain(|(kid, _), _| kid != key_id);
            }
            tracing::info!(key_id = %key_id, "key material destroyed");
        }
        Ok(destroyed)
    }

    /// Points an alias at a key, creating or moving it: `kms:CreateAlias` on the alias
    /// (the guard) and on `key/{key_id}`, so that an alias never points at a key the
    /// caller has no rights on (checked before the key is loaded: the same answer
    /// whether it exists or not).
    pub async fn put_alias(&self, alias: &str, key_id: &str, who: &Actor) -> Result<api::Alias> {
        self.put_alias_with(alias, key_id, false, who).await
    }

    /// [`put_alias`](Self::put_alias); with `create_only`, an alias that exists is
    /// `AlreadyExists`, not moved (as AWS KMS's `CreateAlias`): two creators racing
    /// cannot move each other's alias.
    pub async fn put_alias_with(
        &self,
        alias: &str,
        key_id: &str,
        create_only: bool,
        who: &Actor,
    ) -> Result<api::Alias> {
        validate_alias_name("alias", alias)?;
        if alias.starts_with(RESERVED_ALIAS_PREFIX) {
            return Err(Error::invalid(
                "alias",
                format!("aliases under {RESERVED_ALIAS_PREFIX} are reserved"),
            ));
        }
        if key_id.starts_with("alias/") {
            return Err(Error::invalid("key_id", "must be a key id, not an alias"));
        }
        who.require(
            "kms:CreateAlias",
            &format!("key/{key_id}"),
            "an alias may only point at a key the caller may alias",
        )?;
        let (alias, key_id, who) = (alias.to_string(), key_id.to_string(), who.clone());
        self.write(move |t| {
            // Moving an alias takes it away from the key it names now (the secrets that
            // name the alias seal their next versions under the new key): that needs the
            // same right on the old key. The refusal names the alias, not the old key.
            if let Some(old) = t.get(Table::Aliases, alias.as_bytes())? {
                // Nothing is moved: no right on the key it points at is needed to be
                // told (the caller may create this alias name, as AWS's CreateAlias).
                if create_only {
                    return Err(Error::new(
                        ErrorCode::AlreadyExists,
                        format!("alias {alias} exists already; it was left as it was"),
                    ));
                }
                if old != key_id.as_bytes() {
                    let old = String::from_utf8(old).map_err(Error::internal)?;
                    who.require_key_behind_alias("kms:CreateAlias", &alias, &old)?;
                }
            }
            let k = resolve_key(t, &key_id)?;
            // As in AWS KMS: no alias onto a key that is about to be destroyed.
            if k.state == KeyStateRec::PendingDeletion {
                return Err(Error::new(
                    ErrorCode::KeyPendingDeletion,
                    format!(
                        "key {} is scheduled for deletion: an alias cannot point at it",
                        k.key_id
                    ),
                ));
            }
            t.put(
                Table::Aliases,
                alias.as_bytes(),
                k.key_id.as_bytes().to_vec(),
            );
            Ok(api::Alias {
                arn: alias_arn(&alias),
                alias_name: alias,
                key_id: k.key_id,
            })
        })
        .await
    }

    /// One alias.
    pub fn get_alias(&self, alias: &str) -> Result<api::Alias> {
        match self.store().get(Table::Aliases, alias.as_bytes())? {
            Some(id) => Ok(api::Alias {
                alias_name: alias.to_string(),
                key_id: String::from_utf8(id).map_err(Error::internal)?,
                arn: alias_arn(alias),
            }),
            None => Err(Error::new(
                ErrorCode::AliasNotFound,
                format!("{alias} not found"),
            )),
        }
    }

    /// Aliases in name order whose names pass `visible`, a page at a time.
    pub fn list_aliases(
        &self,
        limit: usize,
        page_token: Option<&str>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListAliasesResponse> {
        let (aliases, next_page_token) =
            list_page(self.store(), Table::Aliases, limit, page_token, |a, id| {
                let alias_name = String::from_utf8_lossy(a).into_owned();
                Ok(visible(&alias_name).then(|| {
                    let alias = api::Alias {
                        arn: alias_arn(&alias_name),
                        alias_name: alias_name.clone(),
                        key_id: String::from_utf8_lossy(id).into_owned(),
                    };
                    (alias_name, alias)
                }))
            })?;
        Ok(api::ListAliasesResponse {
            aliases,
            next_page_token,
        })
    }

    /// Removes an alias (the key stays). As in KMS, this needs `kms:DeleteAlias` on the
    /// key the alias names as well (the guard checked the alias): otherwise a caller
    /// could take an alias away from a key it has no rights on by deleting and creating
    /// it again, which a move refuses. The refusal names the alias, not the key.
    pub async fn delete_alias(&self, alias: &str, who: &Actor) -> Result<()> {
        if alias.starts_with(RESERVED_ALIAS_PREFIX) {
            return Err(Error::invalid(
                "alias",
                format!("aliases under {RESERVED_ALIAS_PREFIX} are reserved"),
            ));
        }
        let (alias, who) = (alias.to_string(), who.clone());
        self.write(move |t| {
            let Some(old) = t.get(Table::Aliases, alias.as_bytes())? else {
                return Err(Error::new(
                    ErrorCode::AliasNotFound,
                    format!("{alias} not found"),
                ));
            };
            let old = String::from_utf8(old).map_err(Error::internal)?;
            who.require_key_behind_alias("kms:DeleteAlias", &alias, &old)?;
            t.delete(Table::Aliases, alias.as_bytes());
            Ok(())
        })
        .await
    }
}
