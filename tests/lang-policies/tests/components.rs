//! Every policy in `policies/python/` and `policies/js/`
//! builds with `sluice policy build`, is a component for this contract
//! (exports `sluice:policy/policy@0.1.0`, imports only the contract and
//! WASI), ships with unit tests, and passes `sluice policy compile`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_lang_policies::{
    component, engine_section, out_dir, policy_dirs, sluice_bin, workspace,
};
use wasmparser::{Parser, Payload};

const EXPORT: &str = "sluice:policy/policy@0.1.0";
const LANGS: &[(&str, &str)] = &[
    ("python", "a test_*.py for python -m pytest"),
    ("js", "a *.test.js for node --test"),
];

fn every_component() -> Vec<(String, PathBuf)> {
    let mut all = Vec::new();
    for (lang, _) in LANGS {
        for name in policy_dirs(lang) {
            all.push((format!("{lang}/{name}"), component(lang, &name)));
        }
    }
    all
}

fn exports_and_imports(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut exports, mut imports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.unwrap_or_else(|e| panic!("component does not parse: {e}")) {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for e in reader {
                    exports.push(e.unwrap_or_else(|e| panic!("{e}")).name.name.to_string());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for i in reader {
                    imports.push(i.unwrap_or_else(|e| panic!("{e}")).name.name.to_string());
                }
            }
            _ => {}
        }
    }
    (exports, imports)
}

#[test]
fn there_are_python_and_js_policies() {
    assert!(
        policy_dirs("python").len() >= 2,
        "policies/python/ has at least two policies"
    );
    assert!(
        policy_dirs("js").len() >= 2,
        "policies/js/ has at least two policies"
    );
}

#[test]
fn every_policy_has_unit_tests() {
    for (lang, what) in LANGS {
        for name in policy_dirs(lang) {
            let dir = workspace().join("policies").join(lang).join(&name);
            let has = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .any(|f| match *lang {
                    "js" => f.ends_with(".test.js"),
                    _ => f.starts_with("test_") && f.ends_with(".py"),
                });
            assert!(
                has,
                "policies/{lang}/{name} has no unit tests: it needs {what}"
            );
        }
    }
}

#[test]
fn every_component_is_a_policy_for_this_contract() {
    for (name, wasm) in every_component() {
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        assert!(
            bytes.starts_with(b"\0asm\x0d\0\x01\0"),
            "{name}: not a component"
        );
        let (exports, imports) = exports_and_imports(&bytes);
        assert!(
            exports.iter().any(|e| e == EXPORT),
            "{name} does not export {EXPORT}: {exports:?}"
        );
        for import in &imports {
            assert!(
                import.starts_with("sluice:policy/") || import.starts_with("wasi:"),
                "{name} imports {import}, which the gateway does not provide"
            );
        }
    }
}

#[test]
fn the_gateway_compiles_every_component() {
    let components = every_component();
    let config = out_dir().join("compile.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{}",
            out_dir().join("compile-data").display().to_string(),
            engine_section()
        ),
    )
    .unwrap_or_else(|e| panic!("write config: {e}"));
    let output = Command::new(sluice_bin())
        .args(["policy", "compile", "--config"])
        .arg(&config)
        .args(components.iter().map(|(_, w)| w.as_path()))
        .output()
        .unwrap_or_else(|e| panic!("run sluice policy compile: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sluice policy compile refused a component:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (_, wasm) in &components {
        assert!(
            stdout.contains(&format!("{}: ", Path::new(wasm).display())),
            "{stdout}"
        );
    }
}

/// The C policies (no unit-test runner: their tests are the equivalence
/// sessions) are components for this contract that import nothing but the
/// contract: zig's wasm32-wasi reactor with wasi-libc's malloc needs no
/// WASI function, hence no adapter.
#[test]
fn every_c_policy_is_a_component_importing_only_the_contract() {
    let names = policy_dirs("c");
    assert!(!names.is_empty(), "policies/c/ has a policy");
    for name in names {
        let wasm = component("c", &name);
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        assert!(
            bytes.starts_with(b"\0asm\x0d\0\x01\0"),
            "c/{name}: not a component"
        );
        let (exports, imports) = exports_and_imports(&bytes);
        assert!(
            exports.iter().any(|e| e == EXPORT),
            "c/{name} does not export {EXPORT}: {exports:?}"
        );
        for import in &imports {
            assert!(
                import.starts_with("sluice:policy/"),
                "c/{name} imports {import}"
            );
        }
    }
}
