//! Benchmarks of the policy host with the `basic` test guest
//! (`tests/policy-guests/`, built here for `wasm32-wasip2` first):
//!
//! - `rcpt_warm`: one `on-rcpt` call on an instance that already exists;
//! - `session_start`: a new session's first hook (instantiate + `init` +
//!   `on-connect`), with the pooling allocator and with on-demand
//!   allocation;
//! - `chain3_message`: a chain of three policies over one whole
//!   transaction (connect, helo, mail, two rcpt, data of 10 KB).
//! - `shipped_chain`: the chain of `bench/relay.sh` (the shipped `access`,
//!   `rate-limit` and `header-rules`, same config) over one whole
//!   one-message session of 1 KB, with a fresh instance of each policy per
//!   session (the default) and with `reuse_instances`. Needs the shipped
//!   policies built first (`cargo build --release -p sluice-policy-build`);
//!   skipped with a note otherwise.
//!
//! Run with `cargo bench -p sluice --bench policy` (well under two
//! minutes once built).

#[path = "../../tests/policy-guests/locate.rs"]
mod guests;

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::policy::{
    Capability, Chain, DataOutcome, Decision, Engine, EnvelopeInfo, PolicyConfig,
    PolicyEngineConfig,
};

/// Build the test guests; the path of `basic`.
fn basic_wasm() -> PathBuf {
    guests::guest_wasm("basic")
}

fn policy(name: &str, path: &Path, tag: &str) -> PolicyConfig {
    let mut config = toml::Table::new();
    config.insert("tag".into(), toml::Value::String(tag.into()));
    let mut p = common::policy(name, path, config);
    p.capabilities = vec![Capability::Kv, Capability::Metrics, Capability::Clock];
    p
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Ann <ann@example.test>\r\nTo: bob@example.test\r\n\
Subject: benchmark\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        .to_vec();
    while m.len() < size {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

struct Setup {
    rt: tokio::runtime::Runtime,
    pooled: Arc<Chain>,
    on_demand: Arc<Chain>,
    chain3: Arc<Chain>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let wasm = basic_wasm();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = PolicyEngineConfig {
        cache_dir: dir.path().to_path_buf(),
        // A small pool: enough here, and it lets the benches run under
        // valgrind (which cannot reserve the default pool's address space).
        max_instances: Some(64),
        ..PolicyEngineConfig::default()
    };
    let pooled_engine = Engine::new(&cfg).unwrap();
    let on_demand_engine = Engine::new(&PolicyEngineConfig {
        pooling: false,
        ..cfg.clone()
    })
    .unwrap();
    let (pooled, on_demand, chain3) = rt.block_on(async {
        let one = [policy("basic", &wasm, "basic")];
        let three = [
            policy("first", &wasm, "first"),
            policy("second", &wasm, "second"),
            policy("third", &wasm, "third"),
        ];
        (
            pooled_engine
                .load_chain(&one, common::services())
                .await
                .unwrap(),
            on_demand_engine
                .load_chain(&one, common::services())
                .await
                .unwrap(),
            pooled_engine
                .load_chain(&three, common::services())
                .await
                .unwrap(),
        )
    });
    Setup {
        rt,
        pooled,
        on_demand,
        chain3,
        _dir: dir,
    }
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let env = EnvelopeInfo {
        sender: "s@example.test".into(),
        sender_params: Vec::new(),
        recipients: vec!["a@example.test".into()],
    };

    c.bench_function("rcpt_warm", |b| {
        let mut session = s.pooled.session(common::info()).unwrap();
        s.rt.block_on(session.connect());
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let d = session.rcpt(&env, "x@example.test", &[]).await;
                    assert_eq!(black_box(d), Decision::Continue);
                }
                start.elapsed()
            })
        })
    });

    let mut g = c.benchmark_group("session_start");
    for (name, chain) in [("pooling", &s.pooled), ("on_demand", &s.on_demand)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                s.rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut session = chain.session(common::info()).unwrap();
                        assert_eq!(session.connect().await, Decision::Continue);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    let msg = message(10 * 1024);
    c.bench_function("chain3_message", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut session = s.chain3.session(common::info()).unwrap();
                    assert_eq!(session.connect().await, Decision::Continue);
                    assert_eq!(session.helo("client.test").await, Decision::Continue);
                    assert_eq!(
                        session.mail_from("s@example.test", &[]).await,
                        Decision::Continue
                    );
                    let mut e = EnvelopeInfo {
                        sender: "s@example.test".into(),
                        ..EnvelopeInfo::default()
                    };
                    for r in ["a@example.test", "b@example.test"] {
                        assert_eq!(session.rcpt(&e, r, &[]).await, Decision::Continue);
                        e.recipients.push(r.into());
                    }
                    let d = session.data(&e, &msg).await;
                    assert_eq!(d.outcome, DataOutcome::Continue);
                    black_box(d);
                }
                start.elapsed()
            })
        })
    });
}

/// The shipped policies' folder, when they have been built.
fn shipped_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/policies/wasm32-wasip2/release")
        .canonicalize()
        .ok()?;
    ["access", "rate_limit", "header_rules"]
        .iter()
        .all(|w| dir.join(format!("{w}.wasm")).is_file())
        .then_some(dir)
}

/// The chain of `bench/relay.sh`: limits never reached, rules that never
/// reject.
fn shipped_chain(dir: &Path, reuse: bool) -> Vec<PolicyConfig> {
    let table = |t: &str| -> toml::Table { toml::from_str(t).unwrap() };
    let mut access = policy("access", &dir.join("access.wasm"), "");
    // TEST-NET-3: not the client (192.0.2.7), so nothing is denied.
    access.config = table(r#"deny_networks = ["203.0.113.0/24"]"#);
    let mut rate = policy("rate-limit", &dir.join("rate_limit.wasm"), "");
    rate.config = table(
        "window = \"1h\"\nmessages_per_ip = 100000000\nrecipients_per_sender_domain = 100000000",
    );
    let mut rules = policy("header-rules", &dir.join("header_rules.wasm"), "");
    rules.config = table(
        r#"
[[rules]]
header = "Subject"
pattern = "(?i)xyzzy-never-matches"
action = "reject"
[[rules]]
header = "From"
pattern = "@"
action = "add_header"
add = "X-Relay-Bench: chain"
"#,
    );
    let mut chain = vec![access, rate, rules];
    for p in &mut chain {
        p.reuse_instances = reuse;
    }
    chain
}

fn shipped_benches(c: &mut Criterion) {
    let Some(dir) = shipped_dir() else {
        eprintln!(
            "shipped_chain: skipped, the shipped policies are not built \
             (cargo build --release -p sluice-policy-build)"
        );
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(&PolicyEngineConfig {
        cache_dir: cache.path().to_path_buf(),
        max_instances: Some(64),
        ..PolicyEngineConfig::default()
    })
    .unwrap();
    let msg = message(1024);
    let mut g = c.benchmark_group("shipped_chain");
    // Between two sessions a gateway runs sockets, the spool and other
    // sessions, which evict the chain's code and data from the caches; the
    // `_cold` cases do the same by writing a buffer larger than the
    // last-level cache between sessions (outside the timed part).
    let mut evict = vec![0u8; 64 << 20];
    for (name, reuse, cold) in [
        ("fresh", false, false),
        ("reuse", true, false),
        ("fresh_cold", false, true),
        ("reuse_cold", true, true),
    ] {
        let chain = rt
            .block_on(engine.load_chain(&shipped_chain(&dir, reuse), common::services()))
            .unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        if cold {
                            for line in evict.chunks_mut(64) {
                                line[0] = line[0].wrapping_add(i as u8);
                            }
                            black_box(&evict);
                        }
                        let start = Instant::now();
                        let mut session = chain.session(common::info()).unwrap();
                        assert_eq!(session.connect().await, Decision::Continue);
                        assert_eq!(session.helo("client.test").await, Decision::Continue);
                        let d = session.mail_from("s@example.test", &[]).await;
                        assert_eq!(d, Decision::Continue);
                        let mut e = EnvelopeInfo {
                            sender: "s@example.test".into(),
                            ..EnvelopeInfo::default()
                        };
                        let d = session.rcpt(&e, "b@relay.test", &[]).await;
                        assert_eq!(d, Decision::Continue);
                        e.recipients.push("b@relay.test".into());
                        let d = session.data(&e, &msg).await;
                        assert_eq!(d.outcome, DataOutcome::Continue);
                        assert_eq!(d.changes.len(), 1);
                        black_box(d);
                        drop(session);
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = policy_benches;
    config = config();
    targets = benches, shipped_benches
}
criterion_main!(policy_benches);
