//! The audit trail: one append-only record per request (but most requests without a
//! valid token past their address's limit: `api::throttle`), chained with HMAC-SHA256,
//! its oldest records deleted only by a prune, which leaves a MACed base.
//!
//! Records are appended by write jobs on the writer thread, so they are numbered and
//! chained in commit order without locks. A request that changes something appends its
//! record in the same job as the change ([`Service::write`]), so both commit together
//! or neither does; a request that only reads appends its record in a job of its own,
//! and concurrent reads share one commit (group commit). Layout and MACs are drawn in
//! `docs/design/storage.md` and `docs/design/crypto.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strongbox_schemas::{self as api, AuditOutcome, ErrorCode, Timestamp};

use super::Service;
use crate::barrier::{self, Barrier, FORMAT_V1};
use crate::error::{Error, Result};
use crate::storage::{Mutation, Reader, Table, Txn};

const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// Where the trail begins once a prune has deleted its oldest records (see [`Head`]).
const META_AUDIT_BASE: &[u8] = b"audit_base";
/// Records read per scan chunk.
const CHUNK: usize = 512;
/// Most records one `GET /v1/audit` page looks at, so a filter that matches little
/// cannot make one request scan the whole trail.
const PAGE_SCAN_BUDGET: usize = 10_000;
const USER_AGENT_MAX: usize = 256;
/// Longest resource recorded. Every valid resource is shorter (names are at most 192
/// characters); a longer one comes from a path that will be refused, and is cut so that
/// such requests cannot make records of many kilobytes.
const RESOURCE_MAX: usize = 512;

/// Most related resources one record holds.
const RELATED_MAX: usize = 4;

/// A resource as recorded: cut to its first [`RESOURCE_MAX`] characters.
fn cut_resource(resource: &str) -> String {
    match resource.char_indices().nth(RESOURCE_MAX) {
        Some((cut, _)) => format!("{}…", &resource[..cut]),
        None => resource.to_string(),
    }
}

/// Notes a resource the request being served acts on besides its route's (see
/// [`AuditSlot::add_related`]); nothing outside a request.
pub(crate) fn note_related(resource: &str) {
    let _ = SLOT.try_with(|s| s.add_related(resource));
}

tokio::task_local! {
    /// The record of the request being served; set by the HTTP edge around a handler.
    static SLOT: AuditSlot;
}

/// Runs `fut` as a task of its own that keeps the request's audit record (if any): it
/// runs to the end even when the request is dropped (client gone, stream reset).
pub(crate) fn spawn_in_request<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    match SLOT.try_with(Clone::clone) {
        Ok(slot) => tokio::spawn(SLOT.scope(slot, fut)),
        Err(_) => tokio::spawn(fut),
    }
}

/// What is known of a request before it is answered: everything a record holds but
/// its number, outcome and error code.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// Unix seconds when the request arrived.
    pub time: i64,
    /// Request id.
    pub request_id: String,
    /// Principal name, or `anonymous`.
    pub principal: String,
    /// The route's action (empty when no route matched).
    pub action: String,
    /// The resource authorized against.
    pub resource: String,
    /// Other resources the request acted on (see [`AuditSlot::add_related`]).
    pub related: Vec<String>,
    /// Client address.
    pub source: String,
    /// `User-Agent`, cut to 256 characters.
    pub user_agent: String,
}

impl AuditEntry {
    /// The record of this request, numbered `seq`.
    fn record(
        &self,
        seq: u64,
        outcome: AuditOutcome,
        error_code: Option<ErrorCode>,
    ) -> api::AuditRecord {
        api::AuditRecord {
            seq,
            time: Timestamp::from_unix(self.time),
            request_id: self.request_id.clone(),
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            related_resources: self.related.clone(),
            outcome,
            error_code,
            source: self.source.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    /// Sets the user agent, cut to its first 256 characters.
    pub fn set_user_agent(&mut self, ua: &str) {
        self.user_agent = ua.chars().take(USER_AGENT_MAX).collect();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Not recorded yet.
    Open,
    /// A public route: not recorded.
    Exempt,
    /// Taken by a write job, which records it with its change.
    Taken,
    /// Committed.
    Recorded,
    /// Could not be recorded; the request has failed.
    Failed,
    /// Handed to a commit that failed: whether it was kept is unknown.
    CommitFailed,
}

/// The audit record of one request in progress. Cheap to clone (shared).
#[derive(Clone)]
pub struct AuditSlot(Arc<Mutex<(AuditEntry, SlotState)>>);

impl AuditSlot {
    /// A slot for a request.
    pub fn new(entry: AuditEntry) -> Self {
        Self(Arc::new(Mutex::new((entry, SlotState::Open))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut AuditEntry, &mut SlotState) -> T) -> T {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (e, s) = &mut *g;
        f(e, s)
    }

    /// Records the action and the resource the request is authorized against.
    pub fn set_target(&self, action: &str, resource: &str) {
        self.with(|e, _| {
            e.action = action.to_string();
            e.resource = cut_resource(resource);
        });
    }

    /// Adds a resource the request acts on besides its route's (a re-encrypt's source
    /// key), so that the trail of that resource shows the request too. At most a few.
    pub fn add_related(&self, resource: &str) {
        self.with(|e, _| {
            if e.related.len() < RELATED_MAX {
                e.related.push(cut_resource(resource));
            }
        });
    }

    /// Whether the request is still to be recorded: neither exempt (a public route)
    /// nor recorded already, nor taken by a write job.
    pub fn is_open(&self) -> bool {
        self.with(|_, s| *s == SlotState::Open)
    }

    /// Marks a public route, which is not recorded.
    pub fn exempt(&self) {
        self.with(|_, s| *s = SlotState::Exempt);
    }

    fn take(&self) -> Option<AuditEntry> {
        self.with(|e, s| {
            (*s == SlotState::Open).then(|| {
                *s = SlotState::Taken;
                e.clone()
            })
        })
    }

    fn settle(&self, ok: bool) {
        self.with(|_, s| {
            *s = if ok {
                SlotState::Recorded
            } else {
                SlotState::Failed
            }
        });
    }

    /// The write job that took the record did not run to its end: nothing of it was
    /// kept, so the record is still to be written (with the request's failure).
    fn reopen(&self) {
        self.with(|_, s| {
            if *s == SlotState::Taken {
                *s = SlotState::Open;
            }
        });
    }

    /// The record went to a commit that failed.
    fn settle_commit_failed(&self) {
        self.with(|_, s| *s = SlotState::CommitFailed);
    }
}

/// Audit state of the services.
#[derive(Default)]
pub(crate) struct AuditState {
    /// Test-only: makes every append fail.
    failpoint: AtomicBool,
    /// Test-only: makes the next write job of a request panic.
    panic_next_write: AtomicBool,
    /// Test-only: holds the next `GET /v1/audit` until its client goes away.
    #[cfg(any(test, feature = "failpoints"))]
    hold_next_list: Mutex<Option<Arc<tokio::sync::Notify>>>,
    /// When the background retention may try again after a prune failed (unix seconds).
    retention_retry_at: std::sync::atomic::AtomicI64,
}

/// The persisted head: how many records were ever appended (pruned ones included) and
/// the last one's MAC, itself MACed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    count: u64,
    last: [u8; 32],
    mac: [u8; 32],
}

impl Head {
    fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 72 {
            return None;
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&v[..8]);
        let (mut last, mut mac) = ([0u8; 32], [0u8; 32]);
        last.copy_from_slice(&v[8..40]);
        mac.copy_from_slice(&v[40..72]);
        Some(Self {
            count: u64::from_be_bytes(count),
            last,
            mac,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(72);
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.last);
        v.extend_from_slice(&self.mac);
        v
    }
}

/// The head of an empty trail, written when the store is initialised: from then on a
/// store without a head has lost its trail (every record and the head deleted), which
/// unseal and `verify` report instead of taking it for a new store.
pub fn genesis_head(barrier: &Barrier) -> Mutation {
    let last = [0u8; 32];
    let head = Head {
        count: 0,
        last,
        mac: barrier.audit_head_mac(0, &last),
    };
    Mutation::Put(Table::Meta, META_AUDIT_HEAD.to_vec(), head.encode())
}

/// For a store initialised before init wrote the genesis head (format 1): the genesis
/// head when the store has neither a head nor a record (it never audited a request);
/// `None` otherwise (a head is there, or records without one, which unseal refuses).
pub fn genesis_head_if_never_used(
    r: &(impl Reader + ?Sized),
    barrier: &Barrier,
) -> Result<Option<Mutation>> {
    let unused = load_head(r)?.is_none()
        && load_base(r)?.is_none()
        && r.scan(Table::Audit, b"", None, 1)?.is_empty();
    Ok(unused.then(|| genesis_head(barrier)))
}

/// A head-shaped record of `meta` (`what` names it in the error when it does not decode).
fn load_mark(r: &(impl Reader + ?Sized), key: &[u8], what: &str) -> Result<Option<Head>> {
    read_mark(r, key)?
        .map(|h| h.ok_or_else(|| Error::internal(format!("{what} is malformed"))))
        .transpose()
}

/// A head-shaped record of `meta` as stored: `None` when absent, `Some(None)` when it
/// does not decode.
fn read_mark(r: &(impl Reader + ?Sized), key: &[u8]) -> Result<Option<Option<Head>>> {
    Ok(r.get(Table::Meta, key)?.map(|v| Head::decode(&v)))
}

fn load_head(r: &(impl Reader + ?Sized)) -> Result<Option<Head>> {
    load_mark(r, META_AUDIT_HEAD, "audit head record")
}

/// The base a prune left: laid out as a head, `count` being the last record deleted
/// and `last` its MAC, from which the chain goes on; `mac` is under the base's own tag
/// (`Barrier::audit_base_mac`). `None` when nothing was ever pruned.
fn load_base(r: &(impl Reader + ?Sized)) -> Result<Option<Head>> {
    load_mark(r, META_AUDIT_BASE, "the audit trail's base record")
}

/// Where the chain starts: after record `seq` (0: the first record), whose MAC is `prev`.
#[derive(Debug, Clone, Copy)]
struct Start {
    seq: u64,
    prev: [u8; 32],
}

impl Start {
    /// From the base a prune left, after checking its MAC.
    fn of(base: Option<Head>, barrier: &Barrier) -> Result<Self, String> {
        match base {
            None => Ok(Self {
                seq: 0,
                prev: [0u8; 32],
            }),
            Some(b) if barrier::digest_eq(&barrier.audit_base_mac(b.count, &b.last), &b.mac) => {
                Ok(Self {
                    seq: b.count,
                    prev: b.last,
                })
            }
            Some(b) => Err(format!(
                "the trail's base (records 1 to {} pruned) does not verify: it was forged",
                b.count
            )),
        }
    }
}

/// What a prune deletes: the records after the base through `cut` (with its MAC).
struct Prunable {
    start: u64,
    cut: Option<(u64, [u8; 32])>,
    more: bool,
}

/// A stored record: `0x01 ‖ MAC(32) ‖ JSON`.
struct Stored<'a> {
    mac: [u8; 32],
    body: &'a [u8],
}

fn split_stored(v: &[u8]) -> Option<Stored<'_>> {
    if v.len() < 33 || v[0] != FORMAT_V1 {
        return None;
    }
    let mut mac = [0u8; 32];
    mac.copy_from_slice(&v[1..33]);
    Some(Stored {
        mac,
        body: &v[33..],
    })
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn unauditable() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the request could not be recorded in the audit trail, so it was refused and nothing was changed",
    )
}

/// The request's change and its audit record were handed to a commit that failed: the
/// storage may or may not have kept them (an fsync error after the data was written).
fn commit_outcome_unknown() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the storage failed while committing this request and its audit record: whether the change was kept is unknown; read it back, or retry it (with the same version_id for a new version)",
    )
}

/// How a record's JSON begins: its number is the first field.
const SEQ_PREFIX: &[u8] = br#"{"seq":"#;

/// A record serialized but for its number (serialized as 0). The stored bytes are those
/// of the whole record serialized at once.
struct Drafted(Vec<u8>);

/// `{"seq":0`: how a drafted record begins.
const DRAFT_PREFIX: usize = SEQ_PREFIX.len() + 1;

impl Drafted {
    fn new(
        entry: &AuditEntry,
        outcome: AuditOutcome,
        error_code: Option<ErrorCode>,
    ) -> Result<Self> {
        let json =
            serde_json::to_vec(&entry.record(0, outcome, error_code)).map_err(Error::internal)?;
        if json.get(..DRAFT_PREFIX) != Some(br#"{"seq":0"#.as_slice()) {
            return Err(Error::internal(
                "an audit record does not serialize with its number first",
            ));
        }
        Ok(Self(json))
    }

    /// The stored record numbered `seq`, `0x01 ‖ MAC ‖ JSON`, and its MAC, computed by
    /// `mac` over the JSON.
    fn stored(&self, seq: u64, mac: impl FnOnce(&[u8]) -> [u8; 32]) -> (Vec<u8>, [u8; 32]) {
        let rest = self.0.get(DRAFT_PREFIX..).unwrap_or_default();
        let mut value = Vec::with_capacity(33 + DRAFT_PREFIX + 20 + rest.len());
        value.push(FORMAT_V1);
        value.extend_from_slice(&[0u8; 32]);
        value.extend_from_slice(SEQ_PREFIX);
        value.extend_from_slice(seq.to_string().as_bytes());
        value.extend_from_slice(rest);
        let m = mac(&value[33..]);
        value[1..33].copy_from_slice(&m);
        (value, m)
    }
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Exact principal name.
    pub principal: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Resources starting with this.
    pub resource_prefix: Option<String>,
    /// Exact request id.
    pub request_id: Option<String>,
    /// Records at or after this time (unix seconds).
    pub start_time: Option<i64>,
    /// Records before this time (unix seconds).
    pub end_time: Option<i64>,
    /// Page size.
    pub limit: usize,
    /// Records after this sequence number.
    pub after: u64,
}

impl AuditQuery {
    fn matches(&self, r: &api::AuditRecord) -> bool {
        let t = r.time.unix();
        self.principal.as_ref().is_none_or(|p| *p == r.principal)
            && self.action.as_ref().is_none_or(|a| *a == r.action)
            && self.request_id.as_ref().is_none_or(|i| *i == r.request_id)
            && self.resource_prefix.as_ref().is_none_or(|p| {
                r.resource.starts_with(p.as_str())
                    || r.related_resources
                        .iter()
                        .any(|x| x.starts_with(p.as_str()))
            })
            && self.start_time.is_none_or(|s| t >= s)
            && self.end_time.is_none_or(|e| t < e)
    }
}

impl Service {
    /// Runs `fut` (a request's handler) with `slot` as its audit record: the first
    /// write job it makes records it in the same commit.
    pub async fn audited<F: std::future::Future>(&self, slot: AuditSlot, fut: F) -> F::Output {
        SLOT.scope(slot, fut).await
    }

    /// Records a request that no write job recorded (reads, refusals, failures before
    /// any write), with its outcome, and waits for the commit. Concurrent calls share a
    /// commit. An error means the request must fail.
    pub async fn finish_audit(
        &self,
        slot: &AuditSlot,
        outcome: AuditOutcome,
        code: Option<ErrorCode>,
    ) -> Result<()> {
        let state = slot.with(|_, s| *s);
        match state {
            SlotState::Exempt | SlotState::Recorded => return Ok(()),
            SlotState::CommitFailed => return Err(commit_outcome_unknown()),
            SlotState::Failed | SlotState::Taken => return Err(unauditable()),
            SlotState::Open => {}
        }
        let Some(entry) = slot.take() else {
            return Ok(());
        };
        // Serialized here, so that the writer thread, which every request waits on, only
        // numbers and chains it.
        let drafted = match Drafted::new(&entry, outcome, code) {
            Ok(d) => d,
            Err(e) => {
                slot.settle(false);
                tracing::error!(error = %e, "audit record could not be written");
                return Err(unauditable());
            }
        };
        let this = self.clone();
        let r = self
            .store()
            .write(move |t| this.append_drafted(t, &drafted))
            .await;
        slot.settle(r.is_ok());
        r.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "audit record could not be written");
            unauditable()
        })
    }

    /// Records a request whose client went away while it was served, before anything
    /// recorded it (a read whose handler was still working): `Failed`, with
    /// `ClientClosedRequest`. It is called from a `Drop`, so it cannot wait: the record
    /// goes to the writer thread at once and commits with the next batch (nothing was
    /// answered, so nothing waits on it); a failure is logged.
    pub fn record_abandoned(&self, slot: &AuditSlot) {
        fn not_written(e: &Error) {
            tracing::error!(error = %e, "the record of an abandoned request could not be written");
        }
        let Some(entry) = slot.take() else {
            return;
        };
        let submitted = Drafted::new(
            &entry,
            AuditOutcome::Failed,
            Some(ErrorCode::ClientClosedRequest),
        )
        .and_then(|drafted| {
            let this = self.clone();
            self.store()
                .submit(move |t| this.append_drafted(t, &drafted))
        });
        match submitted {
            Ok(rx) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Ok(Err(e)) = rx.await {
                            not_written(&e);
                        }
                    });
                }
            }
            Err(e) => not_written(&e),
        }
    }

    /// Test-only: the next `GET /v1/audit` stops in its handler until its client goes
    /// away; `reached` is told when it got there.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn hold_next_audit_list(&self) -> Arc<tokio::sync::Notify> {
        let reached = Arc::new(tokio::sync::Notify::new());
        *self
            .inner
            .audit
            .hold_next_list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reached.clone());
        reached
    }

    /// Where a held `GET /v1/audit` stops (see [`Self::hold_next_audit_list`]).
    #[cfg(any(test, feature = "failpoints"))]
    pub async fn audit_list_hold_point(&self) {
        let held = self
            .inner
            .audit
            .hold_next_list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(reached) = held {
            reached.notify_one();
            std::future::pending::<()>().await;
        }
    }

    /// The write path of every service: runs `f` on the writer thread and, inside a
    /// request, appends the request's audit record in the same job, with `f`'s outcome.
    /// If the record cannot be written, nothing of `f` is kept and the request fails.
    pub(crate) async fn write<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let slot = SLOT.try_with(Clone::clone).ok();
        let Some((slot, entry)) = slot.and_then(|s| s.take().map(|e| (s, e))) else {
            return self.store().write(f).await;
        };
        let this = self.clone();
        let panic_now = self
            .inner
            .audit
            .panic_next_write
            .swap(false, Ordering::SeqCst);
        let f = move |t: &mut Txn<'_>| {
            assert!(!panic_now, "failpoint: a write job panics");
            f(t)
        };
        let r = self
            .store()
            .write_then(f, move |t, outcome| {
                let (o, code) = match outcome {
                    Ok(_) => (AuditOutcome::Succeeded, None),
                    // Refused by a check inside the write (service::authz): a denial,
                    // as when the guard refuses.
                    Err(e) if e.code == ErrorCode::Forbidden => {
                        (AuditOutcome::Denied, Some(e.code))
                    }
                    Err(e) => (AuditOutcome::Failed, Some(e.code)),
                };
                // Nothing is committed when this fails (`write_then`), whatever the
                // reason (the failpoint, a head that does not decode): the request is
                // told so, not that the outcome is unknown.
                this.append_audit(t, &entry, o, code)
                    .map(|_| ())
                    .map_err(|e| {
                        if e.code != ErrorCode::Unavailable {
                            tracing::error!(error = %e, "audit record could not be appended");
                        }
                        unauditable()
                    })
            })
            .await;
        let Ok(r) = r else {
            // Nothing was kept: the request is recorded, as failed, by its own record
            // when it is answered.
            slot.reopen();
            return Err(Error::internal(
                "a write job did not run to its end (it panicked, or the server is stopping); nothing of it was kept",
            ));
        };
        match r {
            Ok(inner) => {
                slot.settle(true);
                inner
            }
            // The record could not be appended: nothing was committed.
            Err(e) if e.code == ErrorCode::Unavailable => {
                slot.settle(false);
                Err(e)
            }
            Err(e) => {
                tracing::error!(error = %e, "a change and its audit record could not be committed");
                slot.settle_commit_failed();
                Err(commit_outcome_unknown())
            }
        }
    }

    /// Appends one record after the head; runs on the writer thread.
    pub(in crate::service) fn append_audit(
        &self,
        t: &mut Txn<'_>,
        entry: &AuditEntry,
        outcome: AuditOutcome,
        error_code: Option<ErrorCode>,
    ) -> Result<u64> {
        self.append_drafted(t, &Drafted::new(entry, outcome, error_code)?)
    }

    /// Appends a serialized record after the head, numbering and chaining it; runs on
    /// the writer thread.
    fn append_drafted(&self, t: &mut Txn<'_>, drafted: &Drafted) -> Result<u64> {
        if self.inner.audit.failpoint.load(Ordering::SeqCst) {
            return Err(unauditable());
        }
        let head = load_head(t)?;
        let (count, prev) = head.map_or((0, [0u8; 32]), |h| (h.count, h.last));
        let seq = count + 1;
        let barrier = &self.inner.barrier;
        let (value, mac) = drafted.stored(seq, |body| barrier.audit_record_mac(seq, &prev, body));
        t.put(Table::Audit, &seq.to_be_bytes(), value);
        let head = Head {
            count: seq,
            last: mac,
            mac: barrier.audit_head_mac(seq, &mac),
        };
        t.put(Table::Meta, META_AUDIT_HEAD, head.encode());
        Ok(seq)
    }

    /// Test-only switch that makes the next write job of a request panic.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn panic_next_write(&self) {
        self.inner
            .audit
            .panic_next_write
            .store(true, Ordering::SeqCst);
    }

    /// Test-only switch that makes every audit append fail.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn set_audit_failpoint(&self, on: bool) {
        self.inner.audit.failpoint.store(on, Ordering::SeqCst);
    }

    /// Records ever appended to the trail (pruned ones included): the last one's `seq`.
    pub fn audit_count(&self) -> Result<u64> {
        Ok(load_head(self.store())?.map_or(0, |h| h.count))
    }

    /// A page of records, oldest first.
    pub fn list_audit(&self, q: &AuditQuery) -> Result<api::ListAuditResponse> {
        if !(1..=1000).contains(&q.limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        let snap = self.store().snapshot()?;
        let count = load_head(&*snap)?.map_or(0, |h| h.count);
        // Records up to the base were pruned: the scan starts after it (deleted entries
        // would only slow it down until the next checkpoint).
        let base = load_base(&*snap)?.map_or(0, |b| b.count);
        let first_seq = base.saturating_add(1);
        let mut records = Vec::new();
        let mut after = q.after.max(base);
        let mut scanned = 0usize;
        loop {
            let batch = snap.scan(Table::Audit, b"", Some(&after.to_be_bytes()), CHUNK)?;
            let exhausted = batch.len() < CHUNK;
            for (k, v) in &batch {
                let seq = seq_of(k).ok_or_else(|| Error::internal("bad audit key"))?;
                after = seq;
                scanned += 1;
                let stored = split_stored(v)
                    .ok_or_else(|| Error::internal(format!("audit record {seq} is malformed")))?;
                let rec: api::AuditRecord = serde_json::from_slice(stored.body).map_err(|e| {
                    Error::internal(format!("audit record {seq} does not parse: {e}"))
                })?;
                if q.matches(&rec) {
                    records.push(rec);
                }
                if records.len() == q.limit || scanned >= PAGE_SCAN_BUDGET {
                    return Ok(api::ListAuditResponse {
                        records,
                        next_page_token: (seq < count).then(|| seq.to_string()),
                        count,
                        first_seq,
                    });
                }
            }
            if exhausted {
                return Ok(api::ListAuditResponse {
                    records,
                    next_page_token: None,
                    count,
                    first_seq,
                });
            }
        }
    }

    /// Deletes the oldest records, those that arrived more than `older_than` ago (from
    /// the start of the trail up to the first newer one), at most the configured batch,
    /// and leaves a base from which the chain is checked. The records to delete are
    /// found and verified in a snapshot, off the writer thread: a trail that does not
    /// verify there is not pruned, since that would delete the evidence. The prune is
    /// recorded in the same commit.
    pub async fn prune_audit(
        &self,
        req: &api::PruneAuditRequest,
    ) -> Result<api::PruneAuditResponse> {
        let min = self.inner.config.audit_min_retention_secs;
        if req.older_than.seconds() < min {
            return Err(Error::invalid(
                "older_than",
                format!(
                    "must be at least {} (the server keeps its audit records that long: --audit-min-retention)",
                    api::Interval::from_seconds(min).as_str()
                ),
            ));
        }
        let cutoff = self
            .now()
            .saturating_sub(i64::try_from(req.older_than.seconds()).unwrap_or(i64::MAX));
        let batch = self.inner.config.audit_prune_batch.max(1);
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || this.prunable(cutoff, batch))
            .await
            .map_err(Error::internal)??;
        let Some((cut, mac)) = found.cut else {
            return Ok(api::PruneAuditResponse {
                pruned: 0,
                first_seq: found.start + 1,
                more: false,
            });
        };
        let this = self.clone();
        let (pruned, base) = self
            .write(move |t| this.prune_through(t, cut, &mac))
            .await?;
        Ok(api::PruneAuditResponse {
            pruned,
            first_seq: base + 1,
            // Another prune that went further meanwhile: the caller asks again to know.
            more: found.more || pruned == 0,
        })
    }

    /// With a retention configured, prunes the records older than it, as
    /// `POST /v1/audit/prune` does, at most 100 batches a tick; each batch that deletes
    /// something (or fails) is recorded, by principal `(retention)`. Returns how many
    /// records it deleted. A failure (a trail that does not verify) is logged and
    /// recorded, and the retention waits an hour before it tries again, so that a broken
    /// trail does not get a record each tick.
    pub(crate) async fn prune_past_retention(&self) -> u64 {
        const MOST_BATCHES: usize = 100;
        const RETRY_AFTER_FAILURE: i64 = 3_600;
        let Some(secs) = self.inner.config.audit_retention_secs else {
            return 0;
        };
        let retry_at = &self.inner.audit.retention_retry_at;
        if self.now() < retry_at.load(Ordering::Relaxed) {
            return 0;
        }
        // Never less than the minimum retention, however the service was configured.
        let req = api::PruneAuditRequest {
            older_than: api::Interval::from_seconds(
                secs.max(self.inner.config.audit_min_retention_secs),
            ),
        };
        let mut total = 0;
        for _ in 0..MOST_BATCHES {
            let slot = AuditSlot::new(AuditEntry {
                time: self.now(),
                request_id: format!("{:032x}", rand::random::<u128>()),
                principal: "(retention)".into(),
                action: "sys:PruneAudit".into(),
                resource: "*".into(),
                related: Vec::new(),
                source: "background".into(),
                user_agent: "--audit-retention".into(),
            });
            let r = self.audited(slot.clone(), self.prune_audit(&req)).await;
            let (outcome, code) = match &r {
                // Nothing to prune: nothing done, nothing (more) to record. (A prune that
                // lost a race to another was recorded with its commit.)
                Ok(r) if r.pruned == 0 => break,
                Ok(_) => (AuditOutcome::Succeeded, None),
                Err(e) => (AuditOutcome::Failed, Some(e.code)),
            };
            if let Err(e) = self.finish_audit(&slot, outcome, code).await {
                tracing::error!(error = %e, "the retention's prune could not be recorded");
            }
            match r {
                Ok(r) => {
                    total += r.pruned;
                    if !r.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the audit trail could not be pruned past its retention; trying again in an hour");
                    retry_at.store(self.now() + RETRY_AFTER_FAILURE, Ordering::Relaxed);
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(records = total, "pruned audit records past the retention");
        }
        total
    }

    /// The records a prune deletes, each checked against the chain from the base.
    fn prunable(&self, cutoff: i64, batch: usize) -> Result<Prunable> {
        let snap = self.store().snapshot()?;
        let barrier = &self.inner.barrier;
        let refuse = |why: String| {
            Error::new(
                ErrorCode::InvalidState,
                format!(
                    "the audit trail could not be checked or does not verify ({why}); pruning would delete the evidence: see GET /v1/audit/verify"
                ),
            )
        };
        // The head and the last record too, as at unseal: a prune is no way to carry
        // on from a trail that was altered.
        check_audit_head(&*snap, barrier).map_err(refuse)?;
        let start = Start::of(load_base(&*snap)?, barrier).map_err(refuse)?;
        let mut out = Prunable {
            start: start.seq,
            cut: None,
            more: false,
        };
        let (mut prev, mut after) = (start.prev, start.seq);
        loop {
            let chunk = snap.scan(Table::Audit, b"", Some(&after.to_be_bytes()), CHUNK)?;
            for (k, v) in &chunk {
                let expected = after + 1;
                let stored = split_stored(v)
                    .filter(|s| {
                        seq_of(k) == Some(expected)
                            && barrier::digest_eq(
                                &barrier.audit_record_mac(expected, &prev, s.body),
                                &s.mac,
                            )
                    })
                    .ok_or_else(|| refuse(format!("record {expected} is missing or altered")))?;
                let rec: api::AuditRecord = serde_json::from_slice(stored.body)
                    .map_err(|e| refuse(format!("record {expected} does not parse: {e}")))?;
                if rec.time.unix() >= cutoff {
                    return Ok(out);
                }
                if out
                    .cut
                    .is_some_and(|(seq, _)| seq - start.seq >= batch as u64)
                {
                    out.more = true;
                    return Ok(out);
                }
                out.cut = Some((expected, stored.mac));
                prev = stored.mac;
                after = expected;
            }
            if chunk.len() < CHUNK {
                return Ok(out);
            }
        }
    }

    /// Deletes the records after the base through `cut` and makes `cut` the base; runs
    /// on the writer thread. Nothing, if another prune went as far already. Returns how
    /// many records it deleted and the base now. The store becomes format 4, so that a
    /// release that does not know bases refuses it instead of taking the pruned records
    /// for deleted ones.
    fn prune_through(&self, t: &mut Txn<'_>, cut: u64, mac: &[u8; 32]) -> Result<(u64, u64)> {
        let from = load_base(t)?.map_or(0, |b| b.count);
        if from >= cut {
            return Ok((0, from));
        }
        for seq in from + 1..=cut {
            t.delete(Table::Audit, &seq.to_be_bytes());
        }
        let base = Head {
            count: cut,
            last: *mac,
            mac: self.inner.barrier.audit_base_mac(cut, mac),
        };
        t.put(Table::Meta, META_AUDIT_BASE, base.encode());
        t.put(
            Table::Meta,
            crate::server::META_FORMAT,
            crate::server::FORMAT_PRUNED.to_vec(),
        );
        Ok((cut - from, cut))
    }

    /// Checks the whole chain (from the base, once pruned) against the persisted head,
    /// in one consistent snapshot
    /// (the server keeps serving meanwhile).
    pub fn verify_audit(&self) -> Result<api::AuditVerifyReport> {
        self.verify_audit_since(None)
    }

    /// [`verify_audit`](Self::verify_audit), and that the trail still holds, unchanged,
    /// the records an earlier verify saw (`since`, the `anchor` of its report). Without
    /// it, a trail cut back to an older head of its own (one in the commit journal, a
    /// backup or a free page; each was genuine once) verifies: the root key's MACs
    /// prove what a record says, not that no later record was there.
    pub fn verify_audit_since(&self, since: Option<&str>) -> Result<api::AuditVerifyReport> {
        let since = since.map(parse_anchor).transpose()?;
        let snap = self.store().snapshot()?;
        // A head or base that does not even decode was overwritten: a verdict, not a
        // failure to check.
        let overwritten = |what: &str| api::AuditVerifyReport {
            intact: false,
            count: 0,
            verified: 0,
            pruned: 0,
            first_bad_seq: None,
            problem: Some(format!("the audit {what} is malformed: it was overwritten")),
            anchor: None,
        };
        let head = match read_mark(&*snap, META_AUDIT_HEAD)? {
            Some(None) => return Ok(overwritten("head")),
            head => head.flatten(),
        };
        let base = match read_mark(&*snap, META_AUDIT_BASE)? {
            Some(None) => return Ok(overwritten("trail's base")),
            base => base.flatten(),
        };
        let count = head.map_or(0, |h| h.count);
        let barrier = &self.inner.barrier;
        // A head whose own MAC fails was forged: its count says nothing, so the records
        // are walked to their end and the report names the head (and the first bad
        // record, if any), not a record the forged count makes look out of place.
        let head_forged = head.is_some_and(|h| {
            !barrier::digest_eq(&barrier.audit_head_mac(h.count, &h.last), &h.mac)
        });
        let start = Start::of(base, barrier);
        let pruned = base.map_or(0, |b| b.count);
        let bad = |last_ok: u64, seq: Option<u64>, problem: String| api::AuditVerifyReport {
            intact: false,
            count,
            verified: last_ok.saturating_sub(pruned),
            pruned,
            first_bad_seq: seq,
            problem: Some(if head_forged {
                format!("the head does not verify (it was forged); {problem}")
            } else {
                problem
            }),
            anchor: None,
        };
        if head.is_none() {
            return Ok(bad(
                0,
                None,
                "the audit head is missing: the trail was deleted (every initialised store has one)"
                    .into(),
            ));
        }
        let start = match start {
            Ok(s) => s,
            Err(problem) => return Ok(bad(pruned, Some(pruned.saturating_add(1)), problem)),
        };
        if start.seq > count && !head_forged {
            return Ok(bad(
                count,
                None,
                format!(
                    "the trail's base says records 1 to {} were pruned, more than the head's {count}",
                    start.seq
                ),
            ));
        }
        // A record at or below the base was put back (or never deleted): the first key
        // tells. Then the walk starts after the base, over no deleted entries.
        if start.seq > 0
            && let Some((k, _)) = snap.scan(Table::Audit, b"", None, 1)?.first()
        {
            match seq_of(k) {
                None => {
                    return Ok(bad(
                        start.seq,
                        None,
                        "a record with a malformed key is in the trail".into(),
                    ));
                }
                Some(seq) if seq <= start.seq => {
                    return Ok(bad(
                        start.seq,
                        Some(seq),
                        format!(
                            "record {seq} is there although records 1 to {} were pruned: it was put back",
                            start.seq
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut prev = start.prev;
        // The chain's value at the anchor's record, once walked past (at the base, the
        // base's; pruned past it, unknown: only the count is checked).
        let mut at_anchor = since.filter(|a| a.0 == start.seq).map(|_| start.prev);
        let mut expected = start.seq + 1;
        let mut after: Option<Vec<u8>> = (start.seq > 0).then(|| start.seq.to_be_bytes().to_vec());
        loop {
            let batch = snap.scan(Table::Audit, b"", after.as_deref(), CHUNK)?;
            let exhausted = batch.len() < CHUNK;
            for (k, v) in &batch {
                let last_ok = expected - 1;
                let Some(seq) = seq_of(k) else {
                    return Ok(bad(
                        last_ok,
                        Some(expected),
                        format!("a record with a malformed key follows record {last_ok}"),
                    ));
                };
                if seq < expected {
                    return Ok(bad(
                        last_ok,
                        Some(seq),
                        format!(
                            "record {seq} is there although records 1 to {} were pruned: it was put back",
                            start.seq
                        ),
                    ));
                }
                if seq != expected {
                    return Ok(bad(
                        last_ok,
                        Some(expected),
                        format!("record {expected} is missing (the next one is {seq})"),
                    ));
                }
                if seq > count && !head_forged {
                    return Ok(bad(
                        last_ok,
                        Some(seq),
                        format!(
                            "record {seq} lies beyond the head ({count} records): it was not written by this server"
                        ),
                    ));
                }
                let good = split_stored(v).filter(|s| {
                    let body_seq = serde_json::from_slice::<api::AuditRecord>(s.body)
                        .map(|r| r.seq)
                        .ok();
                    body_seq == Some(seq)
                        && barrier::digest_eq(&barrier.audit_record_mac(seq, &prev, s.body), &s.mac)
                });
                let Some(s) = good else {
                    return Ok(bad(
                        last_ok,
                        Some(seq),
                        format!(
                            "record {seq} does not verify: it was edited, or the chain from it on was recomputed without the root key"
                        ),
                    ));
                };
                prev = s.mac;
                if since.is_some_and(|a| a.0 == seq) {
                    at_anchor = Some(prev);
                }
                expected += 1;
            }
            if exhausted {
                break;
            }
            after = batch.last().map(|(k, _)| k.clone());
        }
        let last_ok = expected - 1;
        if head_forged {
            return Ok(api::AuditVerifyReport {
                intact: false,
                count,
                verified: last_ok - pruned,
                pruned,
                first_bad_seq: None,
                problem: Some(format!(
                    "the head does not verify: it was forged (its count says {count}; the \
                     {} records found chain correctly)",
                    last_ok - pruned
                )),
                anchor: None,
            });
        }
        if last_ok < count {
            return Ok(bad(
                last_ok,
                Some(last_ok + 1),
                format!(
                    "record {} is missing: the trail was cut off after record {last_ok} (the head says {count})",
                    last_ok + 1
                ),
            ));
        }
        if let Some(h) = head {
            let head_ok = barrier::digest_eq(&h.last, &prev)
                && barrier::digest_eq(&barrier.audit_head_mac(h.count, &h.last), &h.mac);
            if !head_ok {
                return Ok(bad(
                    last_ok,
                    None,
                    "the head does not verify: it was rewritten (records cut off or replaced?)"
                        .into(),
                ));
            }
        }
        if let Some((n, mac)) = since {
            if n > count {
                return Ok(bad(
                    last_ok,
                    Some(count.saturating_add(1)),
                    format!(
                        "record {} is missing: the trail ends at record {count}, but an \
                         earlier verify saw {n} records (its end was cut off and an older \
                         head put back)",
                        count.saturating_add(1)
                    ),
                ));
            }
            if at_anchor.is_some_and(|m| !barrier::digest_eq(&m, &mac)) {
                // (At 0, before any record, there is no record to blame.)
                return Ok(bad(
                    last_ok,
                    (n > 0).then_some(n),
                    format!(
                        "record {n} is not the one an earlier verify saw: the trail was cut \
                         back to an older head and written again since"
                    ),
                ));
            }
        }
        Ok(api::AuditVerifyReport {
            intact: true,
            count,
            verified: last_ok - pruned,
            pruned,
            first_bad_seq: None,
            problem: None,
            anchor: Some(format!("{count}:{}", hex::encode(prev))),
        })
    }
}

/// An anchor from a verify report: `COUNT:MAC` (64 hex digits).
fn parse_anchor(s: &str) -> Result<(u64, [u8; 32])> {
    let invalid = || {
        Error::invalid(
            "since",
            "not the anchor of a verify report (COUNT:MAC, 64 hex digits)",
        )
    };
    let (count, mac) = s.split_once(':').ok_or_else(invalid)?;
    let count = count.parse::<u64>().map_err(|_| invalid())?;
    let mac: [u8; 32] = hex::decode(mac)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or_else(invalid)?;
    Ok((count, mac))
}

/// A quick check at unseal (and before a prune): the head's own MAC, the base's if a
/// prune left one (not past the head, nor beside the empty trail's head), the last
/// record present and linked to the one before it (or to the base), nothing after it.
/// A head rewritten or removed while the server was down is refused rather than built
/// upon, which would hide a cut-off tail. Reads only (runs before anything is written at
/// unseal); a read that fails is reported as a refusal too.
pub fn check_audit_head(store: &(impl Reader + ?Sized), barrier: &Barrier) -> Result<(), String> {
    let fail = |e: Error| e.message;
    let any = !store
        .scan(Table::Audit, b"", None, 1)
        .map_err(|e| e.to_string())?
        .is_empty();
    let Some(h) = load_head(store).map_err(fail)? else {
        // Every initialised store has one (the genesis head): a missing head means a
        // deleted trail.
        return Err(if any {
            "the audit trail has records but no head".into()
        } else {
            "the audit trail has no head: its records and head were deleted".into()
        });
    };
    if !barrier::digest_eq(&barrier.audit_head_mac(h.count, &h.last), &h.mac) {
        return Err("the audit head does not verify".into());
    }
    if h.count == 0 {
        // The genesis head: no record yet, so nothing pruned either.
        return if any {
            Err("audit records follow the head (0)".into())
        } else if load_base(store).map_err(fail)?.is_some() {
            Err("the audit trail has a base (records pruned) but an empty head".into())
        } else {
            Ok(())
        };
    }
    // Where a prune left the trail's start, checked: a forged one could hide records
    // deleted from the start.
    let start = Start::of(load_base(store).map_err(fail)?, barrier)?;
    if start.seq > h.count {
        return Err(format!(
            "the audit trail's base says {} records were pruned, more than the head's {}",
            start.seq, h.count
        ));
    }
    // The last record's MAC is the head's, and it covers the record's body and the
    // MAC before it (zeros for the first, the base's for the first after a prune): an
    // edited body is caught here, not only by a later `verify`, so nothing is built on
    // it. (Every record pruned: the base is the last one.)
    let last_ok = if start.seq == h.count {
        barrier::digest_eq(&start.prev, &h.last)
    } else {
        let last = store
            .get(Table::Audit, &h.count.to_be_bytes())
            .map_err(|e| e.to_string())?;
        let prev = if h.count - 1 == start.seq {
            Some(start.prev)
        } else {
            store
                .get(Table::Audit, &(h.count - 1).to_be_bytes())
                .map_err(|e| e.to_string())?
                .as_deref()
                .and_then(split_stored)
                .map(|s| s.mac)
        };
        last.as_deref().and_then(split_stored).is_some_and(|s| {
            barrier::digest_eq(&s.mac, &h.last)
                && prev.is_some_and(|prev| {
                    barrier::digest_eq(&barrier.audit_record_mac(h.count, &prev, s.body), &s.mac)
                })
        })
    };
    if !last_ok {
        return Err(format!(
            "audit record {} (the head's last) is missing or altered",
            h.count
        ));
    }
    // Any key after the last record's (the next one, one further on, one of another
    // length) is a record the head does not count.
    if !store
        .scan(Table::Audit, b"", Some(&h.count.to_be_bytes()), 1)
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Err(format!("audit records follow the head ({})", h.count));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record serialized on a request's thread and numbered on the writer's is stored
    /// byte for byte as the whole record serialized at once.
    #[test]
    fn a_drafted_record_is_stored_as_the_whole_record_serialized() {
        let entry = AuditEntry {
            time: 1_764_000_000,
            request_id: "req-1".into(),
            principal: "app \"x\"".into(),
            action: "kms:GetSecretValue".into(),
            resource: "secret/app/db".into(),
            related: Vec::new(),
            source: "127.0.0.1:5000".into(),
            user_agent: "ua/1.0 ✓".into(),
        };
        for (seq, outcome, code) in [
            (1, AuditOutcome::Succeeded, None),
            (10, AuditOutcome::Denied, Some(ErrorCode::Forbidden)),
            (u64::MAX, AuditOutcome::Failed, Some(ErrorCode::KeyDisabled)),
        ] {
            let whole = serde_json::to_vec(&entry.record(seq, outcome, code)).unwrap();
            let drafted = Drafted::new(&entry, outcome, code).unwrap();
            let mut maced = Vec::new();
            let (value, mac) = drafted.stored(seq, |body| {
                maced = body.to_vec();
                [7u8; 32]
            });
            assert_eq!(&value[33..], whole.as_slice(), "{seq}");
            assert_eq!(maced, whole, "the MAC covers the stored JSON");
            assert_eq!(
                (value[0], &value[1..33], mac),
                (FORMAT_V1, &[7u8; 32][..], [7u8; 32])
            );
        }
    }
}
