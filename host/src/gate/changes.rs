//! Applying the data stage's changes (from the policy chain) to a message
//! and its recipients before it is stored — so a rewrite is on disk with
//! the message and survives a restart.

use crate::policy::Change;
use crate::smtp::address::parse_mailbox;
use crate::smtp::{Recipient, address::Mailbox, header};

/// One piece of the header section: a field (its name and raw lines), or
/// a line that is not a field (no name), kept as it came.
struct Field {
    name: Vec<u8>,
    raw: Vec<u8>,
}

/// Split `msg` into its header fields — the fields the policies' message
/// resource reads ([`header::fields`], the one definition) — and the rest
/// (the empty line and body). Lines between fields that are not fields are
/// kept, nameless, so nothing is lost and they match no removal.
fn split(msg: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields = Vec::new();
    let mut pos = 0;
    for f in header::fields(msg) {
        if f.field.start > pos {
            fields.push(Field {
                name: Vec::new(),
                raw: msg[pos..f.field.start].to_vec(),
            });
        }
        pos = f.field.end;
        fields.push(Field {
            name: f.name.into_bytes(),
            raw: msg[f.field].to_vec(),
        });
    }
    (fields, &msg[pos..])
}

/// Fold `Name: value` at white space near 78 octets, CRLF-terminated.
fn fold(name: &str, value: &str) -> Vec<u8> {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
            out.push_str("\r\n\t");
            line_len = 1;
        } else {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Apply the header changes, in order, to `msg` (which must not include
/// our trace header). Added fields go to the top, in the order added.
pub fn apply_headers(msg: &[u8], changes: &[Change]) -> Option<Vec<u8>> {
    if !changes
        .iter()
        .any(|c| matches!(c, Change::AddHeader { .. } | Change::RemoveHeader(_)))
    {
        return None;
    }
    if !changes.iter().any(|c| matches!(c, Change::RemoveHeader(_))) {
        // Only additions: they go on top, in order, before the message as
        // it is (the common case; no need to take the header apart).
        let mut out = Vec::with_capacity(msg.len() + 256);
        for c in changes {
            if let Change::AddHeader { name, value } = c {
                out.extend_from_slice(&fold(name, value));
            }
        }
        out.extend_from_slice(msg);
        return Some(out);
    }
    let (fields, rest) = split(msg);
    // (name, raw) owned list so additions can mix with originals.
    let mut list: Vec<(Vec<u8>, Vec<u8>)> = fields.into_iter().map(|f| (f.name, f.raw)).collect();
    let mut added = 0;
    for c in changes {
        match c {
            Change::AddHeader { name, value } => {
                list.insert(added, (name.as_bytes().to_vec(), fold(name, value)));
                added += 1;
            }
            Change::RemoveHeader(name) => {
                let before = list.len();
                let mut i = 0;
                list.retain(|(n, _)| {
                    let keep = !n.eq_ignore_ascii_case(name.as_bytes());
                    if !keep && i < added {
                        added -= 1;
                    }
                    i += 1;
                    keep
                });
                debug_assert!(list.len() <= before);
            }
            Change::AddRecipient(_) | Change::RemoveRecipient(_) => {}
        }
    }
    let mut out = Vec::with_capacity(msg.len() + 256);
    for (_, raw) in list {
        out.extend_from_slice(&raw);
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Apply the recipient changes, in order. Returns the addresses that
/// could not be added (invalid).
pub fn apply_recipients(rcpts: &mut Vec<Recipient>, changes: &[Change]) -> Vec<String> {
    let mut bad = Vec::new();
    for c in changes {
        match c {
            Change::AddRecipient(a) => match parse_mailbox(a) {
                Ok(m) => {
                    if !rcpts.iter().any(|r| same(&r.to, &m)) {
                        rcpts.push(Recipient {
                            to: m,
                            params: Default::default(),
                        });
                    }
                }
                Err(_) => bad.push(a.clone()),
            },
            Change::RemoveRecipient(a) => {
                rcpts.retain(|r| !r.to.to_string().eq_ignore_ascii_case(a));
            }
            Change::AddHeader { .. } | Change::RemoveHeader(_) => {}
        }
    }
    bad
}

fn same(a: &Mailbox, b: &Mailbox) -> bool {
    a.to_string().eq_ignore_ascii_case(&b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Subject: hi\r\nX-Spam: yes\r\n  folded\r\nFrom: a@b\r\nx-spam: again\r\n\r\nbody\r\nX-Spam: not a header\r\n";

    #[test]
    fn add_and_remove_headers() {
        let out = apply_headers(
            MSG,
            &[
                Change::AddHeader {
                    name: "X-Policy".into(),
                    value: "one".into(),
                },
                Change::RemoveHeader("X-SPAM".into()),
                Change::AddHeader {
                    name: "X-Second".into(),
                    value: "two".into(),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Policy: one\r\nX-Second: two\r\nSubject: hi\r\nFrom: a@b\r\n\r\nbody\r\nX-Spam: not a header\r\n"
        );
    }

    #[test]
    fn remove_after_add_removes_the_added_one() {
        let out = apply_headers(
            MSG,
            &[
                Change::AddHeader {
                    name: "X-Tag".into(),
                    value: "1".into(),
                },
                Change::RemoveHeader("x-tag".into()),
                Change::AddHeader {
                    name: "X-Tag".into(),
                    value: "2".into(),
                },
            ],
        )
        .unwrap();
        assert!(out.starts_with(b"X-Tag: 2\r\nSubject: hi\r\n"));
        assert_eq!(
            apply_headers(MSG, &[Change::AddRecipient("a@b.c".into())]),
            None
        );
    }

    #[test]
    fn additions_alone_go_on_top_of_the_message_as_it_is() {
        let adds = [
            Change::AddHeader {
                name: "X-One".into(),
                value: "1".into(),
            },
            Change::AddRecipient("c@d.e".into()),
            Change::AddHeader {
                name: "X-Two".into(),
                value: "2".into(),
            },
        ];
        let mut want = b"X-One: 1\r\nX-Two: 2\r\n".to_vec();
        want.extend_from_slice(MSG);
        assert_eq!(apply_headers(MSG, &adds).unwrap(), want);
        // The same as the general path (a removal of a field not there).
        let mut with_removal = adds.to_vec();
        with_removal.push(Change::RemoveHeader("X-Absent".into()));
        assert_eq!(apply_headers(MSG, &with_removal).unwrap(), want);
        // A header section that is not one (a leading continuation line).
        let odd = b" not a field\r\nSubject: x\r\n\r\nbody";
        let mut want = b"X-One: 1\r\nX-Two: 2\r\n".to_vec();
        want.extend_from_slice(odd);
        assert_eq!(apply_headers(odd, &adds).unwrap(), want);
        assert_eq!(apply_headers(odd, &with_removal).unwrap(), want);
    }

    #[test]
    fn long_values_fold() {
        let v = "word ".repeat(40);
        let out = apply_headers(
            b"A: b\r\n\r\n",
            &[Change::AddHeader {
                name: "X-Long".into(),
                value: v,
            }],
        )
        .unwrap();
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 80, "{}", String::from_utf8_lossy(line));
        }
        assert!(out.windows(3).any(|w| w == b"\r\n\t"));
    }

    #[test]
    fn recipients() {
        let mut r = vec![Recipient {
            to: parse_mailbox("a@example.com").unwrap(),
            params: Default::default(),
        }];
        let bad = apply_recipients(
            &mut r,
            &[
                Change::AddRecipient("b@example.com".into()),
                Change::AddRecipient("B@example.com".into()),
                Change::AddRecipient("not an address".into()),
                Change::RemoveRecipient("A@EXAMPLE.COM".into()),
            ],
        );
        assert_eq!(bad, ["not an address"]);
        let got: Vec<String> = r.iter().map(|r| r.to.to_string()).collect();
        assert_eq!(got, ["b@example.com"]);
    }
}
