//! A client-side cache of secret values, for applications that read the same secrets
//! often (as AWS's and Alibaba's caching clients do).
//!
//! - A value is served from memory until it is `ttl` old (default 5 minutes), then
//!   read again. Errors are never cached, and a value whose reading again failed is
//!   never served again (the secret may be gone, or no longer readable by the token);
//!   when the server refused the secret as a whole (gone, or not readable by the
//!   token), neither is any other version of it.
//! - Except while the server cannot be asked: when reading again fails with a
//!   transient error (no answer, `Unavailable`, a proxy's 502/503/504), which says
//!   nothing of the secret or the token, the value goes on being served until it is
//!   `ttl + stale_if_error` old (default 5 minutes more), as AWS's caching client and
//!   Vault Agent keep serving through an outage; meanwhile it is read again at most once
//!   a second. Never for [`SecretCache::refresh`]: a value that stopped working is not
//!   served again.
//! - When the server says the token is no longer valid (`Unauthenticated`, or
//!   `TooManyRequests`, which it says only to requests without a valid token), no value
//!   is served again, of any secret: the cache empties.
//! - Concurrent reads of one secret that miss share one request, and its error: callers
//!   that were waiting for a request that failed get its error, not a request each.
//! - At most `max_entries` values are kept; beyond that the least recently used goes
//!   (never one whose read is under way: the map then holds one more for a while).
//! - Values are wiped from memory when they leave the cache (and the last caller drops
//!   its handle), and so is the answer they were read from. Transient copies the cache
//!   does not own are not: the HTTP and TLS layers' buffers, and the JSON parser's
//!   scratch copy of a value with escapes (a JSON value's quotes).
//! - [`SecretCache::refresh`] reads a secret again at once: call it when the value
//!   stopped working (a refused login after a rotation). From then on the old value is
//!   not served, also when the caller gives up on the refresh before it comes back.
//!   [`SecretCache::refresh_unless_replaced`] does so only if the cache does not yet
//!   hold the version that replaced the one that failed, so many callers that saw it
//!   fail share one read.
//!
//! The cache belongs to one [`Client`], hence one token: values read with one
//! principal's rights are never served to another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strongbox_schemas as api;
use zeroize::Zeroize;

use crate::{Client, Error, ErrorCode, Result};

/// How the cache behaves.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// How long a value is served before it is read again.
    pub ttl: Duration,
    /// Most values kept.
    pub max_entries: usize,
    /// How long past `ttl` a value is still served when reading it again fails with a
    /// transient error (the server cannot be reached or cannot serve now); zero for
    /// never.
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_entries: 1024,
            stale_if_error: Duration::from_secs(300),
        }
    }
}

/// While a value is served past its TTL because the server cannot be asked, how often
/// it is read again.
const STALE_RETRY: Duration = Duration::from_secs(1);

/// A value held by the cache; derefs to [`api::SecretValue`]. Its plaintext is wiped
/// when the last handle is dropped.
pub struct CachedValue(api::SecretValue);

impl std::ops::Deref for CachedValue {
    type Target = api::SecretValue;
    fn deref(&self) -> &api::SecretValue {
        &self.0
    }
}

impl Drop for CachedValue {
    fn drop(&mut self) {
        self.0.secret_data.zeroize();
    }
}

impl std::fmt::Debug for CachedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Which version: `(name, version_id, version_stage)` as given to the API.
type Key = (String, Option<String>, Option<String>);

#[derive(Default)]
struct Slot {
    /// The value and when the request that read it was sent.
    value: Option<(Arc<CachedValue>, Instant)>,
    /// The last request's error and when that request was sent.
    failure: Option<(Error, Instant)>,
    /// The version of the last value read into the slot (kept while a refresh has
    /// taken the value out), and the versions that value replaced: the slot's earlier
    /// one, and the one whose failure made a caller read it. Only a caller whose value
    /// of one of those failed takes the newer one without a request. Another version
    /// alone says nothing: it may be older than the one that failed (read earlier,
    /// under another key).
    last_version: Option<String>,
    replaced: Vec<String>,
    /// While the value is served past its TTL (the last read failed with a transient
    /// error): no read is sent before this.
    stale_until_retry: Option<Instant>,
}

struct Entry {
    /// Held across the request of a miss, so concurrent misses wait for it.
    slot: Arc<tokio::sync::Mutex<Slot>>,
    last_used: Instant,
    /// The slot's value while it is served past its TTL because the server cannot be
    /// asked (with when it was read): served to callers that find the slot held by a
    /// read again, which may hang until the client's timeout.
    stale: Option<(Arc<CachedValue>, Instant)>,
}

/// A cache of secret values over a [`Client`]. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct SecretCache {
    client: Client,
    config: CacheConfig,
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
    /// Requests sent to the server (misses and refreshes), for the caller's metrics.
    fetches: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("config", &self.config)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl SecretCache {
    /// A cache over `client`.
    pub fn new(client: Client, config: CacheConfig) -> Self {
        Self {
            client,
            config,
            entries: Arc::default(),
            fetches: Arc::default(),
        }
    }

    /// The value of `ACSCurrent`.
    pub async fn get(&self, name: &str) -> Result<Arc<CachedValue>> {
        self.get_version(name, None, None).await
    }

    /// The value of a version by id or stage (as [`Client::get_secret_value`]).
    pub async fn get_version(
        &self,
        name: &str,
        version_id: Option<&str>,
        version_stage: Option<&str>,
    ) -> Result<Arc<CachedValue>> {
        let key = (
            name.to_string(),
            version_id.map(str::to_string),
            version_stage.map(str::to_string),
        );
        self.load(&key, false, None).await
    }

    /// Reads `ACSCurrent` again now (and caches it), whatever its age; other cached
    /// versions of the secret are forgotten. Callers that were waiting for a refresh
    /// sent after they asked get its result; each other caller reads again, since a
    /// read sent before it asked may predate the change it saw. When many callers see
    /// one value stop working, [`refresh_unless_replaced`](Self::refresh_unless_replaced)
    /// reads it again once for all of them.
    pub async fn refresh(&self, name: &str) -> Result<Arc<CachedValue>> {
        let key = (name.to_string(), None, None);
        self.lock().retain(|k, _| k.0 != name || *k == key);
        self.load(&key, true, None).await
    }

    /// Like [`refresh`](Self::refresh), for a caller whose value (version
    /// `failed_version_id`) stopped working: when the cache already holds, read within
    /// the TTL, the version of `ACSCurrent` that replaced that one (another caller
    /// refreshed it meanwhile), that one is returned without a request. So N workers
    /// whose logins failed after a rotation make one read between them, not N.
    pub async fn refresh_unless_replaced(
        &self,
        name: &str,
        failed_version_id: &str,
    ) -> Result<Arc<CachedValue>> {
        let key = (name.to_string(), None, None);
        self.lock().retain(|k, _| k.0 != name || *k == key);
        self.load(&key, true, Some(failed_version_id)).await
    }

    /// The value of `key`: from memory unless stale (or `refresh`, unless it is no
    /// longer version `failed`), else one request for all callers waiting on the slot.
    async fn load(
        &self,
        key: &Key,
        refresh: bool,
        failed: Option<&str>,
    ) -> Result<Arc<CachedValue>> {
        let arrived = Instant::now();
        let stale_ok = |at: &Instant| {
            at.elapsed() < self.config.ttl.saturating_add(self.config.stale_if_error)
        };
        let (slot_ref, stale) = self.slot(key);
        let mut slot = match slot_ref.try_lock() {
            Ok(slot) => slot,
            Err(_) => {
                // Another caller is reading the value again. While the server cannot be
                // asked, that read may hang until the client's timeout: the value served
                // past its TTL is served meanwhile rather than waited for.
                if !refresh
                    && let Some((v, at)) = &stale
                    && stale_ok(at)
                {
                    return Ok(v.clone());
                }
                slot_ref.lock().await
            }
        };
        // A value read by a request sent after this caller arrived (while it waited)
        // is as good as its own; one sent before may be older than what the caller
        // wants to replace. A failure is shared with every caller that arrived before
        // it came back.
        // The version that replaced the one that failed counts only while it is within
        // the TTL: it may itself have been replaced since.
        let within_ttl = |at: &Instant| at.elapsed() < self.config.ttl;
        let replaces_failed = |v: &CachedValue| {
            failed.is_some_and(|f| v.version_id != f && slot.replaced.iter().any(|r| r == f))
        };
        // Served past its TTL because the server could not be asked a moment ago: not
        // asked again before the retry time, and never past `ttl + stale_if_error`.
        if let Some((v, at)) = &slot.value
            && (*at >= arrived
                || (replaces_failed(v) && within_ttl(at))
                || (!refresh && within_ttl(at))
                || (!refresh
                    && stale_ok(at)
                    && slot.stale_until_retry.is_some_and(|r| Instant::now() < r)))
        {
            return Ok(v.clone());
        }
        if let Some((e, at)) = &slot.failure
            && *at >= arrived
        {
            return Err(e.clone());
        }
        if refresh {
            // The value the caller wants replaced is not served while the read is under
            // way, nor after it if the caller gives up on it (a dropped future): other
            // callers then read again rather than get what stopped working.
            slot.value = None;
            if slot.stale_until_retry.take().is_some() {
                self.set_stale(key, &slot_ref, None);
            }
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = Instant::now();
        match self
            .client
            .get_secret_value(&key.0, key.1.as_deref(), key.2.as_deref())
            .await
        {
            Ok(v) => {
                let fresh = Arc::new(CachedValue(v));
                // Read after `failed` stopped working (a slot made since, after an
                // error or an eviction, knows no earlier version): it replaces that
                // one too, so later callers whose value of it failed share this read.
                let replaced: Vec<String> = slot
                    .last_version
                    .take()
                    .into_iter()
                    .chain(failed.map(str::to_string))
                    .filter(|r| *r != fresh.version_id)
                    .collect();
                if !replaced.is_empty() {
                    slot.replaced = replaced;
                }
                slot.last_version = Some(fresh.version_id.clone());
                slot.value = Some((fresh.clone(), sent));
                slot.failure = None;
                if slot.stale_until_retry.take().is_some() {
                    self.set_stale(key, &slot_ref, None);
                }
                Ok(fresh)
            }
            Err(e)
                if !refresh
                    && e.is_transient()
                    && slot.value.as_ref().is_some_and(|(_, at)| stale_ok(at)) =>
            {
                // The server could not be asked: nothing was said of the secret or the
                // token, so the value goes on being served, for a while.
                slot.stale_until_retry = Some(Instant::now() + STALE_RETRY);
                self.set_stale(key, &slot_ref, slot.value.clone());
                match &slot.value {
                    Some((v, _)) => Ok(v.clone()),
                    None => Err(e),
                }
            }
            Err(e) => {
                // Stamped when it came back: every caller that waited for it shares it,
                // also those that arrived while it was under way (the server failed
                // just now); a caller arriving later asks again.
                slot.failure = Some((e.clone(), Instant::now()));
                // The value this read was to replace is not served again: it was stale,
                // or the caller refreshed because it stopped working, and the server may
                // just have said it is gone or no longer readable by this token.
                slot.value = None;
                {
                    // Nothing to keep: the slot does not take a place in the cache.
                    let mut map = self.lock();
                    if map
                        .get(key)
                        .is_some_and(|e| Arc::ptr_eq(&e.slot, &slot_ref))
                    {
                        map.remove(key);
                    }
                    // The token is no longer valid (revoked, expired; the server says
                    // `TooManyRequests` only to requests without a valid token):
                    // nothing read with it is served again, of any secret. The server
                    // refused the secret as a whole (gone, or no longer readable by
                    // this token): no other version of it is served either. Not for
                    // one version's refusal (a stage not there yet, a version pruned
                    // or under a disabled key), nor anything that did not come from
                    // the server. A 401 or 403 whose code this client does not know (a
                    // newer server), or without the server's body (passed on by a
                    // proxy), is taken the same way.
                    match (e.code(), e.status()) {
                        (Some(ErrorCode::Unauthenticated | ErrorCode::TooManyRequests), _)
                        | (None, Some(401)) => {
                            map.clear();
                        }
                        (
                            Some(
                                ErrorCode::SecretNotFound
                                | ErrorCode::SecretPendingDeletion
                                | ErrorCode::Forbidden,
                            ),
                            _,
                        )
                        | (None, Some(403)) => map.retain(|k, _| k.0 != key.0),
                        _ => {}
                    }
                }
                Err(e)
            }
        }
    }

    /// Forgets every cached version of `name`.
    pub fn invalidate(&self, name: &str) {
        self.lock().retain(|k, _| k.0 != name);
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests this cache has sent to the server so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the map leaves it consistent (every change is one call).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The slot of `key`, made if absent; evicts the least recently used beyond the
    /// limit.
    /// The slot of `key` (made if there is none), and the value it serves past its TTL
    /// while the server cannot be asked, if any.
    #[allow(clippy::type_complexity)]
    fn slot(
        &self,
        key: &Key,
    ) -> (
        Arc<tokio::sync::Mutex<Slot>>,
        Option<(Arc<CachedValue>, Instant)>,
    ) {
        let mut map = self.lock();
        let now = Instant::now();
        if let Some(e) = map.get_mut(key) {
            e.last_used = now;
            return (e.slot.clone(), e.stale.clone());
        }
        // The least recently used goes, but not one whose slot is held (a read under
        // way, which its waiters share: evicted, the next caller of its key would send
        // a second). With every slot held, the map holds one more for a while.
        while map.len() >= self.config.max_entries.max(1) {
            let Some(oldest) = map
                .iter()
                .filter(|(_, e)| e.slot.try_lock().is_ok())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        map.insert(
            key.clone(),
            Entry {
                slot: slot.clone(),
                last_used: now,
                stale: None,
            },
        );
        (slot, None)
    }

    /// Records on `key`'s entry (if it is still `slot`'s) the value served past its TTL,
    /// or that there is none.
    fn set_stale(
        &self,
        key: &Key,
        slot: &Arc<tokio::sync::Mutex<Slot>>,
        stale: Option<(Arc<CachedValue>, Instant)>,
    ) {
        if let Some(e) = self.lock().get_mut(key)
            && Arc::ptr_eq(&e.slot, slot)
        {
            e.stale = stale;
        }
    }
}
