//! `versioned`: a test policy for hot swap. Its version is four digits in
//! a marker its data segment carries as is (`sluice-test-version:NNNN`):
//! the tests make version N by copying the built component and rewriting
//! those digits, so two versions differ in hash and in behaviour without
//! a second build.
//!
//! - describe: version "N" (leading zeros dropped).
//! - init: version 0 refuses to start ("version 0 refuses to start").
//! - connect: remembers the version in the key-value store under the
//!   client's address and port (needs the `kv` capability).
//! - rcpt: local part `version` → 550 5.7.1 "version N" (a probe); any
//!   other: remembers the version under the envelope sender, continue.
//! - data: adds `X-Policy-Version: N; connect=A; rcpt=B`, A and B being
//!   what the connect and rcpt stages of this session remembered, so a
//!   message shows whether every stage of its session saw one version.

wit_bindgen::generate!({ path: "../../../wit", world: "policy-world" });

use exports::sluice::policy::policy::Guest;
use sluice::policy::kv;
use sluice::policy::message::Message;
use sluice::policy::types::{
    Change, DataResult, Description, Envelope, Header, Param, Reply, Route, Session, Stage,
    Verdict,
};

/// The marker; the digits are rewritten in copies of the component.
#[used]
static MARKER: [u8; 24] = *b"sluice-test-version:0001";

fn version() -> u32 {
    // Read through a volatile pointer so the digits are read from memory
    // (the data segment), never folded into code at compile time.
    let bytes: [u8; 24] = unsafe { core::ptr::read_volatile(&MARKER) };
    bytes[20..]
        .iter()
        .fold(0, |n, d| n * 10 + u32::from(d.wrapping_sub(b'0') % 10))
}

fn remembered(key: &str) -> String {
    match kv::get(key) {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        Ok(None) => "none".to_string(),
        Err(_) => "error".to_string(),
    }
}

struct Versioned;

impl Guest for Versioned {
    fn describe() -> Description {
        Description {
            name: "versioned".to_string(),
            version: version().to_string(),
            stages: vec![Stage::Connect, Stage::Rcpt, Stage::Data],
        }
    }

    fn init(_config: String) -> Result<(), String> {
        if version() == 0 {
            return Err("version 0 refuses to start".to_string());
        }
        Ok(())
    }

    fn on_connect(session: Session) -> Verdict {
        let key = format!("conn:{}:{}", session.client_ip, session.client_port);
        let _ = kv::set(&key, version().to_string().as_bytes(), 600);
        Verdict::Continue
    }

    fn on_helo(_: Session, _: String) -> Verdict {
        Verdict::Continue
    }

    fn on_mail_from(_: Session, _: String, _: Vec<Param>) -> Verdict {
        Verdict::Continue
    }

    fn on_rcpt(_: Session, envelope: Envelope, recipient: String, _: Vec<Param>) -> Verdict {
        if recipient.split('@').next() == Some("version") {
            return Verdict::Reject(Reply {
                code: 550,
                enhanced: "5.7.1".to_string(),
                text: format!("version {}", version()),
            });
        }
        let key = format!("rcpt:{}", envelope.sender);
        let _ = kv::set(&key, version().to_string().as_bytes(), 600);
        Verdict::Continue
    }

    fn on_data(session: Session, envelope: Envelope, _message: &Message) -> DataResult {
        let connect = remembered(&format!("conn:{}:{}", session.client_ip, session.client_port));
        let rcpt = remembered(&format!("rcpt:{}", envelope.sender));
        DataResult {
            verdict: Verdict::Continue,
            changes: vec![Change::AddHeader(Header {
                name: "X-Policy-Version".to_string(),
                value: format!("{}; connect={connect}; rcpt={rcpt}", version()),
            })],
        }
    }

    fn on_route(_: Envelope, _: String) -> Route {
        Route::Default
    }
}

export!(Versioned);
