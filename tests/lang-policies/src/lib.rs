//! Helpers for the tests of the policies written in Python and JavaScript
//! (`policies/python/`, `policies/js/`) and of
//! `sluice policy new`: build a policy with the real `sluice policy build`,
//! start the real gateway with a policy loaded, speak SMTP to it, and read
//! what it delivered.
//!
//! Servers listen on 127.0.0.1 only and are killed (by PID) when their
//! guard drops; every wait has a deadline. A missing toolchain is a test
//! failure naming what to install (`scripts/test` installs everything).

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

pub use sluice_policy_build::{POLICIES, WORKSPACE};
pub use sluice_test_kit::{
    DELIVERY, PolicyGateway, REPLY, Reply, STARTUP, Sandbox, Server, Smtp, sluice_bin,
};

/// The workspace's folder.
#[must_use]
pub fn workspace() -> &'static Path {
    Path::new(WORKSPACE)
}

/// Where this crate's tests keep what they build: `target/lang-policies`.
#[must_use]
pub fn out_dir() -> PathBuf {
    let dir = Path::new(sluice_policy_build::POLICY_TARGET_DIR)
        .parent()
        .map_or_else(|| workspace().join("target"), Path::to_path_buf)
        .join("lang-policies");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The compiled-code cache every gateway of these tests shares.
#[must_use]
pub fn engine_cache() -> PathBuf {
    out_dir().join("engine-cache")
}

/// The `[policy_engine]` section of every config here (the same settings
/// for `sluice policy compile` and `sluice serve`, so the cache is hit).
#[must_use]
pub fn engine_section() -> String {
    format!(
        "[policy_engine]\ncache_dir = {:?}\nmax_instances = 32\nmax_memory = \"128MiB\"\n",
        engine_cache().display().to_string()
    )
}

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> SystemTime {
    let mut best = SystemTime::UNIX_EPOCH;
    let Ok(meta) = std::fs::metadata(path) else {
        return best;
    };
    if meta.is_dir() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if matches!(
            name.as_deref(),
            Some("target" | "node_modules" | "__pycache__")
        ) {
            return best;
        }
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            best = best.max(newest(&entry.path()));
        }
    } else if let Ok(m) = meta.modified() {
        best = m;
    }
    best
}

/// The tool folders `scripts/test` fills, on `PATH` for the child.
fn with_tools(cmd: &mut Command) -> &mut Command {
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
        std::env::join_paths(paths).unwrap_or_else(|e| panic!("PATH: {e}")),
    )
}

/// Build the policy in `dir` with `sluice policy build` into `out`, unless
/// `out` is newer than the policy, the SDKs and the contract. Serialised
/// across the tests of one binary.
pub fn build(dir: &Path, out: &Path) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = [
        newest(dir),
        newest(&workspace().join("guest")),
        newest(&workspace().join("wit")),
        newest(&sluice_bin()),
    ]
    .into_iter()
    .max()
    .unwrap_or(SystemTime::UNIX_EPOCH);
    if std::fs::metadata(out)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > inputs)
    {
        return;
    }
    let output = with_tools(&mut Command::new(sluice_bin()))
        .args(["policy", "build"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("run sluice policy build: {e}"));
    assert!(
        output.status.success(),
        "sluice policy build {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The component of the policy `name` in `lang` ("rust", "python", "js"),
/// built if needed.
#[must_use]
pub fn component(lang: &str, name: &str) -> PathBuf {
    if lang == "rust" {
        let p = sluice_policy_build::policy(name)
            .unwrap_or_else(|| panic!("policies/rust/{name} was not built"));
        return PathBuf::from(p.wasm);
    }
    let dir = workspace().join("policies").join(lang).join(name);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let out = out_dir().join(lang).join(format!("{name}.wasm"));
    build(&dir, &out);
    out
}

/// The policy folders of a language in `policies/<lang>/`.
#[must_use]
pub fn policy_dirs(lang: &str) -> Vec<String> {
    let root = workspace().join("policies").join(lang);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("list {}: {e}", root.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "__pycache__" && n != "node_modules")
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// The gateway

/// The config of these tests: a plain listener and a PROXY listener
/// trusting loopback, delivery to Maildirs for example.com, no DNS
/// reachable, the shared compiled-code cache, then `rest` (`[[policy]]`).
/// Start it with `sandbox.start_toml(&config, 2)`.
#[must_use]
pub fn config(sandbox: &Sandbox, rest: &str) -> String {
    let cache = engine_cache();
    let gw = PolicyGateway {
        proxy: true,
        deliver: true,
        quiet_dns: true,
        engine_cache: &cache,
        max_instances: 32,
        max_memory: "128MiB",
    };
    sandbox.policy_config(&gw, rest)
}
