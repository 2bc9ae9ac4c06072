//! The [`Policy`] trait: what a policy author implements.

use crate::config::Config;
use crate::context::Context;
use crate::message::Message;
use crate::types::{DataResult, Envelope, Param, Route, Session, Stage, Verdict};

/// A Sluice policy.
///
/// Implement `name`, `stages`, `init` and the hooks of the stages you
/// list; every hook defaults to "no opinion" ([`Verdict::Continue`],
/// [`DataResult::continue_`], [`Route::Default`]). Then export the type
/// with [`export_policy!`](crate::export_policy).
///
/// **The host calls only the hooks of the stages that [`Policy::stages`]
/// lists**: a hook you implement but do not list is never called.
///
/// # Lifecycle
///
/// By default the host makes a fresh instance of the component for each
/// SMTP session and calls `init` with the policy's config before any hook,
/// so the value `init` returns lives for one session: per-session state can
/// live in it (behind `Cell`/`RefCell`, since hooks take `&self`). State
/// shared between sessions goes through the kv capability
/// ([`Context::kv_get`] and friends). An operator may set
/// `reuse_instances = true` for a policy that keeps no per-session state:
/// then one instance, and its `init` value, serves many sessions.
///
/// # Example
///
/// ```
/// use sluice_guest::{Config, Context, Policy, Session, Stage, Verdict};
///
/// pub struct Dnsbl {
///     zone: String,
/// }
///
/// impl Policy for Dnsbl {
///     fn name() -> &'static str {
///         "dnsbl"
///     }
///
///     fn stages() -> &'static [Stage] {
///         &[Stage::Connect]
///     }
///
///     fn init(config: &Config) -> Result<Self, String> {
///         config.check_keys(&["zone"])?;
///         let zone = config.str("zone")?.unwrap_or("zen.example").to_string();
///         Ok(Dnsbl { zone })
///     }
///
///     fn on_connect(&self, ctx: &Context, session: &Session) -> Verdict {
///         let Some(std::net::IpAddr::V4(ip)) = session.ip() else {
///             return Verdict::Continue;
///         };
///         let [a, b, c, d] = ip.octets();
///         match ctx.dns_a(&format!("{d}.{c}.{b}.{a}.{}", self.zone)) {
///             Ok(answers) if !answers.is_empty() => {
///                 Verdict::reject(554, "5.7.1", format!("{ip} is listed at {}", self.zone))
///             }
///             Ok(_) => Verdict::Continue,
///             Err(e) if e.is_temporary() => Verdict::tempfail(451, "4.4.3", "DNSBL lookup failed"),
///             Err(_) => Verdict::Continue,
///         }
///     }
/// }
///
/// sluice_guest::export_policy!(Dnsbl);
/// # fn main() {}
/// ```
pub trait Policy: Sized + 'static {
    /// Short name, e.g. "access"; the host tags logs and metrics with it.
    fn name() -> &'static str;

    /// The policy's own version. `None` (the default) means the version of
    /// the crate that calls [`export_policy!`](crate::export_policy)
    /// (its `CARGO_PKG_VERSION`).
    fn version() -> Option<&'static str> {
        None
    }

    /// The stages this policy handles; the host calls only their hooks.
    fn stages() -> &'static [Stage];

    /// The stages this policy needs with the config it was built from: by
    /// default all of [`stages`](Self::stages). The host asks once per
    /// loaded version, after `init`, and then calls only these hooks, so a
    /// policy can leave out the stages its config makes no-ops (an access
    /// list with only client networks needs no HELO, MAIL or RCPT call).
    /// Stages not in [`stages`](Self::stages) are ignored.
    fn configured_stages(&self) -> Vec<Stage> {
        Self::stages().to_vec()
    }

    /// Build the policy from its config (the `[policy.config]` table of the
    /// gateway config; empty when absent). An `Err` refuses the policy at
    /// start-up or reload with this text; a [`ConfigError`](crate::ConfigError)
    /// converts into it with `?`.
    fn init(config: &Config) -> Result<Self, String>;

    /// A client connected.
    fn on_connect(&self, ctx: &Context, session: &Session) -> Verdict {
        let _ = (ctx, session);
        Verdict::Continue
    }

    /// EHLO or HELO; `name` is also in `session.helo`.
    fn on_helo(&self, ctx: &Context, session: &Session, name: &str) -> Verdict {
        let _ = (ctx, session, name);
        Verdict::Continue
    }

    /// MAIL FROM. `sender` is empty for the null sender `<>`.
    fn on_mail_from(
        &self,
        ctx: &Context,
        session: &Session,
        sender: &str,
        params: &[Param],
    ) -> Verdict {
        let _ = (ctx, session, sender, params);
        Verdict::Continue
    }

    /// RCPT TO for one recipient; `envelope.recipients` holds those accepted
    /// before it.
    fn on_rcpt(
        &self,
        ctx: &Context,
        session: &Session,
        envelope: &Envelope,
        recipient: &str,
        params: &[Param],
    ) -> Verdict {
        let _ = (ctx, session, envelope, recipient, params);
        Verdict::Continue
    }

    /// The whole message has arrived (before the reply to the final dot).
    fn on_data(
        &self,
        ctx: &Context,
        session: &Session,
        envelope: &Envelope,
        message: &Message<'_>,
    ) -> DataResult {
        let _ = (ctx, session, envelope, message);
        DataResult::continue_()
    }

    /// The next hop of one recipient, asked by the queue before delivery
    /// (there is no SMTP session at that point).
    fn on_route(&self, ctx: &Context, envelope: &Envelope, recipient: &str) -> Route {
        let _ = (ctx, envelope, recipient);
        Route::Default
    }
}
