//! `sluice policy new` makes a policy that is ready to build and test, in
//! every language: for each, make one in a temporary folder, run its unit
//! tests with the language's own runner, build it with `sluice policy
//! build`, and run its session table through the real gateway with its
//! `check_sessions.py`.

use std::path::Path;
use std::process::Command;

use sluice_lang_policies::{out_dir, sluice_bin, workspace};

fn run(what: &str, cmd: &mut Command) {
    let root = workspace();
    let mut paths = vec![
        root.join(".tools/py/bin"),
        root.join(".tools/node/node_modules/.bin"),
    ];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    cmd.env(
        "PATH",
        std::env::join_paths(paths).unwrap_or_else(|e| panic!("{e}")),
    );
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?}: {e} (scripts/test installs the tools)")
    });
    assert!(
        output.status.success(),
        "{what} failed: {cmd:?}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The workspace's toolchain (rust-toolchain.toml), which has the
/// wasm32-wasip2 target.
fn toolchain() -> String {
    let text = std::fs::read_to_string(workspace().join("rust-toolchain.toml")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .map(|v| {
            v.trim_start_matches([' ', '='])
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_else(|| "stable".into())
}

fn python() -> std::path::PathBuf {
    let venv = workspace().join(".tools/py/bin/python");
    assert!(
        venv.is_file(),
        "{} is missing: scripts/test makes it (python3 -m venv .tools/py, pip install pytest)",
        venv.display()
    );
    venv
}

/// Make, unit-test, build and session-test a new policy in `lang`.
fn scaffold(lang: &str, unit_test: impl FnOnce(&Path)) {
    let tmp = tempfile::Builder::new()
        .prefix("sluice-new-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let name = format!("demo-{lang}");
    let dir = tmp.path().join(&name);
    run(
        "sluice policy new",
        Command::new(sluice_bin())
            .args(["policy", "new", "--lang", lang, &name])
            .arg(&dir),
    );
    unit_test(&dir);
    // A Rust policy builds in one target folder for every run (its
    // dependencies build once), with the workspace's toolchain.
    run(
        "sluice policy build",
        Command::new(sluice_bin())
            .args(["policy", "build"])
            .arg(&dir)
            .env("CARGO_TARGET_DIR", out_dir().join("scaffold-rust-target"))
            .env("RUSTUP_TOOLCHAIN", toolchain()),
    );
    assert!(dir.join("target").join(format!("{name}.wasm")).is_file());
    run(
        "check_sessions.py",
        Command::new(python())
            .arg(dir.join("check_sessions.py"))
            .env("SLUICE", sluice_bin()),
    );
}

#[test]
fn a_new_python_policy_tests_builds_and_runs() {
    scaffold("python", |dir| {
        run(
            "pytest",
            Command::new(python())
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
                .current_dir(dir),
        );
    });
}

#[test]
fn a_new_js_policy_tests_builds_and_runs() {
    scaffold("js", |dir| {
        run(
            "node --test",
            Command::new("node").arg("--test").current_dir(dir),
        );
    });
}

#[test]
fn a_new_rust_policy_tests_builds_and_runs() {
    scaffold("rust", |dir| {
        run(
            "cargo test",
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["test", "--quiet"])
                .current_dir(dir)
                .env("CARGO_TARGET_DIR", out_dir().join("scaffold-rust-target"))
                .env("RUSTUP_TOOLCHAIN", toolchain()),
        );
    });
}

/// C has no unit-test runner of its own here: the new policy's test is
/// its session table, run through the gateway.
#[test]
fn a_new_c_policy_builds_and_runs() {
    scaffold("c", |_| {});
}
