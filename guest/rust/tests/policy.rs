//! A policy written against the public API only, as an author would, and
//! tested natively with `MockHost` and `MockMessage`.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;

use sluice_guest::{
    Config, Context, DataResult, Envelope, HostError, Message, MockHost, MockMessage, Param,
    Policy, Route, Session, Stage, Verdict,
};

/// Implements nothing but the required items: every hook must say
/// "no opinion".
struct Silent;

impl Policy for Silent {
    fn name() -> &'static str {
        "silent"
    }
    fn stages() -> &'static [Stage] {
        &[]
    }
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Silent)
    }
}

sluice_guest::export_policy!(Silent);

#[test]
fn hooks_default_to_no_opinion() {
    let ctx = MockHost::new().context();
    let s = Session::default();
    let env = Envelope::default();
    let mock = MockMessage::parse("Subject: x\r\n\r\nbody\r\n");
    let p = Silent::init(&Config::empty()).unwrap();
    assert_eq!(p.on_connect(&ctx, &s), Verdict::Continue);
    assert_eq!(p.on_helo(&ctx, &s, "client.example"), Verdict::Continue);
    assert_eq!(p.on_mail_from(&ctx, &s, "", &[]), Verdict::Continue);
    assert_eq!(p.on_rcpt(&ctx, &s, &env, "a@b", &[]), Verdict::Continue);
    assert_eq!(
        p.on_data(&ctx, &s, &env, &mock.message()),
        DataResult::continue_()
    );
    assert_eq!(p.on_route(&ctx, &env, "a@b"), Route::Default);
    assert_eq!(Silent::version(), None);
}

/// Greylisting-ish: per-session state in a `Cell`, shared state in kv,
/// settings from the config, a header at the data stage.
struct Limiter {
    max_per_hour: i32,
    rejected_here: Cell<u32>,
}

impl Policy for Limiter {
    fn name() -> &'static str {
        "limiter"
    }
    fn version() -> Option<&'static str> {
        Some("2.0.0")
    }
    fn stages() -> &'static [Stage] {
        &[Stage::Rcpt, Stage::Data]
    }
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["max_per_hour"])?;
        let max = config.u32("max_per_hour")?.unwrap_or(100);
        let max_per_hour = i32::try_from(max).map_err(|_| "max_per_hour is too large")?;
        Ok(Limiter {
            max_per_hour,
            rejected_here: Cell::new(0),
        })
    }
    fn on_rcpt(
        &self,
        ctx: &Context,
        session: &Session,
        envelope: &Envelope,
        _recipient: &str,
        _params: &[Param],
    ) -> Verdict {
        if session.relay_client {
            return Verdict::Accept;
        }
        let key = format!("sender:{}", envelope.sender);
        match ctx.kv_incr(&key, 1, 3600) {
            Ok(n) if n > self.max_per_hour => {
                self.rejected_here.set(self.rejected_here.get() + 1);
                let _ = ctx.counter_add("limited", 1);
                Verdict::tempfail(451, "4.7.1", "sender over its hourly limit")
            }
            Ok(_) => Verdict::Continue,
            Err(HostError::Temporary(why)) => {
                ctx.warn(&format!("kv unavailable: {why}"));
                Verdict::tempfail(451, "4.3.0", "try again later")
            }
            Err(e) => {
                ctx.error(&format!("limiter disabled: {e}"));
                Verdict::Continue
            }
        }
    }
    fn on_data(
        &self,
        _ctx: &Context,
        _session: &Session,
        _envelope: &Envelope,
        message: &Message<'_>,
    ) -> DataResult {
        DataResult::continue_()
            .add_header("X-Limited-Rcpts", self.rejected_here.get().to_string())
            .add_header("X-Size", message.size().to_string())
    }
}

sluice_guest::export_policy!(Limiter);

fn limiter(max: u32) -> Limiter {
    Limiter::init(&Config::from_json(&format!(r#"{{"max_per_hour": {max}}}"#)).unwrap()).unwrap()
}

#[test]
fn config_errors_reach_the_operator() {
    let err = Limiter::init(&Config::from_json(r#"{"max_per_hour": "ten"}"#).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        err,
        "config key `max_per_hour`: expected an integer from 0 to 4294967295, found a string"
    );
    let err = Limiter::init(&Config::from_json(r#"{"max_per_hr": 1}"#).unwrap())
        .err()
        .unwrap();
    assert!(err.contains("`max_per_hr` is not known"), "{err}");
    assert_eq!(Limiter::version(), Some("2.0.0"));
}

#[test]
fn limits_per_sender_with_session_state() {
    let host = MockHost::new().grant_all();
    let ctx = host.context();
    let p = limiter(2);
    let s = Session::default();
    let env = Envelope {
        sender: "bulk@example.com".into(),
        ..Envelope::default()
    };
    assert_eq!(p.on_rcpt(&ctx, &s, &env, "a@x", &[]), Verdict::Continue);
    assert_eq!(p.on_rcpt(&ctx, &s, &env, "b@x", &[]), Verdict::Continue);
    assert!(matches!(p.on_rcpt(&ctx, &s, &env, "c@x", &[]), Verdict::Tempfail(r) if r.code == 451));
    assert_eq!(host.counter("limited"), 1);

    let mock = MockMessage::parse("Subject: hi\r\n\r\nbody\r\n");
    let result = p.on_data(&ctx, &s, &env, &mock.message());
    assert_eq!(
        result,
        DataResult::continue_()
            .add_header("X-Limited-Rcpts", "1")
            .add_header("X-Size", "21")
    );

    // A fresh hour: the kv window expired.
    host.advance(std::time::Duration::from_secs(3600));
    assert_eq!(p.on_rcpt(&ctx, &s, &env, "d@x", &[]), Verdict::Continue);
}

#[test]
fn relay_clients_skip_the_limit_and_denied_kv_is_logged() {
    let p = limiter(0);
    let host = MockHost::new(); // no kv granted
    let ctx = host.context();
    let env = Envelope::default();
    let relay = Session {
        relay_client: true,
        ..Session::default()
    };
    assert_eq!(p.on_rcpt(&ctx, &relay, &env, "a@x", &[]), Verdict::Accept);
    assert!(host.calls().is_empty(), "no host call for relay clients");
    assert_eq!(
        p.on_rcpt(&ctx, &Session::default(), &env, "a@x", &[]),
        Verdict::Continue
    );
    assert!(host.logged("limiter disabled: access denied"));
}
