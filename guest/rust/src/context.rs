//! Host capabilities as a value: [`Context`] is handed to every hook. In a
//! component it calls the host's imports (log, clock, metrics, kv, dns);
//! in a native test it is backed by a `MockHost`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(target_arch = "wasm32")]
type Backend = crate::wasm::HostImports;
#[cfg(not(target_arch = "wasm32"))]
type Backend = crate::mock::MockHost;

/// The capabilities, as implemented by the real host (wasm32) and by
/// `MockHost` (natively).
pub(crate) trait HostApi {
    fn log(&self, level: Level, message: &str);
    fn now(&self) -> Result<Timestamp, HostError>;
    fn counter_add(&self, name: &str, delta: u32) -> Result<(), HostError>;
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError>;
    fn kv_set(&self, key: &str, value: &[u8], ttl_seconds: u32) -> Result<(), HostError>;
    fn kv_incr(&self, key: &str, delta: i32, ttl_seconds: u32) -> Result<i32, HostError>;
    fn kv_delete(&self, key: &str) -> Result<(), HostError>;
    fn dns_a(&self, name: &str) -> Result<Vec<String>, HostError>;
    fn dns_aaaa(&self, name: &str) -> Result<Vec<String>, HostError>;
    fn dns_mx(&self, name: &str) -> Result<Vec<Mx>, HostError>;
    fn dns_txt(&self, name: &str) -> Result<Vec<String>, HostError>;
    fn dns_ptr(&self, ip: &str) -> Result<Vec<String>, HostError>;
}

/// Why a host call failed (WIT `host-error`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostError {
    /// The capability was not granted to this policy in the gateway config
    /// (`capabilities = [...]`).
    AccessDenied,
    /// The name or argument is not valid (e.g. a malformed domain, an empty
    /// key, a value over 64 KiB).
    InvalidArgument(String),
    /// The lookup or operation failed temporarily (DNS SERVFAIL or timeout,
    /// store unavailable); retrying later may succeed. A policy usually
    /// answers with a tempfail verdict.
    Temporary(String),
}

impl HostError {
    /// Whether retrying later may succeed.
    #[must_use]
    pub fn is_temporary(&self) -> bool {
        matches!(self, HostError::Temporary(_))
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::AccessDenied => f.write_str("access denied: capability not granted"),
            HostError::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            HostError::Temporary(why) => write!(f, "temporary failure: {why}"),
        }
    }
}

impl std::error::Error for HostError {}

/// Severity of a log line (WIT `level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the policy handled.
    Warn,
    /// Something failed.
    Error,
}

/// A point in wall-clock time (WIT `timestamp`): whole seconds since the
/// Unix epoch and milliseconds within the second.
///
/// ```
/// use sluice_guest::Timestamp;
/// let t = Timestamp::from_unix_millis(1_700_000_000_250);
/// assert_eq!((t.seconds, t.millis), (1_700_000_000, 250));
/// assert_eq!(t.unix_millis(), 1_700_000_000_250);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch (valid until 2106).
    pub seconds: u32,
    /// Milliseconds within the second, 0 to 999.
    pub millis: u16,
}

impl Timestamp {
    /// This many whole seconds since the Unix epoch.
    #[must_use]
    pub fn from_unix_seconds(seconds: u32) -> Self {
        Timestamp { seconds, millis: 0 }
    }

    /// This many milliseconds since the Unix epoch (saturating at the end
    /// of 2106).
    #[must_use]
    pub fn from_unix_millis(millis: u64) -> Self {
        match u32::try_from(millis / 1000) {
            Ok(seconds) => Timestamp {
                seconds,
                // Below 1000, so it fits.
                millis: (millis % 1000) as u16,
            },
            Err(_) => Timestamp {
                seconds: u32::MAX,
                millis: 999,
            },
        }
    }

    /// Milliseconds since the Unix epoch (millis above 999, which a correct
    /// host never sends, count as 999).
    #[must_use]
    pub fn unix_millis(self) -> u64 {
        u64::from(self.seconds) * 1000 + u64::from(self.millis.min(999))
    }

    /// As a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_millis())
    }
}

/// One MX record from [`Context::dns_mx`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mx {
    /// Preference: lower is tried first.
    pub preference: u16,
    /// The mail exchanger's host name; "." for the null MX (RFC 7505).
    pub exchange: String,
}

impl Mx {
    /// Whether this is the null MX ("this domain accepts no mail").
    #[must_use]
    pub fn is_null(&self) -> bool {
        self.exchange == "." || self.exchange.is_empty()
    }
}

/// The host's capabilities, handed to every hook.
///
/// Each capability must be granted to the policy in the gateway config
/// (`capabilities = ["clock", "metrics", "kv", "dns"]`); without it a call
/// returns [`HostError::AccessDenied`]. Logging is always allowed.
///
/// In a component a `Context` calls the host; in native tests build one
/// from a `MockHost`:
///
/// ```
/// # #[cfg(not(target_arch = "wasm32"))] {
/// use sluice_guest::{HostError, MockHost};
/// let host = MockHost::new().grant_all().dns_a("2.0.0.127.zen.example", ["127.0.0.2"]);
/// let ctx = host.context();
/// assert_eq!(ctx.dns_a("2.0.0.127.zen.example"), Ok(vec!["127.0.0.2".to_string()]));
/// assert_eq!(ctx.kv_incr("hits", 1, 60), Ok(1));
///
/// let ctx = MockHost::new().context(); // nothing granted
/// assert_eq!(ctx.kv_get("k"), Err(HostError::AccessDenied));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Context {
    backend: Backend,
}

impl Context {
    pub(crate) fn new(backend: Backend) -> Self {
        Context { backend }
    }

    /// Log one line into the gateway's log, tagged with the policy, stage
    /// and session. The host bounds lines to 4 KiB and 100 per hook call.
    pub fn log(&self, level: Level, message: &str) {
        HostApi::log(&self.backend, level, message);
    }

    /// [`Context::log`] at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// [`Context::log`] at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// [`Context::log`] at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// [`Context::log`] at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    /// The current time. Capability "clock".
    pub fn now(&self) -> Result<Timestamp, HostError> {
        HostApi::now(&self.backend)
    }

    /// Add `delta` to the counter `name` (1 to 64 of `[a-z0-9_]`; the host
    /// prefixes it with the policy name). Capability "metrics".
    pub fn counter_add(&self, name: &str, delta: u32) -> Result<(), HostError> {
        HostApi::counter_add(&self.backend, name, delta)
    }

    /// The value of `key`, if set and not expired. Capability "kv".
    ///
    /// Keys are 1 to 512 octets and namespaced per policy by the host;
    /// state is shared by all sessions and versions of the policy.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        HostApi::kv_get(&self.backend, key)
    }

    /// Set `key` to `value` (at most 64 KiB), expiring after `ttl_seconds`
    /// (0: never). Capability "kv".
    pub fn kv_set(&self, key: &str, value: &[u8], ttl_seconds: u32) -> Result<(), HostError> {
        HostApi::kv_set(&self.backend, key, value, ttl_seconds)
    }

    /// Atomically add `delta` to the counter at `key` (absent or expired
    /// counts as 0) and return the new value, saturating at the `i32`
    /// bounds. The expiry is set when the key is created and kept on later
    /// increments, so a counter covers one window. A key holding a value
    /// that is not a counter gives [`HostError::InvalidArgument`].
    /// Capability "kv".
    pub fn kv_incr(&self, key: &str, delta: i32, ttl_seconds: u32) -> Result<i32, HostError> {
        HostApi::kv_incr(&self.backend, key, delta, ttl_seconds)
    }

    /// Remove `key` (no error when absent). Capability "kv".
    pub fn kv_delete(&self, key: &str) -> Result<(), HostError> {
        HostApi::kv_delete(&self.backend, key)
    }

    /// IPv4 addresses of `name`, textual; empty when the name does not
    /// exist or has none. Capability "dns".
    pub fn dns_a(&self, name: &str) -> Result<Vec<String>, HostError> {
        HostApi::dns_a(&self.backend, name)
    }

    /// IPv6 addresses of `name`, textual. Capability "dns".
    pub fn dns_aaaa(&self, name: &str) -> Result<Vec<String>, HostError> {
        HostApi::dns_aaaa(&self.backend, name)
    }

    /// MX records of `name`, in the order the host gives them (sort by
    /// preference if it matters). Capability "dns".
    pub fn dns_mx(&self, name: &str) -> Result<Vec<Mx>, HostError> {
        HostApi::dns_mx(&self.backend, name)
    }

    /// TXT records of `name`, each the concatenation of its strings.
    /// Capability "dns".
    pub fn dns_txt(&self, name: &str) -> Result<Vec<String>, HostError> {
        HostApi::dns_txt(&self.backend, name)
    }

    /// Names of the address `ip` (reverse DNS). Capability "dns".
    pub fn dns_ptr(&self, ip: &str) -> Result<Vec<String>, HostError> {
        HostApi::dns_ptr(&self.backend, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(Timestamp::from_unix_seconds(5).unix_millis(), 5000);
        assert_eq!(
            Timestamp::from_unix_millis(u64::MAX),
            Timestamp {
                seconds: u32::MAX,
                millis: 999
            }
        );
        let odd = Timestamp {
            seconds: 1,
            millis: 5000,
        };
        assert_eq!(odd.unix_millis(), 1999);
        assert_eq!(
            Timestamp::from_unix_seconds(1)
                .to_system_time()
                .duration_since(UNIX_EPOCH)
                .ok(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn errors() {
        assert!(HostError::Temporary("x".into()).is_temporary());
        assert!(!HostError::AccessDenied.is_temporary());
        assert_eq!(
            HostError::InvalidArgument("empty key".into()).to_string(),
            "invalid argument: empty key"
        );
        assert!(
            Mx {
                preference: 0,
                exchange: ".".into()
            }
            .is_null()
        );
    }
}
