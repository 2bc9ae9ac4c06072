// The body of the record-and-replay test policy, built twice: `replay-v1`
// and `replay-v2` differ only in `VERSION`. It touches several stages and
// every recorded host capability, so a recording made with v1 and replayed
// with v2 shows exactly the differences listed here.
//
// - connect: `dns.a` of the client's IPv4 address reversed under
//   `bl.test`; any address → 554 5.7.1 (both versions).
// - mail-from: `kv.get("block:SENDER")`; a value → 550 5.7.1 (both).
// - rcpt: v2 only: local part `bob` → 550 5.7.1 "ADDR is blocked by v2".
//   Then `kv.incr("rcpt:SENDER", 1, 3600)`: over the limit (v1: 3,
//   v2: 2) → 451 4.7.1 "too many recipients (N)".
// - data: adds `X-Replay: a=<dns.a of data.test> t=<clock.now seconds>`;
//   v2 only: a Subject containing "invoice" → quarantine "suspicious
//   subject".

use exports::sluice::policy::policy::Guest;
use sluice::policy::message::Message;
use sluice::policy::types::{
    Change, DataResult, Description, Envelope, Header, Param, Reply, Route, Session, Stage,
    Verdict,
};

fn reply(code: u16, enhanced: &str, text: String) -> Reply {
    Reply {
        code,
        enhanced: enhanced.to_string(),
        text,
    }
}

struct Replay;

impl Guest for Replay {
    fn describe() -> Description {
        Description {
            name: "replay".to_string(),
            version: format!("{VERSION}.0.0"),
            stages: vec![Stage::Connect, Stage::MailFrom, Stage::Rcpt, Stage::Data],
        }
    }

    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_connect(session: Session) -> Verdict {
        let Ok(ip) = session.client_ip.parse::<std::net::Ipv4Addr>() else {
            return Verdict::Continue;
        };
        let o = ip.octets();
        let name = format!("{}.{}.{}.{}.bl.test", o[3], o[2], o[1], o[0]);
        match sluice::policy::dns::a(&name) {
            Ok(found) if !found.is_empty() => Verdict::Reject(reply(
                554,
                "5.7.1",
                format!("{} listed in bl.test", session.client_ip),
            )),
            _ => Verdict::Continue,
        }
    }

    fn on_helo(_session: Session, _name: String) -> Verdict {
        Verdict::Continue
    }

    fn on_mail_from(_session: Session, sender: String, _params: Vec<Param>) -> Verdict {
        match sluice::policy::kv::get(&format!("block:{sender}")) {
            Ok(Some(_)) => Verdict::Reject(reply(550, "5.7.1", format!("{sender} is blocked"))),
            _ => Verdict::Continue,
        }
    }

    fn on_rcpt(_session: Session, envelope: Envelope, recipient: String, _: Vec<Param>) -> Verdict {
        if VERSION == 2 && recipient.split('@').next() == Some("bob") {
            return Verdict::Reject(reply(550, "5.7.1", format!("{recipient} is blocked by v2")));
        }
        let limit = if VERSION == 1 { 3 } else { 2 };
        match sluice::policy::kv::incr(&format!("rcpt:{}", envelope.sender), 1, 3600) {
            Ok(n) if n > limit => Verdict::Tempfail(reply(
                451,
                "4.7.1",
                format!("too many recipients ({n})"),
            )),
            _ => Verdict::Continue,
        }
    }

    fn on_data(_session: Session, _envelope: Envelope, message: &Message) -> DataResult {
        let a = sluice::policy::dns::a("data.test")
            .map(|v| v.join(","))
            .unwrap_or_else(|_| "error".to_string());
        let t = sluice::policy::clock::now()
            .map(|t| t.seconds.to_string())
            .unwrap_or_else(|_| "none".to_string());
        let changes = vec![Change::AddHeader(Header {
            name: "X-Replay".to_string(),
            value: format!("a={a} t={t}"),
        })];
        let subject = message.subject().unwrap_or_default();
        let verdict = if VERSION == 2 && subject.contains("invoice") {
            Verdict::Quarantine("suspicious subject".to_string())
        } else {
            Verdict::Continue
        };
        DataResult { verdict, changes }
    }

    fn on_route(_envelope: Envelope, _recipient: String) -> Route {
        Route::Default
    }
}

export!(Replay);
