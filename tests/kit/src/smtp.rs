//! A line-by-line SMTP client: send a command, read its reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::REPLY;

/// A raw SMTP client over TCP; every read and write waits at most
/// [`REPLY`].
#[derive(Debug)]
pub struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply: its code and its lines (without the code) joined by
/// newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The code.
    pub code: u16,
    /// The text of its lines.
    pub text: String,
}

impl Smtp {
    /// Connect and read the greeting.
    #[must_use]
    pub fn connect(addr: SocketAddr) -> (Smtp, Reply) {
        Smtp::connect_with(addr, None)
    }

    /// Connect, send a PROXY v1 header claiming `client` (an IPv4 or IPv6
    /// address) when given, and read the greeting.
    #[must_use]
    pub fn connect_with(addr: SocketAddr, client: Option<&str>) -> (Smtp, Reply) {
        let stream = TcpStream::connect_timeout(&addr, REPLY)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(REPLY))
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_write_timeout(Some(REPLY))
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
        let mut smtp = Smtp { stream, reader };
        if let Some(ip) = client {
            let (family, dst) = if ip.contains(':') {
                ("TCP6", "::1")
            } else {
                ("TCP4", "127.0.0.1")
            };
            smtp.send(&format!("PROXY {family} {ip} {dst} 5555 25"));
        }
        let greeting = smtp.reply();
        (smtp, greeting)
    }

    /// Send one line (CRLF appended).
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    /// Read one reply; `None` when the server closed the connection (or
    /// sent something that is not a reply line).
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end();
            let code = line.get(..3).and_then(|c| c.parse().ok())?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Reply { code, text });
            }
        }
    }

    /// Read one reply, which must come.
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .unwrap_or_else(|| panic!("connection closed while waiting for a reply"))
    }

    /// Send a command; its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// Send a command and expect this reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line);
        assert_eq!(reply.code, code, "{line} got {reply:?}");
        reply
    }

    /// DATA with this message (LF line ends become CRLF, the final dot
    /// added); the final reply.
    pub fn data(&mut self, message: &str) -> Reply {
        self.expect("DATA", 354);
        let mut body = message.replace('\n', "\r\n");
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.stream
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("send message: {e}"));
        self.reply()
    }

    /// Whether the server has closed the connection (reads what is left).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}
