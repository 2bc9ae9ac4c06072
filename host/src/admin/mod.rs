//! The local admin interface: a Unix socket in the data folder
//! (`DATA_DIR/admin.sock`, mode 0600) taking one JSON request per line and
//! answering one JSON line. `sluice queue …` is its client.
//!
//! Requests: `{"op":"list"}`, `{"op":"show","id":ID}`,
//! `{"op":"retry","id":ID}` (or no id: all), `{"op":"delete","id":ID}`,
//! `{"op":"hold","id":ID}`, `{"op":"release","id":ID}`,
//! `{"op":"policy_reload"}`, `{"op":"policy_status"}`. Answers carry
//! `"ok": true` and the data, or `"ok": false` and `"error"`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::policy::Reloader;
use crate::queue::Queue;
use std::sync::Arc;

/// The socket's path for a data folder.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// One admin request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// All queued messages.
    List,
    /// One message.
    Show {
        /// Queue id.
        id: String,
    },
    /// Retry deferred recipients now.
    Retry {
        /// Queue id; none: every message.
        #[serde(default)]
        id: Option<String>,
    },
    /// Delete without delivery or DSN.
    Delete {
        /// Queue id.
        id: String,
    },
    /// Hold: no delivery until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message.
    Release {
        /// Queue id.
        id: String,
    },
    /// Reload the policies (and the config file's policy chain) now.
    #[serde(rename = "policy_reload")]
    PolicyReload,
    /// The policies in force and their figures.
    #[serde(rename = "policy_status")]
    PolicyStatus,
}

/// Admin errors.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket could not be set up or reached.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gateway answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The answer was not understood.
    #[error("bad answer from the gateway: {0}")]
    BadAnswer(String),
}

async fn answer(queue: &Queue, reloader: &Reloader, req: Request) -> Value {
    let result = match req {
        Request::PolicyReload => match reloader.reload("sluice policy reload").await {
            Ok(r) => Ok(crate::policy::report_json(&r)),
            Err(e) => return json!({ "ok": false, "error": e }),
        },
        Request::PolicyStatus => Ok(reloader.status()),
        Request::List => match queue.list().await {
            Ok(m) => queue
                .corrupt()
                .await
                .map(|c| json!({ "messages": m, "corrupt": c })),
            Err(e) => Err(e),
        },
        Request::Show { id } => queue
            .show(&id)
            .await
            .map(|(env, headers)| json!({ "envelope": env, "headers": headers })),
        Request::Retry { id } => queue
            .retry(id.as_deref())
            .await
            .map(|n| json!({ "count": n })),
        Request::Delete { id } => queue.delete(&id).await.map(|()| json!({})),
        Request::Hold { id } => queue.hold(&id, true).await.map(|()| json!({})),
        Request::Release { id } => queue.hold(&id, false).await.map(|()| json!({})),
    };
    match result {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v
        }
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

/// Bind the socket (replacing a stale one; the data folder lock already
/// proves no other gateway uses it).
pub fn bind(data_dir: &Path) -> Result<UnixListener, AdminError> {
    let path = socket_path(data_dir);
    let err = |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Made 0600 at once by the process umask (077), inside the data
    // folder (0700): no chmod after the fact, which would race and follow
    // a symlink. Each connection's peer is checked as well ([`serve`]).
    UnixListener::bind(&path).map_err(err)
}

/// Tell a refused peer why, briefly, and close.
async fn refuse(mut stream: tokio::net::UnixStream) {
    let line = b"{\"ok\":false,\"error\":\"permission denied: not the gateway's user\"}\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line)).await;
}

/// Serve admin requests until shutdown.
pub async fn serve(
    listener: UnixListener,
    queue: Queue,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only the gateway's own user (and root) may command it.
        match stream.peer_cred() {
            Ok(c) if c.uid() == crate::private::euid() || c.uid() == 0 => {}
            Ok(c) => {
                tracing::warn!(uid = c.uid(), pid = ?c.pid(), "admin socket: refused a connection from another user");
                refuse(stream).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: cannot read the peer's credentials; refused");
                refuse(stream).await;
                continue;
            }
        }
        let queue = queue.clone();
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r).take(64 * 1024).lines();
            let fut = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            tracing::debug!(?req, "admin request");
                            answer(&queue, &reloader, req).await
                        }
                        Err(e) => json!({ "ok": false, "error": format!("bad request: {e}") }),
                    };
                    let mut out = reply.to_string();
                    out.push('\n');
                    if w.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(60), fut).await;
        });
    }
    let _ = std::fs::remove_file(
        listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_default(),
    );
}

/// Send one request to a running gateway (blocking; for the CLI).
pub fn request(data_dir: &Path, req: &Request) -> Result<Value, AdminError> {
    let path = socket_path(data_dir);
    let err = |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(err)?;
    let mut line = serde_json::to_string(req).map_err(|e| AdminError::BadAnswer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(err)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(err)?;
    let v: Value =
        serde_json::from_str(&answer).map_err(|e| AdminError::BadAnswer(e.to_string()))?;
    if v["ok"] == json!(true) {
        Ok(v)
    } else {
        Err(AdminError::Refused(
            v["error"].as_str().unwrap_or("unknown error").to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::List).unwrap(),
            r#"{"op":"list"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"retry"}"#).unwrap(),
            Request::Retry { id: None }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"hold","id":"AB"}"#).unwrap(),
            Request::Hold { id: "AB".into() }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }
}
