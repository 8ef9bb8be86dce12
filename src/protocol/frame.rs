//! Binary frames: `type: u8 | length: u32 BE | payload`.

use crate::error::{Error, Result};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// The largest payload the host accepts from a device (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A JSON request, host to device.
    Request = 1,
    /// A JSON reply, device to host.
    Response = 2,
    /// Raw stream bytes; an empty one ends the stream.
    Data = 3,
}

impl FrameType {
    /// Decode a type byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Request),
            2 => Some(Self::Response),
            3 => Some(Self::Data),
            _ => None,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's type.
    pub kind: FrameType,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Append the encoding of one frame to `out`.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes.
pub fn encode(kind: FrameType, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payload larger than 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Encode one frame into a new buffer.
pub fn encode_to_vec(kind: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode(kind, payload, &mut out);
    out
}

/// Decodes frames from a byte buffer, refusing payloads over a limit.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: usize,
}

impl FrameDecoder {
    /// A decoder that refuses payloads larger than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }

    /// Take one complete frame off the front of `buf`, if there is one.
    ///
    /// An unknown type byte or an oversized length is an error as soon as the
    /// header has arrived; the buffer is then left as it was.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>> {
        let decoded = self.decode_slice(buf)?;
        Ok(decoded.map(|(frame, used)| {
            buf.drain(..used);
            frame
        }))
    }

    /// Decode one frame from the front of `bytes` without consuming them:
    /// returns the frame and how many bytes it took.
    pub fn decode_slice(&mut self, bytes: &[u8]) -> Result<Option<(Frame, usize)>> {
        if bytes.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = FrameType::from_byte(bytes[0])
            .ok_or_else(|| Error::Protocol(format!("unknown frame type 0x{:02x}", bytes[0])))?;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len > self.max_payload {
            return Err(Error::Protocol(format!(
                "frame of {len} bytes exceeds the limit of {} bytes",
                self.max_payload
            )));
        }
        if bytes.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = bytes[HEADER_LEN..HEADER_LEN + len].to_vec();
        Ok(Some((Frame { kind, payload }, HEADER_LEN + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = FrameType> {
        prop_oneof![
            Just(FrameType::Request),
            Just(FrameType::Response),
            Just(FrameType::Data)
        ]
    }

    proptest! {
        #[test]
        fn round_trip_any_split(frames in proptest::collection::vec((kinds(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8), split in 1usize..64) {
            let mut wire = Vec::new();
            for (k, p) in &frames {
                encode(*k, p, &mut wire);
            }
            let mut dec = FrameDecoder::new(1024);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    out.push((f.kind, f.payload));
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut dec = FrameDecoder::new(512);
            let mut buf = bytes;
            // Decoding either yields frames, waits for more, or errors; it never panics
            // and never consumes bytes on error.
            loop {
                let before = buf.len();
                match dec.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.payload.len() <= 512),
                    Ok(None) => break,
                    Err(_) => { prop_assert_eq!(buf.len(), before); break }
                }
            }
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut dec = FrameDecoder::new(16);
        let mut buf = vec![3, 0, 0, 0, 17];
        let err = dec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn unknown_type_is_refused() {
        let mut dec = FrameDecoder::new(16);
        let mut buf = vec![9, 0, 0, 0, 0];
        assert!(dec.decode(&mut buf).is_err());
    }

    #[test]
    fn header_layout_is_big_endian() {
        assert_eq!(
            encode_to_vec(FrameType::Data, &[7; 258])[..5],
            [3, 0, 0, 1, 2]
        );
    }
}
