//! Hand-written sessions: a plain transcript (`.smtp` file) read into a
//! [`SessionRecord`] to replay, the host-call answers it gives, and the
//! replies it expects.
//!
//! ```text
//! # A comment. Settings first (all optional):
//! @client 203.0.113.7:40000          (default 192.0.2.1:40000)
//! @listener 127.0.0.1:25             (default)
//! @tls TLSv1_3 TLS13_AES_256_GCM_SHA384   (TLS from the first octet)
//! @time 2026-01-01T00:00:00Z         (the clock policies see; default this)
//! # Host-call answers (matched by call and leading arguments, in order):
//! H: dns.a 7.113.0.203.zen.test = 127.0.0.2
//! H: dns.a 8.113.0.203.zen.test = (none)
//! H: dns.a down.test = temporary: SERVFAIL
//! H: kv.incr msg:ip:203.0.113.7 = 5
//! # The session: C: client lines, S: the reply expected (its code, and
//! # optionally the start of its first line), E: more about a data stage.
//! S: 220
//! C: EHLO client.example
//! S: 250
//! C: MAIL FROM:<ann@example.org>
//! S: 250
//! C: RCPT TO:<bob@example.com>
//! S: 550 5.7.1 Access denied
//! C: DATA
//! S: 354
//! C: Subject: hello
//! C:
//! C: body lines as on the wire (dot-stuffed), ending with
//! C: .
//! S: 250
//! E: add-header X-DNSBL: zen.test
//! ```
//!
//! After `C: DATA` the `C:` lines are the message up to `C: .`; instead of
//! them, `M: FILE` sends a file (relative to the transcript; its line ends
//! made CRLF). `E:` lines after a data stage's `S:` expect `discard`,
//! `quarantine: REASON…`, a change (`add-header NAME: VALUE`,
//! `remove-header NAME`, `add-rcpt ADDR`, `remove-rcpt ADDR`), or
//! `no-changes`. A command without an `S:` line is sent and not checked.
//! `R: ADDR = ROUTE` asks the chain's route stage for a recipient and
//! expects the route to start with `ROUTE` (`local`, `relay HOST:PORT
//! tls=MODE`, `mx DOMAIN`, `reject X.Y.Z text`, `default`). BDAT is not
//! supported in transcripts.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::replay::{Entry, command_label};
use super::schema::{self, Event, SessionRecord};
use crate::policy::tap::CallResult;

/// A transcript, read.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// The session to replay.
    pub record: SessionRecord,
    /// The host-call answers it gives.
    pub(crate) answers: Vec<Entry>,
    /// The replies (and data-stage outcomes) it expects.
    pub expected: Vec<Expected>,
    /// Route expectations: `(line, recipient, expected start of the
    /// route)`.
    pub routes: Vec<(usize, String, String)>,
}

/// One expected reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The step's label (as [`super::replay::Step::label`]).
    pub label: String,
    /// Which occurrence of the label in the session (1-based).
    pub occurrence: usize,
    /// The reply expected: its code, and optionally the start of its first
    /// line (`550 5.7.1 Access denied`).
    pub reply: String,
    /// `E:` lines.
    pub extras: Vec<String>,
    /// The line of the `S:`.
    pub line: usize,
}

const DEFAULT_TIME: &str = "2026-01-01T00:00:00.000Z";

/// Read a transcript; `file` names it in errors (`FILE:LINE: …`), `base`
/// is the folder `M:` paths are relative to.
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Transcript, String> {
    let err = |n: usize, m: &str| format!("{file}:{n}: {m}");
    let mut record = SessionRecord {
        format: schema::FORMAT.into(),
        version: schema::VERSION,
        id: Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        started: DEFAULT_TIME.into(),
        listener: "127.0.0.1:25".into(),
        peer: schema::Peer {
            ip: "192.0.2.1".into(),
            port: 40000,
        },
        proxy: None,
        tls: None,
        relay_client: false,
        policies: Vec::new(),
        redacted: false,
        truncated: false,
        events: Vec::new(),
    };
    let mut answers = Vec::new();
    let mut routes = Vec::new();
    let mut expected: Vec<Expected> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut open: Option<(String, usize)> = None;
    let mut data: Option<Vec<u8>> = None;
    let mut any_command = false;
    let mut t: u64 = 0;
    let mut open_step = |label: String| {
        let n = seen.entry(label.clone()).or_default();
        *n += 1;
        (label, *n)
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        t += 1000;
        if let Some(rest) = line.strip_prefix('@') {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let value = value.trim();
            match key {
                "client" => {
                    let a: std::net::SocketAddr =
                        value.parse().map_err(|_| err(n, "@client takes IP:PORT"))?;
                    record.peer = schema::Peer {
                        ip: a.ip().to_string(),
                        port: a.port(),
                    };
                }
                "listener" => {
                    value
                        .parse::<std::net::SocketAddr>()
                        .map_err(|_| err(n, "@listener takes IP:PORT"))?;
                    record.listener = value.into();
                }
                "tls" => {
                    let (v, c) = value
                        .split_once(' ')
                        .ok_or_else(|| err(n, "@tls takes VERSION CIPHER"))?;
                    record.tls = Some(schema::TlsRecord {
                        version: v.into(),
                        cipher: c.trim().into(),
                    });
                }
                "time" => {
                    let d = chrono::DateTime::parse_from_rfc3339(value)
                        .map_err(|_| err(n, "@time takes an RFC 3339 time"))?;
                    record.started = d
                        .with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                }
                other => return Err(err(n, &format!("unknown setting @{other}"))),
            }
            continue;
        }
        let (tag, payload) = match line.split_once(':') {
            Some((tag, rest)) if tag.len() == 1 => (tag, rest.strip_prefix(' ').unwrap_or(rest)),
            _ => {
                return Err(err(
                    n,
                    "expected a line starting with C:, S:, E:, M:, H:, R:, @ or #",
                ));
            }
        };
        match tag {
            "C" => {
                if let Some(body) = &mut data {
                    if payload == "." {
                        let body = data.take().unwrap_or_default();
                        record.events.push(schema::message_event(t, &body, false));
                        open = Some(open_step("data".into()));
                    } else {
                        let l = payload
                            .strip_prefix('.')
                            .filter(|_| payload.starts_with(".."))
                            .unwrap_or(payload);
                        body.extend_from_slice(l.as_bytes());
                        body.extend_from_slice(b"\r\n");
                    }
                    continue;
                }
                any_command = true;
                record.events.push(Event::Command {
                    t,
                    line: payload.to_string(),
                });
                open = Some(open_step(command_label(payload)));
                if payload.trim().eq_ignore_ascii_case("DATA") {
                    data = Some(Vec::new());
                }
            }
            "M" => {
                if data.take().is_none() {
                    return Err(err(n, "M: (a message file) comes after C: DATA"));
                }
                let path = base.join(payload.trim());
                let bytes = std::fs::read(&path)
                    .map_err(|e| err(n, &format!("{}: {e}", path.display())))?;
                record
                    .events
                    .push(schema::message_event(t, &crlf(&bytes), false));
                open = Some(open_step("data".into()));
            }
            "S" => {
                let reply = payload.trim().to_string();
                if reply.len() < 3 || !reply.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                    return Err(err(n, "S: takes a reply code (and the start of its text)"));
                }
                let (label, occurrence) = match open.take() {
                    Some(o) => o,
                    None if !any_command => open_step("connect".into()),
                    None => return Err(err(n, "S: without a command before it")),
                };
                expected.push(Expected {
                    label,
                    occurrence,
                    reply,
                    extras: Vec::new(),
                    line: n,
                });
            }
            "E" => match expected.last_mut() {
                Some(e) if e.label == "data" => e.extras.push(payload.trim().to_string()),
                _ => return Err(err(n, "E: comes after the S: of a data stage")),
            },
            "H" => answers.push(host_answer(payload).map_err(|m| err(n, &m))?),
            "R" => {
                let (rcpt, want) = payload
                    .split_once(" = ")
                    .ok_or_else(|| err(n, "R: takes RECIPIENT = ROUTE"))?;
                routes.push((n, rcpt.trim().to_string(), want.trim().to_string()));
            }
            _ => {
                return Err(err(
                    n,
                    "expected a line starting with C:, S:, E:, M:, H:, R:, @ or #",
                ));
            }
        }
    }
    if data.is_some() {
        return Err(format!(
            "{file}: the message after C: DATA has no final \"C: .\""
        ));
    }
    Ok(Transcript {
        record,
        answers,
        expected,
        routes,
    })
}

/// Line ends made CRLF; a final line end added.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `CALL ARG… = RESULT`.
fn host_answer(payload: &str) -> Result<Entry, String> {
    let (left, right) = payload
        .split_once(" = ")
        .ok_or("H: takes CALL ARGS = RESULT")?;
    let mut words = left.split_whitespace();
    let call = words
        .next()
        .ok_or("H: names a call, e.g. dns.a")?
        .to_string();
    let known = [
        "dns.a",
        "dns.aaaa",
        "dns.mx",
        "dns.txt",
        "dns.ptr",
        "kv.get",
        "kv.set",
        "kv.incr",
        "kv.delete",
        "clock.now",
    ];
    if !known.contains(&call.as_str()) {
        return Err(format!(
            "unknown host call {call:?} (one of {})",
            known.join(", ")
        ));
    }
    let args: Vec<Value> = words
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                Value::String(w.to_string())
            } else {
                serde_json::from_str(w).unwrap_or_else(|_| Value::String(w.to_string()))
            }
        })
        .collect();
    let r = right.trim();
    let result = if let Some(m) = r.strip_prefix("temporary:") {
        CallResult::Temporary(m.trim().to_string())
    } else if let Some(m) = r.strip_prefix("invalid:") {
        CallResult::Invalid(m.trim().to_string())
    } else if r == "denied" {
        CallResult::Denied
    } else if r == "(none)" {
        CallResult::Ok(if call.starts_with("dns.") {
            Value::Array(Vec::new())
        } else {
            Value::Null
        })
    } else if r.starts_with(['[', '{', '"']) {
        CallResult::Ok(serde_json::from_str(r).map_err(|e| format!("bad JSON result: {e}"))?)
    } else {
        CallResult::Ok(match call.as_str() {
            "dns.a" | "dns.aaaa" | "dns.ptr" => Value::from(
                r.split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>(),
            ),
            "dns.txt" => Value::from(vec![r.to_string()]),
            "dns.mx" => Value::Array(
                r.split(',')
                    .map(|mx| {
                        let (p, x) = mx
                            .trim()
                            .split_once(' ')
                            .ok_or("MX answers are PREF HOST, …")?;
                        let p: u16 = p.parse().map_err(|_| "MX answers are PREF HOST, …")?;
                        Ok(serde_json::json!([p, x.trim()]))
                    })
                    .collect::<Result<Vec<_>, &str>>()?,
            ),
            "kv.incr" => Value::from(r.parse::<i32>().map_err(|_| "kv.incr answers a number")?),
            "kv.get" => Value::String(r.to_string()),
            "clock.now" => {
                let s: u32 = r.parse().map_err(|_| "clock.now answers Unix seconds")?;
                serde_json::json!({"seconds": s, "millis": 0})
            }
            _ => Value::Null,
        })
    };
    Ok(Entry::new(None, call, args, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_transcript() {
        let t = parse(
            "# x\n@client 203.0.113.7:1234\nH: dns.a a.test = 127.0.0.2, 127.0.0.3\nH: kv.incr k = 5\n\
             S: 220\nC: EHLO c.example\nS: 250\nC: MAIL FROM:<a@b.example>\nC: RCPT TO:<x@y.example>\n\
             S: 550 5.7.1 no\nC: DATA\nS: 354\nC: Subject: s\nC:\nC: ..dot\nC: .\nS: 250\nE: discard\n",
            "dir/case.smtp",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(t.record.id, "case");
        assert_eq!(t.record.peer.ip, "203.0.113.7");
        let labels: Vec<_> = t.expected.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "connect",
                "helo c.example",
                "rcpt x@y.example",
                "DATA",
                "data"
            ]
        );
        assert_eq!(t.expected[4].extras, ["discard"]);
        let msg = t
            .record
            .events
            .iter()
            .find_map(SessionRecord::message_content)
            .unwrap();
        assert_eq!(
            msg,
            schema::MessageContent::Full(b"Subject: s\r\n\r\n.dot\r\n".to_vec())
        );
        assert_eq!(t.answers.len(), 2);
        assert_eq!(
            t.answers[0].result,
            CallResult::Ok(serde_json::json!(["127.0.0.2", "127.0.0.3"]))
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("C: EHLO x\nX: what\n", "f.smtp", Path::new(".")).unwrap_err();
        assert!(e.starts_with("f.smtp:2:"), "{e}");
        let e = parse("C: DATA\nC: x\n", "f.smtp", Path::new(".")).unwrap_err();
        assert!(e.contains("no final"), "{e}");
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n");
    }
}
