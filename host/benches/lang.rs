//! The same policy (`access`, with the same config) written in Rust,
//! Python and JavaScript, in the policy host: what one costs per session.
//!
//! - `load/LANG`: loading a component whose compiled code is cached
//!   (`Engine::load_chain`: cache read, link, `describe` + `init` in a
//!   throwaway instance), timed once, printed;
//! - `session_start/LANG`: a new session's first hook (instantiate +
//!   `init` with the config + `on-connect`), pooling allocator;
//! - `rcpt_warm/LANG`: one `on-rcpt` call on a live instance;
//! - `session/LANG`: a whole transaction's hooks (connect, helo, mail, three
//!   rcpt) on a fresh instance;
//! - `session_reused/LANG`: the same with `reuse_instances` (a warm,
//!   `init`ed instance left by the session before).
//!
//! The components come from `bench/lang.sh`, which builds them with
//! `sluice policy build` and names them in `SLUICE_BENCH_COMPONENTS`
//! (`lang=path,lang=path`). Run with `bash bench/lang.sh`.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::ByteSize;
use sluice::policy::{Chain, Decision, Engine, EnvelopeInfo, PolicyConfig, PolicyEngineConfig};

fn components() -> Vec<(String, PathBuf)> {
    let list = std::env::var("SLUICE_BENCH_COMPONENTS")
        .expect("SLUICE_BENCH_COMPONENTS is not set: run bash bench/lang.sh");
    list.split(',')
        .filter_map(|item| item.split_once('='))
        .map(|(lang, path)| (lang.to_string(), PathBuf::from(path)))
        .collect()
}

fn policy(path: &Path, reuse: bool) -> PolicyConfig {
    let config: toml::Table = toml::from_str(
        r#"deny_networks = ["203.0.113.0/24", "2001:db8:bad::/48"]
allow_networks = ["203.0.113.99"]
deny_helo = ["*.bad.example", "localhost"]
deny_senders = ["@spam.example", "*.bulk.example", "noreply@"]
deny_recipients = ["blocked@example.com", "@*.internal.example"]
allow_recipients = ["postmaster@"]"#,
    )
    .unwrap();
    let mut p = common::policy("access", path, config);
    p.max_memory = ByteSize(128 << 20);
    p.timeout = Duration::from_secs(1);
    p.reuse_instances = reuse;
    p
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = std::env::var_os("SLUICE_BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-bench-lang-cache"));
    let engine = Engine::new(&PolicyEngineConfig {
        cache_dir: cache,
        max_instances: Some(64),
        max_memory: ByteSize(128 << 20),
        ..PolicyEngineConfig::default()
    })
    .unwrap();
    let mut chains: Vec<(String, Arc<Chain>)> = Vec::new();
    let mut reused: Vec<(String, Arc<Chain>)> = Vec::new();
    for (lang, path) in components() {
        let r = [policy(&path, true)];
        reused.push((
            lang.clone(),
            rt.block_on(engine.load_chain(&r, common::services()))
                .unwrap(),
        ));
        let p = [policy(&path, false)];
        // The first load fills the cache (compiling); the second is timed.
        rt.block_on(engine.load_chain(&p, common::services()))
            .unwrap();
        let started = Instant::now();
        let chain = rt
            .block_on(engine.load_chain(&p, common::services()))
            .unwrap();
        println!(
            "load/{lang}: {:.2?} (compiled code from the cache)",
            started.elapsed()
        );
        chains.push((lang, chain));
    }
    let env = EnvelopeInfo {
        sender: "ann@sender.example".into(),
        sender_params: Vec::new(),
        recipients: vec!["a@example.com".into()],
    };

    let mut g = c.benchmark_group("session_start");
    for (lang, chain) in &chains {
        g.bench_function(lang.as_str(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
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

    let mut g = c.benchmark_group("rcpt_warm");
    for (lang, chain) in &chains {
        g.bench_function(lang.as_str(), |b| {
            let mut session = chain.session(common::info()).unwrap();
            rt.block_on(session.connect());
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let d = session.rcpt(&env, "x@eu.example", &[]).await;
                        assert_eq!(black_box(d), Decision::Continue);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    // The whole session with a fresh instance (the default), then with
    // reuse_instances (a warm, init'ed instance from the session before).
    for (group, list) in [("session", &chains), ("session_reused", &reused)] {
        let mut g = c.benchmark_group(group);
        for (lang, chain) in list {
            g.bench_function(lang.as_str(), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut session = chain.session(common::info()).unwrap();
                            assert_eq!(session.connect().await, Decision::Continue);
                            assert_eq!(session.helo("client.example").await, Decision::Continue);
                            let d = session.mail_from("ann@sender.example", &[]).await;
                            assert_eq!(d, Decision::Continue);
                            for r in ["a@example.com", "b@example.com", "c@example.com"] {
                                assert_eq!(session.rcpt(&env, r, &[]).await, Decision::Continue);
                            }
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = lang_benches;
    config = config();
    targets = benches
}
criterion_main!(lang_benches);
