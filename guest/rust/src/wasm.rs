//! The component side (wasm32 only): the wit-bindgen bindings of
//! `policy-world`, conversions between them and the SDK's types, the host
//! imports behind [`Context`], and the generic `Guest` implementation that
//! [`export_policy!`](crate::export_policy) plugs a [`Policy`] into.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use crate::config::Config;
use crate::context::{Context, HostApi, HostError, Level, Mx, Timestamp};
use crate::message::{Message, MessageSource};
use crate::policy::Policy;
use crate::types::{
    Change, DataResult, Envelope, Header, Param, PartInfo, RelayHost, Reply, Route, Session, Stage,
    TlsInfo, TlsMode, Verdict,
};

/// The generated bindings. Hidden: policy authors never see them.
#[allow(
    unsafe_code,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy-world",
        pub_export_macro: true,
        export_macro_name: "__sluice_export",
        default_bindings_module: "::sluice_guest::__private::bindings",
    });
}

use bindings::exports::sluice::policy::policy as wit_export;
use bindings::sluice::policy::{clock, dns, errors, kv, log, message, metrics, types as wit};

/// The host's message resource.
pub(crate) type HostMessage = message::Message;

// ---- host data in: WIT → SDK ----

impl From<wit::Session> for Session {
    fn from(s: wit::Session) -> Self {
        Session {
            client_ip: s.client_ip,
            client_port: s.client_port,
            listener: s.listener,
            helo: s.helo,
            tls: s.tls.map(|t| TlsInfo {
                version: t.version,
                cipher: t.cipher,
            }),
            relay_client: s.relay_client,
        }
    }
}

impl From<wit::Param> for Param {
    fn from(p: wit::Param) -> Self {
        Param {
            name: p.name,
            value: p.value,
        }
    }
}

fn params(list: Vec<wit::Param>) -> Vec<Param> {
    list.into_iter().map(Param::from).collect()
}

impl From<wit::Envelope> for Envelope {
    fn from(e: wit::Envelope) -> Self {
        Envelope {
            sender: e.sender,
            sender_params: params(e.sender_params),
            recipients: e.recipients,
        }
    }
}

impl From<wit::Header> for Header {
    fn from(h: wit::Header) -> Self {
        Header {
            name: h.name,
            value: h.value,
        }
    }
}

impl From<message::PartInfo> for PartInfo {
    fn from(p: message::PartInfo) -> Self {
        PartInfo {
            content_type: p.content_type,
            filename: p.filename,
            size: p.size,
            is_attachment: p.is_attachment,
        }
    }
}

impl From<errors::HostError> for HostError {
    fn from(e: errors::HostError) -> Self {
        match e {
            errors::HostError::AccessDenied => HostError::AccessDenied,
            errors::HostError::InvalidArgument(why) => HostError::InvalidArgument(why),
            errors::HostError::Temporary(why) => HostError::Temporary(why),
        }
    }
}

// ---- policy data out: SDK → WIT ----

impl From<Stage> for wit::Stage {
    fn from(s: Stage) -> Self {
        match s {
            Stage::Connect => wit::Stage::Connect,
            Stage::Helo => wit::Stage::Helo,
            Stage::MailFrom => wit::Stage::MailFrom,
            Stage::Rcpt => wit::Stage::Rcpt,
            Stage::Data => wit::Stage::Data,
            Stage::Route => wit::Stage::Route,
        }
    }
}

impl From<Reply> for wit::Reply {
    fn from(r: Reply) -> Self {
        wit::Reply {
            code: r.code,
            enhanced: r.enhanced,
            text: r.text,
        }
    }
}

impl From<Verdict> for wit::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Continue => wit::Verdict::Continue,
            Verdict::Accept => wit::Verdict::Accept,
            Verdict::Reject(r) => wit::Verdict::Reject(r.into()),
            Verdict::Tempfail(r) => wit::Verdict::Tempfail(r.into()),
            Verdict::Discard => wit::Verdict::Discard,
            Verdict::Quarantine(reason) => wit::Verdict::Quarantine(reason),
        }
    }
}

impl From<Change> for wit::Change {
    fn from(c: Change) -> Self {
        match c {
            Change::AddHeader(h) => wit::Change::AddHeader(wit::Header {
                name: h.name,
                value: h.value,
            }),
            Change::RemoveHeader(name) => wit::Change::RemoveHeader(name),
            Change::AddRecipient(a) => wit::Change::AddRecipient(a),
            Change::RemoveRecipient(a) => wit::Change::RemoveRecipient(a),
        }
    }
}

impl From<DataResult> for wit::DataResult {
    fn from(r: DataResult) -> Self {
        wit::DataResult {
            verdict: r.verdict.into(),
            changes: r.changes.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<TlsMode> for wit::TlsMode {
    fn from(t: TlsMode) -> Self {
        match t {
            TlsMode::Opportunistic => wit::TlsMode::Opportunistic,
            TlsMode::Require => wit::TlsMode::Require,
            TlsMode::None => wit::TlsMode::None,
        }
    }
}

impl From<RelayHost> for wit::RelayHost {
    fn from(r: RelayHost) -> Self {
        wit::RelayHost {
            host: r.host,
            port: r.port,
            tls: r.tls.into(),
        }
    }
}

impl From<Route> for wit::Route {
    fn from(r: Route) -> Self {
        match r {
            Route::Default => wit::Route::Default,
            Route::Local => wit::Route::Local,
            Route::Relay(host) => wit::Route::Relay(host.into()),
            Route::Mx(domain) => wit::Route::Mx(domain),
            Route::Reject(reply) => wit::Route::Reject(reply.into()),
        }
    }
}

fn level(l: Level) -> log::Level {
    match l {
        Level::Trace => log::Level::Trace,
        Level::Debug => log::Level::Debug,
        Level::Info => log::Level::Info,
        Level::Warn => log::Level::Warn,
        Level::Error => log::Level::Error,
    }
}

// ---- the host imports behind `Context` ----

/// The real host: each method calls one import.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostImports;

impl HostApi for HostImports {
    fn log(&self, l: Level, text: &str) {
        log::log(level(l), text);
    }

    fn now(&self) -> Result<Timestamp, HostError> {
        let t = clock::now()?;
        Ok(Timestamp {
            seconds: t.seconds,
            millis: t.millis,
        })
    }

    fn counter_add(&self, name: &str, delta: u32) -> Result<(), HostError> {
        Ok(metrics::counter_add(name, delta)?)
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(kv::get(key)?)
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl: u32) -> Result<(), HostError> {
        Ok(kv::set(key, value, ttl)?)
    }

    fn kv_incr(&self, key: &str, delta: i32, ttl: u32) -> Result<i32, HostError> {
        Ok(kv::incr(key, delta, ttl)?)
    }

    fn kv_delete(&self, key: &str) -> Result<(), HostError> {
        Ok(kv::delete(key)?)
    }

    fn dns_a(&self, name: &str) -> Result<Vec<String>, HostError> {
        Ok(dns::a(name)?)
    }

    fn dns_aaaa(&self, name: &str) -> Result<Vec<String>, HostError> {
        Ok(dns::aaaa(name)?)
    }

    fn dns_mx(&self, name: &str) -> Result<Vec<Mx>, HostError> {
        Ok(dns::mx(name)?
            .into_iter()
            .map(|(preference, exchange)| Mx {
                preference,
                exchange,
            })
            .collect())
    }

    fn dns_txt(&self, name: &str) -> Result<Vec<String>, HostError> {
        Ok(dns::txt(name)?)
    }

    fn dns_ptr(&self, ip: &str) -> Result<Vec<String>, HostError> {
        Ok(dns::ptr(ip)?)
    }
}

// The message methods `Message` calls (it applies the bounds). Inherent
// methods (the bindings) win over trait methods in `self.x()` calls.
impl MessageSource for HostMessage {
    fn size(&self) -> u32 {
        self.size()
    }

    fn header(&self, name: &str) -> Vec<String> {
        self.header(name)
    }

    fn headers(&self, max: u32) -> Vec<Header> {
        self.headers(max).into_iter().map(Into::into).collect()
    }

    fn subject(&self) -> Option<String> {
        self.subject()
    }

    fn from(&self) -> Vec<String> {
        self.from()
    }

    fn to(&self) -> Vec<String> {
        self.to()
    }

    fn parts(&self, max: u32) -> Vec<PartInfo> {
        self.parts(max).into_iter().map(Into::into).collect()
    }

    fn text(&self, max_bytes: u32) -> String {
        self.text(max_bytes)
    }

    fn raw(&self, offset: u32, len: u32) -> Vec<u8> {
        self.raw(offset, len)
    }
}

// ---- the export glue ----

/// Implemented by [`export_policy!`](crate::export_policy) for a hidden
/// type in the policy crate: which policy, and that crate's version.
pub trait Export: 'static {
    /// The exported policy.
    type Policy: Policy;
    /// `CARGO_PKG_VERSION` of the crate that invoked the macro.
    const CRATE_VERSION: &'static str;
}

/// The `Guest` implementation of every policy, generic over the policy.
pub struct Adapter<E>(PhantomData<E>);

impl<E> fmt::Debug for Adapter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Adapter")
    }
}

thread_local! {
    /// The value `init` built, for the hooks of this instance. A component
    /// instance is single-threaded, so this is one slot per instance.
    static POLICY: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

const NOT_INITIALISED: &str = "policy not initialised";

/// Run `hook` with the initialised policy, or log and return `None` when
/// `init` has not succeeded on this instance.
fn with_policy<P: Policy, R>(stage: Stage, hook: impl FnOnce(&P) -> R) -> Option<R> {
    let result = POLICY.with(|slot| {
        let slot = slot.try_borrow().ok()?;
        let policy = slot.as_ref()?.downcast_ref::<P>()?;
        Some(hook(policy))
    });
    if result.is_none() {
        log::log(
            log::Level::Error,
            &format!(
                "{NOT_INITIALISED}: the host called the {stage} hook before a successful init"
            ),
        );
    }
    result
}

fn not_initialised() -> Verdict {
    Verdict::tempfail(451, "4.3.0", NOT_INITIALISED)
}

fn context() -> Context {
    Context::new(HostImports)
}

impl<E: Export> wit_export::Guest for Adapter<E> {
    fn describe() -> wit::Description {
        // After a successful `init` (the host's order), the stages this
        // config needs; before it, every stage the policy handles.
        let configured = POLICY.with(|slot| {
            let slot = slot.try_borrow().ok()?;
            let policy = slot.as_ref()?.downcast_ref::<E::Policy>()?;
            Some(policy.configured_stages())
        });
        let mut stages: Vec<wit::Stage> = Vec::new();
        for stage in E::Policy::stages() {
            if configured.as_ref().is_some_and(|c| !c.contains(stage)) {
                continue;
            }
            let stage = wit::Stage::from(*stage);
            if !stages.contains(&stage) {
                stages.push(stage);
            }
        }
        wit::Description {
            name: E::Policy::name().to_string(),
            version: E::Policy::version().unwrap_or(E::CRATE_VERSION).to_string(),
            stages,
        }
    }

    fn init(config: String) -> Result<(), String> {
        let config = Config::from_json(&config)?;
        let policy = E::Policy::init(&config)?;
        POLICY.with(|slot| match slot.try_borrow_mut() {
            Ok(mut slot) => {
                *slot = Some(Box::new(policy));
                Ok(())
            }
            Err(_) => Err("init called while a hook was running".to_string()),
        })
    }

    fn on_connect(session: wit::Session) -> wit::Verdict {
        let session = Session::from(session);
        with_policy(Stage::Connect, |p: &E::Policy| {
            p.on_connect(&context(), &session)
        })
        .unwrap_or_else(not_initialised)
        .into()
    }

    fn on_helo(session: wit::Session, name: String) -> wit::Verdict {
        let session = Session::from(session);
        with_policy(Stage::Helo, |p: &E::Policy| {
            p.on_helo(&context(), &session, &name)
        })
        .unwrap_or_else(not_initialised)
        .into()
    }

    fn on_mail_from(
        session: wit::Session,
        sender: String,
        sender_params: Vec<wit::Param>,
    ) -> wit::Verdict {
        let session = Session::from(session);
        let sender_params = params(sender_params);
        with_policy(Stage::MailFrom, |p: &E::Policy| {
            p.on_mail_from(&context(), &session, &sender, &sender_params)
        })
        .unwrap_or_else(not_initialised)
        .into()
    }

    fn on_rcpt(
        session: wit::Session,
        envelope: wit::Envelope,
        recipient: String,
        rcpt_params: Vec<wit::Param>,
    ) -> wit::Verdict {
        let session = Session::from(session);
        let envelope = Envelope::from(envelope);
        let rcpt_params = params(rcpt_params);
        with_policy(Stage::Rcpt, |p: &E::Policy| {
            p.on_rcpt(&context(), &session, &envelope, &recipient, &rcpt_params)
        })
        .unwrap_or_else(not_initialised)
        .into()
    }

    fn on_data(
        session: wit::Session,
        envelope: wit::Envelope,
        message: &HostMessage,
    ) -> wit::DataResult {
        let session = Session::from(session);
        let envelope = Envelope::from(envelope);
        let message = Message::new(message);
        with_policy(Stage::Data, |p: &E::Policy| {
            p.on_data(&context(), &session, &envelope, &message)
        })
        .unwrap_or_else(|| DataResult::new(not_initialised()))
        .into()
    }

    fn on_route(envelope: wit::Envelope, recipient: String) -> wit::Route {
        let envelope = Envelope::from(envelope);
        // A route has no "try later"; without a policy, "no opinion" lets
        // the next policy or the gateway's domain match decide (and the
        // error is logged).
        with_policy(Stage::Route, |p: &E::Policy| {
            p.on_route(&context(), &envelope, &recipient)
        })
        .unwrap_or(Route::Default)
        .into()
    }
}
