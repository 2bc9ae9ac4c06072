//! The host side of `sluice:policy/metrics`: a guest's own counters,
//! bounded in number.

use crate::policy::bindings::sluice::policy::{errors, metrics};

use errors::HostError;

use super::*;

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u32) -> Result<(), HostError> {
        if !self.grants.metrics {
            return Err(HostError::AccessDenied);
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(HostError::InvalidArgument(
                "a counter name is 1 to 64 of [a-z0-9_]".into(),
            ));
        }
        let args = || vec![name.clone().into(), delta.into()];
        self.through_tap("metrics.counter-add", args, |s| {
            s.counters.add(&name, delta)
        })
    }
}
