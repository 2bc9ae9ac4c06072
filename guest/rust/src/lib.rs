//! `sluice-guest`: the Rust SDK for [Sluice](https://example.invalid/sluice)
//! policies.
//!
//! A policy is a WebAssembly component that the gateway calls at each SMTP
//! stage. With this crate a policy is one type implementing [`Policy`] and
//! one line, [`export_policy!`]; the WIT contract (`sluice:policy`), the
//! generated bindings and the conversions stay inside the SDK.
//!
//! ```
//! use sluice_guest::{Config, Context, Envelope, Policy, Session, Stage, Verdict};
//!
//! pub struct OnlyExample;
//!
//! impl Policy for OnlyExample {
//!     fn name() -> &'static str { "only-example" }
//!     fn stages() -> &'static [Stage] { &[Stage::Rcpt] }
//!     fn init(_config: &Config) -> Result<Self, String> { Ok(OnlyExample) }
//!
//!     fn on_rcpt(&self, _ctx: &Context, _s: &Session, _env: &Envelope,
//!                rcpt: &str, _params: &[sluice_guest::Param]) -> Verdict {
//!         if rcpt.ends_with("@example.com") {
//!             Verdict::Continue
//!         } else {
//!             Verdict::reject(550, "5.7.1", "we only take mail for example.com")
//!         }
//!     }
//! }
//!
//! sluice_guest::export_policy!(OnlyExample);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate
//! is a `cdylib`); test it natively with `MockHost` and `MockMessage`.
//! See the crate's README for the five-minute path.
//!
//! # Modules
//!
//! | module | role |
//! | --- | --- |
//! | `policy` | the [`Policy`] trait |
//! | `types` | the values hooks receive and return: [`Session`], [`Envelope`], [`Verdict`], [`DataResult`], [`Route`], … |
//! | `config` | [`Config`]: the policy's settings, with typed getters and serde |
//! | `context` | [`Context`]: the host capabilities (log, clock, metrics, kv, dns) |
//! | `message` | [`Message`]: the message at the data stage, read through bounded calls |
//! | `mock` (native only) | `MockHost`, `MockMessage`: fakes for unit tests |
//! | `wasm` (wasm32 only, hidden) | the bindings, conversions and the export glue |

// Tests may unwrap; the SDK itself must not panic on host data.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod config;
mod context;
mod message;
#[cfg(not(target_arch = "wasm32"))]
mod mock;
mod policy;
mod types;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use config::{Config, ConfigError};
pub use context::{Context, HostError, Level, Mx, Timestamp};
pub use message::{Message, RAW_MAX};
#[cfg(not(target_arch = "wasm32"))]
pub use mock::{Capability, MOCK_START, MockHost, MockMessage};
pub use policy::Policy;
pub use types::{
    Change, DataResult, Envelope, Header, Param, PartInfo, RelayHost, Reply, Route, Session, Stage,
    TlsInfo, TlsMode, Verdict,
};

/// Append `n` to `out` in decimal, as `write!(out, "{n}")` would.
///
/// For text a policy builds on every message (log lines, key-value keys):
/// `core::fmt` is several KiB of guest code, and a hook that pulls it in
/// brings it into the CPU's caches on every call, where this is a few
/// dozen instructions.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let (mut at, mut n) = (digits.len(), n);
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// This SDK's version.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The WIT package this SDK implements.
pub const WIT_PACKAGE: &str = "sluice:policy@0.1.0";

/// Export a [`Policy`] as the component's implementation of the
/// `sluice:policy/policy` interface.
///
/// Invoke it once, at the top level of the policy crate (a `cdylib`):
///
/// ```
/// # use sluice_guest::{Config, Policy, Stage};
/// # pub struct MyPolicy;
/// # impl Policy for MyPolicy {
/// #     fn name() -> &'static str { "mine" }
/// #     fn stages() -> &'static [Stage] { &[] }
/// #     fn init(_: &Config) -> Result<Self, String> { Ok(MyPolicy) }
/// # }
/// sluice_guest::export_policy!(MyPolicy);
/// # fn main() {}
/// ```
///
/// On wasm32 it exports `describe`, `init` and the hooks: `init` parses
/// the config and keeps the value [`Policy::init`] returns for the hooks of
/// this instance (a hook called before a successful `init` answers
/// `451 4.3.0 policy not initialised` instead of trapping); `describe`
/// reports [`Policy::version`] or, by default, the policy crate's
/// `CARGO_PKG_VERSION`. It also stamps the SDK and WIT versions into the
/// component as a custom section named `sluice-sdk`
/// (`"sluice-guest 0.1.0; wit sluice:policy@0.1.0"`).
///
/// Natively it only checks that the type implements [`Policy`], so the
/// policy crate builds and tests with plain `cargo test`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceExport;
            impl $crate::__private::Export for __SluiceExport {
                type Policy = $policy;
                const CRATE_VERSION: &'static str = ::core::env!("CARGO_PKG_VERSION");
            }
            type __SluiceAdapter = $crate::__private::Adapter<__SluiceExport>;
            $crate::__private::bindings::__sluice_export!(
                __SluiceAdapter with_types_in $crate::__private::bindings
            );
            // No `#[used]`: rustc keeps a `link_section` static anyway, and
            // `#[used]` would also copy it into the data segment.
            #[unsafe(link_section = "sluice-sdk")]
            static __SLUICE_SDK_STAMP: [u8; $crate::__private::STAMP_LEN] =
                $crate::__private::STAMP;
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = $crate::__private::assert_policy::<$policy>;
    };
}

/// Used by [`export_policy!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Adapter, Export, bindings};

    /// The text of the `sluice-sdk` custom section.
    pub const STAMP_TEXT: &str = concat!(
        "sluice-guest ",
        env!("CARGO_PKG_VERSION"),
        "; wit sluice:policy@0.1.0"
    );

    /// Its length.
    pub const STAMP_LEN: usize = STAMP_TEXT.len();

    /// Its octets, as the array a `link_section` static needs.
    pub const STAMP: [u8; STAMP_LEN] = {
        let text = STAMP_TEXT.as_bytes();
        let mut out = [0u8; STAMP_LEN];
        let mut i = 0;
        while i < STAMP_LEN {
            out[i] = text[i];
            i += 1;
        }
        out
    };

    /// Compiles only for a [`Policy`](crate::Policy).
    pub fn assert_policy<P: crate::Policy>() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_decimal_writes_what_format_writes() {
        for n in [0, 7, 10, 99, 472_222, u64::from(u32::MAX), u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn stamp_names_this_sdk_and_the_wit_package() {
        assert_eq!(
            __private::STAMP_TEXT,
            format!("sluice-guest {SDK_VERSION}; wit {WIT_PACKAGE}")
        );
        assert_eq!(&__private::STAMP[..], __private::STAMP_TEXT.as_bytes());
    }

    #[test]
    fn wit_package_matches_the_contract() {
        let package = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../wit/package.wit"
        ))
        .unwrap_or_default();
        assert!(
            package.contains(&format!("package {WIT_PACKAGE};")),
            "wit/package.wit does not declare {WIT_PACKAGE}"
        );
    }
}
