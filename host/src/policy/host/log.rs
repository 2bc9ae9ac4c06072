//! The host side of `sluice:policy/log`: a guest's log lines, bounded in
//! count and length, cleaned of control characters.

use crate::policy::bindings::sluice::policy::log;

use super::*;

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        if self.logs >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return;
        }
        self.logs += 1;
        // Below the log level: nothing to clean or format.
        let enabled = match level {
            log::Level::Trace => tracing::enabled!(target: "sluice::policy", tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(target: "sluice::policy", tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(target: "sluice::policy", tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(target: "sluice::policy", tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(target: "sluice::policy", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let msg = clean(&message, MAX_LOG_LINE);
        let (policy, stage) = (&*self.policy, self.phase);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "sluice::policy", policy, %stage, "{msg}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "sluice::policy", policy, %stage, "{msg}")
            }
            log::Level::Info => tracing::info!(target: "sluice::policy", policy, %stage, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "sluice::policy", policy, %stage, "{msg}"),
            log::Level::Error => {
                tracing::error!(target: "sluice::policy", policy, %stage, "{msg}")
            }
        }
    }
}
