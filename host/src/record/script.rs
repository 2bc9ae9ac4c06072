//! The client's side of a recorded session, as replay feeds it to the
//! state machine: its command lines, its messages (as DATA, dot-stuffed,
//! or in the recorded BDAT chunks), its TLS, each with its recorded time.

use std::collections::VecDeque;

use super::schema::{Event, MessageContent, SessionRecord};
use crate::smtp::client::dot_stuff;
use crate::smtp::{Enhanced, Reply};

/// A recorded message, when the session stores it.
#[derive(Debug)]
pub(crate) struct RecordedMessage {
    /// When it arrived.
    pub(crate) t: u64,
    /// The message event, as recorded.
    pub(crate) event: Event,
    /// The reply the gateway gave it (the answer for a redacted one).
    pub(crate) reply: Option<Reply>,
}

/// The recording ran out of what the session waits for.
#[derive(Debug)]
pub(crate) struct Gap {
    /// The recorded time of the message that fell short, if one did.
    pub(crate) t: Option<u64>,
    /// What is missing, for the replay's errors.
    pub(crate) what: String,
}

/// What the client sends next, in the recording's order.
#[derive(Debug, Default)]
pub(crate) struct ClientScript {
    commands: VecDeque<(u64, String)>,
    messages: VecDeque<(u64, Event)>,
    tls: VecDeque<(String, String)>,
    /// The recorded reply to each message (for a redacted one).
    message_replies: VecDeque<Option<Reply>>,
    last_command: String,
    /// Octets left of the current BDAT chunk.
    bdat_left: u64,
    /// Octets of the current message sent so far in BDAT chunks.
    message_offset: usize,
}

impl ClientScript {
    /// The client's side of `rec`.
    pub(crate) fn of(rec: &SessionRecord) -> Self {
        let mut s = Self::default();
        let mut after_message = false;
        for e in &rec.events {
            match e {
                Event::Command { t, line } => s.commands.push_back((*t, line.clone())),
                Event::Message { t, .. } => {
                    s.messages.push_back((*t, e.clone()));
                    s.message_replies.push_back(None);
                    after_message = true;
                }
                Event::Tls {
                    version, cipher, ..
                } => s.tls.push_back((version.clone(), cipher.clone())),
                Event::Reply {
                    code,
                    enhanced,
                    lines,
                    ..
                } if after_message => {
                    after_message = false;
                    if let Some(last) = s.message_replies.back_mut() {
                        *last = Some(Reply {
                            code: *code,
                            enhanced: enhanced.as_deref().and_then(Enhanced::parse),
                            lines: if lines.is_empty() {
                                vec![String::new()]
                            } else {
                                lines.clone()
                            },
                        });
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// The next command line with its CRLF; `None` when the client said
    /// everything it said.
    pub(crate) fn command(&mut self) -> Result<Option<(u64, Vec<u8>)>, Gap> {
        let Some((t, line)) = self.commands.pop_front() else {
            return Ok(None);
        };
        self.last_command = line.clone();
        self.bdat_left = bdat_size(&line).unwrap_or(0);
        let mut wire = line.into_bytes();
        wire.extend_from_slice(b"\r\n");
        Ok(Some((t, wire)))
    }

    /// The message data the session waits for: the whole message,
    /// dot-stuffed and ended, after DATA; the next chunk after BDAT.
    pub(crate) fn data(&mut self) -> Result<Option<(u64, Vec<u8>)>, Gap> {
        let Some((mt, event)) = self.messages.front() else {
            return Err(Gap {
                t: None,
                what: format!("the recording has no message for {:?}", self.last_command),
            });
        };
        let body = match SessionRecord::message_content(event) {
            Some(MessageContent::Full(b)) => b,
            Some(MessageContent::Headers(h)) => h,
            None => Vec::new(),
        };
        if bdat_size(&self.last_command).is_none() {
            let mut wire = dot_stuff(&body);
            wire.extend_from_slice(b".\r\n");
            return Ok(Some((*mt, wire)));
        }
        let size = match event {
            Event::Message { size, .. } => *size as usize,
            _ => body.len(),
        };
        let n = usize::try_from(self.bdat_left).unwrap_or(usize::MAX);
        let mut chunk: Vec<u8> = body
            .get(self.message_offset.min(body.len())..)
            .unwrap_or_default()
            .iter()
            .copied()
            .take(n)
            .collect();
        // A redacted message is shorter than recorded: pad to the chunk
        // size.
        let room = size.saturating_sub(self.message_offset).min(n);
        if chunk.len() < room {
            chunk.resize(room, b'x');
        }
        if chunk.is_empty() {
            return Err(Gap {
                t: Some(*mt),
                what: "the recorded message is shorter than its BDAT chunks".into(),
            });
        }
        self.message_offset += chunk.len();
        self.bdat_left -= chunk.len() as u64;
        Ok(Some((*mt, chunk)))
    }

    /// The message the session stores now, with the reply it got.
    pub(crate) fn take_message(&mut self) -> Option<RecordedMessage> {
        let (t, event) = self.messages.pop_front()?;
        self.message_offset = 0;
        Some(RecordedMessage {
            t,
            event,
            reply: self.message_replies.pop_front().flatten(),
        })
    }

    /// The TLS of the next STARTTLS (TLS 1.3 when the recording has none).
    pub(crate) fn tls(&mut self) -> (String, String) {
        self.tls.pop_front().unwrap_or_else(|| {
            (
                "TLSv1_3".to_string(),
                "TLS13_AES_128_GCM_SHA256".to_string(),
            )
        })
    }
}

/// The chunk size of a `BDAT n [LAST]` line.
fn bdat_size(line: &str) -> Option<u64> {
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("BDAT") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdat_sizes() {
        assert_eq!(bdat_size("BDAT 100 LAST"), Some(100));
        assert_eq!(bdat_size("DATA"), None);
    }
}
