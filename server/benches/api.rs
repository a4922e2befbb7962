//! API benchmark: one run, one server, real HTTPS on loopback.
//!
//! `cargo bench -p strongbox-server --bench api`
//!
//! Prints the cost of evaluating a 100-statement policy, secret reads/s and p99 (with
//! authentication, authorization and an audit record per read) next to `/v1/health`
//! (the floor: TLS + HTTP + routing, no token, not audited), reads by a principal with
//! 100 attached statements, and durable writes/s single and with 32 concurrent writers
//! next to this disk's fdatasync rate. Client and server share the machine, so compare
//! the ratios.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use strongbox_client::{Client, ClientConfig};
use strongbox_schemas as api;
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::SystemClock;
use strongbox_server::server::{self, ServeOptions};
use strongbox_server::service::{Identity, ServiceConfig};
use strongbox_server::storage::{Backend, RedbBackend};
use strongbox_server::tls;

/// The allocator of the `strongbox` binary, so that this measures what it serves with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUN: Duration = Duration::from_secs(4);
const READERS: usize = 32;

struct Stats {
    ops: f64,
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive<F, Fut>(tasks: usize, run: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < run {
                let s = Instant::now();
                op(t, i).await;
                lat.push(s.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("bench task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Stats {
        ops: all.len() as f64,
        ops_per_sec: all.len() as f64 / secs,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// CPU time (ns) of this process's threads, by thread name, from
/// `/proc/self/task/*/schedstat` (time on CPU, nanosecond resolution).
fn cpu_by_thread() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        out.push((comm.trim().to_string(), ns));
    }
    out
}

/// CPU time of the whole process and of the writer thread, in ns.
#[derive(Clone, Copy)]
struct Cpu {
    all: u64,
    writer: u64,
}

/// utime + stime of the whole process (threads that have exited included), in ns;
/// `/proc/self/stat` counts in clock ticks of 10 ms.
fn process_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10_000_000
}

fn cpu_now() -> Cpu {
    let t = cpu_by_thread();
    Cpu {
        all: process_cpu(),
        writer: t
            .iter()
            .filter(|(c, _)| c.starts_with("strongbox-writ"))
            .map(|(_, n)| n)
            .sum(),
    }
}

/// Prints CPU µs per operation (client and server together, and the writer thread).
fn cpu_line(since: Cpu, ops: f64) {
    let now = cpu_now();
    println!(
        "{:<34} {:>9.1} µs CPU per op (client + server), writer thread {:.1} µs",
        "",
        (now.all - since.all) as f64 / 1e3 / ops,
        (now.writer - since.writer) as f64 / 1e3 / ops
    );
}

/// The disk's fdatasync rate: 4 KiB rewritten in place, then `fdatasync`, in a loop. In
/// place, so that the sync writes no file-system metadata: appending would also allocate
/// a block and write the inode each time, a slower floor (printed too) than the commits
/// measured against it, which write into space written before (`storage::redb_backend`).
fn fdatasync_rate(dir: &std::path::Path, run: Duration, append: bool) -> f64 {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join("fsync-probe");
    let f = std::fs::File::create(&path).expect("probe file");
    let block = vec![7u8; 4096];
    f.write_all_at(&block, 0).expect("write");
    f.sync_data().expect("fdatasync");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        let at = if append { 4096 * (n + 1) } else { 0 };
        f.write_all_at(&block, at).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Syncs per second when each sync carries `pages` 4 KiB pages rewritten at scattered
/// places of a 64 MiB file written before (no allocation, no metadata): what a redb
/// commit, some ten pages across the file, asks of the disk. Each page is a block
/// request of its own, so this is slower than the one-page floor.
fn scattered_sync_rate(dir: &std::path::Path, run: Duration, pages: u64) -> f64 {
    use std::os::unix::fs::FileExt as _;
    const SIZE: u64 = 64 << 20;
    let path = dir.join("fsync-scatter-probe");
    let f = std::fs::File::create(&path).expect("probe file");
    let chunk = vec![0u8; 1 << 20];
    for at in (0..SIZE).step_by(chunk.len()) {
        f.write_all_at(&chunk, at).expect("write");
    }
    f.sync_all().expect("fsync");
    let block = vec![7u8; 4096];
    // A fixed pseudo-random walk over the file's pages (no two runs differ).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        for _ in 0..pages {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all_at(&block, (x % (SIZE / 4096)) * 4096)
                .expect("write");
        }
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    n as f64 / start.elapsed().as_secs_f64()
}

fn line(name: &str, s: &Stats, floor: Option<f64>) {
    let ratio = floor
        .map(|f| format!("  ({:.2}x of floor)", s.ops_per_sec / f))
        .unwrap_or_default();
    println!(
        "{name:<34} {:>9.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms{ratio}",
        s.ops_per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

/// A policy document of 100 statements, as a team-per-prefix setup would have: 97
/// allows on other teams' secrets, two denies, and the allow that matches last.
fn hundred_statements() -> serde_json::Value {
    let mut st = Vec::new();
    for i in 0..97 {
        st.push(serde_json::json!({"Effect": "Allow",
            "Action": ["kms:GetSecretValue", "kms:DescribeSecret", "kms:PutSecretValue"],
            "Resource": [format!("secret/team{i}/*"), format!("secret/shared/team{i}-*")]}));
    }
    st.push(
        serde_json::json!({"Effect": "Deny", "Action": "kms:*", "Resource": "secret/bench/root"}),
    );
    st.push(serde_json::json!({"Effect": "Deny", "Action": "kms:Delete*", "Resource": "*"}));
    st.push(serde_json::json!({"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/bench/*"}));
    serde_json::json!({"Version": "1", "Statement": st})
}

/// Nanoseconds per authorization decision over 100 statements (every statement is
/// looked at: denies must be ruled out before an allow counts).
fn policy_evaluation() {
    let doc: api::PolicyDocument = serde_json::from_value(hundred_statements()).expect("document");
    let id = Identity::with_statements("bench", doc.statements().to_vec());
    for (what, action, resource, expect) in [
        (
            "allowed (matches the 100th)",
            "kms:GetSecretValue",
            "secret/bench/s7",
            true,
        ),
        (
            "denied by default",
            "kms:GetSecretValue",
            "secret/elsewhere/x",
            false,
        ),
        (
            "explicit deny",
            "kms:GetSecretValue",
            "secret/bench/root",
            false,
        ),
    ] {
        let n = 200_000u32;
        let start = Instant::now();
        for _ in 0..n {
            assert_eq!(id.allows(std::hint::black_box(action), resource), expect);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!(
            "{:<34} {ns:>9.0} ns per decision, 100 statements",
            format!("policy: {what}")
        );
    }
}

fn main() {
    policy_evaluation();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir =
        tempfile::tempdir_in(std::env::var("STRONGBOX_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tempdir");
    let data = dir.path().join("data");
    let key = RootKey::random();
    let token = server::init(&data, Some(&dir.path().join("root-key")), &key).expect("init");
    let backend: Arc<dyn Backend> =
        Arc::new(RedbBackend::open(&server::db_path(&data)).expect("open"));
    let u = server::unseal(
        backend,
        &key,
        Arc::new(SystemClock),
        // The last rows prune the trail the others made.
        ServiceConfig {
            audit_min_retention_secs: 0,
            ..Default::default()
        },
    )
    .expect("unseal");
    let service = u.service.clone();
    let certs = tls::dev_certificates().expect("certs");
    let ca_pem = certs.ca_pem.clone();
    let running = server::start(
        u,
        ServeOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
                .expect("tls"),
            tick_interval: Duration::from_secs(3600),
            limits: Default::default(),
        },
    )
    .await
    .expect("start");
    let client = Client::new(ClientConfig {
        address: format!("https://127.0.0.1:{}", running.addr.port()),
        token: token.to_string(),
        ca_cert_pem: Some(certs.ca_pem.clone().into_bytes()),
        timeout: None,
    })
    .expect("client");

    println!(
        "strongbox API benchmark: {} cores, {READERS} concurrent clients, {}s per row",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        RUN.as_secs()
    );
    // A typical value (database credentials, 79 bytes) and a larger one.
    let creds =
        r#"{"AccountName":"app_user","AccountPassword":"Zq3#v9LmP2@wX8!rT5yKc1&nB7uE4hJ6"}"#;
    let big = "x".repeat(1024);
    for i in 0..READERS {
        for (prefix, value) in [("bench/s", creds), ("bench/big", big.as_str())] {
            client
                .create_secret(&api::CreateSecretRequest {
                    name: format!("{prefix}{i}"),
                    secret_data: value.to_string(),
                    ..Default::default()
                })
                .await
                .expect("create");
        }
    }

    let cpu = cpu_now();
    let c = client.clone();
    let health = drive(READERS, RUN, move |_, _| {
        let c = c.clone();
        async move {
            c.health().await.expect("health");
        }
    })
    .await;
    line("GET /v1/health (floor)", &health, None);
    cpu_line(cpu, health.ops);
    let cpu = cpu_now();
    let reads = read_row(&client, "bench/s").await;
    line(
        "GET /v1/secrets/{name}/value (79 B)",
        &reads,
        Some(health.ops_per_sec),
    );
    cpu_line(cpu, reads.ops);
    // The same reads by a principal whose one policy holds 100 statements.
    client
        .create_policy(&api::CreatePolicyRequest {
            name: "hundred".into(),
            description: None,
            document: serde_json::from_value(hundred_statements()).expect("document"),
        })
        .await
        .expect("policy");
    client
        .create_principal(&api::CreatePrincipalRequest {
            name: "bench".into(),
            description: None,
            policies: Some(vec!["hundred".into()]),
        })
        .await
        .expect("principal");
    let t = client
        .create_token("bench", &Default::default())
        .await
        .expect("token");
    let app = Client::new(ClientConfig {
        address: format!("https://127.0.0.1:{}", running.addr.port()),
        token: t.token.clone(),
        ca_cert_pem: Some(ca_pem.clone().into_bytes()),
        timeout: None,
    })
    .expect("client");
    let app_reads = read_row(&app, "bench/s").await;
    line(
        "  … as a 100-statement principal",
        &app_reads,
        Some(health.ops_per_sec),
    );
    let st = service.store().stats();
    let (commits, jobs) = (st.commits.load(Relaxed), st.jobs.load(Relaxed));
    println!(
        "audit records so far: {}; writer thread {jobs} jobs in {commits} commits ({:.1} jobs/commit)",
        service.audit_count().expect("count"),
        jobs as f64 / commits.max(1) as f64
    );
    let big_reads = read_row(&client, "bench/big").await;
    line(
        "GET /v1/secrets/{name}/value (1 KiB)",
        &big_reads,
        Some(health.ops_per_sec),
    );
    // Encryption with a CMK, the same 79 bytes: as a read, one snapshot, one key
    // version's material (cached), HKDF + AES-256-GCM and an audit record waited for.
    let key = client
        .create_key(&Default::default())
        .await
        .expect("key")
        .key_id;
    let (c, k) = (client.clone(), key.clone());
    let encrypts = drive(READERS, RUN, move |_, _| {
        let (c, k) = (c.clone(), k.clone());
        async move {
            c.encrypt(&k, creds.as_bytes(), &Default::default())
                .await
                .expect("encrypt");
        }
    })
    .await;
    line(
        "POST /v1/keys/{key_id}/encrypt (79 B)",
        &encrypts,
        Some(health.ops_per_sec),
    );
    let blob = client
        .encrypt(&key, creds.as_bytes(), &Default::default())
        .await
        .expect("encrypt")
        .ciphertext_blob;
    let (c, k) = (client.clone(), key.clone());
    let decrypts = drive(READERS, RUN, move |_, _| {
        let (c, k, blob) = (c.clone(), k.clone(), blob.clone());
        async move {
            c.decrypt_under(&k, &blob, &Default::default())
                .await
                .expect("decrypt");
        }
    })
    .await;
    line(
        "POST /v1/keys/{key_id}/decrypt (79 B)",
        &decrypts,
        Some(health.ops_per_sec),
    );
    // Each read waits for the commit of its audit record; with more clients in flight,
    // more records share each commit and the wait overlaps other requests' work.
    let c = client.clone();
    let health_many = drive(4 * READERS, RUN, move |_, _| {
        let c = c.clone();
        async move {
            c.health().await.expect("health");
        }
    })
    .await;
    line("GET /v1/health, 128 clients", &health_many, None);
    let (commits0, jobs0) = (st.commits.load(Relaxed), st.jobs.load(Relaxed));
    let c = client.clone();
    let many_reads = drive(4 * READERS, RUN, move |t, _| {
        let c = c.clone();
        async move {
            c.get_secret_value(&format!("bench/s{}", t % READERS), None, None)
                .await
                .expect("read");
        }
    })
    .await;
    line(
        "GET …/value (79 B), 128 clients",
        &many_reads,
        Some(health_many.ops_per_sec),
    );
    println!(
        "{:<34} {:>9.1} audit records per commit",
        "",
        (st.jobs.load(Relaxed) - jobs0) as f64
            / (st.commits.load(Relaxed) - commits0).max(1) as f64
    );

    let fsync = fdatasync_rate(dir.path(), Duration::from_secs(2), false);
    println!(
        "{:<34} {:>9.0} syncs/s (4 KiB rewritten in place + fdatasync, same disk)",
        "fdatasync floor", fsync
    );
    let appending = fdatasync_rate(dir.path(), Duration::from_secs(2), true);
    println!(
        "{:<34} {:>9.0} syncs/s (appending 4 KiB + fdatasync: allocates each time; not the floor)",
        "", appending
    );
    for pages in [3, 10] {
        let scattered = scattered_sync_rate(dir.path(), Duration::from_secs(2), pages);
        println!(
            "{:<34} {:>9.0} syncs/s ({pages} scattered 4 KiB pages + fdatasync: {:.3} ms each, what a redb commit asks of the disk)",
            "",
            scattered,
            1e3 / scattered
        );
    }
    let c = client.clone();
    let single = drive(1, RUN, move |_, i| {
        let c = c.clone();
        async move {
            c.put_secret_value(
                "bench/s0",
                &api::PutSecretValueRequest {
                    secret_data: format!("v{i}"),
                    ..Default::default()
                },
            )
            .await
            .expect("put");
        }
    })
    .await;
    line("durable writes, 1 writer", &single, None);
    println!("{:<34} {:>9.2}x fdatasync", "", single.ops_per_sec / fsync);
    let cpu = cpu_now();
    let (commits0, jobs0) = (st.commits.load(Relaxed), st.jobs.load(Relaxed));
    let c = client.clone();
    let many = drive(32, RUN, move |t, i| {
        let c = c.clone();
        async move {
            c.put_secret_value(
                &format!("bench/s{t}"),
                &api::PutSecretValueRequest {
                    secret_data: format!("v{i}"),
                    ..Default::default()
                },
            )
            .await
            .expect("put");
        }
    })
    .await;
    line("durable writes, 32 writers", &many, None);
    cpu_line(cpu, many.ops);
    println!(
        "{:<34} {:>9.2}x fdatasync (group commit), {:.1} writes per commit (one fdatasync each)",
        "",
        many.ops_per_sec / fsync,
        (st.jobs.load(Relaxed) - jobs0) as f64
            / (st.commits.load(Relaxed) - commits0).max(1) as f64
    );
    let (commits, jobs) = (st.commits.load(Relaxed), st.jobs.load(Relaxed));
    println!(
        "writer thread: {jobs} jobs in {commits} commits ({:.1} jobs/commit), {:.3} ms per commit, {:.3} ms running jobs per commit",
        jobs as f64 / commits.max(1) as f64,
        st.commit_nanos.load(Relaxed) as f64 / commits.max(1) as f64 / 1e6,
        st.job_nanos.load(Relaxed) as f64 / commits.max(1) as f64 / 1e6
    );
    prune_rows(&client, &service, health.ops_per_sec).await;
    let _ = running.stop.send(());
}

/// A row of reads, each of the [`READERS`] clients reading `PREFIX{its number}`.
async fn read_row(client: &Client, prefix: &'static str) -> Stats {
    let c = client.clone();
    drive(READERS, RUN, move |t, _| {
        let c = c.clone();
        async move {
            c.get_secret_value(&format!("{prefix}{t}"), None, None)
                .await
                .expect("read");
        }
    })
    .await
}

/// Pruning the trail the other rows made, in calls of up to 10,000 records (each one
/// job on the writer thread, after a check of the records in a snapshot), with reads
/// going on: what a prune costs, and what it costs the reads.
async fn prune_rows(client: &Client, service: &strongbox_server::service::Service, floor: f64) {
    use std::sync::atomic::AtomicBool;
    // Every record so far arrived more than a second ago.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = service.audit_count().expect("count");
    let stop = Arc::new(AtomicBool::new(false));
    let pruning = {
        let (c, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let req = api::PruneAuditRequest {
                older_than: api::Interval::parse("1s").expect("interval"),
            };
            let (mut calls, mut pruned, mut busy) = (0u64, 0u64, Duration::ZERO);
            while !stop.load(Relaxed) {
                let s = Instant::now();
                let r = c.prune_audit(&req).await.expect("prune");
                busy += s.elapsed();
                calls += 1;
                pruned += r.pruned;
                if !r.more {
                    break;
                }
            }
            (calls, pruned, busy)
        })
    };
    let reads = read_row(client, "bench/s").await;
    stop.store(true, Relaxed);
    let (calls, pruned, busy) = pruning.await.expect("prune task");
    line("GET …/value (79 B) while pruning", &reads, Some(floor));
    println!(
        "audit prune: {pruned} records (the trail held {before} at the start) in {calls} calls, {:.1} ms per call ({:.0} records/s)",
        busy.as_secs_f64() * 1e3 / calls.max(1) as f64,
        pruned as f64 / busy.as_secs_f64().max(1e-9)
    );
    let v = client.verify_audit().await.expect("verify");
    assert!(v.intact, "{v:?}");
}
