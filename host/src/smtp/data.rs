//! Message content readers: the dot-terminated DATA reader (RFC 5321
//! §4.1.4, §4.5.2) and the line-ending checker used for BDAT chunks.
//!
//! SMTP smuggling defence (CVE-2023-51764/5/6): the only end of data is
//! `CRLF . CRLF`. A bare CR or bare LF anywhere in the content marks the
//! message defective — it is read to the real end and then refused — and a
//! line is only a "line start" after a real CRLF, so `\n.\n`, `\n.\r\n`,
//! `\r\n.\n` and `\r.\r` can never end the data.

/// What was wrong with a message's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
    /// A NUL octet (never valid without BINARYMIME, which we do not offer).
    Nul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the very start).
    LineStart,
    /// `.` seen at line start.
    Dot,
    /// `.` CR seen at line start.
    DotCr,
    /// Inside a line.
    Mid,
    /// CR seen inside a line.
    Cr,
}

/// Byte-fed reader of a dot-stuffed DATA body. Keeps at most `max_size`
/// octets of message; beyond that it keeps reading to the end but stores
/// nothing more.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    body: Vec<u8>,
    max_size: u64,
    size: u64,
    defect: Option<Defect>,
}

/// The result of reading one message body.
#[derive(Debug)]
pub struct DataOutcome {
    /// The un-stuffed message, CRLF line endings, the final CRLF included.
    pub body: Vec<u8>,
    /// Octets of message content seen (may exceed what `body` kept).
    pub size: u64,
    /// The first content defect seen, if any.
    pub defect: Option<Defect>,
}

impl DataOutcome {
    /// True when the message was larger than the limit.
    pub fn too_big(&self, max_size: u64) -> bool {
        self.size > max_size
    }
}

impl DataReader {
    /// A reader for one message of at most `max_size` octets.
    pub fn new(max_size: u64) -> Self {
        Self {
            state: State::LineStart,
            body: Vec::new(),
            max_size,
            size: 0,
            defect: None,
        }
    }

    fn mark(&mut self, d: Defect) {
        if self.defect.is_none() {
            self.defect = Some(d);
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        let room = self.max_size.saturating_sub(self.size);
        let keep = (bytes.len() as u64).min(room) as usize;
        self.body.extend_from_slice(&bytes[..keep]);
        self.size += bytes.len() as u64;
    }

    /// Feed input. Returns how many octets were consumed and whether the
    /// end of data was reached; octets after the terminator are left for
    /// the caller (they are the next pipelined command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Mid => {
                    // Fast path: copy up to the next CR, LF or NUL.
                    let rest = &input[i..];
                    let n = memchr::memchr3(b'\r', b'\n', 0, rest).unwrap_or(rest.len());
                    if n > 0 {
                        self.emit(&rest[..n]);
                        i += n;
                        continue;
                    }
                    self.mid(b);
                }
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        self.mid(b);
                    }
                }
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => {
                        self.mark(Defect::BareLineEnding);
                        self.emit(b".\n");
                        self.state = State::Mid;
                    }
                    // Dot-unstuffing: the leading dot is dropped.
                    _ => self.mid(b),
                },
                State::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    self.mark(Defect::BareLineEnding);
                    self.emit(b".\r");
                    self.state = State::Mid;
                    self.mid(b);
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n");
                        self.state = State::LineStart;
                    } else {
                        self.mark(Defect::BareLineEnding);
                        self.emit(b"\r");
                        self.state = State::Mid;
                        self.mid(b);
                    }
                }
            }
            i += 1;
        }
        (i, false)
    }

    fn mid(&mut self, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // Bare LF: not a line start, so a following dot is content.
                self.mark(Defect::BareLineEnding);
                self.emit(b"\n");
                self.state = State::Mid;
            }
            0 => {
                self.mark(Defect::Nul);
                self.emit(&[0]);
                self.state = State::Mid;
            }
            _ => {
                self.emit(&[b]);
                self.state = State::Mid;
            }
        }
    }

    /// The message read so far; call after `feed` reported the end.
    /// Octets of the message held so far.
    pub fn held(&self) -> usize {
        self.body.len()
    }

    pub fn finish(self) -> DataOutcome {
        DataOutcome {
            body: self.body,
            size: self.size,
            defect: self.defect,
        }
    }
}

/// Checks the line endings of raw (BDAT) content fed in chunks.
#[derive(Debug, Default)]
pub struct LineChecker {
    prev_cr: bool,
    defect: Option<Defect>,
}

impl LineChecker {
    /// Check one piece of content.
    pub fn feed(&mut self, input: &[u8]) {
        if self.defect.is_some() {
            return;
        }
        let mut i = 0;
        while let Some(n) = memchr::memchr3(b'\r', b'\n', 0, &input[i..]) {
            let at = i + n;
            if self.prev_cr && (n > 0 || input[at] != b'\n') {
                self.defect = Some(Defect::BareLineEnding);
                return;
            }
            match input[at] {
                b'\r' => self.prev_cr = true,
                b'\n' if self.prev_cr => self.prev_cr = false,
                b'\n' => {
                    self.defect = Some(Defect::BareLineEnding);
                    return;
                }
                _ => {
                    self.defect = Some(Defect::Nul);
                    return;
                }
            }
            i = at + 1;
        }
        if self.prev_cr && i < input.len() {
            self.defect = Some(Defect::BareLineEnding);
        }
    }

    /// The first defect seen; `at_end` also flags a CR left dangling at
    /// the end of the content.
    pub fn defect(&self, at_end: bool) -> Option<Defect> {
        self.defect.or(if at_end && self.prev_cr {
            Some(Defect::BareLineEnding)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a DATA body through the reader whole and split at every byte
    /// boundary; all splits must agree. Returns (body, consumed, ended,
    /// defect).
    fn read(input: &[u8]) -> (Vec<u8>, usize, bool, Option<Defect>) {
        let whole = read_split(input, &[]);
        for cut in 0..=input.len() {
            assert_eq!(read_split(input, &[cut]), whole, "cut at {cut}");
        }
        // Also one byte at a time.
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(read_split(input, &cuts), whole, "byte at a time");
        whole
    }

    fn read_split(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool, Option<Defect>) {
        let mut r = DataReader::new(1 << 20);
        let mut consumed = 0;
        let mut ended = false;
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(input.len());
        for w in bounds.windows(2) {
            if ended {
                break;
            }
            let piece = &input[w[0]..w[1]];
            let (n, done) = r.feed(piece);
            consumed += n;
            if done {
                ended = true;
            } else {
                assert_eq!(n, piece.len());
            }
        }
        let o = r.finish();
        (o.body, consumed, ended, o.defect)
    }

    #[test]
    fn table() {
        type Case = (&'static [u8], &'static [u8], bool, Option<Defect>);
        let bl = Some(Defect::BareLineEnding);
        let cases: &[Case] = &[
            (b".\r\n", b"", true, None),
            (b"hi\r\n.\r\n", b"hi\r\n", true, None),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n", true, None),
            (b"..\r\n.\r\n", b".\r\n", true, None),
            (b"a\r\n.x\r\n.\r\n", b"a\r\nx\r\n", true, None),
            (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n", true, None),
            (b"no end\r\n", b"no end\r\n", false, None),
            (b"a\r\n.\r", b"a\r\n", false, None),
            // Smuggling variants: none ends the data, all are defects.
            (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", true, bl),
            (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n", true, bl),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\nb\r\n", true, bl),
            (b"a\r.\rb\r\n.\r\n", b"a\r.\rb\r\n", true, bl),
            (
                b"a\r\n\x00.\r\nb\r\n.\r\n",
                b"a\r\n\x00.\r\nb\r\n",
                true,
                Some(Defect::Nul),
            ),
            (b"a\r\n.\r.\r\n", b"a\r\n.\r.\r\n", false, bl),
            (b"a\r\r\n.\r\n", b"a\r\r\n", true, bl),
            (b"a\nb\r\n.\r\n", b"a\nb\r\n", true, bl),
        ];
        for (input, body, ended, defect) in cases {
            let (got_body, consumed, got_ended, got_defect) = read(input);
            assert_eq!(
                got_ended,
                *ended,
                "ended {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                got_defect,
                *defect,
                "defect {:?}",
                String::from_utf8_lossy(input)
            );
            if *ended {
                assert_eq!(consumed, input.len());
                assert_eq!(
                    String::from_utf8_lossy(&got_body),
                    String::from_utf8_lossy(body),
                    "body of {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn leaves_pipelined_bytes() {
        let input = b"x\r\n.\r\nQUIT\r\n";
        let (_, consumed, ended, _) = read(input);
        assert!(ended);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
    }

    #[test]
    fn size_limit_keeps_reading() {
        let mut r = DataReader::new(4);
        let (n, done) = r.feed(b"123456789\r\n.\r\nNOOP\r\n");
        assert!(done);
        assert_eq!(n, 14);
        let o = r.finish();
        assert!(o.too_big(4));
        assert_eq!(o.body, b"1234");
        assert_eq!(o.size, 11);
    }

    #[test]
    fn line_checker() {
        let cases: &[(&[u8], Option<Defect>)] = &[
            (b"a\r\nb\r\n", None),
            (b"a\r\nb", None),
            (b"a\nb", Some(Defect::BareLineEnding)),
            (b"a\rb", Some(Defect::BareLineEnding)),
            (b"a\r\r\n", Some(Defect::BareLineEnding)),
            (b"a\r", Some(Defect::BareLineEnding)),
            (b"a\x00", Some(Defect::Nul)),
        ];
        for (input, want) in cases {
            for cut in 0..=input.len() {
                let mut c = LineChecker::default();
                c.feed(&input[..cut]);
                c.feed(&input[cut..]);
                assert_eq!(c.defect(true), *want, "{input:?} cut {cut}");
            }
        }
    }
}
