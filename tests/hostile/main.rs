//! Hostile-load tests: the real binary under attack over loopback
//! (thousands of slow connections, header bombs, a full disk). A test
//! binary of their own, so that cargo runs them after the other
//! end-to-end tests, never beside them: an attack would slow the tests
//! that measure nothing but expect a responsive machine.

// The end-to-end harness and the test components, shared by path; this
// binary uses a part of them.
#[allow(dead_code)]
#[path = "../policy-guests/locate.rs"]
mod guests;
#[allow(dead_code, unused_imports)]
#[path = "../e2e/harness.rs"]
mod harness;

mod messages;
mod policy_instances;
mod slow_connections;
