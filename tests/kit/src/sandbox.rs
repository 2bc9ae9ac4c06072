//! A temporary folder with one server's config file and data folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{DELIVERY, Server};

/// A temporary folder holding one test's config file and data folder;
/// removed when it drops.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The gateway the policy tests run: a plain listener on 127.0.0.1 (and a
/// PROXY-protocol one trusting loopback when `proxy`), `example.com` local
/// (delivered to Maildirs under the data folder), loopback a relay
/// network, compiled policies cached in `engine_cache`.
#[derive(Debug, Clone)]
pub struct PolicyGateway<'a> {
    /// Add the second, PROXY-protocol listener.
    pub proxy: bool,
    /// Let the queue deliver.
    pub deliver: bool,
    /// Add a `[dns]` section whose only name server, `127.0.0.1:9`,
    /// answers nothing (leave it out when `rest` has its own `[dns]`).
    pub quiet_dns: bool,
    /// The compiled-code cache (shared by the tests, so only the first
    /// start after a policy changes compiles it).
    pub engine_cache: &'a Path,
    /// `[policy_engine] max_instances`.
    pub max_instances: u32,
    /// `[policy_engine] max_memory`, e.g. `"64MiB"`.
    pub max_memory: &'a str,
}

impl Sandbox {
    /// A fresh, empty sandbox.
    #[must_use]
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("sluice-test-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir: {e}")),
        }
    }

    /// The sandbox folder.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The server's `data_dir`.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file the `start` methods write.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// Write a file into the sandbox and return its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// The config of a [`PolicyGateway`], then `rest` (the `[[policy]]`
    /// entries, `[dns.a]`, …).
    #[must_use]
    pub fn policy_config(&self, gw: &PolicyGateway<'_>, rest: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "data_dir = {:?}", self.data_dir().display().to_string());
        t.push_str("hostname = \"mx.test.example\"\nlocal_domains = [\"example.com\"]\n");
        t.push_str(
            "relay_networks = [\"127.0.0.0/8\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
        );
        if gw.proxy {
            t.push_str(
                "\n[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            );
        }
        let _ = writeln!(t, "\n[queue]\ndeliver = {}", gw.deliver);
        t.push_str("\n[delivery]\nconnect_timeout = \"2s\"\n");
        if gw.quiet_dns {
            t.push_str("\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n");
        }
        let _ = writeln!(
            t,
            "\n[policy_engine]\ncache_dir = {:?}\nmax_instances = {}\nmax_memory = {:?}",
            gw.engine_cache.display().to_string(),
            gw.max_instances,
            gw.max_memory
        );
        t.push('\n');
        t.push_str(rest);
        t
    }

    /// Write `toml` (a whole config, with [`Sandbox::data_dir`] as its
    /// `data_dir`) and start a server with `listeners` listeners on it.
    #[must_use]
    pub fn start_toml(&self, toml: &str, listeners: usize) -> Server {
        let path = self.config_path();
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("write config: {e}"));
        Server::start(&path, listeners)
    }

    /// Start a server again on the config file already written (after a
    /// crash or a stop), on the same data folder.
    #[must_use]
    pub fn restart(&self, listeners: usize) -> Server {
        Server::start(&self.config_path(), listeners)
    }

    /// The messages delivered to `local@domain`'s Maildir, sorted.
    #[must_use]
    pub fn maildir(&self, domain: &str, local: &str) -> Vec<Vec<u8>> {
        let dir = self
            .data_dir()
            .join("mail")
            .join(domain)
            .join(local)
            .join("new");
        let mut found: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect();
        found.sort();
        found
    }

    /// Wait (at most [`DELIVERY`]) until `count` messages are in
    /// `local@domain`'s Maildir; what is there then.
    #[must_use]
    pub fn wait_maildir(&self, domain: &str, local: &str, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let found = self.maildir(domain, local);
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The envelopes (`*.json`) in the spool's queue.
    #[must_use]
    pub fn spooled_envelopes(&self) -> Vec<Value> {
        let dir = self.data_dir().join("spool").join("queue");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }
}
