//! Delivery status notifications: the bounce, delay and success reports
//! the gateway sends back to a message's sender (RFC 3464 with the rules of
//! RFC 3461 §6, inside an RFC 6522 `multipart/report`; RFC 6533 types for
//! internationalised mail).
//!
//! [`build`] makes the whole message, ready to queue from the null sender
//! `<>` to [`Dsn::to`]. It never panics and its output always has CRLF line
//! endings and no line longer than 998 octets, whatever the stored message
//! or the envelope holds:
//!
//! - values taken from the envelope (addresses, diagnostics, host names)
//!   have control characters replaced by spaces and are folded when long;
//! - the returned copy of the original message has bare CR and bare LF
//!   turned into CRLF, and any line longer than 998 octets split (header
//!   lines by folding, body lines by a hard line break). The stored spool
//!   file is CRLF already, so normally only overlong lines change.
//!
//! What is returned of the original (RFC 3461 §4.3): the whole message as
//! `message/rfc822` only in a failure report for a message sent with
//! `RET=FULL`; otherwise (`RET=HDRS`, no `RET`, and every delay or success
//! report) the header section as `text/rfc822-headers`. The full copy is
//! not truncated: its size is bounded by the gateway's maximum message
//! size, which the queue must allow for when it re-queues the report.
//!
//! When the original's header section, the sender, or anything in the
//! delivery-status fields is not ASCII, the RFC 6533 types are used instead
//! (`message/global-delivery-status`, `message/global`,
//! `message/global-headers`); [`Dsn::is_8bit`] then says the report needs
//! an 8-bit capable transport (`BODY=8BITMIME`, and `SMTPUTF8` when
//! [`Dsn::to`] is not ASCII).
//!
//! [`header_section`] and [`count_received`] are the small header helpers
//! the queue uses (for loop detection among others).

use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Utc};

use crate::smtp::command::{Notify, Ret};
use crate::spool::{Envelope, Recipient};

/// The longest line allowed, CRLF excluded (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;
/// Where header fields and text lines are folded when a space allows it.
const SOFT_LINE: usize = 78;

/// What a DSN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnKind {
    /// Delivery failed for good (`Action: failed`).
    Failure,
    /// Delivery is late and still being retried (`Action: delayed`).
    Delay,
    /// Delivery succeeded (`Action: delivered`).
    Success,
}

impl DsnKind {
    /// Whether a recipient's `NOTIFY=` asks for this kind of report. No
    /// `NOTIFY` means the default of RFC 3461 §4.1: failure and delay
    /// reports, no success report. `NOTIFY=NEVER` asks for none.
    pub fn requested(self, notify: Option<Notify>) -> bool {
        match (self, notify) {
            (DsnKind::Failure | DsnKind::Delay, None) => true,
            (DsnKind::Success, None) => false,
            (DsnKind::Failure, Some(n)) => n.failure,
            (DsnKind::Delay, Some(n)) => n.delay,
            (DsnKind::Success, Some(n)) => n.success,
        }
    }

    /// The `Action:` value of RFC 3464 §2.3.3.
    fn action(self) -> &'static str {
        match self {
            DsnKind::Failure => "failed",
            DsnKind::Delay => "delayed",
            DsnKind::Success => "delivered",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            DsnKind::Failure => "Undelivered Mail Returned to Sender",
            DsnKind::Delay => "Delayed Mail (still being retried)",
            DsnKind::Success => "Successful Mail Delivery Report",
        }
    }

    fn default_status(self) -> &'static str {
        match self {
            DsnKind::Failure => "5.0.0",
            DsnKind::Delay => "4.0.0",
            DsnKind::Success => "2.0.0",
        }
    }

    /// Status classes that fit this kind: a failure may carry the last
    /// temporary status (a message that expired in the queue).
    fn fits_class(self, class: u8) -> bool {
        match self {
            DsnKind::Failure => class == b'5' || class == b'4',
            DsnKind::Delay => class == b'4',
            DsnKind::Success => class == b'2',
        }
    }
}

/// A DSN ready to queue: from the null sender to `to`.
#[derive(Debug, Clone)]
pub struct Dsn {
    /// The envelope recipient: the original message's sender.
    pub to: String,
    /// The complete message, CRLF line endings.
    pub message: Vec<u8>,
}

impl Dsn {
    /// True when the message holds octets above 127, so it must be sent
    /// with `BODY=8BITMIME` (and `SMTPUTF8` when [`Dsn::to`] is not ASCII).
    pub fn is_8bit(&self) -> bool {
        !self.message.is_ascii()
    }
}

/// Build the DSN for the recipients at `which` (indices into
/// `env.recipients`; indices out of range and repeats are ignored).
///
/// Only the selected recipients whose `NOTIFY=` asks for `kind` (see
/// [`DsnKind::requested`]) are reported. Returns `None` when no DSN may be
/// sent: the original sender is the null sender `<>` (never bounce a
/// bounce), or no selected recipient asks for this kind.
///
/// `original` is the stored message including our `Received:` header;
/// `reporting_mta` is our host name; `now` dates the report and, with
/// `env.id`, the kind and the selection, makes its `Message-ID` unique.
pub fn build(
    env: &Envelope,
    original: &[u8],
    which: &[usize],
    kind: DsnKind,
    reporting_mta: &str,
    now: DateTime<Utc>,
) -> Option<Dsn> {
    let sender = env.sender.trim();
    if sender.is_empty() || sender == "<>" {
        return None;
    }
    let mut seen = vec![false; env.recipients.len()];
    let mut selected: Vec<(usize, &Recipient)> = Vec::new();
    for &i in which {
        let Some(r) = env.recipients.get(i) else {
            continue;
        };
        if std::mem::replace(&mut seen[i], true) || !kind.requested(r.notify) {
            continue;
        }
        selected.push((i, r));
    }
    if selected.is_empty() {
        return None;
    }

    let mta = host_name(reporting_mta);
    let full = kind == DsnKind::Failure && env.params.ret == Some(Ret::Full);

    // The three parts' contents first: the boundary must not occur in any.
    let reports: Vec<RcptReport> = selected
        .iter()
        .map(|(_, r)| RcptReport::new(r, kind))
        .collect();
    let status = delivery_status(env, &mta, &reports);
    let returned = if full {
        normalize(original, false)
    } else {
        normalize(header_section(original), true)
    };
    let global =
        !env.sender.is_ascii() || !status.is_ascii() || !header_section(&returned).is_ascii();
    let text = human_text(env, &mta, kind, &reports, full);

    let mut h = DefaultHasher::new();
    env.id.hash(&mut h);
    now.timestamp().hash(&mut h);
    now.timestamp_subsec_nanos().hash(&mut h);
    kind.hash(&mut h);
    for (i, _) in &selected {
        i.hash(&mut h);
    }
    let unique = h.finish();
    let id = token(&env.id, 32);
    let boundary = pick_boundary(
        &id,
        unique,
        &[text.as_bytes(), status.as_bytes(), &returned],
    );

    let mut out: Vec<u8> = Vec::with_capacity(returned.len() + text.len() + status.len() + 2048);
    let mut head = String::new();
    push_folded(
        &mut head,
        &format!("From: Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    push_folded(&mut head, &format!("To: <{}>", clean(sender)));
    push_folded(&mut head, &format!("Subject: {}", kind.subject()));
    push_folded(&mut head, &format!("Date: {}", now.to_rfc2822()));
    let id_part = if id.is_empty() { "dsn" } else { id.as_str() };
    push_folded(
        &mut head,
        &format!("Message-ID: <{unique:016x}.{id_part}@{mta}>"),
    );
    push_folded(&mut head, "Auto-Submitted: auto-replied");
    push_folded(&mut head, "MIME-Version: 1.0");
    let report_type = if global {
        "global-delivery-status"
    } else {
        "delivery-status"
    };
    push_folded(
        &mut head,
        &format!(
            "Content-Type: multipart/report; report-type={report_type}; boundary=\"{boundary}\""
        ),
    );
    let eight_bit = !text.is_ascii() || !status.is_ascii() || !returned.is_ascii();
    push_folded(
        &mut head,
        &format!(
            "Content-Transfer-Encoding: {}",
            if eight_bit { "8bit" } else { "7bit" }
        ),
    );
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");
    out.extend_from_slice(head.as_bytes());

    // Part 1: the explanation for people.
    let mut part = format!("--{boundary}\r\n");
    part.push_str("Content-Description: Notification\r\n");
    part.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    push_cte(&mut part, text.is_ascii());
    part.push_str("\r\n");
    out.extend_from_slice(part.as_bytes());
    out.extend_from_slice(text.as_bytes());

    // Part 2: the machine-readable report.
    let mut part = format!("\r\n--{boundary}\r\n");
    part.push_str("Content-Description: Delivery report\r\n");
    part.push_str(if global {
        "Content-Type: message/global-delivery-status\r\n"
    } else {
        "Content-Type: message/delivery-status\r\n"
    });
    push_cte(&mut part, status.is_ascii());
    part.push_str("\r\n");
    out.extend_from_slice(part.as_bytes());
    out.extend_from_slice(status.as_bytes());

    // Part 3: the original, or its header section.
    let mut part = format!("\r\n--{boundary}\r\n");
    let (description, ctype) = match (full, global) {
        (true, false) => ("Undelivered Message", "message/rfc822"),
        (true, true) => ("Undelivered Message", "message/global"),
        (false, false) => ("Message Headers", "text/rfc822-headers"),
        (false, true) => ("Message Headers", "message/global-headers"),
    };
    let description = match kind {
        DsnKind::Failure => description,
        DsnKind::Delay => "Delayed Message Headers",
        DsnKind::Success => "Delivered Message Headers",
    };
    part.push_str(&format!("Content-Description: {description}\r\n"));
    if ctype == "text/rfc822-headers" {
        part.push_str("Content-Type: text/rfc822-headers; charset=us-ascii\r\n");
    } else {
        part.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    push_cte(&mut part, returned.is_ascii());
    part.push_str("\r\n");
    out.extend_from_slice(part.as_bytes());
    out.extend_from_slice(&returned);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    Some(Dsn {
        to: env.sender.clone(),
        message: out,
    })
}

/// The header section of a message: everything before the first empty
/// line, including the line break that ends the last header field (CRLF
/// normally; a bare LF is accepted as a line end too). A message with no
/// empty line is all header section; one that starts with an empty line
/// has an empty one.
pub fn header_section(msg: &[u8]) -> &[u8] {
    for (start, line, _) in Lines::new(msg) {
        if line.is_empty() {
            return &msg[..start];
        }
    }
    msg
}

/// The number of `Received:` header fields in the header section of `msg`
/// (the field name matched case-insensitively; a folded field counts
/// once; `Received:` lines in the body are not counted).
pub fn count_received(msg: &[u8]) -> usize {
    Lines::new(header_section(msg))
        .filter(|(_, line, _)| is_field(line, b"received"))
        .count()
}

/// True when `line` starts the header field `name` (lower case): the name,
/// then optional spaces or tabs (obsolete syntax), then a colon.
fn is_field(line: &[u8], name: &[u8]) -> bool {
    if line.len() <= name.len() || !line[..name.len()].eq_ignore_ascii_case(name) {
        return false;
    }
    line[name.len()..]
        .iter()
        .find(|&&b| b != b' ' && b != b'\t')
        .is_some_and(|&b| b == b':')
}

/// Lines of a byte string, each as `(offset, content, had_line_end)`. A line
/// ends at CRLF, at a bare LF or at a bare CR; the last line may have no end.
#[derive(Debug)]
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let rest = self.buf.get(start..)?;
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                self.pos = self.buf.len();
                Some((start, rest, false))
            }
            Some(i) => {
                let eol = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.pos = start + i + eol;
                Some((start, &rest[..i], true))
            }
        }
    }
}

/// `msg` with CRLF line endings and no line longer than [`MAX_LINE`]; the
/// result ends with CRLF unless empty. With `headers_only`, stops at the
/// first empty line.
fn normalize(msg: &[u8], headers_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64 + 2);
    let mut in_headers = true;
    for (_, line, _) in Lines::new(msg) {
        if in_headers && line.is_empty() {
            if headers_only {
                break;
            }
            in_headers = false;
        }
        push_split_line(&mut out, line, in_headers);
    }
    out
}

/// Append one line and CRLF, splitting it when longer than [`MAX_LINE`]:
/// header lines fold (before an existing space or tab when there is one,
/// otherwise CRLF and an added space), body lines break with CRLF (never
/// inside a UTF-8 sequence when that can be avoided).
fn push_split_line(out: &mut Vec<u8>, line: &[u8], header: bool) {
    let is_ws = |b: u8| b == b' ' || b == b'\t';
    let mut rest = line;
    // A continuation we started ourselves: it needs a leading space.
    let mut added_space = false;
    loop {
        let room = if added_space { MAX_LINE - 1 } else { MAX_LINE };
        if added_space {
            out.push(b' ');
        }
        if rest.len() <= room {
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
            return;
        }
        // Fold before the last space that leaves text before it.
        let fold = if header {
            let text_from = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
            (text_from + 1..=room).rev().find(|&p| is_ws(rest[p]))
        } else {
            None
        };
        let cut = fold.unwrap_or_else(|| utf8_cut(rest, room));
        out.extend_from_slice(&rest[..cut]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[cut..];
        added_space = header && fold.is_none();
    }
}

/// Where to cut `s` (longer than `max`) at most `max` octets in, backing
/// off to the start of a UTF-8 sequence when one is cut.
fn utf8_cut(s: &[u8], max: usize) -> usize {
    let mut cut = max;
    while cut > max.saturating_sub(3) && cut > 1 && (s[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if (s[cut] & 0xC0) == 0x80 { max } else { cut }
}

/// What one recipient's report says, cleaned for output.
#[derive(Debug)]
struct RcptReport {
    address: String,
    orcpt: Option<String>,
    action: &'static str,
    status: String,
    remote_mta: Option<String>,
    /// `type; text`, ready for `Diagnostic-Code:`.
    diagnostic: Option<String>,
    /// The diagnostic text alone, for people.
    diagnostic_text: Option<String>,
    last_attempt: Option<DateTime<Utc>>,
    next_attempt: Option<DateTime<Utc>>,
}

impl RcptReport {
    fn new(r: &Recipient, kind: DsnKind) -> Self {
        let status = r
            .status
            .as_deref()
            .map(str::trim)
            .filter(|s| valid_status(s) && kind.fits_class(s.as_bytes()[0]))
            .unwrap_or(kind.default_status())
            .to_string();
        let orcpt = r.orcpt.as_deref().map(clean).filter(|s| !s.is_empty());
        let orcpt = orcpt.map(|o| match o.split_once(';') {
            Some((t, a)) if !t.trim().is_empty() => format!("{};{}", t.trim(), a.trim()),
            Some((_, a)) => format!("rfc822;{}", a.trim()),
            None => format!("rfc822;{o}"),
        });
        let diagnostic = r.diagnostic.as_deref().and_then(diagnostic_code);
        Self {
            address: clean(&r.address),
            orcpt,
            action: kind.action(),
            status,
            remote_mta: r.remote_mta.as_deref().map(clean).filter(|s| !s.is_empty()),
            diagnostic_text: diagnostic.as_ref().map(|(_, t)| t.clone()),
            diagnostic: diagnostic.map(|(ty, t)| format!("{ty}; {t}")),
            last_attempt: r.last_attempt,
            next_attempt: r.next_attempt,
        }
    }
}

/// `class.subject.detail` with class 2, 4 or 5 and 1–3 digits each after.
fn valid_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(c), Some(sub), Some(det), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    matches!(c, "2" | "4" | "5") && digits(sub) && digits(det)
}

/// Split a stored diagnostic into `(type, text)` for `Diagnostic-Code:`.
/// A leading `smtp;` (any case, repeated) is the type already; another
/// `x-…;` type is kept; an SMTP reply without a type is `smtp`; anything
/// else (a local or network error) is `X-Sluice`.
fn diagnostic_code(d: &str) -> Option<(String, String)> {
    let mut text = clean(d);
    let mut ty: Option<String> = None;
    while let Some((t, rest)) = text.split_once(';') {
        let t = t.trim();
        let is_type = !t.is_empty()
            && t.len() <= 32
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let smtp = t.eq_ignore_ascii_case("smtp");
        let ext = t.len() > 2 && t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-"));
        if !is_type || !(smtp || ext) || (ty.is_some() && !smtp) {
            break;
        }
        if ty.is_none() {
            ty = Some(if smtp {
                "smtp".to_string()
            } else {
                t.to_string()
            });
        }
        text = rest.trim().to_string();
    }
    if text.is_empty() {
        return None;
    }
    let ty = ty.unwrap_or_else(|| {
        let b = text.as_bytes();
        let reply = b.len() >= 3
            && (b'2'..=b'5').contains(&b[0])
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b.get(3).is_none_or(|&c| c == b' ' || c == b'-');
        if reply { "smtp" } else { "X-Sluice" }.to_string()
    });
    Some((ty, text))
}

/// The `message/delivery-status` body (RFC 3464 §2.1): the per-message
/// block, then one block per recipient, each ending with an empty line.
fn delivery_status(env: &Envelope, mta: &str, reports: &[RcptReport]) -> String {
    let mut s = String::new();
    if let Some(envid) = env.params.envid.as_deref().map(clean)
        && !envid.is_empty()
    {
        push_folded(&mut s, &format!("Original-Envelope-Id: {envid}"));
    }
    push_folded(&mut s, &format!("Reporting-MTA: dns; {mta}"));
    let queue_id = clean(&env.id);
    if !queue_id.is_empty() {
        push_folded(&mut s, &format!("X-Sluice-Queue-ID: {queue_id}"));
    }
    push_folded(
        &mut s,
        &format!("Arrival-Date: {}", env.received_at.to_rfc2822()),
    );
    for r in reports {
        s.push_str("\r\n");
        if let Some(o) = &r.orcpt {
            push_folded(&mut s, &format!("Original-Recipient: {o}"));
        }
        // RFC 6533 §3: a non-ASCII address is of type utf-8.
        let ty = if r.address.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        push_folded(&mut s, &format!("Final-Recipient: {ty};{}", r.address));
        push_folded(&mut s, &format!("Action: {}", r.action));
        push_folded(&mut s, &format!("Status: {}", r.status));
        if let Some(m) = &r.remote_mta {
            push_folded(&mut s, &format!("Remote-MTA: dns; {m}"));
        }
        if let Some(d) = &r.diagnostic {
            push_folded(&mut s, &format!("Diagnostic-Code: {d}"));
        }
        if let Some(t) = r.last_attempt {
            push_folded(&mut s, &format!("Last-Attempt-Date: {}", t.to_rfc2822()));
        }
    }
    s
}

/// The `text/plain` explanation.
fn human_text(
    env: &Envelope,
    mta: &str,
    kind: DsnKind,
    reports: &[RcptReport],
    full: bool,
) -> String {
    fn line(s: &mut String, l: &str) {
        if l.is_empty() {
            s.push_str("\r\n");
        } else {
            push_folded(s, l);
        }
    }
    let mut s = String::new();
    line(&mut s, &format!("This is the mail system at host {mta}."));
    line(&mut s, "");
    let arrival = env.received_at.to_rfc2822();
    let id = clean(&env.id);
    match kind {
        DsnKind::Failure => {
            line(
                &mut s,
                "I'm sorry to have to inform you that your message could not be",
            );
            line(
                &mut s,
                "delivered to one or more recipients. The mail system gave up on",
            );
            line(&mut s, "the recipients listed below.");
        }
        DsnKind::Delay => {
            line(
                &mut s,
                "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.",
            );
            line(&mut s, "");
            line(
                &mut s,
                "Your message could not be delivered yet to the recipients listed",
            );
            line(
                &mut s,
                "below. The mail system will keep retrying, and will tell you if it",
            );
            line(&mut s, "finally gives up.");
        }
        DsnKind::Success => {
            line(
                &mut s,
                "Your message was successfully delivered to the recipients listed",
            );
            line(&mut s, "below.");
        }
    }
    line(&mut s, "");
    line(
        &mut s,
        &format!("The message arrived on {arrival} (queue id {id})."),
    );
    line(&mut s, "");
    for r in reports {
        let mut l = format!("<{}>", r.address);
        if let Some(o) = &r.orcpt
            && let Some((_, a)) = o.split_once(';')
            && !a.eq_ignore_ascii_case(&r.address)
        {
            l.push_str(&format!(" (originally {a})"));
        }
        l.push_str(": ");
        match (&r.remote_mta, &r.diagnostic_text) {
            (Some(m), Some(d)) => l.push_str(&format!("host {m} said: {d}")),
            (None, Some(d)) => l.push_str(d),
            (Some(m), None) => l.push_str(&format!("{} at host {m}", r.action)),
            (None, None) => l.push_str(r.action),
        }
        l.push_str(&format!(" (status {})", r.status));
        line(&mut s, &l);
        if kind == DsnKind::Delay {
            let next = match r.next_attempt {
                Some(t) => format!("    Next attempt: {}", t.to_rfc2822()),
                None => "    It will be retried.".to_string(),
            };
            line(&mut s, &next);
        }
    }
    line(&mut s, "");
    line(
        &mut s,
        if full {
            "The message is attached below."
        } else {
            "The message's header section is attached below."
        },
    );
    s
}

/// Append `line` (no CR or LF in it) and CRLF, folded before spaces so
/// that lines stay near [`SOFT_LINE`] octets, and never above [`MAX_LINE`]
/// (a word longer than that is cut, the rest continued after a space).
fn push_folded(out: &mut String, line: &str) {
    let mut rest: String = line.to_string();
    loop {
        let b = rest.as_bytes();
        if b.len() <= SOFT_LINE {
            break;
        }
        // Do not fold before the first word: a line of only spaces is not
        // allowed in a header section.
        let first_word = b
            .iter()
            .position(|&c| c != b' ' && c != b'\t')
            .unwrap_or(b.len());
        let min = first_word + 1;
        let is_ws = |c: u8| c == b' ' || c == b'\t';
        let soft = (min..=SOFT_LINE.min(b.len() - 1))
            .rev()
            .find(|&i| is_ws(b[i]));
        let brk =
            soft.or_else(|| (SOFT_LINE.max(min)..b.len().min(MAX_LINE + 1)).find(|&i| is_ws(b[i])));
        match brk {
            Some(i) => {
                out.push_str(&rest[..i]);
                out.push_str("\r\n");
                rest = rest[i..].to_string();
            }
            None if b.len() <= MAX_LINE => break,
            None => {
                let mut i = MAX_LINE;
                while !rest.is_char_boundary(i) {
                    i -= 1;
                }
                out.push_str(&rest[..i]);
                out.push_str("\r\n");
                rest = format!(" {}", &rest[i..]);
            }
        }
    }
    out.push_str(&rest);
    out.push_str("\r\n");
}

fn push_cte(part: &mut String, ascii: bool) {
    part.push_str(if ascii {
        "Content-Transfer-Encoding: 7bit\r\n"
    } else {
        "Content-Transfer-Encoding: 8bit\r\n"
    });
}

/// Control characters (CR and LF among them) to spaces, runs of white space
/// to one space, trimmed.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

/// A host name fit for an address, a `Message-ID` and `Reporting-MTA`.
fn host_name(s: &str) -> String {
    let h: String = s
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        .take(255)
        .collect();
    if h.is_empty() {
        "localhost".to_string()
    } else {
        h
    }
}

/// The letters, digits and `-` of `s`, at most `max` of them.
fn token(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(max)
        .collect()
}

/// A MIME boundary (at most 70 characters) that occurs in none of `parts`.
fn pick_boundary(id: &str, seed: u64, parts: &[&[u8]]) -> String {
    let mut n: u64 = 0;
    loop {
        let mut h = DefaultHasher::new();
        (seed, n).hash(&mut h);
        let b = format!("=_sluice-{id}-{:016x}", h.finish());
        let found = parts
            .iter()
            .any(|p| memchr::memmem::find(p, b.as_bytes()).is_some());
        if !found {
            return b;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::command::MailParams;
    use crate::spool::{ClientInfo, ENVELOPE_VERSION, RcptState};
    use chrono::TimeZone;
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, h, m, 0).unwrap()
    }

    fn rcpt(addr: &str) -> Recipient {
        let mut r = Recipient::new(addr.to_string());
        r.state = RcptState::Failed;
        r.attempts = 1;
        r.last_attempt = Some(t(10, 5));
        r.status = Some("5.1.1".into());
        r.diagnostic = Some("smtp; 550 5.1.1 <bob@example.net>: no such user".into());
        r.remote_mta = Some("mx1.example.net".into());
        r
    }

    fn env(sender: &str, recipients: Vec<Recipient>) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: "01J8Z3ABCDEF".into(),
            received_at: t(10, 0),
            sender: sender.into(),
            recipients,
            params: MailParams::default(),
            chunked: false,
            client: ClientInfo {
                ip: "192.0.2.7".into(),
                port: 40000,
                listener: "0.0.0.0:25".into(),
                helo: "client.example.org".into(),
                esmtp: true,
                tls: None,
                proxy: None,
            },
            size: 0,
            trace_len: 0,
            held: false,
            quarantine: None,
        }
    }

    const ORIGINAL: &[u8] = b"Received: from client.example.org ([192.0.2.7])\r\n\tby mx.example.com with ESMTP id 01J8Z3ABCDEF;\r\n\tSat, 14 Mar 2026 10:00:00 +0000\r\n\
From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: Lunch on Friday\r\nMessage-ID: <lunch-1@example.org>\r\n\r\n\
Hi Bob,\r\n\r\nlunch on Friday?\r\nSECRET-BODY-LINE\r\n";

    const MTA: &str = "mx.example.com";

    fn notify(success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify {
            success,
            failure,
            delay,
        })
    }

    /// Every line ends in CRLF, no bare CR or LF, none over 998 octets.
    fn check_lines(msg: &[u8]) {
        let mut i = 0;
        let mut line_start = 0;
        while i < msg.len() {
            match msg[i] {
                b'\r' => {
                    assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
                    assert!(i - line_start <= MAX_LINE, "line at {line_start} too long");
                    i += 2;
                    line_start = i;
                }
                b'\n' => panic!("bare LF at {i}"),
                _ => i += 1,
            }
        }
        assert_eq!(line_start, msg.len(), "last line has no CRLF");
    }

    /// The header-like blocks of a delivery-status body, unfolded, as
    /// (lower-case name, value) lists.
    fn blocks(body: &str) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        for block in body.split("\r\n\r\n") {
            let mut fields: Vec<(String, String)> = Vec::new();
            for l in block.split("\r\n") {
                if l.is_empty() {
                    continue;
                }
                if l.starts_with([' ', '\t']) {
                    let last = fields.last_mut().expect("continuation first");
                    last.1.push_str(l);
                } else {
                    let (n, v) = l.split_once(':').expect("field without colon");
                    fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            if !fields.is_empty() {
                out.push(fields);
            }
        }
        out
    }

    fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
        block
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    struct Parsed {
        top_type: String,
        report_type: Option<String>,
        types: Vec<String>,
        text: String,
        status: String,
        third: Vec<u8>,
        nested_subject: Option<String>,
    }

    fn parse(dsn: &Dsn) -> Parsed {
        check_lines(&dsn.message);
        let m = MessageParser::default()
            .parse(&dsn.message)
            .expect("DSN parses");
        let ct = m.content_type().expect("content type");
        let top_type = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
        let report_type = ct.attribute("report-type").map(str::to_string);
        let root = m.root_part();
        let ids = root.sub_parts().expect("multipart").to_vec();
        assert_eq!(ids.len(), 3, "three parts");
        let parts: Vec<_> = ids.iter().map(|&i| &m.parts[i as usize]).collect();
        let types = parts
            .iter()
            .map(|p| {
                let ct = p.content_type().expect("part content type");
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        let text = parts[0].text_contents().expect("text part").to_string();
        let status = String::from_utf8(parts[1].contents().to_vec()).expect("utf-8 status");
        let (third, nested_subject) = match &parts[2].body {
            PartType::Message(nested) => (
                nested.raw_message().to_vec(),
                nested.subject().map(str::to_string),
            ),
            _ => (parts[2].contents().to_vec(), None),
        };
        Parsed {
            top_type,
            report_type,
            types,
            text,
            status,
            third,
            nested_subject,
        }
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        memchr::memmem::find(hay, needle.as_bytes()).is_some()
    }

    #[test]
    fn failure_structure_and_fields() {
        let mut r2 = rcpt("carol@example.net");
        r2.orcpt = Some("rfc822;carol@old.example.net".into());
        r2.status = None;
        r2.diagnostic =
            Some("connect to mx.example.net[203.0.113.9]:25: Connection refused".into());
        r2.remote_mta = None;
        r2.last_attempt = None;
        let mut e = env(
            "alice@example.org",
            vec![rcpt("bob@example.net"), r2, rcpt("dave@example.net")],
        );
        e.params.envid = Some("QQ314159".into());
        let dsn = build(&e, ORIGINAL, &[0, 1], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert_eq!(dsn.to, "alice@example.org");
        assert!(!dsn.is_8bit());
        let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
        for want in [
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n",
            "To: <alice@example.org>\r\n",
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Date: Sat, 14 Mar 2026 11:00:00 +0000\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "MIME-Version: 1.0\r\n",
        ] {
            assert!(head.contains(want), "missing {want:?} in\n{head}");
        }
        let parsed = MessageParser::default().parse(&dsn.message).unwrap();
        let mid = parsed.message_id().expect("Message-ID");
        assert!(mid.ends_with(".01J8Z3ABCDEF@mx.example.com"), "{mid}");
        assert!(head.contains(&format!("Message-ID: <{mid}>\r\n")));

        let p = parse(&dsn);
        assert_eq!(p.top_type, "multipart/report");
        assert_eq!(p.report_type.as_deref(), Some("delivery-status"));
        assert_eq!(
            p.types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        assert!(p.text.contains("<bob@example.net>"));
        assert!(p.text.contains("host mx1.example.net said: 550 5.1.1"));
        assert!(p.text.contains("Connection refused"));
        assert!(!p.text.contains("dave@"));

        let b = blocks(&p.status);
        assert_eq!(b.len(), 3, "per-message + 2 recipients: {b:?}");
        assert_eq!(field(&b[0], "reporting-mta"), Some("dns; mx.example.com"));
        assert_eq!(field(&b[0], "original-envelope-id"), Some("QQ314159"));
        assert_eq!(
            field(&b[0], "arrival-date"),
            Some("Sat, 14 Mar 2026 10:00:00 +0000")
        );
        let bob = &b[1];
        assert_eq!(
            field(bob, "final-recipient"),
            Some("rfc822;bob@example.net")
        );
        assert_eq!(field(bob, "original-recipient"), None);
        assert_eq!(field(bob, "action"), Some("failed"));
        assert_eq!(field(bob, "status"), Some("5.1.1"));
        assert_eq!(field(bob, "remote-mta"), Some("dns; mx1.example.net"));
        assert_eq!(
            field(bob, "diagnostic-code"),
            Some("smtp; 550 5.1.1 <bob@example.net>: no such user")
        );
        assert_eq!(
            field(bob, "last-attempt-date"),
            Some("Sat, 14 Mar 2026 10:05:00 +0000")
        );
        let carol = &b[2];
        assert_eq!(
            field(carol, "original-recipient"),
            Some("rfc822;carol@old.example.net")
        );
        assert_eq!(
            field(carol, "final-recipient"),
            Some("rfc822;carol@example.net")
        );
        assert_eq!(field(carol, "status"), Some("5.0.0"));
        assert_eq!(field(carol, "remote-mta"), None);
        assert_eq!(field(carol, "last-attempt-date"), None);
        assert_eq!(
            field(carol, "diagnostic-code"),
            Some("X-Sluice; connect to mx.example.net[203.0.113.9]:25: Connection refused")
        );

        // RET absent: headers only, our Received: included, no body.
        assert!(contains(&p.third, "Subject: Lunch on Friday"));
        assert!(contains(&p.third, "Received: from client.example.org"));
        assert!(!contains(&p.third, "SECRET-BODY-LINE"));
        assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
    }

    #[test]
    fn ret_full_returns_whole_message() {
        let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        e.params.ret = Some(Ret::Full);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.types[2], "message/rfc822");
        assert_eq!(p.nested_subject.as_deref(), Some("Lunch on Friday"));
        assert!(contains(&p.third, "SECRET-BODY-LINE"));
        assert!(contains(&p.third, "Message-ID: <lunch-1@example.org>"));
    }

    #[test]
    fn ret_hdrs_returns_headers() {
        let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        e.params.ret = Some(Ret::Hdrs);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.types[2], "text/rfc822-headers");
        assert_eq!(p.third, header_section(ORIGINAL));
        assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
    }

    #[test]
    fn ret_full_only_for_failures() {
        let mut r = rcpt("bob@example.net");
        r.notify = notify(true, true, true);
        let mut e = env("alice@example.org", vec![r]);
        e.params.ret = Some(Ret::Full);
        for kind in [DsnKind::Delay, DsnKind::Success] {
            let dsn = build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).unwrap();
            let p = parse(&dsn);
            assert_eq!(p.types[2], "text/rfc822-headers", "{kind:?}");
            assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
        }
    }

    #[test]
    fn null_sender_never_bounced() {
        let e = env("", vec![rcpt("bob@example.net")]);
        for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
            assert!(build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).is_none());
        }
        let e = env("<>", vec![rcpt("bob@example.net")]);
        assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_none());
    }

    #[test]
    fn notify_never_gives_none() {
        let mut r = rcpt("bob@example.net");
        r.notify = notify(false, false, false);
        let e = env("alice@example.org", vec![r]);
        for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
            assert!(build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).is_none());
        }
    }

    #[test]
    fn notify_success_only() {
        let mut r = rcpt("bob@example.net");
        r.notify = notify(true, false, false);
        r.status = Some("2.0.0".into());
        r.diagnostic = Some("smtp; 250 2.0.0 Ok: queued as 4F2".into());
        r.state = RcptState::Delivered;
        let e = env("alice@example.org", vec![r]);
        assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_none());
        assert!(build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).is_none());
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Success, MTA, t(11, 0)).unwrap();
        let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
        assert!(head.contains("Subject: Successful Mail Delivery Report\r\n"));
        let p = parse(&dsn);
        let b = blocks(&p.status);
        assert_eq!(field(&b[1], "action"), Some("delivered"));
        assert_eq!(field(&b[1], "status"), Some("2.0.0"));
    }

    #[test]
    fn default_notify() {
        let e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_some());
        assert!(build(&e, ORIGINAL, &[0], DsnKind::Success, MTA, t(11, 0)).is_none());
        let mut e = e;
        e.recipients[0].status = Some("4.4.1".into());
        e.recipients[0].diagnostic = Some("smtp; 421 4.4.1 try later".into());
        e.recipients[0].next_attempt = Some(t(12, 0));
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
        let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
        assert!(head.contains("Subject: Delayed Mail (still being retried)\r\n"));
        let p = parse(&dsn);
        let b = blocks(&p.status);
        assert_eq!(field(&b[1], "action"), Some("delayed"));
        assert_eq!(field(&b[1], "status"), Some("4.4.1"));
        assert_eq!(
            field(&b[1], "diagnostic-code"),
            Some("smtp; 421 4.4.1 try later")
        );
        assert!(p.text.contains("WARNING ONLY"));
        assert!(
            p.text
                .contains("Next attempt: Sat, 14 Mar 2026 12:00:00 +0000")
        );
    }

    #[test]
    fn mixed_notify_reports_only_those_asking() {
        let mut never = rcpt("never@example.net");
        never.notify = notify(false, false, false);
        let e = env(
            "alice@example.org",
            vec![never, rcpt("bob@example.net"), rcpt("x@example.net")],
        );
        // Out-of-range and repeated indices are ignored.
        let dsn = build(
            &e,
            ORIGINAL,
            &[0, 1, 1, 99],
            DsnKind::Failure,
            MTA,
            t(11, 0),
        )
        .unwrap();
        let p = parse(&dsn);
        let b = blocks(&p.status);
        assert_eq!(b.len(), 2);
        assert_eq!(
            field(&b[1], "final-recipient"),
            Some("rfc822;bob@example.net")
        );
        assert!(build(&e, ORIGINAL, &[], DsnKind::Failure, MTA, t(11, 0)).is_none());
        assert!(build(&e, ORIGINAL, &[7], DsnKind::Failure, MTA, t(11, 0)).is_none());
    }

    #[test]
    fn status_must_fit_the_kind() {
        let mut r = rcpt("bob@example.net");
        r.status = Some("5.1.1".into());
        r.notify = notify(true, true, true);
        let e = env("alice@example.org", vec![r]);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
        assert_eq!(
            field(&blocks(&parse(&dsn).status)[1], "status"),
            Some("4.0.0")
        );
        let mut e = e;
        e.recipients[0].status = Some("garbage".into());
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert_eq!(
            field(&blocks(&parse(&dsn).status)[1], "status"),
            Some("5.0.0")
        );
        e.recipients[0].status = Some("4.4.7".into());
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert_eq!(
            field(&blocks(&parse(&dsn).status)[1], "status"),
            Some("4.4.7")
        );
    }

    #[test]
    fn diagnostic_not_doubled_and_single_line() {
        for (stored, want) in [
            (
                "smtp; 550 5.1.1 no such user",
                "smtp; 550 5.1.1 no such user",
            ),
            (
                "SMTP;550 5.1.1 no such user",
                "smtp; 550 5.1.1 no such user",
            ),
            (
                "smtp; smtp; 550 5.1.1 no such user",
                "smtp; 550 5.1.1 no such user",
            ),
            ("550 5.1.1 no such user", "smtp; 550 5.1.1 no such user"),
            (
                "smtp; 550-5.1.1 first\r\n550 5.1.1 second",
                "smtp; 550-5.1.1 first 550 5.1.1 second",
            ),
            ("x-unix; disk full", "x-unix; disk full"),
            ("timed out; no answer", "X-Sluice; timed out; no answer"),
        ] {
            let mut r = rcpt("bob@example.net");
            r.diagnostic = Some(stored.into());
            let e = env("alice@example.org", vec![r]);
            let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
            assert!(!contains(&dsn.message, "smtp; smtp;"), "{stored}");
            let p = parse(&dsn);
            assert_eq!(
                field(&blocks(&p.status)[1], "diagnostic-code"),
                Some(want),
                "{stored}"
            );
        }
        let mut r = rcpt("bob@example.net");
        r.diagnostic = Some(" \r\n ".into());
        let e = env("alice@example.org", vec![r]);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert_eq!(
            field(&blocks(&parse(&dsn).status)[1], "diagnostic-code"),
            None
        );
    }

    #[test]
    fn long_values_are_folded() {
        let mut r = rcpt("bob@example.net");
        let long_word = "x".repeat(3000);
        r.diagnostic = Some(format!(
            "smtp; 550 5.7.1 {} {long_word} end",
            "blocked because of policy ".repeat(60)
        ));
        let mut e = env("alice@example.org", vec![r]);
        e.params.ret = Some(Ret::Full);
        let mut original = ORIGINAL.to_vec();
        original.extend_from_slice(&[b'y'; 5000]);
        original.extend_from_slice(b"\r\n");
        let dsn = build(&e, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        let diag = field(&blocks(&p.status)[1], "diagnostic-code")
            .unwrap()
            .to_string();
        assert!(diag.starts_with("smtp; 550 5.7.1 blocked because"));
        assert!(diag.ends_with(" end"));
        // The overlong body line was broken, nothing was lost.
        let ys = |m: &[u8]| m.iter().filter(|&&b| b == b'y').count();
        assert_eq!(ys(&p.third), ys(&original));
        assert!(p.third.len() > original.len());
    }

    #[test]
    fn utf8_uses_global_types() {
        let mut r = rcpt("josé@exemple.fr");
        r.orcpt = Some("utf-8;josé@exemple.fr".into());
        let mut e = env("renée@exemple.fr", vec![r]);
        e.params.smtputf8 = true;
        let original = "Received: by mx.example.com; Sat, 14 Mar 2026 10:00:00 +0000\r\n\
From: Renée <renée@exemple.fr>\r\nSubject: Café\r\n\r\nBonjour\r\n"
            .as_bytes();
        let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert!(dsn.is_8bit());
        let p = parse(&dsn);
        assert_eq!(p.report_type.as_deref(), Some("global-delivery-status"));
        assert_eq!(p.types[1], "message/global-delivery-status");
        assert_eq!(p.types[2], "message/global-headers");
        let b = blocks(&p.status);
        assert_eq!(
            field(&b[1], "final-recipient"),
            Some("utf-8;josé@exemple.fr")
        );
        assert_eq!(
            field(&b[1], "original-recipient"),
            Some("utf-8;josé@exemple.fr")
        );
        assert!(contains(&p.third, "Subject: Café"));

        e.params.ret = Some(Ret::Full);
        let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.types[2], "message/global");
        assert_eq!(p.nested_subject.as_deref(), Some("Café"));
    }

    #[test]
    fn eight_bit_body_keeps_classic_types() {
        let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        e.params.ret = Some(Ret::Full);
        let original =
            "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n".as_bytes();
        let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert!(dsn.is_8bit());
        let p = parse(&dsn);
        assert_eq!(p.report_type.as_deref(), Some("delivery-status"));
        assert_eq!(p.types[2], "message/rfc822");
        assert!(contains(
            &dsn.message,
            "Content-Transfer-Encoding: 8bit\r\n"
        ));
    }

    #[test]
    fn message_ids_and_boundaries_differ() {
        let e = env(
            "alice@example.org",
            vec![rcpt("bob@example.net"), rcpt("carol@example.net")],
        );
        let a = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let b = build(&e, ORIGINAL, &[1], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let c = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
        let d = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 1)).unwrap();
        let ids: Vec<String> = [&a, &b, &c, &d]
            .iter()
            .map(|x| {
                MessageParser::default()
                    .parse(&x.message)
                    .unwrap()
                    .message_id()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                assert_ne!(ids[i], ids[j]);
            }
        }
    }

    #[test]
    fn boundary_not_in_content() {
        let e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let m = MessageParser::default().parse(&dsn.message).unwrap();
        let boundary = m
            .content_type()
            .unwrap()
            .attribute("boundary")
            .unwrap()
            .to_string();
        // An original that contains exactly that boundary gets another one.
        let mut e2 = e.clone();
        e2.params.ret = Some(Ret::Full);
        let mut original = ORIGINAL.to_vec();
        original.extend_from_slice(format!("--{boundary}\r\n--{boundary}--\r\n").as_bytes());
        let dsn2 = build(&e2, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let m2 = MessageParser::default().parse(&dsn2.message).unwrap();
        let boundary2 = m2.content_type().unwrap().attribute("boundary").unwrap();
        assert_ne!(boundary, boundary2);
        assert!(boundary2.len() <= 70);
        let p = parse(&dsn2);
        assert!(contains(&p.third, &format!("--{boundary}--")));
    }

    #[test]
    fn bare_line_endings_normalized() {
        let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
        e.params.ret = Some(Ret::Full);
        let original = b"Subject: bare\nX-A: 1\r\nX-B: 2\r\rbody\nmore\rend";
        let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.nested_subject.as_deref(), Some("bare"));
        assert!(contains(&dsn.message, "body\r\nmore\r\nend\r\n"));
    }

    #[test]
    fn real_message_round_trips() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/corpus/stalwart-mail-parser/rfc-000.eml"
        );
        let original =
            std::fs::read(path).unwrap_or_else(|e| panic!("corpus message {path} is missing: {e}"));
        let want = MessageParser::default()
            .parse(&original)
            .expect("corpus message parses")
            .subject()
            .expect("corpus message has a subject")
            .to_string();
        let mut e = env("nsb@nsb.fv.com", vec![rcpt("ned@innosoft.com")]);
        e.params.ret = Some(Ret::Full);
        let dsn = build(&e, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.types[2], "message/rfc822");
        assert_eq!(p.nested_subject.as_deref(), Some(want.as_str()));
        let m = MessageParser::default().parse(&dsn.message).unwrap();
        let nested = m
            .parts
            .iter()
            .find_map(|part| match &part.body {
                PartType::Message(n) => Some(n),
                _ => None,
            })
            .unwrap();
        // The nested message keeps its own MIME structure.
        let ct = nested.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("mixed"));
        assert!(nested.parts.len() > 3);
    }

    #[test]
    fn header_section_cases() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"A: 1\r\nB: 2\r\n"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_section(b"A: 1"), b"A: 1");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(header_section(b""), b"");
    }

    #[test]
    fn count_received_cases() {
        let msg = b"Received: from a by b;\r\n\tSat, 14 Mar 2026 10:00:00 +0000\r\n\
RECEIVED: from c\r\n  by d; Sat, 14 Mar 2026 09:00:00 +0000\r\n\
received : obsolete spacing\r\n\
X-Received: not this one\r\n\
Received-SPF: pass\r\n\
Subject: Received: in a subject\r\n\
From: a@b\r\n\r\n\
Received: from body by text\r\nReceived: again\r\n";
        assert_eq!(count_received(msg), 3);
        assert_eq!(
            count_received(b"Received: x\nreceived: y\n\nReceived: z\n"),
            2
        );
        assert_eq!(count_received(b"Subject: none\r\n\r\n"), 0);
        assert_eq!(count_received(b""), 0);
        assert_eq!(count_received(b"Received: only headers, no body"), 1);
        assert_eq!(count_received(ORIGINAL), 1);
    }

    #[test]
    fn never_panics_and_lines_stay_valid() {
        // A small deterministic generator of hostile inputs.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b"\r\n\r\n \t:;aZ9.-<>\"=_\x00\x7f\xc3\xa9\xff\x80smtpReceived--";
        for round in 0..300 {
            let len = (next() % 4000) as usize;
            let mut original = Vec::with_capacity(len);
            for _ in 0..len {
                let r = next();
                if r % 9 == 0 {
                    // Long runs make overlong lines.
                    let n = (r >> 8) as usize % 1500;
                    original.extend(std::iter::repeat_n(b'x', n));
                } else {
                    original.push(alphabet[(r >> 8) as usize % alphabet.len()]);
                }
            }
            let junk = |n: u64| -> String {
                let s = String::from_utf8_lossy(&original[..original.len().min(n as usize)]);
                s.into_owned()
            };
            let mut r = rcpt(&format!("u{round}@example.net"));
            r.diagnostic = Some(junk(next() % 2000));
            r.remote_mta = Some(junk(next() % 50));
            r.orcpt = Some(junk(next() % 80));
            r.status = Some(junk(next() % 6));
            r.notify = notify(true, true, true);
            let mut e = env("alice@example.org", vec![r]);
            e.id = junk(next() % 40);
            e.sender = format!("s{}", junk(next() % 40));
            e.params.envid = Some(junk(next() % 100));
            e.params.ret = if round % 2 == 0 {
                Some(Ret::Full)
            } else {
                None
            };
            let mta = junk(next() % 30);
            for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
                let dsn = build(&e, &original, &[0, 5], kind, &mta, t(11, 0)).unwrap();
                check_lines(&dsn.message);
                let _ = parse(&dsn);
            }
            let _ = count_received(&original);
            let _ = header_section(&original);
        }
    }
}
