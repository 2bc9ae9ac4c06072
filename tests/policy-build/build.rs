//! Builds every Rust policy in `policies/rust/` as a WebAssembly component, so that
//! no policy can exist in the repository without being built (and, through
//! this crate's tests, checked and run through the gateway).
//!
//! For each `policies/rust/*/Cargo.toml` it runs one nested
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 --locked -p POLICY... \
//!     --target-dir TARGET/policies --config profile.release.debug=false \
//!     --config 'profile.release.strip="debuginfo"'
//! ```
//!
//! with a target folder of its own (the outer cargo holds the lock of the
//! usual one, so sharing it would deadlock), then writes `policies.rs` into
//! `OUT_DIR`: one `BuiltPolicy` per policy with the path of its `.wasm`. A
//! policy that does not build fails this build with cargo's errors.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The target the gateway loads.
const TARGET: &str = "wasm32-wasip2";

/// Profile overrides for the policies: the workspace's release profile
/// keeps line tables for the host's backtraces, which makes each component
/// about 3 MB instead of about 200 KB. Function names stay (wasmtime shows
/// them in a trapped policy's backtrace).
const PROFILE: &[&str] = &[
    "profile.release.debug=false",
    "profile.release.strip=\"debuginfo\"",
];

/// Variables of the outer build that must not reach the nested one: flags
/// meant for the host target, the outer target folder, and the wrappers
/// of `cargo clippy` (which would lint the policies for wasm32 instead of
/// building them).
const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "CARGO_PRIMARY_PACKAGE",
];

/// One policy crate.
struct PolicyCrate {
    /// Its folder name in `policies/rust/`.
    dir_name: String,
    /// Its package name.
    package: String,
    /// Its folder.
    dir: PathBuf,
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// The package name of a policy's `Cargo.toml`.
fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", manifest.display())));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| fail(&format!("{} is not valid TOML: {e}", manifest.display())));
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| fail(&format!("{} has no [package] name", manifest.display())))
}

/// Every `policies/rust/*/` folder with a `Cargo.toml`, by folder name.
fn find_policies(root: &Path) -> Vec<PolicyCrate> {
    let entries = std::fs::read_dir(root)
        .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", root.display())));
    let mut found: Vec<PolicyCrate> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|dir| PolicyCrate {
            dir_name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            package: package_name(&dir.join("Cargo.toml")),
            dir,
        })
        .collect();
    found.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    found
}

/// `TARGET/policies`: `CARGO_TARGET_DIR` when it is set (relative to the
/// workspace), else the workspace's `target/`.
fn policy_target_dir(workspace: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    target.join("policies")
}

/// The packages named in cargo's "could not compile `NAME`" lines.
fn failed_packages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.split("could not compile `").nth(1))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect()
}

fn build(workspace: &Path, target_dir: &Path, policies: &[PolicyCrate]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for setting in PROFILE {
        cmd.args(["--config", setting]);
    }
    for policy in policies {
        cmd.args(["-p", &policy.package]);
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    // cargo's internal variables (e.g. those of `cargo fix`).
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("__CARGO") {
            cmd.env_remove(var);
        }
    }
    let started = Instant::now();
    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo to build the policies: {e}")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let failed = failed_packages(&stderr);
        let mut message = String::new();
        if failed.is_empty() {
            message.push_str("building the policies in policies/ for wasm32-wasip2 failed");
        } else {
            let _ = write!(
                message,
                "these policies do not build for wasm32-wasip2: {}",
                failed.join(", ")
            );
        }
        if stderr.contains("target may not be installed") {
            message.push_str(
                " (the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2)",
            );
        }
        if stderr.contains("did not match any packages") {
            message.push_str(" (is every policies/rust/* folder a workspace member?)");
        }
        let _ = write!(message, "\n--- {cmd:?} ---\n{stderr}");
        fail(&message);
    }
    // Shown with `cargo build -vv`.
    println!(
        "built {} policies in {:.1?}",
        policies.len(),
        started.elapsed()
    );
}

/// Make cargo run this script again when the components are deleted (e.g.
/// `rm -rf target/policies`): a marker beside them, dated in the past so
/// that cargo does not take this run's own writes for a change, is watched
/// with `rerun-if-changed`; a missing file counts as changed.
fn watch_outputs(release: &Path) {
    let marker = release.join(".sluice-policy-build");
    let written = std::fs::create_dir_all(release)
        .and_then(|()| std::fs::write(&marker, b"built by tests/policy-build/build.rs\n"))
        .and_then(|()| std::fs::File::options().write(true).open(&marker))
        .and_then(|file| {
            file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
        });
    if let Err(e) = written {
        fail(&format!("cannot write {}: {e}", marker.display()));
    }
    println!("cargo:rerun-if-changed={}", marker.display());
}

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| fail("CARGO_MANIFEST_DIR is not set")),
    );
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| fail("tests/policy-build is not two levels below the workspace"))
        .to_path_buf();
    for watched in ["policies", "guest", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let policies = find_policies(&workspace.join("policies/rust"));
    let target_dir = policy_target_dir(&workspace);
    if !policies.is_empty() {
        build(&workspace, &target_dir, &policies);
    }

    let release = target_dir.join(TARGET).join("release");
    watch_outputs(&release);
    let mut out = String::from("// Generated by tests/policy-build/build.rs.\n\n");
    let _ = writeln!(
        out,
        "/// The workspace folder.\npub const WORKSPACE: &str = {:?};\n",
        workspace.display().to_string()
    );
    let _ = writeln!(
        out,
        "/// The target folder of the policy builds.\npub const POLICY_TARGET_DIR: &str = {:?};\n",
        target_dir.display().to_string()
    );
    out.push_str(
        "/// Every Rust policy in `policies/rust/`, built.\npub const POLICIES: &[BuiltPolicy] = &[\n",
    );
    for policy in &policies {
        let wasm = release.join(format!("{}.wasm", policy.package.replace('-', "_")));
        if !wasm.is_file() {
            fail(&format!(
                "policies/rust/{} built, but {} is missing: its [lib] needs crate-type = [\"cdylib\", \"rlib\"]",
                policy.dir_name,
                wasm.display()
            ));
        }
        let _ = writeln!(
            out,
            "    BuiltPolicy {{ dir_name: {:?}, package: {:?}, crate_dir: {:?}, wasm: {:?} }},",
            policy.dir_name,
            policy.package,
            policy.dir.display().to_string(),
            wasm.display().to_string()
        );
    }
    out.push_str("];\n");
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    std::fs::write(out_dir.join("policies.rs"), out)
        .unwrap_or_else(|e| fail(&format!("cannot write policies.rs: {e}")));
}
