//! The host side of `sluice:policy/clock` (the `clock` capability).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::policy::bindings::sluice::policy::{clock, errors};

use errors::HostError;

use super::*;

impl clock::Host for HostState {
    fn now(&mut self) -> Result<clock::Timestamp, HostError> {
        if !self.grants.clock {
            return Err(HostError::AccessDenied);
        }
        self.through_tap("clock.now", Vec::new, |_| {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok(clock::Timestamp {
                seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                millis: d.subsec_millis() as u16,
            })
        })
    }
}
