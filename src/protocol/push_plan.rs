//! The decisions of a uota push, sans-IO: what to ask the device, whether
//! it is already up to date, which files (and from which offset) to send,
//! and what to do with the device's answer to `commit`.
//!
//! [`PushPlan::step`] says what to do next; the driver does it (on a socket,
//! a serial console, or nothing at all in a test) and reports what happened
//! with [`PushPlan::handle`]. Nothing here reads a file or waits.
//!
//! ```text
//! ReadSummary? ─▶ ReadActiveManifest? ─▶ Begin ─▶ ReadStaged? ─▶ SendFiles ─▶ Commit ─▶ Committed
//!       │                 │                                          ▲           │
//!       └──── UpToDate ◀──┘                                          └─ incomplete: resend once
//! ```

use std::collections::{HashMap, HashSet};

use crate::error::{DeviceErrorCode, Error, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::protocol::PushMode;

/// The device's account of its active release, without the file list: its
/// version and the SHA-256 of its manifest lines ([`Manifest::manifest_lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Version of the active release.
    pub version: String,
    /// SHA-256 (hex) of its manifest lines.
    pub sha256: String,
}

/// A file an interrupted push left in the device's staging area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Device path.
    pub path: String,
    /// Bytes staged so far.
    pub bytes: u64,
    /// SHA-256 (hex) the file was announced with.
    pub sha256: String,
}

/// What the push is allowed to decide from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Full release or fast update.
    pub mode: PushMode,
    /// Send only what differs from the device's active release.
    pub delta: bool,
    /// The push asks for no release number beyond what the device has, so
    /// an unchanged release needs no commit.
    pub same_release: bool,
    /// The host kept the device's manifest from an earlier push, worth
    /// checking against the device's summary.
    pub kept_manifest: bool,
}

/// A file to send, from `offset` on (an interrupted push staged the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToSend {
    /// The manifest entry.
    pub entry: FileEntry,
    /// Bytes the device already holds.
    pub offset: u64,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the device for its [`Summary`]; answer with [`Input::Summary`].
    ReadSummary,
    /// Get the device's active manifest (the kept copy when the summary
    /// vouches for it); answer with [`Input::ActiveManifest`].
    ReadActiveManifest {
        /// The summary read before, if any.
        summary: Option<Summary>,
    },
    /// The device already runs this release: stop, nothing to commit.
    UpToDate,
    /// Sign and send `begin` with the manifest; answer with [`Input::Begun`].
    Begin,
    /// Ask what the resumed session staged; answer with [`Input::Staged`].
    ReadStaged,
    /// Send these files; answer with [`Input::FilesSent`].
    SendFiles {
        /// In manifest order.
        files: Vec<FileToSend>,
        /// Sent again because the commit said the device lacks them.
        resend: bool,
    },
    /// Send `commit`; answer with [`Input::CommitAccepted`] or [`Input::CommitRefused`].
    Commit,
    /// Committed. The device now runs `now_active` (when it is known: a
    /// fast push onto an unread manifest leaves it unknown).
    Committed {
        /// The device's manifest after the commit.
        now_active: Option<Manifest>,
    },
}

/// What happened, reported to [`PushPlan::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The summary; `None` from a device too old to give one.
    Summary(Option<Summary>),
    /// The active manifest; `None` from a device too old to give one.
    ActiveManifest(Option<Manifest>),
    /// `begin` was accepted; `resumed` when it continues an interrupted push.
    Begun {
        /// Whether the device resumed an interrupted push of this release.
        resumed: bool,
    },
    /// What the resumed session has staged.
    Staged(Vec<StagedFile>),
    /// The files of the last [`Step::SendFiles`] went out.
    FilesSent,
    /// The device took the commit.
    CommitAccepted,
    /// The device refused the commit.
    CommitRefused {
        /// Its error code.
        code: DeviceErrorCode,
        /// Its message (for `incomplete`: the missing file's path).
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Summary,
    ActiveManifest(Option<Summary>),
    UpToDate,
    Begin,
    Staged,
    Send,
    Commit,
    Resend(FileToSend),
    Committed,
}

/// The sans-IO plan of one uota push (see the module docs).
#[derive(Debug, Clone)]
pub struct PushPlan {
    manifest: Manifest,
    lines_sha256: String,
    settings: PlanSettings,
    state: State,
    to_send: HashSet<String>,
    offsets: HashMap<String, u64>,
    active: Option<Manifest>,
    resent: HashSet<String>,
    resumed: bool,
    files_skipped: usize,
}

impl PushPlan {
    /// The plan for pushing `manifest` under `settings`.
    pub fn new(manifest: &Manifest, settings: PlanSettings) -> Self {
        let full_check = settings.mode == PushMode::Full && settings.same_release;
        let state = if settings.delta && (full_check || settings.kept_manifest) {
            State::Summary
        } else if settings.delta {
            State::ActiveManifest(None)
        } else {
            State::Begin
        };
        Self {
            lines_sha256: crate::auth::sha256_hex(&manifest.manifest_lines()),
            to_send: manifest.files.iter().map(|f| f.path.clone()).collect(),
            manifest: manifest.clone(),
            settings,
            state,
            offsets: HashMap::new(),
            active: None,
            resent: HashSet::new(),
            resumed: false,
            files_skipped: 0,
        }
    }

    /// What to do next.
    pub fn step(&self) -> Step {
        match &self.state {
            State::Summary => Step::ReadSummary,
            State::ActiveManifest(summary) => Step::ReadActiveManifest {
                summary: summary.clone(),
            },
            State::UpToDate => Step::UpToDate,
            State::Begin => Step::Begin,
            State::Staged => Step::ReadStaged,
            State::Send => Step::SendFiles {
                files: self.files_to_send(),
                resend: false,
            },
            State::Resend(file) => Step::SendFiles {
                files: vec![file.clone()],
                resend: true,
            },
            State::Commit => Step::Commit,
            State::Committed => Step::Committed {
                now_active: self.now_active(),
            },
        }
    }

    /// Report what happened at the current step.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an input the current step does not expect;
    /// the device's error for a refused commit the plan cannot repair (any
    /// code but `incomplete`, or `incomplete` naming a file not in the
    /// release or one already sent again).
    pub fn handle(&mut self, input: Input) -> Result<()> {
        let state = std::mem::replace(&mut self.state, State::Committed);
        self.state = match (state, input) {
            (State::Summary, Input::Summary(summary)) => {
                let full_check = self.settings.mode == PushMode::Full && self.settings.same_release;
                match &summary {
                    Some(s)
                        if full_check
                            && s.version == self.manifest.version
                            && s.sha256 == self.lines_sha256 =>
                    {
                        State::UpToDate
                    }
                    _ => State::ActiveManifest(summary),
                }
            }
            (State::ActiveManifest(_), Input::ActiveManifest(active)) => {
                let up_to_date = active.as_ref().is_some_and(|a| self.is_up_to_date(a));
                if let Some(a) = &active {
                    self.to_send = a
                        .diff(&self.manifest)
                        .to_send()
                        .into_iter()
                        .map(|f| f.path.clone())
                        .collect();
                }
                self.active = active;
                if up_to_date {
                    State::UpToDate
                } else {
                    State::Begin
                }
            }
            (State::Begin, Input::Begun { resumed }) => {
                self.resumed = resumed;
                if resumed {
                    State::Staged
                } else {
                    self.count_skipped();
                    State::Send
                }
            }
            (State::Staged, Input::Staged(staged)) => {
                self.take_staged(staged);
                self.count_skipped();
                State::Send
            }
            (State::Send, Input::FilesSent) => State::Commit,
            (State::Resend(_), Input::FilesSent) => {
                self.files_skipped = self.files_skipped.saturating_sub(1);
                State::Commit
            }
            (State::Commit, Input::CommitAccepted) => State::Committed,
            (State::Commit, Input::CommitRefused { code, message }) => {
                let entry = self.manifest.files.iter().find(|f| f.path == message);
                match entry {
                    Some(entry)
                        if code == DeviceErrorCode::Incomplete
                            && self.resent.insert(message.clone()) =>
                    {
                        // The device lacks a file the delta assumed it had.
                        tracing::info!(path = %entry.path, "device lacks a file of the active release; sending it");
                        State::Resend(FileToSend {
                            entry: entry.clone(),
                            offset: 0,
                        })
                    }
                    _ => return Err(Error::from_device("commit", code.as_str(), &message)),
                }
            }
            (state, input) => {
                let err = Error::Protocol(format!(
                    "push plan: {input:?} does not answer {:?}",
                    step_name(&state)
                ));
                self.state = state;
                return Err(err);
            }
        };
        Ok(())
    }

    /// Whether the device resumed an interrupted push.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Files of the release not sent (unchanged, or staged already).
    pub fn files_skipped(&self) -> usize {
        self.files_skipped
    }

    /// The device's active manifest, when it was read.
    pub fn active(&self) -> Option<&Manifest> {
        self.active.as_ref()
    }

    fn count_skipped(&mut self) {
        self.files_skipped = self.manifest.files.len() - self.files_to_send().len();
    }

    fn files_to_send(&self) -> Vec<FileToSend> {
        self.manifest
            .files
            .iter()
            .filter(|f| self.to_send.contains(&f.path))
            .map(|f| FileToSend {
                entry: f.clone(),
                offset: self.offsets.get(&f.path).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Whether the device already runs exactly this release: the same
    /// version and files (for a full push, no other files either), and no
    /// other release number asked for.
    fn is_up_to_date(&self, active: &Manifest) -> bool {
        let diff = active.diff(&self.manifest);
        let nothing_to_remove = self.settings.mode == PushMode::Fast || diff.removed.is_empty();
        self.settings.same_release
            && active.version == self.manifest.version
            && diff.added.is_empty()
            && diff.changed.is_empty()
            && nothing_to_remove
    }

    /// Resume: what an interrupted push staged whole is not sent again, a
    /// part continues from its end; a stale part (another hash, too long) is
    /// sent whole.
    fn take_staged(&mut self, staged: Vec<StagedFile>) {
        for s in staged {
            let Some(entry) = self.manifest.files.iter().find(|f| f.path == s.path) else {
                continue;
            };
            if s.sha256 != entry.sha256_hex() || s.bytes > entry.size {
                continue;
            }
            if s.bytes == entry.size {
                self.to_send.remove(&s.path);
            } else if s.bytes > 0 {
                self.offsets.insert(s.path, s.bytes);
            }
        }
    }

    /// What the device runs after the commit.
    fn now_active(&self) -> Option<Manifest> {
        match (self.settings.mode, &self.active) {
            (PushMode::Full, _) => Some(self.manifest.clone()),
            (PushMode::Fast, Some(before)) => {
                let mut m = before.clone();
                for e in &self.manifest.files {
                    m.replace_entry(e.clone()).ok()?;
                }
                m.version = self.manifest.version.clone();
                Some(m)
            }
            (PushMode::Fast, None) => None,
        }
    }
}

fn step_name(state: &State) -> &'static str {
    match state {
        State::Summary => "read summary",
        State::ActiveManifest(_) => "read active manifest",
        State::UpToDate => "up to date",
        State::Begin => "begin",
        State::Staged => "read staged",
        State::Send | State::Resend(_) => "send files",
        State::Commit => "commit",
        State::Committed => "committed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, body: &[u8]) -> FileEntry {
        use sha2::Digest;
        FileEntry {
            path: path.into(),
            size: body.len() as u64,
            sha256: sha2::Sha256::digest(body).into(),
        }
    }

    fn manifest(version: &str, files: &[(&str, &[u8])]) -> Manifest {
        let files = files.iter().map(|(p, b)| entry(p, b)).collect();
        Manifest::new(version, files).unwrap()
    }

    fn settings(mode: PushMode) -> PlanSettings {
        PlanSettings {
            mode,
            delta: true,
            same_release: true,
            kept_manifest: false,
        }
    }

    fn paths(step: &Step) -> Vec<(String, u64)> {
        match step {
            Step::SendFiles { files, .. } => files
                .iter()
                .map(|f| (f.entry.path.clone(), f.offset))
                .collect(),
            other => panic!("expected files to send, got {other:?}"),
        }
    }

    fn summary_of(m: &Manifest) -> Summary {
        Summary {
            version: m.version.clone(),
            sha256: crate::auth::sha256_hex(&m.manifest_lines()),
        }
    }

    #[test]
    fn a_matching_summary_ends_a_full_push_before_anything_is_sent() {
        let m = manifest("1.0", &[("main.py", b"print(1)")]);
        let mut plan = PushPlan::new(&m, settings(PushMode::Full));
        assert_eq!(plan.step(), Step::ReadSummary);
        plan.handle(Input::Summary(Some(summary_of(&m)))).unwrap();
        assert_eq!(plan.step(), Step::UpToDate);
    }

    #[test]
    fn a_delta_sends_only_what_changed_and_keeps_what_the_device_runs() {
        let before = manifest("1.0", &[("a.py", b"a"), ("b.py", b"b")]);
        let after = manifest("1.1", &[("a.py", b"a"), ("b.py", b"B"), ("c.py", b"c")]);
        let mut plan = PushPlan::new(&after, settings(PushMode::Full));
        plan.handle(Input::Summary(Some(summary_of(&before))))
            .unwrap();
        assert_eq!(
            plan.step(),
            Step::ReadActiveManifest {
                summary: Some(summary_of(&before))
            }
        );
        plan.handle(Input::ActiveManifest(Some(before))).unwrap();
        assert_eq!(plan.step(), Step::Begin);
        plan.handle(Input::Begun { resumed: false }).unwrap();
        assert_eq!(
            paths(&plan.step()),
            vec![("b.py".into(), 0), ("c.py".into(), 0)]
        );
        assert_eq!(plan.files_skipped(), 1);
        plan.handle(Input::FilesSent).unwrap();
        plan.handle(Input::CommitAccepted).unwrap();
        assert_eq!(
            plan.step(),
            Step::Committed {
                now_active: Some(after)
            }
        );
    }

    #[test]
    fn the_same_files_under_the_same_version_are_up_to_date_unless_a_new_number_is_asked() {
        let m = manifest("1.0", &[("a.py", b"a")]);
        let mut plan = PushPlan::new(&m, settings(PushMode::Fast));
        assert_eq!(plan.step(), Step::ReadActiveManifest { summary: None });
        plan.handle(Input::ActiveManifest(Some(m.clone()))).unwrap();
        assert_eq!(plan.step(), Step::UpToDate);

        let mut new_number = PushPlan::new(
            &m,
            PlanSettings {
                same_release: false,
                ..settings(PushMode::Fast)
            },
        );
        new_number
            .handle(Input::ActiveManifest(Some(m.clone())))
            .unwrap();
        assert_eq!(new_number.step(), Step::Begin);
    }

    #[test]
    fn a_full_push_removing_a_file_is_not_up_to_date() {
        let before = manifest("1.0", &[("a.py", b"a"), ("old.py", b"o")]);
        let after = manifest("1.0", &[("a.py", b"a")]);
        let mut plan = PushPlan::new(&after, settings(PushMode::Full));
        plan.handle(Input::Summary(Some(summary_of(&before))))
            .unwrap();
        plan.handle(Input::ActiveManifest(Some(before))).unwrap();
        assert_eq!(plan.step(), Step::Begin);
        plan.handle(Input::Begun { resumed: false }).unwrap();
        assert!(paths(&plan.step()).is_empty());
    }

    #[test]
    fn a_resumed_push_skips_whole_staged_files_and_continues_parts() {
        let m = manifest(
            "2.0",
            &[("a.py", b"aaaa"), ("b.py", b"bbbb"), ("c.py", b"cccc")],
        );
        let mut plan = PushPlan::new(
            &m,
            PlanSettings {
                delta: false,
                ..settings(PushMode::Full)
            },
        );
        assert_eq!(plan.step(), Step::Begin);
        plan.handle(Input::Begun { resumed: true }).unwrap();
        assert_eq!(plan.step(), Step::ReadStaged);
        let staged = |p: &str, bytes, sha: String| StagedFile {
            path: p.into(),
            bytes,
            sha256: sha,
        };
        plan.handle(Input::Staged(vec![
            staged("a.py", 4, m.files[0].sha256_hex()),
            staged("b.py", 2, m.files[1].sha256_hex()),
            staged("c.py", 2, "00".repeat(32)), // another release's part
            staged("zzz.py", 1, "00".repeat(32)),
        ]))
        .unwrap();
        assert!(plan.resumed());
        assert_eq!(
            paths(&plan.step()),
            vec![("b.py".into(), 2), ("c.py".into(), 0)]
        );
        assert_eq!(plan.files_skipped(), 1);
    }

    #[test]
    fn incomplete_is_repaired_once_per_file_and_other_refusals_are_errors() {
        let m = manifest("1.0", &[("a.py", b"a"), ("b.py", b"b")]);
        let refused = |code: &str, path: &str| Input::CommitRefused {
            code: DeviceErrorCode::parse(code),
            message: path.into(),
        };
        let mut plan = PushPlan::new(
            &m,
            PlanSettings {
                delta: false,
                ..settings(PushMode::Full)
            },
        );
        plan.handle(Input::Begun { resumed: false }).unwrap();
        plan.handle(Input::FilesSent).unwrap();
        plan.handle(refused("incomplete", "b.py")).unwrap();
        assert_eq!(
            plan.step(),
            Step::SendFiles {
                files: vec![FileToSend {
                    entry: m.files[1].clone(),
                    offset: 0
                }],
                resend: true
            }
        );
        plan.handle(Input::FilesSent).unwrap();
        assert_eq!(plan.step(), Step::Commit);
        // The same file missing twice: the device is not taking it.
        let err = plan.handle(refused("incomplete", "b.py")).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Device {
                    code: DeviceErrorCode::Incomplete,
                    ..
                }
            ),
            "{err:?}"
        );

        let mut other = PushPlan::new(
            &m,
            PlanSettings {
                delta: false,
                ..settings(PushMode::Full)
            },
        );
        other.handle(Input::Begun { resumed: false }).unwrap();
        other.handle(Input::FilesSent).unwrap();
        assert!(other.handle(refused("incomplete", "nope.py")).is_err());
        let mut full = other.clone();
        full.state = State::Commit;
        let err = full.handle(refused("no_space", "")).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Device {
                    code: DeviceErrorCode::NoSpace,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_fast_push_onto_a_read_manifest_knows_what_the_device_runs_after() {
        let before = manifest("1.0", &[("a.py", b"a"), ("b.py", b"b")]);
        let change = manifest("1.1", &[("b.py", b"B")]);
        let mut plan = PushPlan::new(&change, settings(PushMode::Fast));
        plan.handle(Input::ActiveManifest(Some(before))).unwrap();
        plan.handle(Input::Begun { resumed: false }).unwrap();
        plan.handle(Input::FilesSent).unwrap();
        plan.handle(Input::CommitAccepted).unwrap();
        let Step::Committed {
            now_active: Some(now),
        } = plan.step()
        else {
            panic!("expected the device's manifest after the commit")
        };
        assert_eq!(now.version, "1.1");
        assert_eq!(
            now.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["a.py", "b.py"]
        );
        assert_eq!(now.files[1].size, 1);
        assert_eq!(now.files[1].sha256, entry("b.py", b"B").sha256);
    }

    #[test]
    fn an_input_out_of_turn_is_an_error_and_changes_nothing() {
        let m = manifest("1.0", &[("a.py", b"a")]);
        let mut plan = PushPlan::new(&m, settings(PushMode::Full));
        let err = plan.handle(Input::CommitAccepted).unwrap_err();
        assert!(err.to_string().contains("read summary"), "{err}");
        assert_eq!(plan.step(), Step::ReadSummary);
    }

    #[test]
    fn an_old_device_without_summary_or_manifest_gets_everything() {
        let m = manifest("1.0", &[("a.py", b"a"), ("b.py", b"b")]);
        let mut plan = PushPlan::new(&m, settings(PushMode::Full));
        plan.handle(Input::Summary(None)).unwrap();
        plan.handle(Input::ActiveManifest(None)).unwrap();
        plan.handle(Input::Begun { resumed: false }).unwrap();
        assert_eq!(paths(&plan.step()).len(), 2);
    }
}
