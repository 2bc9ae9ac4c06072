//! Record and replay through the real binary: sessions recorded by
//! `sluice serve` with the test policy `replay-v1` (DNS, key-value and
//! clock calls at connect, mail-from, rcpt and data), replayed by
//! `sluice replay` with `replay-v2`, which differs in known ways.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::guests;
use crate::harness::{Sandbox, Server, SmtpConn};

/// The compiled-code cache all these servers and replays share.
fn cache_dir() -> PathBuf {
    guests::guests_dir().join("../../engine-cache")
}

fn config(sb: &Sandbox, version: u32, record: &str, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"
record = {record}

[[listener]]
address = "127.0.0.1:0"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
record = {record}

[queue]
deliver = false

[record]
dir = "{rec}"
{extra}

[dns]
nameservers = ["127.0.0.1:9"]
timeout = "1s"
[dns.a]
"1.0.0.127.bl.test" = []
"9.113.0.203.bl.test" = ["127.0.0.2"]
"data.test" = ["127.0.0.5"]

[policy_engine]
cache_dir = "{cache}"

[[policy]]
name = "replay"
path = "{wasm}"
capabilities = ["dns", "kv", "clock"]
"#,
        data = sb.data_dir().display(),
        rec = sb.path().join("rec").display(),
        cache = cache_dir().display(),
        wasm = guests::guest_wasm(&format!("replay-v{version}")).display(),
    )
}

/// Every line of every recording file, in file order.
fn recorded_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Stop the server with SIGTERM (which writes what is recorded) and
/// return the recorded lines.
fn stop_and_read(mut server: Server, dir: &Path) -> Vec<String> {
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(20)).is_some(),
        "sluice did not stop; log:\n{}",
        server.log_text()
    );
    recorded_lines(dir)
}

fn sluice(args: &[&str]) -> Output {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.args(args);
    crate::harness::run_bounded(&mut cmd, None)
}

fn replay(cfg: &Path, version: Option<u32>, extra: &[&str], inputs: &[&Path]) -> Output {
    let cache = cache_dir();
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--cache-dir".into(),
        cache.display().to_string(),
    ];
    if let Some(v) = version {
        args.push("--policy".into());
        args.push(format!(
            "replay={}",
            guests::guest_wasm(&format!("replay-v{v}")).display()
        ));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sluice(&args)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay --json printed no JSON ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn changes(session: &Value) -> Vec<(String, String, String)> {
    session["changes"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| {
            (
                c["step"].as_str().unwrap_or("").to_string(),
                c["before"].as_str().unwrap_or("(none)").to_string(),
                c["after"].as_str().unwrap_or("(none)").to_string(),
            )
        })
        .collect()
}

fn ch(step: &str, before: &str, after: &str) -> (String, String, String) {
    (step.into(), before.into(), after.into())
}

/// Connect through the PROXY listener claiming `ip`; the greeting.
fn connect_as(addr: std::net::SocketAddr, ip: &str) -> (SmtpConn, crate::harness::Reply) {
    let mut c = SmtpConn::connect(addr).expect("connect");
    c.write(format!("PROXY TCP4 {ip} 127.0.0.1 5555 25\r\n"));
    let greeting = c.reply();
    (c, greeting)
}

#[test]
fn record_with_v1_then_replay_with_v2_shows_exactly_the_changes() {
    let sb = Sandbox::new();
    let cfg_text = config(&sb, 1, "\"all\"", "");
    let server = sb.start_toml(&cfg_text, 2);
    let cfg = sb.config_path();

    // 1: three recipients, an "invoice".
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let r = c.send_mail(
        "ann@example.org",
        &["alice@example.com", "bob@example.com", "carol@example.com"],
        b"Subject: your invoice\r\n\r\nhello\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);
    // 2: a client listed in bl.test (a DNS answer only the recording has
    // at replay time).
    let (mut c, greeting) = connect_as(server.addr(1), "203.0.113.9");
    assert!(greeting.is("554 5.7.1 203.0.113.9 listed"), "{greeting:?}");
    assert!(c.closed_within(Duration::from_secs(5)));
    // 3: four recipients; v1 allows three.
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    c.expect("MAIL FROM:<dan@example.org>", 250);
    for r in ["r1", "r2", "r3"] {
        c.expect(&format!("RCPT TO:<{r}@example.com>"), 250);
    }
    let r = c.expect("RCPT TO:<r4@example.com>", 451);
    assert!(r.is("451 4.7.1 too many recipients (4)"), "{r:?}");
    c.expect("QUIT", 221);

    let rec_dir = sb.path().join("rec");
    let mut lines = stop_and_read(server, &rec_dir);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // A session is written when its connection ends, which under load
    // need not follow the order the client closed them in: put them in
    // the order they were made, in a file of their own.
    let which = |l: &String| {
        ["ann@example.org", "203.0.113.9", "dan@example.org"]
            .iter()
            .position(|m| l.contains(m))
    };
    lines.sort_by_key(which);
    assert_eq!(
        lines.iter().map(which).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    let rec_dir = sb.path().join("ordered");
    std::fs::create_dir_all(&rec_dir).unwrap();
    std::fs::write(
        rec_dir.join("sessions.jsonl"),
        format!("{}\n", lines.join("\n")),
    )
    .unwrap();
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["format"], "sluice-session");
    assert_eq!(first["version"], 1);
    assert_eq!(first["policies"][0]["version"], "1.0.0");
    let all = lines.join("\n");
    for call in ["dns.a", "kv.get", "kv.incr", "clock.now"] {
        assert!(
            all.contains(&format!("\"call\":\"{call}\"")),
            "{call} recorded"
        );
    }

    // The same policy replays to no change at all.
    let same = replay(&cfg, None, &[], &[&rec_dir]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(
        text.ends_with("3 sessions: 0 changed, 3 unchanged, 0 failed, 0 unreadable; 0 steps changed, 0 skipped\n"),
        "{text}"
    );

    // v2: exactly these differences.
    let out = replay(&cfg, Some(2), &["--json"], &[&rec_dir]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json(&out);
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let s1 = changes(&sessions[0]);
    assert_eq!(s1.len(), 2, "{s1:#?}");
    assert_eq!(
        s1[0],
        ch(
            "rcpt bob@example.com",
            "accept",
            "reject 550 5.7.1 bob@example.com is blocked by v2"
        )
    );
    let (step, before, after) = &s1[1];
    assert_eq!(step, "data");
    assert!(
        before.starts_with("accept [add-header X-Replay: a=127.0.0.5 t="),
        "{before}"
    );
    assert_eq!(
        after,
        &before.replacen("accept", "quarantine: suspicious subject", 1),
        "the clock is answered from the recording"
    );
    assert_eq!(sessions[1]["status"], "unchanged", "{:#}", sessions[1]);
    assert_eq!(
        changes(&sessions[2]),
        [ch(
            "rcpt r3@example.com",
            "accept",
            "tempfail 451 4.7.1 too many recipients (3)"
        )]
    );
    assert_eq!(doc["summary"]["changed"], 2);
    assert_eq!(doc["summary"]["unchanged"], 1);
    assert_eq!(doc["summary"]["changes"], 3);

    // Deterministic: the same output, byte for byte, run after run.
    let again = replay(&cfg, Some(2), &["--json"], &[&rec_dir]);
    assert_eq!(out.stdout, again.stdout);
    let t1 = replay(&cfg, Some(2), &[], &[&rec_dir]);
    let t2 = replay(&cfg, Some(2), &[], &[&rec_dir]);
    assert_eq!(t1.stdout, t2.stdout);
    let text = String::from_utf8_lossy(&t1.stdout);
    assert!(
        text.contains(
            "  rcpt bob@example.com: accept → reject 550 5.7.1 bob@example.com is blocked by v2\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("3 sessions: 2 changed, 1 unchanged, 0 failed, 0 unreadable; 3 steps changed, 0 skipped\n"),
        "{text}"
    );

    // --fail-on-diff.
    let strict = replay(&cfg, Some(2), &["--fail-on-diff"], &[&rec_dir]);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");

    // Accepted as test cases, the v2 outcomes pass `sluice test` with v2
    // and fail with v1.
    let cases = sb.path().join("cases");
    let accepted = replay(
        &cfg,
        Some(2),
        &["--accept", &cases.display().to_string()],
        &[&rec_dir],
    );
    assert_eq!(accepted.status.code(), Some(0), "{accepted:?}");
    let v2 = guests::guest_wasm("replay-v2");
    let cache = cache_dir();
    let test = |wasm: &Path| {
        sluice(&[
            "test",
            "--config",
            &cfg.display().to_string(),
            "--cache-dir",
            &cache.display().to_string(),
            "--policy",
            &format!("replay={}", wasm.display()),
            &cases.display().to_string(),
        ])
    };
    let ok = test(&v2);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(text.ends_with("3 passed, 0 failed\n"), "{text}");
    let bad = test(&guests::guest_wasm("replay-v1"));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.ends_with("1 passed, 2 failed\n"), "{text}");

    // A corrupt line and a truncated file: each named with its line, and
    // every other session still replays.
    let files = sb.path().join("damaged");
    std::fs::create_dir_all(&files).unwrap();
    let good = files.join("a-good.jsonl");
    std::fs::write(&good, format!("{}\n", lines.join("\n"))).unwrap();
    let corrupt = files.join("b-corrupt.jsonl");
    std::fs::write(
        &corrupt,
        format!("{}\n{{\"format\": oops\n{}\n", lines[0], lines[2]),
    )
    .unwrap();
    let truncated = files.join("c-truncated.jsonl");
    let cut = &lines[2][..lines[2].len() / 2];
    std::fs::write(&truncated, format!("{}\n{}\n{cut}", lines[0], lines[1])).unwrap();
    let out = replay(&cfg, Some(2), &["--json"], &[&files]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc = json(&out);
    assert_eq!(doc["summary"]["sessions"], 9, "{doc:#}");
    assert_eq!(doc["summary"]["unreadable"], 2, "{doc:#}");
    assert_eq!(doc["summary"]["changed"], 5, "{doc:#}");
    assert_eq!(doc["summary"]["unchanged"], 2, "{doc:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let corrupt_at = format!("{}:2: not a JSON object", corrupt.display());
    assert!(stderr.contains(&corrupt_at), "{stderr}");
    let truncated_at = format!("{}:3: not a JSON object", truncated.display());
    assert!(stderr.contains(&truncated_at), "{stderr}");
    assert!(stderr.contains("truncated?"), "{stderr}");
    let text = String::from_utf8_lossy(&replay(&cfg, Some(2), &[], &[&files]).stdout).into_owned();
    assert!(
        text.contains(&format!("{}:2: unreadable\n", corrupt.display())),
        "{text}"
    );
}

#[test]
fn a_redacted_recording_replays_the_stages_that_do_not_need_the_body() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&config(&sb, 1, "\"rejected\"", "redact = true"), 2);
    let cfg = sb.config_path();

    // Nothing refused: not recorded.
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let r = c.send_mail(
        "eve@example.org",
        &["x@example.com"],
        b"Subject: hi\r\n\r\nsecret body\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);
    // A refused recipient: recorded, with the message redacted.
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    c.expect("MAIL FROM:<fay@example.org>", 250);
    for r in ["bob", "c1", "c2"] {
        c.expect(&format!("RCPT TO:<{r}@example.com>"), 250);
    }
    c.expect("RCPT TO:<c3@example.com>", 451);
    c.expect("DATA", 354);
    c.write(b"Subject: your invoice\r\n\r\nsecret body\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.expect("QUIT", 221);

    let rec_dir = sb.path().join("rec");
    let lines = stop_and_read(server, &rec_dir);
    assert_eq!(
        lines.len(),
        1,
        "only the session with a refusal: {lines:#?}"
    );
    assert!(!lines[0].contains("secret body"), "{}", lines[0]);
    assert!(lines[0].contains("\"redacted\":true"), "{}", lines[0]);
    assert!(lines[0].contains("Subject: your invoice"), "{}", lines[0]);

    let out = replay(&cfg, Some(2), &["--json"], &[&rec_dir]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json(&out);
    let s = &doc["sessions"][0];
    assert_eq!(
        changes(s),
        [
            ch(
                "rcpt bob@example.com",
                "accept",
                "reject 550 5.7.1 bob@example.com is blocked by v2"
            ),
            ch(
                "rcpt c3@example.com",
                "tempfail 451 4.7.1 too many recipients (4)",
                "tempfail 451 4.7.1 too many recipients (3)"
            ),
        ],
        "{s:#}"
    );
    assert_eq!(s["skipped"], serde_json::json!(["data"]));
    assert_eq!(doc["summary"]["skipped"], 1);
    let text =
        String::from_utf8_lossy(&replay(&cfg, Some(2), &[], &[&rec_dir]).stdout).into_owned();
    assert!(
        text.contains("  data: not replayed (message recorded redacted)\n"),
        "{text}"
    );
}

#[test]
fn a_recording_folder_that_cannot_be_written_stops_recording_not_mail() {
    let sb = Sandbox::new();
    // The recording folder would be inside a regular file.
    let blocker = sb.write("blocker", b"not a folder");
    let text = config(&sb, 1, "\"all\"", "").replace(
        &format!("dir = \"{}\"", sb.path().join("rec").display()),
        &format!("dir = \"{}\"", blocker.join("rec").display()),
    );
    let server = sb.start_toml(&text, 2);
    let started = Instant::now();
    for n in 0..3 {
        let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
        let r = c.send_mail(
            &format!("s{n}@example.org"),
            &["x@example.com"],
            b"Subject: hi\r\n\r\nbody\r\n",
        );
        assert_eq!(r.code, 250, "{r:?}");
        c.expect("QUIT", 221);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(sb.spool().ids().len(), 3);
    let warned = server.wait_log(
        "cannot write the recording: recording stops for a while (mail is not affected)",
        Duration::from_secs(10),
        |_| true,
    );
    assert!(warned.is_some(), "log:\n{}", server.log_text());
}
