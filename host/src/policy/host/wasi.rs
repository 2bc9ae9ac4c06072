//! The WASI a policy gets: no files, sockets or environment; its stdout and
//! stderr captured into a bounded buffer; a frozen wall clock without the
//! `clock` capability.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime_wasi::HostWallClock;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::*;

/// Guest stdout or stderr: the first [`MAX_OUTPUT`] octets since the last
/// drain are kept, the rest counted and dropped. Writes never fail, so a
/// chatty guest is never trapped for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<CaptureBuf>>);

#[derive(Debug, Default)]
struct CaptureBuf {
    data: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT.saturating_sub(b.data.len());
        let keep = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..keep]);
        b.dropped += bytes.len() - keep;
    }

    /// What was written since the last drain, and how much was dropped.
    pub(crate) fn drain(&self) -> Option<(String, usize)> {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if b.data.is_empty() && b.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&b.data).into_owned();
        let dropped = b.dropped;
        b.data.clear();
        b.dropped = 0;
        Some((text, dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// The WASI wall clock of a policy without the `clock` capability: always
/// the Unix epoch.
pub(super) struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_bounded() {
        let c = Capture::default();
        assert!(c.drain().is_none());
        c.push(&vec![b'x'; MAX_OUTPUT + 10]);
        let (text, dropped) = c.drain().unwrap();
        assert_eq!(text.len(), MAX_OUTPUT);
        assert_eq!(dropped, 10);
        assert!(c.drain().is_none());
    }
}
