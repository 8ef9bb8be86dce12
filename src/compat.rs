//! Which devices a release fits: the `compat` fields of a project config,
//! carried in `begin` and bound by the release signature (see [`crate::release`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which devices a release is meant for. Empty fields match every device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compat {
    /// Accepted `sys.platform` values (`esp32`, `rp2`, `linux`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<String>,
    /// Accepted boards: a device matches when one entry is a substring of its
    /// `os.uname().machine` (e.g. `ESP32S3`, `Pico W`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub board: Vec<String>,
    /// Accepted MicroPython versions as `[min, max]`, both inclusive
    /// (`["1.20", "1.24.99"]`); a missing part compares as 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micropython: Option<(String, String)>,
}

impl Compat {
    /// Whether every field is empty (the release fits any device).
    pub fn is_empty(&self) -> bool {
        self.port.is_empty() && self.board.is_empty() && self.micropython.is_none()
    }

    /// Check that the fields can be carried in the signed payload.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an entry that is empty or holds a comma,
    /// a control character or more than 64 bytes, and for a version that is not
    /// dot-separated numbers.
    pub fn validate(&self) -> Result<()> {
        for (what, list) in [("port", &self.port), ("board", &self.board)] {
            if list.len() > 16 {
                return Err(Error::InvalidArgument(format!(
                    "compat {what}: at most 16 entries"
                )));
            }
            for v in list {
                if v.is_empty()
                    || v.len() > 64
                    || v.contains(',')
                    || v.chars().any(char::is_control)
                {
                    return Err(Error::InvalidArgument(format!(
                        "compat {what} entry {v:?}: 1-64 characters, no comma or control character"
                    )));
                }
            }
        }
        if let Some((lo, hi)) = &self.micropython {
            for v in [lo, hi] {
                let ok = !v.is_empty()
                    && v.len() <= 16
                    && v.split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return Err(Error::InvalidArgument(format!(
                        "compat micropython version {v:?}: use numbers like 1.22 or 1.22.2"
                    )));
                }
            }
        }
        Ok(())
    }
}
