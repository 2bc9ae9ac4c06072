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
//! report) the header section as `text/rfc822-headers`. Nothing returned
//! is larger than a limit ([`build_with_limit`]; Postfix's
//! `bounce_size_limit` plays this part): a larger message is returned as
//! its header section, a larger header section is cut after the last
//! whole field that fits. A DSN then never carries back more than the
//! limit, whatever a sender made the gateway accept.
//!
//! When the original's header section, the sender, or anything in the
//! delivery-status fields is not ASCII, the RFC 6533 types are used instead
//! (`message/global-delivery-status`, `message/global`,
//! `message/global-headers`); [`Dsn::is_8bit`] then says the report needs
//! an 8-bit capable transport (`BODY=8BITMIME`, and `SMTPUTF8` when
//! [`Dsn::to`] is not ASCII).
//!
//! [`header_section`] is the small header helper the queue uses to show a
//! message's headers (loop detection counts with
//! [`crate::smtp::header::count_received`]).

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
    build_with_limit(
        env,
        original,
        which,
        kind,
        reporting_mta,
        now,
        DEFAULT_RETURN_LIMIT,
    )
}

/// What [`build`] returns of the original at most, in octets (Postfix's
/// `bounce_size_limit` default is 50,000).
pub const DEFAULT_RETURN_LIMIT: usize = 50 * 1024;

/// [`build`], returning at most `limit` octets of the original.
pub fn build_with_limit(
    env: &Envelope,
    original: &[u8],
    which: &[usize],
    kind: DsnKind,
    reporting_mta: &str,
    now: DateTime<Utc>,
    limit: usize,
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
    let full =
        kind == DsnKind::Failure && env.params.ret == Some(Ret::Full) && original.len() <= limit;

    // The three parts' contents first: the boundary must not occur in any.
    let reports: Vec<RcptReport> = selected
        .iter()
        .map(|(_, r)| RcptReport::new(r, kind))
        .collect();
    let status = delivery_status(env, &mta, &reports);
    let returned = if full {
        normalize(original, false)
    } else {
        normalize(capped_headers(header_section(original), limit), true)
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

/// The header section `h`, or when it is longer than `limit` its fields
/// up to the last whole one that fits.
fn capped_headers(h: &[u8], limit: usize) -> &[u8] {
    if h.len() <= limit {
        return h;
    }
    let mut end = 0;
    for (start, line, _) in Lines::new(h) {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if start > limit {
                break;
            }
            end = start;
        }
    }
    &h[..end]
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
mod tests;
