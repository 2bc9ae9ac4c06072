//! Policy host tests with real guest components (`tests/policy-guests/`,
//! built once per test process for `wasm32-wasip2`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use crate::config::ByteSize;
use crate::dns::{DnsError, DnsFuture, Mx, Resolver};
use crate::smtp::Enhanced;

fn wasm(name: &str) -> PathBuf {
    guests::guest_wasm(name)
}

/// A cache folder shared by the tests of this process, so each guest is
/// compiled once (the cache tests use their own folders).
fn shared_cache() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .to_path_buf()
}

fn engine_cfg(cache: &Path) -> PolicyEngineConfig {
    PolicyEngineConfig {
        cache_dir: cache.to_path_buf(),
        max_instances: Some(64),
        max_memory: ByteSize(512 << 20),
        ..PolicyEngineConfig::default()
    }
}

fn engine() -> Engine {
    Engine::new(&engine_cfg(&shared_cache())).expect("engine")
}

/// Answers: `host.dns.test` → 192.0.2.1 and 2001:db8::1; `mx.dns.test` →
/// MX 10 mx1.dns.test and the null MX; `slow.dns.test` waits 30 s;
/// `fail.dns.test` → SERVFAIL; anything else NXDOMAIN.
#[derive(Debug)]
struct FakeResolver;

impl Resolver for FakeResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>> {
        Box::pin(async move {
            match domain {
                "mx.dns.test" => Ok(vec![
                    Mx {
                        preference: 10,
                        exchange: "mx1.dns.test".into(),
                    },
                    Mx {
                        preference: 0,
                        exchange: String::new(),
                    },
                ]),
                _ => Err(DnsError::NxDomain),
            }
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move {
            match host {
                "host.dns.test" => Ok(vec![
                    "192.0.2.1".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                ]),
                "slow.dns.test" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(vec![])
                }
                "fail.dns.test" => Err(DnsError::Temporary("SERVFAIL".into())),
                _ => Err(DnsError::NxDomain),
            }
        })
    }

    fn txt<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async { Err(DnsError::NoRecords) })
    }

    fn ptr<'a>(&'a self, _ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async { Ok(vec!["ptr.dns.test".into()]) })
    }
}

fn services() -> Services {
    Services {
        resolver: Arc::new(FakeResolver),
        kv: Arc::new(KvStore::default()),
    }
}

fn policy(name: &str, guest: &str, config: serde_json::Value) -> PolicyConfig {
    let config = match config {
        serde_json::Value::Object(_) => toml::from_str(&toml::to_string(&config).unwrap()).unwrap(),
        _ => toml::Table::new(),
    };
    PolicyConfig {
        name: name.into(),
        path: wasm(guest),
        capabilities: vec![
            Capability::Clock,
            Capability::Metrics,
            Capability::Kv,
            Capability::Dns,
        ],
        on_error: OnError::Tempfail,
        max_memory: ByteSize(64 << 20),
        timeout: Duration::from_millis(100),
        reuse_instances: false,
        candidate: None,
        candidate_mode: Default::default(),
        canary_percent: 10,
        tests: None,
        kv_max_entries: 100_000,
        kv_max_memory: ByteSize(32 << 20),
        config,
    }
}

fn info() -> SessionInfo {
    SessionInfo {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        client_port: 40000,
        listener: "127.0.0.1:2525".parse().unwrap(),
        tls: None,
        relay_client: false,
        helo: None,
    }
}

fn env(rcpts: &[&str]) -> EnvelopeInfo {
    EnvelopeInfo {
        sender: "s@example.test".into(),
        sender_params: vec![("SIZE".into(), "100".into())],
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
    }
}

const MESSAGE: &[u8] = b"From: Ann <ann@example.test>\r\n\
To: bob@example.test\r\n\
Subject: hello\r\n\
X-Remove-Me: yes\r\n\
\r\n\
Body text here.\r\n";

fn message(subject: &str) -> Vec<u8> {
    String::from_utf8_lossy(MESSAGE)
        .replace("Subject: hello", &format!("Subject: {subject}"))
        .into_bytes()
}

fn header<'a>(d: &'a DataDecision, name: &str) -> Vec<&'a str> {
    d.changes
        .iter()
        .filter_map(|c| match c {
            Change::AddHeader { name: n, value } if n == name => Some(value.as_str()),
            _ => None,
        })
        .collect()
}

fn reply_of(d: &Decision) -> (u16, Option<Enhanced>, String) {
    match d {
        Decision::Reject(r) | Decision::Tempfail(r) => (r.code, r.enhanced, r.lines[0].clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn load(policies: &[PolicyConfig]) -> Arc<Chain> {
    engine()
        .load_chain(policies, services())
        .await
        .expect("chain loads")
}

#[tokio::test]
async fn basic_verdicts_at_every_stage() {
    let chain = load(&[policy("basic", "basic", serde_json::json!({}))]).await;
    assert!(chain.handles(Stage::Data) && chain.handles(Stage::Route));
    let mut s = chain.session(info()).unwrap();
    assert_eq!(s.connect().await, Decision::Continue);
    let d = s.helo("reject.helo.test").await;
    assert_eq!(reply_of(&d).0, 550);
    assert_eq!(s.helo("client.example.test").await, Decision::Continue);
    let d = s.mail_from("reject@example.test", &[]).await;
    assert_eq!(
        reply_of(&d),
        (
            550,
            Some(Enhanced(5, 7, 1)),
            "sender refused by basic".into()
        )
    );
    let d = s
        .mail_from("a@example.test", &[("X-REJECT".into(), String::new())])
        .await;
    assert!(matches!(d, Decision::Reject(_)));
    assert_eq!(s.mail_from("s@example.test", &[]).await, Decision::Continue);

    let e = env(&[]);
    let d = s.rcpt(&e, "blocked@example.test", &[]).await;
    assert_eq!(
        reply_of(&d),
        (
            550,
            Some(Enhanced(5, 7, 1)),
            "blocked@example.test is blocked".into()
        )
    );
    let d = s.rcpt(&e, "temp@example.test", &[]).await;
    assert!(matches!(d, Decision::Tempfail(_)));
    assert_eq!(reply_of(&d).0, 451);
    // A reject with a 4xx code and no enhanced code is corrected.
    let d = s.rcpt(&e, "wrongclass@example.test", &[]).await;
    assert!(matches!(d, Decision::Reject(_)));
    assert_eq!(
        reply_of(&d),
        (550, Some(Enhanced(5, 7, 1)), "wrong class".into())
    );
    assert_eq!(
        s.rcpt(&e, "accept@example.test", &[]).await,
        Decision::Accept
    );
    // discard/quarantine outside data: 550 5.7.1 / 451 4.7.1.
    let d = s.rcpt(&e, "discard@example.test", &[]).await;
    assert!(matches!(d, Decision::Reject(_)));
    assert_eq!(reply_of(&d).1, Some(Enhanced(5, 7, 1)));
    let d = s.rcpt(&e, "quarantine@example.test", &[]).await;
    assert!(matches!(d, Decision::Tempfail(_)));
    assert_eq!(reply_of(&d).1, Some(Enhanced(4, 7, 1)));
    assert_eq!(s.rcpt(&e, "a@example.test", &[]).await, Decision::Continue);

    // The session and envelope reach the guest.
    s.set_tls(Some(("TLSv1_3".into(), "TLS13_AES_256_GCM_SHA384".into())));
    let d = s
        .rcpt(
            &env(&["a@example.test", "b@example.test"]),
            "whoami@x.test",
            &[],
        )
        .await;
    assert_eq!(
        reply_of(&d).2,
        "basic ip=192.0.2.7 helo=Some(\"client.example.test\") tls=Some(\"TLSv1_3\") \
         relay=false sender=s@example.test rcpts=a@example.test,b@example.test"
    );

    // Data: headers from every capability and from the message resource.
    let e = env(&["bob@example.test"]);
    let d = s.data(&e, MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Continue);
    assert_eq!(header(&d, "X-Policy"), ["basic"]);
    assert_eq!(header(&d, "X-Kv"), ["ok:1"]);
    assert_eq!(header(&d, "X-Dns"), ["ok:[\"192.0.2.1\"]"]);
    assert_eq!(header(&d, "X-Clock"), ["ok:true"]);
    assert_eq!(header(&d, "X-Metrics"), ["ok:()"]);
    assert_eq!(header(&d, "X-Subject"), ["hello"]);
    assert_eq!(header(&d, "X-From"), ["ann@example.test"]);
    assert_eq!(header(&d, "X-To"), ["bob@example.test"]);
    assert_eq!(header(&d, "X-Parts"), ["text/plain::false"]);
    assert_eq!(header(&d, "X-Text"), ["Body text here."]);
    assert_eq!(header(&d, "X-Raw"), ["From"]);
    assert_eq!(header(&d, "X-Header-Count"), ["4"]);
    assert_eq!(header(&d, "X-Size"), [MESSAGE.len().to_string().as_str()]);
    assert_eq!(header(&d, "X-Rcpts"), ["bob@example.test"]);
    // The second message of the session: the kv counter goes on.
    let d = s.data(&e, &message("add-rcpt please")).await;
    assert_eq!(d.outcome, DataOutcome::Continue);
    assert_eq!(header(&d, "X-Kv"), ["ok:2"]);
    assert!(
        d.changes
            .contains(&Change::AddRecipient("added@example.test".into()))
    );
    assert!(
        d.changes
            .contains(&Change::RemoveRecipient("removed@example.test".into()))
    );
    assert!(
        d.changes
            .contains(&Change::RemoveHeader("X-Remove-Me".into()))
    );
    let d = s.data(&e, &message("discard this")).await;
    assert_eq!(d.outcome, DataOutcome::Discard);
    assert!(
        d.changes.is_empty(),
        "no changes when the message is dropped"
    );
    let d = s.data(&e, &message("quarantine this")).await;
    assert_eq!(d.outcome, DataOutcome::Quarantine("subject says so".into()));
    assert_eq!(header(&d, "X-Policy"), ["basic"]);

    // Route.
    let e = env(&["x@a.relay.test"]);
    assert_eq!(
        chain.route(&e, "x@a.relay.test").await,
        RouteDecision::Route(Route::Relay {
            host: "relay.example".into(),
            port: 2525,
            tls: crate::route::TlsMode::None
        })
    );
    assert_eq!(
        chain.route(&e, "x@local.test").await,
        RouteDecision::Route(Route::Local)
    );
    assert_eq!(
        chain.route(&e, "x@mx.test").await,
        RouteDecision::Route(Route::Mx {
            domain: "mx.test".into()
        })
    );
    assert_eq!(
        chain.route(&e, "x@bounce.test").await,
        RouteDecision::Route(Route::Reject {
            status: Enhanced(5, 1, 1),
            text: "no such user here".into()
        })
    );
    assert_eq!(
        chain.route(&e, "x@other.test").await,
        RouteDecision::Default
    );

    drop(s);
    let st = &chain.stats()[0];
    assert_eq!(st.name, "basic");
    assert_eq!(st.version, "1.2.3");
    assert_eq!(st.wasm_hash.len(), 64);
    assert_eq!(st.stages, Stage::ALL);
    assert_eq!(st.errors, 0);
    assert_eq!(st.calls, 23);
    assert_eq!(st.verdicts.rejected, 7);
    assert_eq!(st.verdicts.routed, 3);
    assert_eq!(st.verdicts.discarded, 2);
    assert_eq!(st.verdicts.quarantined, 2);
    // The load, one session instance, one per route call.
    assert_eq!(st.instantiations, 2 + 5);
    assert_eq!(st.counters, [("basic_messages".to_string(), 4)]);
    assert!(st.mean_call_time > Duration::ZERO);
}

#[tokio::test]
async fn capabilities_not_granted_answer_access_denied() {
    let mut p = policy("nocaps", "basic", serde_json::json!({}));
    p.capabilities = vec![Capability::Log];
    let chain = load(&[p]).await;
    let mut s = chain.session(info()).unwrap();
    let d = s.data(&env(&["bob@example.test"]), MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Continue);
    for h in ["X-Kv", "X-Dns", "X-Clock", "X-Metrics"] {
        assert_eq!(header(&d, h), ["denied"], "{h}");
    }
    assert!(chain.stats()[0].counters.is_empty());
}

#[tokio::test]
async fn chain_order_accept_and_continue() {
    let a = |cfg| policy("first", "basic", cfg);
    let b = |cfg| policy("second", "basic", cfg);
    let e = env(&[]);

    // first continues, second rejects.
    let chain = load(&[
        a(serde_json::json!({"tag": "first"})),
        b(serde_json::json!({"tag": "second", "rcpt": "reject"})),
    ])
    .await;
    let mut s = chain.session(info()).unwrap();
    let d = s.rcpt(&e, "x@example.test", &[]).await;
    assert_eq!(reply_of(&d).2, "second rejects rcpt");
    // Data: second rejects, the changes of first are dropped with it.
    let chain2 = load(&[
        a(serde_json::json!({"tag": "first"})),
        b(serde_json::json!({"tag": "second", "data": "reject"})),
    ])
    .await;
    let d = chain2.session(info()).unwrap().data(&e, MESSAGE).await;
    assert!(matches!(d.outcome, DataOutcome::Reject(_)));
    assert!(d.changes.is_empty());

    // first accepts: second is never asked.
    let chain = load(&[
        a(serde_json::json!({"tag": "first", "rcpt": "accept", "data": "accept"})),
        b(serde_json::json!({"tag": "second", "rcpt": "reject", "data": "reject"})),
    ])
    .await;
    let mut s = chain.session(info()).unwrap();
    assert_eq!(s.rcpt(&e, "x@example.test", &[]).await, Decision::Accept);
    let d = s.data(&e, MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Accept);
    assert_eq!(header(&d, "X-Policy"), ["first"]);
    let stats = chain.stats();
    assert_eq!(stats[0].calls, 2);
    assert_eq!(stats[1].calls, 0);
    assert_eq!(stats[1].instantiations, 1, "only the one made at load");

    // Both continue: changes of both, in chain order; then the second
    // accepts with its own changes included.
    let chain = load(&[
        a(serde_json::json!({"tag": "first"})),
        b(serde_json::json!({"tag": "second", "data": "accept"})),
    ])
    .await;
    let d = chain.session(info()).unwrap().data(&e, MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Accept);
    assert_eq!(header(&d, "X-Policy"), ["first", "second"]);
    // kv keys are per policy: each counted its own first message.
    assert_eq!(header(&d, "X-Kv"), ["ok:1", "ok:1"]);

    // A 4xx reject at connect becomes 550 5.7.1.
    let chain = load(&[a(serde_json::json!({"connect": "reject4xx"}))]).await;
    let d = chain.session(info()).unwrap().connect().await;
    assert_eq!(
        reply_of(&d),
        (
            550,
            Some(Enhanced(5, 7, 1)),
            "basic rejects with 4xx".into()
        )
    );
}

#[tokio::test]
async fn a_session_keeps_the_chain_it_started_with() {
    let e = env(&[]);
    let old = load(&[policy("p", "basic", serde_json::json!({"rcpt": "reject"}))]).await;
    let mut s = old.session(info()).unwrap();
    let new = load(&[policy("p", "basic", serde_json::json!({"rcpt": "accept"}))]).await;
    drop(old);
    assert!(matches!(
        s.rcpt(&e, "x@example.test", &[]).await,
        Decision::Reject(_)
    ));
    assert_eq!(
        new.session(info())
            .unwrap()
            .rcpt(&e, "x@example.test", &[])
            .await,
        Decision::Accept
    );
}

#[tokio::test]
async fn empty_chain_continues_everywhere() {
    let chain = load(&[]).await;
    assert!(chain.is_empty());
    let mut s = chain.session(info()).unwrap();
    assert_eq!(s.connect().await, Decision::Continue);
    assert_eq!(s.helo("x").await, Decision::Continue);
    assert_eq!(s.mail_from("", &[]).await, Decision::Continue);
    assert_eq!(s.rcpt(&env(&[]), "a@b.test", &[]).await, Decision::Continue);
    let d = s.data(&env(&[]), MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Continue);
    assert_eq!(
        chain.route(&env(&[]), "a@b.test").await,
        RouteDecision::Default
    );
}

#[tokio::test]
async fn load_errors_name_the_policy_and_cause() {
    let e = engine();
    let err = e
        .load_chain(
            &[policy("p", "basic", serde_json::json!({"fail": true}))],
            services(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PolicyError::Init { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "policy \"p\": init refused the config: init refused: the config asks to fail"
    );

    let err = e
        .load_chain(
            &[policy(
                "f",
                "faulty",
                serde_json::json!({"mode": "init-trap"}),
            )],
            services(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::Load {
                call: "init",
                cause: CallError::Trap(_),
                ..
            }
        ),
        "{err}"
    );

    let started = Instant::now();
    let err = e
        .load_chain(
            &[policy(
                "f",
                "faulty",
                serde_json::json!({"mode": "init-loop"}),
            )],
            services(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::Load {
                call: "init",
                cause: CallError::Deadline(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut p = policy("missing", "basic", serde_json::json!({}));
    p.path = PathBuf::from("/nonexistent/policy.wasm");
    let err = e.load_chain(&[p], services()).await.unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("policy \"missing\": cannot read")
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let mut p = policy("junk", "basic", serde_json::json!({}));
    p.path = junk;
    let err = e.load_chain(&[p], services()).await.unwrap_err();
    assert!(matches!(err, PolicyError::Compile { .. }), "{err}");
}

#[tokio::test]
async fn another_major_contract_version_is_refused_clearly() {
    let err = engine()
        .load_chain(
            &[policy("old", "other-major", serde_json::json!({}))],
            services(),
        )
        .await
        .unwrap_err();
    match &err {
        PolicyError::IncompatibleContract {
            policy,
            found,
            expected,
        } => {
            assert_eq!(policy, "old");
            assert_eq!(found, "sluice:policy@1.0.0");
            assert_eq!(expected, "sluice:policy@0.1.x");
        }
        other => panic!("expected IncompatibleContract, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("sluice:policy@1.0.0") && text.contains("sluice:policy@0.1.0"),
        "{text}"
    );
    // precompile says the same.
    let err = engine().precompile(&wasm("other-major")).unwrap_err();
    assert!(matches!(err, PolicyError::IncompatibleContract { .. }));
}

#[tokio::test]
async fn a_trap_follows_on_error_and_the_next_call_gets_a_fresh_instance() {
    let e = env(&[]);
    let chain = load(&[policy("f", "faulty", serde_json::json!({}))]).await;
    let mut s = chain.session(info()).unwrap();
    assert_eq!(s.rcpt(&e, "ok@x.test", &[]).await, Decision::Continue);
    let d = s.rcpt(&e, "trap@x.test", &[]).await;
    assert_eq!(
        d,
        Decision::Tempfail(Reply::new(
            451,
            Enhanced(4, 3, 0),
            "policy error, try again later"
        ))
    );
    assert_eq!(s.rcpt(&e, "ok@x.test", &[]).await, Decision::Continue);
    assert!(matches!(
        s.rcpt(&e, "panic@x.test", &[]).await,
        Decision::Tempfail(_)
    ));
    assert_eq!(s.rcpt(&e, "ok@x.test", &[]).await, Decision::Continue);
    // Another session is unaffected.
    assert_eq!(
        chain
            .session(info())
            .unwrap()
            .rcpt(&e, "ok@x.test", &[])
            .await,
        Decision::Continue
    );
    let st = &chain.stats()[0];
    assert_eq!((st.errors, st.traps, st.timeouts), (2, 2, 0));
    // load + first + after each trap + the other session.
    assert_eq!(st.instantiations, 5);

    // on_error = continue: the next policy decides.
    let mut f = policy("f", "faulty", serde_json::json!({"mode": "trap"}));
    f.on_error = OnError::Continue;
    let chain = load(&[f.clone(), policy("b", "basic", serde_json::json!({}))]).await;
    let d = chain
        .session(info())
        .unwrap()
        .rcpt(&e, "blocked@x.test", &[])
        .await;
    assert_eq!(reply_of(&d).2, "blocked@x.test is blocked");
    let d = chain.session(info()).unwrap().data(&e, MESSAGE).await;
    assert_eq!(d.outcome, DataOutcome::Continue);
    assert_eq!(header(&d, "X-Policy"), ["basic"]);
    assert_eq!(
        chain.session(info()).unwrap().connect().await,
        Decision::Continue
    );

    // on_error = reject.
    f.on_error = OnError::Reject;
    let chain = load(&[f.clone()]).await;
    let d = chain
        .session(info())
        .unwrap()
        .rcpt(&e, "x@x.test", &[])
        .await;
    assert_eq!(
        d,
        Decision::Reject(Reply::new(550, Enhanced(5, 7, 1), "policy error"))
    );
    let d = chain.session(info()).unwrap().data(&e, MESSAGE).await;
    assert!(matches!(d.outcome, DataOutcome::Reject(_)));

    // Route: tempfail defers, continue falls to the default, reject fails.
    assert!(matches!(
        chain.route(&e, "x@x.test").await,
        RouteDecision::Route(Route::Reject { .. })
    ));
    f.on_error = OnError::Continue;
    let chain = load(&[f.clone()]).await;
    assert_eq!(chain.route(&e, "x@x.test").await, RouteDecision::Default);
    f.on_error = OnError::Tempfail;
    let chain = load(&[f]).await;
    assert!(matches!(
        chain.route(&e, "x@x.test").await,
        RouteDecision::Defer(_)
    ));
}

#[tokio::test]
async fn fresh_instances_start_from_the_init_snapshot() {
    let e = env(&[]);
    let calls = |d: Decision| reply_of(&d).2;
    let tagged = || policy("b", "basic", serde_json::json!({"tag": "snapped"}));
    // Default: the snapshot is taken at load. Sessions run no init, yet
    // the guest has its config (read by init, kept in its memory), and
    // each session's instance starts over from the snapshot.
    let chain = load(&[tagged()]).await;
    assert!(chain.policies[0].preinit);
    for _ in 0..3 {
        let mut s = chain.session(info()).unwrap();
        assert_eq!(calls(s.rcpt(&e, "calls@x.test", &[]).await), "calls 1");
        assert_eq!(calls(s.rcpt(&e, "calls@x.test", &[]).await), "calls 2");
        let d = s.data(&e, MESSAGE).await;
        assert_eq!(header(&d, "X-Policy"), ["snapped"]);
    }
    assert_eq!(chain.stats()[0].errors, 0);

    // Off, or with reused instances: init runs in each new instance.
    let cfg = PolicyEngineConfig {
        init_snapshots: false,
        ..engine_cfg(&shared_cache())
    };
    let off = Engine::new(&cfg)
        .unwrap()
        .load_chain(&[tagged()], services())
        .await
        .unwrap();
    let mut reused = tagged();
    reused.reuse_instances = true;
    let reused = load(&[reused]).await;
    for chain in [off, reused] {
        assert!(!chain.policies[0].preinit);
        let d = chain.session(info()).unwrap().data(&e, MESSAGE).await;
        assert_eq!(header(&d, "X-Policy"), ["snapped"]);
    }
}

#[tokio::test]
async fn reused_instances_are_warm_and_failed_ones_are_not_reused() {
    let e = env(&[]);
    let calls = |d: Decision| reply_of(&d).2;
    // Default: a fresh instance per session; the guest's memory starts over.
    let chain = load(&[policy("b", "basic", serde_json::json!({}))]).await;
    for _ in 0..3 {
        let mut s = chain.session(info()).unwrap();
        assert_eq!(calls(s.rcpt(&e, "calls@x.test", &[]).await), "calls 1");
        assert_eq!(calls(s.rcpt(&e, "calls@x.test", &[]).await), "calls 2");
    }
    assert_eq!(chain.stats()[0].reused, 0);

    // reuse_instances: the next session gets the same warm instance.
    let mut p = policy("b", "basic", serde_json::json!({}));
    p.reuse_instances = true;
    let chain = load(&[p.clone()]).await;
    for n in 1..=3 {
        let mut s = chain.session(info()).unwrap();
        assert_eq!(
            calls(s.rcpt(&e, "calls@x.test", &[]).await),
            format!("calls {n}")
        );
    }
    // Two sessions at once: the second needs an instance of its own.
    let mut a = chain.session(info()).unwrap();
    let mut b = chain.session(info()).unwrap();
    assert_eq!(calls(a.rcpt(&e, "calls@x.test", &[]).await), "calls 4");
    assert_eq!(calls(b.rcpt(&e, "calls@x.test", &[]).await), "calls 1");
    drop((a, b));
    let st = &chain.stats()[0];
    // load + the first session + the concurrent one.
    assert_eq!((st.instantiations, st.reused), (3, 3));
    // Route calls take warm instances too.
    assert_eq!(
        chain.route(&e, "x@local.test").await,
        RouteDecision::Route(Route::Local)
    );
    assert_eq!(chain.stats()[0].reused, 4);

    // An instance whose call failed is dropped, never handed on.
    let mut f = policy("f", "faulty", serde_json::json!({}));
    f.reuse_instances = true;
    let chain = load(&[f]).await;
    let mut s = chain.session(info()).unwrap();
    assert_eq!(s.rcpt(&e, "ok@x.test", &[]).await, Decision::Continue);
    assert!(matches!(
        s.rcpt(&e, "trap@x.test", &[]).await,
        Decision::Tempfail(_)
    ));
    drop(s);
    assert_eq!(
        chain
            .session(info())
            .unwrap()
            .rcpt(&e, "ok@x.test", &[])
            .await,
        Decision::Continue
    );
    let st = &chain.stats()[0];
    // load + first + a fresh one for the next session: none was warm.
    assert_eq!((st.instantiations, st.reused), (3, 0));
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_loop_is_stopped_without_blocking_the_runtime() {
    let mut p = policy("f", "faulty", serde_json::json!({}));
    p.timeout = Duration::from_millis(50);
    let chain = load(&[p]).await;
    let mut s = chain.session(info()).unwrap();
    // A task on the same (single) thread keeps running meanwhile.
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let d = s.rcpt(&env(&[]), "loop@x.test", &[]).await;
    let took = started.elapsed();
    ticker.abort();
    assert!(matches!(d, Decision::Tempfail(_)), "{d:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(took >= Duration::from_millis(40), "took {took:?}");
    assert!(
        ticks.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "the runtime was blocked"
    );
    assert_eq!(
        s.rcpt(&env(&[]), "ok@x.test", &[]).await,
        Decision::Continue
    );
    let st = &chain.stats()[0];
    assert_eq!((st.errors, st.timeouts), (1, 1));
}

#[tokio::test]
async fn a_big_allocation_is_refused_at_the_memory_cap() {
    let mut p = policy("f", "faulty", serde_json::json!({}));
    p.max_memory = ByteSize(16 << 20);
    let chain = load(&[p]).await;
    let mut s = chain.session(info()).unwrap();
    let d = s.rcpt(&env(&[]), "alloc@x.test", &[]).await;
    assert!(matches!(d, Decision::Tempfail(_)), "{d:?}");
    assert_eq!(
        s.rcpt(&env(&[]), "ok@x.test", &[]).await,
        Decision::Continue
    );
    let st = &chain.stats()[0];
    assert_eq!((st.errors, st.memory_limits), (1, 1));
}

#[tokio::test]
async fn a_giant_returned_string_is_contained() {
    // Under the default cap the guest cannot even build it.
    let chain = load(&[policy("f", "faulty", serde_json::json!({}))]).await;
    let d = chain
        .session(info())
        .unwrap()
        .rcpt(&env(&[]), "bigstring@x.test", &[])
        .await;
    assert!(matches!(d, Decision::Tempfail(_)), "{d:?}");
    assert_eq!(chain.stats()[0].memory_limits, 1);

    // With room for it, the host keeps a bounded piece.
    let mut p = policy("f", "faulty", serde_json::json!({}));
    p.max_memory = ByteSize(256 << 20);
    p.timeout = Duration::from_secs(2);
    let chain = load(&[p]).await;
    let d = chain
        .session(info())
        .unwrap()
        .rcpt(&env(&[]), "bigstring@x.test", &[])
        .await;
    let (code, _, text) = reply_of(&d);
    assert_eq!(code, 550);
    assert_eq!(text.len(), 512);
}

#[tokio::test]
async fn chatty_guests_are_bounded() {
    let chain = load(&[policy("f", "faulty", serde_json::json!({}))]).await;
    let mut s = chain.session(info()).unwrap();
    for who in ["stdout@x.test", "logspam@x.test", "slow@x.test"] {
        assert_eq!(
            s.rcpt(&env(&[]), who, &[]).await,
            Decision::Continue,
            "{who}"
        );
    }
    assert_eq!(chain.stats()[0].errors, 0);
}

#[tokio::test]
async fn host_lookups_share_one_io_budget_per_call() {
    let mut cfg = engine_cfg(&shared_cache());
    cfg.host_io_timeout = Duration::from_millis(200);
    let e = Engine::new(&cfg).unwrap();
    #[derive(Debug)]
    struct Slow;
    impl Resolver for Slow {
        fn mx<'a>(&'a self, d: &'a str) -> DnsFuture<'a, Vec<Mx>> {
            FakeResolver.mx(d)
        }
        fn ips<'a>(&'a self, _: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
            FakeResolver.ips("slow.dns.test")
        }
        fn txt<'a>(&'a self, n: &'a str) -> DnsFuture<'a, Vec<String>> {
            FakeResolver.txt(n)
        }
        fn ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
            FakeResolver.ptr(ip)
        }
    }
    let services = Services {
        resolver: Arc::new(Slow),
        kv: Arc::new(KvStore::default()),
    };
    let chain = e
        .load_chain(&[policy("b", "basic", serde_json::json!({}))], services)
        .await
        .unwrap();
    let started = Instant::now();
    let d = chain
        .session(info())
        .unwrap()
        .data(&env(&[]), MESSAGE)
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(d.outcome, DataOutcome::Continue);
    assert_eq!(header(&d, "X-Dns"), ["temporary:DNS lookup timed out"]);
}

#[tokio::test]
async fn finding_11_policy_dns_lookups_are_capped_per_call_and_per_session() {
    // The `basic` guest makes one lookup in each data call.
    let mut cfg = engine_cfg(&shared_cache());
    cfg.max_dns_lookups_per_session = 2;
    let e = Engine::new(&cfg).unwrap();
    let chain = e
        .load_chain(&[policy("b", "basic", serde_json::json!({}))], services())
        .await
        .unwrap();
    let mut s = chain.session(info()).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = s.data(&env(&[]), MESSAGE).await;
        seen.push(header(&d, "X-Dns").join(""));
    }
    assert!(
        seen[0].starts_with("ok:") && seen[1].starts_with("ok:"),
        "{seen:?}"
    );
    assert!(
        seen[2].contains("max_dns_lookups_per_session"),
        "the third lookup of the session: {seen:?}"
    );
    // A new session starts with its own allowance.
    let d = chain
        .session(info())
        .unwrap()
        .data(&env(&[]), MESSAGE)
        .await;
    assert!(
        header(&d, "X-Dns")[0].starts_with("ok:"),
        "{:?}",
        header(&d, "X-Dns")
    );

    let mut cfg = engine_cfg(&shared_cache());
    cfg.max_dns_lookups_per_call = 0;
    let e = Engine::new(&cfg).unwrap();
    let chain = e
        .load_chain(&[policy("b", "basic", serde_json::json!({}))], services())
        .await
        .unwrap();
    let d = chain
        .session(info())
        .unwrap()
        .data(&env(&[]), MESSAGE)
        .await;
    assert!(
        header(&d, "X-Dns")[0].contains("max_dns_lookups_per_call"),
        "{:?}",
        header(&d, "X-Dns")
    );
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = engine_cfg(dir.path());
    let basic = [policy("b", "basic", serde_json::json!({}))];

    // Init snapshots compile two more components per policy; this test is
    // about the component itself.
    let cfg = PolicyEngineConfig {
        init_snapshots: false,
        ..cfg
    };
    let e1 = Engine::new(&cfg).unwrap();
    e1.load_chain(&basic, services()).await.unwrap();
    assert_eq!(e1.cache_counts(), (0, 1));

    // Another engine with the same settings (a restart) takes it from disk.
    let e2 = Engine::new(&cfg).unwrap();
    e2.load_chain(&basic, services()).await.unwrap();
    assert_eq!(e2.cache_counts(), (1, 0));
    let pre = e2.precompile(&wasm("basic")).unwrap();
    assert!(pre.was_cached);
    assert_eq!(pre.wasm_hash.len(), 64);

    // Other engine settings (another pool slot size changes the compiled
    // bounds checks) never load that entry.
    let mut other = cfg.clone();
    other.max_memory = ByteSize(256 << 20);
    let e3 = Engine::new(&other).unwrap();
    e3.load_chain(&basic, services()).await.unwrap();
    assert_eq!(e3.cache_counts(), (0, 1));

    // A corrupt entry is recompiled.
    let mut corrupted = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                std::fs::write(&path, b"not compiled code").unwrap();
                corrupted += 1;
            }
        }
    }
    assert!(corrupted >= 2, "{corrupted}");
    let e4 = Engine::new(&cfg).unwrap();
    let chain = e4.load_chain(&basic, services()).await.unwrap();
    assert_eq!(e4.cache_counts(), (0, 1));
    assert_eq!(
        chain.session(info()).unwrap().connect().await,
        Decision::Continue,
        "the recompiled policy works"
    );
}

/// Finding 6: sessions took pool slots as they went, so idle sessions
/// could exhaust the pool and every later call failed into `on_error`
/// (with `continue`: the policy skipped). A session now reserves its slots
/// when it starts: one that cannot is refused before any call, and a
/// session that got in is always served by its policies.
#[tokio::test]
async fn finding_06_sessions_reserve_their_instances() {
    let mut cfg = engine_cfg(&shared_cache());
    cfg.max_instances = Some(4);
    let e = Engine::new(&cfg).unwrap();
    let mut skip = policy("b", "basic", serde_json::json!({}));
    skip.on_error = OnError::Continue;
    let mut other = policy("c", "basic", serde_json::json!({}));
    other.on_error = OnError::Continue;
    let chain = e.load_chain(&[skip, other], services()).await.unwrap();
    assert_eq!(chain.instances_per_session(), 2);
    // 4 slots, 1 kept for loading and route calls: one session of two.
    let mut a = chain.session(info()).unwrap();
    let full = chain.session(info()).unwrap_err();
    assert_eq!((full.needed, full.free, full.limit), (2, 1, 3));
    let env = env(&["bob@example.test"]);
    assert!(matches!(
        a.rcpt(&env, "blocked@example.test", &[]).await,
        Decision::Reject(_)
    ));
    // Waiting: the slots come free when the first session ends.
    let c2 = chain.clone();
    let waiter =
        tokio::spawn(async move { c2.session_within(info(), Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(a);
    let mut b = waiter.await.unwrap().expect("slots given back");
    assert!(matches!(
        b.rcpt(&env, "blocked@example.test", &[]).await,
        Decision::Reject(_)
    ));
    assert_eq!(chain.stats()[0].errors, 0);
}

/// A full pool outside sessions (a route call) is a temporary failure,
/// never `on_error = "continue"`.
#[tokio::test]
async fn a_route_call_without_a_slot_defers() {
    let mut cfg = engine_cfg(&shared_cache());
    cfg.max_instances = Some(4);
    let e = Engine::new(&cfg).unwrap();
    let mut p = policy("b", "basic", serde_json::json!({}));
    p.on_error = OnError::Continue;
    let chain = e.load_chain(&[p], services()).await.unwrap();
    // Three sessions of one take the sessions' three slots; hold the last
    // one outside sessions.
    let held: Vec<_> = (0..3).map(|_| chain.session(info()).unwrap()).collect();
    let lease = e.pool().lease(false).expect("the loose slot");
    let env = env(&["bob@example.test"]);
    assert!(matches!(
        chain.route(&env, "u@local.test").await,
        RouteDecision::Defer(r) if r.code == 451
    ));
    drop(lease);
    assert_eq!(
        chain.route(&env, "u@local.test").await,
        RouteDecision::Route(Route::Local)
    );
    drop(held);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_do_not_grow_memory() {
    let chain = load(&[policy("b", "basic", serde_json::json!({}))]).await;
    let e = env(&["bob@example.test"]);
    let one = |chain: Arc<Chain>, e: EnvelopeInfo| async move {
        let mut s = chain.session(info()).unwrap();
        assert_eq!(s.connect().await, Decision::Continue);
        assert_eq!(s.rcpt(&e, "a@example.test", &[]).await, Decision::Continue);
        let d = s.data(&e, MESSAGE).await;
        assert_eq!(d.outcome, DataOutcome::Continue);
    };
    for _ in 0..200 {
        one(chain.clone(), e.clone()).await;
    }
    let before = rss_kib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
        tasks.spawn(one(chain.clone(), e.clone()));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let took = started.elapsed();
    let after = rss_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "10,000 sessions in {took:?} ({:?} each); RSS {} → {} MiB",
        took / 10_000,
        before / 1024,
        after / 1024
    );
    assert!(growth_mib < 50, "RSS grew by {growth_mib} MiB");
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let st = &chain.stats()[0];
    assert_eq!(st.errors, 0);
    assert_eq!(st.instantiations, 1 + 10_200);
}
