//! Planning one attempt at a message: which recipients are due, and the
//! route of each (the policy chain's route stage, else the router),
//! grouped so that each destination gets one transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Inner, backoff, log_outcome, record};
use crate::delivery::Outcome;
use crate::route::Route;
use crate::smtp::Enhanced;
use crate::spool::{Envelope, RcptState};

impl Inner {
    /// The due recipients grouped by route; recipients the route stage
    /// defers or rejects are recorded here. Also true when a recipient
    /// changed.
    pub(super) async fn plan_routes(
        self: &Arc<Self>,
        env: &mut Envelope,
        now: DateTime<Utc>,
        force: bool,
    ) -> (Vec<(Route, Vec<usize>)>, bool) {
        let mut changed = false;
        let due: Vec<usize> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| match r.state {
                RcptState::Pending => true,
                RcptState::Deferred => force || r.next_attempt.is_none_or(|t| t <= now),
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        // Group the due recipients by route: one transaction per destination.
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        let env_info = crate::policy::EnvelopeInfo {
            sender: env.sender.clone(),
            sender_params: Vec::new(),
            recipients: env.recipients.iter().map(|r| r.address.clone()).collect(),
        };
        for i in due {
            let chain = self
                .chain
                .current()
                .filter(|c| c.handles(crate::policy::Stage::Route));
            let route = match &chain {
                Some(chain) => match chain.route(&env_info, &env.recipients[i].address).await {
                    crate::policy::RouteDecision::Default => {
                        self.router.route(&env.recipients[i].address)
                    }
                    crate::policy::RouteDecision::Route(r) => r,
                    crate::policy::RouteDecision::Defer(reply) => {
                        let o = Outcome::defer(
                            reply.enhanced.unwrap_or(Enhanced(4, 3, 0)),
                            format!("x-policy; {}", reply.summary()),
                        );
                        let r = &mut env.recipients[i];
                        log_outcome(&env.id, &r.address, &o);
                        record(r, now, o, true);
                        r.next_attempt = Some(
                            now + chrono::Duration::from_std(backoff(
                                r.attempts,
                                self.cfg.queue.retry_initial,
                                self.cfg.queue.retry_max,
                            ))
                            .unwrap_or_default(),
                        );
                        changed = true;
                        continue;
                    }
                },
                None => self.router.route(&env.recipients[i].address),
            };
            match route {
                Route::Reject { status, text } => {
                    let o = Outcome::fail(status, text);
                    log_outcome(&env.id, &env.recipients[i].address, &o);
                    record(&mut env.recipients[i], now, o, false);
                    changed = true;
                }
                route => match groups.iter_mut().find(|(r, _)| *r == route) {
                    Some((_, v)) => v.push(i),
                    None => groups.push((route, vec![i])),
                },
            }
        }
        (groups, changed)
    }
}
