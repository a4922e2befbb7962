//! Crash consistency with a storage backend that keeps only synced bytes: every write
//! the server acknowledged must be in the image a crash leaves behind.

use std::sync::{Arc, Mutex};

use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, Service, ServiceConfig};
use strongbox_server::storage::{Backend, RedbBackend};

use crate::common::{T0, text_secret};

#[derive(Debug, Default, Clone)]
struct Images {
    live: Vec<u8>,
    synced: Vec<u8>,
}

/// A "disk" of two files (the database and its commit journal) that keeps only what was
/// there at each file's last sync. One lock covers both, so a crash image is one instant.
#[derive(Debug, Default, Clone)]
struct Disk {
    files: Arc<Mutex<[Images; 2]>>,
    /// Syncs of each file so far.
    syncs: Arc<Mutex<[u64; 2]>>,
    /// Makes syncs of the journal fail while set.
    journal_fails: Arc<std::sync::atomic::AtomicBool>,
    /// Makes syncs of the database fail while set (nothing reaches the disk).
    db_fails: Arc<std::sync::atomic::AtomicBool>,
}

const DB: usize = 0;
const JOURNAL: usize = 1;

/// One file of a [`Disk`], as a redb storage backend.
#[derive(Debug, Clone)]
struct SyncedOnly(Disk, usize);

impl Disk {
    fn from_image(img: [Vec<u8>; 2]) -> Self {
        let [db, journal] = img;
        let file = |b: Vec<u8>| Images {
            live: b.clone(),
            synced: b,
        };
        Self {
            files: Arc::new(Mutex::new([file(db), file(journal)])),
            ..Default::default()
        }
    }
    /// What survives a power cut now.
    fn crash_image(&self) -> [Vec<u8>; 2] {
        let g = self.files.lock().unwrap();
        [g[DB].synced.clone(), g[JOURNAL].synced.clone()]
    }
    fn db(&self) -> SyncedOnly {
        SyncedOnly(self.clone(), DB)
    }
    fn journal(&self) -> SyncedOnly {
        SyncedOnly(self.clone(), JOURNAL)
    }
    fn syncs(&self, file: usize) -> u64 {
        self.syncs.lock().unwrap()[file]
    }
}

impl redb::StorageBackend for SyncedOnly {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.files.lock().unwrap()[self.1].live.len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let g = self.0.files.lock().unwrap();
        let o = offset as usize;
        g[self.1]
            .live
            .get(o..o + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past end"))
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.files.lock().unwrap()[self.1]
            .live
            .resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        if self.1 == DB && self.0.db_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected database failure"));
        }
        let mut g = self.0.files.lock().unwrap();
        let f = &mut g[self.1];
        f.synced = f.live.clone();
        self.0.syncs.lock().unwrap()[self.1] += 1;
        if self.1 == JOURNAL
            && self
                .0
                .journal_fails
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            // The worst failure: the bytes reached the disk, yet the sync reports an
            // error, so the commit fails while its journal entry is whole.
            return Err(std::io::Error::other("injected journal failure"));
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut g = self.0.files.lock().unwrap();
        let f = &mut g[self.1].live;
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// The database on `disk`, with its journal (`journaled`) or without.
fn backend(disk: &Disk, journaled: bool) -> RedbBackend {
    if journaled {
        RedbBackend::with_backends(disk.db(), disk.journal()).unwrap()
    } else {
        RedbBackend::with_backend(disk.db()).unwrap()
    }
}

fn open(disk: &Disk, journaled: bool, key: &RootKey) -> Service {
    let backend: Arc<dyn Backend> = Arc::new(backend(disk, journaled));
    server::unseal(
        backend,
        key,
        Arc::new(ManualClock::new(T0)),
        ServiceConfig::default(),
    )
    .unwrap()
    .service
}

/// A new database with its journal on a fresh [`Disk`], and a service over it.
fn journaled_service() -> (Disk, RootKey, Service, Actor) {
    let key = RootKey::random();
    let disk = Disk::default();
    {
        let b = backend(&disk, true);
        server::initialize(&b, &key).unwrap();
    }
    let svc = open(&disk, true, &key);
    let who = Actor::Trusted(Principal::Named("root".into()));
    (disk, key, svc, who)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_crash() {
    crash_test(true).await;
}

/// The same without the journal: every commit durable in redb itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_crash_without_the_journal() {
    crash_test(false).await;
}

async fn crash_test(journaled: bool) {
    let key = RootKey::random();
    let disk = Disk::default();
    {
        let b = backend(&disk, journaled);
        server::initialize(&b, &key).unwrap();
    }
    let svc = open(&disk, journaled, &key);
    let db_syncs = disk.syncs(DB);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let who = Actor::Trusted(Principal::Named("root".into()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (svc, acked, who) = (svc.clone(), acked.clone(), who.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let (name, value) = (format!("w{w}/s{i}"), format!("value-{w}-{i}"));
                svc.create_secret(text_secret(&name, &value), &who)
                    .await
                    .unwrap();
                acked.lock().unwrap().push((name, value));
            }
        }));
    }
    // Crash images taken while writers run: everything acknowledged before the image
    // was taken must be in it.
    let mut crashes = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        let before = acked.lock().unwrap().clone();
        crashes.push((before, disk.crash_image()));
    }
    for w in writers {
        w.await.unwrap();
    }
    crashes.push((acked.lock().unwrap().clone(), disk.crash_image()));
    assert_eq!(crashes.last().unwrap().0.len(), 200);
    if journaled {
        // The writes went to the journal: the database file was synced only by its
        // checkpoints (one per 1,024 commits), growths and session starts, not once per commit.
        let (db, journal) = (disk.syncs(DB) - db_syncs, disk.syncs(JOURNAL));
        assert!(journal >= 20, "journal syncs {journal}");
        assert!(
            db * 4 <= journal,
            "database syncs {db}, journal syncs {journal}"
        );
    }
    if journaled {
        // Without its journal, a database that was not closed cleanly is refused.
        let image = crashes.last().unwrap().1.clone();
        assert!(RedbBackend::with_backend(Disk::from_image(image).db()).is_err());
    }
    let mut checked = 0;
    for (before, image) in crashes {
        let recovered = open(&Disk::from_image(image), journaled, &key);
        for (name, value) in &before {
            let v = recovered.get_secret_value(name, None, None).unwrap();
            assert_eq!(&v.secret_data, value);
            checked += 1;
        }
    }
    assert!(checked >= 200, "checked {checked}");
}

/// A journal write that fails fails its commit, and nothing of it is kept: not visible
/// at once, and not replayed after a crash, though its whole entry reached the disk
/// (the crash comes right after the failure, before any other commit). Later commits
/// sync the database itself and are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_journal_write_keeps_nothing_of_its_commit() {
    let (disk, key, svc, who) = journaled_service();
    svc.create_secret(text_secret("before", "v1"), &who)
        .await
        .unwrap();
    // A clean checkpoint, then the next session's first commit (durable in redb): the
    // failed entry is then the first of its half, where a replay would start.
    svc.store().checkpoint().await.unwrap();
    svc.create_secret(text_secret("between", "v2"), &who)
        .await
        .unwrap();
    disk.journal_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = svc.create_secret(text_secret("lost", "v3"), &who).await;
    assert!(failed.is_err(), "{failed:?}");
    disk.journal_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let right_after = disk.crash_image();
    assert!(svc.get_secret_value("lost", None, None).is_err());
    let db_syncs = disk.syncs(DB);
    svc.create_secret(text_secret("after", "v4"), &who)
        .await
        .unwrap();
    assert!(
        disk.syncs(DB) > db_syncs,
        "the commit after the failure synced the database"
    );
    for (image, kept) in [
        (right_after, vec![("before", "v1"), ("between", "v2")]),
        (
            disk.crash_image(),
            vec![("before", "v1"), ("between", "v2"), ("after", "v4")],
        ),
    ] {
        let recovered = open(&Disk::from_image(image), true, &key);
        for (name, value) in kept {
            assert_eq!(
                recovered
                    .get_secret_value(name, None, None)
                    .unwrap()
                    .secret_data,
                value
            );
        }
        assert!(recovered.get_secret_value("lost", None, None).is_err());
    }
}

/// A key version whose batch failed to commit is not kept, and the next rotation
/// writes other material under its number. A write job of the failed batch had
/// unwrapped (and cached) the lost version's material to seal a value: what is sealed
/// after the next rotation must be sealed with the material kept, not the cached one,
/// or it would open while the process lives and never after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn material_of_a_version_that_was_not_kept_seals_nothing() {
    let (disk, key, svc, who) = journaled_service();
    let k = svc.create_key(Default::default()).await.unwrap();
    let mut req = text_secret("sealed", "v1");
    req.encryption_key_id = Some(k.key_id.clone());
    svc.create_secret(req, &who).await.unwrap();
    // One batch that rotates the key and then seals a value under the new version,
    // and fails to commit: a slow job holds the writer while both queue behind it.
    let busy = crate::common::hold_writer(&svc, std::time::Duration::from_millis(500)).await;
    disk.journal_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let rotate = {
        let (svc, who, id) = (svc.clone(), who.clone(), k.key_id.clone());
        tokio::spawn(async move { svc.rotate_key(&id, &who).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let lost = {
        let (svc, who) = (svc.clone(), who.clone());
        tokio::spawn(async move {
            svc.put_secret_value("sealed", crate::common::put("lost"), &who)
                .await
        })
    };
    busy.await.unwrap().unwrap();
    assert!(rotate.await.unwrap().is_err(), "the batch failed");
    assert!(lost.await.unwrap().is_err(), "the batch failed");
    disk.journal_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let rotated = svc.rotate_key(&k.key_id, &who).await.unwrap();
    assert_eq!(rotated.primary_key_version, k.primary_key_version + 1);
    svc.put_secret_value("sealed", crate::common::put("v2"), &who)
        .await
        .unwrap();
    assert_eq!(
        svc.get_secret_value("sealed", None, None)
            .unwrap()
            .secret_data,
        "v2"
    );
    let recovered = open(&Disk::from_image(disk.crash_image()), true, &key);
    assert_eq!(
        recovered
            .get_secret_value("sealed", None, None)
            .unwrap()
            .secret_data,
        "v2",
        "the value opens after a restart"
    );
}

/// A checkpoint that fails (the database file cannot be synced) stops every later
/// write, while what was acknowledged stays readable; after a crash, replaying the
/// journal brings back every acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_stops_writes_and_loses_nothing() {
    let (disk, key, svc, who) = journaled_service();
    for i in 0..5 {
        svc.create_secret(text_secret(&format!("c/{i}"), "v"), &who)
            .await
            .unwrap();
    }
    disk.db_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(svc.store().checkpoint().await.is_err());
    let refused = svc.create_secret(text_secret("c/late", "v"), &who).await;
    assert!(refused.is_err(), "{refused:?}");
    for i in 0..5 {
        assert!(svc.get_secret_value(&format!("c/{i}"), None, None).is_ok());
    }
    disk.db_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Still refused: the server must restart (and replay).
    assert!(
        svc.create_secret(text_secret("c/later", "v"), &who)
            .await
            .is_err()
    );
    let recovered = open(&Disk::from_image(disk.crash_image()), true, &key);
    for i in 0..5 {
        assert_eq!(
            recovered
                .get_secret_value(&format!("c/{i}"), None, None)
                .unwrap()
                .secret_data,
            "v"
        );
    }
    assert!(recovered.get_secret_value("c/late", None, None).is_err());
}

/// A checkpoint in the background (a full memory layer, 1,024 commits) that fails stops
/// the next commit once it has ended, not only the commit that would start the next
/// checkpoint, 1,024 commits later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_checkpoint_stops_the_next_commit() {
    use strongbox_server::storage::{Mutation, Table};
    let disk = Disk::default();
    let b = backend(&disk, true);
    let put = |i: u32| {
        [Mutation::Put(
            Table::Secrets,
            i.to_be_bytes().to_vec(),
            vec![1],
        )]
    };
    b.commit(&put(0)).unwrap(); // the session's first commit, durable
    // Fill the memory layer; the commit after it freezes the layer and starts its
    // checkpoint on its own thread, which cannot sync the database.
    for i in 1..=1024 {
        b.commit(&put(i)).unwrap();
    }
    disk.db_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    b.commit(&put(1025)).unwrap();
    // Commits go on until the checkpoint thread has ended (30 s at most, a loaded
    // machine included); fewer than the 1,024 that would start the next checkpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut i = 1026;
    let refused = loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Err(e) = b.commit(&put(i)) {
            break e;
        }
        i += 1;
        assert!(
            std::time::Instant::now() < deadline && i < 2000,
            "commits after the failed checkpoint were still taken"
        );
    };
    assert!(refused.to_string().contains("storage stopped"), "{refused}");
    // And every later one, also once the disk works again.
    disk.db_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(b.commit(&put(2000)).is_err());
}

/// A durable redb commit that fails while the journal is in use (a batch too large for
/// the journal) stops every later write, rather than journal commits that no checkpoint
/// could write; closing the store refuses every write after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_durable_commit_stops_the_journal_and_a_closed_store_writes_nothing() {
    use strongbox_server::storage::{Mutation, Table};
    let disk = Disk::default();
    let b = backend(&disk, true);
    let small = |k: u8| [Mutation::Put(Table::Secrets, vec![k], vec![k])];
    b.commit(&small(1)).unwrap(); // the session's first commit, durable
    // Room in the file for the huge batch below, so that its commit does not grow the
    // file (a failed growth fails the batch cleanly, before anything is committed).
    let huge = |size: usize| [Mutation::Put(Table::Audit, vec![9], vec![0; size])];
    b.commit(&huge(10 << 20)).unwrap();
    b.commit(&[Mutation::Delete(Table::Audit, vec![9])])
        .unwrap();
    b.checkpoint().unwrap();
    b.commit(&small(2)).unwrap(); // the next session's first commit, durable
    // Nothing in the memory layer: the huge batch's own commit is what fails.
    disk.db_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(b.commit(&huge(5 << 20)).is_err());
    disk.db_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        b.commit(&small(3)).is_err(),
        "journaled after a failed commit"
    );

    let (disk, key, svc, who) = journaled_service();
    svc.create_secret(text_secret("kept", "v"), &who)
        .await
        .unwrap();
    svc.store().close().await.unwrap();
    let refused = svc.create_secret(text_secret("late", "v"), &who).await;
    assert!(refused.is_err(), "{refused:?}");
    // The clean close it recorded still holds: the database stands alone.
    let alone = RedbBackend::with_backend(Disk::from_image(disk.crash_image()).db());
    assert!(alone.is_ok(), "{:?}", alone.err());
    drop(alone);
    let recovered = open(&Disk::from_image(disk.crash_image()), true, &key);
    assert!(recovered.get_secret_value("kept", None, None).is_ok());
    assert!(recovered.get_secret_value("late", None, None).is_err());
}

/// A store refused at unseal after a crash, whose journal holds a commit the database
/// does not (here one that gives it a format this release does not know), is left
/// exactly as it was found: it is vetted as the open would leave it, in memory, before
/// the real open replays the journal into the database.
#[test]
fn a_store_refused_after_a_crash_is_left_as_it_was_found() {
    use strongbox_server::storage::{Mutation, Table, journal_path};
    let dir = tempfile::tempdir().unwrap();
    let (data, crashed) = (dir.path().join("data"), dir.path().join("crashed"));
    let key = RootKey::random();
    server::init(&data, Some(&dir.path().join("root-key")), &key).unwrap();
    let (db, image) = (server::db_path(&data), server::db_path(&crashed));
    let live = RedbBackend::open(&db).unwrap();
    // A session's first commit goes to the database; the next ones to the journal.
    live.commit(&[Mutation::Put(Table::Secrets, b"x".to_vec(), b"v".to_vec())])
        .unwrap();
    live.commit(&[Mutation::Put(
        Table::Meta,
        b"format_version".to_vec(),
        b"9".to_vec(),
    )])
    .unwrap();
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(&image, std::fs::read(&db).unwrap()).unwrap();
    std::fs::write(
        journal_path(&image),
        std::fs::read(journal_path(&db)).unwrap(),
    )
    .unwrap();
    drop(live);
    let files = || {
        (
            std::fs::read(&image).unwrap(),
            std::fs::read(journal_path(&image)).unwrap(),
        )
    };
    let found = files();
    for _ in 0..2 {
        let err = server::open(&crashed, &key, ServiceConfig::default())
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains("format \"9\""), "{err:#}");
        assert!(found == files(), "the refused store was written to");
    }
}
