//! Arbitrary bytes through the host's sans-IO decoder (`uota::protocol`).
//!
//! The input is a small program: feed some bytes, switch between line mode,
//! frame mode and raw reads, poll events. Every poll is checked against a
//! plain reference model of the protocol (`docs/protocol.md` sections 1-2):
//! the same event, the same bytes consumed, the same errors, the size limits
//! respected, and no panic. The standalone `FrameDecoder` and `LineDecoder`
//! are also run with small limits taken from the input, and every decoded
//! frame must re-encode to exactly the bytes it was decoded from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uota::protocol::frame::{self, FrameType, DEFAULT_MAX_FRAME, HEADER_LEN};
use uota::protocol::line::DEFAULT_MAX_LINE;
use uota::protocol::{Event, FrameDecoder, LineDecoder, Mode, StreamDecoder};

/// What the reference model expects from one decode step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not enough bytes yet.
    Wait,
    /// Malformed input: the decoder must refuse it and consume nothing.
    Refuse,
    /// An event and the number of bytes it consumes.
    Got(Event, usize),
}

fn model_line(bytes: &[u8], max: usize) -> Step {
    let Some(pos) = bytes.iter().position(|&b| b == b'\n') else {
        return if bytes.len() > max {
            Step::Refuse
        } else {
            Step::Wait
        };
    };
    if pos > max {
        return Step::Refuse;
    }
    let mut line = &bytes[..pos];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    match std::str::from_utf8(line) {
        Ok(s) => Step::Got(Event::Line(s.to_string()), pos + 1),
        Err(_) => Step::Refuse,
    }
}

fn model_frame(bytes: &[u8], max: usize) -> Step {
    if bytes.len() < HEADER_LEN {
        return Step::Wait;
    }
    let Some(kind) = FrameType::from_byte(bytes[0]) else {
        return Step::Refuse;
    };
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if len > max {
        return Step::Refuse;
    }
    if bytes.len() < HEADER_LEN + len {
        return Step::Wait;
    }
    let payload = bytes[HEADER_LEN..HEADER_LEN + len].to_vec();
    Step::Got(
        Event::Frame(uota::protocol::Frame { kind, payload }),
        HEADER_LEN + len,
    )
}

/// The model's undecoded bytes. Consuming from the front is amortized O(1)
/// (a plain `Vec::drain` per line would make a run of 64 Ki empty lines
/// quadratic and slow the fuzzer down).
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    off: usize,
}

impl Pending {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn consume(&mut self, n: usize) {
        self.off += n;
        if self.off * 2 >= self.buf.len() {
            self.buf.drain(..self.off);
            self.off = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
    }
}

impl std::ops::Deref for Pending {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.off..]
    }
}

/// A cursor over the fuzz input.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Drive a `StreamDecoder` with the program in `data`, checking every poll.
fn run_connection(data: &[u8]) {
    let mut input = Input { data };
    let mut conn = StreamDecoder::new();
    // The model: the bytes not yet decoded, and the mode.
    let mut pending = Pending::default();
    let mut mode = Mode::Line;
    let mut filled = false;
    let mut fresh = false;
    while let Some(op) = input.byte() {
        match op % 10 {
            // Feed the next 1..=64 input bytes.
            0..=3 => {
                let n = usize::from(op / 10) % 64 + 1;
                let chunk = input.bytes(n);
                conn.feed(chunk);
                pending.extend_from_slice(chunk);
            }
            4 => mode = Mode::Line,
            5 => mode = Mode::Frames,
            6 => {
                let hi = usize::from(input.byte().unwrap_or(0));
                let lo = usize::from(input.byte().unwrap_or(0));
                mode = Mode::Raw(hi << 8 | lo);
            }
            // A well-formed frame whose payload is the next input bytes.
            7 => {
                let kind = [FrameType::Request, FrameType::Response, FrameType::Data]
                    [usize::from(op / 10) % 3];
                let n = usize::from(input.byte().unwrap_or(0));
                let payload = input.bytes(n);
                let bytes = frame::encode_to_vec(kind, payload);
                conn.feed(&bytes);
                pending.extend_from_slice(&bytes);
            }
            // Rarely (four byte values) and once per input, a run of one
            // byte around the line limit (64 KiB): one short of it, at it,
            // one and two over. Checked by the polls below, then the
            // connection starts afresh, so that later steps do not rescan
            // 64 KiB each.
            8 | 18 | 28 | 38 if !filled => {
                filled = true;
                // Not '\n': 64 Ki empty lines would only be slow.
                let fill = match input.byte() {
                    Some(b'\n') | None => b'a',
                    Some(b) => b,
                };
                let n = DEFAULT_MAX_LINE - 1 + usize::from(op / 10) % 4;
                let bytes = vec![fill; n];
                conn.feed(&bytes);
                pending.extend_from_slice(&bytes);
                fresh = true;
            }
            // Other values: just poll.
            8 => {}
            // A frame header claiming `len` bytes, without the payload.
            _ => {
                let hdr = input.bytes(5);
                conn.feed(hdr);
                pending.extend_from_slice(hdr);
            }
        }
        conn.set_mode(mode);
        // Poll until the decoder waits or refuses.
        loop {
            assert_eq!(conn.mode(), mode);
            assert_eq!(conn.buffered(), pending.len());
            let expected = match mode {
                Mode::Line => model_line(&pending, DEFAULT_MAX_LINE),
                Mode::Frames => model_frame(&pending, DEFAULT_MAX_FRAME),
                Mode::Raw(n) if pending.len() >= n => {
                    Step::Got(Event::Raw(pending[..n].to_vec()), n)
                }
                Mode::Raw(_) => Step::Wait,
            };
            let got = conn.poll_event();
            match (expected, got) {
                (Step::Wait, Ok(None)) => break,
                (Step::Refuse, Err(_)) => {
                    // Refusing consumes nothing, and refuses again.
                    assert_eq!(conn.buffered(), pending.len());
                    assert!(conn.poll_event().is_err());
                    break;
                }
                (Step::Got(want, used), Ok(Some(ev))) => {
                    assert_eq!(ev, want);
                    match &ev {
                        Event::Line(l) => assert!(l.len() <= DEFAULT_MAX_LINE),
                        Event::Frame(f) => assert!(f.payload.len() <= DEFAULT_MAX_FRAME),
                        Event::Raw(_) => mode = Mode::Line,
                    }
                    pending.consume(used);
                }
                (want, got) => panic!("model expects {want:?}, decoder gave {got:?}"),
            }
        }
        if fresh {
            fresh = false;
            conn = StreamDecoder::new();
            pending.clear();
            mode = Mode::Line;
        }
    }
}

/// The standalone decoders with small limits from the input.
fn run_small_decoders(data: &[u8]) {
    let [frame_limit, line_limit, rest @ ..] = data else {
        return;
    };
    let frame_limit = usize::from(*frame_limit);
    let line_limit = usize::from(*line_limit);

    let mut dec = FrameDecoder::new(frame_limit);
    let mut buf = rest.to_vec();
    loop {
        let before = buf.clone();
        let expected = model_frame(&before, frame_limit);
        match (expected, dec.decode(&mut buf)) {
            (Step::Wait, Ok(None)) => {
                assert_eq!(buf, before);
                break;
            }
            (Step::Refuse, Err(_)) => {
                assert_eq!(buf, before, "a refused frame consumed bytes");
                break;
            }
            (Step::Got(Event::Frame(want), used), Ok(Some(f))) => {
                assert_eq!(f, want);
                assert!(f.payload.len() <= frame_limit);
                assert_eq!(frame::encode_to_vec(f.kind, &f.payload), before[..used]);
                assert_eq!(buf, before[used..]);
            }
            (want, got) => panic!("frames: model expects {want:?}, decoder gave {got:?}"),
        }
    }

    let mut dec = LineDecoder::new(line_limit);
    let mut buf = rest.to_vec();
    loop {
        let before = buf.clone();
        let expected = model_line(&before, line_limit);
        match (expected, dec.decode(&mut buf)) {
            (Step::Wait, Ok(None)) => {
                assert_eq!(buf, before);
                break;
            }
            (Step::Refuse, Err(_)) => {
                assert_eq!(buf, before, "a refused line consumed bytes");
                break;
            }
            (Step::Got(Event::Line(want), used), Ok(Some(l))) => {
                assert_eq!(l, want);
                assert!(l.len() <= line_limit);
                assert!(!l.contains('\n'));
                assert_eq!(buf, before[used..]);
            }
            (want, got) => panic!("lines: model expects {want:?}, decoder gave {got:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    run_connection(data);
    run_small_decoders(data);
});
