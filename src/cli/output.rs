//! How the command line prints results: text for people, `--json` for machines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::device::{DirEntry, PushEvent, PushReport};
use crate::error::Error;
use crate::text::escape_controls as esc;

/// `println!` for results: a reader that went away (`uota ls | head`) ends
/// the command quietly instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// Prints results as text or JSON.
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    fn print_json(&self, v: &serde_json::Value) {
        outln!("{v}");
    }

    /// Whether results are printed as JSON.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// A JSON document as it is (for commands that build their own).
    pub(crate) fn document(&self, v: &serde_json::Value) {
        self.print_json(v);
    }

    /// A line of text for people (control characters escaped).
    pub(crate) fn line(&self, text: &str) {
        outln!("{}", esc(text));
    }

    pub(crate) fn error(&self, e: &Error) {
        if self.json {
            self.print_json(&json!({"ok": false, "error": {"kind": format!("{:?}", e.kind()), "message": e.to_string()}}));
        } else {
            eprintln!("error: {}", esc(&e.to_string()));
        }
    }

    pub(crate) fn value(&self, key: &str, value: &str) {
        if self.json {
            self.print_json(&json!({"ok": true, key: value}));
        } else {
            outln!("{}", esc(value));
        }
    }

    /// A number: JSON `{key: n}`, or `text` for people.
    pub(crate) fn number(&self, key: &str, n: f64, text: &str) {
        if self.json {
            self.print_json(&json!({"ok": true, key: n}));
        } else {
            outln!("{}", esc(text));
        }
    }

    pub(crate) fn list(&self, key: &str, items: impl Iterator<Item = String>) {
        let items: Vec<String> = items.collect();
        if self.json {
            self.print_json(&json!({"ok": true, key: items}));
        } else {
            for i in items {
                outln!("{key} {}", esc(&i));
            }
        }
    }

    pub(crate) fn json_or_lines<T: Serialize>(&self, value: &T) {
        let v = serde_json::to_value(value).unwrap_or_default();
        if self.json {
            let mut obj = json!({"ok": true});
            if let (Some(o), serde_json::Value::Object(m)) = (obj.as_object_mut(), v) {
                o.extend(m);
            }
            self.print_json(&obj);
        } else if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) => outln!("{}: {}", esc(&k), esc(&s)),
                    other => outln!("{}: {other}", esc(&k)),
                }
            }
        }
    }

    pub(crate) fn entries(&self, entries: &[DirEntry]) {
        if self.json {
            self.print_json(&json!({"ok": true, "entries": entries}));
        } else {
            for e in entries {
                if e.is_dir {
                    outln!("{}/", esc(&e.name));
                } else {
                    outln!("{:>9}  {}", e.size, esc(&e.name));
                }
            }
        }
    }

    pub(crate) fn push_report(&self, r: &PushReport) {
        if self.json {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["ok"] = true.into();
            self.print_json(&v);
        } else if r.up_to_date {
            outln!(
                "up to date: the device already runs {} (release {}, {} files); nothing sent, nothing committed, no restart",
                esc(&r.version),
                r.release,
                r.files_total,
            );
        } else {
            let secs = r.elapsed.as_secs_f64();
            let back = match r.restart {
                Some(d) => format!(
                    "; the device answered again on it {:.1} s after its reset",
                    d.as_secs_f64()
                ),
                None => String::new(),
            };
            outln!(
                "committed {} (release {}) — sent {} of {} files ({} skipped{}), {} file bytes as {} on the link, {} bytes on the wire, in {:.2} s{}",
                esc(&r.version),
                r.release,
                r.files_sent,
                r.files_total,
                r.files_skipped,
                if r.resumed { ", resumed" } else { "" },
                r.file_bytes,
                r.payload_bytes,
                r.wire_bytes,
                secs,
                back,
            );
        }
    }

    /// A progress bar on stderr when it is a terminal and JSON is off.
    pub(crate) fn progress(&self) -> Progress {
        let show = !self.json && std::io::stderr().is_terminal();
        Progress {
            bar: show.then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix} {msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar
            }),
            files: 0,
            file: 0,
        }
    }
}

/// The progress bar of one push.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Files to send, and the one being sent (1-based).
    files: usize,
    file: usize,
}

impl Progress {
    pub(crate) fn update(&mut self, ev: &PushEvent) {
        let Some(bar) = &self.bar else { return };
        match ev {
            PushEvent::Started { bytes, files } => {
                self.files = *files;
                bar.set_length(*bytes);
                bar.set_prefix(format!("0/{files} files"));
            }
            PushEvent::File { path, .. } => {
                self.file += 1;
                bar.set_prefix(format!("{}/{} files", self.file, self.files));
                bar.set_message(esc(path).into_owned());
            }
            PushEvent::Progress { sent, .. } => bar.set_position(*sent),
            PushEvent::Committing => bar.set_message("committing"),
            PushEvent::Committed { version } => {
                bar.set_message(format!("committed {}", esc(version)))
            }
            PushEvent::UpToDate { version } => {
                bar.set_message(format!("up to date ({})", esc(version)))
            }
            PushEvent::Restarting => bar.set_message("waiting for the device to restart"),
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
