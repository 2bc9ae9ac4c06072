//! The filesystem spool, with group commit.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use super::{Envelope, NewMessage, SetAside, Spool, SpoolError, SpoolFuture};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What [`FsSpool::open`] found and cleaned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Complete messages in the queue.
    pub messages: usize,
    /// Files of interrupted writes that were removed.
    pub removed: usize,
    /// Entries that were neither (a folder inside `tmp/`): moved to
    /// `corrupt/`.
    pub set_aside: usize,
}

/// One message written to `tmp/`, waiting for the shared sync.
#[derive(Debug)]
struct Pending {
    id: String,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// The spool on a local filesystem.
///
/// Writes happen on tokio's blocking pool, in parallel. Without group
/// commit each message then pays `fdatasync` of both files, two renames
/// and an fsync of `queue/`. With group commit the written messages are
/// handed to one committer thread that takes every message waiting
/// (up to `max_batch`), makes all of them durable with a single
/// `syncfs(2)`, renames them all and fsyncs `queue/` once — one pair of
/// syncs for the whole batch, so durability costs the same at 1 or 100
/// concurrent senders. (`syncfs` also flushes other dirty files on the
/// same filesystem; give the data folder its own filesystem on a busy
/// host.)
#[derive(Debug)]
pub struct FsSpool {
    tmp: PathBuf,
    queue: PathBuf,
    corrupt: PathBuf,
    committer: Option<mpsc::Sender<Pending>>,
    _lock: File,
}

impl FsSpool {
    /// Open (creating) the spool under `data_dir`, take the data folder's
    /// lock, and clean up after an interrupted run.
    pub fn open(
        data_dir: &Path,
        group_commit: bool,
        max_batch: usize,
    ) -> Result<(Self, Recovery), SpoolError> {
        let root = data_dir.join("spool");
        let tmp = root.join("tmp");
        let queue = root.join("queue");
        let corrupt = root.join("corrupt");
        for d in [&tmp, &queue, &corrupt] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let lock_path = data_dir.join("sluice.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| SpoolError::Locked(data_dir.display().to_string()))?;

        let mut rec = Recovery::default();
        // Anything in tmp/ is an unfinished write: it never got a 250.
        // What is not a file (nothing of ours makes folders there) is
        // moved aside for an operator rather than stopping start-up.
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let entry = entry.map_err(io_err(&tmp))?;
            let p = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                move_aside(
                    &p,
                    &corrupt,
                    &format!("tmp-{name}"),
                    "a folder inside spool/tmp/",
                )?;
                rec.set_aside += 1;
            } else {
                fs::remove_file(&p).map_err(io_err(&p))?;
                rec.removed += 1;
            }
        }
        // In queue/, a message is complete only with both files.
        let mut names: Vec<String> = fs::read_dir(&queue)
            .map_err(io_err(&queue))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in &names {
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            let partner = match ext {
                "eml" => format!("{stem}.json"),
                "json" => format!("{stem}.eml"),
                _ => continue,
            };
            if names.binary_search(&partner).is_err() {
                let p = queue.join(name);
                fs::remove_file(&p).map_err(io_err(&p))?;
                rec.removed += 1;
            } else if ext == "json" {
                rec.messages += 1;
            }
        }
        if rec.removed > 0 {
            fsync_dir(&queue)?;
        }

        let committer = if group_commit {
            let (tx, rx) = mpsc::channel::<Pending>();
            let (t, q) = (tmp.clone(), queue.clone());
            thread::Builder::new()
                .name("spool-commit".into())
                .spawn(move || commit_loop(rx, &t, &q, max_batch.max(1)))
                .map_err(io_err(&root))?;
            Some(tx)
        } else {
            None
        };
        Ok((
            Self {
                tmp,
                queue,
                corrupt,
                committer,
                _lock: lock,
            },
            rec,
        ))
    }

    /// The `queue/` folder.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }
}

/// Queue ids are ours (hex); refuse anything that could name another file.
fn check_id(id: &str) -> Result<(), SpoolError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(SpoolError::Io {
            path: id.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a queue id"),
        })
    }
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn write_file(path: &Path, parts: &[&[u8]], sync: bool) -> Result<(), SpoolError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    for p in parts {
        f.write_all(p).map_err(io_err(path))?;
    }
    if sync {
        f.sync_data().map_err(io_err(path))?;
    }
    Ok(())
}

/// Write both files to tmp/ (synced when `sync`).
fn write_tmp(tmp: &Path, mut msg: NewMessage, sync: bool) -> Result<String, SpoolError> {
    let id = msg.envelope.id.clone();
    msg.envelope.trace_len = msg.trace.len() as u64;
    msg.envelope.size = (msg.trace.len() + msg.body.len()) as u64;
    let eml = tmp.join(format!("{id}.eml"));
    let json = tmp.join(format!("{id}.json"));
    let env = serde_json::to_vec_pretty(&msg.envelope).map_err(|source| SpoolError::Envelope {
        path: json.display().to_string(),
        source,
    })?;
    let result = write_file(&eml, &[&msg.trace, &msg.body], sync)
        .and_then(|()| write_file(&json, &[&env, b"\n"], sync));
    if result.is_err() {
        let _ = fs::remove_file(&eml);
        let _ = fs::remove_file(&json);
    }
    result.map(|()| id)
}

/// Move a written message into queue/: message first, envelope last.
fn publish(tmp: &Path, queue: &Path, id: &str) -> Result<(), SpoolError> {
    for ext in ["eml", "json"] {
        let from = tmp.join(format!("{id}.{ext}"));
        let to = queue.join(format!("{id}.{ext}"));
        fs::rename(&from, &to).map_err(io_err(&from))?;
    }
    Ok(())
}

fn commit_loop(rx: mpsc::Receiver<Pending>, tmp: &Path, queue: &Path, max_batch: usize) {
    let tmp_dir = match File::open(tmp) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "spool committer cannot open tmp/");
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let synced = rustix::fs::syncfs(&tmp_dir).map_err(|e| SpoolError::Io {
            path: tmp.display().to_string(),
            source: e.into(),
        });
        let mut results: Vec<Result<(), SpoolError>> = Vec::with_capacity(batch.len());
        for p in &batch {
            results.push(match &synced {
                Ok(()) => publish(tmp, queue, &p.id),
                Err(e) => Err(SpoolError::Io {
                    path: tmp.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                }),
            });
        }
        let dir_synced = fsync_dir(queue);
        tracing::trace!(batch = batch.len(), "spool group commit");
        for (p, r) in batch.into_iter().zip(results) {
            let r = match (&dir_synced, r) {
                (Ok(()), r) => r,
                (Err(e), _) => Err(SpoolError::Io {
                    path: queue.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                }),
            };
            if r.is_err() {
                // Not durable: take it back out so it is never delivered
                // without its 250 having been sent.
                for ext in ["json", "eml"] {
                    let _ = fs::remove_file(queue.join(format!("{}.{ext}", p.id)));
                    let _ = fs::remove_file(tmp.join(format!("{}.{ext}", p.id)));
                }
            }
            let _ = p.done.send(r);
        }
    }
}

impl Spool for FsSpool {
    fn store(&self, msg: NewMessage) -> SpoolFuture<'_, ()> {
        Box::pin(async move {
            let tmp = self.tmp.clone();
            let queue = self.queue.clone();
            let group = self.committer.is_some();
            let id = tokio::task::spawn_blocking(move || {
                let id = write_tmp(&tmp, msg, !group)?;
                if !group {
                    publish(&tmp, &queue, &id)?;
                    fsync_dir(&queue)?;
                }
                Ok::<_, SpoolError>(id)
            })
            .await
            .map_err(|_| SpoolError::Closed)??;
            if let Some(committer) = &self.committer {
                let (done, wait) = oneshot::channel();
                committer
                    .send(Pending { id, done })
                    .map_err(|_| SpoolError::Closed)?;
                wait.await.map_err(|_| SpoolError::Closed)??;
            }
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<String>, SpoolError> {
        let mut ids: Vec<String> = fs::read_dir(&self.queue)
            .map_err(io_err(&self.queue))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn read(&self, id: &str) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let env = self.read_envelope(id)?;
        let body = self.read_body(id)?;
        Ok((env, body))
    }

    fn read_body(&self, id: &str) -> Result<Vec<u8>, SpoolError> {
        check_id(id)?;
        let eml = self.queue.join(format!("{id}.eml"));
        fs::read(&eml).map_err(io_err(&eml))
    }

    fn read_envelope(&self, id: &str) -> Result<Envelope, SpoolError> {
        check_id(id)?;
        let json = self.queue.join(format!("{id}.json"));
        let env_bytes = fs::read(&json).map_err(io_err(&json))?;
        serde_json::from_slice(&env_bytes).map_err(|source| SpoolError::Envelope {
            path: json.display().to_string(),
            source,
        })
    }

    fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        check_id(&env.id)?;
        // A name of its own per write: two writers of one message (there
        // should be one, the queue) never share a half-written file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}.{n}.update.json", env.id));
        let dest = self.queue.join(format!("{}.json", env.id));
        if !dest.exists() {
            return Err(io_err(&dest)(std::io::ErrorKind::NotFound.into()));
        }
        let bytes = serde_json::to_vec_pretty(env).map_err(|source| SpoolError::Envelope {
            path: dest.display().to_string(),
            source,
        })?;
        let _ = fs::remove_file(&tmp);
        write_file(&tmp, &[&bytes, b"\n"], true)?;
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fsync_dir(&self.queue)
    }

    fn remove(&self, id: &str) -> Result<(), SpoolError> {
        check_id(id)?;
        for ext in ["json", "eml"] {
            let p = self.queue.join(format!("{id}.{ext}"));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        fsync_dir(&self.queue)
    }

    fn set_aside(&self, id: &str, why: &str) -> Result<(), SpoolError> {
        check_id(id)?;
        let mut moved = false;
        for ext in ["json", "eml"] {
            let p = self.queue.join(format!("{id}.{ext}"));
            if p.symlink_metadata().is_ok() {
                let dest = self.corrupt.join(format!("{id}.{ext}"));
                fs::rename(&p, &dest).map_err(io_err(&p))?;
                moved = true;
            }
        }
        if moved {
            write_reason(&self.corrupt, id, why)?;
            fsync_dir(&self.corrupt)?;
            fsync_dir(&self.queue)?;
        }
        Ok(())
    }

    fn corrupt(&self) -> Result<Vec<SetAside>, SpoolError> {
        let mut found: std::collections::BTreeMap<String, SetAside> = Default::default();
        for entry in fs::read_dir(&self.corrupt).map_err(io_err(&self.corrupt))? {
            let entry = entry.map_err(io_err(&self.corrupt))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (stem, ext) = match name.rsplit_once('.') {
                Some((stem, ext)) if matches!(ext, "json" | "eml" | "reason") => (stem, ext),
                _ => (name.as_str(), ""),
            };
            let e = found.entry(stem.to_string()).or_insert_with(|| SetAside {
                id: stem.to_string(),
                reason: String::new(),
                files: Vec::new(),
            });
            if ext == "reason" {
                e.reason = fs::read_to_string(entry.path())
                    .unwrap_or_default()
                    .trim_end()
                    .to_string();
            } else {
                e.files.push(name.clone());
            }
        }
        let mut all: Vec<SetAside> = found.into_values().collect();
        for e in &mut all {
            e.files.sort();
        }
        Ok(all)
    }
}

/// Move `path` (a file or a folder) into `corrupt/` as `name`, with a
/// `name.reason` note; an existing entry of that name gets a suffix.
fn move_aside(path: &Path, corrupt: &Path, name: &str, why: &str) -> Result<(), SpoolError> {
    let mut dest_name = name.to_string();
    let mut n = 1;
    while corrupt.join(&dest_name).symlink_metadata().is_ok() {
        dest_name = format!("{name}-{n}");
        n += 1;
    }
    fs::rename(path, corrupt.join(&dest_name)).map_err(io_err(path))?;
    write_reason(corrupt, &dest_name, why)?;
    fsync_dir(corrupt)
}

/// `corrupt/NAME.reason`: why, and when.
fn write_reason(corrupt: &Path, name: &str, why: &str) -> Result<(), SpoolError> {
    let p = corrupt.join(format!("{name}.reason"));
    let text = format!("{}: {why}\n", chrono::Utc::now().to_rfc3339());
    fs::write(&p, text).map_err(io_err(&p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::command::MailParams;
    use crate::spool::{ClientInfo, new_queue_id};

    fn msg(body: &str) -> NewMessage {
        NewMessage {
            envelope: Envelope::new(
                new_queue_id(),
                chrono::Utc::now(),
                "a@example.com".into(),
                vec![crate::spool::Recipient::new("b@example.com".into())],
                MailParams::default(),
                false,
                ClientInfo {
                    ip: "127.0.0.1".into(),
                    port: 1,
                    listener: "127.0.0.1:25".into(),
                    helo: "x".into(),
                    esmtp: true,
                    tls: None,
                    proxy: None,
                },
            ),
            trace: b"Received: test\r\n".to_vec(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_and_read_both_modes() {
        for group in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (spool, rec) = FsSpool::open(dir.path(), group, 16).unwrap();
            assert_eq!(rec, Recovery::default());
            let spool = std::sync::Arc::new(spool);
            let mut tasks = Vec::new();
            for i in 0..20 {
                let s = spool.clone();
                tasks.push(tokio::spawn(async move {
                    let m = msg(&format!("message {i}\r\n"));
                    let id = m.envelope.id.clone();
                    s.store(m).await.unwrap();
                    id
                }));
            }
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.unwrap());
            }
            ids.sort();
            assert_eq!(spool.list().unwrap(), ids);
            let (mut env, body) = spool.read(&ids[0]).unwrap();
            assert_eq!(env.trace_len, 16);
            env.held = true;
            spool.update(&env).unwrap();
            assert!(spool.read_envelope(&ids[0]).unwrap().held);
            spool.remove(&ids[1]).unwrap();
            assert_eq!(spool.list().unwrap().len(), 19);
            assert!(spool.read_envelope("../x").is_err());
            ids.remove(1);
            assert_eq!(env.size, body.len() as u64);
            assert!(body.starts_with(b"Received: test\r\nmessage "));
            assert_eq!(
                fs::read_dir(dir.path().join("spool/tmp")).unwrap().count(),
                0
            );
        }
    }

    #[test]
    fn recovery_removes_partial_writes_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_spool, _) = FsSpool::open(dir.path(), true, 16).unwrap();
            // A second gateway on the same folder is refused.
            assert!(matches!(
                FsSpool::open(dir.path(), true, 16),
                Err(SpoolError::Locked(_))
            ));
        }
        let q = dir.path().join("spool/queue");
        let t = dir.path().join("spool/tmp");
        fs::write(t.join("A.eml"), b"partial").unwrap();
        fs::write(q.join("B.eml"), b"no envelope").unwrap();
        fs::write(q.join("C.json"), b"{}").unwrap();
        fs::write(q.join("D.eml"), b"ok").unwrap();
        fs::write(q.join("D.json"), b"{}").unwrap();
        fs::create_dir_all(t.join("E/inside")).unwrap();
        let (spool, rec) = FsSpool::open(dir.path(), false, 16).unwrap();
        assert_eq!(
            rec,
            Recovery {
                messages: 1,
                removed: 3,
                set_aside: 1,
            }
        );
        assert_eq!(spool.list().unwrap(), ["D"]);
        let aside = spool.corrupt().unwrap();
        assert_eq!(aside.len(), 1);
        assert_eq!(aside[0].id, "tmp-E");
        assert!(
            aside[0].reason.contains("a folder inside spool/tmp/"),
            "{aside:?}"
        );
        // D's envelope does not decode: set aside, with both files.
        assert!(spool.read_envelope("D").unwrap_err().is_damage());
        spool.set_aside("D", "bad JSON").unwrap();
        assert!(spool.list().unwrap().is_empty());
        let d = spool
            .corrupt()
            .unwrap()
            .into_iter()
            .find(|c| c.id == "D")
            .unwrap();
        assert_eq!(d.files, ["D.eml", "D.json"]);
        assert!(d.reason.ends_with("bad JSON"), "{d:?}");
    }
}
