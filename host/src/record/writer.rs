//! The recording writer: a thread of its own that takes finished session
//! records from a bounded queue and appends them, one JSON line each, to
//! files rotated by size.
//!
//! Sessions never wait for it: a record that does not fit the queue (by
//! count or by bytes) is dropped and counted. A write that fails (a full
//! disk, a folder that cannot be made) is logged and counted, and the
//! writer drops what comes for [`PAUSE_AFTER_ERROR`] before it tries a new
//! file; mail is not affected.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::schema::SessionRecord;
use crate::config::RecordConfig;

/// Records waiting to be written, at most (the bytes bound usually bites
/// first).
const QUEUE_LEN: usize = 4096;
/// How long the writer drops records after a failed write.
pub const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(30);
/// File names: `PREFIX<time>-<seq>.jsonl`.
const PREFIX: &str = "sessions-";

/// What the writer has done (also logged).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Sessions written.
    pub written: AtomicU64,
    /// Sessions dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Sessions dropped because writing failed (or was paused after a
    /// failure).
    pub dropped_write_failed: AtomicU64,
    /// Failed writes (each starts a pause).
    pub write_errors: AtomicU64,
    /// While writes are paused: until when, in ms since the Unix epoch.
    paused_until_ms: AtomicU64,
}

enum Msg {
    Record(Box<SessionRecord>, usize),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where lines go: a file system folder, or (in tests) anything else.
pub(crate) trait Sink: Send {
    /// Open a new file called `name`.
    fn open(&mut self, name: &str) -> std::io::Result<Box<dyn Write + Send>>;
    /// Remove all but the newest `keep` files (0: keep all).
    fn prune(&mut self, keep: usize);
}

/// The recording folder.
struct DirSink {
    dir: PathBuf,
}

impl Sink for DirSink {
    fn open(&mut self, name: &str) -> std::io::Result<Box<dyn Write + Send>> {
        std::fs::create_dir_all(&self.dir)?;
        let f = File::options()
            .create_new(true)
            .append(true)
            .open(self.dir.join(name))?;
        Ok(Box::new(f))
    }

    fn prune(&mut self, keep: usize) {
        if keep == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_recording(p))
            .collect();
        files.sort();
        let excess = files.len().saturating_sub(keep);
        for old in &files[..excess] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(target: "sluice::record", file = %old.display(), error = %e, "cannot remove an old recording");
            }
        }
    }
}

fn is_recording(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".jsonl"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The writer's handle: submit records, flush, read counters.
#[derive(Debug)]
pub struct Writer {
    tx: SyncSender<Msg>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    stats: Arc<WriterStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Writer {
    /// Start the writer thread for `cfg.dir`.
    pub fn start(cfg: &RecordConfig) -> std::io::Result<Writer> {
        let sink = DirSink {
            dir: cfg.dir.clone(),
        };
        Self::with_sink(Box::new(sink), cfg)
    }

    pub(crate) fn with_sink(sink: Box<dyn Sink>, cfg: &RecordConfig) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel(QUEUE_LEN);
        let queued = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(WriterStats::default());
        let mut state = State {
            sink,
            file: None,
            file_size: 0,
            seq: 0,
            max_file_size: cfg.max_file_size.0,
            max_files: cfg.max_files,
            queued: queued.clone(),
            stats: stats.clone(),
            dir: cfg.dir.display().to_string(),
        };
        let thread = std::thread::Builder::new()
            .name("sluice-record".into())
            .spawn(move || state.run(rx))?;
        Ok(Writer {
            tx,
            queued,
            max_queue: usize::try_from(cfg.max_queue.0).unwrap_or(usize::MAX),
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Whether writes are paused after a failure (new sessions need not
    /// be captured).
    pub fn paused(&self) -> bool {
        self.stats.paused_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Queue `record` for writing, or drop it (counted) when the queue is
    /// full. Never blocks.
    pub fn submit(&self, record: SessionRecord) {
        let size = record.approx_size();
        let before = self.queued.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_queue {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped_full();
            return;
        }
        match self.tx.try_send(Msg::Record(Box::new(record), size)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                self.dropped_full();
            }
        }
    }

    fn dropped_full(&self) {
        let n = self
            .stats
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n == 1 || n.is_power_of_two() {
            tracing::warn!(target: "sluice::record", dropped = n, "recording queue full: session not recorded");
        }
    }

    /// Wait (at most `timeout`) until everything submitted so far is
    /// written, then log the counters.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = std::sync::mpsc::channel();
        // The queue may be full: keep trying until the deadline.
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = done.recv_timeout(left);
        let s = &self.stats;
        tracing::info!(
            target: "sluice::record",
            written = s.written.load(Ordering::Relaxed),
            dropped_queue_full = s.dropped_queue_full.load(Ordering::Relaxed),
            dropped_write_failed = s.dropped_write_failed.load(Ordering::Relaxed),
            write_errors = s.write_errors.load(Ordering::Relaxed),
            "recording flushed"
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread ends when the channel closes (this sender is the only
        // one); it is not waited for.
        let _ = self.thread.lock().map(|mut t| t.take());
    }
}

struct State {
    sink: Box<dyn Sink>,
    file: Option<Box<dyn Write + Send>>,
    file_size: u64,
    seq: u64,
    max_file_size: u64,
    max_files: usize,
    queued: Arc<AtomicUsize>,
    stats: Arc<WriterStats>,
    dir: String,
}

impl State {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Record(record, size)) => {
                    self.queued.fetch_sub(size, Ordering::Relaxed);
                    self.write(&record);
                }
                Ok(Msg::Flush(ack)) => {
                    if let Some(f) = &mut self.file {
                        let _ = f.flush();
                    }
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }

    fn write(&mut self, record: &SessionRecord) {
        let paused = self.stats.paused_until_ms.load(Ordering::Relaxed);
        if paused > 0 {
            if paused > now_ms() {
                self.stats
                    .dropped_write_failed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.stats.paused_until_ms.store(0, Ordering::Relaxed);
            tracing::info!(target: "sluice::record", dir = %self.dir, "recording: trying again");
        }
        let mut line = record.to_line().into_bytes();
        line.push(b'\n');
        if let Err(e) = self.append(&line) {
            self.file = None;
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            self.stats
                .dropped_write_failed
                .fetch_add(1, Ordering::Relaxed);
            self.stats.paused_until_ms.store(
                now_ms() + PAUSE_AFTER_ERROR.as_millis() as u64,
                Ordering::Relaxed,
            );
            tracing::warn!(
                target: "sluice::record",
                dir = %self.dir,
                error = %e,
                pause_s = PAUSE_AFTER_ERROR.as_secs(),
                "cannot write the recording: recording stops for a while (mail is not affected)"
            );
            return;
        }
        self.stats.written.fetch_add(1, Ordering::Relaxed);
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let full = self.file_size > 0 && self.file_size + line.len() as u64 > self.max_file_size;
        if self.file.is_none() || full {
            if let Some(mut f) = self.file.take() {
                f.flush()?;
            }
            self.seq += 1;
            let name = format!(
                "{PREFIX}{}-{:04}.jsonl",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                self.seq
            );
            self.file = Some(self.sink.open(&name)?);
            self.file_size = 0;
            self.sink.prune(self.max_files);
        }
        let f = self.file.as_mut().expect("a file was just opened");
        f.write_all(line)?;
        f.flush()?;
        self.file_size += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    /// A sink whose files fail to write once `fail` is set, and that keeps
    /// what was written.
    type Files = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    #[derive(Clone, Default)]
    struct Mem {
        files: Files,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    struct MemFile(Mem, usize);

    impl Write for MemFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.fail.load(Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.0.files.lock().unwrap()[self.1]
                .1
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Mem {
        fn open(&mut self, name: &str) -> std::io::Result<Box<dyn Write + Send>> {
            let mut files = self.files.lock().unwrap();
            files.push((name.to_string(), Vec::new()));
            Ok(Box::new(MemFile(self.clone(), files.len() - 1)))
        }
        fn prune(&mut self, _keep: usize) {}
    }

    fn record(n: usize) -> SessionRecord {
        SessionRecord {
            format: super::super::schema::FORMAT.into(),
            version: 1,
            id: format!("s{n}"),
            started: "2026-01-01T00:00:00.000Z".into(),
            listener: "127.0.0.1:25".into(),
            peer: super::super::schema::Peer {
                ip: "192.0.2.1".into(),
                port: 1000,
            },
            proxy: None,
            tls: None,
            relay_client: false,
            policies: Vec::new(),
            redacted: false,
            truncated: false,
            events: Vec::new(),
        }
    }

    fn cfg(max_file: u64, max_queue: u64) -> RecordConfig {
        RecordConfig {
            max_file_size: ByteSize(max_file),
            max_queue: ByteSize(max_queue),
            ..RecordConfig::default()
        }
    }

    #[test]
    fn rotates_by_size() {
        let mem = Mem::default();
        let w = Writer::with_sink(Box::new(mem.clone()), &cfg(600, 1 << 20)).unwrap();
        for n in 0..6 {
            w.submit(record(n));
        }
        w.flush(Duration::from_secs(5));
        let files = mem.files.lock().unwrap();
        assert!(files.len() >= 2, "{} files", files.len());
        let lines: usize = files
            .iter()
            .map(|(_, d)| d.iter().filter(|&&b| b == b'\n').count())
            .sum();
        assert_eq!(lines, 6);
        for (name, data) in files.iter() {
            assert!(name.starts_with(PREFIX) && name.ends_with(".jsonl"));
            assert!(data.len() <= 600 || data.iter().filter(|&&b| b == b'\n').count() == 1);
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                SessionRecord::from_line(std::str::from_utf8(line).unwrap()).unwrap();
            }
        }
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn full_queue_drops_instead_of_waiting() {
        let mem = Mem::default();
        // Room for less than one record.
        let w = Writer::with_sink(Box::new(mem), &cfg(1 << 20, 100)).unwrap();
        let started = std::time::Instant::now();
        for n in 0..1000 {
            w.submit(record(n));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(w.stats().dropped_queue_full.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn a_full_disk_stops_recording_and_is_counted() {
        let mem = Mem::default();
        let w = Writer::with_sink(Box::new(mem.clone()), &cfg(1 << 20, 1 << 20)).unwrap();
        w.submit(record(0));
        w.flush(Duration::from_secs(5));
        mem.fail.store(true, Ordering::Relaxed);
        for n in 1..4 {
            w.submit(record(n));
        }
        w.flush(Duration::from_secs(5));
        let s = w.stats();
        assert_eq!(s.written.load(Ordering::Relaxed), 1);
        assert_eq!(s.write_errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.dropped_write_failed.load(Ordering::Relaxed), 3);
        assert!(w.paused());
    }
}
