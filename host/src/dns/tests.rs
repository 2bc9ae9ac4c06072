//! Tests of the resolver, static tables and MX selection.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

use super::dnsd;

// ---------------------------------------------------------------
// mx_targets over an in-memory fake
// ---------------------------------------------------------------

/// Answers from maps; anything unlisted is NXDOMAIN. Records the
/// address lookups made.
#[derive(Debug, Default)]
struct Fake {
    mx: HashMap<String, Result<Vec<Mx>, DnsError>>,
    ips: HashMap<String, Result<Vec<IpAddr>, DnsError>>,
    looked_up: Mutex<Vec<String>>,
}

impl Fake {
    fn mx(mut self, domain: &str, records: &[(u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|(preference, exchange)| Mx {
                preference: *preference,
                exchange: (*exchange).to_string(),
            })
            .collect();
        self.mx.insert(domain.to_string(), Ok(records));
        self
    }

    fn mx_err(mut self, domain: &str, err: DnsError) -> Self {
        self.mx.insert(domain.to_string(), Err(err));
        self
    }

    fn host(mut self, host: &str, addrs: &[&str]) -> Self {
        let addrs = addrs.iter().map(|a| a.parse().expect("an IP")).collect();
        self.ips.insert(host.to_string(), Ok(addrs));
        self
    }

    fn host_err(mut self, host: &str, err: DnsError) -> Self {
        self.ips.insert(host.to_string(), Err(err));
        self
    }

    fn looked_up(&self) -> Vec<String> {
        self.looked_up.lock().expect("not poisoned").clone()
    }
}

impl Resolver for Fake {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>> {
        let answer = self.mx.get(domain).cloned();
        Box::pin(async move { answer.unwrap_or(Err(DnsError::NxDomain)) })
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        self.looked_up
            .lock()
            .expect("not poisoned")
            .push(host.to_string());
        let answer = self.ips.get(host).cloned();
        Box::pin(async move { answer.unwrap_or(Err(DnsError::NxDomain)) })
    }

    fn txt<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async { Err(DnsError::NxDomain) })
    }

    fn ptr<'a>(&'a self, _ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async { Err(DnsError::NxDomain) })
    }
}

fn nobody(_: IpAddr) -> bool {
    false
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

fn hosts(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

fn temporary() -> DnsError {
    DnsError::Temporary("SERVFAIL".into())
}

async fn targets(resolver: &dyn Resolver, domain: &str) -> Result<Vec<Target>, MxError> {
    mx_targets(resolver, domain, &nobody).await
}

#[tokio::test]
async fn sorted_by_preference_with_addresses() {
    let fake = Fake::default()
        .mx(
            "example.test",
            &[
                (20, "b.example.test"),
                (10, "a.example.test"),
                (30, "c.example.test"),
            ],
        )
        .host("a.example.test", &["192.0.2.1", "2001:db8::1"])
        .host("b.example.test", &["192.0.2.2"])
        .host("c.example.test", &["192.0.2.3", "192.0.2.3"]);
    let got = targets(&fake, "example.test").await.expect("targets");
    assert_eq!(
        got,
        vec![
            Target {
                host: "a.example.test".into(),
                addrs: vec![ip("192.0.2.1"), ip("2001:db8::1")],
            },
            Target {
                host: "b.example.test".into(),
                addrs: vec![ip("192.0.2.2")],
            },
            Target {
                host: "c.example.test".into(),
                addrs: vec![ip("192.0.2.3")], // deduplicated
            },
        ]
    );
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    let fake = Fake::default()
        .mx(
            "example.test",
            &[(10, "a"), (10, "b"), (5, "first"), (20, "last")],
        )
        .host("a", &["192.0.2.1"])
        .host("b", &["192.0.2.2"])
        .host("first", &["192.0.2.3"])
        .host("last", &["192.0.2.4"]);
    let (mut a_first, mut b_first) = (0, 0);
    for _ in 0..200 {
        let got = targets(&fake, "example.test").await.expect("targets");
        let got = hosts(&got);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], "first");
        assert_eq!(got[3], "last");
        match got[1] {
            "a" => a_first += 1,
            "b" => b_first += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(a_first > 20 && b_first > 20, "a {a_first}, b {b_first}");
}

#[tokio::test]
async fn duplicate_exchanges_are_tried_once() {
    let fake = Fake::default()
        .mx("example.test", &[(20, "mx"), (10, "MX."), (30, "other")])
        .host("mx", &["192.0.2.1"])
        .host("other", &["192.0.2.2"]);
    let got = targets(&fake, "example.test").await.expect("targets");
    assert_eq!(hosts(&got), ["mx", "other"]);
}

#[tokio::test]
async fn names_are_normalised() {
    let fake = Fake::default()
        .mx("example.test", &[(10, "MX.Example.Test.")])
        .host("mx.example.test", &["192.0.2.1"]);
    let got = targets(&fake, "Example.TEST.").await.expect("targets");
    assert_eq!(hosts(&got), ["mx.example.test"]);
}

#[tokio::test]
async fn implicit_mx_uses_the_domain_itself() {
    for fake in [
        Fake::default().mx_err("example.test", DnsError::NoRecords),
        Fake::default().mx("example.test", &[]),
    ] {
        let fake = fake.host("example.test", &["192.0.2.9"]);
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(
            got,
            vec![Target {
                host: "example.test".into(),
                addrs: vec![ip("192.0.2.9")],
            }]
        );
    }
}

#[tokio::test]
async fn implicit_mx_without_addresses() {
    for (err, want) in [
        (
            DnsError::NxDomain,
            MxError::Bounce {
                status: Enhanced(5, 1, 2),
                text: String::new(),
            },
        ),
        (
            DnsError::NoRecords,
            MxError::Bounce {
                status: Enhanced(5, 1, 2),
                text: String::new(),
            },
        ),
        (
            temporary(),
            MxError::Defer {
                status: Enhanced(4, 4, 3),
                text: String::new(),
            },
        ),
    ] {
        let fake = Fake::default()
            .mx_err("example.test", DnsError::NoRecords)
            .host_err("example.test", err.clone());
        let got = targets(&fake, "example.test")
            .await
            .expect_err("no targets");
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&want),
            "{err:?}: {got:?}"
        );
        assert_eq!(got.status(), want.status(), "{err:?}: {got:?}");
    }
}

#[tokio::test]
async fn null_mx_bounces() {
    let fake = Fake::default()
        .mx("example.test", &[(0, "")])
        .host("example.test", &["192.0.2.1"]);
    let got = targets(&fake, "example.test").await.expect_err("null MX");
    assert!(
        matches!(
            got,
            MxError::Bounce {
                status: Enhanced(5, 1, 10),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(got.text().contains("does not accept mail"), "{got}");
    // The implicit MX is not consulted.
    assert!(fake.looked_up().is_empty());
}

#[tokio::test]
async fn null_mx_among_others_is_ignored() {
    let fake = Fake::default()
        .mx("example.test", &[(0, ""), (10, "mx.example.test")])
        .host("mx.example.test", &["192.0.2.1"]);
    let got = targets(&fake, "example.test").await.expect("targets");
    assert_eq!(hosts(&got), ["mx.example.test"]);
}

#[tokio::test]
async fn nxdomain_bounces_and_servfail_defers() {
    let fake = Fake::default()
        .mx_err("gone.test", DnsError::NxDomain)
        .mx_err("broken.test", temporary());
    let got = targets(&fake, "gone.test").await.expect_err("NXDOMAIN");
    assert!(
        matches!(
            got,
            MxError::Bounce {
                status: Enhanced(5, 1, 2),
                ..
            }
        ),
        "{got:?}"
    );
    let got = targets(&fake, "broken.test").await.expect_err("SERVFAIL");
    assert!(
        matches!(
            got,
            MxError::Defer {
                status: Enhanced(4, 4, 3),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(got.text().contains("SERVFAIL"), "{got}");
    // Unknown to the fake: NXDOMAIN too.
    let got = targets(&fake, "unknown.test").await.expect_err("NXDOMAIN");
    assert_eq!(got.status(), Enhanced(5, 1, 2));
}

#[tokio::test]
async fn failing_hosts_are_skipped() {
    let fake = Fake::default()
        .mx("example.test", &[(10, "down"), (20, "gone"), (30, "up")])
        .host_err("down", temporary())
        .host_err("gone", DnsError::NxDomain)
        .host("up", &["192.0.2.1"]);
    let got = targets(&fake, "example.test").await.expect("targets");
    assert_eq!(hosts(&got), ["up"]);
}

#[tokio::test]
async fn no_resolvable_host() {
    // Any temporary failure: try later.
    let fake = Fake::default()
        .mx("example.test", &[(10, "down"), (20, "gone")])
        .host_err("down", temporary())
        .host_err("gone", DnsError::NoRecords);
    let got = targets(&fake, "example.test").await.expect_err("none");
    assert!(
        matches!(
            got,
            MxError::Defer {
                status: Enhanced(4, 4, 3),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(got.text().contains("down"), "{got}");

    // All permanent: unable to route.
    let fake = Fake::default()
        .mx("example.test", &[(10, "gone"), (20, "empty")])
        .host_err("gone", DnsError::NxDomain)
        .host_err("empty", DnsError::NoRecords);
    let got = targets(&fake, "example.test").await.expect_err("none");
    assert!(
        matches!(
            got,
            MxError::Bounce {
                status: Enhanced(5, 4, 4),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(got.text().contains("gone, empty"), "{got}");
}

#[tokio::test]
async fn at_most_max_mx_hosts_are_resolved() {
    let names: Vec<String> = (0..MAX_MX_HOSTS + 5).map(|i| format!("mx{i}")).collect();
    let records: Vec<(u16, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (u16::try_from(i).expect("small"), name.as_str()))
        .collect();
    let mut fake = Fake::default().mx("example.test", &records);
    for name in &names {
        fake = fake.host(name, &["192.0.2.1"]);
    }
    let got = targets(&fake, "example.test").await.expect("targets");
    assert_eq!(got.len(), MAX_MX_HOSTS);
    assert_eq!(fake.looked_up().len(), MAX_MX_HOSTS);
}

#[tokio::test]
async fn mx_pointing_only_at_us_is_a_loop() {
    let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST);
    let fake = Fake::default()
        .mx("example.test", &[(10, "mx")])
        .host("mx", &["127.0.0.1"])
        .mx_err("implicit.test", DnsError::NoRecords)
        .host("implicit.test", &["127.0.0.1"]);
    for domain in ["example.test", "implicit.test"] {
        let got = mx_targets(&fake, domain, &is_self).await.expect_err("loop");
        assert!(
            matches!(
                got,
                MxError::Bounce {
                    status: Enhanced(5, 4, 6),
                    ..
                }
            ),
            "{domain}: {got:?}"
        );
    }
}

#[tokio::test]
async fn only_hosts_better_than_us_are_used() {
    let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST);
    let fake = Fake::default()
        .mx(
            "example.test",
            &[(5, "better"), (10, "peer"), (10, "us"), (20, "worse")],
        )
        .host("better", &["192.0.2.1"])
        .host("peer", &["192.0.2.2"])
        .host("us", &["192.0.2.3", "127.0.0.1"])
        .host("worse", &["192.0.2.4"]);
    for _ in 0..20 {
        let got = mx_targets(&fake, "example.test", &is_self)
            .await
            .expect("targets");
        assert_eq!(hosts(&got), ["better"]);
    }
    // Nothing after us is even looked up.
    assert!(!fake.looked_up().contains(&"worse".to_string()));

    // We are the best MX: nowhere to go.
    let fake = Fake::default()
        .mx("example.test", &[(10, "us"), (20, "worse")])
        .host("us", &["127.0.0.1"])
        .host("worse", &["192.0.2.4"]);
    let got = mx_targets(&fake, "example.test", &is_self)
        .await
        .expect_err("loop");
    assert_eq!(got.status(), Enhanced(5, 4, 6));

    // A better host that fails for now: try later, not a loop.
    let fake = Fake::default()
        .mx("example.test", &[(5, "better"), (10, "us")])
        .host_err("better", temporary())
        .host("us", &["127.0.0.1"]);
    let got = mx_targets(&fake, "example.test", &is_self)
        .await
        .expect_err("defer");
    assert_eq!(got.status(), Enhanced(4, 4, 3));
}

#[tokio::test]
async fn address_literals() {
    let fake = Fake::default();
    let got = targets(&fake, "[192.0.2.7]").await.expect("v4 literal");
    assert_eq!(
        got,
        vec![Target {
            host: "[192.0.2.7]".into(),
            addrs: vec![ip("192.0.2.7")],
        }]
    );
    let got = targets(&fake, "[IPv6:2001:DB8::7]")
        .await
        .expect("v6 literal");
    assert_eq!(got[0].addrs, vec![ip("2001:db8::7")]);
    for bad in [
        "[300.1.1.1]",
        "[2001:db8::7]",
        "[IPv6:1.2.3.4]",
        "[192.0.2.7",
    ] {
        let got = targets(&fake, bad).await.expect_err(bad);
        assert_eq!(got.status(), Enhanced(5, 1, 3), "{bad}");
    }
    let is_self = |ip: IpAddr| ip.is_loopback();
    let got = mx_targets(&fake, "[127.0.0.1]", &is_self)
        .await
        .expect_err("loop");
    assert_eq!(got.status(), Enhanced(5, 4, 6));
    assert!(fake.looked_up().is_empty());
}

#[test]
fn mx_error_text() {
    let bounce = MxError::Bounce {
        status: Enhanced(5, 1, 2),
        text: "domain x not found".into(),
    };
    assert_eq!(bounce.to_string(), "5.1.2 domain x not found");
}

#[test]
fn address_merging() {
    let v4 = || Ok(vec![ip("192.0.2.1")]);
    let v6 = || Ok(vec![ip("2001:db8::1")]);
    assert_eq!(
        merge_addresses(v4(), v6()),
        Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")])
    );
    assert_eq!(
        merge_addresses(v4(), Err(temporary())),
        Ok(vec![ip("192.0.2.1")])
    );
    assert_eq!(
        merge_addresses(Err(DnsError::NoRecords), v6()),
        Ok(vec![ip("2001:db8::1")])
    );
    assert_eq!(
        merge_addresses(Err(DnsError::NoRecords), Err(DnsError::NoRecords)),
        Err(DnsError::NoRecords)
    );
    assert_eq!(
        merge_addresses(Err(DnsError::NxDomain), Err(DnsError::NxDomain)),
        Err(DnsError::NxDomain)
    );
    assert_eq!(
        merge_addresses(Err(DnsError::NxDomain), Err(temporary())),
        Err(temporary())
    );
}

#[test]
fn random_below_stays_in_range() {
    let mut seen = [0usize; 3];
    for _ in 0..300 {
        seen[random_below(3)] += 1;
    }
    assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
    assert_eq!(random_below(1), 0);
}

// ---------------------------------------------------------------
// StaticResolver
// ---------------------------------------------------------------

fn static_config() -> DnsConfig {
    let mut mx = BTreeMap::new();
    mx.insert(
        "Example.Test".to_string(),
        vec![
            "MX1.example.test.".to_string(),
            "mx2.example.test".to_string(),
        ],
    );
    mx.insert("null.test".to_string(), vec![".".to_string()]);
    mx.insert("nomx.test".to_string(), vec![]);
    let mut a = BTreeMap::new();
    a.insert(
        "mx1.example.test".to_string(),
        vec![ip("127.0.0.1"), ip("::1")],
    );
    a.insert("empty.test".to_string(), vec![]);
    a.insert("nomx.test".to_string(), vec![ip("127.0.0.2")]);
    DnsConfig {
        mx,
        a,
        ..DnsConfig::default()
    }
}

#[tokio::test]
async fn static_only_answers() {
    let r = StaticResolver::only(&static_config());
    let want = vec![
        Mx {
            preference: 10,
            exchange: "mx1.example.test".into(),
        },
        Mx {
            preference: 20,
            exchange: "mx2.example.test".into(),
        },
    ];
    assert_eq!(r.mx("example.test").await, Ok(want.clone()));
    assert_eq!(r.mx("EXAMPLE.TEST.").await, Ok(want));
    assert_eq!(
        r.mx("null.test").await,
        Ok(vec![Mx {
            preference: 10,
            exchange: String::new(),
        }])
    );
    assert_eq!(r.mx("nomx.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.mx("mx1.example.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.mx("other.test").await, Err(DnsError::NxDomain));

    assert_eq!(
        r.ips("MX1.Example.Test.").await,
        Ok(vec![ip("127.0.0.1"), ip("::1")])
    );
    assert_eq!(r.ips("empty.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.ips("example.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.ips("mx2.example.test").await, Err(DnsError::NxDomain));
    assert_eq!(r.ips("192.0.2.5").await, Ok(vec![ip("192.0.2.5")]));
    assert_eq!(r.txt("example.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.txt("other.test").await, Err(DnsError::NxDomain));
    assert_eq!(r.ptr(ip("127.0.0.1")).await, Err(DnsError::NxDomain));

    // End to end: mx2 has no address, null.test refuses mail, nomx.test
    // falls back to its A record.
    let got = targets(&r, "example.test").await.expect("targets");
    assert_eq!(hosts(&got), ["mx1.example.test"]);
    let got = targets(&r, "null.test").await.expect_err("null MX");
    assert_eq!(got.status(), Enhanced(5, 1, 10));
    let got = targets(&r, "nomx.test").await.expect("implicit");
    assert_eq!(got[0].addrs, vec![ip("127.0.0.2")]);
}

#[tokio::test]
async fn static_falls_through_to_inner() {
    let inner = Fake::default()
        .mx("other.test", &[(5, "mx.other.test")])
        .mx("example.test", &[(5, "not.used")])
        .host("mx.other.test", &["192.0.2.8"]);
    let r = StaticResolver::new(&static_config(), Arc::new(inner));
    assert_eq!(
        r.mx("other.test").await,
        Ok(vec![Mx {
            preference: 5,
            exchange: "mx.other.test".into(),
        }])
    );
    assert_eq!(
        r.mx("example.test").await.expect("static")[0].preference,
        10
    );
    assert_eq!(r.ips("mx.other.test").await, Ok(vec![ip("192.0.2.8")]));
    assert_eq!(r.ips("mx1.example.test").await.expect("static").len(), 2);
    assert_eq!(r.ips("unknown.test").await, Err(DnsError::NxDomain));
    assert_eq!(r.txt("x.test").await, Err(DnsError::NxDomain));
}

// ---------------------------------------------------------------
// HickoryResolver against a real server on loopback
// ---------------------------------------------------------------

/// Every network test is bounded by this.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

fn zone() -> dnsd::Zone {
    let mut zone = dnsd::Zone::new()
        .mx("example.test", 10, "MX1.example.test")
        .mx("example.test", 20, "mx2.example.test.")
        .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 1))
        .a("mx1.example.test", "::1".parse::<IpAddr>().expect("v6"))
        .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .a("nomx.test", Ipv4Addr::new(127, 0, 0, 3))
        .null_mx("null.test")
        .nxdomain("nx.test")
        .servfail("fail.test")
        .mx("halfbroken.test", 10, "fail.test")
        .mx("halfbroken.test", 20, "mx2.example.test")
        .txt("_policy.example.test", "v=spf1 -all")
        .ptr(Ipv4Addr::new(192, 0, 2, 25), "MX1.example.test");
    // More than fits a UDP answer: hickory must retry over TCP.
    for i in 1..=120u8 {
        zone = zone.a("big.test", Ipv4Addr::new(10, 0, 0, i));
    }
    zone
}

fn hickory(servers: Vec<SocketAddr>, timeout: Duration) -> HickoryResolver {
    HickoryResolver::from_config(&DnsConfig {
        nameservers: servers,
        timeout,
        ..DnsConfig::default()
    })
    .expect("resolver")
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("the test finished in time")
}

#[tokio::test]
async fn hickory_classifies_answers() {
    let server = dnsd::DnsServer::start(zone());
    let r = hickory(vec![server.addr()], Duration::from_secs(2));
    bounded(async {
        assert_eq!(
            r.mx("Example.Test").await,
            Ok(vec![
                Mx {
                    preference: 10,
                    exchange: "mx1.example.test".into(),
                },
                Mx {
                    preference: 20,
                    exchange: "mx2.example.test".into(),
                },
            ])
        );
        assert_eq!(
            r.ips("mx1.example.test.").await,
            Ok(vec![ip("127.0.0.1"), ip("::1")])
        );
        // A only: AAAA is NODATA, merged away.
        assert_eq!(r.ips("mx2.example.test").await, Ok(vec![ip("127.0.0.2")]));
        assert_eq!(r.ips("192.0.2.1").await, Ok(vec![ip("192.0.2.1")]));

        assert_eq!(r.mx("nx.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.ips("nx.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.mx("unknown.test").await, Err(DnsError::NxDomain));
        assert!(matches!(
            r.mx("fail.test").await,
            Err(DnsError::Temporary(_))
        ));
        assert!(matches!(
            r.ips("fail.test").await,
            Err(DnsError::Temporary(_))
        ));
        assert_eq!(r.mx("nomx.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.ips("null.test").await, Err(DnsError::NoRecords));
        // An empty non-terminal exists.
        assert_eq!(r.ips("example.test").await, Err(DnsError::NoRecords));
        assert_eq!(
            r.mx("null.test").await,
            Ok(vec![Mx {
                preference: 0,
                exchange: String::new(),
            }])
        );
        assert_eq!(
            r.txt("_policy.example.test").await,
            Ok(vec!["v=spf1 -all".to_string()])
        );
        assert_eq!(
            r.ptr(ip("192.0.2.25")).await,
            Ok(vec!["mx1.example.test".to_string()])
        );
        assert_eq!(r.ptr(ip("192.0.2.26")).await, Err(DnsError::NxDomain));
        // Not a valid name: it cannot exist.
        assert_eq!(r.mx(&"x".repeat(64)).await, Err(DnsError::NxDomain));
        assert_eq!(r.mx("").await, Err(DnsError::NxDomain));

        // Truncated over UDP, complete over TCP.
        let big = r.ips("big.test").await.expect("big answer");
        assert_eq!(big.len(), 120);
    })
    .await;
    assert!(server.queries() > 0);
}

#[tokio::test]
async fn hickory_mx_targets() {
    let server = dnsd::DnsServer::start(zone());
    let r = hickory(vec![server.addr()], Duration::from_secs(2));
    bounded(async {
        let got = targets(&r, "example.test").await.expect("targets");
        assert_eq!(
            got,
            vec![
                Target {
                    host: "mx1.example.test".into(),
                    addrs: vec![ip("127.0.0.1"), ip("::1")],
                },
                Target {
                    host: "mx2.example.test".into(),
                    addrs: vec![ip("127.0.0.2")],
                },
            ]
        );
        let got = targets(&r, "nomx.test").await.expect("implicit MX");
        assert_eq!(hosts(&got), ["nomx.test"]);
        let got = targets(&r, "halfbroken.test")
            .await
            .expect("one host works");
        assert_eq!(hosts(&got), ["mx2.example.test"]);
        let status = |r: Result<Vec<Target>, MxError>| r.expect_err("no targets").status();
        assert_eq!(status(targets(&r, "null.test").await), Enhanced(5, 1, 10));
        assert_eq!(status(targets(&r, "nx.test").await), Enhanced(5, 1, 2));
        assert_eq!(status(targets(&r, "fail.test").await), Enhanced(4, 4, 3));
        let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let got = mx_targets(&r, "example.test", &is_self).await.expect("mx1");
        assert_eq!(hosts(&got), ["mx1.example.test"]);
    })
    .await;
}

#[tokio::test]
async fn hickory_unanswered_queries_fail_temporarily_in_time() {
    // A socket that never answers (and no TCP listener on its port).
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let r = hickory(
        vec![silent.local_addr().expect("addr")],
        Duration::from_millis(300),
    );
    let start = Instant::now();
    let got = bounded(r.mx("example.test")).await;
    assert!(matches!(got, Err(DnsError::Temporary(_))), "{got:?}");
    let got = bounded(r.ips("mx.example.test")).await;
    assert!(matches!(got, Err(DnsError::Temporary(_))), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let got = bounded(targets(&r, "example.test"))
        .await
        .expect_err("defer");
    assert_eq!(got.status(), Enhanced(4, 4, 3));
}

#[tokio::test]
async fn from_config_layers_static_over_hickory() {
    let server = dnsd::DnsServer::start(zone());
    let mut cfg = static_config();
    cfg.nameservers = vec![server.addr()];
    cfg.timeout = Duration::from_secs(2);
    let r = from_config(&cfg).expect("resolver");
    bounded(async {
        // Static.
        assert_eq!(
            r.mx("example.test").await.expect("static")[0].preference,
            10
        );
        assert_eq!(r.ips("nomx.test").await, Ok(vec![ip("127.0.0.2")]));
        // From the server.
        assert_eq!(r.ips("mx2.example.test").await, Ok(vec![ip("127.0.0.2")]));
        assert_eq!(r.mx("nx.test").await, Err(DnsError::NxDomain));
    })
    .await;
    // Without static answers, hickory alone.
    cfg.mx.clear();
    cfg.a.clear();
    let r = from_config(&cfg).expect("resolver");
    let got = bounded(r.ips("nomx.test")).await;
    assert_eq!(got, Ok(vec![ip("127.0.0.3")]));
}
