//! `MockHost`: the fake gateway policy tests run against.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sluice_guest::{Capability, HostError, Level, MOCK_START, MockHost, Mx, Timestamp};

fn invalid(e: &Result<impl std::fmt::Debug, HostError>) -> bool {
    matches!(e, Err(HostError::InvalidArgument(_)))
}

#[test]
fn nothing_but_log_is_granted_by_default() {
    let host = MockHost::new();
    let ctx = host.context();
    assert_eq!(ctx.now(), Err(HostError::AccessDenied));
    assert_eq!(ctx.counter_add("hits", 1), Err(HostError::AccessDenied));
    assert_eq!(ctx.kv_get("k"), Err(HostError::AccessDenied));
    assert_eq!(ctx.kv_set("k", b"v", 0), Err(HostError::AccessDenied));
    assert_eq!(ctx.kv_incr("k", 1, 0), Err(HostError::AccessDenied));
    assert_eq!(ctx.kv_delete("k"), Err(HostError::AccessDenied));
    assert_eq!(ctx.dns_a("example.com"), Err(HostError::AccessDenied));
    assert_eq!(ctx.dns_aaaa("example.com"), Err(HostError::AccessDenied));
    assert_eq!(ctx.dns_mx("example.com"), Err(HostError::AccessDenied));
    assert_eq!(ctx.dns_txt("example.com"), Err(HostError::AccessDenied));
    assert_eq!(ctx.dns_ptr("192.0.2.1"), Err(HostError::AccessDenied));
    ctx.log(Level::Warn, "still logs");
    assert_eq!(host.logs(), [(Level::Warn, "still logs".to_string())]);
    // Denied calls are still recorded.
    assert_eq!(host.calls().len(), 11);
    assert_eq!(host.calls()[0], "clock.now");
}

#[test]
fn grants_are_per_capability() {
    let host = MockHost::new().grant(Capability::Kv);
    let ctx = host.context();
    assert_eq!(ctx.kv_set("k", b"v", 0), Ok(()));
    assert_eq!(ctx.dns_a("example.com"), Err(HostError::AccessDenied));

    let host = MockHost::new().grant_all().revoke(Capability::Dns);
    let ctx = host.context();
    assert!(ctx.now().is_ok());
    assert!(ctx.counter_add("x", 1).is_ok());
    assert_eq!(ctx.dns_txt("example.com"), Err(HostError::AccessDenied));
    let names: Vec<_> = Capability::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, ["clock", "metrics", "kv", "dns"]);
}

#[test]
fn kv_get_set_delete_and_ttl() {
    let host = MockHost::new().grant_all();
    let ctx = host.context();
    assert_eq!(ctx.kv_get("k"), Ok(None));
    ctx.kv_set("k", b"v1", 10).unwrap();
    ctx.kv_set("forever", b"f", 0).unwrap();
    assert_eq!(ctx.kv_get("k"), Ok(Some(b"v1".to_vec())));
    host.advance(Duration::from_millis(9_999));
    assert_eq!(ctx.kv_get("k"), Ok(Some(b"v1".to_vec())));
    host.advance(Duration::from_millis(1));
    assert_eq!(ctx.kv_get("k"), Ok(None), "expired at exactly the TTL");
    host.advance(Duration::from_secs(10 * 365 * 86_400));
    assert_eq!(ctx.kv_get("forever"), Ok(Some(b"f".to_vec())));
    ctx.kv_delete("forever").unwrap();
    ctx.kv_delete("never-set").unwrap();
    assert_eq!(ctx.kv_get("forever"), Ok(None));
    assert_eq!(host.kv_value("forever"), None);
}

#[test]
fn kv_incr_windows_saturation_and_non_counters() {
    let host = MockHost::new().grant_all();
    let ctx = host.context();
    assert_eq!(ctx.kv_incr("n", 5, 60), Ok(5));
    host.advance(Duration::from_secs(30));
    // The expiry set at creation is kept: the counter covers one window.
    assert_eq!(ctx.kv_incr("n", -7, 600), Ok(-2));
    host.advance(Duration::from_secs(30));
    assert_eq!(ctx.kv_incr("n", 1, 60), Ok(1), "a new window after expiry");
    // A counter reads as its decimal text.
    assert_eq!(ctx.kv_get("n"), Ok(Some(b"1".to_vec())));
    assert_eq!(ctx.kv_incr("max", i32::MAX, 0), Ok(i32::MAX));
    assert_eq!(ctx.kv_incr("max", 1, 0), Ok(i32::MAX));
    assert_eq!(ctx.kv_incr("min", i32::MIN, 0), Ok(i32::MIN));
    assert_eq!(ctx.kv_incr("min", -1, 0), Ok(i32::MIN));
    ctx.kv_set("text", b"hello", 0).unwrap();
    assert!(invalid(&ctx.kv_incr("text", 1, 0)));
    ctx.kv_set("twelve", b" 12 ", 0).unwrap();
    assert_eq!(ctx.kv_incr("twelve", 1, 0), Ok(13));
}

#[test]
fn kv_limits() {
    let host = MockHost::new().grant_all();
    let ctx = host.context();
    assert!(invalid(&ctx.kv_get("")));
    assert!(invalid(&ctx.kv_get(&"k".repeat(513))));
    assert!(ctx.kv_get(&"k".repeat(512)).is_ok());
    assert!(invalid(&ctx.kv_set("k", &vec![0; 64 * 1024 + 1], 0)));
    assert!(ctx.kv_set("k", &vec![0; 64 * 1024], 0).is_ok());
    assert!(invalid(&ctx.kv_incr("", 1, 0)));
    assert!(invalid(&ctx.kv_delete("")));
}

#[test]
fn preloaded_kv() {
    let host = MockHost::new().grant_all().kv("seen:192.0.2.1", "1", 60);
    let ctx = host.context();
    assert_eq!(ctx.kv_get("seen:192.0.2.1"), Ok(Some(b"1".to_vec())));
    host.advance(Duration::from_secs(60));
    assert_eq!(ctx.kv_get("seen:192.0.2.1"), Ok(None));
}

#[test]
fn clock_is_settable() {
    let host = MockHost::new().grant(Capability::Clock);
    let ctx = host.context();
    assert_eq!(ctx.now(), Ok(MOCK_START));
    host.advance(Duration::from_millis(1_500));
    assert_eq!(
        ctx.now(),
        Ok(Timestamp {
            seconds: MOCK_START.seconds + 1,
            millis: 500
        })
    );
    let host = host.at(Timestamp::from_unix_seconds(42));
    assert_eq!(host.context().now(), Ok(Timestamp::from_unix_seconds(42)));
    assert_eq!(host.time(), Timestamp::from_unix_seconds(42));
}

#[test]
fn canned_dns_answers() {
    let host = MockHost::new()
        .grant_all()
        .dns_a("2.0.0.127.zen.example", ["127.0.0.2", "127.0.0.4"])
        .dns_aaaa("mx.example.com", ["2001:db8::25"])
        .dns_mx(
            "example.com",
            [(10, "mx1.example.com"), (20, "mx2.example.com")],
        )
        .dns_mx("null.example", [(0, ".")])
        .dns_txt("example.com", ["v=spf1 -all"])
        .dns_ptr("2001:DB8::7", ["mail.example.com"])
        .dns_error("broken.example", HostError::Temporary("SERVFAIL".into()));
    let ctx = host.context();
    assert_eq!(
        ctx.dns_a("2.0.0.127.ZEN.example."),
        Ok(vec!["127.0.0.2".to_string(), "127.0.0.4".to_string()]),
        "names match case-insensitively, with or without the final dot"
    );
    assert_eq!(
        ctx.dns_a("3.0.0.127.zen.example"),
        Ok(vec![]),
        "NXDOMAIN is empty"
    );
    assert_eq!(
        ctx.dns_aaaa("mx.example.com"),
        Ok(vec!["2001:db8::25".to_string()])
    );
    assert_eq!(
        ctx.dns_a("mx.example.com"),
        Ok(vec![]),
        "types are separate"
    );
    assert_eq!(
        ctx.dns_mx("example.com"),
        Ok(vec![
            Mx {
                preference: 10,
                exchange: "mx1.example.com".into()
            },
            Mx {
                preference: 20,
                exchange: "mx2.example.com".into()
            },
        ])
    );
    assert!(ctx.dns_mx("null.example").is_ok_and(|mx| mx[0].is_null()));
    assert_eq!(
        ctx.dns_txt("example.com"),
        Ok(vec!["v=spf1 -all".to_string()])
    );
    assert_eq!(
        ctx.dns_ptr("2001:db8:0::7"),
        Ok(vec!["mail.example.com".to_string()])
    );
    assert_eq!(
        ctx.dns_a("broken.example"),
        Err(HostError::Temporary("SERVFAIL".into()))
    );
    assert_eq!(
        ctx.dns_mx("broken.example"),
        Err(HostError::Temporary("SERVFAIL".into()))
    );
    assert!(invalid(&ctx.dns_a("")));
    assert!(invalid(&ctx.dns_a("a..b")));
    assert!(invalid(&ctx.dns_a("has space.example")));
    assert!(invalid(&ctx.dns_a(&format!("{}.example", "a".repeat(64)))));
    assert!(invalid(&ctx.dns_ptr("not-an-ip")));
    assert_eq!(
        host.calls().first().map(String::as_str),
        Some("dns.a 2.0.0.127.ZEN.example.")
    );
}

#[test]
fn counters_and_logs_are_captured() {
    let host = MockHost::new().grant(Capability::Metrics);
    let ctx = host.context();
    ctx.counter_add("rejected", 1).unwrap();
    ctx.counter_add("rejected", 2).unwrap();
    ctx.counter_add("seen_total_2", 0).unwrap();
    assert!(invalid(&ctx.counter_add("Bad-Name", 1)));
    assert!(invalid(&ctx.counter_add("", 1)));
    assert!(invalid(&ctx.counter_add(&"a".repeat(65), 1)));
    assert_eq!(host.counter("rejected"), 3);
    assert_eq!(host.counter("never"), 0);
    assert_eq!(host.counters().len(), 2);

    ctx.debug("d");
    ctx.info("i");
    ctx.warn("w");
    ctx.error("e");
    ctx.log(Level::Trace, "t");
    let levels: Vec<_> = host.logs().into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        levels,
        [
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
            Level::Trace
        ]
    );
    assert!(host.logged("w"));
    assert!(!host.logged("nothing like this"));
}

#[test]
fn contexts_share_the_host() {
    let host = MockHost::new().grant_all();
    let (a, b) = (host.context(), host.context());
    a.kv_set("k", b"from a", 0).unwrap();
    assert_eq!(b.kv_get("k"), Ok(Some(b"from a".to_vec())));
    let clone = host.clone();
    clone.advance(Duration::from_secs(1));
    assert_eq!(host.time().seconds, MOCK_START.seconds + 1);
}
