//! PROXY protocol v1 and v2 (HAProxy), read before the greeting on
//! listeners that enable it, and believed only from trusted proxies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest header we read: v1 is at most 107 octets; v2 is 16 plus
/// the announced length, bounded here generously for TLVs.
const MAX_HEADER: usize = 4096;

/// What went wrong reading a PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The peer closed or the read failed.
    #[error("reading PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// Not a valid PROXY header.
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    /// Too slow.
    #[error("timed out waiting for the PROXY header")]
    Timeout,
}

/// The result of reading a header.
#[derive(Debug)]
pub struct ProxyHeader {
    /// The original client, when the header names one (`None` for
    /// `UNKNOWN`/`LOCAL`: use the connection's own peer).
    pub source: Option<SocketAddr>,
    /// Bytes read past the header (an impatient client's first command).
    pub rest: Vec<u8>,
}

/// Read one PROXY header (v1 or v2) from `io`.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    tokio::time::timeout(timeout, read_inner(io))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_inner<R: AsyncRead + Unpin>(io: &mut R) -> Result<ProxyHeader, ProxyError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(h) = parse(&buf)? {
            return Ok(h);
        }
        if buf.len() > MAX_HEADER {
            return Err(ProxyError::Invalid("header too long".into()));
        }
    }
}

/// Parse a complete header from the start of `buf`; `Ok(None)` when more
/// bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    use ppp::{HeaderResult, PartialResult, v1, v2};
    let res = HeaderResult::parse(buf);
    if res.is_incomplete() {
        return Ok(None);
    }
    let (source, len) = match res {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            (source, h.header.len())
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            (source, h.len())
        }
        HeaderResult::V1(Err(e)) => return Err(ProxyError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(ProxyError::Invalid(e.to_string())),
    };
    Ok(Some(ProxyHeader {
        source,
        rest: buf[len.min(buf.len())..].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_with_rest() {
        let h = parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 25\r\nEHLO x\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(h.rest, b"EHLO x\r\n");
    }

    #[test]
    fn v1_incomplete_and_unknown() {
        assert!(parse(b"PROXY TCP4 203.0").unwrap().is_none());
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(h.source, None);
        assert!(parse(b"EHLO x.example\r\n").is_err());
    }

    #[test]
    fn v2_tcp6() {
        let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
        h.push(0x21); // v2, PROXY
        h.push(0x21); // TCP over IPv6
        h.extend_from_slice(&36u16.to_be_bytes());
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&4444u16.to_be_bytes());
        h.extend_from_slice(&25u16.to_be_bytes());
        for cut in 0..h.len() {
            assert!(parse(&h[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(p.source, Some("[2001:db8::7]:4444".parse().unwrap()));
        assert!(p.rest.is_empty());
    }
}
