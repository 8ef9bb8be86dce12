//! `\n`-terminated text lines, as micro-ota's protocol and uota's line mode use.

use crate::error::{Error, Result};

/// The longest line the host accepts from a device.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Decodes lines, stripping `\r\n`/`\n`, refusing over-long lines and invalid UTF-8.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_len: usize,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// Take one complete line off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<String>> {
        let Some(pos) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.max_len {
                return Err(Error::Protocol(format!(
                    "line longer than {} bytes",
                    self.max_len
                )));
            }
            return Ok(None);
        };
        if pos > self.max_len {
            return Err(Error::Protocol(format!(
                "line longer than {} bytes",
                self.max_len
            )));
        }
        let mut line: Vec<u8> = buf.drain(..=pos).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| Error::Protocol("line is not valid UTF-8".into()))
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
