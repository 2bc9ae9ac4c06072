// The body of the `basic` test policy, shared with `other-major` (which
// builds it against another contract version). It expects the bindings of
// `generate!` in the including module.
//
// Behaviour:
// - config (JSON object): `tag` (names the policy in headers and replies,
//   default "basic"), `fail` (true: init fails), and per stage
//   (`connect`, `helo`, `mail_from`, `rcpt`, `data`) a verdict name:
//   continue | accept | reject | tempfail | discard | quarantine |
//   reject4xx (a reject with a 4xx code, for the host to correct).
// - mail-from `reject@…` → 550 5.7.1; rcpt local parts: `blocked` → 550
//   5.7.1, `temp` → 451 4.7.1, `wrongclass` → reject with 450 and no
//   enhanced code, `accept`, `discard`, `quarantine` → those verdicts,
//   `calls` → 451 4.7.1 "calls N", N counting such calls in this instance
//   (1 in a fresh instance; more when the host reuses instances).
// - data: adds `X-Policy: <tag>`, and one header per host capability with
//   its outcome (`X-Kv`, `X-Dns`, `X-Clock`, `X-Metrics`: "ok:…",
//   "denied" or "error:…"), and headers from the message resource
//   (`X-Subject`, `X-From`, `X-To`, `X-Parts`, `X-Text`, `X-Raw`,
//   `X-Header-Count`). A subject containing "discard", "quarantine" or
//   "add-rcpt" gives that verdict or change.
// - route: `*.relay.test` → relay relay.example:2525 (tls none),
//   `local.test` → local, `mx.test` → mx, `bounce.test` → reject 550
//   5.1.1, anything else → default.

use std::sync::OnceLock;

use exports::sluice::policy::policy::Guest;
use sluice::policy::errors::HostError;
use sluice::policy::log::{Level, log};
use sluice::policy::message::Message;
use sluice::policy::types::{
    Change, DataResult, Description, Envelope, Header, Param, RelayHost, Reply, Route, Session,
    Stage, TlsMode, Verdict,
};

static CONFIG: OnceLock<serde_json::Value> = OnceLock::new();
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn config() -> &'static serde_json::Value {
    CONFIG.get_or_init(|| serde_json::json!({}))
}

fn tag() -> String {
    config()
        .get("tag")
        .and_then(|t| t.as_str())
        .unwrap_or("basic")
        .to_string()
}

fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply {
        code,
        enhanced: enhanced.to_string(),
        text: text.to_string(),
    }
}

fn configured(stage: &str) -> Verdict {
    let t = tag();
    match config()
        .get(stage)
        .and_then(|v| v.as_str())
        .unwrap_or("continue")
    {
        "accept" => Verdict::Accept,
        "reject" => Verdict::Reject(reply(554, "5.7.1", &format!("{t} rejects {stage}"))),
        "tempfail" => Verdict::Tempfail(reply(451, "4.7.1", &format!("{t} tempfails {stage}"))),
        "reject4xx" => Verdict::Reject(reply(450, "", &format!("{t} rejects with 4xx"))),
        "discard" => Verdict::Discard,
        "quarantine" => Verdict::Quarantine(format!("{t} quarantines {stage}")),
        _ => Verdict::Continue,
    }
}

fn outcome<T: std::fmt::Debug>(r: Result<T, HostError>) -> String {
    match r {
        Ok(v) => format!("ok:{v:?}"),
        Err(HostError::AccessDenied) => "denied".to_string(),
        Err(HostError::InvalidArgument(m)) => format!("invalid:{m}"),
        Err(HostError::Temporary(m)) => format!("temporary:{m}"),
    }
}

struct Basic;

impl Guest for Basic {
    fn describe() -> Description {
        Description {
            name: "basic".to_string(),
            version: "1.2.3".to_string(),
            stages: vec![
                Stage::Connect,
                Stage::Helo,
                Stage::MailFrom,
                Stage::Rcpt,
                Stage::Data,
                Stage::Route,
            ],
        }
    }

    fn init(config: String) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        if value.get("fail").and_then(|v| v.as_bool()) == Some(true) {
            return Err("init refused: the config asks to fail".to_string());
        }
        let _ = CONFIG.set(value);
        Ok(())
    }

    fn on_connect(session: Session) -> Verdict {
        log(Level::Info, &format!("connect from {}", session.client_ip));
        configured("connect")
    }

    fn on_helo(session: Session, name: String) -> Verdict {
        log(
            Level::Debug,
            &format!("helo {name} (session says {:?})", session.helo),
        );
        if name == "reject.helo.test" {
            return Verdict::Reject(reply(550, "5.7.1", "bad helo"));
        }
        configured("helo")
    }

    fn on_mail_from(_session: Session, sender: String, params: Vec<Param>) -> Verdict {
        if sender.starts_with("reject@") {
            return Verdict::Reject(reply(550, "5.7.1", "sender refused by basic"));
        }
        if params.iter().any(|p| p.name == "X-REJECT") {
            return Verdict::Reject(reply(550, "5.7.1", "parameter refused"));
        }
        configured("mail_from")
    }

    fn on_rcpt(session: Session, envelope: Envelope, recipient: String, _: Vec<Param>) -> Verdict {
        let local = recipient.split('@').next().unwrap_or("");
        let t = tag();
        match local {
            "blocked" => Verdict::Reject(reply(550, "5.7.1", &format!("{recipient} is blocked"))),
            "temp" => Verdict::Tempfail(reply(451, "4.7.1", "try later")),
            "wrongclass" => Verdict::Reject(reply(450, "", "wrong class")),
            "accept" => Verdict::Accept,
            "calls" => {
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Verdict::Tempfail(reply(451, "4.7.1", &format!("calls {n}")))
            }
            "discard" => Verdict::Discard,
            "quarantine" => Verdict::Quarantine("held".to_string()),
            "count" => {
                let n = sluice::policy::kv::incr("rcpt-count", 1, 0);
                Verdict::Tempfail(reply(451, "4.7.1", &format!("count {}", outcome(n))))
            }
            "whoami" => Verdict::Reject(reply(
                550,
                "5.7.1",
                &format!(
                    "{t} ip={} helo={:?} tls={:?} relay={} sender={} rcpts={}",
                    session.client_ip,
                    session.helo,
                    session.tls.map(|t| t.version),
                    session.relay_client,
                    envelope.sender,
                    envelope.recipients.join(",")
                ),
            )),
            _ => configured("rcpt"),
        }
    }

    fn on_data(_session: Session, envelope: Envelope, message: &Message) -> DataResult {
        let t = tag();
        let mut changes = vec![Change::AddHeader(Header {
            name: "X-Policy".to_string(),
            value: t.clone(),
        })];
        let mut add = |name: &str, value: String| {
            changes.push(Change::AddHeader(Header {
                name: name.to_string(),
                value,
            }))
        };
        add(
            "X-Kv",
            outcome(sluice::policy::kv::incr(&format!("msgs-{t}"), 1, 60)),
        );
        add("X-Dns", outcome(sluice::policy::dns::a("host.dns.test")));
        add(
            "X-Clock",
            outcome(sluice::policy::clock::now().map(|ts| ts.seconds > 1_600_000_000)),
        );
        add(
            "X-Metrics",
            outcome(sluice::policy::metrics::counter_add("messages", 1)),
        );
        let subject = message.subject().unwrap_or_default();
        add("X-Subject", subject.clone());
        add("X-From", message.from().join(","));
        add("X-To", message.to().join(","));
        add(
            "X-Parts",
            message
                .parts(10)
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}:{}",
                        p.content_type,
                        p.filename.clone().unwrap_or_default(),
                        p.is_attachment
                    )
                })
                .collect::<Vec<_>>()
                .join(";"),
        );
        add("X-Text", message.text(20).trim().to_string());
        add(
            "X-Raw",
            String::from_utf8_lossy(&message.raw(0, 4)).into_owned(),
        );
        add("X-Header-Count", message.headers(1000).len().to_string());
        add("X-Size", message.size().to_string());
        add("X-Rcpts", envelope.recipients.join(","));
        log(Level::Info, &format!("data: {subject}"));
        let verdict = if subject.contains("discard") {
            Verdict::Discard
        } else if subject.contains("quarantine") {
            Verdict::Quarantine("subject says so".to_string())
        } else {
            if subject.contains("add-rcpt") {
                changes.push(Change::AddRecipient("added@example.test".to_string()));
                changes.push(Change::RemoveRecipient("removed@example.test".to_string()));
                changes.push(Change::RemoveHeader("X-Remove-Me".to_string()));
            }
            configured("data")
        };
        DataResult { verdict, changes }
    }

    fn on_route(_envelope: Envelope, recipient: String) -> Route {
        let domain = recipient.rsplit('@').next().unwrap_or("").to_string();
        if domain.ends_with(".relay.test") {
            Route::Relay(RelayHost {
                host: "relay.example".to_string(),
                port: 2525,
                tls: TlsMode::None,
            })
        } else if domain == "local.test" {
            Route::Local
        } else if domain == "mx.test" {
            Route::Mx(domain)
        } else if domain == "bounce.test" {
            Route::Reject(reply(550, "5.1.1", "no such user here"))
        } else {
            Route::Default
        }
    }
}

export!(Basic);
