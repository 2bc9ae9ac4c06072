//! The client side's DATA encoder, sans-IO: the message as it goes out
//! after `DATA`.

/// Encodes a message for transfer after `DATA`: a line starting with `.`
/// gets another `.` (RFC 5321 §4.5.2), every bare LF or bare CR becomes
/// CRLF, and [`finish`](DataEncoder::finish) ends the last line and adds
/// the terminating `.`. Feed the message in pieces of any size; the output
/// is the same.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    /// At the start of a message.
    pub fn new() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Encode the next piece of the message, appending to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 4);
        while let Some(&first) = input.first() {
            if self.pending_cr {
                // A CR ends the line whatever follows; a LF right after it
                // belongs to it.
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if first == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            match memchr::memchr2(b'\r', b'\n', input) {
                None => {
                    out.extend_from_slice(input);
                    return;
                }
                Some(i) => {
                    out.extend_from_slice(&input[..i]);
                    if input[i] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.line_start = true;
                    } else {
                        self.pending_cr = true;
                    }
                    input = &input[i + 1..];
                }
            }
        }
    }

    /// End the message: a CRLF if the last line lacks one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_start = true;
            out.extend_from_slice(b"\r\n");
        }
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.line_start = true;
    }
}

/// Dot-stuff a message for DATA byte for byte: a leading `.` on each line
/// doubled, a CRLF added when the message does not end with one, nothing
/// else changed (replay feeds recorded bytes to the server side, bare line
/// endings included). Without the final `.`. The [`DataEncoder`] also
/// makes every line ending CRLF.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- DATA encoder ----------------------------------------------------

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = DataEncoder::new();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn data_encoding() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r\n.\r\nsmuggled", b"a\r\n..\r\nsmuggled\r\n.\r\n"),
            (b"a\n.\r\nsmuggled", b"a\r\n..\r\nsmuggled\r\n.\r\n"),
            (b"x.y\r\n", b"x.y\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
        ];
        for (input, want) in cases {
            let got = encode(&[input]);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            // Any split gives the same bytes.
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                assert_eq!(encode(&[a, b]), *want, "split at {i}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(encode(&bytes), *want);
        }
    }

    #[test]
    fn data_encoding_never_emits_bare_line_endings() {
        let input: Vec<u8> = (0u32..4000)
            .map(|i| match i.wrapping_mul(2_654_435_761) >> 29 {
                0 => b'\r',
                1 => b'\n',
                2 => b'.',
                _ => b'a',
            })
            .collect();
        let out = encode(&[&input]);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(out[i + 1], b'\n', "bare CR at {i}");
            }
        }
        assert!(out.ends_with(b"\r\n.\r\n"));
        // The only line that is a lone dot is the last one.
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\r\n.\r\n").count(), 1);
    }
}
