//! The security review's findings, each attacked over loopback against the
//! real binary. Every test is named after its finding (`finding_NN_…`)
//! and failed on the code before its fix.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{REPLY_TIMEOUT, Reply, Sandbox, Server, SmtpConn};

/// A config with one PROXY-protocol listener on `address` that trusts
/// `trusted`; 127.0.0.0/8 may relay; the queue does not deliver.
fn proxy_config(sb: &Sandbox, address: &str, trusted: &str) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]
relay_networks = ["127.0.0.0/8", "::1/128"]

[[listener]]
address = "{address}"
proxy_protocol = true
trusted_proxies = ["{trusted}"]

[queue]
deliver = false
"#,
        data = sb.data_dir().display(),
    )
}

/// 127.0.0.1 and the port of listener `i` (which may be bound to `[::]`).
fn v4_addr(server: &Server, i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.addr(i).port()))
}

/// Read replies until one answers EHLO (multi-line 250), at most `n`.
fn read_until_ehlo(c: &mut SmtpConn, n: usize) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::new();
    for _ in 0..n {
        let r = c.read_reply(REPLY_TIMEOUT).map_err(|e| e.to_string())?;
        let done = r.code == 250 && r.lines.len() > 1;
        replies.push(r);
        if done {
            return Ok(replies);
        }
    }
    Err(format!("no EHLO reply: {replies:?}"))
}

/// Send `header` then try to relay to a foreign domain; the RCPT reply
/// (or what went wrong before it).
fn try_relay_after(addr: SocketAddr, header: &[u8]) -> Result<Reply, String> {
    let mut c = SmtpConn::connect(addr).map_err(|e| e.to_string())?;
    c.send(header).map_err(|e| e.to_string())?;
    c.send(b"EHLO relay-test.example\r\n")
        .map_err(|e| e.to_string())?;
    // The greeting, maybe a reply to a header taken as a command, EHLO.
    read_until_ehlo(&mut c, 3)?;
    c.send(b"MAIL FROM:<a@elsewhere.example>\r\n")
        .map_err(|e| e.to_string())?;
    let r = c.read_reply(REPLY_TIMEOUT).map_err(|e| e.to_string())?;
    if r.code != 250 {
        return Err(format!("MAIL: {r:?}"));
    }
    c.send(b"RCPT TO:<x@external.test>\r\n")
        .map_err(|e| e.to_string())?;
    c.read_reply(REPLY_TIMEOUT).map_err(|e| e.to_string())
}

/// Finding 1: an IPv4 proxy reaching a dual-stack `[::]` listener is seen
/// as `::ffff:127.0.0.1`; the trusted-proxy check used that raw address,
/// refused to read the header, and served the session as the proxy itself
/// — which is in `relay_networks`, so the forged client could relay.
#[test]
fn finding_01_proxy_on_dual_stack_listener_grants_no_relay() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&proxy_config(&sb, "[::]:0", "127.0.0.1/32"), 1);
    let got = try_relay_after(
        v4_addr(&server, 0),
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 25\r\n",
    );
    match got {
        Ok(r) => assert_eq!(
            r.code,
            554,
            "a client named by a trusted proxy on [::] must not relay: {r:?}\n{}",
            server.log_text()
        ),
        Err(e) => panic!("the trusted proxy's session failed: {e}"),
    }
}

/// Finding 1: `PROXY UNKNOWN` and v2 `LOCAL` name no client; the session
/// went on as the proxy's own address with its relay rights.
#[test]
fn finding_01_proxy_unknown_and_local_get_no_relay_rights() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&proxy_config(&sb, "127.0.0.1:0", "127.0.0.1/32"), 1);
    let mut local = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    for (what, header) in [
        ("PROXY UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2 LOCAL", local),
    ] {
        let r = try_relay_after(server.addr(0), &header)
            .unwrap_or_else(|e| panic!("{what}: the session failed: {e}"));
        assert_eq!(r.code, 554, "{what}: relayed as the proxy: {r:?}");
    }
}

/// Finding 1: on a `proxy_protocol` listener a peer that is not a trusted
/// proxy is closed, never served as who it is (it may be a relay client).
#[test]
fn finding_01_proxy_listener_closes_untrusted_peers() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&proxy_config(&sb, "127.0.0.1:0", "10.0.0.0/8"), 1);
    let mut c = SmtpConn::connect(server.addr(0)).expect("connect");
    let _ = c.send(b"EHLO direct.example\r\nMAIL FROM:<a@example.org>\r\n");
    let closed = c.closed_within(Duration::from_secs(15));
    let got = String::from_utf8_lossy(c.pending()).into_owned();
    assert!(
        !got.contains("250"),
        "an untrusted peer was served on a PROXY listener: {got:?}"
    );
    assert!(closed, "the connection is closed; got {got:?}");
}

/// Finding 12: HELO/EHLO address literals were only checked for their
/// brackets: tabs, `()`, `;` and UTF-8 reached our `Received:` header.
#[test]
fn finding_12_helo_literals_are_validated() {
    let sb = Sandbox::new();
    let server = sb.start(&crate::harness::ServerConfig::default());
    for bad in [
        "EHLO [x:a(b);c]",
        "EHLO [192.0.2.1\t(forged)]",
        "EHLO [300.1.1.1]",
        "HELO [1.2.3.4;x]",
        "EHLO ex\u{e4}mple.com",
    ] {
        let mut c = SmtpConn::open(server.addr(0));
        let r = c.cmd(bad);
        assert_eq!(r.code, 501, "{bad:?} was taken: {r:?}");
        c.expect("QUIT", 221);
    }
    // A valid literal is taken, and written as it came.
    let mut c = SmtpConn::open(server.addr(0));
    c.expect("EHLO [192.0.2.1]", 250);
    let done = c.send_mail(
        "a@elsewhere.example",
        &["user@example.com"],
        &crate::harness::crlf("Subject: literal\n\nhello\n"),
    );
    let id = done.queue_id().expect("queued");
    let msg = sb.spool().read(&id);
    let trace = String::from_utf8_lossy(msg.trace()).into_owned();
    assert!(
        trace.starts_with("Received: from [192.0.2.1] (["),
        "{trace}"
    );
}

/// Mounts a small tmpfs for a data folder; unmounts it on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn new(sb: &Sandbox, size: &str) -> Self {
        let dir = sb.path().join("small-disk");
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Disk full while receiving: `452 4.3.1` (was `451 4.3.0`), the partial
/// file removed, what was accepted before still there.
#[test]
fn disk_full_is_452_and_loses_nothing() {
    let sb = Sandbox::new();
    let disk = SmallDisk::new(&sb, "2m");
    let data = disk.dir.join("data");
    let toml = format!(
        r#"data_dir = "{}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"

[queue]
deliver = false
"#,
        data.display()
    );
    let server = sb.start_toml(&toml, 1);
    let small = crate::harness::crlf("Subject: small\n\nhello\n");
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let first = c.send_mail("a@elsewhere.example", &["user@example.com"], &small);
    let kept = first.queue_id().expect("the small message is queued");
    let mut big = crate::harness::crlf("Subject: big\n\n");
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n";
    while big.len() < 3 << 20 {
        big.extend_from_slice(line);
    }
    let r = c.send_mail("a@elsewhere.example", &["user@example.com"], &big);
    assert!(r.is("452 4.3.1"), "disk full: {r:?}\n{}", server.log_text());
    c.expect("QUIT", 221);
    let spool = crate::harness::SpoolView::at(data.join("spool"));
    assert_eq!(spool.ids(), vec![kept.clone()], "only the first message");
    assert!(spool.tmp_files().is_empty(), "{:?}", spool.tmp_files());
    spool.read(&kept).check_consistent();
    drop(server);
}
