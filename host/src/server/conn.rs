//! The per-connection driver: runs one [`Session`] over a socket, doing
//! the I/O, timeouts, TLS upgrades, policy checks and spool writes the
//! session asks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::stream::Stream;
use super::{Shared, changes, proxy, refuse};
use crate::config::ListenerConfig;
use crate::policy::{ChainSession, DataOutcome, Decision, EnvelopeInfo, SessionInfo};
use crate::smtp::command::{Body, MailParams, RcptParams, Ret};
use crate::smtp::reply::std_replies;
use crate::smtp::{Action, Check, Reply, ReversePath, Session, Transaction, Verdict, Waiting};
use crate::spool::{
    ClientInfo, ENVELOPE_VERSION, Envelope, NewMessage, Recipient, TlsInfo, new_queue_id,
};

/// Read buffer per connection.
const READ_CHUNK: usize = 16 * 1024;

/// Who is on the other end.
#[derive(Debug, Clone)]
struct Peer {
    /// The client (the PROXY source when a trusted proxy named one).
    client: SocketAddr,
    /// The proxy's own address, when there was one.
    proxy: Option<SocketAddr>,
    /// Our side of the connection.
    local: SocketAddr,
    tls: Option<TlsInfo>,
}

fn tls_info(s: &tokio_rustls::server::TlsStream<TcpStream>, implicit: bool) -> TlsInfo {
    let (_, conn) = s.get_ref();
    TlsInfo {
        version: conn
            .protocol_version()
            .map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
        cipher: conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
        implicit,
    }
}

/// Serve one accepted connection to its end.
pub(super) async fn handle(
    tcp: TcpStream,
    peer_addr: SocketAddr,
    cfg: Arc<ListenerConfig>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = &shared.config.limits;
    let local = tcp.local_addr().unwrap_or(cfg.address);
    let mut tcp = tcp;
    let mut peer = Peer {
        client: peer_addr,
        proxy: None,
        local,
        tls: None,
    };
    let mut early = Vec::new();
    // PROXY protocol: only a trusted proxy's header is read and believed;
    // anyone else talks SMTP directly and is seen as who they are.
    if cfg.proxy_protocol
        && cfg
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer_addr.ip()))
    {
        match proxy::read_header(&mut tcp, limits.proxy_header_timeout).await {
            Ok(h) => {
                if let Some(src) = h.source {
                    peer.client = src;
                    peer.proxy = Some(peer_addr);
                }
                early = h.rest;
            }
            Err(e) => {
                tracing::warn!(proxy = %peer_addr, error = %e, "bad PROXY header, closing");
                return;
            }
        }
    }
    let Some(_slot) = shared.per_ip.try_acquire(peer.client.ip()) else {
        tracing::warn!(client = %peer.client, "per-address connection limit reached");
        refuse(tcp, std_replies::too_many_from_ip()).await;
        return;
    };
    let stream = if cfg.implicit_tls {
        match tokio::time::timeout(limits.tls_handshake_timeout, shared.tls.accept(tcp)).await {
            Ok(Ok(s)) => {
                peer.tls = Some(tls_info(&s, true));
                Stream::Tls(Box::new(s))
            }
            Ok(Err(e)) => {
                tracing::debug!(client = %peer.client, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer.client, "TLS handshake timed out");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    tracing::debug!(client = %peer.client, listener = %local, "connected");
    let mut d = Driver {
        shared: shared.clone(),
        peer: peer.clone(),
        session: Session::new(
            shared.config.session_config(!cfg.implicit_tls),
            cfg.implicit_tls,
        ),
        wbuf: Vec::with_capacity(512),
        last_id: None,
        policies: shared.chain.current().filter(|c| !c.is_empty()).map(|c| {
            c.session(SessionInfo {
                client_ip: peer.client.ip(),
                client_port: peer.client.port(),
                listener: local,
                tls: peer
                    .tls
                    .as_ref()
                    .map(|t| (t.version.clone(), t.cipher.clone())),
                relay_client: shared.access.may_relay(peer.client.ip()),
                helo: None,
            })
        }),
        sender_params: Vec::new(),
        data_note: None,
        rec: None,
    };
    // The recorder names the chain this session runs (a session keeps the
    // chain it started with).
    d.rec = shared.recorder.as_ref().and_then(|r| {
        r.session(cfg.record, || {
            let (id, started) = crate::record::new_id_and_time();
            crate::record::SessionStart {
                id,
                started,
                listener: local.to_string(),
                peer: peer.client,
                proxy: peer.proxy,
                tls: peer
                    .tls
                    .as_ref()
                    .map(|t| (t.version.clone(), t.cipher.clone())),
                relay_client: shared.access.may_relay(peer.client.ip()),
                chain: d.policies.as_ref().map(|p| p.chain().clone()),
            }
        })
    });
    if let Some(rec) = &d.rec {
        d.session.log_commands();
        if let Some(p) = &mut d.policies {
            p.set_tap(rec.clone());
        }
    }
    if !early.is_empty() {
        d.session.feed(&early);
    }
    if let Err(e) = d.run(stream, shutdown).await {
        tracing::debug!(client = %d.peer.client, error = %e, "connection ended");
    }
    if let Some(rec) = d.rec.take() {
        rec.finish();
    }
}

struct Driver {
    shared: Arc<Shared>,
    peer: Peer,
    session: Session,
    wbuf: Vec<u8>,
    last_id: Option<String>,
    /// The policy chain for this session (the set it started with).
    policies: Option<ChainSession>,
    /// MAIL FROM parameters of the current transaction, for the policies.
    sender_params: Vec<(String, String)>,
    /// How the data stage ended when it did not simply store.
    data_note: Option<&'static str>,
    /// The session's recorder, when it is recorded.
    rec: Option<Arc<crate::record::SessionTap>>,
}

impl Driver {
    async fn flush(&mut self, stream: &mut Stream) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let t = self.shared.config.limits.command_timeout;
        tokio::time::timeout(t, async {
            stream.write_all(&self.wbuf).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
        self.wbuf.clear();
        Ok(())
    }

    async fn run(
        &mut self,
        mut stream: Stream,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let limits = self.shared.config.limits.clone();
        let deadline = Instant::now() + limits.max_session_duration;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut told_shutdown = false;
        loop {
            let action = self.session.next_action();
            if let Some(rec) = &self.rec {
                rec.commands(self.session.take_commands());
                if let Action::Send(r) = &action {
                    rec.reply(r);
                }
            }
            match action {
                Action::Send(r) => r.write_to(&mut self.wbuf),
                Action::Check(Check::Connect) if *shutdown.borrow() => {
                    // Accepted just as shutdown began: no new session.
                    self.session
                        .answer(Verdict::Reject(std_replies::shutting_down()));
                }
                Action::Check(c) => {
                    let v = match self.shared.access.check(&c, self.peer.client.ip()) {
                        // The built-in rules (no open relay) come first; a
                        // policy can refuse more, never allow more.
                        Verdict::Accept => self.ask_policies(&c).await,
                        refused => refused,
                    };
                    if let Some(rec) = &self.rec {
                        rec.stage(&c, &v);
                    }
                    self.session.answer(v);
                }
                Action::Store(t) => {
                    if let Some(rec) = &self.rec {
                        rec.message(&t.body);
                    }
                    let r = self.store(*t).await;
                    self.session.stored(r);
                }
                Action::Done(o) => {
                    let recipients: Vec<String> =
                        o.recipients.iter().map(|r| r.to_string()).collect();
                    let note = self.data_note.take();
                    tracing::info!(
                        queue_id = self.last_id.take(),
                        policy = note,
                        client = %self.peer.client.ip(),
                        sender = %display_sender(&o.from),
                        recipients = %recipients.join(","),
                        size = o.size,
                        result = %o.reply.summary(),
                        "transaction"
                    );
                }
                Action::StartTls => {
                    self.flush(&mut stream).await?;
                    let Stream::Plain(tcp) = stream else {
                        return Err(std::io::Error::other("STARTTLS on a TLS stream"));
                    };
                    let tls = tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        self.shared.tls.accept(tcp),
                    )
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                    let info = tls_info(&tls, false);
                    if let Some(rec) = &self.rec {
                        rec.tls(&info.version, &info.cipher);
                    }
                    if let Some(p) = &mut self.policies {
                        p.set_tls(Some((info.version.clone(), info.cipher.clone())));
                    }
                    self.peer.tls = Some(info);
                    stream = Stream::Tls(Box::new(tls));
                    self.session.tls_started();
                }
                Action::NeedInput => {
                    self.flush(&mut stream).await?;
                    let now = Instant::now();
                    if now >= deadline {
                        self.session.abort(std_replies::session_too_long());
                        continue;
                    }
                    let wait = match self.session.waiting_for() {
                        Waiting::Command => limits.command_timeout,
                        Waiting::Data => limits.data_timeout,
                    }
                    .min(deadline - now);
                    tokio::select! {
                        r = tokio::time::timeout(wait, stream.read(&mut buf)) => match r {
                            Ok(Ok(0)) => self.session.eof(),
                            Ok(Ok(n)) => self.session.feed(&buf[..n]),
                            Ok(Err(e)) => return Err(e),
                            Err(_) if Instant::now() >= deadline => {
                                self.session.abort(std_replies::session_too_long())
                            }
                            Err(_) => self.session.timeout(),
                        },
                        _ = shutdown.wait_for(|s| *s), if !told_shutdown => {
                            told_shutdown = true;
                            self.session.shutdown();
                        }
                    }
                }
                Action::Close => {
                    self.flush(&mut stream).await?;
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
                    return Ok(());
                }
            }
        }
    }

    /// Ask the policy chain about one stage.
    async fn ask_policies(&mut self, c: &Check) -> Verdict {
        let Some(p) = &mut self.policies else {
            return Verdict::Accept;
        };
        let d = match c {
            Check::Connect => p.connect().await,
            Check::Helo { name } => {
                p.set_helo(name.clone());
                p.helo(name).await
            }
            Check::MailFrom { from, params } => {
                self.sender_params = mail_params(params);
                p.mail_from(&from.to_string(), &self.sender_params).await
            }
            Check::Rcpt {
                from,
                to,
                params,
                accepted,
            } => {
                let env = EnvelopeInfo {
                    sender: from.to_string(),
                    sender_params: self.sender_params.clone(),
                    recipients: accepted.iter().map(|m| m.to_string()).collect(),
                };
                p.rcpt(&env, &to.to_string(), &rcpt_params(params)).await
            }
        };
        match d {
            Decision::Continue | Decision::Accept => Verdict::Accept,
            Decision::Reject(r) | Decision::Tempfail(r) => Verdict::Reject(r),
        }
    }

    async fn store(&mut self, mut t: Transaction) -> Result<String, Reply> {
        let mut quarantine = None;
        if let Some(p) = &mut self.policies {
            let env = EnvelopeInfo {
                sender: t.from.to_string(),
                sender_params: self.sender_params.clone(),
                recipients: t.recipients.iter().map(|r| r.to.to_string()).collect(),
            };
            let d = p.data(&env, &t.body).await;
            if let Some(rec) = &self.rec {
                rec.data(&d);
            }
            match d.outcome {
                DataOutcome::Reject(r) | DataOutcome::Tempfail(r) => {
                    self.data_note = Some("refused");
                    return Err(r);
                }
                DataOutcome::Discard => {
                    // The client is told it was queued; nothing is kept.
                    self.data_note = Some("discarded");
                    return Ok(new_queue_id());
                }
                DataOutcome::Quarantine(reason) => {
                    self.data_note = Some("quarantined");
                    quarantine = Some(reason);
                }
                DataOutcome::Continue | DataOutcome::Accept => {}
            }
            if let Some(body) = changes::apply_headers(&t.body, &d.changes) {
                t.body = body;
            }
            for bad in changes::apply_recipients(&mut t.recipients, &d.changes) {
                tracing::warn!(address = %bad, "a policy added an invalid recipient; ignored");
            }
            if t.recipients.is_empty() {
                self.data_note = Some("no recipients left");
                return Ok(new_queue_id());
            }
        }
        self.spool_message(t, quarantine).await
    }

    async fn spool_message(
        &mut self,
        t: Transaction,
        quarantine: Option<String>,
    ) -> Result<String, Reply> {
        let id = new_queue_id();
        let now = chrono::Utc::now();
        let trace = received_header(&self.shared.config.hostname, &self.peer, &t, &id, now);
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            id: id.clone(),
            received_at: now,
            sender: display_sender(&t.from),
            recipients: t
                .recipients
                .iter()
                .map(|r| Recipient {
                    orcpt: r.params.orcpt.clone(),
                    notify: r.params.notify,
                    ..Recipient::new(r.to.to_string())
                })
                .collect(),
            params: t.params.clone(),
            chunked: t.chunked,
            client: ClientInfo {
                ip: self.peer.client.ip().to_string(),
                port: self.peer.client.port(),
                listener: self.peer.local.to_string(),
                helo: t.helo.clone(),
                esmtp: t.esmtp,
                tls: self.peer.tls.clone(),
                proxy: self.peer.proxy.map(|p| p.to_string()),
            },
            size: 0,
            trace_len: 0,
            held: quarantine.is_some(),
            quarantine,
        };
        let msg = NewMessage {
            envelope,
            trace,
            body: t.body,
        };
        match self.shared.spool.store(msg).await {
            Ok(()) => {
                self.last_id = Some(id.clone());
                self.shared.queue.submit(&id);
                Ok(id)
            }
            Err(e) => {
                tracing::error!(error = %e, client = %self.peer.client, "cannot spool message");
                Err(std_replies::local_error())
            }
        }
    }
}

/// MAIL FROM parameters as `(NAME, value)` pairs for the policies.
pub(crate) fn mail_params(p: &MailParams) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(size) = p.size {
        v.push(("SIZE".into(), size.to_string()));
    }
    match p.body {
        Some(Body::SevenBit) => v.push(("BODY".into(), "7BIT".into())),
        Some(Body::EightBitMime) => v.push(("BODY".into(), "8BITMIME".into())),
        None => {}
    }
    if p.smtputf8 {
        v.push(("SMTPUTF8".into(), String::new()));
    }
    match p.ret {
        Some(Ret::Full) => v.push(("RET".into(), "FULL".into())),
        Some(Ret::Hdrs) => v.push(("RET".into(), "HDRS".into())),
        None => {}
    }
    if let Some(e) = &p.envid {
        v.push(("ENVID".into(), e.clone()));
    }
    v
}

/// RCPT TO parameters as `(NAME, value)` pairs for the policies.
pub(crate) fn rcpt_params(p: &RcptParams) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(n) = p.notify {
        v.push(("NOTIFY".into(), n.to_param()));
    }
    if let Some(o) = &p.orcpt {
        v.push(("ORCPT".into(), o.clone()));
    }
    v
}

fn display_sender(from: &ReversePath) -> String {
    from.to_string()
}

/// Our `Received:` trace header (RFC 5321 §4.4), folded, CRLF-terminated.
fn received_header(
    hostname: &str,
    peer: &Peer,
    t: &Transaction,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let ip = match peer.client.ip() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    // RFC 3848 / RFC 6531 protocol names.
    let mut proto = String::new();
    if t.params.smtputf8 {
        proto.push_str("UTF8");
    }
    proto.push_str(if t.esmtp { "ESMTP" } else { "SMTP" });
    if peer.tls.is_some() {
        proto.push('S');
    }
    if t.params.smtputf8 && !t.esmtp {
        proto = "UTF8SMTP".into();
    }
    let tls = peer
        .tls
        .as_ref()
        .map(|i| format!(" ({} {})", i.version, i.cipher))
        .unwrap_or_default();
    let rcpt = match t.recipients.as_slice() {
        [one] => format!("\r\n\tfor <{}>", one.to),
        _ => String::new(),
    };
    format!(
        "Received: from {} ([{}])\r\n\tby {} (Sluice) with {}{} id {}{};\r\n\t{}\r\n",
        t.helo,
        ip,
        hostname,
        proto,
        tls,
        id,
        rcpt,
        now.to_rfc2822()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{parse_forward_path, parse_reverse_path};
    use crate::smtp::command::MailParams;

    #[test]
    fn received_header_shape() {
        let peer = Peer {
            client: "192.0.2.7:4000".parse().unwrap(),
            proxy: None,
            local: "127.0.0.1:25".parse().unwrap(),
            tls: Some(TlsInfo {
                version: "TLSv1_3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                implicit: false,
            }),
        };
        let t = Transaction {
            helo: "client.example".into(),
            esmtp: true,
            tls: true,
            from: parse_reverse_path("<a@example.com>").unwrap(),
            params: MailParams::default(),
            recipients: vec![crate::smtp::Recipient {
                to: parse_forward_path("<b@example.org>").unwrap(),
                params: Default::default(),
            }],
            body: Vec::new(),
            chunked: false,
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let h = String::from_utf8(received_header("mx.example", &peer, &t, "ID1", now)).unwrap();
        assert_eq!(
            h,
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.example (Sluice) with ESMTPS (TLSv1_3 TLS13_AES_128_GCM_SHA256) id ID1\r\n\tfor <b@example.org>;\r\n\tSun, 29 Nov 2026 10:00:00 +0000\r\n"
        );
    }
}
