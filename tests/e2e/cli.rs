//! The command line: `check-config`, and `serve` refusing a bad file.

use std::process::Command;

use crate::harness::{Sandbox, ServerConfig, run_bounded, sluice_bin};

#[test]
fn check_config_accepts_a_good_file() {
    let sb = Sandbox::new();
    let path = sb.write(
        "good.toml",
        ServerConfig::default().to_toml(&sb.data_dir()).as_bytes(),
    );
    let out = run_bounded(
        Command::new(sluice_bin()).arg("check-config").arg(&path),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config on a good file: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{}: ok", path.display())),
        "check-config prints FILE: ok, got {stdout:?}"
    );

    // An empty file is a working configuration too.
    let empty = sb.write("empty.toml", b"");
    let out = run_bounded(
        Command::new(sluice_bin()).arg("check-config").arg(&empty),
        None,
    );
    assert!(
        out.status.success(),
        "empty file: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run check-config on `text` and return its stderr; asserts failure.
fn check_bad(sb: &Sandbox, name: &str, text: &str) -> String {
    let path = sb.write(name, text.as_bytes());
    let out = run_bounded(
        Command::new(sluice_bin()).arg("check-config").arg(&path),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "check-config accepted {name}:\n{text}"
    );
    assert!(
        stderr.contains(name),
        "the error names the file {name}: {stderr:?}"
    );
    stderr
}

#[test]
fn check_config_names_the_line_of_an_error() {
    let sb = Sandbox::new();
    let stderr = check_bad(
        &sb,
        "unknown-key.toml",
        "hostname = \"mx.test.example\"\nlocal_domains = [\"example.com\"]\n\nfrobnicate = true\n",
    );
    assert!(
        stderr.contains("line 4"),
        "unknown key on line 4: {stderr:?}"
    );
    assert!(
        stderr.contains("frobnicate"),
        "the error names the key: {stderr:?}"
    );

    let stderr = check_bad(
        &sb,
        "nested-key.toml",
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[limits]\nmax_recipients = 10\nmax_recipient = 5\n",
    );
    assert!(
        stderr.contains("line 6"),
        "unknown [limits] key on line 6: {stderr:?}"
    );

    let stderr = check_bad(
        &sb,
        "bad-size.toml",
        "\n[limits]\nmax_message_size = \"ten parsecs\"\n",
    );
    assert!(stderr.contains("line 3"), "bad size on line 3: {stderr:?}");

    let stderr = check_bad(
        &sb,
        "bad-addr.toml",
        "[[listener]]\naddress = \"not an address\"\n",
    );
    assert!(
        stderr.contains("line 2"),
        "bad listener address on line 2: {stderr:?}"
    );
}

#[test]
fn serve_refuses_a_bad_config() {
    let sb = Sandbox::new();
    let path = sb.write("bad.toml", b"data_dir = \"/nonexistent\"\nbogus_key = 1\n");
    let out = run_bounded(
        Command::new(sluice_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--log-format")
            .arg("json"),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "serve started with a bad config: {stderr}"
    );
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 2"),
        "{stderr}"
    );
}
