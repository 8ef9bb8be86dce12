//! The output stream of a listener, sans-IO: it turns what the device sends
//! (the `listen` reply, then DATA frames) into [`OutputEvent`]s, remembers
//! where to resume after a link drop, drops what it saw already, reports
//! gaps and restarts, and says when the link is dead (no frame for the
//! outage time). Time is passed in.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, Result};

/// What a listener learns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputEvent {
    /// An entry of the device's output (one `print`, its line end included).
    Line {
        /// Its sequence number (from 0 at every boot).
        seq: u64,
        /// The text.
        text: String,
    },
    /// Entries the device dropped before this listener read them (its
    /// buffer was full: the listener was slow, or away).
    Gap {
        /// How many.
        missed: u64,
    },
    /// The device restarted since the listener last heard from it: what it
    /// printed after the last entry seen, before the restart, is lost.
    Restarted {
        /// Its boot count now.
        boot: u64,
    },
    /// The link dropped or went silent; the listener reconnects and
    /// resumes where it left off.
    LinkDown {
        /// Why.
        reason: String,
    },
}

impl OutputEvent {
    /// As JSON, as `uota remoteio listen --json` prints it and the Python
    /// bindings yield it: `{"event":"line","seq":N,"text":"…"}`,
    /// `{"event":"gap","missed":N}`, `{"event":"restarted","boot":N}`,
    /// `{"event":"link_down","reason":"…"}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            OutputEvent::Line { seq, text } => json!({"event": "line", "seq": seq, "text": text}),
            OutputEvent::Gap { missed } => json!({"event": "gap", "missed": missed}),
            OutputEvent::Restarted { boot } => json!({"event": "restarted", "boot": boot}),
            OutputEvent::LinkDown { reason } => json!({"event": "link_down", "reason": reason}),
        }
    }
}

/// A DATA frame of the output stream.
#[derive(Debug, Deserialize)]
struct Chunk {
    /// The sequence number of the first entry (or the next one).
    s: u64,
    #[serde(default)]
    d: Vec<String>,
    #[serde(default)]
    gap: u64,
}

/// Where a listener is in a device's output.
#[derive(Debug, Clone)]
pub struct OutputStream {
    boot: Option<u64>,
    next: u64,
    last_heard: Option<Instant>,
    outage_after: Duration,
    /// No output frame yet: what the device's buffer dropped before this
    /// listener first asked is not a gap (it gets what the buffer holds).
    fresh: bool,
}

impl OutputStream {
    /// A listener that declares the link dead after `outage_after` without a
    /// frame (the device sends a keepalive every quarter of it).
    pub fn new(outage_after: Duration) -> Self {
        Self {
            boot: None,
            next: 0,
            last_heard: None,
            outage_after,
            fresh: true,
        }
    }

    /// The sequence number to ask for (the first not seen yet).
    pub fn resume_from(&self) -> u64 {
        self.next
    }

    /// The boot [`OutputStream::resume_from`] counts in (`None` before the
    /// first listen).
    pub fn boot(&self) -> Option<u64> {
        self.boot
    }

    /// The keepalive period to ask the device for.
    pub fn keepalive(&self) -> Duration {
        self.outage_after / 4
    }

    /// The device answered `listen` (its boot count and next sequence
    /// number) at `now`: a new boot means a restart.
    pub fn on_listen_reply(&mut self, boot: u64, now: Instant) -> Vec<OutputEvent> {
        self.last_heard = Some(now);
        let mut out = Vec::new();
        if let Some(old) = self.boot {
            if old != boot {
                out.push(OutputEvent::Restarted { boot });
                self.next = 0;
            }
        }
        self.boot = Some(boot);
        out
    }

    /// A DATA frame of the stream arrived at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a frame that is not one of the stream's.
    pub fn on_data(&mut self, payload: &[u8], now: Instant) -> Result<Vec<OutputEvent>> {
        self.last_heard = Some(now);
        let chunk: Chunk = serde_json::from_slice(payload)
            .map_err(|e| Error::Protocol(format!("malformed output frame: {e}")))?;
        let mut out = Vec::new();
        let fresh = std::mem::replace(&mut self.fresh, false);
        if chunk.gap > 0 {
            if !fresh {
                out.push(OutputEvent::Gap { missed: chunk.gap });
            }
            self.next = self.next.max(chunk.s);
            return Ok(out);
        }
        for (i, text) in chunk.d.into_iter().enumerate() {
            let seq = chunk.s + i as u64;
            if seq < self.next {
                continue; // seen before a reconnection
            }
            if seq > self.next {
                out.push(OutputEvent::Gap {
                    missed: seq - self.next,
                });
            }
            out.push(OutputEvent::Line { seq, text });
            self.next = seq + 1;
        }
        Ok(out)
    }

    /// Whether the link is dead at `now`: nothing heard for the outage time.
    pub fn outage(&self, now: Instant) -> bool {
        self.last_heard
            .is_some_and(|t| now.duration_since(t) >= self.outage_after)
    }

    /// When [`OutputStream::outage`] turns true unless a frame comes first.
    pub fn deadline(&self, now: Instant) -> Instant {
        self.last_heard.unwrap_or(now) + self.outage_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(evs: &[OutputEvent]) -> Vec<u64> {
        evs.iter()
            .filter_map(|e| match e {
                OutputEvent::Line { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resumes_without_duplicates_and_reports_gaps_and_restarts() {
        let t = Instant::now();
        let mut s = OutputStream::new(Duration::from_secs(10));
        assert!(s.on_listen_reply(3, t).is_empty());
        // What the buffer dropped before the first listen is no gap.
        assert!(s.on_data(br#"{"gap":5,"s":0}"#, t).unwrap().is_empty());
        let ev = s.on_data(br#"{"s":0,"d":["a\n","b\n"]}"#, t).unwrap();
        assert_eq!(lines(&ev), [0, 1]);
        assert_eq!(s.resume_from(), 2);
        // After a reconnection the device sends from 1: 1 is dropped.
        let ev = s.on_data(br#"{"s":1,"d":["b\n","c\n"]}"#, t).unwrap();
        assert_eq!(lines(&ev), [2]);
        // The ring dropped 4 entries before this listener read them.
        let ev = s.on_data(br#"{"gap":4,"s":7}"#, t).unwrap();
        assert_eq!(ev, [OutputEvent::Gap { missed: 4 }]);
        assert_eq!(s.resume_from(), 7);
        let ev = s.on_data(br#"{"ka":1,"s":7}"#, t).unwrap();
        assert!(ev.is_empty());
        // A new boot: numbering starts again.
        assert_eq!(
            s.on_listen_reply(4, t),
            [OutputEvent::Restarted { boot: 4 }]
        );
        assert_eq!(s.resume_from(), 0);
        assert!(s.on_data(b"nope", t).is_err());
    }

    #[test]
    fn an_outage_is_declared_after_the_silence() {
        let t = Instant::now();
        let mut s = OutputStream::new(Duration::from_secs(10));
        assert!(!s.outage(t));
        s.on_listen_reply(1, t);
        assert!(!s.outage(t + Duration::from_secs(9)));
        assert!(s.outage(t + Duration::from_secs(10)));
        s.on_data(br#"{"ka":1,"s":0}"#, t + Duration::from_secs(9))
            .unwrap();
        assert!(!s.outage(t + Duration::from_secs(10)));
        assert_eq!(s.keepalive(), Duration::from_millis(2500));
    }
}
