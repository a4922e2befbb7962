//! What the services store, and how it becomes API types. Stored as JSON; ciphertext
//! and wrapped keys are base64 inside. Layouts are drawn in `docs/design/storage.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use strongbox_schemas as api;
use strongbox_schemas::{Interval, Timestamp};

use crate::error::{Error, Result};
use crate::storage::{Reader, Table};

/// How long after a failed rotation attempt that left nothing pending (its *create*
/// failed) the next one falls due, when the policy's interval is longer; doubled for
/// each such failure in a row after the first.
pub(crate) const RETRY_AFTER_FAILURE_SECS: i64 = 3600;

/// Who is calling: recorded as `created_by` on versions and, later, in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A named principal (the root token belongs to `root`).
    Named(String),
    /// The rotation engine.
    Rotation,
}

impl Principal {
    /// `principal/NAME` or `rotation`.
    pub fn label(&self) -> String {
        match self {
            Principal::Named(n) => format!("principal/{n}"),
            Principal::Rotation => "rotation".into(),
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt record: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and maps: serialisation cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn load<T: DeserializeOwned>(
    r: &(impl Reader + ?Sized),
    table: Table,
    key: &[u8],
) -> Result<Option<T>> {
    r.get(table, key)?.map(|b| decode(&b)).transpose()
}

/// Records decoded before, each with the exact bytes it was decoded from: a read that
/// finds the same bytes under a key again shares the decoded record instead of parsing
/// its JSON again (a secret read decodes two records; that was 8 % of a busy server's
/// CPU, BENCHMARKS.md). A hit needs the stored bytes to be identical, so a record any
/// writer changed, whichever view it is read through, is decoded afresh. It holds what
/// the store holds (metadata, wrapped key material), never plaintext, and at most
/// about `budget` bytes (counted as three times the stored bytes: those and the decoded
/// record; a small record with many tags takes more), evicting the least useful first.
pub(crate) struct Decoded<T> {
    cache: quick_cache::sync::Cache<Vec<u8>, Arc<Stored<T>>, StoredWeight>,
}

/// The bytes a record was decoded from, and the record.
type Stored<T> = (Vec<u8>, T);

/// A record shared from [`Decoded`].
pub(crate) struct SharedRecord<T>(Arc<Stored<T>>);

impl<T> std::ops::Deref for SharedRecord<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.1
    }
}

#[derive(Clone)]
struct StoredWeight;

impl<T> quick_cache::Weighter<Vec<u8>, Arc<Stored<T>>> for StoredWeight {
    fn weight(&self, key: &Vec<u8>, val: &Arc<Stored<T>>) -> u64 {
        (key.len() + 3 * val.0.len()) as u64
    }
}

impl<T: DeserializeOwned> Decoded<T> {
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            cache: quick_cache::sync::Cache::with_weighter(
                usize::try_from(budget / 1024).unwrap_or(1024).max(16),
                budget,
                StoredWeight,
            ),
        }
    }

    /// What [`load`] returns, shared with earlier reads of the same bytes.
    pub(crate) fn load(
        &self,
        r: &(impl Reader + ?Sized),
        table: Table,
        key: &[u8],
    ) -> Result<Option<SharedRecord<T>>> {
        let Some(bytes) = r.get(table, key)? else {
            return Ok(None);
        };
        if let Some(hit) = self.cache.get(key)
            && hit.0 == bytes
        {
            return Ok(Some(SharedRecord(hit)));
        }
        let record: T = decode(&bytes)?;
        let shared = Arc::new((bytes, record));
        self.cache.insert(key.to_vec(), shared.clone());
        Ok(Some(SharedRecord(shared)))
    }

    /// Keeps `record` as the decoding of `bytes`, which a write job is storing under
    /// `key`, so that the next read or write of it need not parse it. Harmless if the
    /// job's commit fails: a hit needs the stored bytes to be these.
    pub(crate) fn remember(&self, key: &[u8], bytes: Vec<u8>, record: T) {
        self.cache.insert(key.to_vec(), Arc::new((bytes, record)));
    }
}

pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Stored state of a key; `Destroyed` keeps a tombstone so reads can say `KeyDeleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyStateRec {
    Enabled,
    Disabled,
    PendingDeletion,
    Destroyed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyVersionRec {
    pub(crate) version: u32,
    pub(crate) created: i64,
    /// Made by `POST …/rotate` (on demand), not by automatic rotation or at creation.
    #[serde(default)]
    pub(crate) on_demand: bool,
    /// Wrapped material; `None` once destroyed.
    #[serde(with = "opt_b64", default)]
    pub(crate) wrapped: Option<Vec<u8>>,
}

pub(crate) mod opt_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => super::b64::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        use base64::Engine as _;
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) key_id: String,
    pub(crate) description: String,
    pub(crate) key_spec: api::KeySpec,
    pub(crate) state: KeyStateRec,
    /// The state to return to when a scheduled deletion is cancelled.
    #[serde(default)]
    pub(crate) state_before_deletion: Option<KeyStateRec>,
    pub(crate) creation_date: i64,
    pub(crate) delete_date: Option<i64>,
    pub(crate) automatic_rotation: bool,
    pub(crate) rotation_interval: Option<Interval>,
    pub(crate) last_rotation_date: Option<i64>,
    /// When automatic rotation was last turned on: the first automatic rotation comes
    /// one period after it (or after the last rotation, if that is later), not one
    /// period after the key was created. Absent in records written before it was kept.
    #[serde(default)]
    pub(crate) rotation_enabled_date: Option<i64>,
    /// What the automatic schedule counts from (the last automatic rotation): an
    /// on-demand rotation does not move it (as in KMS). Absent in records written
    /// before it was kept, which count from `last_rotation_date`.
    #[serde(default)]
    pub(crate) schedule_base: Option<i64>,
    /// The `pending_window_in_days` of a scheduled deletion.
    #[serde(default)]
    pub(crate) pending_window_days: Option<u32>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) primary_version: u32,
    pub(crate) versions: Vec<KeyVersionRec>,
    /// The due time under which the key sits in the rotation schedule, if it does.
    #[serde(default)]
    pub(crate) scheduled_rotation: Option<i64>,
    /// The due time under which the key's material destruction is scheduled, if it is.
    #[serde(default)]
    pub(crate) scheduled_destroy: Option<i64>,
}

/// Default period of automatic key rotation.
pub(crate) const DEFAULT_KEY_ROTATION_SECS: u64 = 365 * 86_400;

impl KeyRecord {
    pub(crate) fn next_rotation_date(&self) -> Option<i64> {
        if !self.automatic_rotation || self.state != KeyStateRec::Enabled {
            return None;
        }
        let period = self
            .rotation_interval
            .as_ref()
            .map_or(DEFAULT_KEY_ROTATION_SECS, Interval::seconds);
        let base = self
            .schedule_base
            .or(self.last_rotation_date)
            .unwrap_or(self.creation_date)
            .max(self.rotation_enabled_date.unwrap_or(i64::MIN));
        Some(base.saturating_add(i64::try_from(period).unwrap_or(i64::MAX)))
    }

    pub(crate) fn to_api(&self) -> api::Key {
        api::Key {
            key_id: self.key_id.clone(),
            arn: key_arn(&self.key_id),
            description: self.description.clone(),
            key_spec: self.key_spec,
            state: match self.state {
                KeyStateRec::Enabled => api::KeyState::Enabled,
                KeyStateRec::Disabled => api::KeyState::Disabled,
                KeyStateRec::PendingDeletion | KeyStateRec::Destroyed => {
                    api::KeyState::PendingDeletion
                }
            },
            primary_key_version: self.primary_version,
            creation_date: Timestamp::from_unix(self.creation_date),
            delete_date: self.delete_date.map(Timestamp::from_unix),
            automatic_rotation: self.automatic_rotation,
            rotation_interval: self.rotation_interval.clone(),
            last_rotation_date: self.last_rotation_date.map(Timestamp::from_unix),
            next_rotation_date: self.next_rotation_date().map(Timestamp::from_unix),
            tags: self.tags.clone(),
        }
    }
}

/// Refuses to delete `what` (e.g. `policy NAME`) while an index table (keys `name \0
/// user`) lists users of it. The error says how many, never which: the caller may not
/// be allowed to see them.
pub(crate) fn refuse_in_use(
    r: &(impl Reader + ?Sized),
    index: Table,
    name: &str,
    code: api::ErrorCode,
    what: &str,
    users: &str,
) -> Result<()> {
    let n = r
        .scan(
            index,
            &crate::storage::composite(name, ""),
            None,
            usize::MAX,
        )?
        .len();
    if n == 0 {
        return Ok(());
    }
    let s = if n == 1 { "" } else { "s" };
    Err(Error::new(
        code,
        format!("{what} is attached to {n} {users}{s}; detach it first"),
    ))
}

pub(crate) fn key_arn(key_id: &str) -> String {
    format!("strongbox:kms:key/{key_id}")
}
pub(crate) fn secret_arn(name: &str) -> String {
    format!("strongbox:kms:secret/{name}")
}
pub(crate) fn alias_arn(alias: &str) -> String {
    format!("strongbox:kms:{alias}")
}
pub(crate) fn policy_arn(name: &str) -> String {
    format!("strongbox:kms:rotation-policy/{name}")
}

/// The principal an `AccessKey` value's `PrincipalName` stood for when the version was
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NamedPrincipal {
    /// The principal of that id.
    Id(String),
    /// None had the name yet: the value stands for the next one created under it, the
    /// principal of this generation ([`super::identity::PrincipalRecord::generation`]).
    Absent { next: u64 },
    /// No principal: a value the rotation engine wrote without `PrincipalId` for a
    /// principal the value it rotated from is not known to stand for.
    Nobody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VersionMeta {
    pub(crate) version_id: String,
    pub(crate) stages: Vec<String>,
    pub(crate) created: i64,
    pub(crate) created_by: String,
    /// The id of the principal `created_by` names, when a caller made the version (absent
    /// for the rotation engine and in records written before ids existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_by_id: Option<String>,
    /// Of an `AccessKey` secret's version whose value names a principal: which principal
    /// the name stood for as it was written (absent in versions written before this was
    /// kept), so that one created again under the name later is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) principal_at_write: Option<NamedPrincipal>,
    pub(crate) data_type: api::SecretDataType,
    /// HMAC of the value (see `Barrier::value_mac`), to recognise an identical retry.
    #[serde(with = "b64")]
    pub(crate) mac: Vec<u8>,
    /// The key the stored value is sealed under (as its ciphertext's header says). Absent
    /// in records written before it was kept; then the header is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<String>,
    /// Of a version a rotation made `ACSCurrent`: the version that held it until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rotated_from: Option<String>,
}

impl VersionMeta {
    pub(crate) fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
    /// `key_id`: the key the stored value is sealed under.
    pub(crate) fn to_api(&self, key_id: Option<String>) -> api::SecretVersion {
        api::SecretVersion {
            version_id: self.version_id.clone(),
            version_stages: self.stages.clone(),
            creation_date: Timestamp::from_unix(self.created),
            created_by: self.created_by.clone(),
            secret_data_type: self.data_type,
            key_id,
            rotated_from: self.rotated_from.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SecretRecord {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) tags: BTreeMap<String, String>,
    /// As the caller wrote it (key id or alias).
    pub(crate) encryption_key_id: String,
    pub(crate) secret_type: api::SecretType,
    pub(crate) extended_config: Option<serde_json::Map<String, serde_json::Value>>,
    pub(crate) rotation_policy: Option<String>,
    pub(crate) creation_date: i64,
    pub(crate) update_date: i64,
    pub(crate) planned_delete_time: Option<i64>,
    /// The recovery window asked for when the deletion was scheduled, in days (none in
    /// records scheduled before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recovery_window_days: Option<u32>,
    pub(crate) last_rotation_date: Option<i64>,
    /// Oldest first.
    pub(crate) versions: Vec<VersionMeta>,
    /// The rotation engine's state of this secret.
    #[serde(default)]
    pub(crate) rotation: RotationRec,
    /// Random, set at creation: tells this secret from an earlier one of the same name
    /// (deleted, then created again), which a rotation begun on the earlier one must not
    /// write into. 0 in records written before it existed.
    #[serde(default)]
    pub(crate) incarnation: u64,
}

/// The last completed step of a running rotation (see `docs/design/rotation.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RotationStep {
    /// The pending version exists and holds `ACSPending`.
    Created,
    /// The strategy applied the pending value in the target system.
    Set,
    /// The strategy proved the pending value works there.
    Tested,
}

/// A rotation that has begun and not ended; persisted so a restart resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RotationInProgress {
    /// The version the rotation makes.
    pub(crate) version_id: String,
    /// Last completed step.
    pub(crate) step: RotationStep,
    /// When it began.
    pub(crate) started: i64,
}

/// Rotation state of a secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RotationRec {
    /// The due time (jitter included) under which the secret sits in the schedule.
    #[serde(default)]
    pub(crate) scheduled: Option<i64>,
    /// The due time of its purge entry in the schedule.
    #[serde(default)]
    pub(crate) purge_scheduled: Option<i64>,
    /// Running or last outcome.
    #[serde(default)]
    pub(crate) status: Option<api::RotationStatus>,
    /// Why the last rotation failed.
    #[serde(default)]
    pub(crate) last_error: Option<String>,
    /// When the last rotation failed; the next one is an interval after it.
    #[serde(default)]
    pub(crate) last_failure: Option<i64>,
    /// Attempts in a row whose *create* failed (nothing pending); reset when one
    /// begins. The next one comes sooner than an interval after the last.
    #[serde(default)]
    pub(crate) create_failures: u32,
    /// The running rotation.
    #[serde(default)]
    pub(crate) in_progress: Option<RotationInProgress>,
    /// The version ids of the last rotations that finished, oldest first (at most
    /// [`FINISHED_ROTATIONS_KEPT`]): a repeated rotate request with one of them is
    /// answered as done, also once the version has lost its stages or been pruned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) finished: Vec<String>,
}

/// How many finished rotations a secret remembers by version id.
pub(crate) const FINISHED_ROTATIONS_KEPT: usize = 32;

impl SecretRecord {
    /// Which secret of this name the record is (see `incarnation`).
    pub(crate) fn identity(&self) -> (i64, u64) {
        (self.creation_date, self.incarnation)
    }

    pub(crate) fn version_with_stage(&self, stage: &str) -> Option<&VersionMeta> {
        self.versions.iter().find(|v| v.has(stage))
    }

    /// Whether version `version_id` exists and holds `stage`.
    pub(crate) fn version_has(&self, version_id: &str, stage: &str) -> bool {
        self.versions
            .iter()
            .any(|v| v.version_id == version_id && v.has(stage))
    }

    /// When the next rotation falls due under `policy` (its window starts): an interval
    /// after the last rotation (or creation, or failed attempt). After attempts whose
    /// *create* failed, an hour after the last, doubling with each in a row, up to the
    /// interval: a short outage of the target does not put the rotation off by a whole
    /// interval, and a lasting one is not tried every hour for ever.
    pub(crate) fn next_rotation_date(&self, policy: Option<&PolicyRecord>) -> Option<i64> {
        if self.planned_delete_time.is_some() {
            return None;
        }
        policy.filter(|p| p.enabled).map(|p| {
            let last = self.last_rotation_date.unwrap_or(self.creation_date);
            let interval = i64::try_from(p.interval.seconds()).unwrap_or(i64::MAX);
            match (self.rotation.last_failure, self.rotation.create_failures) {
                (Some(failed), n) if failed > last && n > 0 => {
                    let backoff = RETRY_AFTER_FAILURE_SECS
                        .saturating_mul(1_i64 << n.saturating_sub(1).min(32));
                    failed.saturating_add(interval.min(backoff))
                }
                (failed, _) => last
                    .max(failed.unwrap_or(i64::MIN))
                    .saturating_add(interval),
            }
        })
    }

    pub(crate) fn to_api(&self, policy: Option<&PolicyRecord>) -> api::Secret {
        let next = self.next_rotation_date(policy);
        api::Secret {
            name: self.name.clone(),
            arn: secret_arn(&self.name),
            description: self.description.clone(),
            tags: self.tags.clone(),
            encryption_key_id: self.encryption_key_id.clone(),
            secret_type: self.secret_type,
            extended_config: self.extended_config.clone(),
            rotation_policy: self.rotation_policy.clone(),
            version_id: self
                .version_with_stage(api::STAGE_CURRENT)
                .map(|v| v.version_id.clone())
                .unwrap_or_default(),
            creation_date: Timestamp::from_unix(self.creation_date),
            update_date: Timestamp::from_unix(self.update_date),
            planned_delete_time: self.planned_delete_time.map(Timestamp::from_unix),
            last_rotation_date: self.last_rotation_date.map(Timestamp::from_unix),
            next_rotation_date: next.map(Timestamp::from_unix),
            rotation_status: self.rotation.status,
            last_rotation_error: self.rotation.last_error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PolicyRecord {
    pub(crate) name: String,
    pub(crate) interval: Interval,
    pub(crate) window: Interval,
    pub(crate) strategy: api::RotationStrategy,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) enabled: bool,
    pub(crate) creation_date: i64,
    pub(crate) update_date: i64,
}

impl PolicyRecord {
    pub(crate) fn to_api(&self) -> api::RotationPolicy {
        api::RotationPolicy {
            name: self.name.clone(),
            arn: policy_arn(&self.name),
            interval: self.interval.clone(),
            window: self.window.clone(),
            strategy: self.strategy,
            settings: self.settings.clone(),
            enabled: self.enabled,
            creation_date: Timestamp::from_unix(self.creation_date),
            update_date: Timestamp::from_unix(self.update_date),
        }
    }
}

/// Tags: at most 50; keys 1–128 characters, values up to 256.
pub(crate) fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > 50 {
        return Err(Error::invalid("tags", "at most 50 tags"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(Error::invalid("tags", "keys must be 1 to 128 characters"));
        }
        if v.chars().count() > 256 {
            return Err(Error::invalid(
                &format!("tags.{k}"),
                "values must be at most 256 characters",
            ));
        }
    }
    Ok(())
}

/// Largest `extended_config`, as compact JSON.
pub(crate) const MAX_EXTENDED_CONFIG_BYTES: usize = 16 * 1024;
/// Deepest nesting of `extended_config` (the object itself is level 1).
pub(crate) const MAX_EXTENDED_CONFIG_DEPTH: usize = 8;

/// Largest `extended_config.CaCert` (an `Rds` secret's CA bundle, which may hold many
/// certificates: a cloud provider's bundle of all its regions).
pub(crate) const MAX_CA_CERT_BYTES: usize = 160 * 1024;

/// `extended_config`: at most 16 KiB as compact JSON besides its `CaCert` (a CA bundle,
/// up to 160 KiB), nested at most 8 deep. It is kept in the secret's record, read with
/// every describe and list, so it stays small.
pub(crate) fn validate_extended_config(
    config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<()> {
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let Some(config) = config else {
        return Ok(());
    };
    let ca_cert = config.get("CaCert");
    let ca_bytes = ca_cert
        .and_then(serde_json::Value::as_str)
        .map_or(0, str::len);
    if ca_bytes > MAX_CA_CERT_BYTES {
        return Err(Error::invalid(
            "extended_config.CaCert",
            format!("at most {MAX_CA_CERT_BYTES} bytes; this is {ca_bytes}"),
        ));
    }
    let rest = if ca_cert.is_some_and(serde_json::Value::is_string) {
        let mut rest = config.clone();
        rest.remove("CaCert");
        serde_json::to_vec(&rest)
    } else {
        serde_json::to_vec(config)
    };
    let bytes = rest.map_or(usize::MAX, |b| b.len());
    if bytes > MAX_EXTENDED_CONFIG_BYTES {
        return Err(Error::invalid(
            "extended_config",
            format!(
                "at most {MAX_EXTENDED_CONFIG_BYTES} bytes as JSON besides CaCert; this is {bytes}"
            ),
        ));
    }
    let levels = 1 + config.values().map(depth).max().unwrap_or(0);
    if levels > MAX_EXTENDED_CONFIG_DEPTH {
        return Err(Error::invalid(
            "extended_config",
            format!("nested at most {MAX_EXTENDED_CONFIG_DEPTH} levels deep; this is {levels}"),
        ));
    }
    Ok(())
}

/// Descriptions: at most 1024 characters.
pub(crate) fn validate_description(d: &str) -> Result<()> {
    if d.chars().count() > 1024 {
        return Err(Error::invalid("description", "at most 1024 characters"));
    }
    Ok(())
}

/// Page tokens are the last name of the previous page, base64url-encoded.
pub(crate) fn decode_page_token(token: Option<&str>) -> Result<Option<String>> {
    use base64::Engine as _;
    token
        .filter(|t| !t.is_empty())
        .map(|t| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::invalid("page_token", "not a token returned by a list call"))
        })
        .transpose()
}

pub(crate) fn encode_page_token(last: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

/// Up to `want` items from the records of `table` under `prefix` after the key `after`,
/// in key order: `keep` turns a record into its key (as text, for a page token) and
/// item, or `None` to leave it out (one the caller may not see).
pub(crate) fn collect_after<T>(
    store: &(impl Reader + ?Sized),
    table: Table,
    prefix: &[u8],
    after: Option<&str>,
    want: usize,
    mut keep: impl FnMut(&[u8], &[u8]) -> Result<Option<(String, T)>>,
) -> Result<Vec<(String, T)>> {
    const CHUNK: usize = 256;
    let mut out = Vec::new();
    let mut from = after.map(|a| a.as_bytes().to_vec());
    loop {
        let batch = store.scan(table, prefix, from.as_deref(), CHUNK)?;
        let done = batch.len() < CHUNK;
        for (k, v) in &batch {
            if out.len() >= want {
                return Ok(out);
            }
            if let Some(item) = keep(k, v)? {
                out.push(item);
            }
        }
        if done || out.len() >= want {
            return Ok(out);
        }
        from = batch.last().map(|(k, _)| k.clone());
    }
}

/// One page of the records of `table` that `keep` turns into items (see
/// [`collect_after`]): at most `limit`, after the key `page_token` names, and the next
/// page's token (see [`page`]).
pub(crate) fn list_page<T>(
    store: &(impl Reader + ?Sized),
    table: Table,
    limit: usize,
    page_token: Option<&str>,
    keep: impl FnMut(&[u8], &[u8]) -> Result<Option<(String, T)>>,
) -> Result<(Vec<T>, Option<String>)> {
    let after = decode_page_token(page_token)?;
    let items = collect_after(
        store,
        table,
        b"",
        after.as_deref(),
        limit.saturating_add(1),
        keep,
    )?;
    Ok(page(items, limit))
}

/// One page of `items` (in key order, up to `limit` + 1 of them): at most `limit`, and
/// the token of the next page only when one more item the caller may see follows (a
/// token that led to an empty page would tell that items it may not see exist).
pub(crate) fn page<T>(mut items: Vec<(String, T)>, limit: usize) -> (Vec<T>, Option<String>) {
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|(k, _)| encode_page_token(k))
    });
    (items.into_iter().map(|(_, t)| t).collect(), next.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Backend, MemoryBackend, Mutation};

    #[derive(Deserialize)]
    struct Rec {
        n: u32,
    }

    fn put(b: &MemoryBackend, v: &str) {
        b.commit(&[Mutation::Put(
            Table::Secrets,
            b"k".to_vec(),
            v.as_bytes().to_vec(),
        )])
        .expect("commit");
    }

    fn load(d: &Decoded<Rec>, b: &MemoryBackend) -> Result<Option<SharedRecord<Rec>>> {
        d.load(&*b.snapshot().expect("snapshot"), Table::Secrets, b"k")
    }

    #[test]
    fn a_decoded_record_is_shared_only_while_its_bytes_are_the_same() {
        let b = MemoryBackend::new();
        let d = Decoded::<Rec>::new(1 << 20);
        assert!(load(&d, &b).expect("load").is_none());
        put(&b, r#"{"n":1}"#);
        let first = load(&d, &b).expect("load").expect("record");
        let again = load(&d, &b).expect("load").expect("record");
        assert_eq!(again.n, 1);
        assert!(
            Arc::ptr_eq(&first.0, &again.0),
            "the same bytes share one decode"
        );
        // Changed bytes are decoded afresh, also when they decode to the same value.
        put(&b, r#"{"n":2}"#);
        assert_eq!(load(&d, &b).expect("load").expect("record").n, 2);
        put(&b, r#"{ "n":1}"#);
        let spaced = load(&d, &b).expect("load").expect("record");
        assert_eq!(spaced.n, 1);
        assert!(!Arc::ptr_eq(&first.0, &spaced.0));
        // Bytes that do not decode are an error, not an older record.
        put(&b, r#"{"n":"#);
        assert!(load(&d, &b).is_err());
        b.commit(&[Mutation::Delete(Table::Secrets, b"k".to_vec())])
            .expect("commit");
        assert!(load(&d, &b).expect("load").is_none());
        // What a write job remembers is used only for the bytes it remembered it by.
        d.remember(b"k", br#"{"n":7}"#.to_vec(), Rec { n: 8 });
        put(&b, r#"{"n":9}"#);
        assert_eq!(load(&d, &b).expect("load").expect("record").n, 9);
        d.remember(b"k", br#"{"n":7}"#.to_vec(), Rec { n: 8 });
        put(&b, r#"{"n":7}"#);
        assert_eq!(
            load(&d, &b).expect("load").expect("record").n,
            8,
            "the remembered record stands for its bytes"
        );
    }
}
