//! How the command line prints results: text for people, `--json` for machines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::device::{DirEntry, PushEvent, PushReport};
use crate::error::Error;
use crate::text::escape_controls as esc;

/// Prints results as text or JSON.
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    fn print_json(&self, v: &serde_json::Value) {
        println!("{v}");
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
            println!("{}", esc(value));
        }
    }

    pub(crate) fn list(&self, key: &str, items: impl Iterator<Item = String>) {
        let items: Vec<String> = items.collect();
        if self.json {
            self.print_json(&json!({"ok": true, key: items}));
        } else {
            for i in items {
                println!("{key} {}", esc(&i));
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
                    serde_json::Value::String(s) => println!("{}: {}", esc(&k), esc(&s)),
                    other => println!("{}: {other}", esc(&k)),
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
                    println!("{}/", esc(&e.name));
                } else {
                    println!("{:>9}  {}", e.size, esc(&e.name));
                }
            }
        }
    }

    pub(crate) fn push_report(&self, r: &PushReport) {
        if self.json {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["ok"] = true.into();
            self.print_json(&v);
        } else {
            let secs = r.elapsed.as_secs_f64();
            println!(
                "committed {} (release {}) — sent {} of {} files ({} skipped{}), {} file bytes as {} on the link, {} bytes on the wire, in {:.2} s",
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
                        "{spinner} {msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar
            }),
        }
    }
}

/// The progress bar of one push.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub(crate) fn update(&mut self, ev: &PushEvent) {
        let Some(bar) = &self.bar else { return };
        match ev {
            PushEvent::Started { bytes, .. } => bar.set_length(*bytes),
            PushEvent::File { path, .. } => bar.set_message(esc(path).into_owned()),
            PushEvent::Progress { sent, .. } => bar.set_position(*sent),
            PushEvent::Committing => bar.set_message("committing"),
            PushEvent::Committed { version } => {
                bar.set_message(format!("committed {}", esc(version)))
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
