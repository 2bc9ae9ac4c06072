//! Hot swap through the real binary: new policy versions land in the
//! watched folder (or come with SIGHUP / `sluice policy reload`) under
//! continuous load, and no transaction fails; broken versions are refused
//! while traffic goes on; shadow and canary candidates.
//!
//! The versions are copies of the `versioned` test guest with the version
//! digits of its marker rewritten (see its source): each stamps
//! `X-Policy-Version: N; connect=A; rcpt=B` on the messages it sees.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::guests;
use crate::harness::{Sandbox, Server, SmtpConn, sluice_bin};

const MARKER: &[u8] = b"sluice-test-version:";

/// The `versioned` guest's bytes with its version set to `n`.
fn version_bytes(n: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(guests::guest_wasm("versioned")).expect("read versioned guest");
    let at = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .expect("the version marker is in the component");
    let digits = format!("{n:04}");
    bytes[at + MARKER.len()..at + MARKER.len() + 4].copy_from_slice(digits.as_bytes());
    bytes
}

/// Put version `n` at `dest` the way a deploy does: write beside, rename
/// over (the file is never seen half written).
fn land(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write new version");
    std::fs::rename(&tmp, dest).expect("rename new version into place");
}

fn config(sb: &Sandbox, wasm: &Path, watch: bool, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"

[limits]
max_connections = 200
max_connections_per_ip = 200

[queue]
deliver = false

[policy_engine]
watch = {watch}

[[policy]]
name = "versioned"
path = "{wasm}"
capabilities = ["kv"]
{extra}
"#,
        data = sb.data_dir().display(),
        wasm = wasm.display(),
    )
}

/// The version a new session gets (a probe recipient the guest refuses
/// with its version).
fn probe(server: &Server) -> String {
    let mut c = SmtpConn::ehlo(server.addr(0), "probe.example");
    probe_in(&mut c)
}

fn probe_in(c: &mut SmtpConn) -> String {
    c.expect("MAIL FROM:<probe@example.com>", 250);
    let r = c.cmd("RCPT TO:<version@example.com>");
    assert!(r.is("550"), "probe: {r:?}");
    c.expect("RSET", 250);
    r.last()
        .trim_start_matches("550 ")
        .trim_start_matches("5.7.1 ")
        .to_string()
}

fn reloads_done(server: &Server) -> usize {
    server.log_records("policy reload done").len()
}

fn sluice_cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(sluice_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run sluice")
}

/// One message on an open session; `Err` with what went wrong.
fn send_one(c: &mut SmtpConn, sender: &str) -> Result<(), String> {
    for (cmd, code) in [
        (format!("MAIL FROM:<{sender}>"), "250"),
        ("RCPT TO:<user@example.com>".to_string(), "250"),
        ("DATA".to_string(), "354"),
    ] {
        c.send(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| format!("{cmd}: {e}"))?;
        let r = c
            .read_reply(Duration::from_secs(30))
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !r.is(code) {
            return Err(format!("{cmd}: {r:?}"));
        }
    }
    c.send(format!("Subject: swap test\r\nFrom: <{sender}>\r\n\r\nbody\r\n.\r\n").as_bytes())
        .map_err(|e| format!("data: {e}"))?;
    let r = c
        .read_reply(Duration::from_secs(30))
        .map_err(|e| format!("end of data: {e}"))?;
    if !r.is("250") {
        return Err(format!("end of data: {r:?}"));
    }
    Ok(())
}

/// The stamps of every spooled message, parsed: (version, connect, rcpt).
fn stamps(sb: &Sandbox) -> Vec<(String, String, String)> {
    sb.spool()
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m.body()).into_owned();
            let found: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("X-Policy-Version: "))
                .collect();
            assert_eq!(found.len(), 1, "exactly one stamp per message:\n{text}");
            let parts: Vec<&str> = found[0].split("; ").collect();
            assert_eq!(parts.len(), 3, "{}", found[0]);
            (
                parts[0].to_string(),
                parts[1].trim_start_matches("connect=").to_string(),
                parts[2].trim_start_matches("rcpt=").to_string(),
            )
        })
        .collect()
}

#[test]
fn swaps_under_load_fail_no_transaction() {
    const SENDERS: usize = 20;
    const MIN_MESSAGES: usize = 2000;
    const SWAPS: u32 = 12;
    let sb = Sandbox::new();
    let dir = sb.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let wasm: PathBuf = dir.join("versioned.wasm");
    let v1 = version_bytes(1);
    let v2 = version_bytes(2);
    land(&wasm, &v1);
    let server = sb.start_toml(&config(&sb, &wasm, true, ""), 1);
    let addr = server.addr(0);
    assert_eq!(probe(&server), "version 1");

    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let sent = sent.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut n = 0usize;
                // Sessions of 1 to 3 messages, until told to stop (and at
                // most 120 s).
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    let mut c = match SmtpConn::connect(addr) {
                        Ok(c) => c,
                        Err(e) => {
                            failures.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                    let greeting = c.read_reply(Duration::from_secs(30));
                    if !greeting.as_ref().is_ok_and(|r| r.is("220")) {
                        failures.push(format!("greeting: {greeting:?}"));
                        continue;
                    }
                    if c.send(b"EHLO load.example\r\n").is_err()
                        || !c
                            .read_reply(Duration::from_secs(30))
                            .is_ok_and(|r| r.is("250"))
                    {
                        failures.push("EHLO failed".to_string());
                        continue;
                    }
                    for _ in 0..(1 + n % 3) {
                        let sender = format!("s{t}-{n}@example.com");
                        n += 1;
                        match send_one(&mut c, &sender) {
                            Ok(()) => {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    let _ = c.send(b"QUIT\r\n");
                    let _ = c.read_reply(Duration::from_secs(30));
                }
                failures
            })
        })
        .collect();

    // Swap back and forth while the senders run; each swap is done when
    // the reload log says so.
    let mut swapped = 0;
    for i in 0..SWAPS {
        let before = reloads_done(&server);
        land(&wasm, if i % 2 == 0 { &v2 } else { &v1 });
        let done = Instant::now() + Duration::from_secs(60);
        while reloads_done(&server) == before && Instant::now() < done {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            reloads_done(&server) > before,
            "swap {i}: no reload within 60 s\n{}",
            server.log_text()
        );
        swapped += 1;
        // Let some traffic through on this version.
        std::thread::sleep(Duration::from_millis(150));
    }
    while sent.load(Ordering::Relaxed) < MIN_MESSAGES
        && started.elapsed() < Duration::from_secs(110)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = senders
        .into_iter()
        .flat_map(|h| h.join().expect("sender thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed transactions, first: {:?}",
        failures.len(),
        failures.first()
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= MIN_MESSAGES, "only {sent} messages in 110 s");
    assert_eq!(swapped, SWAPS);

    let refused = server.log_records("policy reload refused: the running policies stay");
    assert!(refused.is_empty(), "refused reloads: {refused:?}");
    let swaps: Vec<_> = server
        .log_records("policy reload done")
        .into_iter()
        .filter(|r| r["fields"]["swapped"] == true)
        .collect();
    assert!(
        swaps.len() >= SWAPS as usize,
        "{} swaps logged, want {SWAPS}",
        swaps.len()
    );

    let stamps = stamps(&sb);
    assert_eq!(stamps.len(), sent, "every accepted message is spooled");
    let mut per_version = std::collections::BTreeMap::new();
    for (v, connect, rcpt) in &stamps {
        assert!(v == "1" || v == "2", "unknown version {v}");
        assert_eq!(
            (connect, rcpt),
            (v, v),
            "every stage of a session saw one version"
        );
        *per_version.entry(v.clone()).or_insert(0usize) += 1;
    }
    assert_eq!(
        per_version.len(),
        2,
        "both versions served mail: {per_version:?}"
    );
}

#[test]
fn refused_versions_leave_the_running_one_in_place() {
    let sb = Sandbox::new();
    let dir = sb.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("versioned.wasm");
    land(&wasm, &version_bytes(1));
    let cfg_text = config(&sb, &wasm, false, "");
    let server = sb.start_toml(&cfg_text, 1);
    let cfg = sb.config_path();
    assert_eq!(probe(&server), "version 1");
    // A session that starts now keeps version 1 to its end, whatever is
    // swapped in meanwhile.
    let mut pinned = SmtpConn::ehlo(server.addr(0), "pinned.example");
    assert_eq!(probe_in(&mut pinned), "version 1");

    // A broken component: refused, with the policy named.
    land(&wasm, b"\0asm this is not a component");
    let out = sluice_cli(&["policy", "reload"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken component was accepted");
    assert!(
        stderr.contains("versioned") && stderr.contains("compil"),
        "the refusal names the policy and the step: {stderr}"
    );
    assert_eq!(probe(&server), "version 1");

    // A component whose init fails, through SIGHUP: refused, logged.
    land(&wasm, &version_bytes(0));
    server.signal("HUP");
    let refused = server
        .wait_log(
            "policy reload refused: the running policies stay",
            Duration::from_secs(60),
            |r| {
                r["fields"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("version 0 refuses to start"))
            },
        )
        .unwrap_or_else(|| panic!("init failure not logged\n{}", server.log_text()));
    assert_eq!(refused["fields"]["trigger"], "SIGHUP");
    assert_eq!(probe(&server), "version 1");

    // A good version: swapped in for new sessions only.
    land(&wasm, &version_bytes(2));
    let out = sluice_cli(&["policy", "reload"], &cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reloaded") && stdout.contains("versioned 2"),
        "{stdout}"
    );
    assert_eq!(probe(&server), "version 2");
    assert_eq!(
        probe_in(&mut pinned),
        "version 1",
        "a session keeps its version"
    );
    pinned.expect("QUIT", 221);

    // Status: the version in force and the reload counts.
    let out = sluice_cli(&["policy", "status", "--json"], &cfg);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["policies"][0]["name"], "versioned");
    assert_eq!(status["policies"][0]["version"], "2");
    assert!(status["policies"][0]["calls"].as_u64().unwrap() >= 1);
    assert_eq!(
        (
            status["reloads"].as_u64(),
            status["reload_failures"].as_u64()
        ),
        (Some(3), Some(2))
    );
    let text = sluice_cli(&["policy", "status"], &cfg);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("versioned 2") && text.contains("reloads: 3 (2 refused)"),
        "{text}"
    );

    // Nothing changed: nothing swapped. A change outside the chain is
    // reported as needing a restart.
    let out = sluice_cli(&["policy", "reload"], &cfg);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing changed"));
    std::fs::write(
        &cfg,
        cfg_text.replace("mx.test.example", "mx2.test.example"),
    )
    .unwrap();
    let out = sluice_cli(&["policy", "reload"], &cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[hostname] changed: needs a restart"),
        "{stdout}"
    );
}

#[test]
fn a_shadow_candidate_is_compared_never_enforced() {
    let sb = Sandbox::new();
    let v1 = sb.write("v1.wasm", &version_bytes(1));
    let v2 = sb.write("v2.wasm", &version_bytes(2));
    let extra = format!(
        "candidate = \"{}\"\ncandidate_mode = \"shadow\"",
        v2.display()
    );
    let server = sb.start_toml(&config(&sb, &v1, false, &extra), 1);
    for i in 0..5 {
        let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
        send_one(&mut c, &format!("shadow{i}@example.com")).unwrap();
        c.expect("QUIT", 221);
    }
    // Messages carry only the active version's stamp.
    for (v, connect, rcpt) in stamps(&sb) {
        assert_eq!(
            (v.as_str(), connect.as_str(), rcpt.as_str()),
            ("1", "1", "1")
        );
    }
    // The data stage differs (another stamp), every time; connect and rcpt
    // do not (both continue).
    let out = sluice_cli(&["policy", "status", "--json"], &sb.config_path());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &status["policies"][0]["candidate"];
    assert_eq!(c["mode"], "shadow");
    assert_eq!(c["version"], "2");
    assert_eq!(c["differences"], 5, "{status:#}");
    let diffs = server.log_records("shadow candidate decided differently");
    assert_eq!(diffs.len(), 5);
    assert_eq!(diffs[0]["fields"]["stage"], "data");
}

#[test]
fn a_canary_takes_its_share_of_new_sessions() {
    let sb = Sandbox::new();
    let v1 = sb.write("v1.wasm", &version_bytes(1));
    let v2 = sb.write("v2.wasm", &version_bytes(2));
    let extra = format!(
        "candidate = \"{}\"\ncandidate_mode = \"canary\"\ncanary_percent = 30",
        v2.display()
    );
    let server = sb.start_toml(&config(&sb, &v1, false, &extra), 1);
    let mut v2_sessions = 0;
    for _ in 0..100 {
        match probe(&server).as_str() {
            "version 1" => {}
            "version 2" => v2_sessions += 1,
            other => panic!("probe: {other}"),
        }
    }
    assert_eq!(v2_sessions, 30, "30 % of 100 sessions");
}

#[test]
fn a_version_that_fails_its_session_tests_is_refused() {
    let sb = Sandbox::new();
    let dir = sb.path().join("policies");
    let tests = sb.path().join("versioned-tests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&tests).unwrap();
    let wasm = dir.join("versioned.wasm");
    land(&wasm, &version_bytes(1));
    // The policy's suite expects the probe to answer "version 2".
    std::fs::write(
        tests.join("sluice-test.toml"),
        format!(
            "local_domains = [\"example.com\"]\n[[policy]]\nname = \"versioned\"\npath = \"{}\"\ncapabilities = [\"kv\"]\n",
            wasm.display()
        ),
    )
    .unwrap();
    std::fs::write(
        tests.join("probe.smtp"),
        "# The probe recipient is refused with a one-digit version.\n\
         S: 220\nC: EHLO client.example\nS: 250\nC: MAIL FROM:<s@example.com>\nS: 250\n\
         C: RCPT TO:<version@example.com>\nS: 550 5.7.1 version 2\n",
    )
    .unwrap();
    let extra = format!("tests = \"{}\"", tests.display());
    let server = sb.start_toml(&config(&sb, &wasm, false, &extra), 1);
    let cfg = sb.config_path();
    assert_eq!(probe(&server), "version 1");

    // Version 3 answers "version 3": its own suite fails, it is refused.
    land(&wasm, &version_bytes(3));
    let out = sluice_cli(&["policy", "reload"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a version failing its tests was accepted"
    );
    assert!(
        stderr.contains("session tests") && stderr.contains("probe.smtp"),
        "the refusal names the tests and the case: {stderr}"
    );
    assert_eq!(probe(&server), "version 1");

    // Version 2 passes them and is swapped in.
    land(&wasm, &version_bytes(2));
    let out = sluice_cli(&["policy", "reload"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe(&server), "version 2");
}
