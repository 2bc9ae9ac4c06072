//! End to end: each shipped policy loaded by the real gateway
//! (`target/debug/sluice serve`) and exercised by a raw SMTP client over
//! loopback; outcomes read from the replies, the delivered Maildir files,
//! the spool and the JSON log.
//!
//! Every server listens on `127.0.0.1:0` and is killed (by PID) when its
//! guard drops; every wait has a deadline. DNS answers come from the
//! gateway's static `[dns.a]` table; anything else goes to a name server
//! at `127.0.0.1:9`, where nothing answers, so no query leaves the machine.
//! Compiled policies are cached in `target/policies/engine-cache`, so
//! only the first start after a policy changes pays for compiling it.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use sluice_policy_build::{POLICY_TARGET_DIR, policy};
use sluice_test_kit::{DELIVERY, PolicyGateway, Sandbox, Smtp};

/// The component of `policies/rust/<dir>`.
fn wasm(dir: &str) -> &'static str {
    policy(dir)
        .unwrap_or_else(|| panic!("policies/rust/{dir} was not built"))
        .wasm
}

/// The config of these tests: one plain listener, then a PROXY listener
/// trusting loopback when `proxy`; `rest` is appended (the `[[policy]]`
/// entries, `[dns.a]`, …).
fn config(sandbox: &Sandbox, proxy: bool, deliver: bool, rest: &str) -> String {
    let cache = Path::new(POLICY_TARGET_DIR).join("engine-cache");
    let gw = PolicyGateway {
        proxy,
        deliver,
        quiet_dns: false,
        engine_cache: &cache,
        max_instances: 64,
        max_memory: "64MiB",
    };
    sandbox.policy_config(&gw, rest)
}

// ---------------------------------------------------------------------------
// Test helpers

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// DNS for these tests: static answers, and nothing else reachable.
fn dns(static_a: &[(&str, &[&str])]) -> String {
    let mut t = String::from("[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n[dns.a]\n");
    for (name, addrs) in static_a {
        let quoted: Vec<String> = addrs.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(t, "{name:?} = [{}]", quoted.join(", "));
    }
    t
}

// ---------------------------------------------------------------------------
// The policies

#[test]
fn access_allows_and_denies_at_every_stage() {
    let sandbox = Sandbox::new();
    let policy = format!(
        r#"[[policy]]
name = "access"
path = {:?}
capabilities = ["metrics"]
[policy.config]
deny_networks = ["203.0.113.0/24"]
allow_networks = ["203.0.113.99"]
deny_helo = ["*.bad.example"]
deny_senders = ["@spam.example"]
deny_recipients = ["blocked@example.com"]
reject_text = "Access denied by policy"
"#,
        wasm("access")
    );
    let server = sandbox.start_toml(&config(&sandbox, true, true, &policy), 2);

    // Connect: a denied network is refused and disconnected; the allowed
    // exception inside it gets the greeting.
    let (mut denied, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 550, "{greeting:?}");
    assert!(
        greeting.text.contains("5.7.1 Access denied by policy"),
        "{greeting:?}"
    );
    assert!(denied.closed());
    let (mut allowed, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.99"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    allowed.expect("QUIT", 221);

    let (mut c, greeting) = Smtp::connect(server.addr(0));
    assert_eq!(greeting.code, 220);
    let r = c.expect("EHLO host.bad.example", 550);
    assert!(r.text.contains("Access denied by policy"), "{r:?}");
    c.expect("EHLO client.example", 250);
    let r = c.expect("MAIL FROM:<x@SPAM.example>", 550);
    assert!(r.text.contains("5.7.1"), "{r:?}");
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<blocked@example.com>", 550);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("From: ann@sender.example\nSubject: hello\n\nhi\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());
    assert!(sandbox.maildir("example.com", "blocked").is_empty());
}

#[test]
fn rate_limit_counts_across_sessions_and_fails_open() {
    let sandbox = Sandbox::new();
    let policies = format!(
        r#"[[policy]]
name = "rate-limit"
path = {path:?}
capabilities = ["kv", "clock"]
[policy.config]
window = "1h"
messages_per_sender = 2
recipients_per_ip = 3

# The same policy without the kv capability: it cannot count, logs that
# and, told to fail open, lets mail through.
[[policy]]
name = "rate-limit-open"
path = {path:?}
[policy.config]
messages_per_ip = 1
fail_closed = false
"#,
        path = wasm("rate-limit")
    );
    let server = sandbox.start_toml(&config(&sandbox, false, false, &policies), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<c@example.com>", 250);
    let r = c.expect("RCPT TO:<d@example.com>", 451);
    assert!(
        r.text
            .contains("4.7.1 rate limit exceeded, try again later"),
        "{r:?}"
    );
    c.expect("RSET", 250);
    let r = c.expect("MAIL FROM:<ann@sender.example>", 451);
    assert!(r.text.contains("4.7.1"), "{r:?}");
    c.expect("QUIT", 221);

    // A new session (a new instance) sees the same counters.
    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ANN@sender.example>", 451);
    c.expect("MAIL FROM:<bob@sender.example>", 250);
    c.expect("RCPT TO:<e@example.com>", 451);
    c.expect("QUIT", 221);

    assert!(
        server.logged("rate-limit state unavailable (access denied"),
        "the policy without kv logs that it lets mail through; log:\n{}",
        server.log_text()
    );
}

#[test]
fn finding_05_a_full_namespace_tempfails_and_leaves_other_policies_alone() {
    let sandbox = Sandbox::new();
    // Senders are the client's choice: five made-up ones fill the first
    // policy's namespace. It then delays mail (fail closed) instead of
    // switching its limit off; the second policy's namespace is its own.
    let policies = format!(
        r#"[[policy]]
name = "rl-senders"
path = {path:?}
capabilities = ["kv", "clock"]
kv_max_entries = 5
[policy.config]
window = "1h"
messages_per_sender = 100

[[policy]]
name = "rl-ip"
path = {path:?}
capabilities = ["kv", "clock"]
[policy.config]
window = "1h"
messages_per_ip = 1000
"#,
        path = wasm("rate-limit")
    );
    let server = sandbox.start_toml(&config(&sandbox, false, false, &policies), 1);
    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    for i in 0..5 {
        c.expect(&format!("MAIL FROM:<made-up-{i}@sender.example>"), 250);
        c.expect("RSET", 250);
    }
    let r = c.expect("MAIL FROM:<made-up-5@sender.example>", 451);
    assert!(r.text.contains("4.3.0"), "{r:?}");
    // Counting a sender it already holds still works, and so does the
    // other policy (it counts this client's every MAIL).
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<made-up-0@sender.example>", 250);
    c.expect("QUIT", 221);
    assert!(
        server.logged("kv_max_entries"),
        "log:\n{}",
        server.log_text()
    );
}

#[test]
fn dnsbl_rejects_listed_clients_at_connect() {
    let sandbox = Sandbox::new();
    let rest = format!(
        r#"[[policy]]
name = "dnsbl"
path = {:?}
capabilities = ["dns", "metrics"]
[policy.config]
zones = ["zen.test"]
codes = ["127.0.0.2"]

{}"#,
        wasm("dnsbl"),
        dns(&[
            ("7.113.0.203.zen.test", &["127.0.0.2"]),
            ("9.113.0.203.zen.test", &["127.0.0.9"]),
            ("8.113.0.203.zen.test", &[]),
        ])
    );
    let server = sandbox.start_toml(&config(&sandbox, true, true, &rest), 2);

    let (mut listed, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 554, "{greeting:?}");
    assert_eq!(
        greeting.text,
        "5.7.1 Service unavailable; client [203.0.113.7] blocked using zen.test"
    );
    assert!(listed.closed());

    // Listed with a code that is not configured: not blocked.
    let (mut other_code, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.9"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    other_code.expect("QUIT", 221);

    let (mut clean, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.8"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    clean.expect("EHLO client.example", 250);
    clean.expect("MAIL FROM:<ann@sender.example>", 250);
    clean.expect("RCPT TO:<user@example.com>", 250);
    assert_eq!(clean.data("Subject: hi\n\nhello\n").code, 250);
    clean.expect("QUIT", 221);
    assert_eq!(sandbox.wait_maildir("example.com", "user", 1).len(), 1);

    // Loopback clients are not looked up.
    let (mut local, greeting) = Smtp::connect(server.addr(0));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    local.expect("QUIT", 221);
    assert!(server.logged("client 203.0.113.7 is listed in zen.test (127.0.0.2)"));
}

#[test]
fn dnsbl_tags_listed_clients_and_survives_dns_failures() {
    let sandbox = Sandbox::new();
    let rest = format!(
        r#"[[policy]]
name = "dnsbl"
path = {:?}
capabilities = ["dns"]
[policy.config]
zones = ["down.test", "zen.test"]
action = "tag"

{}"#,
        wasm("dnsbl"),
        // down.test is not in the table: its lookups go to the silent name
        // server and fail temporarily.
        dns(&[("7.113.0.203.zen.test", &["127.0.0.2"])])
    );
    let server = sandbox.start_toml(&config(&sandbox, true, true, &rest), 2);

    let (mut c, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("X-DNSBL: forged.example\nSubject: hi\n\nhello\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());
    let text = String::from_utf8_lossy(&delivered[0]);
    assert!(text.contains("X-DNSBL: zen.test\r\n"), "{text}");
    assert!(
        !text.contains("forged.example"),
        "the client's own X-DNSBL is removed: {text}"
    );
    assert!(
        server.logged("down.test: lookup of 7.113.0.203.down.test failed temporarily"),
        "log:\n{}",
        server.log_text()
    );
}

#[test]
fn header_rules_reject_quarantine_and_edit_headers() {
    let sandbox = Sandbox::new();
    let policy = format!(
        r#"[[policy]]
name = "header-rules"
path = {:?}

[[policy.config.rules]]
header = "Subject"
pattern = "(?i)viagra"
action = "reject"
text = "No pills here"

[[policy.config.rules]]
header = "X-Spam-Score"
pattern = "."
action = "remove_header"

[[policy.config.rules]]
header = "*"
pattern = "(?i)^subject:.*newsletter"
action = "add_header"
add = "X-Flag: bulk"

[[policy.config.rules]]
header = "Subject"
pattern = "^hold"
action = "quarantine"
text = "held for review"
"#,
        wasm("header-rules")
    );
    let server = sandbox.start_toml(&config(&sandbox, false, true, &policy), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("Subject: Cheap VIAGRA\n\nbuy\n");
    assert_eq!(r.code, 550, "{r:?}");
    assert_eq!(r.text, "5.7.1 No pills here");

    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("Subject: Monthly Newsletter\nX-Spam-Score: 9.5\n\nnews\n");
    assert_eq!(r.code, 250, "{r:?}");

    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<other@example.com>", 250);
    let r = c.data("Subject: hold this one\n\nx\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(
        delivered.len(),
        1,
        "only the newsletter is delivered; log:\n{}",
        server.log_text()
    );
    let text = String::from_utf8_lossy(&delivered[0]);
    assert!(text.contains("X-Flag: bulk\r\n"), "{text}");
    assert!(!text.contains("X-Spam-Score"), "{text}");
    assert!(text.contains("Subject: Monthly Newsletter"), "{text}");

    // The quarantined message waits in the spool, held, with its reason.
    let deadline = Instant::now() + DELIVERY;
    let held = loop {
        let held: Vec<Value> = sandbox
            .spooled_envelopes()
            .into_iter()
            .filter(|e| e["held"] == true)
            .collect();
        if !held.is_empty() || Instant::now() >= deadline {
            break held;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(held.len(), 1, "log:\n{}", server.log_text());
    assert_eq!(held[0]["quarantine"], "held for review");
    assert!(sandbox.maildir("example.com", "other").is_empty());
}

#[test]
fn domain_router_routes_local_relay_and_reject() {
    let sandbox = Sandbox::new();
    let port = closed_port();
    let policy = format!(
        r#"[[policy]]
name = "domain-router"
path = {:?}
[policy.config]
local_domains = ["example.com", "*.corp.example"]
[policy.config.routes]
"partner.example" = {{ relay = "relay.partner.test:{port}", tls = "none" }}
"gone.example" = {{ reject = "550 5.1.2 no mail for this domain" }}

{}"#,
        wasm("domain-router"),
        dns(&[("relay.partner.test", &["127.0.0.1"])])
    );
    let server = sandbox.start_toml(&config(&sandbox, false, true, &policy), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@example.com>", 250);
    c.expect("RCPT TO:<user@eu.corp.example>", 250);
    c.expect("RCPT TO:<bob@partner.example>", 250);
    c.expect("RCPT TO:<carol@gone.example>", 250);
    let r = c.data("Subject: routes\n\nhello\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    // A domain the gateway does not know is local because the policy says so.
    let delivered = sandbox.wait_maildir("eu.corp.example", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());

    // The partner's relay host is down: deferred, naming that host (the
    // recipient's own MX would have been a DNS failure, with no remote).
    let deferred = server.wait_record("delivery", |v| {
        v["fields"]["rcpt"] == "bob@partner.example" && v["fields"]["result"] == "deferred"
    });
    assert_eq!(
        deferred["fields"]["remote"], "relay.partner.test",
        "{deferred}"
    );
    assert!(
        deferred["fields"]["diagnostic"]
            .as_str()
            .is_some_and(|d| d.contains("connect failed")),
        "{deferred}"
    );

    // gone.example fails with the configured reply: in the envelope of the
    // message still queued for bob, ...
    let deadline = Instant::now() + DELIVERY;
    let carol = loop {
        let found = sandbox.spooled_envelopes().into_iter().find_map(|env| {
            env["recipients"]
                .as_array()?
                .iter()
                .find(|r| r["address"] == "carol@gone.example" && r["state"] == "failed")
                .cloned()
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "carol@gone.example did not fail; spool: {:?}\nlog:\n{}",
            sandbox.spooled_envelopes(),
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(carol["status"], "5.1.2", "{carol}");
    assert!(
        carol["diagnostic"]
            .as_str()
            .is_some_and(|d| d.contains("no mail for this domain")),
        "{carol}"
    );

    // ... and, for a message that ends there, in the bounce to the sender.
    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@example.com>", 250);
    c.expect("RCPT TO:<dave@gone.example>", 250);
    assert_eq!(c.data("Subject: bounce me\n\nx\n").code, 250);
    c.expect("QUIT", 221);
    let bounces = sandbox.wait_maildir("example.com", "ann", 1);
    assert_eq!(bounces.len(), 1, "log:\n{}", server.log_text());
    let dsn = String::from_utf8_lossy(&bounces[0]);
    assert!(
        dsn.contains("dave@gone.example") && dsn.contains("5.1.2"),
        "{dsn}"
    );
    assert!(dsn.contains("no mail for this domain"), "{dsn}");
}
