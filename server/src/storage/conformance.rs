//! The same tests run against every backend, directly and through [`Store`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;

fn backends() -> Vec<(&'static str, Arc<dyn Backend>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = RedbBackend::open(&dir.path().join("db.redb")).expect("open redb");
    vec![
        ("memory", Arc::new(MemoryBackend::new()), None),
        ("redb", Arc::new(redb), Some(dir)),
    ]
}

#[test]
fn put_get_delete_scan() {
    for (name, b, _dir) in backends() {
        b.commit(&[
            Mutation::Put(Table::Secrets, b"a/1".to_vec(), b"x".to_vec()),
            Mutation::Put(Table::Secrets, b"a/2".to_vec(), b"y".to_vec()),
            Mutation::Put(Table::Secrets, b"b".to_vec(), b"z".to_vec()),
            Mutation::Put(Table::Keys, b"a/3".to_vec(), b"k".to_vec()),
        ])
        .unwrap();
        assert_eq!(
            b.get(Table::Secrets, b"a/1").unwrap(),
            Some(b"x".to_vec()),
            "{name}"
        );
        assert_eq!(
            b.get(Table::Keys, b"a/1").unwrap(),
            None,
            "{name}: tables are separate"
        );
        let all = b.scan(Table::Secrets, b"a/", None, 10).unwrap();
        assert_eq!(all.len(), 2, "{name}");
        let after = b.scan(Table::Secrets, b"a/", Some(b"a/1"), 10).unwrap();
        assert_eq!(after, vec![(b"a/2".to_vec(), b"y".to_vec())], "{name}");
        // A start that sorts before the prefix (a page token of another listing) starts
        // at the prefix, in snapshots too.
        let early = vec![(b"b".to_vec(), b"z".to_vec())];
        assert_eq!(
            b.scan(Table::Secrets, b"b", Some(b"a/1"), 10).unwrap(),
            early,
            "{name}"
        );
        assert_eq!(
            b.snapshot()
                .unwrap()
                .scan(Table::Secrets, b"b", Some(b"a/1"), 10)
                .unwrap(),
            early,
            "{name}"
        );
        assert_eq!(
            b.scan(Table::Secrets, b"", None, 2).unwrap().len(),
            2,
            "{name}: limit"
        );
        b.commit(&[Mutation::Delete(Table::Secrets, b"a/1".to_vec())])
            .unwrap();
        assert_eq!(b.get(Table::Secrets, b"a/1").unwrap(), None, "{name}");
        // Tables interleaved, puts and deletes mixed: each lands in its own table.
        b.commit(&[
            Mutation::Put(Table::Keys, b"x".to_vec(), b"1".to_vec()),
            Mutation::Put(Table::Secrets, b"c".to_vec(), b"2".to_vec()),
            Mutation::Delete(Table::Secrets, b"b".to_vec()),
            Mutation::Put(Table::Keys, b"y".to_vec(), b"3".to_vec()),
            Mutation::Delete(Table::Keys, b"a/3".to_vec()),
        ])
        .unwrap();
        assert_eq!(
            b.scan(Table::Keys, b"", None, 10).unwrap(),
            vec![
                (b"x".to_vec(), b"1".to_vec()),
                (b"y".to_vec(), b"3".to_vec())
            ],
            "{name}"
        );
        assert_eq!(
            b.scan(Table::Secrets, b"", None, 10).unwrap(),
            vec![
                (b"a/2".to_vec(), b"y".to_vec()),
                (b"c".to_vec(), b"2".to_vec())
            ],
            "{name}"
        );
    }
}

#[tokio::test]
async fn failed_job_leaves_no_trace_and_batch_sees_earlier_jobs() {
    for (name, b, _dir) in backends() {
        let store = Store::new(b);
        store
            .write(|t| {
                t.put(Table::Secrets, b"k1", b"v1".to_vec());
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap();
        let r: Result<(), StorageError> = store
            .write(|t| {
                t.put(Table::Secrets, b"k2", b"v2".to_vec());
                Err(StorageError("refused".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(store.get(Table::Secrets, b"k2").unwrap(), None, "{name}");
        // Many concurrent increments: serialised, none lost.
        let mut handles = Vec::new();
        for _ in 0..50 {
            let s = store.clone();
            handles.push(tokio::spawn(async move {
                s.write(|t| {
                    let n = t
                        .get(Table::Meta, b"n")?
                        .map(|v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])))
                        .unwrap_or(0);
                    t.put(Table::Meta, b"n", (n + 1).to_be_bytes().to_vec());
                    Ok::<_, StorageError>(())
                })
                .await
            }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let n = store.get(Table::Meta, b"n").unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(n.try_into().unwrap()), 50, "{name}");
        let scanned = store
            .write(|t| {
                t.put(Table::Secrets, b"k0", b"v0".to_vec());
                t.delete(Table::Secrets, b"k1");
                t.scan(Table::Secrets, b"k", None, 10)
            })
            .await
            .unwrap();
        assert_eq!(
            scanned,
            vec![(b"k0".to_vec(), b"v0".to_vec())],
            "{name}: overlay merge"
        );
    }
}

#[tokio::test]
async fn write_then_keeps_the_epilogue_of_a_failed_job_and_nothing_when_it_fails() {
    for (name, b, _dir) in backends() {
        let store = Store::new(b);
        // Job ok, epilogue ok: both kept, the epilogue sees the job's writes.
        let r = store
            .write_then(
                |t| {
                    t.put(Table::Secrets, b"a", b"1".to_vec());
                    Ok::<_, StorageError>(7)
                },
                |t, r| {
                    assert_eq!(r.ok(), Some(&7));
                    assert!(t.get(Table::Secrets, b"a")?.is_some());
                    t.put(Table::Audit, b"1", b"ok".to_vec());
                    Ok(())
                },
            )
            .await;
        assert_eq!(r.unwrap().unwrap().unwrap(), 7, "{name}");
        assert!(store.get(Table::Audit, b"1").unwrap().is_some(), "{name}");
        // Job fails: its writes are dropped, the epilogue's kept.
        let r = store
            .write_then(
                |t| {
                    t.put(Table::Secrets, b"b", b"2".to_vec());
                    Err::<(), _>(StorageError("refused".into()))
                },
                |t, r| {
                    assert!(r.is_err());
                    assert!(t.get(Table::Secrets, b"b")?.is_none());
                    t.put(Table::Audit, b"2", b"refused".to_vec());
                    Ok(())
                },
            )
            .await;
        assert!(r.unwrap().unwrap().is_err(), "{name}");
        assert!(store.get(Table::Secrets, b"b").unwrap().is_none(), "{name}");
        assert!(store.get(Table::Audit, b"2").unwrap().is_some(), "{name}");
        // Epilogue fails: nothing of either is kept.
        let r = store
            .write_then(
                |t| {
                    t.put(Table::Secrets, b"c", b"3".to_vec());
                    Ok::<_, StorageError>(())
                },
                |t, _| {
                    t.put(Table::Audit, b"3", b"x".to_vec());
                    Err(StorageError("cannot record".into()))
                },
            )
            .await;
        assert!(r.unwrap().is_err(), "{name}");
        assert!(store.get(Table::Secrets, b"c").unwrap().is_none(), "{name}");
        assert!(store.get(Table::Audit, b"3").unwrap().is_none(), "{name}");
    }
}

#[tokio::test]
async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
    for (name, b, _dir) in backends() {
        let store = Store::new(b);
        let panicking = store.write(|t| -> Result<(), StorageError> {
            t.put(Table::Secrets, b"lost", b"x".to_vec());
            panic!("a bug in a job");
        });
        let fine = store.write(|t| {
            t.put(Table::Secrets, b"kept", b"y".to_vec());
            Ok::<_, StorageError>(())
        });
        let (p, f) = tokio::join!(panicking, fine);
        assert!(p.is_err(), "{name}");
        f.unwrap();
        store
            .write(|t| {
                t.put(Table::Secrets, b"later", b"z".to_vec());
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: the writer stopped: {e:?}"));
        assert!(
            store.get(Table::Secrets, b"lost").unwrap().is_none(),
            "{name}"
        );
        assert!(
            store.get(Table::Secrets, b"kept").unwrap().is_some(),
            "{name}"
        );
        assert!(
            store.get(Table::Secrets, b"later").unwrap().is_some(),
            "{name}"
        );
        assert!(store.stats().panicked_jobs.load(Ordering::Relaxed) >= 1);
    }
}

/// A backend whose commits fail while `fail` is set (a full disk, say).
struct FailingCommits {
    inner: Arc<dyn Backend>,
    fail: std::sync::atomic::AtomicBool,
}

impl Backend for FailingCommits {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.inner.scan(table, prefix, after, limit)
    }
    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        self.inner.snapshot()
    }
    fn commit(&self, mutations: &[Mutation]) -> Result<(), StorageError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError("No space left on device".into()));
        }
        self.inner.commit(mutations)
    }
}

#[tokio::test]
async fn failing_commits_are_refused_and_flagged_until_one_succeeds() {
    let b = Arc::new(FailingCommits {
        inner: Arc::new(MemoryBackend::new()),
        fail: std::sync::atomic::AtomicBool::new(true),
    });
    let store = Store::new(b.clone());
    let put = |k: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .write(move |t| {
                    t.put(Table::Secrets, k, b"v".to_vec());
                    Ok::<_, StorageError>(())
                })
                .await
        }
    };
    assert!(put(b"a").await.is_err());
    assert!(store.stats().failing.load(Ordering::Relaxed));
    assert!(store.get(Table::Secrets, b"a").unwrap().is_none());
    b.fail.store(false, Ordering::SeqCst);
    put(b"b").await.unwrap();
    assert!(!store.stats().failing.load(Ordering::Relaxed));
}

/// The space redb adds to its file is written at once (no holes), so a commit's
/// `fdatasync` never has to allocate blocks and write the inode; what was committed
/// reads back the same after reopening.
#[test]
fn the_redb_file_has_no_holes_after_it_grows() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.redb");
    let value = vec![0x5a_u8; 3000];
    {
        let b = RedbBackend::open(&path).unwrap();
        // About 6 MB: the file grows several times.
        for batch in 0..40u32 {
            let muts: Vec<Mutation> = (0..50u32)
                .map(|i| {
                    let k = (batch * 50 + i).to_be_bytes().to_vec();
                    Mutation::Put(Table::Audit, k, value.clone())
                })
                .collect();
            b.commit(&muts).unwrap();
        }
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert!(
        meta.len() > 4 * 1024 * 1024,
        "the file grew: {}",
        meta.len()
    );
    // st_blocks counts 512-byte units actually allocated; a sparse file has fewer. (A
    // file system that compresses, e.g. btrfs with `compress`, stores zeros as holes
    // and would fail this; the project's machines use ext4.)
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} bytes allocated for a {}-byte file",
        meta.blocks() * 512,
        meta.len()
    );
    let b = RedbBackend::open(&path).unwrap();
    assert_eq!(b.scan(Table::Audit, b"", None, 5000).unwrap().len(), 2000);
    assert_eq!(
        b.get(Table::Audit, &1999u32.to_be_bytes()).unwrap(),
        Some(value)
    );
}

/// The journaled redb backend against the in-memory one, over random commits that cross
/// several generations of its memory layer (each frozen and checkpointed in the
/// background while reads and commits go on): every get and scan agrees, a snapshot
/// keeps seeing what it saw, and a reopened database holds the same. (The only test
/// that holds checkpoints back; others in this binary see them delayed at most.)
#[test]
fn journaled_redb_agrees_with_memory_across_generations() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5b0c);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.redb");
    let redb = RedbBackend::open(&path).unwrap();
    let model = MemoryBackend::new();
    let key = |rng: &mut rand::rngs::StdRng| {
        let p = if rng.gen_bool(0.5) { "a/" } else { "b/" };
        format!("{p}{:02}", rng.gen_range(0..30)).into_bytes()
    };
    let table = |rng: &mut rand::rngs::StdRng| {
        if rng.gen_bool(0.5) {
            Table::Secrets
        } else {
            Table::Audit
        }
    };
    // Released when the test ends, also by a failed assertion (dropping the backend
    // waits for its checkpoint).
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            super::redb_backend::HOLD_CHECKPOINTS.store(false, Ordering::SeqCst);
        }
    }
    let _release = Release;
    let mut kept: Vec<(Box<dyn Reader + '_>, Table, Entries)> = Vec::new();
    for i in 0..2600u32 {
        // From 1000 to 1800 the checkpoint of the layer frozen at 1024 waits: reads
        // meanwhile go through the current layer, the frozen one and redb.
        if i == 1000 || i == 1800 {
            super::redb_backend::HOLD_CHECKPOINTS.store(i == 1000, Ordering::SeqCst);
        }
        let batch: Vec<Mutation> = (0..rng.gen_range(1..=4))
            .map(|_| {
                let (t, k) = (table(&mut rng), key(&mut rng));
                if rng.gen_bool(0.7) {
                    Mutation::Put(t, k, i.to_be_bytes().to_vec())
                } else {
                    Mutation::Delete(t, k)
                }
            })
            .collect();
        // As the writer hands them over: sorted by table and key, one per key.
        let mut batch: Vec<Mutation> = batch
            .into_iter()
            .map(|m| match &m {
                Mutation::Put(t, k, _) | Mutation::Delete(t, k) => ((*t, k.clone()), m),
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        batch.sort_by_key(|m| match m {
            Mutation::Put(t, ..) | Mutation::Delete(t, _) => *t,
        });
        redb.commit(&batch).unwrap();
        model.commit(&batch).unwrap();
        if i % 5 == 0 {
            let (t, k) = (table(&mut rng), key(&mut rng));
            assert_eq!(
                redb.get(t, &k).unwrap(),
                model.get(t, &k).unwrap(),
                "get at {i}"
            );
            let prefix: &[u8] = [b"".as_slice(), b"a/", b"b/"][rng.gen_range(0..3)];
            let after = rng.gen_bool(0.5).then(|| key(&mut rng));
            let limit = rng.gen_range(1..8);
            assert_eq!(
                redb.scan(t, prefix, after.as_deref(), limit).unwrap(),
                model.scan(t, prefix, after.as_deref(), limit).unwrap(),
                "scan at {i}"
            );
        }
        if i % 97 == 0 {
            let t = table(&mut rng);
            let snap = redb.snapshot().unwrap();
            let seen = snap.scan(t, b"", None, 100).unwrap();
            assert_eq!(
                seen,
                model.scan(t, b"", None, 100).unwrap(),
                "snapshot at {i}"
            );
            kept.push((snap, t, seen));
        }
    }
    for (snap, t, seen) in &kept {
        assert_eq!(
            &snap.scan(*t, b"", None, 100).unwrap(),
            seen,
            "a snapshot changed"
        );
    }
    drop(kept);
    drop(redb);
    let reopened = RedbBackend::open(&path).unwrap();
    for t in [Table::Secrets, Table::Audit] {
        assert_eq!(
            reopened.scan(t, b"", None, 100).unwrap(),
            model.scan(t, b"", None, 100).unwrap()
        );
    }
}

/// The clean flag: a database copied after its session's first commit (a crash image:
/// the journal holds nothing yet, the database says "not clean") is refused without
/// its journal, opens with it, and once an explicit checkpoint recorded a clean close,
/// opens without it too. Dropping it without a session writes nothing.
#[test]
fn a_missing_journal_is_refused_until_a_clean_close_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (db_a, db_b) = (a.join("db.redb"), b.join("db.redb"));
    let live = RedbBackend::open(&db_a).unwrap();
    let put = |k: &[u8]| Mutation::Put(Table::Secrets, k.to_vec(), b"v".to_vec());
    live.commit(&[put(b"x")]).unwrap();
    let image = (
        std::fs::read(&db_a).unwrap(),
        std::fs::read(journal_path(&db_a)).unwrap(),
    );
    live.commit(&[put(b"y")]).unwrap();
    let crash = |to: &std::path::Path| {
        std::fs::write(to, &image.0).unwrap();
        std::fs::write(journal_path(to), &image.1).unwrap();
    };
    crash(&db_b);

    // Without its journal: refused, naming the file and the way out.
    std::fs::remove_file(journal_path(&db_b)).unwrap();
    let err = RedbBackend::open(&db_b).err().expect("refused");
    assert!(err.0.contains("is missing"), "{err}");
    assert!(
        err.0.contains(&journal_path(&db_b).display().to_string()),
        "{err}"
    );
    // With it: opens; dropped without a commit it writes nothing, so still refused.
    crash(&db_b);
    drop(RedbBackend::open(&db_b).unwrap());
    std::fs::remove_file(journal_path(&db_b)).unwrap();
    assert!(RedbBackend::open(&db_b).is_err());
    // An explicit checkpoint (a clean stop) records the clean close.
    crash(&db_b);
    let again = RedbBackend::open(&db_b).unwrap();
    assert_eq!(
        again.get(Table::Secrets, b"x").unwrap(),
        Some(b"v".to_vec())
    );
    again.checkpoint().unwrap();
    drop(again);
    std::fs::remove_file(journal_path(&db_b)).unwrap();
    let reopened = RedbBackend::open(&db_b).unwrap();
    assert_eq!(
        reopened.get(Table::Secrets, b"x").unwrap(),
        Some(b"v".to_vec())
    );
    drop(live);
}

/// A commit made in redb itself (here a session's first, after a clean close) has no
/// journal number: a view taken while it commits must not count the journaled commit
/// after it without it.
#[test]
fn a_view_never_sees_a_journaled_commit_without_the_redb_commit_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(RedbBackend::open(&dir.path().join("db.redb")).unwrap());
    let put = |k: &[u8]| Mutation::Put(Table::Secrets, k.to_vec(), b"v".to_vec());
    db.commit(&[put(b"a")]).unwrap();
    db.commit(&[put(b"b")]).unwrap();
    // A clean close: the next commit starts a session, durable in redb.
    db.checkpoint().unwrap();
    let (paused_tx, paused) = std::sync::mpsc::channel();
    let (resume, resume_rx) = std::sync::mpsc::channel();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            *super::redb_backend::PAUSE_VIEW.lock().unwrap() =
                Some((std::thread::current().id(), paused_tx, resume_rx));
            let view = db.snapshot().unwrap();
            (
                view.get(Table::Secrets, b"x").unwrap(),
                view.get(Table::Secrets, b"y").unwrap(),
            )
        })
    };
    paused.recv().unwrap();
    // While the view is being made: x in redb (the session's first commit), then y in
    // the journal and the memory layer.
    db.commit(&[put(b"x")]).unwrap();
    db.commit(&[put(b"y")]).unwrap();
    resume.send(()).unwrap();
    let (x, y) = reader.join().unwrap();
    assert!(
        y.is_none() || x.is_some(),
        "the view holds y ({y:?}) but not x ({x:?}), committed before it"
    );
    assert_eq!(db.get(Table::Secrets, b"x").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db.get(Table::Secrets, b"y").unwrap(), Some(b"v".to_vec()));
}

/// A database file that opening makes is the owner's alone, whatever the umask.
#[test]
fn a_database_file_made_by_open_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new.redb");
    let db = RedbBackend::open(&path).unwrap();
    db.commit(&[Mutation::Put(Table::Secrets, b"k".to_vec(), b"v".to_vec())])
        .unwrap();
    for p in [path.clone(), journal_path(&path)] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

/// Commits random puts and deletes of the audit table (kept in packed runs in redb) to a
/// redb without a journal, where every commit rewrites runs, and to the memory model;
/// gets and scans agree after each commit.
#[test]
fn packed_runs_agree_with_memory_commit_by_commit() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xa0d1);
    let redb = RedbBackend::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let model = MemoryBackend::new();
    let key = |rng: &mut rand::rngs::StdRng| {
        let p = if rng.gen_bool(0.5) { "a/" } else { "b/" };
        format!("{p}{:02}", rng.gen_range(0..40)).into_bytes()
    };
    for i in 0..1500u32 {
        // Unsorted, and a key may come twice (the last one wins).
        let batch: Vec<Mutation> = (0..rng.gen_range(1..=6))
            .map(|_| {
                let k = key(&mut rng);
                if rng.gen_bool(0.75) {
                    // Now and then a value large enough that runs are cut by size.
                    let n = if rng.gen_bool(0.1) {
                        3000
                    } else {
                        rng.gen_range(1..4)
                    };
                    Mutation::Put(Table::Audit, k, i.to_be_bytes().repeat(n))
                } else {
                    Mutation::Delete(Table::Audit, k)
                }
            })
            .collect();
        redb.commit(&batch).unwrap();
        model.commit(&batch).unwrap();
        let k = key(&mut rng);
        assert_eq!(
            redb.get(Table::Audit, &k).unwrap(),
            model.get(Table::Audit, &k).unwrap(),
            "get at {i}"
        );
        let prefix: &[u8] = [b"".as_slice(), b"a/", b"b/", b"a/1"][rng.gen_range(0..4)];
        let after = rng.gen_bool(0.5).then(|| key(&mut rng));
        let limit = rng.gen_range(1..12);
        assert_eq!(
            redb.scan(Table::Audit, prefix, after.as_deref(), limit)
                .unwrap(),
            model
                .scan(Table::Audit, prefix, after.as_deref(), limit)
                .unwrap(),
            "scan at {i}"
        );
    }
    assert_eq!(
        redb.scan(Table::Audit, b"", None, 1000).unwrap(),
        model.scan(Table::Audit, b"", None, 1000).unwrap()
    );
}

/// The records of the audit table's raw redb tables: the runs (`None` when that table
/// does not exist) and the entries of the table of one entry per key (likewise).
fn raw_audit_tables(path: &std::path::Path) -> (Option<usize>, Option<usize>) {
    use redb::{ReadableTableMetadata as _, TableDefinition};
    let db = redb::Database::open(path).unwrap();
    let rtx = db.begin_read().unwrap();
    let count = |name: &str| {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        match rtx.open_table(def) {
            Ok(t) => Some(usize::try_from(t.len().unwrap()).unwrap()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => panic!("{e}"),
        }
    };
    (count("audit_runs"), count(Table::Audit.name()))
}

/// Through the journal and its checkpoints, audit entries land in redb as runs (one
/// redb entry per run, not per record), and read back one by one after a reopen.
#[test]
fn audit_entries_are_stored_in_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let b = RedbBackend::open(&path).unwrap();
    let key = |n: u64| n.to_be_bytes().to_vec();
    let mut n = 0u64;
    for size in [1, 3, 7, 2, 30, 5, 1, 51] {
        let batch: Vec<Mutation> = (0..size)
            .map(|_| {
                n += 1;
                Mutation::Put(Table::Audit, key(n), format!("record {n}").into_bytes())
            })
            .collect();
        b.commit(&batch).unwrap();
    }
    b.checkpoint().unwrap();
    drop(b);
    let (runs, plain) = raw_audit_tables(&path);
    let runs = runs.expect("the runs table");
    assert_eq!(plain, None);
    assert!(
        runs <= usize::try_from(n).unwrap().div_ceil(packed::RUN_ENTRIES) + 1,
        "{runs} runs for {n} entries"
    );
    {
        use redb::ReadableTable as _;
        let db = redb::Database::open(&path).unwrap();
        let rtx = db.begin_read().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("audit_runs");
        for run in rtx.open_table(def).unwrap().iter().unwrap() {
            let (k, v) = run.unwrap();
            let entries = packed::unpack(v.value()).unwrap();
            assert!(
                entries.len() <= packed::RUN_ENTRIES,
                "a run of {}",
                entries.len()
            );
            assert_eq!(
                entries.last().map(|(k, _)| *k),
                Some(k.value()),
                "keyed by its last"
            );
        }
    }
    let b = RedbBackend::open(&path).unwrap();
    let all = b.scan(Table::Audit, b"", None, 1000).unwrap();
    assert_eq!(all.len(), 100);
    assert!(
        all.iter()
            .zip(1u64..)
            .all(|((k, v), i)| *k == key(i) && *v == format!("record {i}").into_bytes())
    );
    assert_eq!(
        b.get(Table::Audit, &key(42)).unwrap(),
        Some(b"record 42".to_vec())
    );
    assert_eq!(b.get(Table::Audit, &key(101)).unwrap(), None);
}

/// A database written before the audit table was packed (one redb entry per record) is
/// read as it is; its first audit write moves every record into runs, in the same
/// transaction, and drops the old table.
#[test]
fn an_audit_table_of_one_entry_per_record_is_read_then_moved_into_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let key = |n: u64| n.to_be_bytes().to_vec();
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&[u8], &[u8]> =
                redb::TableDefinition::new(Table::Audit.name());
            let mut t = tx.open_table(def).unwrap();
            for n in 1..=10u64 {
                t.insert(key(n).as_slice(), format!("old {n}").as_bytes())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let b = RedbBackend::open(&path).unwrap();
    assert_eq!(
        b.get(Table::Audit, &key(7)).unwrap(),
        Some(b"old 7".to_vec())
    );
    assert_eq!(
        b.scan(Table::Audit, b"", Some(&key(8)), 10).unwrap().len(),
        2
    );
    drop(b);
    assert_eq!(
        raw_audit_tables(&path),
        (None, Some(10)),
        "reads change nothing"
    );
    let b = RedbBackend::open(&path).unwrap();
    b.commit(&[
        Mutation::Delete(Table::Audit, key(3)),
        Mutation::Put(Table::Audit, key(11), b"new 11".to_vec()),
    ])
    .unwrap();
    b.checkpoint().unwrap();
    drop(b);
    let (runs, plain) = raw_audit_tables(&path);
    assert_eq!(plain, None, "the old table is gone");
    assert!(runs.is_some_and(|r| r < 10), "{runs:?}");
    let b = RedbBackend::open(&path).unwrap();
    let keys: Vec<Vec<u8>> = b
        .scan(Table::Audit, b"", None, 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let want: Vec<Vec<u8>> = [1, 2, 4, 5, 6, 7, 8, 9, 10, 11].map(key).to_vec();
    assert_eq!(keys, want);
    assert_eq!(
        b.get(Table::Audit, &key(2)).unwrap(),
        Some(b"old 2".to_vec())
    );
}
