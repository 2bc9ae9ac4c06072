//! The same job in every language gives the same result: each shipped
//! Rust policy that has Python, JavaScript or C versions is loaded into
//! the real gateway once per language, with the same config, and the same
//! table of SMTP sessions runs against it. Every reply, every delivered
//! message (less its `Received:` field), every quarantined message and
//! every line the policy logged must be identical to what the Rust policy
//! gave.
//!
//! The tables are data (`Session`, `Step`) so they can later be fed from
//! recorded sessions.

use std::collections::BTreeMap;

use sluice_lang_policies::{Sandbox, Server, Smtp, component, config as gateway_config};

/// One step of a session.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A command line.
    Cmd(&'static str),
    /// DATA, then this message (LF line ends become CRLF) and the dot.
    Data(&'static str),
}

/// One SMTP session: from a client address claimed through the PROXY
/// listener (or plain loopback), then its steps.
#[derive(Debug, Clone, Copy)]
struct Session {
    client: Option<&'static str>,
    steps: &'static [Step],
}

/// What a run produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Per session, each reply as "CODE text" (queue ids masked), or
    /// "closed".
    transcript: Vec<Vec<String>>,
    /// Per mailbox, the delivered messages without `Received:`, sorted.
    delivered: BTreeMap<String, Vec<String>>,
    /// Quarantine reasons of held messages, sorted.
    quarantined: Vec<String>,
    /// What the policy logged, in order.
    logs: Vec<String>,
}

fn mask_ids(text: &str) -> String {
    match text.find("queued as ") {
        Some(at) => format!("{}queued as <id>", &text[..at]),
        None => text.to_string(),
    }
}

/// A delivered message without its `Received:` field (which names the
/// queue id and the time).
fn without_received(message: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut in_header = true;
    for line in message.split_inclusive("\r\n") {
        if in_header {
            if line == "\r\n" {
                in_header = false;
            } else if line.starts_with([' ', '\t']) {
                if skipping {
                    continue;
                }
            } else {
                skipping = line.to_ascii_lowercase().starts_with("received:");
                if skipping {
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}

fn run_session(server: &Server, session: &Session) -> Vec<String> {
    let listener = usize::from(session.client.is_some());
    let (mut smtp, greeting) = Smtp::connect_with(server.addr(listener), session.client);
    let mut replies = vec![format!("{} {}", greeting.code, greeting.text)];
    if greeting.code != 220 {
        replies.push(if smtp.closed() { "closed" } else { "open" }.to_string());
        return replies;
    }
    for step in session.steps {
        let reply = match step {
            Cmd(line) => {
                smtp.send(line);
                smtp.try_reply()
            }
            Data(message) => {
                smtp.send("DATA");
                match smtp.try_reply() {
                    Some(r) if r.code == 354 => {
                        let mut body = message.replace('\n', "\r\n");
                        if !body.ends_with("\r\n") {
                            body.push_str("\r\n");
                        }
                        body.push('.');
                        smtp.send(&body);
                        smtp.try_reply()
                    }
                    other => other,
                }
            }
        };
        match reply {
            Some(r) => replies.push(mask_ids(&format!("{} {}", r.code, r.text))),
            None => {
                replies.push("closed".into());
                break;
            }
        }
    }
    replies
}

/// Run `sessions` against the policy `name` in `lang` with `config` (the
/// `[policy.config]` body) and wait for `expect_delivered` messages per
/// mailbox (local parts at example.com).
fn run(
    lang: &str,
    name: &str,
    config: &str,
    sessions: &[Session],
    expect_delivered: &[(&str, usize)],
    expect_held: usize,
) -> Outcome {
    let wasm = component(lang, name);
    let sandbox = Sandbox::new();
    let policy = format!(
        "[[policy]]\nname = {name:?}\npath = {:?}\nmax_memory = \"128MiB\"\ntimeout = \"1s\"\n[policy.config]\n{config}",
        wasm.display().to_string()
    );
    let server = sandbox.start_toml(&gateway_config(&sandbox, &policy), 2);
    let transcript = sessions.iter().map(|s| run_session(&server, s)).collect();
    let mut delivered = BTreeMap::new();
    for (local, count) in expect_delivered {
        let found = sandbox.wait_maildir("example.com", local, *count);
        assert_eq!(
            found.len(),
            *count,
            "{lang} {name}: messages for {local}@example.com; log:\n{}",
            server.log_text()
        );
        let mut found: Vec<String> = found
            .iter()
            .map(|m| without_received(&String::from_utf8_lossy(m)))
            .collect();
        found.sort();
        delivered.insert((*local).to_string(), found);
    }
    let deadline = std::time::Instant::now() + sluice_lang_policies::DELIVERY;
    let quarantined = loop {
        let mut held: Vec<String> = sandbox
            .spooled_envelopes()
            .iter()
            .filter(|e| e["held"] == true)
            .map(|e| e["quarantine"].as_str().unwrap_or("").to_string())
            .collect();
        held.sort();
        if held.len() >= expect_held || std::time::Instant::now() >= deadline {
            break held;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Outcome {
        transcript,
        delivered,
        quarantined,
        logs: server.policy_logs(),
    }
}

/// Run the table for every language and compare each with Rust's outcome.
fn equivalent(
    name: &str,
    langs: &[&str],
    config: &str,
    sessions: &[Session],
    expect_delivered: &[(&str, usize)],
    expect_held: usize,
) {
    let reference = run(
        "rust",
        name,
        config,
        sessions,
        expect_delivered,
        expect_held,
    );
    assert_eq!(
        reference.quarantined.len(),
        expect_held,
        "rust {name}: held messages"
    );
    for lang in langs {
        let outcome = run(lang, name, config, sessions, expect_delivered, expect_held);
        for (i, (want, got)) in reference
            .transcript
            .iter()
            .zip(&outcome.transcript)
            .enumerate()
        {
            assert_eq!(
                got, want,
                "{lang} {name}: session {i} ({:?}) differs from rust",
                sessions[i]
            );
        }
        assert_eq!(
            outcome.delivered, reference.delivered,
            "{lang} {name}: delivered messages differ"
        );
        assert_eq!(
            outcome.quarantined, reference.quarantined,
            "{lang} {name}: quarantine differs"
        );
        assert_eq!(
            outcome.logs, reference.logs,
            "{lang} {name}: policy log lines differ"
        );
        assert_eq!(outcome, reference, "{lang} {name}");
    }
}

use Step::{Cmd, Data};

const ACCESS_CONFIG: &str = r#"deny_networks = ["203.0.113.0/24", "2001:db8:bad::/48"]
allow_networks = ["203.0.113.99"]
deny_helo = ["*.bad.example", "localhost"]
allow_helo = ["good.bad.example"]
deny_senders = ["@spam.example", "*.bulk.example", "noreply@"]
allow_senders = ["billing@spam.example"]
deny_recipients = ["blocked@example.com", "@*.internal.example"]
allow_recipients = ["postmaster@"]
reject_text = "Access denied by policy"
"#;

const ACCESS_SESSIONS: &[Session] = &[
    Session {
        client: Some("203.0.113.7"),
        steps: &[],
    },
    Session {
        client: Some("203.0.113.99"),
        steps: &[Cmd("EHLO good.bad.example"), Cmd("QUIT")],
    },
    Session {
        client: Some("2001:db8:bad::1"),
        steps: &[],
    },
    Session {
        client: Some("2001:db8:1::1"),
        steps: &[Cmd("HELO ok.example"), Cmd("QUIT")],
    },
    Session {
        client: Some("::ffff:203.0.113.8"),
        steps: &[],
    },
    Session {
        client: None,
        steps: &[
            Cmd("EHLO host.bad.example"),
            Cmd("EHLO LOCALHOST."),
            Cmd("EHLO client.example"),
            Cmd("MAIL FROM:<x@SPAM.example>"),
            Cmd("MAIL FROM:<billing@spam.example>"),
            Cmd("RCPT TO:<blocked@example.com>"),
            Cmd("RCPT TO:<x@eu.internal.example>"),
            Cmd("RCPT TO:<user@example.com>"),
            Cmd("RCPT TO:<postmaster@example.com>"),
            Data("From: billing@spam.example\nSubject: invoice\n\nplease pay\n"),
            Cmd("MAIL FROM:<noreply@x.example>"),
            Cmd("MAIL FROM:<a@b.bulk.example>"),
            Cmd("MAIL FROM:<>"),
            Cmd("RCPT TO:<user@example.com>"),
            Data("Subject: bounce\n\nreturned\n"),
            Cmd("QUIT"),
        ],
    },
];

#[test]
fn access_is_the_same_in_every_language() {
    equivalent(
        "access",
        &["c", "python", "js"],
        ACCESS_CONFIG,
        ACCESS_SESSIONS,
        &[("user", 2), ("postmaster", 1)],
        0,
    );
}

#[test]
fn access_tempfail_and_accept_variant_is_the_same_in_every_language() {
    let config = r#"deny_networks = ["0.0.0.0/0", "::/0"]
allow_networks = ["127.0.0.0/8", "198.51.100.0/24"]
allow_action = "accept"
deny_senders = ["<>"]
reject_code = 450
"#;
    let sessions = &[
        Session {
            client: Some("192.0.2.1"),
            steps: &[],
        },
        Session {
            client: Some("198.51.100.20"),
            steps: &[Cmd("EHLO a.example"), Cmd("QUIT")],
        },
        Session {
            client: None,
            steps: &[
                Cmd("EHLO a.example"),
                Cmd("MAIL FROM:<>"),
                Cmd("MAIL FROM:<a@b.example>"),
                Cmd("RCPT TO:<user@example.com>"),
                Data("Subject: x\n\ny\n"),
                Cmd("QUIT"),
            ],
        },
    ];
    equivalent(
        "access",
        &["c", "python", "js"],
        config,
        sessions,
        &[("user", 1)],
        0,
    );
}

const HEADER_RULES_CONFIG: &str = r#"[[policy.config.rules]]
header = "Subject"
pattern = "(?i)viagra"
action = "reject"
text = "No pills here"

[[policy.config.rules]]
header = "X-Spam-Score"
pattern = "."
action = "remove_header"

[[policy.config.rules]]
header = "*"
pattern = "(?i)^subject:.*newsletter"
action = "add_header"
add = "X-Flag: bulk"

[[policy.config.rules]]
header = "Subject"
pattern = "^hold"
action = "quarantine"
text = "held for review"

[[policy.config.rules]]
header = "X-Mailer"
pattern = "(?i)massmail"
action = "discard"

[[policy.config.rules]]
header = "Subject"
pattern = "^later"
action = "reject"
code = 451
text = "try later"

[[policy.config.rules]]
header = "Subject"
pattern = "\\bgreetings\\b"
action = "add_header"
add = "X-Greeting: yes"

[[policy.config.rules]]
header = "Received"
pattern = "from relay\\d+\\.evil\\.example"
action = "reject"
code = 554
status = "5.7.0"
"#;

const HEADER_RULES_SESSIONS: &[Session] = &[Session {
    client: None,
    steps: &[
        Cmd("EHLO client.example"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: Cheap VIAGRA\n\nbuy\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: =?utf-8?B?VklBR1JBIGRlYWw=?=\n\nencoded\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: Monthly Newsletter\nX-Spam-Score: 9.5\n\nnews\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<other@example.com>"),
        Data("Subject: hold this one\n\nx\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: hi\nX-Mailer: MassMail 3\n\nx\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: later please\n\nx\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data("Subject: Season's greetings\nX-Spam-Score: 1\n  .5\n\nhello\n"),
        Cmd("MAIL FROM:<ann@sender.example>"),
        Cmd("RCPT TO:<user@example.com>"),
        Data(
            "Received: from a.example\nReceived: from relay7.evil.example\nSubject: relayed\n\nx\n",
        ),
        Cmd("QUIT"),
    ],
}];

#[test]
fn header_rules_are_the_same_in_every_language() {
    equivalent(
        "header-rules",
        &["python", "js"],
        HEADER_RULES_CONFIG,
        HEADER_RULES_SESSIONS,
        &[("user", 2)],
        1,
    );
}

/// More for the C policy, whose address and pattern handling is its own
/// code (no regex or IP library): case, subdomains, local parts.
#[test]
fn access_in_c_is_the_same_as_in_rust() {
    let connect = |client| Session {
        client: Some(client),
        steps: &[Cmd("QUIT")],
    };
    let sessions = [
        connect("203.0.113.200"),
        connect("::ffff:203.0.113.99"),
        connect("::ffff:198.51.100.1"),
        connect("2001:db8:bad:ffff::1"),
        connect("2001:db8:bae::1"),
        connect("198.51.100.1"),
        Session {
            client: None,
            steps: &[
                Cmd("HELO good.bad.example"),
                Cmd("MAIL FROM:<Billing@Spam.Example>"),
                Cmd("RCPT TO:<x@internal.example>"),
                Cmd("RCPT TO:<POSTMASTER@elsewhere.example>"),
                Cmd("RCPT TO:<user@example.com>"),
                Cmd("QUIT"),
            ],
        },
    ];
    equivalent("access", &["c"], ACCESS_CONFIG, &sessions, &[], 0);
}

#[test]
fn access_in_c_tempfail_and_accept_variant_is_the_same_as_in_rust() {
    let config = r#"allow_action = "accept"
allow_helo = ["*.example"]
deny_helo = ["[127.0.0.1]"]
deny_senders = ["<>", "b.example"]
allow_senders = ["ok@b.example"]
reject_code = 450
reject_status = "4.7.26"
reject_text = "Come back later"
"#;
    let sessions = &[
        Session {
            client: None,
            steps: &[Cmd("EHLO [127.0.0.1]"), Cmd("QUIT")],
        },
        Session {
            client: None,
            steps: &[
                Cmd("EHLO A.Example"),
                Cmd("MAIL FROM:<>"),
                Cmd("MAIL FROM:<x@B.example>"),
                Cmd("MAIL FROM:<ok@b.example>"),
                Cmd("RCPT TO:<user@example.com>"),
                Data("Subject: x\n\ny\n"),
                Cmd("QUIT"),
            ],
        },
    ];
    equivalent("access", &["c"], config, sessions, &[("user", 1)], 0);
}

/// `describe` comes after `init`, so a policy can declare only the stages
/// its config needs: every language's `access` declares the same ones.
#[test]
fn access_declares_the_same_configured_stages_in_every_language() {
    let cases = [
        (r#"deny_networks = ["203.0.113.0/24"]"#, "[Connect]"),
        (
            "deny_helo = [\"*.bad.example\"]\ndeny_recipients = [\"blocked@example.com\"]",
            "[Helo, Rcpt]",
        ),
    ];
    for (config, want) in cases {
        for lang in ["rust", "c", "python", "js"] {
            let wasm = component(lang, "access");
            let sandbox = Sandbox::new();
            let policy = format!(
                "[[policy]]\nname = \"access\"\npath = {:?}\nmax_memory = \"128MiB\"\ntimeout = \"1s\"\n[policy.config]\n{config}\n",
                wasm.display().to_string()
            );
            let server = sandbox.start_toml(&gateway_config(&sandbox, &policy), 2);
            let declared: Vec<String> = server
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "policy loaded")
                .filter_map(|v| v["fields"]["stages"].as_str().map(str::to_string))
                .collect();
            assert_eq!(
                declared,
                vec![want.to_string()],
                "{lang} access with {config:?}; log:\n{}",
                server.log_text()
            );
        }
    }
}
