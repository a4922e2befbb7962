//! Crash consistency with a storage backend that keeps only synced bytes: every write
//! the server acknowledged must be in the image a crash leaves behind.

use std::sync::{Arc, Mutex};

use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, Service, ServiceConfig};
use strongbox_server::storage::{Backend, RedbBackend};

use crate::common::{T0, text_secret};

#[derive(Debug, Default)]
struct Images {
    live: Vec<u8>,
    synced: Vec<u8>,
}

/// A redb storage backend whose "disk" is only what was there at the last sync.
#[derive(Debug, Default, Clone)]
struct SyncedOnly(Arc<Mutex<Images>>);

impl SyncedOnly {
    fn from_image(img: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(Images {
            live: img.clone(),
            synced: img,
        })))
    }
    /// What survives a power cut now.
    fn crash_image(&self) -> Vec<u8> {
        self.0.lock().unwrap().synced.clone()
    }
}

impl redb::StorageBackend for SyncedOnly {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let g = self.0.lock().unwrap();
        let o = offset as usize;
        g.live
            .get(o..o + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past end"))
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.lock().unwrap().live.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        let mut g = self.0.lock().unwrap();
        g.synced = g.live.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut g = self.0.lock().unwrap();
        let end = offset as usize + data.len();
        if g.live.len() < end {
            g.live.resize(end, 0);
        }
        g.live[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

fn open(disk: SyncedOnly, key: &RootKey) -> Service {
    let backend: Arc<dyn Backend> = Arc::new(RedbBackend::with_backend(disk).unwrap());
    server::unseal(
        backend,
        key,
        Arc::new(ManualClock::new(T0)),
        ServiceConfig::default(),
    )
    .unwrap()
    .service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_crash() {
    let key = RootKey::random();
    let disk = SyncedOnly::default();
    {
        let b = RedbBackend::with_backend(disk.clone()).unwrap();
        server::initialize(&b, &key).unwrap();
    }
    let svc = open(disk.clone(), &key);
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
    let mut checked = 0;
    for (before, image) in crashes {
        let recovered = open(SyncedOnly::from_image(image), &key);
        for (name, value) in &before {
            let v = recovered.get_secret_value(name, None, None).unwrap();
            assert_eq!(&v.secret_data, value);
            checked += 1;
        }
    }
    assert!(checked >= 200, "checked {checked}");
}
