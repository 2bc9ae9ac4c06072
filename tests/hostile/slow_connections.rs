//! Hostile load on the real binary over loopback: thousands of slow
//! connections from many client addresses while a relay client goes on
//! sending. Bounded in count and time; the attacker is
//! `tests/clients/slowloris.py`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Sandbox, SmtpConn, client_script, crlf};

/// 5,000 slow connections from 5,000 addresses of 127.1.0.0/16 (20
/// networks), each dribbling a byte every 5 s and reconnecting when
/// closed, for 30 s — more than the 2,000 connections this gateway takes.
/// Meanwhile a client from `relay_networks` runs 20 transactions: every
/// one completes, promptly.
#[test]
fn slow_connections_do_not_starve_a_relay_client() {
    let sb = Sandbox::new();
    let toml = format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]
relay_networks = ["127.0.0.1/32"]

[[listener]]
address = "127.0.0.1:0"

[limits]
max_connections = 2000
reserved_connections = 200

[queue]
deliver = false
"#,
        data = sb.data_dir().display()
    );
    let server = sb.start_toml(&toml, 1);
    let addr = server.addr(0);
    let mut attack = Command::new("python3")
        .arg(client_script("slowloris.py"))
        .args(["--port", &addr.port().to_string()])
        .args(["--count", "5000", "--hold", "30", "--interval", "5"])
        .arg("--reconnect")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the attacker");
    // Let the attack fill the gateway first.
    let fill = Instant::now() + Duration::from_secs(60);
    while server
        .log_lines()
        .iter()
        .filter(|l| l.contains("connection refused") || l.contains("longest-idle"))
        .count()
        < 100
    {
        assert!(
            Instant::now() < fill,
            "the attack never reached the cap:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = crlf("Subject: good client\n\nhello\n");
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let outcome = (|| -> Result<(), String> {
            let mut c = SmtpConn::connect(addr).map_err(|e| e.to_string())?;
            let g = c.reply();
            if g.code != 220 {
                return Err(format!("greeting {g:?}"));
            }
            c.expect("EHLO good.example", 250);
            let r = c.send_mail("good@example.com", &["user@elsewhere.example"], &body);
            r.queue_id().ok_or_else(|| format!("{r:?}"))?;
            c.expect("QUIT", 221);
            Ok(())
        })();
        times.push(t.elapsed());
        if let Err(e) = outcome {
            failures.push(format!("transaction {i}: {e}"));
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    let out = crate::harness::wait_child(&mut attack, Duration::from_secs(120));
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut sorted = times.clone();
    sorted.sort();
    eprintln!(
        "attacker: {}; good client: median {:?}, max {:?}",
        stats.trim(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert!(failures.is_empty(), "{failures:#?}\nattacker: {stats}");
    // Under a second each on a quiet machine; the bound leaves room for a
    // shared CI machine running other tests beside this one.
    assert!(
        sorted[sorted.len() - 1] < Duration::from_secs(3),
        "a transaction took {:?}: {times:?}",
        sorted[sorted.len() - 1]
    );
    let v: serde_json::Value = serde_json::from_str(stats.trim()).unwrap_or_else(|e| {
        panic!(
            "attacker output {stats:?}: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        v["opened"].as_u64().unwrap_or(0) >= 2000,
        "the attack opened its connections: {v}"
    );
}
