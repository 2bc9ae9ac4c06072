//! The per-connection driver: runs one [`Session`] over a socket, doing
//! the I/O, timeouts, TLS upgrades, policy checks and spool writes the
//! session asks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::admission::{Refusal, Slot};
use super::stream::Stream;
use super::{Shared, proxy, refuse};
use crate::budget::Account;
use crate::config::ListenerConfig;
use crate::gate::{DataVerdict, GatePeer, GateSession};
use crate::smtp::reply::std_replies;
use crate::smtp::{Action, Check, Reply, ReversePath, Session, Transaction, Verdict, Waiting};
use crate::spool::{ClientInfo, Envelope, NewMessage, Recipient, TlsInfo, new_queue_id};

/// How long a new session waits for the policy instance slots of an idle
/// session shed to make room for it.
const SHED_WAIT: Duration = Duration::from_secs(2);
/// The read buffer while a session waits for a command: a command line is
/// at most a few hundred octets, so a pipelined batch takes a few reads,
/// and an idle connection holds only this.
const COMMAND_CHUNK: usize = 1024;
/// The read buffer while a message arrives (DATA, BDAT), made when one
/// starts and dropped after it.
const DATA_CHUNK: usize = 16 * 1024;

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
    /// May `client` earn relay rights? Not when it is a proxy's own
    /// address standing in for a client the proxy did not name.
    relay_rights: bool,
}

fn tls_info(s: &tokio_rustls::server::TlsStream<TcpStream>, implicit: bool) -> TlsInfo {
    let (version, cipher) = crate::spool::tls_names(s.get_ref().1);
    TlsInfo {
        version,
        cipher,
        implicit,
    }
}

/// Serve one accepted connection to its end.
pub(super) async fn handle(
    tcp: TcpStream,
    peer_addr: SocketAddr,
    mut slot: Slot,
    cfg: Arc<ListenerConfig>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let local = canonical(tcp.local_addr().unwrap_or(cfg.address));
    let mut tcp = tcp;
    let mut peer = Peer {
        client: canonical(peer_addr),
        proxy: None,
        local,
        tls: None,
        relay_rights: true,
    };
    let Some(early) = read_proxy_header(&mut tcp, &mut peer, &cfg, &shared).await else {
        return;
    };
    let relay = peer.relay_rights && shared.rules.access.may_relay(peer.client.ip());
    if let Err(r) = slot.client(peer.client.ip(), relay) {
        let reply = match r {
            Refusal::PerNetwork => std_replies::too_many_from_network(),
            Refusal::PerAddress | Refusal::Capacity | Refusal::Instances => {
                std_replies::too_many_from_ip()
            }
        };
        refuse(tcp, reply).await;
        return;
    }
    let Some(stream) = open_stream(tcp, &mut peer, &cfg, &shared).await else {
        return;
    };
    tracing::debug!(client = %peer.client, listener = %local, "connected");
    let tls = peer
        .tls
        .as_ref()
        .map(|t| (t.version.clone(), t.cipher.clone()));
    let gate_peer = GatePeer {
        client: peer.client,
        listener: local,
        tls: tls.clone(),
        relay_rights: peer.relay_rights,
    };
    let chain = shared.chain.current();
    let opened = GateSession::open(
        shared.rules.clone(),
        chain.clone(),
        &gate_peer,
        Duration::ZERO,
    )
    .await;
    let opened = match opened {
        // The pool has no room for this session's policy instances: an
        // idle session gives up its own, else this one is refused (never
        // served with its policies failing).
        Err(_) if slot.shed_for_instances() => {
            GateSession::open(shared.rules.clone(), chain, &gate_peer, SHED_WAIT).await
        }
        other => other,
    };
    let mut gate = match opened {
        Ok(g) => g,
        Err(full) => {
            slot.refused(Refusal::Instances, &full.to_string());
            refuse(stream, std_replies::too_many_connections()).await;
            return;
        }
    };
    let mut session = Session::new(
        shared.config.session_config(!cfg.implicit_tls),
        cfg.implicit_tls,
    );
    // The recorder is a tap on the gate; it names the chain this session
    // runs (a session keeps the chain it started with).
    let rec = shared.recorder.as_ref().and_then(|r| {
        r.session(cfg.record, || {
            let (id, started) = crate::record::new_id_and_time();
            crate::record::SessionStart {
                id,
                started,
                listener: local.to_string(),
                peer: peer.client,
                proxy: peer.proxy,
                tls,
                relay_client: gate.relay_client(),
                chain: gate.chain().cloned(),
            }
        })
    });
    if let Some(rec) = rec {
        session.log_commands();
        gate.set_tap(rec);
    }
    if !early.is_empty() {
        session.feed(&early);
    }
    let shed = slot.track();
    let account = shared.budget.account();
    let mut d = Driver {
        account,
        shared: shared.clone(),
        peer,
        session,
        gate,
        slot,
        shed,
        wbuf: Vec::with_capacity(512),
        last_id: None,
        data_note: None,
    };
    if let Err(e) = d.run(stream, shutdown).await {
        tracing::debug!(client = %d.peer.client, error = %e, "connection ended");
    }
    d.gate.end();
}

/// An address as it is compared everywhere (caps, trusted proxies, relay
/// networks, policies, the envelope): an IPv4-mapped IPv6 address (a v4
/// client of a dual-stack `[::]` listener) is the IPv4 address it maps.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// PROXY protocol. On a `proxy_protocol` listener every connection must
/// come from a trusted proxy and start with a valid header; anything else
/// is closed, never served as the proxy itself. A header that names no
/// client (`UNKNOWN`, v2 `LOCAL`, AF_UNIX) leaves the proxy's address as
/// the client, without relay rights. Returns the bytes read past the
/// header, or `None` when the connection is to be closed.
async fn read_proxy_header(
    tcp: &mut TcpStream,
    peer: &mut Peer,
    cfg: &ListenerConfig,
    shared: &Shared,
) -> Option<Vec<u8>> {
    if !cfg.proxy_protocol {
        return Some(Vec::new());
    }
    let from = peer.client;
    if !cfg.trusted_proxies.iter().any(|n| n.contains(&from.ip())) {
        tracing::warn!(peer = %from, "PROXY protocol listener: peer is not a trusted proxy, closing");
        return None;
    }
    match proxy::read_header(tcp, shared.config.limits.proxy_header_timeout).await {
        Ok(h) => {
            peer.proxy = Some(from);
            match h.source {
                Some(src) => peer.client = canonical(src),
                None => peer.relay_rights = false,
            }
            Some(h.rest)
        }
        Err(e) => {
            tracing::warn!(proxy = %from, error = %e, "bad PROXY header, closing");
            None
        }
    }
}

/// The connection's stream: TLS at once on an implicit-TLS listener
/// (under the handshake timeout; `None` when it fails), plain otherwise.
async fn open_stream(
    tcp: TcpStream,
    peer: &mut Peer,
    cfg: &ListenerConfig,
    shared: &Shared,
) -> Option<Stream> {
    if !cfg.implicit_tls {
        return Some(Stream::Plain(tcp));
    }
    let timeout = shared.config.limits.tls_handshake_timeout;
    match tokio::time::timeout(timeout, shared.tls.accept(tcp)).await {
        Ok(Ok(s)) => {
            peer.tls = Some(tls_info(&s, true));
            Some(Stream::Tls(Box::new(s)))
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %peer.client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client = %peer.client, "TLS handshake timed out");
            None
        }
    }
}

struct Driver {
    shared: Arc<Shared>,
    peer: Peer,
    session: Session,
    /// The stage gate: built-in rules, the policy chain, the recorder.
    gate: GateSession,
    /// This connection's slot (idle tracking, stress).
    slot: Slot,
    /// Told when the session is shed to make room for a new client.
    shed: Arc<Notify>,
    /// What this session holds of the gateway's message memory budget.
    account: Account,
    wbuf: Vec<u8>,
    last_id: Option<String>,
    /// How the data stage ended when it did not simply store.
    data_note: Option<&'static str>,
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
        let mut buf = Vec::new();
        let mut told_shutdown = false;
        // Since when the session waits without progress: a timeout runs
        // from there, so a byte now and then does not keep a slot.
        let mut waiting_since: Option<Instant> = None;
        loop {
            let action = self.gate.next_action(&mut self.session);
            if !matches!(action, Action::NeedInput) {
                waiting_since = None;
            }
            match action {
                Action::Send(r) => r.write_to(&mut self.wbuf),
                Action::Check(Check::Connect) if *shutdown.borrow() => {
                    // Accepted just as shutdown began: no new session.
                    self.session
                        .answer(Verdict::Reject(std_replies::shutting_down()));
                }
                Action::Check(c) => {
                    let v = self.gate.check(&c).await;
                    self.session.answer(v);
                }
                Action::Store(t) => {
                    self.gate.received(&t.body);
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
                    self.gate.tls_started(&info.version, &info.cipher);
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
                    let since = *waiting_since.get_or_insert(now);
                    let waiting = self.session.waiting_for();
                    let stressed = self.slot.stressed();
                    let timeout = match (waiting, stressed) {
                        (Waiting::Command, false) => limits.command_timeout,
                        (Waiting::Command, true) => limits.stress_command_timeout,
                        (Waiting::Data, false) => limits.data_timeout,
                        (Waiting::Data, true) => limits.stress_data_timeout,
                    };
                    // Waiting for a command is idle (it may be shed); a
                    // block of data restarts its own timeout.
                    let wait_until = match waiting {
                        Waiting::Command => {
                            self.slot.set_idle(Some(since.into_std()));
                            since + timeout
                        }
                        Waiting::Data => now + timeout,
                    }
                    .min(deadline);
                    let chunk = match waiting {
                        Waiting::Command => COMMAND_CHUNK,
                        Waiting::Data => DATA_CHUNK,
                    };
                    if buf.len() != chunk {
                        buf = vec![0u8; chunk];
                    }
                    let r = tokio::select! {
                        r = tokio::time::timeout_at(wait_until, stream.read(&mut buf)) => Some(r),
                        _ = self.shed.notified() => None,
                        _ = shutdown.wait_for(|s| *s), if !told_shutdown => {
                            told_shutdown = true;
                            self.session.shutdown();
                            continue;
                        }
                    };
                    self.slot.set_idle(None);
                    // New messages wait while the budget is spent.
                    let spent = self.shared.budget.spent();
                    self.session
                        .refuse_data(spent.then(std_replies::insufficient_storage));
                    match r {
                        None => self.session.abort(std_replies::too_many_connections()),
                        Some(Ok(Ok(0))) => self.session.eof(),
                        Some(Ok(Ok(n))) => {
                            self.session.feed(&buf[..n]);
                            self.account.hold(self.session.message_bytes());
                        }
                        Some(Ok(Err(e))) => return Err(e),
                        Some(Err(_)) if Instant::now() >= deadline => {
                            self.session.abort(std_replies::session_too_long())
                        }
                        Some(Err(_)) => self.session.timeout(),
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

    /// The data stage through the gate, then the spool; the message is
    /// held against the budget until it is on disk.
    async fn store(&mut self, t: Transaction) -> Result<String, Reply> {
        self.account.hold(t.body.len());
        let r = self.judge_and_spool(t).await;
        self.account.hold(self.session.message_bytes());
        r
    }

    async fn judge_and_spool(&mut self, mut t: Transaction) -> Result<String, Reply> {
        let quarantine = match self.gate.data(&mut t).await {
            DataVerdict::Refuse(r) => {
                self.data_note = Some("refused");
                return Err(r);
            }
            DataVerdict::Discard => {
                // The client is told it was queued; nothing is kept.
                self.data_note = Some("discarded");
                return Ok(new_queue_id());
            }
            DataVerdict::NoRecipients => {
                self.data_note = Some("no recipients left");
                return Ok(new_queue_id());
            }
            DataVerdict::Store { quarantine } => {
                if quarantine.is_some() {
                    self.data_note = Some("quarantined");
                }
                quarantine
            }
        };
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
        let recipients = t
            .recipients
            .iter()
            .map(|r| Recipient {
                orcpt: r.params.orcpt.clone(),
                notify: r.params.notify,
                ..Recipient::new(r.to.to_string())
            })
            .collect();
        let client = ClientInfo {
            ip: self.peer.client.ip().to_string(),
            port: self.peer.client.port(),
            listener: self.peer.local.to_string(),
            helo: t.helo.clone(),
            esmtp: t.esmtp,
            tls: self.peer.tls.clone(),
            proxy: self.peer.proxy.map(|p| p.to_string()),
        };
        let envelope = Envelope::new(
            id.clone(),
            now,
            display_sender(&t.from),
            recipients,
            t.params.clone(),
            t.chunked,
            client,
        )
        .quarantined(quarantine);
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
            Err(e) if e.is_disk_full() => {
                tracing::error!(error = %e, client = %self.peer.client, "spool disk full: message refused");
                Err(std_replies::insufficient_storage())
            }
            Err(e) => {
                tracing::error!(error = %e, client = %self.peer.client, "cannot spool message");
                Err(std_replies::local_error())
            }
        }
    }
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
            relay_rights: true,
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
