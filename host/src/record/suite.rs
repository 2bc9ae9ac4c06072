//! `sluice replay` and `sluice test`: reading inputs, running replays,
//! printing reports. Output is deterministic: inputs in the order given
//! (folders listed by name), no times, no paths but those given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::replay::{Replayer, StepChange, Unrecorded, diff, steps};
use super::schema::{self, SessionRecord, Source};
use super::transcript;
use crate::config::Config;

/// Options of `sluice replay`.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The gateway config (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// `--policy NAME=FILE.wasm`.
    pub policies: Vec<(String, PathBuf)>,
    /// Recording files or folders of them.
    pub inputs: Vec<PathBuf>,
    /// Print JSON.
    pub json: bool,
    /// Exit 1 when a session changed.
    pub fail_on_diff: bool,
    /// Write each replayed session to this folder as a test case.
    pub accept: Option<PathBuf>,
    /// Host calls the recording does not have.
    pub unrecorded: Unrecorded,
    /// Compiled-code cache (`None`: the config's).
    pub cache_dir: Option<PathBuf>,
}

/// One session's result.
#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    /// `FILE:LINE`.
    pub source: String,
    /// Session id (empty when the line was unreadable).
    pub id: String,
    /// The client, `ip:port`.
    pub peer: String,
    /// `unchanged`, `changed`, `failed` or `unreadable`.
    pub status: &'static str,
    /// What changed, step by step.
    pub changes: Vec<ChangeReport>,
    /// Steps not replayed (a redacted message).
    pub skipped: Vec<String>,
    /// Errors (an unreadable line, unrecorded host calls).
    pub errors: Vec<String>,
}

/// One change, for JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    /// The step.
    pub step: String,
    /// Outcome in the recording (`null`: not there).
    pub before: Option<String>,
    /// Outcome in the replay (`null`: not reached).
    pub after: Option<String>,
}

impl From<&StepChange> for ChangeReport {
    fn from(c: &StepChange) -> Self {
        ChangeReport {
            step: c.step.clone(),
            before: c.before.clone(),
            after: c.after.clone(),
        }
    }
}

/// Totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Sessions read (unreadable lines included).
    pub sessions: usize,
    /// With at least one change.
    pub changed: usize,
    /// Without.
    pub unchanged: usize,
    /// Replayed with errors.
    pub failed: usize,
    /// Lines (or files) that could not be read.
    pub unreadable: usize,
    /// Changed steps, all sessions together.
    pub changes: usize,
    /// Steps skipped.
    pub skipped: usize,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The `.jsonl` files of `input` (itself, or a folder's, by name).
fn recording_files(input: &Path) -> Vec<PathBuf> {
    if input.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    } else {
        vec![input.to_path_buf()]
    }
}

/// `sluice replay`: returns the exit code (0; 1 with `--fail-on-diff` and
/// a change; 2 when a session could not be read or replayed).
pub fn replay_main(opts: ReplayOptions) -> anyhow::Result<u8> {
    let config = match &opts.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    let cache = opts
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.policy_engine.cache_dir.clone());
    let rt = runtime()?;
    let replayer = rt.block_on(Replayer::load(
        config,
        &opts.policies,
        cache,
        opts.unrecorded,
    ))?;
    if let Some(dir) = &opts.accept {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--accept {}: {e}", dir.display()))?;
    }
    let mut reports = Vec::new();
    for input in &opts.inputs {
        for file in recording_files(input) {
            let lines = match schema::read_file(&file) {
                Ok(l) => l,
                Err(e) => {
                    reports.push(unreadable(file.display().to_string(), e));
                    continue;
                }
            };
            for (source, parsed) in lines {
                let rec = match parsed {
                    Ok(r) => r,
                    Err(e) => {
                        reports.push(unreadable(source.to_string(), format!("{source}: {e}")));
                        continue;
                    }
                };
                let replayed = rt.block_on(replayer.replay(&rec, Vec::new()));
                let after = replayed.record.as_ref().map(steps).unwrap_or_default();
                let changes = diff(&steps(&rec), &after);
                if let (Some(dir), Some(r)) = (&opts.accept, &replayed.record)
                    && replayed.errors.is_empty()
                {
                    accept(dir, r)?;
                }
                reports.push(report(
                    &source,
                    &rec,
                    &changes,
                    replayed.skipped,
                    replayed.errors,
                ));
            }
        }
    }
    let summary = summarize(&reports);
    if opts.json {
        let doc = serde_json::json!({ "sessions": reports, "summary": summary });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text_report(&reports, &summary));
    }
    for r in &reports {
        for e in &r.errors {
            eprintln!("sluice replay: {e}");
        }
    }
    Ok(if summary.failed + summary.unreadable > 0 {
        2
    } else if opts.fail_on_diff && summary.changed > 0 {
        1
    } else {
        0
    })
}

fn unreadable(source: String, error: String) -> SessionReport {
    SessionReport {
        source,
        id: String::new(),
        peer: String::new(),
        status: "unreadable",
        changes: Vec::new(),
        skipped: Vec::new(),
        errors: vec![error],
    }
}

fn report(
    source: &Source,
    rec: &SessionRecord,
    changes: &[StepChange],
    skipped: Vec<String>,
    errors: Vec<String>,
) -> SessionReport {
    let status = if !errors.is_empty() {
        "failed"
    } else if changes.is_empty() {
        "unchanged"
    } else {
        "changed"
    };
    SessionReport {
        source: source.to_string(),
        id: rec.id.clone(),
        peer: format!("{}:{}", rec.peer.ip, rec.peer.port),
        status,
        changes: changes.iter().map(ChangeReport::from).collect(),
        skipped,
        errors: errors.iter().map(|e| format!("{source}: {e}")).collect(),
    }
}

fn summarize(reports: &[SessionReport]) -> Summary {
    let mut s = Summary {
        sessions: reports.len(),
        ..Summary::default()
    };
    for r in reports {
        match r.status {
            "changed" => s.changed += 1,
            "unchanged" => s.unchanged += 1,
            "failed" => s.failed += 1,
            _ => s.unreadable += 1,
        }
        s.changes += r.changes.len();
        s.skipped += r.skipped.len();
    }
    s
}

fn text_report(reports: &[SessionReport], s: &Summary) -> String {
    let mut out = String::new();
    for r in reports {
        match r.status {
            "unreadable" => {
                let _ = writeln!(out, "{}: unreadable", r.source);
            }
            status => {
                let what = match status {
                    "changed" => format!(
                        "{} change{}",
                        r.changes.len(),
                        if r.changes.len() == 1 { "" } else { "s" }
                    ),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{} {} {}: {what}", r.source, r.id, r.peer);
            }
        }
        for c in &r.changes {
            let c = StepChange {
                step: c.step.clone(),
                before: c.before.clone(),
                after: c.after.clone(),
            };
            let _ = writeln!(out, "  {c}");
        }
        for k in &r.skipped {
            let _ = writeln!(out, "  {k}: not replayed (message recorded redacted)");
        }
        for e in &r.errors {
            let _ = writeln!(out, "  error: {e}");
        }
    }
    let _ = writeln!(
        out,
        "{} session{}: {} changed, {} unchanged, {} failed, {} unreadable; {} step{} changed, {} skipped",
        s.sessions,
        if s.sessions == 1 { "" } else { "s" },
        s.changed,
        s.unchanged,
        s.failed,
        s.unreadable,
        s.changes,
        if s.changes == 1 { "" } else { "s" },
        s.skipped
    );
    out
}

/// Write a replayed session as a test case: `DIR/<id>.jsonl`.
fn accept(dir: &Path, rec: &SessionRecord) -> anyhow::Result<()> {
    let name: String = rec
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.jsonl"));
    let mut line = rec.to_line();
    line.push('\n');
    std::fs::write(&path, line).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// sluice test

/// Options of `sluice test`.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The folder of cases.
    pub dir: PathBuf,
    /// The config (`None`: `DIR/sluice-test.toml`).
    pub config: Option<PathBuf>,
    /// `--policy NAME=FILE.wasm`.
    pub policies: Vec<(String, PathBuf)>,
    /// Host calls a case does not answer.
    pub unrecorded: Unrecorded,
    /// Compiled-code cache (`None`: the user's own cache folder,
    /// [`user_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

/// `sluice test`'s compiled-code cache when none is given: in the user's
/// own cache folder (`$XDG_CACHE_HOME/sluice/policy-cache`, else
/// `~/.cache/sluice/policy-cache`), never in the temporary folder that
/// every local user shares (another user could plant compiled code there).
pub fn user_cache_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .filter(|p| p.is_absolute())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no HOME or XDG_CACHE_HOME for the compiled-policy cache: give --cache-dir"
            )
        })?;
    Ok(base.join("sluice").join("policy-cache"))
}

/// The config of a suite; relative policy paths are relative to its file.
fn suite_config(path: &Path) -> anyhow::Result<Config> {
    let mut cfg = Config::load(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut cfg.policies {
        if p.path.is_relative() {
            p.path = base.join(&p.path);
        }
    }
    Ok(cfg)
}

/// `sluice test DIR`: prints one line per case and the totals; returns 0
/// when every case passed.
pub fn test_main(opts: TestOptions) -> anyhow::Result<u8> {
    let config_path = opts
        .config
        .clone()
        .unwrap_or_else(|| opts.dir.join("sluice-test.toml"));
    if !config_path.is_file() {
        anyhow::bail!(
            "{}: no such file (a test folder holds sluice-test.toml, the gateway config its cases run with; or give --config)",
            config_path.display()
        );
    }
    let config = suite_config(&config_path)?;
    let cache = opts.cache_dir.clone().map_or_else(user_cache_dir, Ok)?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&opts.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", opts.dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl" || x == "smtp"))
        .collect();
    entries.sort();
    let rt = runtime()?;
    let replayer = rt.block_on(Replayer::load(
        config,
        &opts.policies,
        cache,
        opts.unrecorded,
    ))?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut results: Vec<(String, Vec<String>)> = Vec::new();
        if path.extension().is_some_and(|x| x == "smtp") {
            let problems = match std::fs::read_to_string(path) {
                Err(e) => vec![format!("{}: {e}", path.display())],
                Ok(text) => {
                    let base = path.parent().unwrap_or(Path::new("."));
                    match transcript::parse(&text, &name, base) {
                        Err(e) => vec![e],
                        Ok(t) => rt.block_on(run_transcript(&replayer, t)),
                    }
                }
            };
            results.push((name, problems));
        } else {
            match schema::read_file(path) {
                Err(e) => results.push((name, vec![e])),
                Ok(lines) => {
                    for (source, parsed) in lines {
                        let case = format!("{name}:{}", source.line);
                        let problems = match parsed {
                            Err(e) => vec![e],
                            Ok(rec) => {
                                let r = rt.block_on(replayer.replay(&rec, Vec::new()));
                                let after = r.record.as_ref().map(steps).unwrap_or_default();
                                let mut p: Vec<String> = diff(&steps(&rec), &after)
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect();
                                p.extend(r.errors);
                                p
                            }
                        };
                        results.push((case, problems));
                    }
                }
            }
        }
        for (case, problems) in results {
            if problems.is_empty() {
                passed += 1;
                println!("ok    {case}");
            } else {
                failed += 1;
                println!("FAIL  {case}");
                for p in problems {
                    println!("      {p}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if passed + failed == 0 {
        eprintln!(
            "sluice test: no cases (*.smtp, *.jsonl) in {}",
            opts.dir.display()
        );
        return Ok(1);
    }
    Ok(u8::from(failed > 0))
}

/// Replay a transcript and check what it expects.
async fn run_transcript(replayer: &Replayer, t: transcript::Transcript) -> Vec<String> {
    let r = replayer.replay(&t.record, t.answers.clone()).await;
    let actual = r.record.as_ref().map(steps).unwrap_or_default();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    let keyed: Vec<((&str, usize), &super::replay::Step)> = actual
        .iter()
        .map(|s| {
            let n = seen.entry(s.label.as_str()).or_default();
            *n += 1;
            ((s.label.as_str(), *n), s)
        })
        .collect();
    let mut problems = r.errors.clone();
    for (line, rcpt, want) in &t.routes {
        let got = replayer.route(rcpt).await;
        if !got.starts_with(want.as_str()) {
            problems.push(format!(
                "line {line}: route {rcpt}: expected {want} → got {got}"
            ));
        }
    }
    for e in &t.expected {
        let Some((_, step)) = keyed
            .iter()
            .find(|(k, _)| *k == (e.label.as_str(), e.occurrence))
        else {
            problems.push(format!(
                "line {}: {}: expected {} → not reached",
                e.line, e.label, e.reply
            ));
            continue;
        };
        if !step.reply.starts_with(&e.reply) {
            problems.push(format!(
                "line {}: {}: expected {} → got {}",
                e.line,
                e.label,
                e.reply,
                if step.reply.is_empty() {
                    "(no reply)"
                } else {
                    &step.reply
                }
            ));
            continue;
        }
        for x in &e.extras {
            let ok = if x == "no-changes" {
                step.changes.is_empty()
            } else if x.starts_with("discard")
                || x.starts_with("quarantine")
                || x.starts_with("accept")
            {
                step.outcome.starts_with(x.as_str())
            } else {
                step.changes.iter().any(|c| c == x)
            };
            if !ok {
                problems.push(format!(
                    "line {}: data: expected {x} → got {}",
                    e.line, step.outcome
                ));
            }
        }
    }
    problems
}
