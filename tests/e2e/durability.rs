//! Durability: a 250 survives kill -9, nothing unfinished is ever stored,
//! a restart cleans up, and SIGTERM drains gracefully.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Rng, Sandbox, ServerConfig, SmtpConn, assert_bytes_eq, crlf, dot_stuff, random_message,
};

#[test]
fn sigterm_drains_idle_and_in_flight_sessions() {
    let sb = Sandbox::new();
    let mut server = sb.start(&ServerConfig::default());
    let addr = server.addr(0);

    let mut idle = SmtpConn::ehlo(addr, "idle.example");
    let mut busy = SmtpConn::ehlo(addr, "busy.example");
    busy.expect("MAIL FROM:<busy@example.org>", 250);
    busy.expect("RCPT TO:<b@example.com>", 250);
    busy.expect("DATA", 354);
    let body = crlf(&format!(
        "Subject: in flight during SIGTERM\n\n{}",
        "a line of the message body\n".repeat(100)
    ));
    let (first, second) = body.split_at(body.len() / 2);
    busy.write(first);

    server.signal("TERM");
    let r = idle
        .read_reply(Duration::from_secs(10))
        .expect("the idle client hears about the shutdown");
    assert!(r.is("421 4.3.0"), "idle session at SIGTERM: {r:?}");
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "the idle session is closed after 421"
    );

    // No new sessions once shutdown has begun.
    if let Ok(mut late) = SmtpConn::connect(addr)
        && let Ok(r) = late.read_reply(Duration::from_secs(3))
    {
        assert_ne!(
            r.code, 220,
            "a connection made after idle sessions got 421 4.3.0 was accepted and greeted \
             (a session that starts during shutdown should get 421 4.3.0): {r:?}"
        );
    }

    // The in-flight message is finished and stored.
    busy.write([second, b".\r\n"].concat());
    let done = busy
        .read_reply(Duration::from_secs(10))
        .expect("reply to the in-flight message");
    let id = done
        .queue_id()
        .unwrap_or_else(|| panic!("in-flight DATA at SIGTERM: {done:?}"));
    busy.abort();

    let status = server
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "sluice did not exit after SIGTERM; log:\n{}",
                server.log_text()
            )
        });
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        server.log_text()
    );
    let msg = sb.spool().only_message();
    assert_eq!(msg.id, id);
    assert_bytes_eq(msg.body(), &body, "message finished during shutdown");
    assert!(
        sb.spool().tmp_files().is_empty(),
        "{:?}",
        sb.spool().tmp_files()
    );
}

#[test]
fn sigint_stops_an_idle_server() {
    let sb = Sandbox::new();
    let mut server = sb.start(&ServerConfig::default());
    server.signal("INT");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "sluice did not exit after SIGINT; log:\n{}",
                server.log_text()
            )
        });
    assert!(
        status.success(),
        "exit status after SIGINT: {status}{}",
        if status.signal().is_some() {
            " (the process died of the signal: it logged \"listening\" before its \
             signal handlers were installed)"
        } else {
            ""
        }
    );
}

/// What became of one message a load thread tried to send.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// The final dot was never written: must not be stored.
    DotNotSent,
    /// The final dot was written but no reply came: may be stored.
    DotSent,
    /// `250 ... queued as ID`: must be stored under ID.
    Queued(String),
    /// Any other reply to the dot: must not be stored.
    Refused(String),
}

#[derive(Debug)]
struct Attempt {
    marker: String,
    body: Vec<u8>,
    fate: Fate,
}

/// Send messages on one connection until `stop`, an error, or `deadline`.
fn load_thread(
    addr: SocketAddr,
    thread_no: usize,
    stop: &AtomicBool,
    deadline: Instant,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut rng = Rng::new(thread_no as u64 + 1);
    let Ok(mut c) = SmtpConn::connect(addr) else {
        return attempts;
    };
    let timeout = Duration::from_secs(5);
    if c.read_reply(timeout).is_err()
        || c.send(b"EHLO load.example\r\n").is_err()
        || c.read_reply(timeout).is_err()
    {
        return attempts;
    }
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let marker = format!("{thread_no}-{n}");
        n += 1;
        let size = rng.range(1024, 20 * 1024);
        let mut body = random_message(&mut rng, &marker, size);
        if n % 3 == 0 {
            body.extend_from_slice(b".a line that needs dot-stuffing\r\n");
        }
        attempts.push(Attempt {
            marker,
            body: body.clone(),
            fate: Fate::DotNotSent,
        });
        let envelope = format!(
            "MAIL FROM:<load{thread_no}@example.org>\r\nRCPT TO:<sink@example.com>\r\nDATA\r\n"
        );
        if c.send(envelope.as_bytes()).is_err() {
            break;
        }
        let replies: Result<Vec<_>, _> = (0..3).map(|_| c.read_reply(timeout)).collect();
        match replies {
            Ok(r) if r.iter().map(|x| x.code).eq([250, 250, 354]) => {}
            _ => break,
        }
        if c.send(&dot_stuff(&body)).is_err() {
            break;
        }
        attempts.last_mut().expect("pushed above").fate = Fate::DotSent;
        if c.send(b".\r\n").is_err() {
            break;
        }
        match c.read_reply(timeout) {
            Ok(r) => {
                let fate = match r.queue_id() {
                    Some(id) => Fate::Queued(id),
                    None => Fate::Refused(r.last().to_string()),
                };
                attempts.last_mut().expect("pushed above").fate = fate;
            }
            Err(_) => break,
        }
    }
    attempts
}

/// The `X-Test-Id` of a stored body.
fn marker_of(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let header_end = text.find("\r\n\r\n").unwrap_or(text.len());
    text[..header_end]
        .lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .map(|m| m.trim().to_string())
}

/// Run `threads` senders for `load_for`, kill -9 the server, check the
/// spool against what the senders saw, restart and check again.
fn crash_under_load(group_commit: bool, threads: usize, load_for: Duration) {
    let sb = Sandbox::new();
    let cfg = ServerConfig {
        group_commit,
        ..ServerConfig::default()
    };
    let mut server = sb.start(&cfg);
    let addr = server.addr(0);
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + load_for + Duration::from_secs(20);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || load_thread(addr, t, &stop, deadline))
        })
        .collect();
    thread::sleep(load_for);
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let attempts: Vec<Attempt> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("load thread panicked"))
        .collect();

    // What is committed in the spool, by marker.
    let spool = sb.spool();
    let mut stored: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    for id in spool.ids() {
        let msg = spool.read(&id);
        msg.check_consistent();
        let body = msg.body().to_vec();
        let marker =
            marker_of(&body).unwrap_or_else(|| panic!("stored message {id} has no X-Test-Id"));
        if let Some((other, _)) = stored.insert(marker.clone(), (id.clone(), body)) {
            panic!("message {marker} stored twice: {other} and {id}");
        }
    }

    let (mut queued, mut in_doubt_stored, mut in_doubt_absent, mut unsent, mut refused) =
        (0, 0, 0, 0, 0);
    for a in &attempts {
        let found = stored.get(&a.marker);
        match &a.fate {
            Fate::Queued(id) => {
                queued += 1;
                let (stored_id, body) = found.unwrap_or_else(|| {
                    panic!(
                        "message {} got 250 ({id}) but is not in the spool",
                        a.marker
                    )
                });
                assert_eq!(
                    stored_id, id,
                    "message {} is stored under the id its 250 named",
                    a.marker
                );
                assert_bytes_eq(body, &a.body, &format!("acknowledged message {}", a.marker));
            }
            Fate::DotSent => match found {
                Some((_, body)) => {
                    in_doubt_stored += 1;
                    assert_bytes_eq(body, &a.body, &format!("in-doubt message {}", a.marker));
                }
                None => in_doubt_absent += 1,
            },
            Fate::DotNotSent => {
                unsent += 1;
                assert!(
                    found.is_none(),
                    "message {} is stored but its final dot was never sent",
                    a.marker
                );
            }
            Fate::Refused(reply) => {
                refused += 1;
                assert!(
                    found.is_none(),
                    "message {} was refused ({reply}) but is stored",
                    a.marker
                );
            }
        }
    }
    let known: BTreeSet<&str> = attempts.iter().map(|a| a.marker.as_str()).collect();
    for (marker, (id, _)) in &stored {
        assert!(
            known.contains(marker.as_str()),
            "stored message {id} ({marker}) was never sent"
        );
    }
    eprintln!(
        "crash test (group_commit = {group_commit}): {queued} acknowledged, {in_doubt_stored} in doubt and \
         stored, {in_doubt_absent} in doubt and absent, {unsent} never finished, {refused} refused; \
         {} committed",
        stored.len()
    );
    assert!(
        queued > 0,
        "no message was acknowledged before the kill; log:\n{}",
        server.log_text()
    );

    // Restart on the same data folder: unfinished writes are cleaned, no
    // committed message is lost.
    let before: Vec<String> = spool.ids();
    drop(server);
    let restarted = sb.start(&cfg);
    assert!(
        spool.tmp_files().is_empty(),
        "spool/tmp after restart: {:?}",
        spool.tmp_files()
    );
    let after = spool.ids();
    assert_eq!(after, before, "the queue changed across the restart");
    let files = spool.queue_files();
    assert_eq!(
        files.len(),
        2 * after.len(),
        "every queued message is exactly ID.eml + ID.json after restart: {files:?}"
    );
    for id in &after {
        assert!(
            files.contains(&format!("{id}.eml")),
            "{id}.eml missing after restart"
        );
    }
    // And the restarted server takes new mail.
    let mut c = SmtpConn::ehlo(restarted.addr(0), "after.crash.example");
    let done = c.send_mail(
        "after@example.org",
        &["b@example.com"],
        &crlf("Subject: after\n\nok\n"),
    );
    assert!(done.queue_id().is_some(), "after restart: {done:?}");
    assert_eq!(spool.ids().len(), after.len() + 1);
}

#[test]
fn kill9_under_load_with_group_commit() {
    crash_under_load(true, 20, Duration::from_secs(2));
}

#[test]
fn kill9_under_load_without_group_commit() {
    crash_under_load(false, 8, Duration::from_secs(1));
}
