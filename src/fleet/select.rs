//! Choosing devices and cutting a rollout into waves: `--select`,
//! `--groups` and `--max-failures`, parsed and applied.

use std::str::FromStr;

use crate::error::{Error, Result};

use super::inventory::FleetDevice;

/// One term of a selection.
#[derive(Debug, Clone)]
enum Term {
    Tag(String),
    Id(String),
    Name(globset::GlobMatcher),
}

/// Which devices of the inventory a command takes: comma-separated terms,
/// a device is taken when any term matches it. `tag:T` (the device has tag
/// T), `id:I` (the device's expected id), `name:GLOB` or a bare `GLOB`
/// (its name, `*` and `?` as wildcards).
#[derive(Debug, Clone)]
pub struct Selection {
    text: String,
    terms: Vec<Term>,
}

impl FromStr for Selection {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut terms = Vec::new();
        for raw in text.split(',').map(str::trim) {
            let bad = |why: &str| {
                Error::InvalidArgument(format!(
                    "--select {text:?}: {why} (use tag:NAME, id:ID, name:GLOB or GLOB, comma-separated)"
                ))
            };
            if raw.is_empty() {
                return Err(bad("an empty term"));
            }
            let glob = |pat: &str| -> Result<Term> {
                let glob = globset::GlobBuilder::new(pat)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?;
                Ok(Term::Name(glob.compile_matcher()))
            };
            let term = match raw.split_once(':') {
                Some((_, "")) => return Err(bad(&format!("{raw:?} names nothing"))),
                Some(("tag", t)) => Term::Tag(t.into()),
                Some(("id", i)) => Term::Id(i.into()),
                Some(("name", g)) => glob(g)?,
                Some(_) => return Err(bad(&format!("unknown kind in {raw:?}"))),
                None => glob(raw)?,
            };
            terms.push(term);
        }
        Ok(Selection {
            text: text.into(),
            terms,
        })
    }
}

impl Selection {
    /// Whether `device` is selected.
    pub fn matches(&self, device: &FleetDevice) -> bool {
        self.terms.iter().any(|t| match t {
            Term::Tag(tag) => device.tags.iter().any(|x| x == tag),
            Term::Id(id) => device.id.as_deref() == Some(id.as_str()),
            Term::Name(glob) => glob.is_match(&device.name),
        })
    }

    /// The selected devices, in inventory order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when nothing is selected: a rollout of no
    /// device is a mistake in the selection, not a success.
    pub fn apply(&self, devices: &[FleetDevice]) -> Result<Vec<FleetDevice>> {
        let chosen: Vec<FleetDevice> = devices
            .iter()
            .filter(|d| self.matches(d))
            .cloned()
            .collect();
        if chosen.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--select {:?} matches none of the {} devices",
                self.text,
                devices.len()
            )));
        }
        Ok(chosen)
    }
}

/// A size: a number of devices or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// This many devices.
    Count(usize),
    /// This percentage (0–100) of the devices.
    Percent(f64),
}

impl FromStr for Size {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?}: give a number of devices (3) or a percentage (10%)"
            ))
        };
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(Size::Percent(p))
            }
            None => s.parse().map(Size::Count).map_err(|_| bad()),
        }
    }
}

impl Size {
    /// The number of devices this size is of `total` (a percentage rounds up,
    /// so `10%` of 5 devices is one, not none).
    pub fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n.min(total),
            Size::Percent(p) => ((p / 100.0 * total as f64).ceil() as usize).min(total),
        }
    }
}

/// The waves of a rollout: `1,10%,100%` is a canary device, then up to a
/// tenth of the devices, then the rest. Each size is how much of the fleet
/// has been reached when that wave ends (cumulative); devices beyond the
/// last size form one more wave, so every selected device is in a wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups(Vec<Size>);

impl Default for Groups {
    /// One wave of every device.
    fn default() -> Self {
        Groups(vec![Size::Percent(100.0)])
    }
}

impl FromStr for Groups {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let sizes = s
            .split(',')
            .map(|t| {
                t.parse::<Size>()
                    .map_err(|e| Error::InvalidArgument(format!("--groups {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Groups(sizes))
    }
}

impl Groups {
    /// Cut `total` devices into waves: the index ranges of each (never an
    /// empty one).
    pub fn split(&self, total: usize) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut reached = 0;
        for size in &self.0 {
            let upto = size.of(total).max(reached);
            if upto > reached {
                out.push(reached..upto);
                reached = upto;
            }
        }
        if reached < total {
            out.push(reached..total);
        }
        out
    }
}

/// How many failures a rollout tolerates (`--max-failures N` or `P%`):
/// crossing it in a wave or in the whole rollout stops it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold(pub Size);

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.parse()
            .map(Threshold)
            .map_err(|e| Error::InvalidArgument(format!("--max-failures: {e}")))
    }
}

impl Threshold {
    /// Whether `failed` devices of `total` cross it.
    pub fn crossed(self, failed: usize, total: usize) -> bool {
        match self.0 {
            Size::Count(n) => failed > n,
            Size::Percent(p) => failed as f64 * 100.0 > p * total as f64,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Size::Count(n) => write!(f, "{n}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, tags: &[&str], id: Option<&str>) -> FleetDevice {
        let mut d = FleetDevice::tcp(name, "127.0.0.1", 2018);
        d.tags = tags.iter().map(|t| t.to_string()).collect();
        d.id = id.map(Into::into);
        d
    }

    #[test]
    fn selection_by_tag_id_and_glob() {
        let devs = [
            dev("hall-1", &["canary"], None),
            dev("hall-2", &[], Some("abc")),
            dev("lab", &["lab"], None),
        ];
        let names = |sel: &str| -> Vec<String> {
            let s: Selection = sel.parse().unwrap();
            s.apply(&devs)
                .unwrap()
                .into_iter()
                .map(|d| d.name)
                .collect()
        };
        assert_eq!(names("tag:canary"), ["hall-1"]);
        assert_eq!(names("id:abc"), ["hall-2"]);
        assert_eq!(names("hall-*"), ["hall-1", "hall-2"]);
        assert_eq!(names("name:lab,tag:canary"), ["hall-1", "lab"]);
        let none: Selection = "tag:nope".parse().unwrap();
        assert!(none
            .apply(&devs)
            .unwrap_err()
            .to_string()
            .contains("matches none"));
        for bad in ["", "tag:", "colour:red", "a,,b", "name:[x"] {
            assert!(bad.parse::<Selection>().is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_are_cumulative_waves() {
        let g: Groups = "1,10%,100%".parse().unwrap();
        assert_eq!(g.split(20), [0..1, 1..2, 2..20]);
        assert_eq!(g.split(100), [0..1, 1..10, 10..100]);
        assert_eq!(g.split(1).len(), 1);
        assert_eq!(g.split(1)[0], 0..1);
        let g: Groups = "2,50%".parse().unwrap();
        assert_eq!(
            g.split(10),
            [0..2, 2..5, 5..10],
            "the rest forms a last wave"
        );
        assert_eq!(Groups::default().split(3).len(), 1);
        assert_eq!(Groups::default().split(3)[0], 0..3);
        assert!("1,x".parse::<Groups>().is_err());
        assert!("120%".parse::<Groups>().is_err());
    }

    #[test]
    fn thresholds_count_and_percent() {
        let t: Threshold = "0".parse().unwrap();
        assert!(!t.crossed(0, 5));
        assert!(t.crossed(1, 5));
        let t: Threshold = "20%".parse().unwrap();
        assert!(!t.crossed(2, 10));
        assert!(t.crossed(3, 10));
        assert!("-1".parse::<Threshold>().is_err());
    }
}
