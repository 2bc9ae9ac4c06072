//! A tiny authoritative DNS server for tests: UDP and TCP on one loopback
//! port, answering from a [`Zone`] built in code.
//!
//! - A name in [`Zone::servfail`] gets SERVFAIL for every type.
//! - A name in [`Zone::nxdomain`], or one that is not in the zone at all,
//!   gets NXDOMAIN (with an SOA in the authority section).
//! - A name that exists (it owns records, or a name below it does) but has
//!   none of the asked type gets NODATA: NOERROR, no answers, an SOA.
//! - A UDP answer larger than the client's payload size (512 bytes without
//!   EDNS) is sent truncated, so the client retries over TCP.
//!
//! The server runs on std threads, so it works from sync and async tests
//! alike, and stops (bounded by its poll interval) when dropped.

// A shared helper: not every test uses every builder method.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// TTL of every record, and the negative-caching time in the SOA.
const TTL: u32 = 5;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(2);
/// TCP connections served at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 16;
/// Attempts at finding a port free for both UDP and TCP.
const BIND_ATTEMPTS: usize = 20;

/// What the server knows. Names are stored in lower case without the
/// trailing dot; the builder methods normalise them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Zone {
    /// MX records: domain → (preference, exchange); exchange `"."` is the
    /// null MX (RFC 7505).
    pub(crate) mx: HashMap<String, Vec<(u16, String)>>,
    /// A and AAAA records: host → addresses.
    pub(crate) a: HashMap<String, Vec<IpAddr>>,
    /// TXT records: name → texts (one character-string each).
    pub(crate) txt: HashMap<String, Vec<String>>,
    /// PTR records: address → host names.
    pub(crate) ptr: HashMap<IpAddr, Vec<String>>,
    /// Names answered with NXDOMAIN whatever else is listed.
    pub(crate) nxdomain: HashSet<String>,
    /// Names answered with SERVFAIL.
    pub(crate) servfail: HashSet<String>,
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Add an MX record.
    pub(crate) fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        checked_name(exchange);
        self.mx
            .entry(key(domain))
            .or_default()
            .push((preference, exchange.to_string()));
        self
    }

    /// Make `domain` a null MX domain (RFC 7505: `0 .`).
    pub(crate) fn null_mx(self, domain: &str) -> Self {
        self.mx(domain, 0, ".")
    }

    /// Add an A or AAAA record, by the address family.
    pub(crate) fn a(mut self, host: &str, ip: impl Into<IpAddr>) -> Self {
        self.a.entry(key(host)).or_default().push(ip.into());
        self
    }

    /// Add a TXT record of one character-string (at most 255 bytes).
    pub(crate) fn txt(mut self, name: &str, text: &str) -> Self {
        assert!(text.len() <= 255, "one TXT string holds at most 255 bytes");
        self.txt
            .entry(key(name))
            .or_default()
            .push(text.to_string());
        self
    }

    /// Add a PTR record for `ip`.
    pub(crate) fn ptr(mut self, ip: impl Into<IpAddr>, host: &str) -> Self {
        checked_name(host);
        self.ptr
            .entry(ip.into())
            .or_default()
            .push(host.to_string());
        self
    }

    /// Answer NXDOMAIN for `name`.
    pub(crate) fn nxdomain(mut self, name: &str) -> Self {
        self.nxdomain.insert(key(name));
        self
    }

    /// Answer SERVFAIL for `name`.
    pub(crate) fn servfail(mut self, name: &str) -> Self {
        self.servfail.insert(key(name));
        self
    }

    /// Whether `name` (normalised) owns records or has names below it.
    fn exists(&self, name: &str) -> bool {
        let below = format!(".{name}");
        let mut owners = self
            .mx
            .keys()
            .chain(self.a.keys())
            .chain(self.txt.keys())
            .cloned()
            .chain(self.ptr.keys().map(|ip| reverse_name(*ip)));
        owners.any(|owner| owner == name || owner.ends_with(&below))
    }

    /// The records of `rtype` owned by `name` (normalised), named `owner`.
    fn records(&self, name: &str, owner: &Name, rtype: RecordType) -> Vec<Record> {
        let data: Vec<RData> = match rtype {
            RecordType::MX => self
                .mx
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|(pref, exchange)| {
                    Some(RData::MX(MX::new(*pref, parse_name(exchange)?)))
                })
                .collect(),
            RecordType::A | RecordType::AAAA => self
                .a
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|ip| match (ip, rtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .collect(),
            RecordType::TXT => self
                .txt
                .get(name)
                .into_iter()
                .flatten()
                .map(|text| RData::TXT(TXT::new(vec![text.clone()])))
                .collect(),
            RecordType::PTR => self
                .ptr
                .iter()
                .filter(|(ip, _)| reverse_name(**ip) == name)
                .flat_map(|(_, hosts)| hosts)
                .filter_map(|host| Some(RData::PTR(PTR(parse_name(host)?))))
                .collect(),
            _ => Vec::new(),
        };
        data.into_iter()
            .map(|rdata| Record::from_rdata(owner.clone(), TTL, rdata))
            .collect()
    }

    /// The response to one request.
    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        if request.edns.is_some() {
            response.set_edns(Edns::new());
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        response.add_query(query.clone());
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response;
        }
        let name = key(&query.name.to_ascii());
        if self.servfail.contains(&name) {
            response.metadata.response_code = ResponseCode::ServFail;
            return response;
        }
        if self.nxdomain.contains(&name) || !self.exists(&name) {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa());
            return response;
        }
        let answers = self.records(&name, &query.name, query.query_type);
        if answers.is_empty() {
            response.add_authority(soa());
        } else {
            response.add_answers(answers);
        }
        response
    }
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub(crate) struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serve `zone` on `127.0.0.1`, UDP and TCP on the same free port.
    pub(crate) fn start(zone: Zone) -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("local address of the UDP socket");
        udp.set_read_timeout(Some(POLL)).expect("UDP read timeout");
        tcp.set_nonblocking(true)
            .expect("non-blocking TCP listener");
        let zone = Arc::new(zone);
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            zone,
            stop: stop.clone(),
            queries: queries.clone(),
        };
        let udp_thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("dnsd-udp".into())
                .spawn(move || serve_udp(&udp, &shared))
                .expect("spawn the UDP thread")
        };
        let tcp_thread = thread::Builder::new()
            .name("dnsd-tcp".into())
            .spawn(move || serve_tcp(&tcp, &shared))
            .expect("spawn the TCP thread");
        DnsServer {
            addr,
            stop,
            queries,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// The address to use as a name server (`127.0.0.1:port`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests were answered so far (UDP and TCP).
    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the server threads share.
#[derive(Debug, Clone)]
struct Shared {
    zone: Arc<Zone>,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Decode a request and encode its answer; `None` for garbage or for a
    /// message that is not a query.
    fn respond(&self, request: &[u8]) -> Option<(Message, Vec<u8>)> {
        let request = Message::from_vec(request).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        self.queries.fetch_add(1, Ordering::SeqCst);
        let response = self.zone.answer(&request);
        let bytes = response.to_vec().ok()?;
        Some((request, bytes))
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket");
        let port = udp.local_addr().expect("UDP local address").port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP after {BIND_ATTEMPTS} attempts");
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stopped() {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        let Some((request, mut bytes)) = shared.respond(&buf[..len]) else {
            continue;
        };
        let limit = request
            .edns
            .as_ref()
            .map_or(512, |edns| usize::from(edns.max_payload().max(512)));
        if bytes.len() > limit {
            let Ok(truncated) = shared.zone.answer(&request).truncate().to_vec() else {
                continue;
            };
            bytes = truncated;
        }
        let _ = socket.send_to(&bytes, peer);
    }
}

fn serve_tcp(listener: &TcpListener, shared: &Shared) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        connections.retain(|c| !c.is_finished());
        match listener.accept() {
            Ok((stream, _)) => {
                if connections.len() >= MAX_TCP_CONNECTIONS {
                    continue; // dropping the stream closes it
                }
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("dnsd-tcp-conn".into())
                    .spawn(move || serve_tcp_connection(stream, &shared));
                if let Ok(handle) = spawned {
                    connections.push(handle);
                }
            }
            Err(_) => thread::sleep(POLL),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Serve length-prefixed requests until EOF, an error, idleness or stop.
fn serve_tcp_connection(mut stream: TcpStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    loop {
        let mut len = [0u8; 2];
        if !read_full(&mut stream, &mut len, shared) {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !read_full(&mut stream, &mut request, shared) {
            return;
        }
        let Some((_, bytes)) = shared.respond(&request) else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        if stream.write_all(&len.to_be_bytes()).is_err() || stream.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// Fill `buf`, polling the stop flag; false on EOF, error, stop, or
/// [`TCP_IDLE`] without a byte.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], shared: &Shared) -> bool {
    let mut filled = 0;
    let mut deadline = Instant::now() + TCP_IDLE;
    while filled < buf.len() {
        if shared.stopped() || Instant::now() >= deadline {
            return false;
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return false,
            Ok(n) => {
                filled += n;
                deadline = Instant::now() + TCP_IDLE;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The SOA sent with NXDOMAIN and NODATA answers (owned by the root, so it
/// is in bailiwick for every name).
fn soa() -> Record {
    let soa = SOA::new(
        parse_name("ns.test").expect("a valid name"),
        parse_name("hostmaster.test").expect("a valid name"),
        1,
        3600,
        600,
        86400,
        TTL,
    );
    Record::from_rdata(Name::root(), TTL, RData::SOA(soa))
}

/// Lower case, without the trailing dot.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `in-addr.arpa` / `ip6.arpa` name of `ip`, normalised like [`key`].
fn reverse_name(ip: IpAddr) -> String {
    key(&Name::from(ip).to_ascii())
}

/// A fully qualified name; `"."` is the root.
fn parse_name(name: &str) -> Option<Name> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Some(Name::root());
    }
    let mut parsed = Name::from_ascii(trimmed).ok()?;
    parsed.set_fqdn(true);
    Some(parsed)
}

fn checked_name(name: &str) {
    assert!(parse_name(name).is_some(), "not a valid DNS name: {name:?}");
}
