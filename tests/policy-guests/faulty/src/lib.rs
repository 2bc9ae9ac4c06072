//! `faulty`: a test policy that misbehaves on purpose, to show the host
//! contains it. The behaviour comes from the config `mode` (for every hook
//! and for `init` when it starts with "init-"), or at rcpt from the
//! recipient's local part:
//!
//! - `ok`: continue (also the recipient `ok@…` whatever the mode)
//! - `trap`: `unreachable` instruction; `panic`: a Rust panic
//! - `loop`: an endless loop
//! - `alloc`: allocate (and touch) 1 GiB
//! - `bigstring`: reject with a 100 MB reply text
//! - `slow`: busy loop for 30 ms (wall clock), then continue
//! - `stdout`: print 1 MiB to stdout and stderr, then continue
//! - `logspam`: 1000 log lines of 10 KiB each, then continue
//! - `init-fail`, `init-trap`, `init-loop`: init fails, traps or loops

wit_bindgen::generate!({ path: "../../../wit", world: "policy-world" });

use std::sync::OnceLock;

use exports::sluice::policy::policy::Guest;
use sluice::policy::log::{Level, log};
use sluice::policy::message::Message;
use sluice::policy::types::{
    DataResult, Description, Envelope, Param, Reply, Route, Session, Stage, Verdict,
};

static MODE: OnceLock<String> = OnceLock::new();

fn mode() -> &'static str {
    MODE.get().map(String::as_str).unwrap_or("ok")
}

#[inline(never)]
fn misbehave(mode: &str) -> Verdict {
    match mode {
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("faulty panics on purpose"),
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "alloc" => {
            let v = vec![1u8; 1 << 30];
            let s: u64 = v.iter().step_by(4096).map(|b| *b as u64).sum();
            Verdict::Quarantine(format!("allocated {s} pages"))
        }
        "bigstring" => Verdict::Reject(Reply {
            code: 550,
            enhanced: "5.7.1".to_string(),
            text: "x".repeat(100_000_000),
        }),
        "slow" => {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(30) {
                std::hint::black_box(0);
            }
            Verdict::Continue
        }
        "stdout" => {
            let line = "y".repeat(1023);
            for _ in 0..1024 {
                println!("{line}");
                eprintln!("{line}");
            }
            Verdict::Continue
        }
        "logspam" => {
            let line = "z".repeat(10 * 1024);
            for _ in 0..1000 {
                log(Level::Warn, &line);
            }
            Verdict::Continue
        }
        _ => Verdict::Continue,
    }
}

struct Faulty;

impl Guest for Faulty {
    fn describe() -> Description {
        Description {
            name: "faulty".to_string(),
            version: "0.0.1".to_string(),
            stages: vec![Stage::Connect, Stage::Rcpt, Stage::Data, Stage::Route],
        }
    }

    fn init(config: String) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        let mode = value
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("ok")
            .to_string();
        match mode.as_str() {
            "init-fail" => return Err("faulty refuses this config".to_string()),
            "init-trap" => core::arch::wasm32::unreachable(),
            "init-loop" => {
                misbehave("loop");
            }
            _ => {}
        }
        let _ = MODE.set(mode);
        Ok(())
    }

    fn on_connect(_: Session) -> Verdict {
        misbehave(mode())
    }

    fn on_helo(_: Session, _: String) -> Verdict {
        Verdict::Continue
    }

    fn on_mail_from(_: Session, _: String, _: Vec<Param>) -> Verdict {
        Verdict::Continue
    }

    fn on_rcpt(_: Session, _: Envelope, recipient: String, _: Vec<Param>) -> Verdict {
        let local = recipient.split('@').next().unwrap_or("");
        match local {
            "ok" | "trap" | "panic" | "loop" | "alloc" | "bigstring" | "slow" | "stdout"
            | "logspam" => misbehave(local),
            _ => misbehave(mode()),
        }
    }

    fn on_data(_: Session, _: Envelope, _: &Message) -> DataResult {
        DataResult {
            verdict: misbehave(mode()),
            changes: Vec::new(),
        }
    }

    fn on_route(_: Envelope, _: String) -> Route {
        misbehave(mode());
        Route::Default
    }
}

export!(Faulty);
