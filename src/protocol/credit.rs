//! Credit-based flow control, sans-IO.
//!
//! A UART has no flow control of its own: bytes that arrive while the board
//! is busy (writing flash, say) and its receive buffer (256 bytes on many
//! ports) is full are lost. So the receiver grants the sender credit: the
//! sender starts with a window of bytes it may send, and the receiver sends
//! one grant byte ([`GRANT`]) each time it has taken [`CreditWindow::credit`]
//! bytes in; each grant lets the sender send that many more. The sender never
//! has more than [`CreditWindow::window`] bytes in flight.
//!
//! Two sessions use it: the file agent over the REPL (`repl::fs`, where the
//! grant byte sits between the agent's reply frames) and OTA sessions on a
//! serial console (`transport::credit`, where [`GrantScanner`] takes grant
//! bytes out from between the OTA protocol's lines and frames).
//!
//! ```
//! use uota::protocol::credit::{Credit, CreditWindow, GrantScanner};
//!
//! let mut credit = Credit::new(CreditWindow { credit: 128, window: 256 });
//! assert_eq!(credit.take(1000), 256); // the first window
//! assert_eq!(credit.take(1), 0); // nothing more until a grant
//!
//! // The device's reply: a hello line, a grant, a frame, a grant.
//! let mut scan = GrantScanner::new();
//! let mut data = Vec::new();
//! let grants = scan.feed(b"uota 1 {}\n\x06\x02\x00\x00\x00\x01\x06\x06", &mut data);
//! assert_eq!(grants, 2);
//! assert_eq!(data, b"uota 1 {}\n\x02\x00\x00\x00\x01\x06");
//! for _ in 0..grants {
//!     credit.grant();
//! }
//! assert_eq!(credit.take(1000), 256);
//! ```

/// The byte a receiver sends for each [`CreditWindow::credit`] bytes it took in.
pub const GRANT: u8 = 0x06;

/// How much a receiver grants at a time, and how much the sender may have
/// in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditWindow {
    /// Bytes the receiver takes in per grant (64 to 16384).
    pub credit: usize,
    /// Bytes the sender may have sent that were not granted back yet: the
    /// first window, and the most in flight; at least twice `credit`. At
    /// or below the board's receive buffer when the link has no flow control.
    pub window: usize,
}

impl CreditWindow {
    /// Safe on every UART: 128-byte grants, 256 bytes in flight (the figures
    /// MicroPython's own raw-paste mode uses).
    pub const UART: CreditWindow = CreditWindow {
        credit: 128,
        window: 256,
    };

    /// For a link that cannot overrun the board (a native USB console, a
    /// pseudo-terminal): 2 KB grants and 8 KB in flight, so that round trips
    /// stop mattering.
    pub const FAST_LINK: CreditWindow = CreditWindow {
        credit: 2048,
        window: 8192,
    };

    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(64..=16_384).contains(&self.credit) {
            return Err(format!("credit must be 64..=16384, not {}", self.credit));
        }
        if self.window < 2 * self.credit {
            return Err(format!(
                "window ({}) must be at least twice the credit ({})",
                self.window, self.credit
            ));
        }
        Ok(())
    }
}

/// The sender's side: how many bytes it may still send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    window: CreditWindow,
    available: usize,
}

impl Credit {
    /// A sender that has sent nothing yet: the whole window is available.
    pub fn new(window: CreditWindow) -> Self {
        Self {
            window,
            available: window.window,
        }
    }

    /// The settings.
    pub fn window(&self) -> CreditWindow {
        self.window
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> usize {
        self.available
    }

    /// Take up to `want` bytes of credit; returns how many may be sent.
    pub fn take(&mut self, want: usize) -> usize {
        let n = want.min(self.available);
        self.available -= n;
        n
    }

    /// Give back what [`take`](Self::take) allowed but was not sent.
    pub fn untake(&mut self, n: usize) {
        self.available = (self.available + n).min(self.window.window);
    }

    /// One grant byte arrived. Credit never exceeds the window, whatever the
    /// receiver sends.
    pub fn grant(&mut self) {
        self.available = (self.available + self.window.credit).min(self.window.window);
    }

    /// Start over (a new receiver): the whole window is available again.
    pub fn reset(&mut self) {
        self.available = self.window.window;
    }
}

/// Takes grant bytes out of what a device sends in an OTA session on a
/// serial console.
///
/// The device sends a grant only where a line or a frame may start, so a
/// grant never splits one: in line mode at the start of a line, and from the
/// line after the hello reply (a line starting with `uota `) on, between
/// frames (where a frame's type byte, 1 to 3, would be). Everything else is
/// passed on as it came.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantScanner {
    state: Scan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Scan {
    /// Line mode, at the start of a line.
    #[default]
    LineStart,
    /// Line mode, inside a line: how many bytes of `uota ` it starts with
    /// (`None` once it differs).
    Line(Option<usize>),
    /// Frame mode, between frames.
    FrameStart,
    /// Frame mode: this many bytes of the 4-byte length have arrived.
    Header { have: u8, len: u32 },
    /// Frame mode: this many payload bytes are still to come.
    Payload(u32),
}

/// What a hello reply starts with; frame mode follows its line.
const HELLO_REPLY: &[u8] = b"uota ";

impl GrantScanner {
    /// A scanner at the start of a session (line mode).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the hello reply has passed (the stream is in frame mode).
    pub fn in_frames(&self) -> bool {
        !matches!(self.state, Scan::LineStart | Scan::Line(_))
    }

    /// Append the session's bytes of `input` to `out`; returns the number of
    /// grant bytes taken out.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut grants = 0;
        let mut i = 0;
        out.reserve(input.len());
        while i < input.len() {
            match self.state {
                Scan::Payload(left) => {
                    let n = (left as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u32;
                    self.state = if left == 0 {
                        Scan::FrameStart
                    } else {
                        Scan::Payload(left)
                    };
                    continue;
                }
                Scan::LineStart | Scan::FrameStart if input[i] == GRANT => {
                    grants += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let b = input[i];
            out.push(b);
            i += 1;
            self.state = match self.state {
                Scan::LineStart | Scan::Line(_) if b == b'\n' => {
                    if self.state == Scan::Line(Some(HELLO_REPLY.len())) {
                        Scan::FrameStart
                    } else {
                        Scan::LineStart
                    }
                }
                Scan::LineStart => Scan::Line(Some(0)).after(b),
                Scan::Line(_) => self.state.after(b),
                Scan::FrameStart => Scan::Header { have: 0, len: 0 },
                Scan::Header { have, len } => {
                    let len = len << 8 | u32::from(b);
                    match have + 1 {
                        4 if len == 0 => Scan::FrameStart,
                        4 => Scan::Payload(len),
                        have => Scan::Header { have, len },
                    }
                }
                Scan::Payload(_) => unreachable!("payload bytes are taken above"),
            };
        }
        grants
    }
}

impl Scan {
    /// A line state after byte `b` of the line.
    fn after(self, b: u8) -> Scan {
        match self {
            Scan::Line(Some(k)) if k < HELLO_REPLY.len() => {
                Scan::Line((HELLO_REPLY[k] == b).then_some(k + 1))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn credit_never_exceeds_the_window() {
        let mut c = Credit::new(CreditWindow::UART);
        assert_eq!(c.take(100), 100);
        c.grant();
        c.grant();
        assert_eq!(c.available(), 256);
        assert_eq!(c.take(300), 256);
        c.untake(56);
        assert_eq!(c.take(300), 56);
        c.reset();
        assert_eq!(c.available(), 256);
    }

    #[test]
    fn settings_are_checked() {
        assert!(CreditWindow::UART.check().is_ok());
        assert!(CreditWindow::FAST_LINK.check().is_ok());
        let bad = CreditWindow {
            credit: 128,
            window: 200,
        };
        assert!(bad.check().unwrap_err().contains("twice"));
        let tiny = CreditWindow {
            credit: 8,
            window: 256,
        };
        assert!(tiny.check().unwrap_err().contains("64..=16384"));
    }

    #[test]
    fn grants_come_out_of_lines_and_between_frames_only() {
        // Grant bytes inside payloads and headers are data.
        let payload = [GRANT, 1, GRANT, b'\n', 0];
        let mut stream = vec![GRANT];
        stream.extend_from_slice(b"unknown\n");
        stream.push(GRANT);
        stream.extend_from_slice(b"uota 1 {\"caps\":[]}\n");
        stream.push(GRANT);
        let data = frame(3, &payload);
        stream.extend_from_slice(&data);
        stream.extend_from_slice(&[GRANT, GRANT]);
        let empty = frame(3, b"");
        stream.extend_from_slice(&empty);
        // A frame whose length has a grant byte in it.
        let long = frame(2, &[b'x'; 0x0106]);
        stream.extend_from_slice(&long);
        stream.push(GRANT);

        let mut want = b"unknown\nuota 1 {\"caps\":[]}\n".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(&empty);
        want.extend_from_slice(&long);

        // Whole, and one byte at a time: the same.
        let mut scan = GrantScanner::new();
        let mut out = Vec::new();
        assert_eq!(scan.feed(&stream, &mut out), 6);
        assert_eq!(out, want);
        assert!(scan.in_frames());
        let mut scan = GrantScanner::new();
        let mut out = Vec::new();
        let grants: usize = stream.iter().map(|b| scan.feed(&[*b], &mut out)).sum();
        assert_eq!(grants, 6);
        assert_eq!(out, want);
    }

    #[test]
    fn a_line_that_only_starts_like_the_hello_stays_in_line_mode() {
        let mut scan = GrantScanner::new();
        let mut out = Vec::new();
        assert_eq!(scan.feed(b"uot\n\x06uotb 1\n\x06", &mut out), 2);
        assert!(!scan.in_frames());
        assert_eq!(out, b"uot\nuotb 1\n");
    }
}
