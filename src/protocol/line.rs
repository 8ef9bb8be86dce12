//! `\n`-terminated text lines, as micro-ota's protocol and uota's line mode use.

use crate::error::{Error, Result};

/// The longest line the host accepts from a device.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Decodes lines, stripping `\r\n`/`\n`, refusing over-long lines and invalid UTF-8.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_len: usize,
    /// Bytes of the pending line already searched for `\n` (keeps decoding linear
    /// when a long line arrives in many small reads).
    scanned: usize,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            scanned: 0,
        }
    }

    /// Take one complete line off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<String>> {
        let decoded = self.decode_slice(buf)?;
        Ok(decoded.map(|(line, used)| {
            buf.drain(..used);
            line
        }))
    }

    /// Decode one line from the front of `bytes` without consuming them:
    /// returns the line and how many bytes it took (terminator included).
    ///
    /// Call it again with the same pending bytes (plus any new ones) until it
    /// yields a line: it remembers how far it has searched.
    pub fn decode_slice(&mut self, bytes: &[u8]) -> Result<Option<(String, usize)>> {
        let too_long = || Error::Protocol(format!("line longer than {} bytes", self.max_len));
        let from = self.scanned.min(bytes.len());
        let Some(pos) = bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + from)
        else {
            self.scanned = bytes.len();
            return if bytes.len() > self.max_len {
                Err(too_long())
            } else {
                Ok(None)
            };
        };
        self.scanned = 0;
        if pos > self.max_len {
            return Err(too_long());
        }
        let mut line = &bytes[..pos];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| Error::Protocol("line is not valid UTF-8".into()))?;
        Ok(Some((text.to_string(), pos + 1)))
    }
}

/// Encode a line (adds the terminating `\n`).
pub fn encode(line: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(line.len() + 1);
    v.extend_from_slice(line.as_bytes());
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strips_crlf() {
        let mut d = LineDecoder::new(100);
        let mut b = b"pong\r\nok\n".to_vec();
        assert_eq!(d.decode(&mut b).unwrap().as_deref(), Some("pong"));
        assert_eq!(d.decode(&mut b).unwrap().as_deref(), Some("ok"));
        assert_eq!(d.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn a_line_fed_byte_by_byte_is_scanned_once() {
        let mut d = LineDecoder::new(1 << 20);
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            buf.push(b'a');
            assert_eq!(d.decode_slice(&buf).unwrap(), None);
        }
        assert_eq!(d.scanned, buf.len(), "the search resumes where it stopped");
        buf.push(b'\n');
        let (line, used) = d.decode_slice(&buf).unwrap().unwrap();
        assert_eq!((line.len(), used), (100_000, 100_001));
        assert_eq!(d.scanned, 0);
    }

    #[test]
    fn refuses_endless_line() {
        let mut d = LineDecoder::new(8);
        let mut b = vec![b'a'; 9];
        assert!(d.decode(&mut b).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = LineDecoder::new(64);
            let mut b = bytes;
            while let Ok(Some(_)) = d.decode(&mut b) {}
        }

        #[test]
        fn round_trip(lines in proptest::collection::vec("[a-z0-9 :{}\"]{0,40}", 0..10)) {
            let mut d = LineDecoder::new(64);
            let mut b = Vec::new();
            for l in &lines { b.extend(encode(l)); }
            let mut out = Vec::new();
            while let Some(l) = d.decode(&mut b).unwrap() { out.push(l); }
            prop_assert_eq!(out, lines);
        }
    }
}
