//! Unit tests of `client`.

use super::*;

#[test]
fn status_and_diagnostic() {
    let e = ClientError::Reply {
        stage: "rcpt",
        reply: Reply::new(550, Enhanced(5, 7, 1), "relay denied"),
    };
    assert!(e.is_permanent());
    assert_eq!(e.status(), Enhanced(5, 7, 1));
    assert_eq!(e.diagnostic(), "smtp; 550 5.7.1 relay denied");
    let e = ClientError::Reply {
        stage: "mail",
        reply: Reply::plain(452, "full"),
    };
    assert!(!e.is_permanent());
    assert_eq!(e.status(), Enhanced(4, 0, 0));
    let e = ClientError::Reply {
        stage: "greeting",
        reply: Reply::plain(250, "odd"),
    };
    assert_eq!(e.status(), Enhanced(4, 5, 0));
    assert!(!ClientError::Timeout("rcpt").is_permanent());
    assert_eq!(ClientError::Timeout("rcpt").status(), Enhanced(4, 4, 2));
    assert!(ClientError::NeedsSmtputf8.is_permanent());
    assert_eq!(ClientError::NeedsSmtputf8.status(), Enhanced(5, 6, 7));
    assert_eq!(ClientError::TooBig { limit: 1 }.status(), Enhanced(5, 3, 4));
    assert!(
        ClientError::Timeout("data-end")
            .diagnostic()
            .starts_with("X-Sluice; ")
    );
    let multi = Reply {
        code: 550,
        enhanced: Some(Enhanced(5, 1, 1)),
        lines: vec!["no".into(), "such user".into()],
    };
    assert_eq!(reply_diagnostic(&multi), "smtp; 550 5.1.1 no such user");
}

#[test]
fn helo_argument_falls_back_to_literal() {
    let v4: SocketAddr = "192.0.2.1:25".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:25".parse().unwrap();
    assert_eq!(helo_argument("mx.example", Some(v4)), "mx.example");
    assert_eq!(helo_argument("", Some(v4)), "[192.0.2.1]");
    assert_eq!(helo_argument("bad name", Some(v6)), "[IPv6:2001:db8::1]");
}

// -- against a scripted fake server -------------------------------------

mod fake {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    /// One step of a fake server's script.
    #[derive(Debug, Clone)]
    pub(super) enum Step {
        /// Write these bytes in one write.
        Say(&'static str),
        /// Read one line; it must start with this.
        Hear(&'static str),
        /// Read one line that must start with this and that arrived
        /// alone (no other command already sent behind it).
        HearAlone(&'static str),
        /// Read message data up to the lone dot; recorded as
        /// `DATA:<bytes>`.
        HearData,
        /// TLS handshake as the server; the script ends quietly if
        /// it fails.
        Tls,
        /// Do nothing for this long.
        Sleep(Duration),
    }

    enum Io {
        Plain(TcpStream),
        Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
        Gone,
    }

    struct Conn {
        io: Io,
        buf: Vec<u8>,
        seen: Vec<String>,
    }

    const LIMIT: Duration = Duration::from_secs(10);

    impl Conn {
        async fn fill(&mut self) {
            let mut tmp = [0u8; 4096];
            let read = async {
                match &mut self.io {
                    Io::Plain(s) => s.read(&mut tmp).await,
                    Io::Tls(s) => s.read(&mut tmp).await,
                    Io::Gone => unreachable!(),
                }
            };
            let n = tokio::time::timeout(LIMIT, read)
                .await
                .expect("fake server: client silent")
                .expect("fake server: read");
            assert!(n > 0, "fake server: client closed; saw {:?}", self.seen);
            self.buf.extend_from_slice(&tmp[..n]);
        }

        async fn line(&mut self) -> String {
            loop {
                if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    let s = String::from_utf8_lossy(&line).into_owned();
                    assert!(s.ends_with("\r\n"), "bare LF from client: {s:?}");
                    return s.trim_end_matches("\r\n").to_string();
                }
                self.fill().await;
            }
        }

        async fn say(&mut self, s: &str) {
            let r = match &mut self.io {
                Io::Plain(t) => t.write_all(s.as_bytes()).await,
                Io::Tls(t) => match t.write_all(s.as_bytes()).await {
                    Ok(()) => t.flush().await,
                    Err(e) => Err(e),
                },
                Io::Gone => unreachable!(),
            };
            r.expect("fake server: write");
        }
    }

    /// A server on 127.0.0.1:0 that serves one connection by `script`
    /// and returns what it heard.
    pub(super) async fn serve(
        script: Vec<Step>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (tcp, _) = tokio::time::timeout(LIMIT, listener.accept())
                .await
                .expect("fake server: no client")
                .unwrap();
            let mut c = Conn {
                io: Io::Plain(tcp),
                buf: Vec::new(),
                seen: Vec::new(),
            };
            for step in script {
                match step {
                    Step::Say(s) => c.say(s).await,
                    Step::Hear(want) | Step::HearAlone(want) => {
                        let alone = matches!(step, Step::HearAlone(_));
                        let line = c.line().await;
                        assert!(
                            line.starts_with(want),
                            "fake server: wanted {want:?}, heard {line:?}; saw {:?}",
                            c.seen
                        );
                        if alone {
                            // Give a pipelining client time to have sent more.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let more = match &mut c.io {
                                Io::Plain(s) => {
                                    let mut b = [0u8; 1];
                                    s.try_read(&mut b).unwrap_or(0)
                                }
                                _ => 0,
                            };
                            assert!(
                                c.buf.is_empty() && more == 0,
                                "fake server: {line:?} was pipelined"
                            );
                        }
                        c.seen.push(line);
                    }
                    Step::HearData => {
                        let mut data = String::new();
                        loop {
                            let line = c.line().await;
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push_str("\r\n");
                        }
                        c.seen.push(format!("DATA:{data}"));
                    }
                    Step::Tls => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(
                            tls.clone().expect("fake server: no TLS config"),
                        );
                        assert!(c.buf.is_empty(), "client pipelined past STARTTLS");
                        let Io::Plain(tcp) = std::mem::replace(&mut c.io, Io::Gone) else {
                            panic!("fake server: TLS twice");
                        };
                        match tokio::time::timeout(LIMIT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => c.io = Io::Tls(Box::new(s)),
                            _ => {
                                c.seen.push("TLS-FAILED".into());
                                return c.seen;
                            }
                        }
                    }
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                }
            }
            c.seen
        });
        (addr, handle)
    }
}

use fake::Step::{self, Hear, HearAlone, HearData, Say, Sleep};

const GREET: Step = Say("220 fake.test ESMTP\r\n");
const EHLO_PIPE: &str = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n\
    250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";
const EHLO_PLAIN: &str = "250-fake.test\r\n250 8BITMIME\r\n";

fn cfg(t: Duration) -> ClientConfig {
    let mut c = ClientConfig::new("client.test", Arc::new(load_roots(None).unwrap()));
    c.connect_timeout = Duration::from_secs(5);
    c.timeouts = Timeouts::uniform(t);
    c
}

fn cfg5() -> ClientConfig {
    cfg(Duration::from_secs(5))
}

fn msg(rcpts: &[&str]) -> OutboundMessage {
    OutboundMessage {
        sender: "a@src.test".into(),
        recipients: rcpts.iter().map(|r| OutRcpt::new(*r)).collect(),
        ret: None,
        envid: None,
        smtputf8: false,
        eight_bit: false,
        body: Arc::new(b"Subject: t\r\n\r\nhello\r\n".to_vec()),
    }
}

async fn connect(addr: SocketAddr, tls: TlsMode, lmtp: bool, cfg: &ClientConfig) -> Connection {
    Connection::connect(addr, "fake.test", tls, lmtp, None, cfg)
        .await
        .expect("connect")
}

async fn done(h: tokio::task::JoinHandle<Vec<String>>) -> Vec<String> {
    timeout(Duration::from_secs(15), h)
        .await
        .expect("fake server hangs")
        .expect("fake server failed")
}

fn codes(r: &[RcptResult]) -> Vec<(bool, u16)> {
    r.iter()
        .map(|r| (r.is_accepted(), r.reply().code))
        .collect()
}

#[tokio::test]
async fn happy_path_pipelined() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO client.test"),
            Say(EHLO_PIPE),
            // Nothing is answered until all of MAIL, RCPT, RCPT, DATA
            // came: a lockstep client would time out here.
            Hear("MAIL FROM:<a@src.test> SIZE=21"),
            Hear("RCPT TO:<b@dst.test>"),
            Hear("RCPT TO:<c@dst.test>"),
            Hear("DATA"),
            Say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            HearData,
            Say("250 2.0.0 queued as X\r\n"),
            Hear("QUIT"),
            Say("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
    assert!(c.extensions().pipelining);
    assert!(!c.tls_active());
    let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
    assert_eq!(codes(&r), [(true, 250), (true, 250)]);
    assert_eq!(r[0].reply().lines, ["queued as X"]);
    assert_eq!(r[0].status(), Enhanced(2, 0, 0));
    assert!(c.is_usable());
    c.quit().await;
    let seen = done(h).await;
    assert_eq!(seen[5], "DATA:Subject: t\r\n\r\nhello\r\n");
}

#[tokio::test]
async fn lockstep_without_pipelining_and_body_encoding() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PLAIN),
            HearAlone("MAIL FROM:<a@src.test>"),
            Say("250 ok\r\n"),
            HearAlone("RCPT TO:<b@dst.test>"),
            Say("250 ok\r\n"),
            HearAlone("DATA"),
            Say("354 go\r\n"),
            HearData,
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
    let mut m = msg(&["b@dst.test"]);
    m.eight_bit = true;
    m.body = Arc::new(b"S: x\n\n.line\r\nbare\rcr\r\n.\r\nend".to_vec());
    let r = c.send(&m).await.unwrap();
    assert_eq!(codes(&r), [(true, 250)]);
    let seen = done(h).await;
    // No SIZE offered: none sent; 8BITMIME offered: BODY sent.
    assert_eq!(seen[1], "MAIL FROM:<a@src.test> BODY=8BITMIME");
    assert_eq!(
        seen[4],
        "DATA:S: x\r\n\r\n..line\r\nbare\r\ncr\r\n..\r\nend\r\n"
    );
}

#[tokio::test]
async fn ehlo_rejected_falls_back_to_helo() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO client.test"),
            Say("502 5.5.1 what\r\n"),
            Hear("HELO client.test"),
            Say("250 fake.test\r\n"),
            HearAlone("MAIL FROM:<>"),
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(
        addr,
        TlsMode::Opportunistic,
        false,
        &cfg(Duration::from_millis(500)),
    )
    .await;
    assert_eq!(*c.extensions(), Extensions::default());
    let mut m = msg(&["b@dst.test"]);
    m.sender = String::new();
    m.eight_bit = true;
    // The script ends after MAIL: the client's RCPT goes nowhere.
    let e = c.send(&m).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout("rcpt") | ClientError::Io(_)),
        "{e:?}"
    );
    let seen = done(h).await;
    assert_eq!(seen[2], "MAIL FROM:<>");
}

#[tokio::test]
async fn greeting_refused() {
    let (addr, h) = fake::serve(vec![Say("554 5.7.1 go away\r\n")], None).await;
    let e = Connection::connect(addr, "fake.test", TlsMode::None, false, None, &cfg5())
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Reply { stage: "greeting", reply } if reply.code == 554));
    assert!(e.is_permanent());
    done(h).await;
}

#[tokio::test]
async fn one_rcpt_rejected() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT TO:<b@"),
            Hear("RCPT TO:<c@"),
            Hear("RCPT TO:<d@"),
            Hear("DATA"),
            Say("250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n452 4.2.2 full\r\n354 go\r\n"),
            HearData,
            Say("250 2.0.0 done\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let r = c
        .send(&msg(&["b@dst.test", "c@dst.test", "d@dst.test"]))
        .await
        .unwrap();
    assert_eq!(codes(&r), [(false, 550), (true, 250), (false, 452)]);
    assert_eq!(r[0].status(), Enhanced(5, 1, 1));
    assert_eq!(r[0].diagnostic(), "smtp; 550 5.1.1 no such user");
    assert_eq!(r[1].reply().lines, ["done"]);
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn all_rcpts_rejected_pipelined_data_354() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n354 go anyway\r\n"),
            // The lone dot, not the message.
            Hear("."),
            Say("554 5.5.1 no valid recipients\r\n"),
            Hear("RSET"),
            Say("250 ok\r\n"),
            // The connection is still good for another message.
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
    assert_eq!(codes(&r), [(false, 550), (false, 550)]);
    assert!(c.is_usable());
    let r = c.send(&msg(&["e@dst.test"])).await.unwrap();
    assert_eq!(codes(&r), [(true, 250)]);
    let seen = done(h).await;
    assert_eq!(seen[5], ".");
}

#[tokio::test]
async fn all_rcpts_rejected_pipelined_data_503() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n450 4.2.1 later\r\n503 5.5.1 no recipients\r\n"),
            Hear("RSET"),
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
    assert_eq!(codes(&r), [(false, 450)]);
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn mail_rejected_pipelined_then_reset() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("550 5.7.1 sender denied\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"),
            Hear("RSET"),
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
    assert!(matches!(&e, ClientError::Reply { stage: "mail", reply } if reply.code == 550));
    assert!(e.is_permanent());
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn data_rejected() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PLAIN),
            Hear("MAIL"),
            Say("250 ok\r\n"),
            Hear("RCPT"),
            Say("250 ok\r\n"),
            Hear("DATA"),
            Say("451 4.3.0 not now\r\n"),
            Hear("RSET"),
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
    assert!(matches!(&e, ClientError::Reply { stage: "data", reply } if reply.code == 451));
    assert!(!e.is_permanent());
    assert_eq!(e.status(), Enhanced(4, 3, 0));
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn final_reply_rejects_accepted_recipients() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n"),
            HearData,
            Say("554 5.7.1 spam\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
    assert_eq!(codes(&r), [(false, 554), (false, 550)]);
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn reply_421_mid_session() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n421 4.3.2 shutting down\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let e = c
        .send(&msg(&["b@dst.test", "c@dst.test"]))
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Reply { stage: "rcpt", reply } if reply.code == 421));
    assert!(!e.is_permanent());
    assert!(!c.is_usable());
    assert!(matches!(
        c.send(&msg(&["b@dst.test"])).await,
        Err(ClientError::Unusable)
    ));
    // No QUIT or RSET on a closing connection: the script has no step for it.
    c.quit().await;
    done(h).await;
}

#[tokio::test]
async fn size_too_big_and_smtputf8_missing() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say("250-fake.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"),
            // Neither message produces a command.
            Hear("QUIT"),
            Say("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
    assert!(matches!(e, ClientError::TooBig { limit: 10 }));
    assert!(e.is_permanent());
    let mut m = msg(&["b@dst.test"]);
    m.body = Arc::new(b"x".to_vec());
    m.smtputf8 = true;
    assert!(matches!(c.send(&m).await, Err(ClientError::NeedsSmtputf8)));
    // A non-ASCII address needs it too.
    let mut m = msg(&["bö@dst.test"]);
    m.body = Arc::new(b"x".to_vec());
    assert!(matches!(c.send(&m).await, Err(ClientError::NeedsSmtputf8)));
    assert!(c.is_usable());
    c.quit().await;
    done(h).await;
}

#[tokio::test]
async fn smtputf8_and_dsn_params_passed() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say("250-fake.test\r\n250-PIPELINING\r\n250-DSN\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let mut m = msg(&[]);
    m.sender = "ä@src.test".into();
    m.ret = Some(Ret::Hdrs);
    m.envid = Some("id 1+x".into());
    m.recipients = vec![
        OutRcpt {
            address: "b@dst.test".into(),
            notify: Some(Notify {
                success: true,
                failure: true,
                delay: false,
            }),
            orcpt: Some("rfc822;B@dst.test".into()),
        },
        OutRcpt {
            address: "c@dst.test".into(),
            notify: Some(Notify {
                success: false,
                failure: false,
                delay: false,
            }),
            orcpt: Some("c=x@dst.test".into()),
        },
    ];
    c.send(&m).await.unwrap();
    let seen = done(h).await;
    assert_eq!(
        seen[1],
        "MAIL FROM:<ä@src.test> SMTPUTF8 RET=HDRS ENVID=id+201+2Bx"
    );
    assert_eq!(
        seen[2],
        "RCPT TO:<b@dst.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@dst.test"
    );
    assert_eq!(
        seen[3],
        "RCPT TO:<c@dst.test> NOTIFY=NEVER ORCPT=rfc822;c+3Dx@dst.test"
    );
}

#[tokio::test]
async fn dsn_params_withheld_without_dsn() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PLAIN),
            Hear("MAIL"),
            Say("250 ok\r\n"),
            Hear("RCPT"),
            Say("550 no\r\n"),
            Hear("RSET"),
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let mut m = msg(&["b@dst.test"]);
    m.ret = Some(Ret::Full);
    m.envid = Some("x".into());
    m.recipients[0].orcpt = Some("rfc822;b@dst.test".into());
    let r = c.send(&m).await.unwrap();
    assert_eq!(codes(&r), [(false, 550)]);
    let seen = done(h).await;
    assert_eq!(seen[1], "MAIL FROM:<a@src.test>");
    assert_eq!(seen[2], "RCPT TO:<b@dst.test>");
}

#[tokio::test]
async fn invalid_envelope_refused_locally() {
    let (addr, h) = fake::serve(vec![GREET, Hear("EHLO"), Say(EHLO_PIPE)], None).await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    for bad in ["a@b>\r\nRSET", "a b@c", ""] {
        let e = c.send(&msg(&[bad])).await.unwrap_err();
        assert!(matches!(e, ClientError::InvalidEnvelope(_)), "{bad:?}");
    }
    assert!(c.send(&msg(&[])).await.unwrap().is_empty());
    done(h).await;
}

#[tokio::test]
async fn lmtp_per_recipient_replies() {
    let (addr, h) = fake::serve(
        vec![
            Say("220 lmtp.test LMTP\r\n"),
            Hear("LHLO client.test"),
            Say("250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"),
            Hear("MAIL"),
            Hear("RCPT TO:<b@"),
            Hear("RCPT TO:<c@"),
            Hear("RCPT TO:<d@"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 2.0.0 b delivered\r\n452 4.2.2 d over quota\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, true, &cfg5()).await;
    assert!(c.is_lmtp());
    let r = c
        .send(&msg(&["b@dst.test", "c@dst.test", "d@dst.test"]))
        .await
        .unwrap();
    assert_eq!(codes(&r), [(true, 250), (false, 550), (false, 452)]);
    assert_eq!(r[0].reply().lines, ["b delivered"]);
    assert_eq!(r[2].reply().lines, ["d over quota"]);
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn lmtp_connection_lost_after_first_reply() {
    let (addr, h) = fake::serve(
        vec![
            Say("220 lmtp.test LMTP\r\n"),
            Hear("LHLO"),
            Say("250-lmtp.test\r\n250 PIPELINING\r\n"),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 2.0.0 b delivered\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, true, &cfg(Duration::from_millis(500))).await;
    let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
    // b is delivered and must not be sent again; c is deferred.
    assert_eq!(codes(&r), [(true, 250), (false, 451)]);
    assert!(!c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn connection_reuse() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PLAIN),
            Hear("MAIL FROM:<a@src.test>"),
            Say("250 ok\r\n"),
            Hear("RCPT TO:<b@"),
            Say("250 ok\r\n"),
            Hear("DATA"),
            Say("354 go\r\n"),
            HearData,
            Say("250 first\r\n"),
            // No RSET between successful transactions.
            Hear("MAIL FROM:<z@src.test>"),
            Say("250 ok\r\n"),
            Hear("RCPT TO:<c@"),
            Say("250 ok\r\n"),
            Hear("DATA"),
            Say("354 go\r\n"),
            HearData,
            Say("250 second\r\n"),
            Hear("QUIT"),
            Say("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
    assert_eq!(r[0].reply().lines, ["first"]);
    let mut m = msg(&["c@dst.test"]);
    m.sender = "z@src.test".into();
    m.body = Arc::new(b"second message\r\n".to_vec());
    let r = c.send(&m).await.unwrap();
    assert_eq!(r[0].reply().lines, ["second"]);
    c.quit().await;
    let seen = done(h).await;
    assert_eq!(seen[8], "DATA:second message\r\n");
}

#[tokio::test]
async fn timeouts_are_bounded() {
    // A server that never greets.
    let (addr, h) = fake::serve(vec![Sleep(Duration::from_secs(5))], None).await;
    let start = std::time::Instant::now();
    let e = Connection::connect(
        addr,
        "fake.test",
        TlsMode::None,
        false,
        None,
        &cfg(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::Timeout("greeting")), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!e.is_permanent());
    h.abort();

    // A server that goes silent after the message.
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_PIPE),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Sleep(Duration::from_secs(5)),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg(Duration::from_millis(300))).await;
    let start = std::time::Instant::now();
    let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout("data-end")), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!c.is_usable());
    c.quit().await;
    h.abort();
}

#[tokio::test]
async fn malformed_reply_is_protocol_error() {
    let (addr, h) = fake::serve(vec![Say("hello there\r\n")], None).await;
    let e = Connection::connect(addr, "fake.test", TlsMode::None, false, None, &cfg5())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    done(h).await;
}

#[tokio::test]
async fn connect_refused() {
    // Bind and drop to find a port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = Connection::connect(addr, "x", TlsMode::None, false, None, &cfg5())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect(_)), "{e:?}");
    assert_eq!(e.status(), Enhanced(4, 4, 1));
}

// -- TLS ---------------------------------------------------------------

struct TestCert {
    server: Arc<rustls::ServerConfig>,
    pem: String,
}

fn test_cert(name: &str) -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    TestCert {
        server: Arc::new(server),
        pem: ck.cert.pem(),
    }
}

const EHLO_TLS: &str = "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

fn tls_script(after_starttls: &'static str) -> Vec<Step> {
    vec![
        GREET,
        Hear("EHLO"),
        Say(EHLO_TLS),
        Hear("STARTTLS"),
        Say(after_starttls),
        Step::Tls,
        Hear("EHLO client.test"),
        Say("250-fake.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"),
        Hear("MAIL"),
        Hear("RCPT"),
        Hear("DATA"),
        Say("250 ok\r\n250 ok\r\n354 go\r\n"),
        HearData,
        Say("250 2.0.0 over tls\r\n"),
    ]
}

#[tokio::test]
async fn starttls_opportunistic_self_signed() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(tls_script("220 2.0.0 go ahead\r\n"), Some(cert.server)).await;
    let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
    assert!(c.tls_active());
    assert!(!c.tls().unwrap().verified);
    // Extensions are those said over TLS.
    assert!(!c.extensions().starttls);
    assert_eq!(c.extensions().auth, ["PLAIN", "LOGIN"]);
    let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
    assert_eq!(r[0].reply().lines, ["over tls"]);
    done(h).await;
}

#[tokio::test]
async fn starttls_discards_injected_plaintext() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        tls_script("220 go ahead\r\n250 injected\r\n"),
        Some(cert.server),
    )
    .await;
    let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
    assert!(c.tls_active());
    // Had "250 injected" been taken as the EHLO reply, PIPELINING
    // would be unknown and every later reply one step off.
    assert!(c.extensions().pipelining);
    let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
    assert_eq!(r[0].reply().lines, ["over tls"]);
    done(h).await;
}

#[tokio::test]
async fn starttls_none_mode_never_upgrades() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_TLS),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
    assert!(!c.tls_active());
    c.send(&msg(&["b@dst.test"])).await.unwrap();
    done(h).await;
}

#[tokio::test]
async fn starttls_refused_opportunistic_goes_on_plain() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_TLS),
            Hear("STARTTLS"),
            Say("454 4.7.0 TLS not available\r\n"),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 ok\r\n"),
        ],
        None,
    )
    .await;
    let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
    assert!(!c.tls_active());
    c.send(&msg(&["b@dst.test"])).await.unwrap();
    done(h).await;
}

#[tokio::test]
async fn require_mode() {
    let cert = test_cert("localhost");
    let script = || {
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_TLS),
            Hear("STARTTLS"),
            Say("220 go ahead\r\n"),
            Step::Tls,
            Hear("EHLO"),
            Say("250 fake.test\r\n"),
        ]
    };

    // Not offered.
    let (addr, h) = fake::serve(vec![GREET, Hear("EHLO"), Say(EHLO_PIPE)], None).await;
    let e = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &cfg5())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
    assert!(!e.is_permanent());
    done(h).await;

    // A self-signed certificate does not verify against the default roots.
    let (addr, h) = fake::serve(script(), Some(cert.server.clone())).await;
    let e = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &cfg5())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
    assert_eq!(done(h).await.last().unwrap(), "TLS-FAILED");

    // It does once trusted.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, &cert.pem).unwrap();
    let mut trusted = cfg5();
    trusted.tls_roots = Arc::new(load_roots(Some(&pem)).unwrap());
    let (addr, h) = fake::serve(script(), Some(cert.server.clone())).await;
    let c = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &trusted)
        .await
        .unwrap();
    assert!(c.tls_active());
    assert!(c.tls().unwrap().verified);
    done(h).await;

    // But not for another name.
    let (addr, h) = fake::serve(script(), Some(cert.server)).await;
    let e = Connection::connect(addr, "other.test", TlsMode::Require, false, None, &trusted)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
    done(h).await;
}

#[test]
fn load_roots_errors() {
    let n = load_roots(None).unwrap().len();
    assert!(n > 100);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    assert!(matches!(load_roots(Some(&empty)), Err(ClientError::Tls(_))));
    assert!(matches!(
        load_roots(Some(&dir.path().join("missing.pem"))),
        Err(ClientError::Tls(_))
    ));
}

// -- AUTH ----------------------------------------------------------------

fn creds() -> Credentials {
    Credentials {
        username: "user".into(),
        password: "pass".into(),
        allow_unverified_tls: false,
    }
}

/// [`cfg5`] trusting `cert`.
fn trusting(cert: &TestCert) -> ClientConfig {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, &cert.pem).unwrap();
    let mut c = cfg5();
    c.tls_roots = Arc::new(load_roots(Some(&pem)).unwrap());
    c
}

fn auth_script(ehlo: &'static str, exchange: Vec<Step>) -> Vec<Step> {
    let mut s = vec![
        GREET,
        Hear("EHLO"),
        Say(EHLO_TLS),
        Hear("STARTTLS"),
        Say("220 go ahead\r\n"),
        Step::Tls,
        Hear("EHLO"),
        Say(ehlo),
    ];
    s.extend(exchange);
    s
}

#[tokio::test]
async fn auth_plain_over_tls() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        auth_script(
            "250-fake.test\r\n250 AUTH LOGIN PLAIN\r\n",
            vec![Hear("AUTH PLAIN AHVzZXIAcGFzcw=="), Say("235 2.7.0 ok\r\n")],
        ),
        Some(cert.server.clone()),
    )
    .await;
    let c = Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &trusting(&cert),
    )
    .await
    .unwrap();
    assert!(c.is_usable());
    done(h).await;
}

#[tokio::test]
async fn auth_login_when_only_login() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        auth_script(
            "250-fake.test\r\n250 AUTH LOGIN\r\n",
            vec![
                Hear("AUTH LOGIN"),
                Say("334 VXNlcm5hbWU6\r\n"),
                Hear("dXNlcg=="),
                Say("334 UGFzc3dvcmQ6\r\n"),
                Hear("cGFzcw=="),
                Say("235 ok\r\n"),
            ],
        ),
        Some(cert.server.clone()),
    )
    .await;
    Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &trusting(&cert),
    )
    .await
    .unwrap();
    done(h).await;
}

#[tokio::test]
async fn auth_failed_is_permanent() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        auth_script(
            "250-fake.test\r\n250 AUTH PLAIN\r\n",
            vec![Hear("AUTH PLAIN"), Say("535 5.7.8 bad credentials\r\n")],
        ),
        Some(cert.server.clone()),
    )
    .await;
    let e = Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &trusting(&cert),
    )
    .await
    .unwrap_err();
    assert!(matches!(&e, ClientError::Reply { stage: "auth", reply } if reply.code == 535));
    assert!(e.is_permanent());
    assert_eq!(e.status(), Enhanced(5, 7, 8));
    done(h).await;
}

#[tokio::test]
async fn auth_never_in_plaintext() {
    let (addr, h) = fake::serve(
        vec![
            GREET,
            Hear("EHLO"),
            Say("250-fake.test\r\n250 AUTH PLAIN\r\n"),
        ],
        None,
    )
    .await;
    let e = Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &cfg5(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
    let seen = done(h).await;
    assert!(seen.iter().all(|l| !l.starts_with("AUTH")));
    assert!(!format!("{:?}", creds()).contains("pass\""));
}

#[tokio::test]
async fn auth_without_mechanism() {
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        auth_script("250-fake.test\r\n250 AUTH CRAM-MD5\r\n", vec![]),
        Some(cert.server.clone()),
    )
    .await;
    let e = Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &trusting(&cert),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::AuthUnavailable), "{e:?}");
    done(h).await;
}

#[tokio::test]
async fn finding_04_no_credentials_over_unverified_tls() {
    // The route says opportunistic; with credentials the certificate must
    // verify, so a self-signed one (a machine in the path) gets no AUTH.
    let cert = test_cert("fake.test");
    let (addr, h) = fake::serve(
        auth_script(
            "250-fake.test\r\n250 AUTH PLAIN\r\n",
            vec![Hear("AUTH PLAIN"), Say("235 2.7.0 ok\r\n")],
        ),
        Some(cert.server.clone()),
    )
    .await;
    let e = Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&creds()),
        &cfg5(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
    assert!(!e.is_permanent());
    let seen = done(h).await;
    assert!(seen.iter().all(|l| !l.starts_with("AUTH")), "{seen:?}");

    // The explicit opt-out sends them over that TLS (still never plain).
    let (addr, h) = fake::serve(
        auth_script(
            "250-fake.test\r\n250 AUTH PLAIN\r\n",
            vec![Hear("AUTH PLAIN AHVzZXIAcGFzcw=="), Say("235 2.7.0 ok\r\n")],
        ),
        Some(cert.server),
    )
    .await;
    let opt_out = Credentials {
        allow_unverified_tls: true,
        ..creds()
    };
    Connection::connect(
        addr,
        "fake.test",
        TlsMode::Opportunistic,
        false,
        Some(&opt_out),
        &cfg5(),
    )
    .await
    .unwrap();
    done(h).await;
}
