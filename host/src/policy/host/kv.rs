//! The host side of `sluice:policy/kv` (the `kv` capability): the
//! gateway's key-value store.

use std::time::Duration;

use crate::policy::bindings::sluice::policy::{errors, kv};
use crate::policy::kv::KvError;
use crate::policy::tap;

use errors::HostError;

use super::*;

fn kv_error(e: KvError) -> HostError {
    match e {
        KvError::InvalidArgument(m) => HostError::InvalidArgument(m),
        KvError::Full(_) => HostError::Temporary(e.to_string()),
    }
}

fn ttl(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        self.through_tap(
            "kv.get",
            || vec![key.clone().into()],
            |s| s.services.kv.get(&s.policy, &key).map_err(kv_error),
        )
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32) -> Result<(), HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        // Made here (`live` takes the value); only for a tapped session.
        let args = if self.tap.is_some() {
            vec![
                key.clone().into(),
                tap::bytes_value(&value),
                ttl_seconds.into(),
            ]
        } else {
            Vec::new()
        };
        self.through_tap(
            "kv.set",
            move || args,
            |s| {
                s.services
                    .kv
                    .set(&s.policy, &key, value, ttl(ttl_seconds))
                    .map_err(kv_error)
            },
        )
    }

    fn incr(&mut self, key: String, delta: i32, ttl_seconds: u32) -> Result<i32, HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        let args = || vec![key.clone().into(), delta.into(), ttl_seconds.into()];
        self.through_tap("kv.incr", args, |s| {
            s.services
                .kv
                .incr(&s.policy, &key, delta, ttl(ttl_seconds))
                .map_err(kv_error)
        })
    }

    fn delete(&mut self, key: String) -> Result<(), HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        self.through_tap(
            "kv.delete",
            || vec![key.clone().into()],
            |s| s.services.kv.delete(&s.policy, &key).map_err(kv_error),
        )
    }
}
