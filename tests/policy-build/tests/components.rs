//! Checks of every built policy component: it exists for every folder of
//! `policies/`, it is a Sluice policy for this contract, its crate has unit
//! tests, and the gateway's own loader accepts it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_policy_build::{BuiltPolicy, POLICIES, POLICY_TARGET_DIR, WORKSPACE};
use sluice_test_kit::sluice_bin;
use wasmparser::{Encoding, Parser, Payload};

/// The interface every policy exports.
const EXPORT: &str = "sluice:policy/policy@0.1.0";

fn read(policy: &BuiltPolicy) -> Vec<u8> {
    std::fs::read(policy.wasm).unwrap_or_else(|e| {
        panic!(
            "policies/rust/{}: cannot read its component {}: {e} (it is built by this crate's build \
             script; `touch policies` makes it run again)",
            policy.dir_name, policy.wasm
        )
    })
}

#[test]
fn every_policy_folder_has_a_built_component() {
    let root = Path::new(WORKSPACE).join("policies/rust");
    let mut folders: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let built: Vec<&str> = POLICIES.iter().map(|p| p.dir_name).collect();
    assert_eq!(
        folders, built,
        "every folder in policies/ must be a policy crate (with a Cargo.toml) that this crate built"
    );
    assert!(
        !POLICIES.is_empty(),
        "no policies found in {}",
        root.display()
    );
    for policy in POLICIES {
        let bytes = read(policy);
        // A component, not a core module: magic, then version 0x0d, layer 1.
        assert!(
            bytes.starts_with(b"\0asm\x0d\0\x01\0"),
            "policies/rust/{}: {} is not a WebAssembly component",
            policy.dir_name,
            policy.wasm
        );
    }
}

/// What a component says about itself.
#[derive(Debug, Default)]
struct Inspection {
    /// Names exported by the outer component.
    exports: Vec<String>,
    /// Names imported by the outer component.
    imports: Vec<String>,
    /// Custom sections named `sluice-sdk`, anywhere inside.
    stamps: Vec<String>,
}

fn inspect(bytes: &[u8]) -> Result<Inspection, wasmparser::BinaryReaderError> {
    let mut found = Inspection::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 {
                    assert_eq!(
                        encoding,
                        Encoding::Component,
                        "the outer layer is a component"
                    );
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    found.exports.push(export?.name.name.to_string());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    found.imports.push(import?.name.name.to_string());
                }
            }
            Payload::CustomSection(section) if section.name() == "sluice-sdk" => {
                found
                    .stamps
                    .push(String::from_utf8_lossy(section.data()).into_owned());
            }
            _ => {}
        }
    }
    Ok(found)
}

#[test]
fn every_component_is_a_policy_for_this_contract() {
    for policy in POLICIES {
        let name = policy.dir_name;
        let found = inspect(&read(policy))
            .unwrap_or_else(|e| panic!("policies/rust/{name}: the component does not parse: {e}"));
        assert!(
            found.exports.iter().any(|e| e == EXPORT),
            "policies/rust/{name} does not export {EXPORT}; it exports {:?}",
            found.exports
        );
        assert!(
            found
                .stamps
                .iter()
                .any(|s| s.starts_with("sluice-guest ") && s.ends_with("; wit sluice:policy@0.1.0")),
            "policies/rust/{name} carries no sluice-sdk stamp for sluice:policy@0.1.0: {:?}",
            found.stamps
        );
        for import in &found.imports {
            assert!(
                import.starts_with("sluice:policy/") || import.starts_with("wasi:"),
                "policies/rust/{name} imports {import}, which the gateway does not provide"
            );
        }
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_policy_has_unit_tests() {
    for policy in POLICIES {
        let mut files = Vec::new();
        rust_files(&Path::new(policy.crate_dir).join("src"), &mut files);
        rust_files(&Path::new(policy.crate_dir).join("tests"), &mut files);
        let tests: usize = files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .matches("#[test]")
                    .count()
            })
            .sum();
        assert!(
            tests > 0,
            "policies/rust/{} has no #[test]: every policy ships with unit tests (MockHost, MockMessage)",
            policy.dir_name
        );
    }
}

#[test]
fn the_gateway_compiles_every_policy() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = dir.path().join("sluice.toml");
    let cache = Path::new(POLICY_TARGET_DIR).join("engine-cache");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[policy_engine]\ncache_dir = {:?}\n",
            dir.path().join("data").display().to_string(),
            cache.display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("write config: {e}"));
    let output = Command::new(sluice_bin())
        .args(["policy", "compile", "--config"])
        .arg(&config)
        .args(POLICIES.iter().map(|p| p.wasm))
        .output()
        .unwrap_or_else(|e| panic!("run sluice policy compile: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice policy compile refused a policy:\n{stdout}\n{stderr}"
    );
    for policy in POLICIES {
        assert!(
            stdout.contains(&format!("{}: ", policy.wasm)),
            "sluice policy compile did not report {}:\n{stdout}",
            policy.wasm
        );
    }
}
