//! The values a policy receives and returns: plain Rust mirrors of the WIT
//! records in `wit/types.wit` (session, envelope, verdict, reply, route,
//! changes), with builders for the common cases.
//!
//! Every type here is owned data with `Clone`, `Debug`, `PartialEq` and
//! (where it has an obvious "empty" value) `Default`, so policy tests can
//! build them with struct literals and compare them with `assert_eq!`.

use std::fmt;
use std::net::IpAddr;

/// The stages a policy may handle (WIT `stage`).
///
/// A policy lists its stages in [`Policy::stages`](crate::Policy::stages);
/// the host calls only the hooks of the listed stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Stage {
    /// A client connected: [`Policy::on_connect`](crate::Policy::on_connect).
    Connect,
    /// EHLO or HELO: [`Policy::on_helo`](crate::Policy::on_helo).
    Helo,
    /// MAIL FROM: [`Policy::on_mail_from`](crate::Policy::on_mail_from).
    MailFrom,
    /// RCPT TO: [`Policy::on_rcpt`](crate::Policy::on_rcpt).
    Rcpt,
    /// The message arrived: [`Policy::on_data`](crate::Policy::on_data).
    Data,
    /// The queue asks for a recipient's next hop:
    /// [`Policy::on_route`](crate::Policy::on_route).
    Route,
}

impl Stage {
    /// Every stage, in SMTP order.
    pub const ALL: &'static [Stage] = &[
        Stage::Connect,
        Stage::Helo,
        Stage::MailFrom,
        Stage::Rcpt,
        Stage::Data,
        Stage::Route,
    ];

    /// The WIT name of the stage ("connect", "helo", "mail-from", "rcpt",
    /// "data", "route"), as used in the gateway's logs and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::MailFrom => "mail-from",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Route => "route",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SMTP reply for a refusal (WIT `reply`).
///
/// ```
/// use sluice_guest::Reply;
/// let reply = Reply::new(550, "5.7.1", "relaying denied");
/// assert_eq!(reply.to_string(), "550 5.7.1 relaying denied");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Reply {
    /// Three-digit code: 5xx for a rejection, 4xx for a temporary failure.
    /// The host corrects a code of the wrong class (and logs it).
    pub code: u16,
    /// Enhanced status code (RFC 3463) such as "5.7.1"; empty for the
    /// host's default for the code.
    pub enhanced: String,
    /// Human-readable text, one line (the host replaces CR and LF).
    pub text: String,
}

impl Reply {
    /// A reply with this code, enhanced code and text.
    pub fn new(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.enhanced.is_empty() {
            write!(f, " {}", self.enhanced)?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// What a policy decides at a stage (WIT `verdict`).
///
/// ```
/// use sluice_guest::{Reply, Verdict};
/// let v = Verdict::reject(550, "5.7.1", "listed at zen.example");
/// assert_eq!(v, Verdict::Reject(Reply::new(550, "5.7.1", "listed at zen.example")));
/// assert_eq!(Verdict::default(), Verdict::Continue);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Verdict {
    /// No opinion: the next policy in the chain decides.
    #[default]
    Continue,
    /// Accept now: skip the rest of the chain for this stage.
    Accept,
    /// Refuse permanently with this reply (5xx).
    Reject(Reply),
    /// Refuse temporarily with this reply (4xx): the client retries.
    Tempfail(Reply),
    /// Data stage only: say 250, then drop the message silently. At other
    /// stages the host treats it as a rejection with 550 5.7.1.
    Discard,
    /// Data stage only: say 250 and keep the message in quarantine with
    /// this reason. At other stages the host treats it as a temporary
    /// failure with 451 4.7.1.
    Quarantine(String),
}

impl Verdict {
    /// [`Verdict::Reject`] with this reply (use a 5xx code).
    pub fn reject(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        Verdict::Reject(Reply::new(code, enhanced, text))
    }

    /// [`Verdict::Tempfail`] with this reply (use a 4xx code).
    pub fn tempfail(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        Verdict::Tempfail(Reply::new(code, enhanced, text))
    }

    /// [`Verdict::Quarantine`] with this reason.
    pub fn quarantine(reason: impl Into<String>) -> Self {
        Verdict::Quarantine(reason.into())
    }

    /// Whether this is [`Verdict::Continue`].
    #[must_use]
    pub fn is_continue(&self) -> bool {
        matches!(self, Verdict::Continue)
    }
}

/// TLS parameters of the client session (WIT `tls-info`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1_3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// Who is talking to the gateway (WIT `session`); passed to every
/// SMTP-stage hook.
///
/// ```
/// use sluice_guest::Session;
/// let s = Session { client_ip: "192.0.2.7".into(), ..Session::default() };
/// assert_eq!(s.ip(), Some("192.0.2.7".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Session {
    /// Client address, textual ("192.0.2.7" or "2001:db8::7"); the
    /// source address of the PROXY protocol when a trusted proxy sent one.
    pub client_ip: String,
    /// Client port.
    pub client_port: u16,
    /// The listener that took the connection, "ip:port".
    pub listener: String,
    /// The EHLO/HELO name, once given.
    pub helo: Option<String>,
    /// TLS details when the session is encrypted.
    pub tls: Option<TlsInfo>,
    /// Whether the client may relay (it is in `relay_networks`).
    pub relay_client: bool,
}

impl Session {
    /// The client address parsed, or `None` if the host sent text that is
    /// not an address (it should not).
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        self.client_ip.parse().ok()
    }

    /// Whether the session is encrypted.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// One ESMTP parameter of MAIL FROM or RCPT TO (WIT `param`), e.g.
/// ("SIZE", "1024").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Param {
    /// Upper-case keyword.
    pub name: String,
    /// Value; empty when the parameter has none (e.g. SMTPUTF8).
    pub value: String,
}

impl Param {
    /// A parameter with this name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value of the first parameter called `name` (case-insensitive)
    /// in `params`.
    ///
    /// ```
    /// use sluice_guest::Param;
    /// let params = [Param::new("SIZE", "1024"), Param::new("SMTPUTF8", "")];
    /// assert_eq!(Param::find(&params, "size"), Some("1024"));
    /// assert_eq!(Param::find(&params, "BODY"), None);
    /// ```
    #[must_use]
    pub fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }
}

/// The envelope as far as it is known at a stage (WIT `envelope`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Envelope {
    /// Reverse-path without brackets; empty for the null sender `<>`.
    pub sender: String,
    /// MAIL FROM parameters.
    pub sender_params: Vec<Param>,
    /// Recipients accepted so far (at the rcpt stage: before this RCPT),
    /// as "local@domain".
    pub recipients: Vec<String>,
}

impl Envelope {
    /// Whether the sender is the null sender `<>` (bounces).
    #[must_use]
    pub fn is_null_sender(&self) -> bool {
        self.sender.is_empty()
    }
}

/// A header field (WIT `header`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// Field name, e.g. "X-Spam-Flag".
    pub name: String,
    /// Field value (unfolded; the host folds long values it adds).
    pub value: String,
}

impl Header {
    /// A header field with this name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A change a data-stage hook asks for (WIT `change`). Changes apply in
/// order, and only when the chain's final verdict lets the message through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// Add a header field at the top of the header section.
    AddHeader(Header),
    /// Remove every header field with this name (case-insensitive).
    RemoveHeader(String),
    /// Add an envelope recipient ("local@domain").
    AddRecipient(String),
    /// Remove an envelope recipient (exact address, case-insensitive).
    RemoveRecipient(String),
}

/// The result of the data stage: a verdict and changes (WIT `data-result`).
///
/// ```
/// use sluice_guest::{Change, DataResult, Header, Verdict};
/// let r = DataResult::continue_()
///     .add_header("X-Spam-Flag", "YES")
///     .remove_header("X-Spam-Score");
/// assert_eq!(r.verdict, Verdict::Continue);
/// assert_eq!(r.changes[0], Change::AddHeader(Header::new("X-Spam-Flag", "YES")));
///
/// let r: DataResult = Verdict::reject(550, "5.7.1", "no").into();
/// assert!(r.changes.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DataResult {
    /// The decision.
    pub verdict: Verdict,
    /// Changes to the message and envelope, applied in order.
    pub changes: Vec<Change>,
}

impl DataResult {
    /// No opinion and no changes (the default of
    /// [`Policy::on_data`](crate::Policy::on_data)).
    #[must_use]
    pub fn continue_() -> Self {
        DataResult::default()
    }

    /// This verdict, no changes.
    #[must_use]
    pub fn new(verdict: Verdict) -> Self {
        DataResult {
            verdict,
            changes: Vec::new(),
        }
    }

    /// Accept now, skipping the rest of the chain.
    #[must_use]
    pub fn accept() -> Self {
        DataResult::new(Verdict::Accept)
    }

    /// Refuse permanently with this reply (5xx).
    pub fn reject(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        DataResult::new(Verdict::reject(code, enhanced, text))
    }

    /// Refuse temporarily with this reply (4xx).
    pub fn tempfail(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        DataResult::new(Verdict::tempfail(code, enhanced, text))
    }

    /// Say 250, then drop the message.
    #[must_use]
    pub fn discard() -> Self {
        DataResult::new(Verdict::Discard)
    }

    /// Say 250 and quarantine the message with this reason.
    pub fn quarantine(reason: impl Into<String>) -> Self {
        DataResult::new(Verdict::quarantine(reason))
    }

    /// The same changes with another verdict.
    #[must_use]
    pub fn with_verdict(mut self, verdict: Verdict) -> Self {
        self.verdict = verdict;
        self
    }

    /// Also add a header field at the top of the header section.
    #[must_use]
    pub fn add_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.changes
            .push(Change::AddHeader(Header::new(name, value)));
        self
    }

    /// Also remove every header field called `name`.
    #[must_use]
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.changes.push(Change::RemoveHeader(name.into()));
        self
    }

    /// Also add an envelope recipient.
    #[must_use]
    pub fn add_recipient(mut self, address: impl Into<String>) -> Self {
        self.changes.push(Change::AddRecipient(address.into()));
        self
    }

    /// Also remove an envelope recipient.
    #[must_use]
    pub fn remove_recipient(mut self, address: impl Into<String>) -> Self {
        self.changes.push(Change::RemoveRecipient(address.into()));
        self
    }
}

impl From<Verdict> for DataResult {
    fn from(verdict: Verdict) -> Self {
        DataResult::new(verdict)
    }
}

/// TLS policy towards a relay host (WIT `tls-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// STARTTLS when offered, certificate not verified.
    #[default]
    Opportunistic,
    /// STARTTLS required, certificate verified.
    Require,
    /// Plain text.
    None,
}

/// A relay host (smarthost) next hop (WIT `relay-host`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct RelayHost {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS policy.
    pub tls: TlsMode,
}

/// Where one recipient goes (WIT `route`).
///
/// ```
/// use sluice_guest::{RelayHost, Route, TlsMode};
/// let r = Route::relay("smtp.provider.net", 587, TlsMode::Require);
/// assert_eq!(r, Route::Relay(RelayHost {
///     host: "smtp.provider.net".into(), port: 587, tls: TlsMode::Require,
/// }));
/// assert_eq!(Route::default(), Route::Default);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Route {
    /// No opinion: the next policy decides; when none does, the gateway's
    /// domain match applies.
    #[default]
    Default,
    /// Deliver to the local mailbox.
    Local,
    /// Send to this relay host.
    Relay(RelayHost),
    /// Send to the MX hosts of this domain.
    Mx(String),
    /// Do not deliver: fail the recipient with this reply (a DSN follows).
    Reject(Reply),
}

impl Route {
    /// [`Route::Relay`] to `host:port` with this TLS policy.
    pub fn relay(host: impl Into<String>, port: u16, tls: TlsMode) -> Self {
        Route::Relay(RelayHost {
            host: host.into(),
            port,
            tls,
        })
    }

    /// [`Route::Mx`] of this domain.
    pub fn mx(domain: impl Into<String>) -> Self {
        Route::Mx(domain.into())
    }

    /// [`Route::Reject`] with this reply.
    pub fn reject(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        Route::Reject(Reply::new(code, enhanced, text))
    }
}

/// A MIME part's description (WIT `part-info`), from
/// [`Message::parts`](crate::Message::parts).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PartInfo {
    /// Content type, lower case, e.g. "text/plain", "image/png".
    pub content_type: String,
    /// The file name (Content-Disposition filename or Content-Type name),
    /// when there is one.
    pub filename: Option<String>,
    /// Size of the decoded content in octets.
    pub size: u32,
    /// Whether the part is an attachment (not an inline text body).
    pub is_attachment: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        assert_eq!(
            Verdict::tempfail(451, "4.7.1", "try later"),
            Verdict::Tempfail(Reply {
                code: 451,
                enhanced: "4.7.1".into(),
                text: "try later".into()
            })
        );
        assert_eq!(
            Verdict::quarantine("virus"),
            Verdict::Quarantine("virus".into())
        );
        assert!(Verdict::default().is_continue());
        assert_eq!(Route::mx("example.com"), Route::Mx("example.com".into()));
        assert_eq!(
            Route::reject(550, "5.1.1", "no such user"),
            Route::Reject(Reply::new(550, "5.1.1", "no such user"))
        );
        let r = DataResult::quarantine("spam")
            .add_recipient("audit@example.com")
            .remove_recipient("ceo@example.com")
            .with_verdict(Verdict::Accept);
        assert_eq!(r.verdict, Verdict::Accept);
        assert_eq!(
            r.changes,
            vec![
                Change::AddRecipient("audit@example.com".into()),
                Change::RemoveRecipient("ceo@example.com".into()),
            ]
        );
        assert_eq!(DataResult::discard().verdict, Verdict::Discard);
        assert_eq!(DataResult::accept().verdict, Verdict::Accept);
        assert_eq!(
            DataResult::tempfail(451, "", "x").verdict,
            Verdict::Tempfail(Reply::new(451, "", "x"))
        );
        assert_eq!(DataResult::reject(554, "5.7.1", "x").changes, vec![]);
    }

    #[test]
    fn reply_display() {
        assert_eq!(Reply::new(451, "", "later").to_string(), "451 later");
        assert_eq!(Reply::new(550, "5.7.1", "").to_string(), "550 5.7.1");
    }

    #[test]
    fn stage_names() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["connect", "helo", "mail-from", "rcpt", "data", "route"]
        );
    }

    #[test]
    fn session_helpers() {
        let s = Session {
            client_ip: "2001:db8::7".into(),
            tls: Some(TlsInfo::default()),
            ..Session::default()
        };
        assert!(s.ip().is_some_and(|ip| ip.is_ipv6()));
        assert!(s.is_tls());
        let bad = Session {
            client_ip: "not an ip".into(),
            ..Session::default()
        };
        assert_eq!(bad.ip(), None);
        assert!(Envelope::default().is_null_sender());
    }
}
