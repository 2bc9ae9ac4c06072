//! Host bindings generated from the contract in `wit/` (package
//! `sluice:policy`, world `policy-world`).
//!
//! Only `dns` imports are async (they wait for the resolver); the other
//! imports are plain functions. Message methods are `trappable` so a stale
//! resource handle (which wasmtime's own checks make impossible) would be
//! a trap rather than a panic. Every export is called with `call_async`,
//! so epoch deadlines can yield to tokio.
#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications
)]

pub use super::message::MessageResource;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy-world",
    imports: {
        "sluice:policy/dns": async,
        "sluice:policy/message": trappable,
    },
    exports: { default: async },
    with: { "sluice:policy/message.message": MessageResource },
});

pub(crate) use self::sluice::policy::types;

/// What one export of a policy returned, as the host takes it in.
pub(crate) enum Answer {
    Describe(types::Description),
    Init(Result<(), String>),
    Verdict(types::Verdict),
    Data(types::DataResult),
    Route(types::Route),
}
