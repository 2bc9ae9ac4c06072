//! Delivering one group of recipients — those of one message that share a
//! route — in one go: a Maildir write per recipient, one LMTP
//! transaction, or one SMTP transaction with the first MX (or relay)
//! address that answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Inner;
use crate::delivery::Outcome;
use crate::delivery::client::{ClientError, Connection, OutRcpt, OutboundMessage, RcptResult};
use crate::dns::{self, MxError, Target};
use crate::route::{LiteralRefusal, Route, TlsMode};
use crate::smtp::command::Body;
use crate::smtp::{Enhanced, Reply};
use crate::spool::Envelope;

/// The outcome a reply means for one recipient.
fn from_reply(reply: &Reply, remote: &str) -> Outcome {
    let diagnostic = format!("smtp; {}", reply.summary());
    let remote = Some(remote.to_string());
    let status = reply.enhanced.unwrap_or(match reply.code {
        200..=299 => Enhanced(2, 0, 0),
        400..=499 => Enhanced(4, 0, 0),
        _ => Enhanced(5, 0, 0),
    });
    match reply.code {
        200..=299 => Outcome::Delivered {
            remote,
            reply: reply.summary(),
        },
        400..=499 => Outcome::Deferred {
            status,
            diagnostic,
            remote,
        },
        _ => Outcome::Failed {
            status,
            diagnostic,
            remote,
        },
    }
}

/// The outcome a whole-transaction error means for every recipient.
fn from_error(e: &ClientError, remote: Option<&str>) -> Outcome {
    let remote = remote.map(str::to_string);
    if e.is_permanent() {
        Outcome::Failed {
            status: e.status(),
            diagnostic: e.diagnostic(),
            remote,
        }
    } else {
        Outcome::Deferred {
            status: e.status(),
            diagnostic: e.diagnostic(),
            remote,
        }
    }
}

/// Errors after which the next address or MX host is worth trying: the
/// connection could not be set up or the server would not talk to us.
fn try_next_host(e: &ClientError) -> bool {
    match e {
        ClientError::Connect(_)
        | ClientError::Timeout(_)
        | ClientError::Tls(_)
        | ClientError::TlsRequired(_)
        | ClientError::Io(_)
        | ClientError::Protocol(_) => true,
        ClientError::Reply { stage, reply } => {
            reply.is_transient() || matches!(*stage, "greeting" | "ehlo" | "helo")
        }
        _ => false,
    }
}

impl Inner {
    pub(super) async fn deliver_group(
        self: &Arc<Self>,
        route: &Route,
        env: &Envelope,
        idx: &[usize],
        msg: Arc<Vec<u8>>,
    ) -> Vec<Outcome> {
        let key = match route {
            Route::Local => "local".to_string(),
            Route::Relay { host, port, .. } => format!("relay:{host}:{port}"),
            Route::Mx { domain } => format!("mx:{domain}"),
            Route::Reject { .. } => String::new(),
        };
        let dest = self.destination(&key);
        let (Ok(_d), Ok(_g)) = (
            dest.acquire_owned().await,
            self.global.clone().acquire_owned().await,
        ) else {
            return idx
                .iter()
                .map(|_| Outcome::defer(Enhanced(4, 3, 0), "shutting down"))
                .collect();
        };
        match route {
            Route::Local => self.deliver_local(env, idx, msg).await,
            Route::Relay { host, port, tls } => {
                let targets = match host.parse::<IpAddr>() {
                    Ok(ip) => Ok(vec![Target {
                        host: host.clone(),
                        addrs: vec![ip],
                    }]),
                    Err(_) => match self.resolver.ips(host).await {
                        Ok(addrs) => Ok(vec![Target {
                            host: host.clone(),
                            addrs,
                        }]),
                        Err(dns::DnsError::Temporary(e)) => Err(Outcome::defer(
                            Enhanced(4, 4, 3),
                            format!("relay host {host}: DNS: {e}"),
                        )),
                        Err(_) => Err(Outcome::defer(
                            Enhanced(4, 4, 3),
                            format!("relay host {host} not found in DNS"),
                        )),
                    },
                };
                match targets {
                    Ok(t) => {
                        let creds = self
                            .credentials
                            .clone()
                            .filter(|_| self.router.is_relay_host(host, *port));
                        self.deliver_smtp(env, idx, msg, &t, *port, *tls, false, creds.as_ref())
                            .await
                    }
                    Err(o) => vec![o; idx.len()],
                }
            }
            Route::Mx { domain } => {
                let port = self.cfg.delivery.mx_port;
                let allow_self = self.cfg.delivery.allow_mx_to_self;
                let selfs = self.self_addrs.clone();
                let is_self = move |ip: IpAddr| !allow_self && is_our_address(&selfs, ip, port);
                // An address literal names the server itself: only where
                // the literal rule allows (the gate refused the others at
                // RCPT; this holds for mail queued before a config change
                // and for routes a policy returns), then the loop check.
                let literal = domain
                    .starts_with('[')
                    .then(|| self.router.literals.check_literal(domain));
                let targets = match literal {
                    Some(Err(refusal)) => Err(MxError::Bounce {
                        status: match refusal {
                            LiteralRefusal::Unusable(_) => Enhanced(5, 1, 2),
                            _ => Enhanced(5, 7, 1),
                        },
                        text: format!("{domain}: {refusal}"),
                    }),
                    Some(Ok(_)) | None => {
                        dns::mx_targets(self.resolver.as_ref(), domain, &is_self).await
                    }
                };
                match targets {
                    Ok(t) => {
                        let tls = self
                            .cfg
                            .delivery
                            .tls_policy
                            .get(domain.as_str())
                            .copied()
                            .unwrap_or(self.cfg.delivery.tls);
                        self.deliver_smtp(
                            env,
                            idx,
                            msg,
                            &t,
                            self.cfg.delivery.mx_port,
                            tls,
                            false,
                            None,
                        )
                        .await
                    }
                    Err(MxError::Bounce { status, text }) => {
                        vec![Outcome::fail(status, format!("dns; {domain}: {text}")); idx.len()]
                    }
                    Err(MxError::Defer { status, text }) => {
                        vec![Outcome::defer(status, format!("dns; {domain}: {text}")); idx.len()]
                    }
                }
            }
            Route::Reject { status, text } => vec![Outcome::fail(*status, text.clone()); idx.len()],
        }
    }

    async fn deliver_local(
        self: &Arc<Self>,
        env: &Envelope,
        idx: &[usize],
        msg: Arc<Vec<u8>>,
    ) -> Vec<Outcome> {
        if let Some(lmtp) = &self.cfg.delivery.lmtp {
            let Some((host, port)) = crate::route::parse_host_port(lmtp) else {
                return vec![
                    Outcome::defer(Enhanced(4, 3, 5), "bad lmtp address in config");
                    idx.len()
                ];
            };
            let targets = match host.parse::<IpAddr>() {
                Ok(ip) => vec![Target {
                    host,
                    addrs: vec![ip],
                }],
                Err(_) => match self.resolver.ips(&host).await {
                    Ok(addrs) => vec![Target { host, addrs }],
                    Err(e) => {
                        return vec![
                            Outcome::defer(Enhanced(4, 4, 3), format!("LMTP host: {e}"));
                            idx.len()
                        ];
                    }
                },
            };
            return self
                .deliver_smtp(env, idx, msg, &targets, port, TlsMode::None, true, None)
                .await;
        }
        let default_domain = self
            .cfg
            .local_domains
            .first()
            .cloned()
            .unwrap_or_else(|| self.cfg.hostname.clone());
        let mut out = Vec::with_capacity(idx.len());
        for &i in idx {
            let addr = env.recipients[i].address.clone();
            let head = format!(
                "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
                env.sender, addr
            );
            let inner = self.clone();
            let msg = msg.clone();
            let dd = default_domain.clone();
            let r = tokio::task::spawn_blocking(move || {
                inner.maildirs.deliver(&addr, &dd, &[head.as_bytes(), &msg])
            })
            .await;
            out.push(match r {
                Ok(Ok(path)) => Outcome::Delivered {
                    remote: None,
                    reply: format!(
                        "delivered to maildir {}",
                        path.file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ),
                },
                Ok(Err(e)) if e.is_permanent() => {
                    Outcome::fail(Enhanced(5, 1, 1), format!("x-local; {e}"))
                }
                Ok(Err(e)) => Outcome::defer(Enhanced(4, 3, 0), format!("x-local; {e}")),
                Err(_) => Outcome::defer(Enhanced(4, 3, 0), "x-local; delivery task failed"),
            });
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver_smtp(
        self: &Arc<Self>,
        env: &Envelope,
        idx: &[usize],
        msg: Arc<Vec<u8>>,
        targets: &[Target],
        port: u16,
        tls: TlsMode,
        lmtp: bool,
        creds: Option<&crate::delivery::client::Credentials>,
    ) -> Vec<Outcome> {
        let out_msg = OutboundMessage {
            sender: env.sender.clone(),
            recipients: idx
                .iter()
                .map(|&i| {
                    let r = &env.recipients[i];
                    OutRcpt {
                        address: r.address.clone(),
                        notify: r.notify,
                        orcpt: r.orcpt.clone(),
                    }
                })
                .collect(),
            ret: env.params.ret,
            envid: env.params.envid.clone(),
            smtputf8: env.params.smtputf8,
            eight_bit: env.params.body == Some(Body::EightBitMime) || !msg.is_ascii(),
            body: msg,
        };
        let mut last: Option<(ClientError, String)> = None;
        for t in targets {
            for ip in &t.addrs {
                let addr = SocketAddr::new(*ip, port);
                let key = format!("{addr}|{}|{tls:?}|{lmtp}", t.host);
                let conn = match self.pool.take(&key) {
                    Some(c) => Ok(c),
                    None => {
                        Connection::connect(addr, &t.host, tls, lmtp, creds, &self.client).await
                    }
                };
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(host = %t.host, %addr, error = %e, "cannot connect");
                        if try_next_host(&e) {
                            last = Some((e, t.host.clone()));
                            continue;
                        }
                        return vec![from_error(&e, Some(&t.host)); idx.len()];
                    }
                };
                match conn.send(&out_msg).await {
                    Ok(results) => {
                        self.pool.put(key, conn);
                        return results
                            .iter()
                            .map(|r| match r {
                                RcptResult::Accepted(reply) | RcptResult::Rejected(reply) => {
                                    from_reply(reply, &t.host)
                                }
                            })
                            .collect();
                    }
                    Err(e) => {
                        tracing::debug!(host = %t.host, %addr, error = %e, "transaction failed");
                        tokio::spawn(conn.quit());
                        if try_next_host(&e) && !e.is_permanent() {
                            last = Some((e, t.host.clone()));
                            continue;
                        }
                        return vec![from_error(&e, Some(&t.host)); idx.len()];
                    }
                }
            }
        }
        match last {
            Some((e, host)) => vec![
                Outcome::Deferred {
                    status: Enhanced(4, 4, 1),
                    diagnostic: e.diagnostic(),
                    remote: Some(host),
                };
                idx.len()
            ],
            None => vec![Outcome::defer(Enhanced(4, 4, 1), "no address to connect to"); idx.len()],
        }
    }
}

/// Is `ip:port` one of our own listeners? `0.0.0.0`/`::` listeners match
/// every address of this host (one we can bind to).
fn is_our_address(listeners: &[SocketAddr], ip: IpAddr, port: u16) -> bool {
    listeners.iter().any(|l| {
        l.port() == port
            && (l.ip() == ip
                || (l.ip().is_unspecified()
                    && (ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_detection() {
        let l: Vec<SocketAddr> = vec![
            "127.0.0.1:2525".parse().unwrap(),
            "0.0.0.0:25".parse().unwrap(),
        ];
        assert!(is_our_address(&l, "127.0.0.1".parse().unwrap(), 2525));
        assert!(!is_our_address(&l, "127.0.0.1".parse().unwrap(), 2526));
        assert!(is_our_address(&l, "127.0.0.2".parse().unwrap(), 25));
        assert!(!is_our_address(&l, "192.0.2.1".parse().unwrap(), 25));
    }

    #[test]
    fn reply_classification() {
        let r = Reply::new(550, Enhanced(5, 1, 1), "no such user");
        assert!(matches!(
            from_reply(&r, "mx"),
            Outcome::Failed {
                status: Enhanced(5, 1, 1),
                ..
            }
        ));
        let r = Reply::plain(451, "later");
        assert!(matches!(
            from_reply(&r, "mx"),
            Outcome::Deferred {
                status: Enhanced(4, 0, 0),
                ..
            }
        ));
        let r = Reply::new(250, Enhanced(2, 0, 0), "ok");
        assert!(matches!(from_reply(&r, "mx"), Outcome::Delivered { .. }));
    }
}
