//! The recording format, version 1: one [`SessionRecord`] per line of a
//! `.jsonl` file. Documented for readers and writers of recordings in
//! `docs/recording-format.md`; change both together, and raise
//! [`VERSION`] for a change an older reader would misread.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::tap::PolicyResult;
use crate::smtp::base64;

/// The value of every record's `format` field.
pub const FORMAT: &str = "sluice-session";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// One SMTP session, as recorded (or as written by hand, or accepted from
/// a replay as a test case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this build.
    pub version: u32,
    /// The session's id (a UUID v7: sorts by start time).
    pub id: String,
    /// Wall-clock time of the connection, RFC 3339 in UTC with
    /// milliseconds. Replay answers the clock from it.
    pub started: String,
    /// The listener's address, `ip:port`.
    pub listener: String,
    /// The client (behind a trusted PROXY header: the source it named).
    pub peer: Peer,
    /// The proxy that sent a PROXY header, `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// TLS from the first octet (an implicit-TLS listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRecord>,
    /// Whether the client was in `relay_networks`.
    pub relay_client: bool,
    /// The policy chain that served the session, in order.
    #[serde(default)]
    pub policies: Vec<PolicyInfo>,
    /// Message contents are headers only (`[record] redact`, or a message
    /// over `max_message_size`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub redacted: bool,
    /// Events past the per-session bound were left out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// What happened, in order.
    pub events: Vec<Event>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The client's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Textual IP address.
    pub ip: String,
    /// Port.
    pub port: u16,
}

/// TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRecord {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// One policy of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// Its name in the config.
    pub name: String,
    /// The version it reports.
    pub version: String,
    /// SHA-256 of its component, hex.
    pub wasm_sha256: String,
}

/// One event of a session. `t` is microseconds since the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A command line from the client, without its line end.
    Command {
        /// Time.
        t: u64,
        /// The line (invalid UTF-8 replaced).
        line: String,
    },
    /// A reply from the gateway.
    Reply {
        /// Time.
        t: u64,
        /// Reply code.
        code: u16,
        /// Enhanced status code, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enhanced: Option<String>,
        /// Text lines, without code and enhanced code.
        lines: Vec<String>,
    },
    /// STARTTLS completed.
    Tls {
        /// Time.
        t: u64,
        /// e.g. `TLSv1_3`.
        version: String,
        /// Cipher suite.
        cipher: String,
    },
    /// A message as received (dot-unstuffed), before any policy change.
    Message {
        /// Time.
        t: u64,
        /// Size in octets.
        size: u64,
        /// SHA-256 of the whole message, hex.
        sha256: String,
        /// The message when it is UTF-8 and not redacted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// The message in base64 when it is not UTF-8 (and not redacted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_base64: Option<String>,
        /// Redacted: only the header section (up to the empty line).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        headers: Option<String>,
    },
    /// The policy chain (and the built-in rules) decided a stage.
    Stage {
        /// Time.
        t: u64,
        /// `connect`, `helo`, `mail-from`, `rcpt`, `data`.
        stage: String,
        /// The stage's subject: the HELO name, the sender (`<>` for the
        /// null sender), the recipient; empty for connect and data.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        arg: String,
        /// The decision: `accept`, `reject CODE X.Y.Z text`,
        /// `tempfail CODE X.Y.Z text`, `discard`, `quarantine: REASON`.
        decision: String,
        /// Data stage: the changes the chain applied, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<String>,
        /// Each policy asked, in order: its answer and host calls.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        policies: Vec<PolicyResult>,
    },
}

impl Event {
    /// The event's time.
    pub fn t(&self) -> u64 {
        match self {
            Event::Command { t, .. }
            | Event::Reply { t, .. }
            | Event::Tls { t, .. }
            | Event::Message { t, .. }
            | Event::Stage { t, .. } => *t,
        }
    }
}

/// The content of a message event, for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageContent {
    /// The whole message.
    Full(Vec<u8>),
    /// Redacted: the header section only.
    Headers(Vec<u8>),
}

/// A message event for `body`: whole (as text or base64), or redacted to
/// its header section.
pub fn message_event(t: u64, body: &[u8], redact: bool) -> Event {
    let sha256 = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (mut data, mut data_base64, mut headers) = (None, None, None);
    if redact {
        headers = Some(String::from_utf8_lossy(header_section(body)).into_owned());
    } else {
        match std::str::from_utf8(body) {
            Ok(s) => data = Some(s.to_string()),
            Err(_) => data_base64 = Some(base64::encode(body)),
        }
    }
    Event::Message {
        t,
        size: body.len() as u64,
        sha256,
        data,
        data_base64,
        headers,
    }
}

/// The header section of a message: up to and including the empty line
/// (or all of it when there is none).
pub fn header_section(body: &[u8]) -> &[u8] {
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return &body[..end];
        }
        pos = end;
    }
    body
}

impl SessionRecord {
    /// The message content of a message event, checked against its size and
    /// hash; `None` when it does not match.
    pub fn message_content(event: &Event) -> Option<MessageContent> {
        let Event::Message {
            size,
            sha256,
            data,
            data_base64,
            headers,
            ..
        } = event
        else {
            return None;
        };
        let full = match (data, data_base64) {
            (Some(d), _) => Some(d.as_bytes().to_vec()),
            (None, Some(b)) => Some(base64::decode(b)?),
            (None, None) => None,
        };
        match full {
            Some(bytes) => {
                let hash: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                (bytes.len() as u64 == *size && hash == *sha256)
                    .then_some(MessageContent::Full(bytes))
            }
            None => Some(MessageContent::Headers(
                headers.clone().unwrap_or_default().into_bytes(),
            )),
        }
    }

    /// One line of a recording file, parsed and checked.
    pub fn from_line(line: &str) -> Result<SessionRecord, String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(format!("format {other:?} is not {FORMAT:?}")),
            None => return Err(format!("no \"format\": {FORMAT:?} field")),
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v <= u64::from(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "format version {v} is newer than this sluice reads ({VERSION})"
                ));
            }
            None => return Err("no \"version\" field".into()),
        }
        let record: SessionRecord =
            serde_json::from_value(value).map_err(|e| format!("not a session record: {e}"))?;
        for (i, e) in record.events.iter().enumerate() {
            if matches!(e, Event::Message { .. }) && Self::message_content(e).is_none() {
                return Err(format!(
                    "event {}: the message does not match its size and sha256",
                    i + 1
                ));
            }
        }
        Ok(record)
    }

    /// The record as one line (no line end).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Roughly how much memory the record holds (for the writer's bound).
    pub fn approx_size(&self) -> usize {
        512 + self.events.iter().map(Event::approx_size).sum::<usize>()
    }
}

impl Event {
    /// Roughly how much memory the event holds.
    pub fn approx_size(&self) -> usize {
        64 + match self {
            Event::Command { line, .. } => line.len(),
            Event::Reply { lines, .. } => lines.iter().map(String::len).sum::<usize>(),
            Event::Message {
                data,
                data_base64,
                headers,
                ..
            } => {
                data.as_ref().map_or(0, String::len)
                    + data_base64.as_ref().map_or(0, String::len)
                    + headers.as_ref().map_or(0, String::len)
            }
            Event::Stage { policies, .. } => policies.len() * 256,
            Event::Tls { .. } => 0,
        }
    }
}

/// Where a record came from, for messages: `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The file as given.
    pub file: String,
    /// 1-based line (0 for a whole-file transcript).
    pub line: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// One line of a recording file: where it is, and the record or why it
/// could not be read.
pub type SourcedRecord = (Source, Result<SessionRecord, String>);

/// Read a recording file: every line that parses, and an error naming the
/// file and line for each one that does not (a truncated last line, a
/// corrupt one). Empty lines are skipped.
pub fn read_file(path: &Path) -> Result<Vec<SourcedRecord>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.display().to_string();
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = Source {
            file: file.clone(),
            line: i + 1,
        };
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => SessionRecord::from_line(text),
            Err(_) => Err("not UTF-8".to_string()),
        };
        out.push((source, parsed));
    }
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        // A file cut off mid-write: say so on its last record if it did
        // not parse.
        if let Some((_, Err(e))) = out.last_mut() {
            e.push_str(" (the file ends without a line end: truncated?)");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_events() {
        let body = b"Subject: x\r\n\r\nbody\r\n";
        let e = message_event(5, body, false);
        assert_eq!(
            SessionRecord::message_content(&e),
            Some(MessageContent::Full(body.to_vec()))
        );
        let e = message_event(5, body, true);
        assert_eq!(
            SessionRecord::message_content(&e),
            Some(MessageContent::Headers(b"Subject: x\r\n\r\n".to_vec()))
        );
        let e = message_event(5, b"\xff\xfe\r\n", false);
        assert!(matches!(
            &e,
            Event::Message {
                data_base64: Some(_),
                ..
            }
        ));
        assert_eq!(
            SessionRecord::message_content(&e),
            Some(MessageContent::Full(b"\xff\xfe\r\n".to_vec()))
        );
        assert_eq!(header_section(b"A: b\nbody"), b"A: b\nbody");
    }

    #[test]
    fn lines_are_checked() {
        assert!(
            SessionRecord::from_line("{")
                .unwrap_err()
                .contains("not a JSON")
        );
        assert!(
            SessionRecord::from_line(r#"{"format":"x","version":1}"#)
                .unwrap_err()
                .contains("is not")
        );
        assert!(
            SessionRecord::from_line(r#"{"format":"sluice-session","version":99}"#)
                .unwrap_err()
                .contains("newer")
        );
    }
}
