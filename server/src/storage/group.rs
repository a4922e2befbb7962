use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Backend, Entries, Mutation, Reader, StorageError, Table};

type Overlay = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 512;

/// A view for one write job: reads see the latest commit, then the writes of the jobs
/// before it in the same batch, then its own writes. Nothing is applied unless the job
/// returns `Ok`, so a job that fails after writing leaves no trace.
pub struct Txn<'a> {
    backend: &'a dyn Backend,
    batch: &'a Overlay,
    own: Overlay,
}

impl Reader for Txn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = (table, key.to_vec());
        if let Some(v) = self.own.get(&k).or_else(|| self.batch.get(&k)) {
            return Ok(v.clone());
        }
        self.backend.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let in_range = |(t, k): &(Table, Vec<u8>)| {
            *t == table && k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a)
        };
        // Later jobs' writes (and the job's own, last) over earlier ones.
        let layer: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .batch
            .iter()
            .chain(self.own.iter())
            .filter(|(k, _)| in_range(k))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        super::scan_over(layer, limit, |want| {
            self.backend.scan(table, prefix, after, want)
        })
    }
}

impl Txn<'_> {
    /// Inserts or replaces.
    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.own.insert((table, key.to_vec()), Some(value));
    }

    /// Removes.
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.own.insert((table, key.to_vec()), None);
    }
}

trait Job: Send {
    /// Runs against the batch; returns the job's own writes when it succeeded.
    fn run(&mut self, backend: &dyn Backend, batch: &Overlay) -> Option<Overlay>;
    /// Answers the caller once the batch's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &StorageError>);
    /// Whether the batch ends with a checkpoint of the backend.
    fn checkpoint(&self) -> bool {
        false
    }
    /// Whether every later job is refused (a closing checkpoint).
    fn closes(&self) -> bool {
        false
    }
}

/// Asks for a checkpoint after the batch it lands in; closing, it also makes the writer
/// refuse every later job.
struct CheckpointJob(oneshot::Sender<Result<(), StorageError>>, bool);

impl Job for CheckpointJob {
    fn run(&mut self, _: &dyn Backend, _: &Overlay) -> Option<Overlay> {
        None
    }

    /// `commit`: the batch's commit and then the checkpoint.
    fn finish(self: Box<Self>, commit: Result<(), &StorageError>) {
        let _ = self.0.send(commit.map_err(|e| StorageError(e.0.clone())));
    }

    fn checkpoint(&self) -> bool {
        true
    }

    fn closes(&self) -> bool {
        self.1
    }
}

struct WriteJob<F, R, E> {
    f: Option<F>,
    result: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> Job for WriteJob<F, R, E>
where
    F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<StorageError> + Send,
{
    fn run(&mut self, backend: &dyn Backend, batch: &Overlay) -> Option<Overlay> {
        let f = self.f.take()?;
        let mut txn = Txn {
            backend,
            batch,
            own: Overlay::new(),
        };
        let result = f(&mut txn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok.then_some(txn.own)
    }

    fn finish(self: Box<Self>, commit: Result<(), &StorageError>) {
        let Some(result) = self.result else {
            return;
        };
        let answer = match (result, commit) {
            (Ok(_), Err(e)) => Err(E::from(StorageError(e.0.clone()))),
            (r, _) => r,
        };
        // The caller may have gone away; its write is durable all the same.
        let _ = self.reply.send(answer);
    }
}

/// Result of [`Store::write_then`]: the outer error means nothing was kept (the
/// epilogue or the commit failed); the inner result is the job's own.
pub type ThenResult<R, E> = Result<Result<R, E>, E>;

/// A write job that did not run to its end: it panicked, or the writer had stopped.
/// Nothing of it was kept.
#[derive(Debug)]
pub struct NotRun;

struct ThenJob<F, G, R, E> {
    f: Option<F>,
    then: Option<G>,
    result: Option<ThenResult<R, E>>,
    reply: oneshot::Sender<ThenResult<R, E>>,
}

impl<F, G, R, E> Job for ThenJob<F, G, R, E>
where
    F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send,
    G: FnOnce(&mut Txn<'_>, Result<&R, &E>) -> Result<(), E> + Send,
    R: Send,
    E: From<StorageError> + Send,
{
    fn run(&mut self, backend: &dyn Backend, batch: &Overlay) -> Option<Overlay> {
        let (f, then) = (self.f.take()?, self.then.take()?);
        let mut txn = Txn {
            backend,
            batch,
            own: Overlay::new(),
        };
        let (kept, outcome) = match f(&mut txn) {
            Ok(v) => match then(&mut txn, Ok(&v)) {
                Ok(()) => (Some(txn.own), Ok(Ok(v))),
                Err(e) => (None, Err(e)),
            },
            // The job's writes are dropped; the epilogue starts from a clean view.
            Err(e) => {
                let mut clean = Txn {
                    backend,
                    batch,
                    own: Overlay::new(),
                };
                match then(&mut clean, Err(&e)) {
                    Ok(()) => (Some(clean.own), Ok(Err(e))),
                    Err(te) => (None, Err(te)),
                }
            }
        };
        self.result = Some(outcome);
        kept
    }

    fn finish(self: Box<Self>, commit: Result<(), &StorageError>) {
        let Some(result) = self.result else {
            return;
        };
        let answer = match (result, commit) {
            (Ok(_), Err(e)) => Err(E::from(StorageError(e.0.clone()))),
            (r, _) => r,
        };
        let _ = self.reply.send(answer);
    }
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Durable commits made.
    pub commits: AtomicU64,
    /// Write jobs run (successful or not).
    pub jobs: AtomicU64,
    /// Time spent in `Backend::commit`, in nanoseconds.
    pub commit_nanos: AtomicU64,
    /// Time spent running jobs, in nanoseconds.
    pub job_nanos: AtomicU64,
    /// Whether the last commit failed (the storage refuses writes: disk full, I/O
    /// error); `/v1/health` reports it.
    pub failing: std::sync::atomic::AtomicBool,
    /// Jobs that panicked (each failed alone; the writer went on).
    pub panicked_jobs: AtomicU64,
    /// The storage backend panicked in a commit: its state is unknown, so every later
    /// write is refused until the server restarts (reopening repairs the file).
    pub broken: std::sync::atomic::AtomicBool,
}

/// Storage with group commit: one writer thread, many readers.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    jobs: mpsc::Sender<Box<dyn Job>>,
    stats: Arc<StoreStats>,
}

impl Store {
    /// Starts the writer thread over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let b = backend.clone();
        let stats = Arc::new(StoreStats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("strongbox-writer".into())
            .spawn(move || writer_loop(b, &rx, &st))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "could not start the writer thread"));
        Self {
            backend,
            jobs,
            stats,
        }
    }

    /// A consistent read view of the latest commit.
    pub fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        self.backend.snapshot()
    }

    /// Writer-thread counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Runs `f` on the writer thread; resolves once its writes are durable (or failed).
    /// Jobs are serialised, so `f` sees every earlier job's writes.
    pub async fn write<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| {
            E::from(StorageError(
                "the write did not complete (its job panicked, or the writer stopped)".into(),
            ))
        })?
    }

    /// Hands `f` to the writer thread at once, as [`write`](Self::write) does, and
    /// returns where its result will come: the job runs and commits whether or not that
    /// is ever awaited (a caller that cannot wait, such as a `Drop`, drops it).
    pub fn submit<F, R, E>(&self, f: F) -> Result<oneshot::Receiver<Result<R, E>>, E>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(WriteJob {
            f: Some(f),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| E::from(StorageError("writer thread stopped".into())))?;
        Ok(rx)
    }
}

impl Store {
    /// Resolves once every write so far is durable in the backend's main store, so that
    /// a restart has nothing to replay (see [`Backend::checkpoint`]).
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        self.checkpoint_job(false).await
    }

    /// A last [`checkpoint`](Self::checkpoint): every write asked for after it is refused,
    /// so that what it recorded (a clean close) stays true.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.checkpoint_job(true).await
    }

    async fn checkpoint_job(&self, close: bool) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(CheckpointJob(reply, close)))
            .map_err(|_| StorageError("writer thread stopped".into()))?;
        rx.await
            .map_err(|_| StorageError("the checkpoint did not complete".into()))?
    }

    /// Like [`write`](Self::write), then runs `then` in the same job with `f`'s outcome.
    /// When `f` succeeds, `then` sees its writes and both commit together; when `f`
    /// fails, its writes are dropped and `then` runs on a clean view, its own writes
    /// still committed. When `then` fails, nothing of either is kept and its error is
    /// the outer one. (The audit trail uses this: a change and its record commit
    /// together, a refused change is still recorded, and an unrecordable request
    /// changes nothing.)
    ///
    /// [`NotRun`] when the job did not run to its end (it panicked, or the writer had
    /// stopped): nothing of it was kept, unlike a failed commit, whose outcome is
    /// unknown.
    pub async fn write_then<F, G, R, E>(&self, f: F, then: G) -> Result<ThenResult<R, E>, NotRun>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
        G: FnOnce(&mut Txn<'_>, Result<&R, &E>) -> Result<(), E> + Send + 'static,
        R: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(ThenJob {
            f: Some(f),
            then: Some(then),
            result: None,
            reply,
        });
        self.jobs.send(job).map_err(|_| NotRun)?;
        rx.await.map_err(|_| NotRun)
    }
}

impl Reader for Store {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.backend.scan(table, prefix, after, limit)
    }
}

/// Runs batches until every sender is gone. After a closing checkpoint the writer lets
/// go of the backend before it answers (so that whoever drops the last handle closes it
/// at once: redb then marks its file closed cleanly) and refuses every later job.
fn writer_loop(backend: Arc<dyn Backend>, rx: &mpsc::Receiver<Box<dyn Job>>, stats: &StoreStats) {
    let mut held = Some(backend);
    while let Ok(first) = rx.recv() {
        let Some(backend) = held.as_deref() else {
            first.finish(Err(&StorageError("the server is shutting down".into())));
            continue;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut batch = Overlay::new();
        for job in jobs.iter_mut() {
            // A job that panics fails alone: its writes are dropped (they live in its
            // own overlay), its caller gets an error (its reply is dropped unanswered),
            // and the writer goes on with the others.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run(backend, &batch)
            })) {
                Ok(Some(own)) => batch.extend(own),
                Ok(None) => {}
                Err(_) => {
                    stats.panicked_jobs.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a write job panicked; it fails alone");
                }
            }
        }
        let mutations: Vec<Mutation> = batch
            .into_iter()
            .map(|((t, k), v)| match v {
                Some(v) => Mutation::Put(t, k, v),
                None => Mutation::Delete(t, k),
            })
            .collect();
        let committing = Instant::now();
        let commit = if mutations.is_empty() {
            Ok(())
        } else if stats.broken.load(Ordering::Relaxed) {
            Err(StorageError(
                "the storage is in an unknown state after a failure; restart the server".into(),
            ))
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.commit(&mutations)))
                .unwrap_or_else(|_| {
                    stats.broken.store(true, Ordering::Relaxed);
                    Err(StorageError(
                        "the storage backend panicked; restart the server".into(),
                    ))
                })
        };
        if !mutations.is_empty() {
            stats.failing.store(commit.is_err(), Ordering::Relaxed);
        }
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stats
            .job_nanos
            .fetch_add(nanos(committing - started), Ordering::Relaxed);
        stats
            .commit_nanos
            .fetch_add(nanos(committing.elapsed()), Ordering::Relaxed);
        stats
            .commits
            .fetch_add(u64::from(!mutations.is_empty()), Ordering::Relaxed);
        stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = jobs.len(), "commit failed; batch rejected");
        }
        // Asked for, a checkpoint runs whatever the batch's own commit did (it refuses
        // by itself when the storage is stopped).
        let checkpoint = jobs.iter().any(|j| j.checkpoint()).then(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.checkpoint()))
                .unwrap_or_else(|_| {
                    Err(StorageError(
                        "the storage backend panicked in a checkpoint".into(),
                    ))
                })
        });
        if jobs.iter().any(|j| j.closes()) {
            held = None;
        }
        for job in jobs {
            match (&checkpoint, job.checkpoint()) {
                (Some(cp), true) => job.finish(cp.as_ref().map(|_| ())),
                _ => job.finish(commit.as_ref().map(|_| ())),
            }
        }
    }
}
