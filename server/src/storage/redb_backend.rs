use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rand::RngCore as _;
use redb::backends::FileBackend;
use redb::{Database, ReadTransaction, TableDefinition, WriteTransaction};

use super::journal::{self, Journal, JournalId};
use super::packed::{self, Opened};
use super::unwritten::Unwritten;
use super::{Backend, Entries, Mutation, Reader, StorageError, Table};

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// The backend's own bookkeeping, beside (not among) the [`Table`]s: the journal's id
/// and the number of its last entry this database holds.
const JOURNAL_STATE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("commit_journal");
const JOURNAL_ID: &str = "id";
const JOURNAL_SEQ: &str = "seq";
/// `1` when the last close checkpointed everything (the journal holds nothing the
/// database lacks), `0` while a session may have journaled commits since.
const JOURNAL_CLEAN: &str = "clean";

/// Journaled commits in one generation of the memory layer; then it is checkpointed.
const GENERATION: u32 = 1024;

/// The embedded default: one redb file and, beside it, a commit journal
/// ([`journal`]).
///
/// A commit returns once it is durable: its entry is synced in the journal and its
/// mutations are in the memory layer, where reads find them before they look in redb.
/// After [`GENERATION`] commits (or when the journal's half is full) the layer is
/// frozen and a checkpoint thread writes it into redb with one durable commit, while
/// new commits go to a fresh layer and the journal's other half. Without a journal
/// (a caller-supplied backend, or after the journal failed) each commit is a durable
/// redb commit.
pub struct RedbBackend {
    shared: Arc<Shared>,
    writer: Mutex<WriterState>,
}

/// What readers and the checkpoint thread share.
struct Shared {
    /// Before `db`: fields drop in this order, so the shared read transaction is gone
    /// when the database closes.
    layers: RwLock<Layers>,
    db: Database,
    /// The number of the last journaled commit whose mutations are all in the layer.
    visible: AtomicU64,
}

/// The memory layers: the one commits go to, and the frozen one being checkpointed.
#[derive(Clone)]
struct Layers {
    current: Arc<Memtable>,
    frozen: Option<Arc<Memtable>>,
    /// redb as of its last commit, shared by the views until the next one; `None` when
    /// it could not be read after a commit (each view then begins its own).
    base: Option<Arc<Base>>,
}

/// One redb read transaction, shared by every view made between two redb commits
/// (beginning one costs locks that both cores contend on), with each table opened
/// from it once, by the first view that reads it. Replaced under the layers' lock
/// right after each redb commit, so a view never pairs a layer with a redb state
/// that lacks or repeats its commits; the old one (and the pages it pins) goes when
/// its last view does.
struct Base {
    rtx: ReadTransaction,
    tables: Vec<OnceLock<Option<Opened>>>,
}

impl Base {
    fn begin(db: &Database) -> Result<Arc<Self>, StorageError> {
        Ok(Arc::new(Self {
            rtx: db.begin_read().map_err(StorageError::from_display)?,
            tables: Table::ALL.iter().map(|_| OnceLock::new()).collect(),
        }))
    }

    /// The table, or `None` when no write has created it yet (read as empty).
    fn table(&self, table: Table) -> Result<Option<&Opened>, StorageError> {
        let Some(cell) = self.tables.get(table.index()) else {
            return Ok(None);
        };
        if let Some(t) = cell.get() {
            return Ok(t.as_ref());
        }
        let opened = packed::open_read(&self.rtx, table)?;
        // Two views may open it at once: one of them is kept, both are the same table.
        let _ = cell.set(opened);
        Ok(cell.get().and_then(Option::as_ref))
    }
}

/// After a redb commit: the views made from here on read redb as it is now. Cannot
/// fail, as the commit before it succeeded: without a shared transaction (it could not
/// be begun) each view begins its own.
fn refresh_base(shared: &Shared) {
    let base = Base::begin(&shared.db).ok();
    let mut layers = shared
        .layers
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    layers.base = base;
}

/// Journaled commits not yet in redb: per table, each key's versions, oldest first,
/// numbered by commit (`None`: deleted).
#[derive(Default)]
struct Memtable {
    tables: RwLock<Vec<BTreeMap<Vec<u8>, Versions>>>,
}

/// A key's versions in a layer: `(commit number, value or None for deleted)`.
type Versions = Vec<(u64, Option<Vec<u8>>)>;

enum Mode {
    /// Every commit is durable in redb (a caller-supplied backend without a journal).
    Off,
    /// The journal file is made by the first commit, which is durable in redb.
    Lazy(PathBuf),
    On(Journal),
    /// The journal failed: every later commit is durable in redb, until a restart.
    Failed,
    /// A checkpoint failed: what the layers hold is durable in the journal only, and
    /// every later commit is refused until a restart replays it.
    Broken(String),
}

struct WriterState {
    mode: Mode,
    /// The journal's id, once the database has one. Each session (from its first
    /// commit to a clean close) journals under an id of its own, so a database file
    /// restored from a copy never replays a later session's entries.
    id: Option<JournalId>,
    /// Whether this session's first commit (durable in redb: the new id, not clean)
    /// is done, so that commits may be journaled.
    session: bool,
    /// The clean flag as the database records it (`None`: never recorded).
    clean: Option<bool>,
    /// The number of the last entry written (or given up after a failure).
    seq: u64,
    /// Journaled commits in the current layer.
    in_layer: u32,
    /// The running checkpoint of the frozen layer.
    checkpointing: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
}

/// Syncs the directory that holds `file`, so that a name given to it (a file made,
/// linked or renamed there) survives a power loss.
pub fn sync_parent_dir(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// The journal beside the database file at `db`.
pub fn journal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

impl RedbBackend {
    /// Opens (or creates) the database file at `path`, with its commit journal beside it
    /// (replayed now if it holds commits the database does not).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_as(path, false)
    }

    /// Opens the database at `path` as [`open`](Self::open) would, without writing
    /// anything to disk: redb's repair after a crash and the replay of the journal
    /// happen in memory. What it reads is what the real open would find, so the root
    /// key can be checked first. Commits to it stay in memory too; it is for reading.
    pub fn open_unwritten(path: &Path) -> Result<Self, StorageError> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, unwritten: bool) -> Result<Self, StorageError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // A file made here is the owner's alone, as init's and the journal are.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(!unwritten)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StorageError(format!("opening {}: {e}", path.display())))?;
        let file = FileBackend::new(file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError(format!(
                "{} is open in another process (a server running on this data dir?): stop it first",
                path.display()
            )),
            e => StorageError::from_display(e),
        })?;
        let db = if unwritten {
            // Not prefilled: zeros written to memory would only read as the zeros that
            // new space reads as anyway.
            Database::builder()
                .create_with_backend(Unwritten::new(file).map_err(io_error)?)
                .map_err(StorageError::from_display)?
        } else {
            Self::database(file)?
        };
        let jpath = journal_path(path);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&jpath)
        {
            Ok(f) => {
                let file = FileBackend::new(f).map_err(StorageError::from_display)?;
                let file: Box<dyn redb::StorageBackend> = if unwritten {
                    Box::new(Unwritten::new(file).map_err(io_error)?)
                } else {
                    Box::new(file)
                };
                Self::init(db, Some(file), Mode::Off)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if journal_state(&db)?.2 == Some(false) {
                    return Err(StorageError(format!(
                        "the commit journal {} is missing, and the database was not closed cleanly: the commits since its last checkpoint are in that file. Restore it beside the database; to open the database without them, create an empty file of that name",
                        jpath.display()
                    )));
                }
                // Made at the first journaled commit, which an unwritten open never
                // gets to.
                let mode = if unwritten {
                    Mode::Off
                } else {
                    Mode::Lazy(jpath)
                };
                Self::init(db, None, mode)
            }
            Err(e) => Err(StorageError(format!(
                "opening the commit journal {}: {e}",
                jpath.display()
            ))),
        }
    }

    /// Opens a database on a caller-supplied storage backend, through the same layer
    /// as [`open`](Self::open), without a journal: every commit is durable in redb. A
    /// database whose journal may hold commits it lacks is refused.
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StorageError> {
        let db = Self::database(backend)?;
        if journal_state(&db)?.2 == Some(false) {
            return Err(StorageError(
                "this database was not closed cleanly and needs its commit journal".into(),
            ));
        }
        Self::init(db, None, Mode::Off)
    }

    /// Like [`with_backend`](Self::with_backend), with a journal on a second
    /// caller-supplied backend (crash tests use backends that keep only synced bytes).
    pub fn with_backends(
        backend: impl redb::StorageBackend,
        journal: impl redb::StorageBackend,
    ) -> Result<Self, StorageError> {
        Self::init(Self::database(backend)?, Some(Box::new(journal)), Mode::Off)
    }

    fn database(backend: impl redb::StorageBackend) -> Result<Database, StorageError> {
        Database::builder()
            .create_with_backend(PrefilledFile(backend))
            .map_err(StorageError::from_display)
    }

    /// `journal`: an existing journal file, replayed now and then used; otherwise
    /// `mode` says whether one is made later.
    fn init(
        db: Database,
        journal: Option<Box<dyn redb::StorageBackend>>,
        mode: Mode,
    ) -> Result<Self, StorageError> {
        // Nothing is written at open, except to replay commits the journal holds and
        // the database does not: a table comes into being with its first write, and
        // until then reads find it empty. (A store opened with a wrong root key, or one
        // refused at unseal, must be left as it was.)
        let (id, durable_seq, clean) = journal_state(&db)?;
        let mut state = WriterState {
            mode,
            id,
            session: false,
            clean,
            seq: durable_seq,
            in_layer: 0,
            checkpointing: None,
        };
        if let Some(file) = journal {
            match id {
                // The database never journaled a commit: nothing in the file is its.
                // (The session's first commit, durable in redb, gives it an id.)
                None => {
                    state.mode =
                        Mode::On(Journal::new(file, JournalId::default()).map_err(io_error)?)
                }
                Some(id) => {
                    let j = Journal::new(file, id).map_err(io_error)?;
                    let replay = j.read_after(durable_seq)?;
                    if let Some(&(last, _)) = replay.last() {
                        let tx = db.begin_write().map_err(StorageError::from_display)?;
                        for (_, mutations) in &replay {
                            apply(&tx, mutations)?;
                        }
                        set_state(&tx, &id, last, true)?;
                        tx.commit().map_err(StorageError::from_display)?;
                        state.clean = Some(true);
                        tracing::info!(
                            commits = replay.len(),
                            "replayed the commit journal into the database"
                        );
                        state.seq = last;
                    }
                    state.mode = Mode::On(j);
                }
            }
        }
        let seq = state.seq;
        let base = Base::begin(&db)?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                layers: RwLock::new(Layers {
                    current: Arc::default(),
                    frozen: None,
                    base: Some(base),
                }),
                visible: AtomicU64::new(seq),
            }),
            writer: Mutex::new(state),
        })
    }

    /// A read view: the layers, then redb.
    fn view(&self) -> Result<View, StorageError> {
        let s = &self.shared;
        // The layers and redb are taken under the lock that freezing and dropping a
        // layer need: a frozen layer is dropped only after its checkpoint committed,
        // and a layer is frozen before its checkpoint begins, so this view sees every
        // commit once (from a layer or from redb) whatever the checkpoint is doing.
        let layers = s.layers.read().map_err(|_| poisoned())?;
        let (current, frozen) = (layers.current.clone(), layers.frozen.clone());
        let base = match &layers.base {
            Some(b) => b.clone(),
            None => Base::begin(&s.db)?,
        };
        // Read last, and still under the lock: the commits up to here are whole in
        // `current`, later ones ignored. A commit made in redb itself (a session's
        // first, an oversized batch) has no number and shows through the base, which
        // is swapped under this lock before any later commit is numbered: read after
        // the lock, a later commit could be counted on top of a base without it.
        let upto = s.visible.load(Ordering::Acquire);
        drop(layers);
        #[cfg(test)]
        pause_view_here();
        Ok(View {
            current,
            frozen,
            upto,
            base,
        })
    }

    /// Writes every layer into redb (waiting for a running checkpoint first): after
    /// this the layers are empty and redb holds every commit. A failed checkpoint
    /// stops every later write (the layer stays readable and in the journal).
    fn drain(&self, w: &mut WriterState) -> Result<(), StorageError> {
        join_checkpoint(w)?;
        if w.in_layer > 0 {
            let Some(id) = w.id else {
                return Err(StorageError(
                    "journaled commits without a journal id".into(),
                ));
            };
            let layer = self.freeze()?;
            if let Err(e) = checkpoint(&self.shared, &layer, &id, w.seq) {
                return Err(broken(w, &e));
            }
            w.in_layer = 0;
        }
        if let Mode::On(journal) = &mut w.mode {
            journal.restart();
        }
        Ok(())
    }

    /// Makes the current layer the frozen one, and a fresh one current.
    fn freeze(&self) -> Result<Arc<Memtable>, StorageError> {
        let mut layers = self.shared.layers.write().map_err(|_| poisoned())?;
        if layers.frozen.is_some() {
            return Err(StorageError(
                "a frozen layer is not yet checkpointed".into(),
            ));
        }
        let layer = std::mem::take(&mut layers.current);
        layers.frozen = Some(layer.clone());
        Ok(layer)
    }

    /// A durable redb commit of `mutations` after draining the layers, recording the
    /// journal state. A session's first one gives the journal a new id; the first one
    /// without a journal file makes it.
    fn durable(&self, w: &mut WriterState, mutations: &[Mutation]) -> Result<(), StorageError> {
        if let Mode::Lazy(path) = &w.mode {
            // The file first (empty, its directory synced): a crash before the commit
            // below leaves an empty journal, which holds nothing to replay.
            w.mode = match create_journal(path) {
                Ok(journal) => Mode::On(journal),
                Err(e) => {
                    tracing::warn!(error = %e, "could not create the commit journal; every commit syncs the database");
                    Mode::Failed
                }
            };
        }
        self.drain(w)?;
        // redb refuses every write after a failed commit: so does a journaling session
        // from here on, rather than journal commits that no checkpoint could write.
        let stop = |w: &mut WriterState, e: StorageError| match w.mode {
            Mode::On(_) => broken(w, &e),
            _ => e,
        };
        let tx = match self.shared.db.begin_write() {
            Ok(tx) => tx,
            Err(e) => return Err(stop(w, StorageError::from_display(e))),
        };
        apply(&tx, mutations)?;
        // Not clean only while commits may go to the journal: a database whose journal
        // failed needs nothing from it.
        let journaling = matches!(w.mode, Mode::On(_));
        let id = match &w.mode {
            Mode::Off => None,
            Mode::On(_) if !w.session => Some(new_id()),
            _ => w.id,
        };
        if let Some(id) = id {
            set_state(&tx, &id, w.seq, !journaling)?;
        }
        if let Err(e) = tx.commit() {
            return Err(stop(w, StorageError::from_display(e)));
        }
        refresh_base(&self.shared);
        if let Some(id) = id {
            w.id = Some(id);
            w.clean = Some(!journaling);
            if let Mode::On(journal) = &mut w.mode {
                journal.set_id(id);
            }
        }
        w.session = !matches!(w.mode, Mode::Off);
        self.shared.visible.store(w.seq, Ordering::Release);
        Ok(())
    }

    /// Drains the layers; `explicit` (a clean stop) or after a session also records a
    /// clean close, so that the next open replays nothing and may do without the
    /// journal. Without either it writes nothing (a store refused at unseal is left as
    /// it was).
    fn close(&self, w: &mut WriterState, explicit: bool) -> Result<(), StorageError> {
        self.drain(w)?;
        let wanted =
            !matches!(w.mode, Mode::Off) && (w.session || (explicit && w.clean == Some(false)));
        if let (true, Some(id)) = (wanted, w.id) {
            let tx = self
                .shared
                .db
                .begin_write()
                .map_err(StorageError::from_display)?;
            set_state(&tx, &id, w.seq, true)?;
            tx.commit().map_err(StorageError::from_display)?;
            refresh_base(&self.shared);
            w.session = false;
            w.clean = Some(true);
        }
        Ok(())
    }

    /// Freezes the current layer and starts its checkpoint; new entries go to the
    /// journal's other half, whose own checkpoint is waited for first.
    fn rotate(&self, w: &mut WriterState) -> Result<(), StorageError> {
        join_checkpoint(w)?;
        let Some(id) = w.id else {
            return Err(StorageError(
                "journaled commits without a journal id".into(),
            ));
        };
        let layer = self.freeze()?;
        w.in_layer = 0;
        if let Mode::On(journal) = &mut w.mode {
            journal.switch();
        }
        let (shared, frozen, last) = (self.shared.clone(), layer.clone(), w.seq);
        let spawned = std::thread::Builder::new()
            .name("strongbox-checkpoint".into())
            .spawn(move || checkpoint(&shared, &frozen, &id, last));
        match spawned {
            Ok(h) => w.checkpointing = Some(h),
            // No thread: the checkpoint runs here.
            Err(e) => {
                tracing::warn!(error = %e, "could not start a checkpoint thread; checkpointing in the writer");
                if let Err(e) = checkpoint(&self.shared, &layer, &id, last) {
                    return Err(broken(w, &e));
                }
            }
        }
        Ok(())
    }
}

/// Stops every later write after a failed checkpoint or a commit that is in the journal
/// but could not be made visible: what the layers hold is durable in the journal, and a
/// restart replays it.
fn broken(w: &mut WriterState, e: &StorageError) -> StorageError {
    let msg = format!(
        "storage stopped ({e}); the commits since the last checkpoint are safe in the journal and are replayed when the server restarts"
    );
    tracing::error!("{msg}");
    w.mode = Mode::Broken(msg.clone());
    StorageError(msg)
}

/// The journal id, the number of its last entry the database holds, and whether the
/// last close was clean, as the database records them.
fn journal_state(db: &Database) -> Result<(Option<JournalId>, u64, Option<bool>), StorageError> {
    let rtx = db.begin_read().map_err(StorageError::from_display)?;
    let t = match rtx.open_table(JOURNAL_STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, 0, None)),
        Err(e) => return Err(StorageError::from_display(e)),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>, StorageError> {
        Ok(t.get(k)
            .map_err(StorageError::from_display)?
            .map(|v| v.value().to_vec()))
    };
    // A record of the wrong size is damage, not absence: taken for absent, an id would
    // have the journal ignored (its commits lost) and a number would replay from 1.
    let damaged = |k: &str| {
        StorageError(format!(
            "the database's journal record {k:?} is damaged; the server will not guess which journal entries it holds"
        ))
    };
    let id = match get(JOURNAL_ID)? {
        Some(v) => Some(JournalId::try_from(v.as_slice()).map_err(|_| damaged(JOURNAL_ID))?),
        None => None,
    };
    let seq = match get(JOURNAL_SEQ)? {
        Some(v) => {
            u64::from_be_bytes(<[u8; 8]>::try_from(v.as_slice()).map_err(|_| damaged(JOURNAL_SEQ))?)
        }
        None => 0,
    };
    let clean = match get(JOURNAL_CLEAN)?.as_deref() {
        Some([1]) => Some(true),
        Some([0]) => Some(false),
        Some(_) => return Err(damaged(JOURNAL_CLEAN)),
        None => None,
    };
    Ok((id, seq, clean))
}

/// Tests hold checkpoints back while this is set, to read while a frozen layer exists.
#[cfg(test)]
pub(super) static HOLD_CHECKPOINTS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Tests make the view that this thread makes next stop right after the layers' lock:
/// the view says when it is there (`paused`) and waits for `resume`.
#[cfg(test)]
pub(super) type ViewPause = (
    std::thread::ThreadId,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<()>,
);

#[cfg(test)]
pub(super) static PAUSE_VIEW: Mutex<Option<ViewPause>> = Mutex::new(None);

#[cfg(test)]
fn pause_view_here() {
    let mine = {
        let mut g = PAUSE_VIEW
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*g {
            Some((id, _, _)) if *id == std::thread::current().id() => g.take(),
            _ => None,
        }
    };
    if let Some((_, paused, resume)) = mine {
        let _ = paused.send(());
        let _ = resume.recv();
    }
}

fn poisoned() -> StorageError {
    StorageError("a storage lock is poisoned".into())
}

/// Waits for the running checkpoint (also when writes are stopped already); its
/// failure stops every later write.
fn join_checkpoint(w: &mut WriterState) -> Result<(), StorageError> {
    let joined = match w.checkpointing.take() {
        Some(h) => h
            .join()
            .unwrap_or_else(|_| Err(StorageError("the checkpoint thread panicked".into()))),
        None => Ok(()),
    };
    if let Mode::Broken(e) = &w.mode {
        return Err(StorageError(e.clone()));
    }
    joined.map_err(|e| broken(w, &e))
}

/// Writes a frozen layer into redb with one durable commit recording `last` as held,
/// then drops the layer.
fn checkpoint(
    shared: &Shared,
    layer: &Arc<Memtable>,
    id: &JournalId,
    last: u64,
) -> Result<(), StorageError> {
    #[cfg(test)]
    while HOLD_CHECKPOINTS.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let tx = shared
        .db
        .begin_write()
        .map_err(StorageError::from_display)?;
    {
        let tables = layer.tables.read().map_err(|_| poisoned())?;
        for (i, map) in tables.iter().enumerate() {
            if map.is_empty() {
                continue;
            }
            let Some(&table) = Table::ALL.get(i) else {
                continue;
            };
            if let Some(runs) = packed::runs_of(table) {
                let changes = map
                    .iter()
                    .filter_map(|(k, versions)| {
                        versions.last().map(|(_, v)| (k.as_slice(), v.as_deref()))
                    })
                    .collect();
                packed::write(&tx, table, runs, changes)?;
                continue;
            }
            let mut t = tx
                .open_table(def(table))
                .map_err(StorageError::from_display)?;
            for (k, versions) in map {
                match versions.last() {
                    Some((_, Some(v))) => {
                        t.insert(k.as_slice(), v.as_slice())
                            .map_err(StorageError::from_display)?;
                    }
                    Some((_, None)) => {
                        t.remove(k.as_slice()).map_err(StorageError::from_display)?;
                    }
                    None => {}
                }
            }
        }
    }
    set_state(&tx, id, last, false)?;
    tx.commit().map_err(StorageError::from_display)?;
    let base = Base::begin(&shared.db).ok();
    // The layer and the redb state without it go together, and only together.
    let mut layers = shared.layers.write().map_err(|_| poisoned())?;
    layers.base = base;
    if layers
        .frozen
        .as_ref()
        .is_some_and(|f| Arc::ptr_eq(f, layer))
    {
        layers.frozen = None;
    }
    Ok(())
}

impl Memtable {
    /// The newest version of `key` numbered at most `upto` (`None` upto: the newest):
    /// `Some(None)` when that version deletes it, `None` when the layer has none.
    fn get(
        &self,
        table: Table,
        key: &[u8],
        upto: Option<u64>,
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        let tables = self.tables.read().map_err(|_| poisoned())?;
        let Some(versions) = tables.get(table.index()).and_then(|m| m.get(key)) else {
            return Ok(None);
        };
        Ok(newest(versions, upto).cloned())
    }

    /// Adds commit `seq`'s mutations.
    fn insert(&self, seq: u64, mutations: &[Mutation]) -> Result<(), StorageError> {
        let mut tables = self.tables.write().map_err(|_| poisoned())?;
        if tables.is_empty() {
            tables.resize_with(Table::ALL.len(), BTreeMap::new);
        }
        for m in mutations {
            let (table, key, value) = match m {
                Mutation::Put(t, k, v) => (*t, k, Some(v.clone())),
                Mutation::Delete(t, k) => (*t, k, None),
            };
            if let Some(map) = tables.get_mut(table.index()) {
                map.entry(key.clone()).or_default().push((seq, value));
            }
        }
        Ok(())
    }

    /// Adds to `out` the entries of `table` under `prefix` after `after` that this
    /// layer has and `out` (a newer layer's) does not, in key order, until `limit` of
    /// those added are values. Deletions are added too: they hide what an older layer
    /// holds. (Past that point no entry can be among the first `limit` results: this
    /// layer alone has `limit` live ones before it, which only a newer layer could hide,
    /// and `out` holds all of those that could.)
    fn collect(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        upto: Option<u64>,
        out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let tables = self.tables.read().map_err(|_| poisoned())?;
        let Some(map) = tables.get(table.index()) else {
            return Ok(());
        };
        let start: &[u8] = after.filter(|a| *a > prefix).unwrap_or(prefix);
        let mut values = 0;
        for (k, versions) in
            map.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
        {
            if Some(k.as_slice()) == after {
                continue;
            }
            if !k.starts_with(prefix) || values >= limit {
                break;
            }
            if out.contains_key(k) {
                continue;
            }
            if let Some(v) = newest(versions, upto) {
                values += usize::from(v.is_some());
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }
}

/// The newest of a key's versions numbered at most `upto` (`None`: the newest).
fn newest(versions: &Versions, upto: Option<u64>) -> Option<&Option<Vec<u8>>> {
    versions
        .iter()
        .rev()
        .find(|(seq, _)| upto.is_none_or(|u| *seq <= u))
        .map(|(_, v)| v)
}

/// A consistent read: the current layer up to a commit, the frozen layer, then redb.
struct View {
    current: Arc<Memtable>,
    frozen: Option<Arc<Memtable>>,
    upto: u64,
    base: Arc<Base>,
}

impl Reader for View {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.current.get(table, key, Some(self.upto))? {
            return Ok(v);
        }
        if let Some(frozen) = &self.frozen
            && let Some(v) = frozen.get(table, key, None)?
        {
            return Ok(v);
        }
        tx_get(&self.base, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        // The layers' entries in range, newer over older, laid over redb's.
        let mut layered = BTreeMap::new();
        self.current
            .collect(table, prefix, after, limit, Some(self.upto), &mut layered)?;
        if let Some(frozen) = &self.frozen {
            frozen.collect(table, prefix, after, limit, None, &mut layered)?;
        }
        super::scan_over(layered, limit, |want| {
            tx_scan(&self.base, table, prefix, after, want)
        })
    }
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError(format!("commit journal: {e}"))
}

fn new_id() -> JournalId {
    let mut id = JournalId::default();
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

/// Makes the journal file (new, so never over another's; empty) and syncs its
/// directory, so that the entries written to it survive a crash with it.
fn create_journal(path: &Path) -> std::io::Result<Journal> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    sync_parent_dir(path)?;
    let file = FileBackend::new(f).map_err(std::io::Error::other)?;
    // The id is the session's, set by the commit that records it.
    Journal::new(Box::new(file), JournalId::default())
}

fn set_state(
    tx: &WriteTransaction,
    id: &JournalId,
    seq: u64,
    clean: bool,
) -> Result<(), StorageError> {
    let mut t = tx
        .open_table(JOURNAL_STATE)
        .map_err(StorageError::from_display)?;
    t.insert(JOURNAL_ID, id.as_slice())
        .map_err(StorageError::from_display)?;
    t.insert(JOURNAL_SEQ, seq.to_be_bytes().as_slice())
        .map_err(StorageError::from_display)?;
    t.insert(JOURNAL_CLEAN, [u8::from(clean)].as_slice())
        .map_err(StorageError::from_display)?;
    Ok(())
}

fn apply(tx: &WriteTransaction, mutations: &[Mutation]) -> Result<(), StorageError> {
    let table_of = |m: &Mutation| match m {
        Mutation::Put(t, ..) | Mutation::Delete(t, _) => *t,
    };
    // Each table is opened once per run of its mutations (the writer hands them over
    // sorted by table): opening and closing a table costs a table-tree update.
    for run in mutations.chunk_by(|a, b| table_of(a) == table_of(b)) {
        let Some(first) = run.first() else { continue };
        if let Some(runs) = packed::runs_of(table_of(first)) {
            // Each key's last mutation.
            let changes = run
                .iter()
                .map(|m| match m {
                    Mutation::Put(_, k, v) => (k.as_slice(), Some(v.as_slice())),
                    Mutation::Delete(_, k) => (k.as_slice(), None),
                })
                .collect();
            packed::write(tx, table_of(first), runs, changes)?;
            continue;
        }
        let mut t = tx
            .open_table(def(table_of(first)))
            .map_err(StorageError::from_display)?;
        for m in run {
            match m {
                Mutation::Put(_, k, v) => {
                    t.insert(k.as_slice(), v.as_slice())
                        .map_err(StorageError::from_display)?;
                }
                Mutation::Delete(_, k) => {
                    t.remove(k.as_slice()).map_err(StorageError::from_display)?;
                }
            }
        }
    }
    Ok(())
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        // A clean close leaves everything in the database and nothing to replay. After a
        // panic in a commit (the writer's lock poisoned) nothing more is written: the
        // writer's state may be half changed, and the journal is replayed at the next open.
        let mut guard = match self.writer.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                // A checkpoint under way (begun on a whole layer) is waited for, so that
                // no thread has the database open once it is dropped.
                let _ = join_checkpoint(&mut poisoned.into_inner());
                tracing::warn!(
                    "a commit panicked: the database is closed as it is; the journal will be replayed at the next open"
                );
                return;
            }
        };
        if let Err(e) = self.close(&mut guard, false) {
            tracing::warn!(error = %e, "could not checkpoint the database at close; the journal will be replayed at the next open");
        }
    }
}

impl Backend for RedbBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.view()?.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.view()?.scan(table, prefix, after, limit)
    }

    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        Ok(Box::new(self.view()?))
    }

    fn commit(&self, mutations: &[Mutation]) -> Result<(), StorageError> {
        let mut guard = self.writer.lock().map_err(|_| poisoned())?;
        let w = &mut *guard;
        // A background checkpoint that has ended is looked at now, not only at the next
        // rotation (up to 1,024 commits later): one that failed stops this commit and
        // every later one, as storage.md says (health reports it from then on).
        if w.checkpointing.as_ref().is_some_and(|h| h.is_finished()) {
            join_checkpoint(w)?;
        }
        if let Mode::Broken(e) = &w.mode {
            return Err(StorageError(e.clone()));
        }
        let (Mode::On(journal), true) = (&w.mode, w.session) else {
            return self.durable(w, mutations);
        };
        let payload = journal::encode_payload(mutations);
        if !Journal::ever_fits(&payload) {
            return self.durable(w, mutations);
        }
        if w.in_layer >= GENERATION || !journal.fits(&payload) {
            self.rotate(w)?;
        }
        let Mode::On(journal) = &mut w.mode else {
            return self.durable(w, mutations);
        };
        let seq = w.seq + 1;
        if let Err(e) = journal.append(seq, &payload) {
            // The entry may be on disk all the same. Its number counts as used: redb
            // records it as held at once (and with every later commit, all durable in
            // redb from now on), so a replay never applies the entry. Until that
            // commit lands, its outcome is unknown, as after any failed sync.
            w.seq = seq;
            w.mode = Mode::Failed;
            tracing::error!(error = %e, "the commit journal failed; every commit syncs the database from now on");
            if let Err(e2) = self.durable(w, &[]) {
                tracing::error!(error = %e2, "could not record the failed journal entry as held");
            }
            return Err(io_error(e));
        }
        w.seq = seq;
        w.in_layer += 1;
        let added = self
            .shared
            .layers
            .read()
            .map_err(|_| poisoned())
            .and_then(|layers| layers.current.insert(seq, mutations));
        if let Err(e) = added {
            // In the journal, not in memory: later commits must not build on a state
            // without it.
            return Err(broken(w, &e));
        }
        // Readers see the commit from here on; it is durable already (in the journal).
        self.shared.visible.store(seq, Ordering::Release);
        Ok(())
    }

    /// Drains the layers and records a clean close: nothing in the journal is needed
    /// any more, so the next open replays nothing and may do without the file.
    fn checkpoint(&self) -> Result<(), StorageError> {
        let mut guard = self.writer.lock().map_err(|_| poisoned())?;
        self.close(&mut guard, true)
    }
}

/// Most bytes of one growth of the file written with zeros. redb grows a file by
/// doubling it (up to 4 GiB at a time); past this much the rest of a growth stays
/// sparse. The filling holds redb's state lock, so new reads and the commit wait for it:
/// 32 MiB and a sync, once per growth.
const PREFILL_MAX: u64 = 32 * 1024 * 1024;

/// A redb storage backend, except that space redb adds to the file is written with
/// zeros and synced at once, as PostgreSQL fills a new WAL segment. On a sparse file,
/// each commit that writes a page no commit wrote before makes the file system allocate
/// a block, and `fdatasync` then also writes the inode and the allocation maps and
/// waits for them (measured under load: one commit in three or so). With the space
/// written beforehand a commit syncs its own pages only. Zeros are what redb reads from
/// a never-written page anyway, and redb writes nothing into new space before `set_len`
/// returns, so this changes no byte redb sees.
#[derive(Debug)]
struct PrefilledFile<B>(B);

impl<B: redb::StorageBackend> redb::StorageBackend for PrefilledFile<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.0.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let old = self.0.len()?;
        self.0.set_len(len)?;
        let end = len.min(old.saturating_add(PREFILL_MAX));
        if end <= old {
            return Ok(());
        }
        const CHUNK: u64 = 1024 * 1024;
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = old;
        while at < end {
            let n = (end - at).min(CHUNK);
            // Best effort: space left unfilled (a full disk) is merely sparse, and the
            // data redb still has to write may fit where the zeros did not.
            if let Err(e) = self.0.write(at, &zeros[..n as usize]) {
                tracing::warn!(error = %e, "could not fill new database space with zeros; it stays sparse");
                return Ok(());
            }
            at += n;
        }
        // Not best effort: a failed sync may be about pages redb wrote before, and the
        // error is reported once, so it must reach redb.
        self.0.sync_data(false)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.0.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

pub(super) type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

fn tx_get(base: &Base, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    match base.table(table)? {
        Some(t) => t.get(key),
        None => Ok(None),
    }
}

fn tx_scan(
    base: &Base,
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Entries, StorageError> {
    match base.table(table)? {
        Some(t) => t.scan(prefix, after, limit),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a panic in a commit (the writer's lock poisoned), dropping the backend does not
    /// drain into the database nor record a clean close; the journal brings the commits
    /// back at the next open.
    #[test]
    fn a_backend_whose_commit_panicked_is_not_closed_as_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let b = RedbBackend::open(&path).unwrap();
        b.commit(&[Mutation::Put(Table::Meta, b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        std::thread::scope(|s| {
            let poisoned = s
                .spawn(|| {
                    let _held = b.writer.lock();
                    panic!("a commit panics");
                })
                .join();
            assert!(poisoned.is_err());
        });
        assert!(b.writer.is_poisoned());
        drop(b);
        let db = Database::open(&path).unwrap();
        let (_, _, clean) = journal_state(&db).unwrap();
        assert_eq!(clean, Some(false), "not recorded as closed cleanly");
        drop(db);
        let b = RedbBackend::open(&path).unwrap();
        assert_eq!(
            b.get(Table::Meta, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    /// A damaged journal record (its id or number of the wrong size) stops the open,
    /// rather than being taken for "no journal" (which would drop the journal's
    /// commits) or "nothing applied yet"; the database is left as it was.
    #[test]
    fn a_damaged_journal_record_is_refused_not_taken_for_absent() {
        for (key, bad) in [
            (JOURNAL_ID, &[7u8; 15][..]),
            (JOURNAL_SEQ, &[1u8; 3][..]),
            (JOURNAL_CLEAN, &[2u8][..]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.redb");
            let b = RedbBackend::open(&path).unwrap();
            b.commit(&[Mutation::Put(Table::Meta, b"k".to_vec(), b"v".to_vec())])
                .unwrap();
            drop(b);
            let db = Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(JOURNAL_STATE)
                .unwrap()
                .insert(key, bad)
                .unwrap();
            tx.commit().unwrap();
            drop(db);
            let e = RedbBackend::open(&path).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("damaged") && e.contains(key)),
                "{key}: {e:?}"
            );
            let db = Database::open(&path).unwrap();
            let rtx = db.begin_read().unwrap();
            let t = rtx.open_table(JOURNAL_STATE).unwrap();
            assert_eq!(
                t.get(key).unwrap().unwrap().value(),
                bad,
                "{key} left as it was"
            );
        }
    }
}
