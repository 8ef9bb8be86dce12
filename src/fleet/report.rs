//! What a rollout did, per device and in all: JSON for scripts, JUnit XML
//! for CI systems.

use serde::{Deserialize, Serialize};

/// How a device ended in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// It committed the release (and confirmed it, with a health wait).
    Updated,
    /// It already ran the release: nothing was sent.
    Unchanged,
    /// The push failed or the release was refused; the device keeps the
    /// release it had.
    Failed,
    /// It took the release, then rolled back to the one before it (the app
    /// failed, during the health wait).
    RolledBack,
    /// Not started: the rollout stopped (a threshold, a cancel) first.
    NotReached,
    /// Left alone: another entry of this rollout reached the same device.
    Skipped,
}

impl DeviceStatus {
    /// Whether this counts as a failure for thresholds and the exit code.
    pub fn is_failure(self) -> bool {
        matches!(self, DeviceStatus::Failed | DeviceStatus::RolledBack)
    }

    /// Whether the device is done with (a resumed rollout leaves it alone).
    pub fn is_final(self) -> bool {
        self != DeviceStatus::NotReached
    }

    /// The status as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Updated => "updated",
            DeviceStatus::Unchanged => "unchanged",
            DeviceStatus::Failed => "failed",
            DeviceStatus::RolledBack => "rolled_back",
            DeviceStatus::NotReached => "not_reached",
            DeviceStatus::Skipped => "skipped",
        }
    }
}

/// Why a device failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceError {
    /// The error's kind ([`crate::ErrorKind`] as text, or `RolledBack`).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// One device's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceResult {
    /// Its inventory name.
    pub name: String,
    /// The id it reported (when it was reached).
    pub id: Option<String>,
    /// Where it was reached.
    pub address: String,
    /// Its wave, from 1.
    pub group: usize,
    /// The version it ran before (when it was reached).
    pub from: Option<String>,
    /// The version rolled out.
    pub to: String,
    /// How it ended.
    pub status: DeviceStatus,
    /// Why it failed, was skipped or not reached.
    pub error: Option<DeviceError>,
    /// Connection attempts (1 plus the retries used).
    pub attempts: u32,
    /// Time spent on it, health wait included.
    pub seconds: f64,
    /// Bytes that crossed the link, both ways.
    pub bytes: u64,
}

/// One wave's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The wave, from 1.
    pub group: usize,
    /// Devices in it.
    pub devices: usize,
    /// Counts per status.
    pub counts: Counts,
    /// Wall time of the wave.
    pub seconds: f64,
}

/// Devices per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// [`DeviceStatus::Updated`].
    pub updated: usize,
    /// [`DeviceStatus::Unchanged`].
    pub unchanged: usize,
    /// [`DeviceStatus::Failed`].
    pub failed: usize,
    /// [`DeviceStatus::RolledBack`].
    pub rolled_back: usize,
    /// [`DeviceStatus::NotReached`].
    pub not_reached: usize,
    /// [`DeviceStatus::Skipped`].
    pub skipped: usize,
}

impl Counts {
    /// Count `results`.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a DeviceResult>) -> Counts {
        let mut c = Counts::default();
        for r in results {
            *match r.status {
                DeviceStatus::Updated => &mut c.updated,
                DeviceStatus::Unchanged => &mut c.unchanged,
                DeviceStatus::Failed => &mut c.failed,
                DeviceStatus::RolledBack => &mut c.rolled_back,
                DeviceStatus::NotReached => &mut c.not_reached,
                DeviceStatus::Skipped => &mut c.skipped,
            } += 1;
        }
        c
    }

    /// Failed and rolled back.
    pub fn failures(&self) -> usize {
        self.failed + self.rolled_back
    }
}

/// How a rollout ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every device updated or unchanged (or skipped as a duplicate).
    Success,
    /// Some devices failed; the rollout went on.
    DevicesFailed,
    /// A `--max-failures` threshold stopped it.
    Stopped,
    /// It was cancelled (Ctrl-C, [`super::StopHandle::stop`]).
    Cancelled,
}

/// What a rollout did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The rollout's id (its state file is `.uota/rollouts/<id>.json`).
    pub id: String,
    /// `full` or `fast`.
    pub mode: String,
    /// The version rolled out.
    pub version: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it stopped early, when it did.
    pub stopped: Option<String>,
    /// Per device, in rollout order.
    pub devices: Vec<DeviceResult>,
    /// Per wave.
    pub groups: Vec<GroupSummary>,
    /// Counts over every device.
    pub summary: Counts,
    /// Wall time (of this run, for a resumed rollout).
    pub seconds: f64,
}

impl RolloutReport {
    /// Whether the rollout succeeded: every device updated or unchanged
    /// (or skipped as a duplicate).
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Success
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report serializes")
    }

    /// The report as a JUnit XML file: one test suite per wave, one test case
    /// per device; failed and rolled-back devices are failures, devices not
    /// reached or skipped are skipped test cases.
    pub fn to_junit(&self) -> String {
        use std::fmt::Write as _;
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let failures = self.summary.failures();
        let skipped = self.summary.not_reached + self.summary.skipped;
        let _ = writeln!(
            x,
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
            xml(&format!("uota rollout {} ({})", self.id, self.version)),
            self.devices.len(),
            self.seconds
        );
        for g in &self.groups {
            let members: Vec<&DeviceResult> =
                self.devices.iter().filter(|d| d.group == g.group).collect();
            let _ = writeln!(
                x,
                "  <testsuite name=\"group {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
                g.group,
                members.len(),
                g.counts.failures(),
                g.counts.not_reached + g.counts.skipped,
                g.seconds
            );
            for d in members {
                let _ = write!(
                    x,
                    "    <testcase classname=\"uota.rollout.group{}\" name=\"{}\" time=\"{:.3}\">",
                    g.group,
                    xml(&d.name),
                    d.seconds
                );
                let message = d
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message))
                    .unwrap_or_default();
                match d.status {
                    s if s.is_failure() => {
                        let _ = write!(
                            x,
                            "<failure type=\"{}\" message=\"{}\"/>",
                            s.as_str(),
                            xml(&message)
                        );
                    }
                    DeviceStatus::NotReached | DeviceStatus::Skipped => {
                        let _ = write!(
                            x,
                            "<skipped message=\"{}\"/>",
                            xml(&format!("{}: {message}", d.status.as_str()))
                        );
                    }
                    _ => {
                        let _ = write!(
                            x,
                            "<system-out>{}</system-out>",
                            xml(&format!(
                                "{} {} -> {} at {}",
                                d.status.as_str(),
                                d.from.as_deref().unwrap_or("?"),
                                d.to,
                                d.address
                            ))
                        );
                    }
                }
                x.push_str("</testcase>\n");
            }
            x.push_str("  </testsuite>\n");
        }
        x.push_str("</testsuites>\n");
        x
    }
}

/// `s` escaped for an XML attribute or text (control characters other than
/// tab and newline, which XML 1.0 cannot hold, become `?`).
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, group: usize, status: DeviceStatus) -> DeviceResult {
        DeviceResult {
            name: name.into(),
            id: None,
            address: "127.0.0.1:2018".into(),
            group,
            from: Some("1.0".into()),
            to: "1.1".into(),
            status,
            error: status.is_failure().then(|| DeviceError {
                kind: "Device".into(),
                message: "bad <thing> & \"quotes\"\u{1}".into(),
            }),
            attempts: 1,
            seconds: 0.5,
            bytes: 10,
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let devices = vec![
            result("canary", 1, DeviceStatus::RolledBack),
            result("a&b", 2, DeviceStatus::NotReached),
            result("c", 2, DeviceStatus::Updated),
        ];
        let groups = vec![
            GroupSummary {
                group: 1,
                devices: 1,
                counts: Counts::of(&devices[..1]),
                seconds: 1.0,
            },
            GroupSummary {
                group: 2,
                devices: 2,
                counts: Counts::of(&devices[1..]),
                seconds: 1.0,
            },
        ];
        let report = RolloutReport {
            id: "r1".into(),
            mode: "full".into(),
            version: "1.1".into(),
            outcome: Outcome::Stopped,
            stopped: Some("threshold".into()),
            summary: Counts::of(&devices),
            devices,
            groups,
            seconds: 2.0,
        };
        let x = report.to_junit();
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("name=\"a&amp;b\""), "{x}");
        assert!(
            x.contains("bad &lt;thing&gt; &amp; &quot;quotes&quot;?"),
            "{x}"
        );
        assert_eq!(x.matches("<testsuite ").count(), 2);
        assert_eq!(x.matches("<testcase ").count(), 3);
        let v = report.to_json();
        assert_eq!(v["devices"][0]["status"], "rolled_back");
        assert_eq!(v["summary"]["not_reached"], 1);
        assert_eq!(v["outcome"], "stopped");
    }
}
