//! The rotation engine: a scheduler over a durable index, and rotations in four
//! persisted, idempotent steps (create, set, test, finish) run by a strategy.
//!
//! State machine (drawn in `docs/design/rotation.md`): a rotation exists on disk from
//! the commit of its *create* step, which adds the `ACSPending` version and records
//! `in_progress {version_id, step: Created}` in the secret's record, in one write. Each
//! later step runs in the strategy and then records its completion (`Set`, `Tested`).
//! *Finish* moves `ACSCurrent` to the pending version, clears `in_progress` and
//! re-indexes the secret in one write. A crash between two writes leaves the last
//! completed step on disk; the secret stays due in the index, so the next tick (the
//! first one runs at start) resumes with the step after it. `ACSCurrent` changes only
//! in the *finish* write, so it is readable at every point.

mod access_key;
pub(crate) use access_key::{MARKER_HIDDEN, rotation_secret_of};
mod database;
mod egress;
mod random;
mod schedule;
mod ssh_key;
mod strategy;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strongbox_schemas::{
    self as api, AuditOutcome, ErrorCode, RotationStatus, STAGE_CURRENT, STAGE_PENDING,
    SecretDataType, SecretType, validate_version_id,
};
use tokio::sync::{Semaphore, watch};
use zeroize::Zeroizing;

use super::AuditEntry;
use super::Service;
use super::records::{
    KeyRecord, PolicyRecord, Principal, RotationInProgress, RotationStep, SecretRecord, encode,
    load, secret_arn,
};
use super::secrets::{NewVersion, load_live_secret, move_stage, prune, remove_secret};
use crate::error::{Error, Result};
use crate::storage::{Reader, Table, Txn};
pub(crate) use access_key::{
    engine_binding, principal_at_write, principal_named, principals_setting, records_principal_id,
    revoke_rotation_tokens, rotation_tokens, same_principal,
};
#[cfg(any(test, feature = "failpoints"))]
pub use database::database_conformance;
pub(crate) use database::{
    check_not_admin as check_rds_not_admin, rds_account_name, validate_rds, validate_rds_value,
};
pub use egress::EgressPolicy;
pub use random::PasswordRules;
pub(crate) use random::check_legacy_length;
use schedule::{Job, due_jobs};
pub(crate) use schedule::{
    Job as ScheduleJob, entry_key as schedule_entry, reindex_key, reindex_secret,
    reindex_secret_with, unindex_secret,
};
use strategy::{AnyStrategy, Step, StepContext, Strategy};

const META_SCHEDULE_VERSION: &[u8] = b"rotation_schedule_version";
/// Bumped when the index gains a kind of job, so that it is rebuilt once.
const SCHEDULE_VERSION: &[u8] = b"2";
/// What a failure's message says in place of an account name it withholds.
pub(crate) const WITHHELD: &str = "<account withheld>";

/// `message` with each of `names` (as a whole word: not inside a longer name) replaced
/// by [`WITHHELD`]. A failed rotation's error is kept as the secret's `last_rotation_error`,
/// shown to whoever may describe it, and answers a rotate request, which `kms:RotateSecret`
/// allows; account names come from the secret's value (or the admin secret's), which
/// neither may read. The server's log keeps the whole message.
pub(crate) fn withhold(message: &str, names: &[String]) -> String {
    let mut names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names.dedup();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    // One pass over the message, longest name first at each place: what a replacement
    // wrote is never looked at again.
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        let rest = &message[i..];
        let at_word_start = !word(message[..i].chars().next_back());
        let hit = names.iter().find(|n| {
            at_word_start && rest.starts_with(**n) && !word(rest[n.len()..].chars().next())
        });
        match hit {
            Some(n) => {
                out.push_str(WITHHELD);
                i += n.len();
            }
            None => {
                let c = rest.chars().next().map_or(1, char::len_utf8);
                out.push_str(&rest[..c]);
                i += c;
            }
        }
    }
    out
}

/// Longest `last_rotation_error` kept.
const ERROR_MAX: usize = 512;

/// Limits of the rotation engine.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Rotations running at once.
    pub concurrency: usize,
    /// Attempts of one step before the rotation fails.
    pub step_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub step_backoff: Duration,
    /// How long `POST /v1/secrets/{name}/rotate` waits for the rotation to end.
    pub rotate_wait: Duration,
    /// Most due jobs one tick takes from the index (the rest wait for the next tick).
    pub max_due_per_tick: usize,
    /// Longest one attempt of one step may take (a database that accepts the connection
    /// and never answers, a lock that is never released): then the attempt fails, and
    /// after the last one the rotation. Longer than the longest webhook timeout (300 s).
    pub step_timeout: Duration,
    /// Which addresses database, SSH and webhook rotations may connect to.
    pub egress: EgressPolicy,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            step_attempts: 3,
            step_backoff: Duration::from_millis(200),
            rotate_wait: Duration::from_secs(60),
            max_due_per_tick: 10_000,
            step_timeout: Duration::from_secs(330),
            egress: EgressPolicy::default(),
        }
    }
}

type Outcome = Option<Result<String>>;

struct Inflight {
    version_id: String,
    done: watch::Receiver<Outcome>,
}

/// In-memory engine state: running rotations (one per secret) and the concurrency
/// bound. Everything needed to resume lives in storage.
pub(crate) struct EngineState {
    inflight: Mutex<HashMap<String, Inflight>>,
    permits: Arc<Semaphore>,
    schedule_checked: AtomicBool,
    /// Test-only: the step after which the engine stops, as if the process died.
    halt_after: Mutex<Option<String>>,
    /// Test-only: the step after which the rotation's task panics.
    #[cfg(any(test, feature = "failpoints"))]
    panic_after: Mutex<Option<String>>,
}

impl EngineState {
    pub(crate) fn new(cfg: &RotationConfig) -> Self {
        Self {
            inflight: Mutex::default(),
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            schedule_checked: AtomicBool::new(false),
            halt_after: Mutex::default(),
            #[cfg(any(test, feature = "failpoints"))]
            panic_after: Mutex::default(),
        }
    }
}

/// What the scheduled jobs of one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueReport {
    pub(crate) started_rotations: usize,
    pub(crate) rotated_secrets: usize,
    pub(crate) failed_rotations: usize,
    pub(crate) rotated_keys: usize,
    pub(crate) purged_secrets: usize,
    pub(crate) destroyed_keys: usize,
}

/// Why a rotation stopped before finishing.
enum Stop {
    /// Failed; with the account names its message may carry, which the secret's
    /// `last_rotation_error` withholds (see [`withhold`]).
    Failed(Error, Vec<String>),
    /// Test failpoint: stopped as if the process had died.
    Halted,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e, Vec::new())
    }
}

/// Whether the secret's persisted rotation was abandoned: its version no longer has
/// `ACSPending` (removed by hand, the way out of a rotation that cannot complete).
fn abandoned(rec: &SecretRecord) -> bool {
    rec.rotation
        .in_progress
        .as_ref()
        .is_some_and(|p| !rec.version_has(&p.version_id, STAGE_PENDING))
}

/// The secret `name`, if it is still the one the rotation began on (`identity`).
fn load_same_secret(t: &Txn<'_>, name: &str, identity: (i64, u64)) -> Result<SecretRecord> {
    let rec = load_live_secret(t, name)?;
    if rec.identity() != identity {
        return Err(replaced(name));
    }
    Ok(rec)
}

/// The secret a rotation began on was deleted and another of its name created since.
fn replaced(name: &str) -> Error {
    Error::new(
        ErrorCode::RotationFailed,
        format!(
            "secret {name} was deleted and created again while it rotated; the rotation of the earlier secret ends"
        ),
    )
}

fn in_progress(name: &str) -> Error {
    Error::new(
        ErrorCode::RotationInProgress,
        format!(
            "a rotation of secret {name} is already running or has not completed (resume it \
             with a rotate request without version_id, or abandon it by removing the \
             ACSPending label from its version)"
        ),
    )
}

/// A running rotation's place in the in-flight map, given up when dropped.
struct Running(Service, String);

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.0.inner.rotation.inflight).remove(&self.1);
    }
}

/// How a rotation was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The schedule entry due at this time.
    Schedule(i64),
    Request,
}

enum Started {
    Running(watch::Receiver<Outcome>),
    Done(String),
}

/// Refuses to go on with a rotation of secret `name` under `policy` once it is disabled.
fn still_enabled(name: &str, policy: &PolicyRecord) -> Result<()> {
    if policy.enabled {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::InvalidState,
        format!(
            "rotation policy {} was disabled: the rotation of secret {name} stopped, and resumes where it stopped once the policy is enabled again",
            policy.name
        ),
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Service {
    /// Rotates a secret now with its policy's strategy and waits (up to the configured
    /// time) for the rotation to finish. With `version_id`, a repeated request waits
    /// for or returns that same rotation.
    pub async fn rotate_secret(
        &self,
        name: &str,
        req: api::RotateSecretRequest,
    ) -> Result<api::RotateSecretResponse> {
        if let Some(v) = &req.version_id {
            validate_version_id("version_id", v)?;
        }
        let answer = |version_id: String| api::RotateSecretResponse {
            name: name.to_string(),
            arn: secret_arn(name),
            version_id,
        };
        let mut rx = match self.start_rotation(name, req.version_id, Trigger::Request)? {
            Started::Done(v) => return Ok(answer(v)),
            Started::Running(rx) => rx,
        };
        let wait = self.inner.config.rotation.rotate_wait;
        let outcome = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match outcome {
            Ok(Ok(done)) => match &*done {
                Some(Ok(v)) => Ok(answer(v.clone())),
                Some(Err(e)) => Err(e.clone()),
                None => Err(Error::internal("rotation ended without an outcome")),
            },
            Ok(Err(_)) => Err(Error::internal("rotation task ended without an outcome")),
            Err(_) => Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "the rotation of secret {name} is still running after {}s; repeat the request with the same version_id to wait for it",
                    wait.as_secs()
                ),
            )),
        }
    }

    /// A password from the generator, with the rules of the `random` strategy.
    pub fn random_password(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<api::RandomPassword> {
        let rules = PasswordRules::parse(params, "")?;
        Ok(api::RandomPassword {
            random_password: rules.generate().to_string(),
        })
    }

    /// Test-only: makes the engine stop after `step` (`create`, `set`, `test` or
    /// `finish`) has been persisted, as if the process had died there. `None` clears it.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn set_rotation_halt(&self, after: Option<&str>) {
        *lock(&self.inner.rotation.halt_after) = after.map(str::to_string);
    }

    /// Test-only: makes the rotation's task panic after `step` has been persisted (as a
    /// driver that panics on an answer it did not expect). `None` clears it.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn set_rotation_panic(&self, after: Option<&str>) {
        *lock(&self.inner.rotation.panic_after) = after.map(str::to_string);
    }

    /// Names of the secrets whose rotation is running in this process.
    pub fn rotations_running(&self) -> usize {
        lock(&self.inner.rotation.inflight).len()
    }

    /// Whether a rotation of `name` is running in this process.
    pub(crate) fn is_rotating(&self, name: &str) -> bool {
        lock(&self.inner.rotation.inflight).contains_key(name)
    }

    /// Begins (or joins, or resumes) a rotation; the outcome arrives on the receiver.
    fn start_rotation(
        &self,
        name: &str,
        requested: Option<String>,
        trigger: Trigger,
    ) -> Result<Started> {
        let mut inflight = lock(&self.inner.rotation.inflight);
        if let Some(f) = inflight.get(name) {
            return match requested {
                Some(r) if r == f.version_id => Ok(Started::Running(f.done.clone())),
                _ => Err(in_progress(name)),
            };
        }
        let rec = load_live_secret(self.store(), name)?;
        // The tick works from a list of due entries read before it began; since then the
        // secret may have rotated (on request) or its policy been disabled, each of which
        // moved or removed its entry. Only the entry the record names is acted on; the
        // error makes the tick drop the stale one.
        if let Trigger::Schedule(due) = trigger
            && rec.rotation.scheduled != Some(due)
        {
            return Err(Error::new(
                ErrorCode::InvalidState,
                format!("secret {name} is no longer due at {due}"),
            ));
        }
        if rec.rotation_policy.is_none() {
            return Err(Error::new(
                ErrorCode::InvalidState,
                format!("secret {name} has no rotation policy; attach one first"),
            ));
        }
        // An abandoned rotation is replaced by the new one (in *create*'s write).
        let persisted = rec
            .rotation
            .in_progress
            .as_ref()
            .filter(|_| !abandoned(&rec));
        let version_id = match (persisted, requested) {
            // A persisted rotation that no task runs (after a restart): resume it.
            (Some(p), None) => p.version_id.clone(),
            (Some(p), Some(r)) if p.version_id == r => r,
            (Some(_), Some(_)) => return Err(in_progress(name)),
            // A rotation that finished under this id (its version may since have lost
            // its stages, or been pruned): done, not rotated again.
            (None, Some(r)) if rec.rotation.finished.contains(&r) => {
                return Ok(Started::Done(r));
            }
            (None, Some(r)) => {
                if let Some(v) = rec.versions.iter().find(|v| v.version_id == r) {
                    let by_rotation = v.created_by == Principal::Rotation.label();
                    return if by_rotation && v.stages.iter().any(|s| s != STAGE_PENDING) {
                        Ok(Started::Done(r))
                    } else if by_rotation {
                        Err(Error::new(
                            ErrorCode::RotationFailed,
                            format!(
                                "the rotation that made version {r} of secret {name} failed; rotate again with a new version_id"
                            ),
                        ))
                    } else {
                        Err(Error::new(
                            ErrorCode::VersionConflict,
                            format!(
                                "version {r} of secret {name} exists and was not made by a rotation"
                            ),
                        ))
                    };
                }
                r
            }
            (None, None) => uuid::Uuid::new_v4().to_string(),
        };
        let (tx, rx) = watch::channel(None);
        inflight.insert(
            name.to_string(),
            Inflight {
                version_id: version_id.clone(),
                done: rx.clone(),
            },
        );
        drop(inflight);
        // The secret this rotation is for: one deleted and created again under its name
        // while the rotation waits for a slot or runs is another, never written into.
        let identity = rec.identity();
        let (this, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            // Released however the task ends: a panic must not leave the secret
            // "rotating" (refusing rotations and ACSPending changes) until a restart.
            let running = Running(this.clone(), name.clone());
            let out = this
                .run_rotation(&name, &version_id, identity, trigger)
                .await;
            drop(running);
            let _ = tx.send(Some(out));
        });
        Ok(Started::Running(rx))
    }

    async fn run_rotation(
        &self,
        name: &str,
        version_id: &str,
        identity: (i64, u64),
        trigger: Trigger,
    ) -> Result<String> {
        let permits = self.inner.rotation.permits.clone();
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("rotation semaphore closed"))?;
        // The engine's own record is committed with the finish (or with the failure).
        // A panic in a step (a driver that panics on an answer it did not expect, from
        // a server that is not what it should be) is a failure like any other: recorded,
        // and retried only after the wait a failure gets, not at every tick.
        let scheduled = matches!(trigger, Trigger::Schedule(_));
        let driven =
            std::panic::AssertUnwindSafe(self.drive(name, version_id, identity, scheduled));
        let driven = futures_util::FutureExt::catch_unwind(driven)
            .await
            .unwrap_or_else(|_| {
                Err(Stop::Failed(
                    Error::new(
                        ErrorCode::RotationFailed,
                        "a rotation step stopped on an internal error; see the server log",
                    ),
                    Vec::new(),
                ))
            });
        match driven {
            Ok(()) => {
                tracing::info!(secret = %name, version_id, ?trigger, "rotation finished");
                Ok(version_id.to_string())
            }
            Err(Stop::Halted) => Err(Error::new(
                ErrorCode::Unavailable,
                "the rotation engine stopped (test failpoint)",
            )),
            Err(Stop::Failed(e, names)) => {
                tracing::warn!(secret = %name, version_id, code = %e.code, error = %e.message, "rotation failed");
                // Account names stay in this log line: the answer and what the secret
                // keeps withhold them.
                let e = Error::new(e.code, withhold(&e.message, &names));
                if let Err(w) = self.record_failure(name, version_id, identity, &e).await {
                    tracing::error!(secret = %name, error = %w, "could not record a failed rotation");
                }
                Err(e)
            }
        }
    }

    /// The engine's own record of a rotation (the request that asked for it, if any,
    /// has its own record).
    fn rotation_audit_entry(&self, name: &str) -> AuditEntry {
        AuditEntry {
            time: self.now(),
            request_id: format!("{:032x}", rand::random::<u128>()),
            principal: Principal::Rotation.label(),
            action: "kms:RotateSecret".into(),
            resource: format!("secret/{name}"),
            related: Vec::new(),
            source: "rotation-engine".into(),
            user_agent: String::new(),
        }
    }

    fn halt_here(&self, step: Step) -> bool {
        let halted = lock(&self.inner.rotation.halt_after).as_deref() == Some(step.as_str());
        #[cfg(feature = "failpoints")]
        if std::env::var("STRONGBOX_FAILPOINT_ROTATION_ABORT")
            .ok()
            .as_deref()
            == Some(step.as_str())
        {
            tracing::error!(step = step.as_str(), "failpoint: aborting the process");
            std::process::abort();
        }
        halted
    }

    fn strategy_for(&self, policy: &PolicyRecord) -> Result<AnyStrategy> {
        // Strategies that act on this service (or read the secret's settings) hold it.
        match policy.strategy {
            api::RotationStrategy::AccessKey => {
                return Ok(AnyStrategy::AccessKey(access_key::AccessKeyStrategy::new(
                    self.clone(),
                    &policy.settings,
                )?));
            }
            api::RotationStrategy::SshKey => {
                return Ok(AnyStrategy::SshKey(ssh_key::SshKeyStrategy::new(
                    self.clone(),
                    &policy.settings,
                )?));
            }
            _ => {}
        }
        let s = AnyStrategy::build(
            policy.strategy,
            &policy.settings,
            // A binary signing secret signs with its bytes, not their base64 text.
            |signing| self.plaintext(signing, None),
            &self.inner.config.rotation.egress,
        )?;
        Ok(match s {
            AnyStrategy::Webhook(w) => {
                let clock = self.inner.clock.clone();
                AnyStrategy::Webhook(w.with_clock(Arc::new(move || clock.now())))
            }
            other => other,
        })
    }

    /// Runs a step with retries and backoff.
    ///
    /// Before each retry it checks that the secret is still the one the rotation began
    /// on (`id`): one deleted and created again under its name while the step failed
    /// or waited must not get the retry's remote action (a key added to its host, a
    /// token issued).
    /// A rotation that stops once its policy is disabled (`watch`, see [`Self::drive`])
    /// is not retried then.
    async fn attempt<T, F, Fut>(
        &self,
        name: &str,
        id: (i64, u64),
        watch: bool,
        step: Step,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config.rotation;
        let mut delay = cfg.step_backoff;
        let attempts = cfg.step_attempts.max(1);
        let mut n = 1;
        loop {
            let outcome = tokio::time::timeout(cfg.step_timeout, f())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorCode::RotationFailed,
                        format!(
                            "step {} did not finish within {} s",
                            step.as_str(),
                            cfg.step_timeout.as_secs_f64()
                        ),
                    ))
                });
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if n >= attempts => return Err(e),
                Err(e) => {
                    tracing::warn!(secret = %name, step = step.as_str(), attempt = n, code = %e.code, error = %e.message, "rotation step failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    n += 1;
                    let rec = self.same_secret(name, id).await?;
                    if watch {
                        still_enabled(name, &self.policy_of_rotation(name, &rec)?)?;
                    }
                }
            }
        }
    }

    /// The rotation policy of `rec`.
    fn policy_of_rotation(&self, name: &str, rec: &SecretRecord) -> Result<PolicyRecord> {
        match &rec.rotation_policy {
            Some(p) => load(self.store(), Table::RotationPolicies, p.as_bytes())?,
            None => None,
        }
        .ok_or_else(|| {
            Error::new(
                ErrorCode::RotationFailed,
                format!("secret {name} has no rotation policy"),
            )
        })
    }

    /// The secret `name`, if it is still the one the rotation began on (`id`). Read
    /// through the writer (a job that writes nothing costs no commit): a change queued
    /// before it, such as ACSPending taken off to abandon this rotation, is seen before
    /// any step reaches the target.
    async fn same_secret(&self, name: &str, id: (i64, u64)) -> Result<SecretRecord> {
        let owned = name.to_string();
        let rec = self
            .store()
            .write(move |t| load_live_secret(t, &owned))
            .await?;
        if rec.identity() != id {
            return Err(replaced(name));
        }
        Ok(rec)
    }

    /// Runs the remaining steps of one rotation, from what storage says was done. `id` is
    /// the secret's identity when the rotation was started: a secret of the same name
    /// created since (the first deleted) is not this rotation's, and no step or write of
    /// this rotation reaches it.
    /// A rotation goes no further once its policy is disabled (a compromised webhook
    /// switched off, say), also one that was waiting for a slot: no step more reaches
    /// the target. It ends as a failure, and one it had begun resumes where it stopped
    /// once the policy is enabled again. Only a rotation asked for (`POST …/rotate`)
    /// while its policy was disabled already runs under it, as documented; one the
    /// schedule started (`scheduled`), or one asked for under an enabled policy, stops.
    async fn drive(
        &self,
        name: &str,
        version_id: &str,
        id: (i64, u64),
        scheduled: bool,
    ) -> Result<(), Stop> {
        // Whether disabling the policy stops this rotation: fixed at its first step.
        let mut watch = None;
        loop {
            let rec = self.same_secret(name, id).await?;
            let policy = self.policy_of_rotation(name, &rec)?;
            let watch = *watch.get_or_insert(scheduled || policy.enabled);
            if watch {
                still_enabled(name, &policy)?;
            }
            let step = match &rec.rotation.in_progress {
                Some(p) if p.version_id == version_id => Some(p.step),
                // Abandoned: a new rotation starts over it.
                Some(_) if abandoned(&rec) => None,
                Some(_) => return Err(in_progress(name).into()),
                None => None,
            };
            // The way out of a rotation that cannot complete: its version's ACSPending
            // label removed by hand. Nothing is sent to the target any more.
            if step.is_some() && abandoned(&rec) {
                return Err(Error::new(
                    ErrorCode::RotationFailed,
                    format!(
                        "the rotation of version {version_id} is abandoned: its ACSPending \
                         label was removed"
                    ),
                )
                .into());
            }
            // Only *create* (no step done yet) looks at ACSPrevious.
            let strategy = match database::Engine::from_strategy(policy.strategy) {
                Some(engine) => AnyStrategy::Database(Box::new(self.database_strategy(
                    engine,
                    &policy,
                    &rec,
                    step.is_none(),
                )?)),
                None => self.strategy_for(&policy)?,
            };
            let pending = match step {
                None => None,
                Some(_) => Some(self.plaintext(name, Some(version_id))?),
            };
            let mut cx = StepContext {
                secret_name: name,
                version_id,
                current: None,
                pending: pending.as_deref().map(Vec::as_slice),
                written: rec.versions.iter().find(|v| v.version_id == version_id),
            };
            let done = match step {
                None => {
                    // ACSCurrent as the record read above has it, and its version (what its
                    // value was written for).
                    let now_current = rec.version_with_stage(STAGE_CURRENT);
                    let current =
                        self.plaintext(name, now_current.map(|v| v.version_id.as_str()))?;
                    cx.current = Some(&current);
                    cx.written = now_current;
                    let value = self
                        .attempt(name, id, watch, Step::Create, || async {
                            let value = strategy.create(&cx).await?;
                            self.check_new_value(name, &value)?;
                            Ok(value)
                        })
                        .await
                        .map_err(|e| self.step_failed(e, &strategy, &cx))?;
                    self.begin(name, version_id, id, value).await?;
                    Step::Create
                }
                Some(RotationStep::Created) => {
                    self.attempt(name, id, watch, Step::Set, || strategy.set(&cx))
                        .await
                        .map_err(|e| self.step_failed(e, &strategy, &cx))?;
                    self.advance(
                        name,
                        version_id,
                        id,
                        RotationStep::Created,
                        RotationStep::Set,
                    )
                    .await?;
                    Step::Set
                }
                Some(RotationStep::Set) => {
                    self.attempt(name, id, watch, Step::Test, || strategy.test(&cx))
                        .await
                        .map_err(|e| self.step_failed(e, &strategy, &cx))?;
                    self.advance(
                        name,
                        version_id,
                        id,
                        RotationStep::Set,
                        RotationStep::Tested,
                    )
                    .await?;
                    Step::Test
                }
                Some(RotationStep::Tested) => {
                    self.attempt(name, id, watch, Step::Finish, || strategy.finish(&cx))
                        .await
                        .map_err(|e| self.step_failed(e, &strategy, &cx))?;
                    self.complete(name, version_id, id).await?;
                    Step::Finish
                }
            };
            if self.halt_here(done) {
                return Err(Stop::Halted);
            }
            #[cfg(any(test, feature = "failpoints"))]
            if lock(&self.inner.rotation.panic_after).as_deref() == Some(done.as_str()) {
                panic!("failpoint: a rotation step panics");
            }
            if done == Step::Finish {
                return Ok(());
            }
        }
    }

    /// A step's failure, with the account names its message may carry: those the
    /// strategy knows (a database's admin, clone and previous accounts) and the
    /// `AccountName`, `UserName` or `PrincipalName` of the current and pending values.
    fn step_failed(&self, e: Error, strategy: &AnyStrategy, cx: &StepContext<'_>) -> Stop {
        let current = match cx.current {
            Some(_) => None,
            None => self.plaintext(cx.secret_name, None).ok(),
        };
        let mut names = strategy.account_names();
        for v in [
            cx.current,
            current.as_deref().map(Vec::as_slice),
            cx.pending,
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(v) {
                for k in ["AccountName", "UserName", "PrincipalName"] {
                    if let Some(n) = o.get(k).and_then(|n| n.as_str()) {
                        names.push(n.to_string());
                    }
                }
            }
        }
        Stop::Failed(e, names)
    }

    /// A version's plaintext (`ACSCurrent` without an id); binary values as stored.
    fn plaintext(&self, name: &str, version_id: Option<&str>) -> Result<Zeroizing<Vec<u8>>> {
        let v = self.get_secret_value(name, version_id, None)?;
        Ok(match v.secret_data_type {
            SecretDataType::Text => Zeroizing::new(v.secret_data.clone().into_bytes()),
            SecretDataType::Binary => {
                use base64::Engine as _;
                Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(&v.secret_data)
                        .map_err(Error::internal)?,
                )
            }
        })
    }

    /// Refuses a new value that is not one of the secret's type (as a put would): a
    /// strategy that does not make such values (`random` without a `field`, a webhook
    /// answering something else) must not leave an `Rds` or `AccessKey` secret with a
    /// current value its applications, and its next rotation, cannot read.
    fn check_new_value(&self, name: &str, value: &[u8]) -> Result<()> {
        // The record alone: not the whole answer describe would build.
        let kind = super::secrets::load_secret(self.store(), name)?.secret_type;
        let wrong = |why: String| {
            Error::new(
                ErrorCode::RotationFailed,
                format!(
                    "create: the new value is not a value of a secret of secret_type {kind:?} \
                     ({why}); does the rotation policy's strategy make such values?"
                ),
            )
        };
        match kind {
            SecretType::Rds => validate_rds_value(value).map_err(|e| wrong(e.message)),
            SecretType::AccessKey if principal_named(value).is_none() => {
                Err(wrong("not a JSON object with a PrincipalName".into()))
            }
            _ => Ok(()),
        }
    }

    /// *Create*: the pending version with `ACSPending` and the persisted rotation, in
    /// one write.
    async fn begin(
        &self,
        name: &str,
        version_id: &str,
        identity: (i64, u64),
        value: Zeroizing<Vec<u8>>,
    ) -> Result<()> {
        let (this, name, version_id, now) = (
            self.clone(),
            name.to_string(),
            version_id.to_string(),
            self.now(),
        );
        self.write(move |t| {
            let mut rec = load_same_secret(t, &name, identity)?;
            match &rec.rotation.in_progress {
                Some(p) if p.version_id == version_id => return Ok(()),
                Some(_) if abandoned(&rec) => {}
                Some(_) => return Err(in_progress(&name)),
                None => {}
            }
            if rec.versions.iter().any(|v| v.version_id == version_id) {
                return Err(Error::new(
                    ErrorCode::VersionConflict,
                    format!("version {version_id} of secret {name} already exists"),
                ));
            }
            let nv = NewVersion {
                version_id: version_id.clone(),
                data: value,
                data_type: SecretDataType::Text,
                created_by: Principal::Rotation.label(),
                created_by_id: None,
            };
            let key = super::secrets::key_to_seal(t, &rec)?;
            let meta = this.seal_version(t, &rec, &key, &nv)?;
            rec.versions.push(meta);
            move_stage(&mut rec, STAGE_PENDING, &version_id)?;
            rec.rotation.create_failures = 0;
            rec.rotation.in_progress = Some(RotationInProgress {
                version_id,
                step: RotationStep::Created,
                started: now,
            });
            rec.rotation.status = Some(RotationStatus::InProgress);
            rec.update_date = now;
            prune(t, &mut rec, this.inner.config.max_versions);
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(())
        })
        .await
    }

    /// Records that *set* or *test* is done.
    async fn advance(
        &self,
        name: &str,
        version_id: &str,
        identity: (i64, u64),
        from: RotationStep,
        to: RotationStep,
    ) -> Result<()> {
        let (name, version_id) = (name.to_string(), version_id.to_string());
        self.write(move |t| {
            let mut rec = load_same_secret(t, &name, identity)?;
            match &mut rec.rotation.in_progress {
                Some(p) if p.version_id == version_id && p.step == from => p.step = to,
                Some(p) if p.version_id == version_id && p.step == to => return Ok(()),
                _ => return Err(in_progress(&name)),
            }
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(())
        })
        .await
    }

    /// *Finish*: `ACSCurrent` to the pending version (the old one becomes
    /// `ACSPrevious`), `ACSPending` removed, next rotation scheduled; one write.
    /// The rotation's audit record commits with it: a finish that cannot be recorded
    /// is not made (the rotation fails at *finish* and resumes there).
    async fn complete(&self, name: &str, version_id: &str, identity: (i64, u64)) -> Result<()> {
        let (this, name, version_id, now) = (
            self.clone(),
            name.to_string(),
            version_id.to_string(),
            self.now(),
        );
        let entry = self.rotation_audit_entry(&name);
        self.write(move |t| {
            let mut rec = load_same_secret(t, &name, identity)?;
            match &rec.rotation.in_progress {
                Some(p) if p.version_id == version_id && p.step == RotationStep::Tested => {}
                _ => return Err(in_progress(&name)),
            }
            // What the rotation replaces, for whoever tells rotations from other writes.
            let replaced = rec
                .version_with_stage(STAGE_CURRENT)
                .map(|v| v.version_id.clone())
                .filter(|v| *v != version_id);
            // The pending version may be gone (its ACSPending removed by hand, then
            // pruned): fail instead of taking ACSCurrent from the current version.
            move_stage(&mut rec, STAGE_CURRENT, &version_id).map_err(|e| {
                Error::new(
                    ErrorCode::RotationFailed,
                    format!("finish: the pending version is gone ({})", e.message),
                )
            })?;
            for v in &mut rec.versions {
                v.stages.retain(|s| s != STAGE_PENDING);
                if v.version_id == version_id {
                    v.rotated_from = replaced.clone();
                }
            }
            rec.rotation.in_progress = None;
            let finished = &mut rec.rotation.finished;
            finished.push(version_id.clone());
            if finished.len() > super::records::FINISHED_ROTATIONS_KEPT {
                finished.remove(0);
            }
            rec.rotation.status = Some(RotationStatus::Succeeded);
            rec.rotation.last_error = None;
            rec.rotation.last_failure = None;
            rec.last_rotation_date = Some(now);
            rec.update_date = now;
            prune(t, &mut rec, this.inner.config.max_versions);
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            this.append_audit(t, &entry, AuditOutcome::Succeeded, None)?;
            Ok(())
        })
        .await
    }

    /// A failed rotation: `ACSCurrent` untouched, the error kept. Failed in *create*:
    /// nothing pending is left and the next attempt comes an hour later, doubling with
    /// each such failure in a row, up to the interval. Failed later: the pending
    /// version stays and the rotation resumes (see below).
    /// The engine's audit record of the failure is appended in the same write. When it
    /// cannot be, the failure is still kept (and logged): without it the next tick would
    /// try the target again at once, and again.
    async fn record_failure(
        &self,
        name: &str,
        version_id: &str,
        identity: (i64, u64),
        e: &Error,
    ) -> Result<()> {
        let (this, name, version_id, now) = (
            self.clone(),
            name.to_string(),
            version_id.to_string(),
            self.now(),
        );
        let message: String = e.message.chars().take(ERROR_MAX).collect();
        let message = format!("{}: {message}", e.code);
        let (entry, code) = (self.rotation_audit_entry(&name), e.code);
        self.write(move |t| {
            if let Err(e) = this.append_audit(t, &entry, AuditOutcome::Failed, Some(code)) {
                tracing::error!(secret = %name, error = %e, "a failed rotation could not be audited");
            }
            let Some(mut rec) = load::<SecretRecord>(t, Table::Secrets, name.as_bytes())? else {
                return Ok(());
            };
            // Another rotation's, or another secret of the same name: not this failure's.
            if rec
                .rotation
                .in_progress
                .as_ref()
                .is_some_and(|p| p.version_id != version_id)
                || identity != rec.identity()
            {
                return Ok(());
            }
            // Once *set* has been tried, the target system may hold the pending value,
            // and it may be the only one that works there (a changed password, say):
            // even a *set* that reported a failure may have been applied (a timeout
            // after the change, a connection lost before the answer). So the pending
            // version and the persisted step stay, and the next attempt resumes with
            // the same value (*set* again, or *test*) instead of losing it, as AWS
            // keeps `AWSPENDING`. A failure of *create* leaves nothing behind.
            // A pending version that is gone cannot be resumed: the rotation ends.
            // A pending version whose ACSPending label was removed by hand is abandoned.
            // Nothing begun: *create* failed. In a row, those are tried again sooner
            // than an interval later (see `SecretRecord::next_rotation_date`).
            if rec.rotation.in_progress.is_none() {
                rec.rotation.create_failures = rec.rotation.create_failures.saturating_add(1);
            } else {
                rec.rotation.create_failures = 0;
            }
            let applied = rec
                .rotation
                .in_progress
                .as_ref()
                .is_some_and(|p| p.version_id == version_id)
                && rec.version_has(&version_id, STAGE_PENDING);
            if !applied {
                for v in &mut rec.versions {
                    if v.version_id == version_id {
                        v.stages.retain(|s| s != STAGE_PENDING);
                    }
                }
                rec.rotation.in_progress = None;
            }
            rec.rotation.status = Some(RotationStatus::Failed);
            rec.rotation.last_error = Some(message);
            rec.rotation.last_failure = Some(now);
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(())
        })
        .await
    }

    /// Builds the index once for a database written before it existed (one pass over
    /// secrets and keys, then never again).
    async fn ensure_schedule(&self) -> Result<()> {
        if self.inner.rotation.schedule_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let version = self.store().get(Table::Meta, META_SCHEDULE_VERSION)?;
        if version.as_deref() != Some(SCHEDULE_VERSION) {
            self.write(|t| {
                for (k, v) in t.scan(Table::Secrets, b"", None, usize::MAX)? {
                    let mut rec: SecretRecord = super::records::decode(&v)?;
                    reindex_secret(t, &mut rec)?;
                    t.put(Table::Secrets, &k, encode(&rec));
                }
                for (k, v) in t.scan(Table::Keys, b"", None, usize::MAX)? {
                    let mut rec: KeyRecord = super::records::decode(&v)?;
                    reindex_key(t, &mut rec);
                    t.put(Table::Keys, &k, encode(&rec));
                }
                t.put(
                    Table::Meta,
                    META_SCHEDULE_VERSION,
                    SCHEDULE_VERSION.to_vec(),
                );
                Ok(())
            })
            .await?;
            tracing::info!("built the rotation schedule index");
        }
        self.inner
            .rotation
            .schedule_checked
            .store(true, Ordering::Release);
        Ok(())
    }

    /// Runs what the index says is due: secret rotations (new, overdue or interrupted),
    /// key rotations and destructions, and purges. Reads only due entries and their records; waits for
    /// the rotations it started.
    /// With `wait` false the rotations it started go on by themselves (the server's
    /// ticker): a target that hangs (each attempt may take the step timeout) then holds
    /// only its own rotation, not the next ticks' purges, key jobs and other rotations.
    pub(crate) async fn run_due_jobs(&self, wait: bool) -> Result<DueReport> {
        self.ensure_schedule().await?;
        let now = self.now();
        let cfg = &self.inner.config.rotation;
        let mut report = DueReport::default();
        let mut running = Vec::new();
        for (due, job) in due_jobs(self.store(), now, cfg.max_due_per_tick)? {
            // One job's failure (a record that does not decode, a failed commit) is
            // logged and the tick goes on: it must not hold up every job after it.
            let what = format!("{job:?}");
            if let Err(e) = self
                .run_due_job(due, job, now, &mut report, &mut running)
                .await
            {
                tracing::error!(job = %what, code = %e.code, error = %e.message, "a due job failed; the tick goes on");
            }
        }
        report.started_rotations = running.len();
        if !wait {
            return Ok(report);
        }
        for mut rx in running {
            match rx.wait_for(Option::is_some).await.ok().as_deref() {
                Some(Some(Ok(_))) => report.rotated_secrets += 1,
                _ => report.failed_rotations += 1,
            }
        }
        Ok(report)
    }

    /// One entry of [`run_due_jobs`](Self::run_due_jobs).
    async fn run_due_job(
        &self,
        due: i64,
        job: Job,
        now: i64,
        report: &mut DueReport,
        running: &mut Vec<watch::Receiver<Outcome>>,
    ) -> Result<()> {
        match job {
            Job::Secret(name) => {
                if lock(&self.inner.rotation.inflight).contains_key(&name) {
                    return Ok(());
                }
                match self.start_rotation(&name, None, Trigger::Schedule(due)) {
                    Ok(Started::Running(rx)) => running.push(rx),
                    Ok(Started::Done(_)) => {}
                    // Begun since the check above (a request resumed it): its entry stays.
                    Err(e) if e.code == ErrorCode::RotationInProgress => {}
                    Err(e) => {
                        tracing::info!(secret = %name, code = %e.code, "dropping a stale schedule entry");
                        self.drop_stale(due, Job::Secret(name)).await?;
                    }
                }
            }
            Job::Key(id) => {
                if self.rotate_key_if_due(due, id).await? {
                    report.rotated_keys += 1;
                }
            }
            Job::Purge(name) => {
                if self.purge_if_due(due, name).await? {
                    report.purged_secrets += 1;
                }
            }
            Job::Destroy(id) => {
                if self.destroy_key_if_due(due, &id, now).await? {
                    report.destroyed_keys += 1;
                }
            }
        }
        Ok(())
    }

    /// Removes an entry whose record no longer wants it (or re-indexes the record).
    async fn drop_stale(&self, due: i64, job: Job) -> Result<()> {
        self.write(move |t| {
            t.delete(Table::RotationSchedule, &schedule::entry_key(due, &job));
            if let Job::Secret(name) = &job
                && let Some(mut rec) = load::<SecretRecord>(t, Table::Secrets, name.as_bytes())?
            {
                if rec.rotation.scheduled == Some(due) {
                    rec.rotation.scheduled = None;
                }
                // Indexed again from the record: for nothing (no policy, pending
                // deletion), at the policy's next date, or, for an unfinished rotation,
                // where it resumes (so a crash before it ends still resumes it).
                reindex_secret(t, &mut rec)?;
                t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            }
            Ok(())
        })
        .await
    }

    async fn rotate_key_if_due(&self, due: i64, id: String) -> Result<bool> {
        let (this, now) = (self.clone(), self.now());
        self.write(move |t| {
            let Some(mut k) = load::<KeyRecord>(t, Table::Keys, id.as_bytes())? else {
                t.delete(
                    Table::RotationSchedule,
                    &schedule::entry_key(due, &Job::Key(id)),
                );
                return Ok(false);
            };
            let rotate = k.next_rotation_date().is_some_and(|d| d <= now);
            if rotate {
                this.add_key_version(&mut k, now, false);
            }
            if k.scheduled_rotation != Some(due) {
                t.delete(
                    Table::RotationSchedule,
                    &schedule::entry_key(due, &Job::Key(id)),
                );
            }
            reindex_key(t, &mut k);
            t.put(Table::Keys, k.key_id.as_bytes(), encode(&k));
            Ok(rotate)
        })
        .await
    }

    async fn purge_if_due(&self, due: i64, name: String) -> Result<bool> {
        let (now, this) = (self.now(), self.clone());
        // Through the access write path: a purge revokes the tokens the secret's
        // rotations issued, and cached identities must go with them.
        self.write_access(move |t| {
            let entry = schedule::entry_key(due, &Job::Purge(name.clone()));
            let Some(mut rec) = load::<SecretRecord>(t, Table::Secrets, name.as_bytes())? else {
                t.delete(Table::RotationSchedule, &entry);
                return Ok(false);
            };
            if rec.planned_delete_time.is_some_and(|p| p <= now) {
                t.delete(Table::RotationSchedule, &entry);
                access_key::revoke_rotation_tokens(t, &this.inner.barrier, &rec)?;
                remove_secret(t, &rec);
                return Ok(true);
            }
            if rec.rotation.purge_scheduled != Some(due) {
                t.delete(Table::RotationSchedule, &entry);
            }
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(false)
        })
        .await
    }
}

/// Re-indexes every secret attached to a policy after the policy changed (cost: the
/// secrets attached to it).
pub(crate) fn reindex_policy_secrets(t: &mut Txn<'_>, policy: &PolicyRecord) -> Result<()> {
    let mut prefix = policy.name.as_bytes().to_vec();
    prefix.push(0);
    for (k, _) in t.scan(Table::PolicySecrets, &prefix, None, usize::MAX)? {
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(mut rec) = load::<SecretRecord>(t, Table::Secrets, name.as_bytes())? {
            reindex_secret_with(t, &mut rec, Some(policy));
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
        }
    }
    Ok(())
}

/// Checks a policy's strategy settings (policy create and update).
pub(crate) fn validate_strategy_settings(
    strategy: api::RotationStrategy,
    settings: &BTreeMap<String, String>,
) -> Result<()> {
    match strategy {
        api::RotationStrategy::Random => {
            random::RandomStrategy::from_settings(settings).map(|_| ())
        }
        api::RotationStrategy::Webhook => webhook::validate_settings(settings),
        api::RotationStrategy::AccessKey => access_key::validate_settings(settings),
        api::RotationStrategy::SshKey => ssh_key::validate_settings(settings),
        api::RotationStrategy::Postgresql | api::RotationStrategy::Mysql => {
            database::validate_settings(settings)
        }
    }
}

/// Test-only: runs a strategy through the shared conformance suite (each step twice)
/// and returns the value it created. Integration tests use it for the webhook
/// strategy against a real HTTPS function.
#[cfg(any(test, feature = "failpoints"))]
pub async fn strategy_conformance(
    kind: api::RotationStrategy,
    settings: &BTreeMap<String, String>,
    signing_key: &[u8],
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
    current: &[u8],
) -> Result<Vec<u8>> {
    let s = AnyStrategy::build(
        kind,
        settings,
        |_| Ok(Zeroizing::new(signing_key.to_vec())),
        &EgressPolicy::default(),
    )?;
    let s = match s {
        AnyStrategy::Webhook(w) => AnyStrategy::Webhook(w.with_clock(now)),
        other => other,
    };
    strategy::conformance(&s, current).await.map(|v| v.to_vec())
}

#[cfg(any(test, feature = "failpoints"))]
impl Service {
    /// Test-only: runs the strategy of a secret's policy through the shared conformance
    /// suite (each step twice) against the secret as it is, without recording a
    /// version; returns the value it created. For strategies that act on this service
    /// or read the secret (`access_key`, `ssh_key`).
    pub async fn rotation_conformance(&self, name: &str) -> Result<Vec<u8>> {
        let rec = load_live_secret(self.store(), name)?;
        let policy: PolicyRecord = match &rec.rotation_policy {
            Some(p) => load(self.store(), Table::RotationPolicies, p.as_bytes())?,
            None => None,
        }
        .ok_or_else(|| Error::new(ErrorCode::InvalidState, "the secret has no policy"))?;
        let strategy = self.strategy_for(&policy)?;
        let current = self.plaintext(name, None)?;
        strategy::conformance_of(&strategy, name, &current)
            .await
            .map(|v| v.to_vec())
    }
}

#[cfg(test)]
mod withhold_tests {
    use super::{WITHHELD, withhold};

    #[test]
    fn account_names_are_withheld_as_whole_words() {
        let names = vec!["app".to_string(), "app_clone".to_string(), String::new()];
        let w = WITHHELD;
        assert_eq!(
            withhold(
                "account app_clone exists and is not a member of app",
                &names
            ),
            format!("account {w} exists and is not a member of {w}")
        );
        assert_eq!(
            withhold("login as \"app\" failed; 'app'@'%' in application", &names),
            format!("login as \"{w}\" failed; '{w}'@'%' in application")
        );
        assert_eq!(withhold("no names here", &names), "no names here");
        assert_eq!(withhold("app", &names), w);
        assert_eq!(withhold("happy apps", &names), "happy apps");
        // What a replacement wrote is not looked at again.
        let names = vec!["account".to_string(), "withheld".to_string()];
        assert_eq!(withhold("account x", &names), format!("{w} x"));
    }
}
