//! Rotation benchmark: rotations/s with the `random` strategy, and the cost of a
//! scheduler tick over 100,000 secrets under policies as a function of how many are due.
//!
//! `cargo bench -p strongbox-server --bench rotation`
//!
//! In-process services over redb in a temp dir under the current directory (no HTTP:
//! this measures the engine and storage). Each rotation is four durable writes (create,
//! set, test, finish) plus its audit record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strongbox_schemas::{self as api, Interval, RotationStrategy};
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
use strongbox_server::server;
use strongbox_server::service::{Actor, Principal, Service, ServiceConfig};
use strongbox_server::storage::{Backend, Reader as _, RedbBackend, Table};

const T0: i64 = 1_767_225_600;
const SECRETS: usize = 100_000;
const FAST: usize = 1_000;
const RUN: Duration = Duration::from_secs(4);

fn policy(name: &str, interval: &str) -> api::CreateRotationPolicyRequest {
    api::CreateRotationPolicyRequest {
        name: name.into(),
        interval: Interval::parse(interval).expect("interval"),
        window: None,
        strategy: RotationStrategy::Random,
        settings: None,
        enabled: None,
    }
}

fn secret(name: String, policy: &str) -> api::CreateSecretRequest {
    api::CreateSecretRequest {
        name,
        secret_data: r#"{"AccountName":"app","AccountPassword":"initial"}"#.into(),
        rotation_policy: Some(policy.into()),
        ..Default::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn create_many(
    svc: &Service,
    range: std::ops::Range<usize>,
    policy_of: fn(usize) -> &'static str,
) {
    let who = Actor::Trusted(Principal::Named("root".into()));
    let mut set = tokio::task::JoinSet::new();
    for i in range {
        let (svc, who) = (svc.clone(), who.clone());
        set.spawn(async move {
            svc.create_secret(secret(format!("s/{i:06}"), policy_of(i)), &who)
                .await
                .expect("create");
        });
        if set.len() >= 2_048
            && let Some(r) = set.join_next().await
        {
            r.expect("task");
        }
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
}

async fn run() {
    let dir = tempfile::tempdir_in(".").expect("temp dir");
    let backend: Arc<dyn Backend> =
        Arc::new(RedbBackend::open(&dir.path().join("bench.redb")).expect("redb"));
    let key = RootKey::random();
    server::initialize(backend.as_ref(), &key).expect("init");
    let clock = ManualClock::new(T0);
    let svc = server::unseal(
        backend,
        &key,
        Arc::new(clock.clone()),
        ServiceConfig::default(),
    )
    .expect("unseal")
    .service;
    let root = Actor::Trusted(Principal::Named("root".into()));
    svc.create_rotation_policy(policy("fast", "6h"), &root)
        .await
        .expect("policy");
    svc.create_rotation_policy(policy("slow", "365d"), &root)
        .await
        .expect("policy");
    println!(
        "strongbox rotation benchmark: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Rotations/s: 32 callers rotating their own secrets with `random`.
    create_many(&svc, 0..32, |_| "slow").await;
    for callers in [1usize, 32] {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for t in 0..callers {
            let svc = svc.clone();
            set.spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    svc.rotate_secret(&format!("s/{t:06}"), Default::default())
                        .await
                        .expect("rotate");
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(r) = set.join_next().await {
            total += r.expect("task");
        }
        println!(
            "rotate now (random), {callers:>2} caller(s)  {:>8.0} rotations/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
    }

    // Scheduler: 100,000 secrets, 1,000 of them under a 6h policy.
    let t = Instant::now();
    create_many(&svc, 32..SECRETS, |i| {
        if i % (SECRETS / FAST) == 0 {
            "fast"
        } else {
            "slow"
        }
    })
    .await;
    println!(
        "created {} secrets under policies in {:.1}s",
        SECRETS,
        t.elapsed().as_secs_f64()
    );
    svc.tick().await.expect("tick");
    let t = Instant::now();
    let all = svc
        .store()
        .scan(Table::Secrets, b"", None, usize::MAX)
        .expect("scan");
    println!(
        "reference: one pass over all {} secret records   {:>9.2} ms",
        all.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(all);
    let mut idle = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = svc.tick().await.expect("tick");
        idle.push(t.elapsed());
        assert_eq!(r.rotated_secrets, 0);
    }
    idle.sort();
    println!(
        "tick, 0 due of {SECRETS}                      {:>9.3} ms (median of 50)",
        idle[25].as_secs_f64() * 1e3
    );
    // Jitter spreads the 1,000 due secrets over the 1h window: step through it.
    clock.advance(6 * 3600);
    for step in [36i64, 324, 3240] {
        clock.advance(step);
        let t = Instant::now();
        let r = svc.tick().await.expect("tick");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "tick, {:>4} due of {SECRETS}                   {:>9.2} ms  ({:.3} ms per due secret)",
            r.rotated_secrets,
            ms,
            ms / r.rotated_secrets.max(1) as f64
        );
    }
}
