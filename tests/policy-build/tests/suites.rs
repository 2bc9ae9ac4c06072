//! Every policy in `policies/` carries a session suite in its `sessions/`
//! folder (a `sluice-test.toml` and `*.smtp` transcripts, some sending
//! messages from `tests/corpus/`), and the suite passes under
//! `sluice test` with the component this crate built.
//!
//! Each `sluice test` run is bounded in time and killed (by PID) past it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_policy_build::{POLICIES, POLICY_TARGET_DIR};
use sluice_test_kit::sluice_bin;

/// How long one suite may run (a debug gateway compiles each component
/// that is not in the cache yet: seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

/// The `name = "…"` of every `[[policy]]` of a suite config.
fn policy_names(config: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_policy = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_policy = line == "[[policy]]";
        } else if in_policy
            && let Some(rest) = line.strip_prefix("name")
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            names.push(value.trim().trim_matches('"').to_string());
        }
    }
    names
}

/// Run `cmd` to its end within `timeout`; (exit code, stdout, stderr).
fn run(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    (status.and_then(|s| s.code()), out, err)
}

#[test]
fn every_policy_suite_passes() {
    let bin = sluice_bin();
    let cache = Path::new(POLICY_TARGET_DIR).join("engine-cache");
    let mut failures = Vec::new();
    for p in POLICIES {
        let dir = Path::new(p.crate_dir).join("sessions");
        let config = dir.join("sluice-test.toml");
        let Ok(text) = std::fs::read_to_string(&config) else {
            failures.push(format!(
                "policies/rust/{}: no sessions/sluice-test.toml (every policy carries a session suite)",
                p.dir_name
            ));
            continue;
        };
        let names = policy_names(&text);
        assert!(!names.is_empty(), "{}: no [[policy]]", config.display());
        let mut cmd = Command::new(&bin);
        cmd.arg("test").arg("--cache-dir").arg(&cache);
        for name in &names {
            cmd.arg("--policy").arg(format!("{name}={}", p.wasm));
        }
        cmd.arg(&dir);
        let (code, out, err) = run(&mut cmd, SUITE_TIMEOUT);
        let last = out.lines().last().unwrap_or("");
        let cases: usize = last
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if code != Some(0) || !last.ends_with(" passed, 0 failed") || cases < 3 {
            failures.push(format!(
                "policies/rust/{} suite (exit {code:?}, at least 3 cases wanted):\n{out}{err}",
                p.dir_name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn suite_configs_name_their_policies() {
    assert_eq!(
        policy_names(
            "[[policy]]\nname = \"a\"\n[policy.config]\nname = \"x\"\n[[policy]]\nname = \"b\"\n"
        ),
        ["a", "b"]
    );
}
