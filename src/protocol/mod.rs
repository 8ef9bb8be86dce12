//! The OTA wire protocol, sans-IO.
//!
//! Nothing here touches a socket: callers feed received bytes into a
//! [`StreamDecoder`], pull decoded [`Event`]s out of it, and send the bytes the
//! encoding functions return. The exchange is described in `docs/protocol.md`.
//!
//! - [`credit`]: credit-based flow control for links without their own (a UART).
//! - [`frame`]: the binary frames of frame mode (type, length, payload), with a size limit.
//! - [`line`]: `\n`-terminated lines of line mode (micro-ota compatible).
//! - [`message`]: the typed requests and replies carried in frames.
//! - [`micro_ota`]: the host side of micro-ota's own push protocol.
//! - [`push_plan`]: the decisions of a push (delta, resume, commit repair) as a state machine.
//! - [`session`]: sealing state-changing requests to an authenticated session.

pub mod credit;
pub mod frame;
pub mod line;
pub mod message;
pub mod micro_ota;
pub mod push_plan;
pub mod session;

pub use frame::{Frame, FrameDecoder, FrameType};
pub use line::LineDecoder;
pub use message::{Hello, PushMode, Request, Response};

use crate::error::Result;

/// The line a uota host sends first to switch a uota device into frame mode.
pub const HELLO_LINE: &str = "uota 1";

/// Protocol version spoken by this crate.
pub const PROTOCOL_VERSION: u32 = 1;

/// Which framing a [`StreamDecoder`] currently decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `\n`-terminated text lines.
    Line,
    /// Binary frames.
    Frames,
    /// A fixed number of raw bytes (the body of a line-mode `get`).
    Raw(usize),
}

/// Something decoded from the device's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete line (line mode), without its terminator.
    Line(String),
    /// A complete frame (frame mode).
    Frame(Frame),
    /// A block of raw bytes requested with [`Mode::Raw`].
    Raw(Vec<u8>),
}

/// Decodes the device's byte stream of one connection into lines, frames
/// or raw blocks, switching framing when told ([`StreamDecoder::set_mode`]):
/// bytes in, events out.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are already decoded.
    pos: usize,
    mode: Mode,
    lines: LineDecoder,
    frames: FrameDecoder,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    /// A new decoder in line mode.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            mode: Mode::Line,
            lines: LineDecoder::new(line::DEFAULT_MAX_LINE),
            frames: FrameDecoder::new(frame::DEFAULT_MAX_FRAME),
        }
    }

    /// The current decoding mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switch decoding mode; bytes already buffered are decoded in the new mode.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.lines = LineDecoder::new(line::DEFAULT_MAX_LINE);
    }

    /// Hand received bytes to the decoder.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Drop decoded bytes once they are the larger part, so that
        // decoding stays linear in the bytes received.
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Number of received bytes not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Decode the next complete event, if enough bytes have arrived.
    ///
    /// A [`Mode::Raw`] read returns to line mode once its bytes are delivered.
    pub fn poll_event(&mut self) -> Result<Option<Event>> {
        let pending = &self.buf[self.pos..];
        let (event, used) = match self.mode {
            Mode::Line => match self.lines.decode_slice(pending)? {
                Some((line, used)) => (Event::Line(line), used),
                None => return Ok(None),
            },
            Mode::Frames => match self.frames.decode_slice(pending)? {
                Some((frame, used)) => (Event::Frame(frame), used),
                None => return Ok(None),
            },
            Mode::Raw(n) => {
                if pending.len() < n {
                    return Ok(None);
                }
                self.mode = Mode::Line;
                (Event::Raw(pending[..n].to_vec()), n)
            }
        };
        self.pos += used;
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_from_lines_to_frames_mid_buffer() {
        let mut c = StreamDecoder::new();
        let mut bytes = b"uota 1 {}\n".to_vec();
        frame::encode(FrameType::Response, br#"{"ok":true}"#, &mut bytes);
        c.feed(&bytes);
        assert_eq!(
            c.poll_event().unwrap(),
            Some(Event::Line("uota 1 {}".into()))
        );
        c.set_mode(Mode::Frames);
        let Some(Event::Frame(f)) = c.poll_event().unwrap() else {
            panic!("expected a frame")
        };
        assert_eq!(f.kind, FrameType::Response);
        assert_eq!(f.payload, br#"{"ok":true}"#);
        assert_eq!(c.poll_event().unwrap(), None);
    }

    #[test]
    fn raw_read_then_back_to_lines() {
        let mut c = StreamDecoder::new();
        c.feed(b"5\nhello");
        c.feed(b"ok\n");
        assert_eq!(c.poll_event().unwrap(), Some(Event::Line("5".into())));
        c.set_mode(Mode::Raw(5));
        assert_eq!(c.poll_event().unwrap(), Some(Event::Raw(b"hello".to_vec())));
        assert_eq!(c.poll_event().unwrap(), Some(Event::Line("ok".into())));
    }
}
