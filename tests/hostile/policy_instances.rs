//! Security finding 6: idle sessions must not exhaust the policy instance
//! pool. Each session holds one instance per policy; before the fix a
//! session took its instances as it went, so enough idle connections
//! emptied the pool and every later call failed into the policy's
//! `on_error` — with `on_error = "continue"`, the policy was bypassed for
//! everyone. Now a session reserves its instances when it starts: it is
//! served with its policies, or (after an idle session is shed to make
//! room) refused with `421 4.3.2`, never served without them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::guests;
use crate::harness::{Sandbox, Server, SmtpConn, client_script};

/// A gateway on 127.0.0.1 whose relay network is 127.0.0.1 alone (the
/// attackers come from 127.1.x.y), with two `basic` policies that
/// continue on error, and `engine` as the `[policy_engine]` entries.
fn config(sb: &Sandbox, limits: &str, engine: &str) -> String {
    let wasm = guests::guest_wasm("basic");
    let policy = |name: &str| {
        format!(
            "[[policy]]\nname = \"{name}\"\npath = {:?}\non_error = \"continue\"\n",
            wasm.display().to_string()
        )
    };
    format!(
        r#"data_dir = {data:?}
hostname = "mx.test.example"
local_domains = ["example.com"]
relay_networks = ["127.0.0.1/32"]

[[listener]]
address = "127.0.0.1:0"

[limits]
max_connections_per_network = 1000
{limits}

[queue]
deliver = false

[policy_engine]
cache_dir = {cache:?}
{engine}

{p1}
{p2}"#,
        data = sb.data_dir().display().to_string(),
        cache = guests::guests_dir()
            .join("../../engine-cache")
            .display()
            .to_string(),
        p1 = policy("basic1"),
        p2 = policy("basic2"),
    )
}

/// `count` slow connections from 127.1.x.y that connect, take the
/// greeting and then dribble a byte now and then for `hold` seconds.
fn attack(server: &Server, count: usize, hold: u64) -> Child {
    Command::new("python3")
        .arg(client_script("slowloris.py"))
        .args(["--port", &server.addr(0).port().to_string()])
        .args(["--count", &count.to_string(), "--hold", &hold.to_string()])
        .args(["--interval", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the attacker")
}

/// File descriptors the server has open (its sockets among them).
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Wait (at most 60 s) until the server holds `n` more descriptors than
/// it did at `base`: the attack's sessions are open.
fn wait_sessions(server: &Server, base: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(server) < base + n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} attack sessions opened:\n{}",
            open_fds(server).saturating_sub(base),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A relay client's transaction that the policies must judge: the
/// `basic` policy rejects the local part `blocked`. Returns the RCPT
/// reply codes (blocked, allowed), or the greeting if it was not 220.
fn judged_rcpts(server: &Server) -> Result<(u16, u16), String> {
    let mut c = SmtpConn::connect(server.addr(0)).map_err(|e| e.to_string())?;
    let g = c.reply();
    if g.code != 220 {
        return Err(g.last().to_string());
    }
    c.expect("EHLO good.example", 250);
    c.expect("MAIL FROM:<good@example.com>", 250);
    let blocked = c.cmd("RCPT TO:<blocked@example.com>").code;
    let allowed = c.cmd("RCPT TO:<user@example.com>").code;
    c.expect("QUIT", 221);
    Ok((blocked, allowed))
}

/// End the attacker (it started nothing of its own).
fn stop(mut attacker: Child) {
    let _ = attacker.kill();
    crate::harness::wait_child(&mut attacker, Duration::from_secs(30));
}

/// With the default `[policy_engine]`, 700 idle sessions (1,400 instances,
/// more than the 1,000 slots the pool had before the fix) leave a good
/// client's policies working: `blocked` is refused.
#[test]
fn finding_06_idle_sessions_leave_the_policies_working() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&config(&sb, "", ""), 1);
    let base = open_fds(&server);
    let attacker = attack(&server, 700, 60);
    wait_sessions(&server, base, 700);
    let got = judged_rcpts(&server);
    stop(attacker);
    assert_eq!(
        got,
        Ok((550, 250)),
        "a good client beside 700 idle sessions:\n{}",
        server.log_text()
    );
    assert!(
        server.logged("policy instance pool sized"),
        "{}",
        server.log_text()
    );
    assert!(
        !server.logged("maximum concurrent limit"),
        "no policy call ran out of instances:\n{}",
        server.log_text()
    );
}

/// A pool too small for the attack: the idle sessions fill it, and a new
/// client is served with its policies after an idle session is shed — or,
/// when none has been idle long enough to shed, refused with 421 4.3.2.
/// Never served with its policies failing.
#[test]
fn finding_06_a_full_pool_sheds_or_refuses_never_bypasses() {
    // 24 slots: 6 kept for loading and route calls, 18 for sessions of 2
    // instances each, so 9 sessions.
    for (shed_after, want) in [("\"1s\"", Ok((550, 250))), ("\"10m\"", Err(421))] {
        let sb = Sandbox::new();
        let limits = format!("shed_idle_after = {shed_after}");
        let server = sb.start_toml(&config(&sb, &limits, "max_instances = 24"), 1);
        let base = open_fds(&server);
        let attacker = attack(&server, 20, 40);
        wait_sessions(&server, base, 9);
        // Idle for longer than the 1 s shed_idle_after.
        std::thread::sleep(Duration::from_millis(1500));
        let got = judged_rcpts(&server).map_err(|greeting| {
            assert!(
                greeting.starts_with("421 4.3.2"),
                "refused with {greeting:?}"
            );
            421
        });
        stop(attacker);
        assert_eq!(
            got,
            want,
            "shed_idle_after = {shed_after}:\n{}",
            server.log_text()
        );
        // The other 11 attackers were refused for want of instances.
        let refused = server.wait_log("connection refused", Duration::from_secs(5), |v| {
            v["fields"]["reason"] == "policy-instances"
        });
        assert!(
            refused.is_some(),
            "an attacker refused for want of policy instances:\n{}",
            server.log_text()
        );
        if want.is_ok() {
            assert!(
                server.logged("closing the longest-idle session"),
                "{}",
                server.log_text()
            );
        }
    }
}
