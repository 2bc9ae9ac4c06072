//! Micro-benchmarks of the sans-IO SMTP core: command parsing, the DATA
//! reader, and one whole pipelined session driven inline (no sockets, no
//! spool, no policy: every check and every store is accepted).
//!
//! Run with `cargo bench -p sluice --bench smtp` (about a minute and a
//! half with the defaults below). Criterion options work as usual, e.g.
//! `cargo bench -p sluice --bench smtp -- data_reader` to run one group.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::smtp::command;
use sluice::smtp::data::DataReader;
use sluice::smtp::{Action, Session, SessionConfig, Verdict};

/// Read size used by the "chunked" variants (a typical socket read).
const CHUNK: usize = 4096;

/// A plausible message body of about `size` octets, dot-stuffed and with
/// the `CRLF . CRLF` terminator: 76-character lines, one line in 40
/// starting with a (stuffed) dot so the reader's line-start path is hit.
fn dot_stuffed_message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(
        b"From: Alice <alice@example.com>\r\n\
          To: Bob <bob@example.org>\r\n\
          Subject: benchmark message\r\n\
          Message-ID: <bench.1@example.com>\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: text/plain; charset=us-ascii\r\n\r\n",
    );
    let alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ,;:!?";
    let mut line_no = 0usize;
    while out.len() < size {
        if line_no % 40 == 39 {
            // ".foo" on the wire is "..foo" once stuffed.
            out.extend_from_slice(b"..");
        }
        for i in 0..76 {
            out.push(alphabet[(line_no * 7 + i) % alphabet.len()]);
        }
        out.extend_from_slice(b"\r\n");
        line_no += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn bench_parse(c: &mut Criterion) {
    let lines: [(&str, &[u8]); 3] = [
        ("ehlo", b"EHLO mail.example.com"),
        (
            "mail_from_params",
            b"MAIL FROM:<alice.sender@example.com> SIZE=10240 BODY=8BITMIME",
        ),
        ("rcpt_to_quoted", b"RCPT TO:<\"john doe\\\"x\"@example.org>"),
    ];
    let mut g = c.benchmark_group("parse");
    for (name, line) in lines {
        assert!(
            command::parse(line).is_ok(),
            "{name}: {:?}",
            command::parse(line)
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| b.iter(|| command::parse(black_box(line))));
    }
    g.finish();
}

fn read_whole(msg: &[u8]) -> usize {
    let mut r = DataReader::new(50 << 20);
    let (n, done) = r.feed(msg);
    assert!(done && n == msg.len());
    r.finish().body.len()
}

fn read_chunked(msg: &[u8]) -> usize {
    let mut r = DataReader::new(50 << 20);
    let mut done = false;
    for piece in msg.chunks(CHUNK) {
        let (_, d) = r.feed(piece);
        done = d;
    }
    assert!(done);
    r.finish().body.len()
}

fn bench_data_reader(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_reader");
    for (label, size) in [("1KB", 1024), ("100KB", 100 * 1024)] {
        let msg = dot_stuffed_message(size);
        // Sanity: both feeding styles yield the same un-stuffed body.
        assert_eq!(read_whole(&msg), read_chunked(&msg));
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::new("whole", label), &msg, |b, m| {
            b.iter(|| read_whole(black_box(m)))
        });
        g.bench_with_input(BenchmarkId::new("4KB_chunks", label), &msg, |b, m| {
            b.iter(|| read_chunked(black_box(m)))
        });
    }
    g.finish();
}

/// The client side of one pipelined session (RFC 2920): EHLO, then
/// MAIL/RCPT/DATA in one go, then the body, the dot and QUIT.
fn pipelined_session(body_size: usize) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"EHLO client.example.com\r\n");
    s.extend_from_slice(b"MAIL FROM:<alice@example.com> SIZE=10240 BODY=8BITMIME\r\n");
    s.extend_from_slice(b"RCPT TO:<bob@localhost>\r\n");
    s.extend_from_slice(b"DATA\r\n");
    s.extend_from_slice(&dot_stuffed_message(body_size));
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// Drive a session over `input` (delivered `read`-sized pieces at a time),
/// accepting every check and store. Returns (reply octets, messages stored).
fn drive(cfg: &SessionConfig, input: &[u8], read: usize) -> (usize, usize) {
    let mut s = Session::new(cfg.clone(), false);
    let mut reads = input.chunks(read);
    let mut out = Vec::with_capacity(1024);
    let mut stored = 0;
    loop {
        match s.next_action() {
            Action::Send(r) => r.write_to(&mut out),
            Action::Check(_) => s.answer(Verdict::Accept),
            Action::Store(t) => {
                stored += 1;
                black_box(&t.body);
                s.stored(Ok("0190F0E1A2B37C4D8E9F0A1B2C3D4E5F".to_string()));
            }
            Action::Done(o) => {
                black_box(o);
            }
            Action::NeedInput => match reads.next() {
                Some(piece) => s.feed(piece),
                None => s.eof(),
            },
            Action::StartTls => unreachable!("the bench never sends STARTTLS"),
            Action::Close => return (out.len(), stored),
        }
    }
}

fn bench_session(c: &mut Criterion) {
    let cfg = SessionConfig::default();
    let input = pipelined_session(10 * 1024);
    // Sanity: one message stored, session closed by QUIT with 221.
    let (replies, stored) = drive(&cfg, &input, input.len());
    assert_eq!(stored, 1);
    assert!(replies > 0);
    assert_eq!(drive(&cfg, &input, CHUNK), (replies, stored));

    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("pipelined_10KB", "whole"),
        &input,
        |b, i| b.iter(|| drive(&cfg, black_box(i), i.len())),
    );
    g.bench_with_input(
        BenchmarkId::new("pipelined_10KB", "4KB_reads"),
        &input,
        |b, i| b.iter(|| drive(&cfg, black_box(i), CHUNK)),
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_data_reader, bench_session
}
criterion_main!(benches);
