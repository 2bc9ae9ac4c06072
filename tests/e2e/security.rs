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

[limits]
disk_reserve = "16KiB"

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

/// Every file and folder below `dir` whose mode gives others (group or
/// world) any access, as `path mode`.
fn open_to_others(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if meta.mode() & 0o077 != 0 {
            out.push(format!("{} {:o}", d.display(), meta.mode() & 0o7777));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Finding 8: no umask was set, so the spool, Maildir and recordings were
/// 0644 in 0755 folders — mail readable by every local user.
#[test]
fn finding_08_everything_under_data_dir_is_private() {
    let sb = Sandbox::new();
    let toml = format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"
record = "all"

[record]
dir = "{data}/recordings"
"#,
        data = sb.data_dir().display()
    );
    let mut server = sb.start_toml(&toml, 1);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let done = c.send_mail(
        "a@elsewhere.example",
        &["user@example.com"],
        &crate::harness::crlf("Subject: private\n\nfor your eyes only\n"),
    );
    assert_eq!(done.code, 250, "{done:?}");
    c.expect("QUIT", 221);
    let new = sb.data_dir().join("mail/example.com/user/new");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&new).map_or(0, |d| d.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(20));
    let rec = sb.data_dir().join("recordings");
    assert!(
        std::fs::read_dir(&rec).is_ok_and(|d| d.count() > 0),
        "a recording was written"
    );
    let open = open_to_others(&sb.data_dir());
    assert!(open.is_empty(), "open to other users: {open:#?}");
}

/// Finding 8: the admin socket had no peer-credential check: any local
/// user who could reach it (a permissive umask, the bind-then-chmod race,
/// a folder an operator opened) could list, delete without a bounce,
/// release quarantine and reload.
#[test]
fn finding_08_admin_socket_refuses_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let server = sb.start(&crate::harness::ServerConfig::default());
    // Open the way to the socket, as a mistake or the race would.
    let sock = sb.data_dir().join("admin.sock");
    for (p, mode) in [
        (sb.path().to_path_buf(), 0o755),
        (sb.data_dir(), 0o755),
        (sock.clone(), 0o666),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // A refused client is told at once; a served one is answered after
    // its request. Read first, so a refusal is not lost to the close.
    let script = format!(
        r#"import socket
s = socket.socket(socket.AF_UNIX)
s.connect({sock:?})
s.settimeout(2)
def line():
    got = b""
    while not got.endswith(b"\n"):
        try:
            b = s.recv(4096)
        except (socket.timeout, ConnectionError):
            break
        if not b:
            break
        got += b
    return got
got = line()
if not got:
    s.settimeout(10)
    s.sendall(b'{{"op":"list"}}\n')
    got = line()
print(got.decode().strip() or "nothing")
"#,
        sock = sock.display().to_string()
    );
    let out = crate::harness::run_bounded(
        std::process::Command::new("setpriv")
            // Debian's own python3: a user-installed one may not be
            // reachable for another user.
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(&script),
        None,
    );
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the client ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        answer.contains("permission denied") && !answer.contains("\"ok\":true"),
        "another user was served by the admin socket: {answer}"
    );
    // The gateway's own user still is.
    let own = crate::harness::run_bounded(
        std::process::Command::new(crate::harness::sluice_bin())
            .args(["queue", "--config"])
            .arg(sb.config_path())
            .arg("list"),
        None,
    );
    assert!(own.status.success(), "{own:?}");
    drop(server);
}

/// Finding 8: the compiled policy cache holds native code wasmtime runs as
/// trusted; a cache folder that another user owns or may write into is
/// refused at start, naming the folder.
#[test]
fn finding_08_policy_cache_must_be_ours_alone() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let cache = sb.path().join("cache");
    std::fs::create_dir(&cache).expect("cache folder");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let toml = format!(
        r#"data_dir = "{data}"
[[listener]]
address = "127.0.0.1:0"
[policy_engine]
cache_dir = "{cache}"
[[policy]]
name = "basic"
path = "{wasm}"
"#,
        data = sb.data_dir().display(),
        cache = cache.display(),
        wasm = crate::guests::guest_wasm("basic").display(),
    );
    let path = sb.write("sluice.toml", toml.as_bytes());
    let mut cmd = std::process::Command::new(crate::harness::sluice_bin());
    cmd.args(["serve", "--config"]).arg(&path);
    let out = crate::harness::run_bounded(&mut cmd, None);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && log.contains("writable by other users"),
        "a world-writable policy cache was used: {:?}\n{log}",
        out.status
    );
    // Another user's folder is refused too.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).expect("chown");
    let out = crate::harness::run_bounded(&mut cmd, None);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && log.contains("belongs to uid 65534"),
        "another user's policy cache was used: {:?}\n{log}",
        out.status
    );
}

/// Finding 8: `sluice test` kept its compiled-code cache in the system
/// temporary folder, shared by every local user; it is now in the user's
/// own cache folder, 0700.
#[test]
fn finding_08_sluice_test_cache_is_the_users_own() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let home = sb.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let suite = sb.path().join("suite");
    std::fs::create_dir(&suite).expect("suite");
    std::fs::write(
        suite.join("sluice-test.toml"),
        format!(
            "[[policy]]\nname = \"basic\"\npath = \"{}\"\n",
            crate::guests::guest_wasm("basic").display()
        ),
    )
    .expect("suite config");
    std::fs::write(
        suite.join("greeting.smtp"),
        "@client 198.51.100.20:40000\nS: 220\nC: EHLO mail.sender.example\nS: 250\nC: QUIT\nS: 221\n",
    )
    .expect("a case");
    let out = crate::harness::run_bounded(
        std::process::Command::new(crate::harness::sluice_bin())
            .arg("test")
            .arg(&suite)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME"),
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let cache = home.join(".cache/sluice/policy-cache");
    let meta = std::fs::metadata(&cache).unwrap_or_else(|e| {
        panic!(
            "no cache in the user's cache folder {}: {e}",
            cache.display()
        )
    });
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", cache.display());
}

/// Finding 7: the data-stage editor ended the header section at the first
/// line without a colon, while the policies' parser skips such a line and
/// reads on: a forged field placed after a junk line survived removal and
/// policies still saw it. Now both read the section one way.
#[test]
fn finding_07_header_removal_after_a_junk_line() {
    let sb = Sandbox::new();
    let toml = format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com", "example.test"]

[[listener]]
address = "127.0.0.1:0"

[queue]
deliver = false

[[policy]]
name = "basic"
path = "{wasm}"
"#,
        data = sb.data_dir().display(),
        wasm = crate::guests::guest_wasm("basic").display(),
    );
    let server = sb.start_toml(&toml, 1);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    c.expect("MAIL FROM:<sender@example.com>", 250);
    c.expect("RCPT TO:<keep@example.com>", 250);
    c.expect("DATA", 354);
    // The basic test policy removes X-Remove-Me when the subject says
    // add-rcpt.
    let r = c.cmd(
        "Subject: please add-rcpt\r\nthis line is not a field\r\nX-Remove-Me: forged\r\n\r\nbody\r\n.",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("not queued: {r:?}"));
    let text = String::from_utf8_lossy(sb.spool().read(&id).body()).into_owned();
    assert!(
        !text.contains("X-Remove-Me"),
        "a field after a junk line survived its removal:\n{text}"
    );
    assert!(text.contains("this line is not a field\r\n"), "{text}");
    c.expect("QUIT", 221);
}

/// `MAIL FROM ... SIZE=` larger than the spool's free space less the
/// reserve: `452 4.3.1` at MAIL, before any data is sent.
#[test]
fn size_beyond_the_free_space_is_452_at_mail() {
    let sb = Sandbox::new();
    let disk = SmallDisk::new(&sb, "4m");
    let toml = format!(
        r#"data_dir = "{}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"

[limits]
disk_reserve = "1MiB"

[queue]
deliver = false
"#,
        disk.dir.join("data").display()
    );
    let server = sb.start_toml(&toml, 1);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let r = c.cmd("MAIL FROM:<a@elsewhere.example> SIZE=3500000");
    assert!(r.is("452 4.3.1"), "SIZE beyond the room: {r:?}");
    // A size that fits is taken.
    c.expect("MAIL FROM:<a@elsewhere.example> SIZE=1000", 250);
    c.expect("QUIT", 221);
}

/// RCPT replies for `rcpts` in one transaction from the relay network.
fn rcpt_replies(addr: SocketAddr, rcpts: &[&str]) -> Vec<(String, Reply)> {
    let mut c = SmtpConn::ehlo(addr, "client.example");
    c.expect("MAIL FROM:<a@origin.example>", 250);
    let replies = rcpts
        .iter()
        .map(|r| (r.to_string(), c.cmd(&format!("RCPT TO:{r}"))))
        .collect();
    c.expect("QUIT", 221);
    replies
}

#[test]
fn finding_02_address_literals_are_off_and_never_reach_private_addresses() {
    use crate::delivery_kit::{Gateway, Sink, SinkOptions, lo, send, wait_delivery};
    use crate::dnsd::{DnsServer, Zone};

    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let dns = DnsServer::start(Zone::new());

    // The default: no literal from the relay network is accepted, so none
    // can make the gateway connect to loopback, a private network or a
    // cloud metadata address.
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    for (rcpt, r) in rcpt_replies(
        server.addr(0),
        &[
            "<u@[127.0.0.2]>",
            "<u@[IPv6:::1]>",
            "<u@[10.0.0.1]>",
            "<u@[169.254.169.254]>",
        ],
    ) {
        assert!(r.is("550 5.7.1"), "{rcpt} from the relay network: {r:?}");
    }
    drop(server);

    // Turned on, with 127.0.0.2 allowed: other non-public addresses are
    // still refused; the allowed one is delivered to.
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port)
        .delivery("address_literals", "true")
        .delivery(
            "address_literal_networks",
            "[\"127.0.0.2/32\", \"::1/128\"]",
        )
        .start(&sb);
    for (rcpt, r) in rcpt_replies(
        server.addr(0),
        &["<u@[10.0.0.1]>", "<u@[IPv6:fe80::1]>", "<u@[127.0.0.3]>"],
    ) {
        assert!(r.is("550 5.7.1"), "{rcpt}: {r:?}");
    }
    let id = send(
        server.addr(0),
        "a@origin.example",
        &["u@[127.0.0.2]"],
        b"Subject: literal\r\n\r\nhi\r\n",
    );
    wait_delivery(&server, &id, "delivered", Duration::from_secs(20));
    let got = sinks[0].wait_messages(1, Duration::from_secs(20), &server);
    assert_eq!(got[0].rcpt_tos(), ["u@[127.0.0.2]"], "{}", got[0].meta);

    // An IPv6 literal is routed (nothing listens on [::1] at that port, so
    // it is deferred), not bounced as unusable because the router
    // lower-cased its tag.
    let id = send(
        server.addr(0),
        "a@origin.example",
        &["u@[IPv6:::1]"],
        b"Subject: literal 6\r\n\r\nhi\r\n",
    );
    let d = wait_delivery(&server, &id, "deferred", Duration::from_secs(20));
    assert!(
        !d.to_string().contains("unusable"),
        "an IPv6 literal is usable: {d}"
    );
}

#[test]
fn finding_03_concurrent_route_groups_never_lose_delivery_state() {
    use crate::delivery_kit::{Gateway, Sink, SinkOptions, lo, send};
    use crate::dnsd::{DnsServer, Zone};

    // Each message has one recipient that is delivered (a.test) and three
    // that are deferred every time (b, c, d.test), each its own next hop:
    // four route groups that finish, and persist the envelope, at about
    // the same moment, attempt after attempt.
    let (port, sinks) = Sink::start_shared(&[
        SinkOptions::on(lo(2)),
        SinkOptions::on(lo(3)),
        SinkOptions::on(lo(4)),
        SinkOptions::on(lo(5)),
    ]);
    let mut zone = Zone::new();
    for (i, d) in ["a.test", "b.test", "c.test", "d.test"].iter().enumerate() {
        let mx = format!("mx.{d}");
        zone = zone.mx(d, 10, &mx).a(&mx, lo(2 + u8::try_from(i).unwrap()));
    }
    let dns = DnsServer::start(zone);
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).retry("1s", "1s").start(&sb);
    const MESSAGES: usize = 25;
    for n in 0..MESSAGES {
        send(
            server.addr(0),
            "a@origin.example",
            &["ok@a.test", "defer@b.test", "defer@c.test", "defer@d.test"],
            format!("Subject: race {n}\r\n\r\nhi\r\n").as_bytes(),
        );
    }
    // Every message delivered once, then several more attempts of the
    // deferred ones (bounded: attempts are 1 s apart).
    let got = sinks[0].wait_messages(MESSAGES, Duration::from_secs(30), &server);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server
        .log_records("delivery")
        .iter()
        .filter(|d| d["fields"]["result"] == "deferred")
        .count()
        < MESSAGES * 3 * 4
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let got_after = sinks[0].messages();
    assert_eq!(
        got_after.len(),
        MESSAGES,
        "a delivered recipient was sent again ({} messages at a.test after the retries, {} at first)",
        got_after.len(),
        got.len()
    );
    assert!(
        !server.logged("cannot persist"),
        "a delivery state update failed; log:\n{}",
        server.log_text()
    );
}

#[test]
fn finding_10_a_damaged_spool_entry_is_set_aside_and_start_up_goes_on() {
    use crate::delivery_kit::{queue_cli, queue_json};
    use crate::harness::ServerConfig;

    let sb = Sandbox::new();
    let cfg = ServerConfig::default();
    let mut server = sb.start(&cfg);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let good = c
        .send_mail(
            "a@origin.example",
            &["b@example.com"],
            b"Subject: good\r\n\r\nhi\r\n",
        )
        .queue_id()
        .expect("queued");
    c.expect("QUIT", 221);
    server.kill9();

    // Damage: an envelope that is not JSON (with its body), and a folder
    // inside spool/tmp.
    let spool = sb.data_dir().join("spool");
    let bad = "0123456789abcdef0123456789abcdef";
    std::fs::write(spool.join(format!("queue/{bad}.json")), b"{ not json").unwrap();
    std::fs::write(
        spool.join(format!("queue/{bad}.eml")),
        b"Subject: x\r\n\r\n",
    )
    .unwrap();
    std::fs::create_dir_all(spool.join("tmp/a-folder/inside")).unwrap();

    let _server = sb.restart(cfg.listeners.len());
    let (ok, out, err) = queue_cli(&sb, &["list"]);
    assert!(ok, "queue list with a damaged entry: {out}{err}");
    assert!(out.contains(&good), "the good message is listed: {out}");
    assert!(
        out.contains(bad),
        "the damaged one is shown as set aside: {out}"
    );
    let listed = queue_json(&sb, &["list"]);
    assert_eq!(
        listed["messages"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["corrupt"][0]["id"], bad, "{listed}");
    let (ok, out, err) = queue_cli(&sb, &["retry", "--all"]);
    assert!(ok, "queue retry --all with a damaged entry: {out}{err}");
    assert!(
        spool.join(format!("corrupt/{bad}.json")).is_file()
            && !spool.join(format!("queue/{bad}.json")).exists(),
        "the damaged envelope is moved to spool/corrupt/"
    );
}

#[test]
fn finding_09_dsns_are_capped_never_to_literals_and_counted_per_domain() {
    use crate::delivery_kit::{Gateway, maildir, send_raw, wait_done, wait_maildir};
    use crate::dnsd::{DnsServer, Zone};

    let dns = DnsServer::start(Zone::new());
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), 25)
        .queue("max_dsns_per_domain", "2")
        .start(&sb);
    let wait = Duration::from_secs(20);

    // A success report asked for by an address-literal sender: none.
    let id = send_raw(
        server.addr(0),
        "MAIL FROM:<x@[127.0.0.1]>",
        &["RCPT TO:<carol@example.com> NOTIFY=SUCCESS"],
        b"Subject: literal sender\r\n\r\nhi\r\n",
    );
    wait_done(&server, &id, wait);
    let refused = server
        .wait_log("DSN not sent", wait, |v| {
            v["fields"]["queue_id"] == id.as_str()
        })
        .unwrap_or_else(|| panic!("no DSN refusal for {id}; log:\n{}", server.log_text()));
    assert!(refused.to_string().contains("address literal"), "{refused}");

    // Three messages with a 900 KB header section from one sender
    // domain, each asking for a success report.
    let mut headers = Vec::new();
    for i in 0..900 {
        headers.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "h".repeat(980)).as_bytes());
    }
    let message = [headers.as_slice(), b"Subject: big headers\r\n\r\nhi\r\n"].concat();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(send_raw(
            server.addr(0),
            "MAIL FROM:<alice@example.com>",
            &["RCPT TO:<carol@example.com> NOTIFY=SUCCESS"],
            &message,
        ));
    }
    for id in &ids {
        wait_done(&server, id, wait);
    }
    let dsns = wait_maildir(&sb, "alice@example.com", 2, wait, &server);
    server
        .wait_log("DSN not sent", wait, |v| {
            v["fields"]["queue_id"] == ids[2].as_str()
                && v.to_string().contains("max_dsns_per_domain")
        })
        .unwrap_or_else(|| panic!("the third DSN was sent; log:\n{}", server.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    let dsns_after = maildir(&sb, "alice@example.com");
    assert_eq!(dsns_after.len(), 2, "two DSNs to example.com this hour");
    for d in &dsns {
        assert!(
            d.len() < 64 * 1024,
            "a DSN of {} octets for a {}-octet header section",
            d.len(),
            headers.len()
        );
    }
}
