//! What a signed uota release claims, and its signature.
//!
//! micro-ota signs only the version and the file hashes, so a captured signed
//! manifest can be pushed again later (replay) and an old one pushed over a new
//! one (downgrade). A uota release signature also covers a monotonically
//! increasing release number, the session nonce of the push, the device it is
//! meant for, the push mode and the compatibility fields; the device checks
//! each of them (see `docs/security.md`).
//!
//! The signed payload ([`ReleaseClaims::payload`]) is line based so that a
//! device can fold it into an HMAC as the manifest streams in:
//!
//! ```text
//! uota-release-v1
//! release=<n>
//! version=<version>
//! mode=<full|fast>
//! runtime=<0|1>
//! rollback=<0|1>
//! nonce=<session nonce>
//! device=<device id, or empty for any device>
//! port=<comma-separated sys.platform values, or empty>
//! board=<comma-separated board name parts, or empty>
//! micropython=<min>..<max, or empty>
//! files=<count>
//! <path>:<sha256>:<size>        one line per file, in manifest order
//! ```

use crate::auth::SigningKey;
use crate::compat::Compat;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::protocol::PushMode;

/// First line of the signed payload; names the format.
pub const PAYLOAD_MAGIC: &str = "uota-release-v1";

/// The largest release number a release may carry: 2^53, the largest
/// integer every JSON reader (and MicroPython's float fallback) keeps exact.
/// Devices refuse larger numbers, so no push can set a floor that a host
/// cannot read back or go beyond.
pub const MAX_RELEASE: u64 = 1 << 53;

/// Everything a release signature binds besides the file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseClaims {
    /// Monotonically increasing release number; a device refuses numbers
    /// below the highest it accepted unless [`rollback`](Self::rollback) is set.
    pub release: u64,
    /// Whether this release was signed as a deliberate rollback to a lower number.
    pub rollback: bool,
    /// Full or fast.
    pub mode: PushMode,
    /// Whether the release may replace the device runtime.
    pub runtime: bool,
    /// The nonce of the session the push runs in (from the device's hello);
    /// empty for a release signed offline.
    pub nonce: String,
    /// The id of the one device the release is for; empty for any device.
    pub device: String,
    /// Which devices the release fits.
    pub compat: Compat,
}

impl ReleaseClaims {
    /// The bytes the signature covers, for `manifest` (see the module docs).
    pub fn payload(&self, manifest: &Manifest) -> Vec<u8> {
        let mut out = self.header(&manifest.version, manifest.files.len());
        for f in &manifest.files {
            out.extend_from_slice(f.path.as_bytes());
            out.push(b':');
            out.extend_from_slice(f.sha256_hex().as_bytes());
            out.push(b':');
            out.extend_from_slice(f.size.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The header lines of the payload, up to and including `files=<count>`.
    pub fn header(&self, version: &str, count: usize) -> Vec<u8> {
        let micropython = match &self.compat.micropython {
            Some((lo, hi)) => format!("{lo}..{hi}"),
            None => String::new(),
        };
        format!(
            "{PAYLOAD_MAGIC}\nrelease={}\nversion={version}\nmode={}\nruntime={}\nrollback={}\nnonce={}\ndevice={}\nport={}\nboard={}\nmicropython={micropython}\nfiles={count}\n",
            self.release,
            self.mode.as_str(),
            u8::from(self.runtime),
            u8::from(self.rollback),
            self.nonce,
            self.device,
            self.compat.port.join(","),
            self.compat.board.join(","),
        )
        .into_bytes()
    }

    /// The lowercase hex HMAC-SHA256 under `key` of the payload for `manifest`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the compatibility fields, the nonce or
    /// the device id cannot be carried in the payload.
    pub fn sign(&self, manifest: &Manifest, key: &SigningKey) -> Result<String> {
        self.compat.validate()?;
        for (what, v) in [("nonce", &self.nonce), ("device id", &self.device)] {
            if v.len() > 64 || v.chars().any(char::is_control) {
                return Err(Error::InvalidArgument(format!(
                    "{what} {v:?}: at most 64 characters, no control character"
                )));
            }
        }
        Ok(hex::encode(key.sign(&self.payload(manifest))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hmac_sha256;
    use crate::manifest::FileEntry;

    fn claims() -> ReleaseClaims {
        ReleaseClaims {
            release: 7,
            rollback: false,
            mode: PushMode::Full,
            runtime: false,
            nonce: "abc".into(),
            device: "dev1".into(),
            compat: Compat {
                port: vec!["esp32".into(), "rp2".into()],
                board: vec![],
                micropython: Some(("1.20".into(), "1.24.99".into())),
            },
        }
    }

    #[test]
    fn payload_matches_the_documented_layout() {
        let m = Manifest::new(
            "1.0",
            vec![
                FileEntry::from_bytes("main.py", b"x"),
                FileEntry::from_bytes("app/a.py", b""),
            ],
        )
        .unwrap();
        let got = String::from_utf8(claims().payload(&m)).unwrap();
        let a = m.get("app/a.py").unwrap().sha256_hex();
        let b = m.get("main.py").unwrap().sha256_hex();
        let want = format!(
            "uota-release-v1\nrelease=7\nversion=1.0\nmode=full\nruntime=0\nrollback=0\nnonce=abc\ndevice=dev1\nport=esp32,rp2\nboard=\nmicropython=1.20..1.24.99\nfiles=2\napp/a.py:{a}:0\nmain.py:{b}:1\n"
        );
        assert_eq!(got, want);
        let key = SigningKey::new("k");
        assert_eq!(
            claims().sign(&m, &key).unwrap(),
            hex::encode(hmac_sha256(b"k", want.as_bytes()))
        );
    }

    #[test]
    fn every_claim_changes_the_signature() {
        let m = Manifest::new("1.0", vec![FileEntry::from_bytes("main.py", b"x")]).unwrap();
        let key = SigningKey::new("k");
        let base = claims().sign(&m, &key).unwrap();
        type Edit = Box<dyn Fn(&mut ReleaseClaims)>;
        let variants: Vec<Edit> = vec![
            Box::new(|c| c.release = 8),
            Box::new(|c| c.rollback = true),
            Box::new(|c| c.mode = PushMode::Fast),
            Box::new(|c| c.runtime = true),
            Box::new(|c| c.nonce = "abd".into()),
            Box::new(|c| c.device = "dev2".into()),
            Box::new(|c| c.compat.port.pop().map(drop).unwrap_or(())),
            Box::new(|c| c.compat.board.push("PICO".into())),
            Box::new(|c| c.compat.micropython = None),
        ];
        for edit in variants {
            let mut c = claims();
            edit(&mut c);
            assert_ne!(c.sign(&m, &key).unwrap(), base);
        }
    }

    #[test]
    fn bad_compat_and_ids_are_refused() {
        let m = Manifest::new("1.0", vec![]).unwrap();
        let key = SigningKey::new("k");
        let mut c = claims();
        c.compat.port = vec!["a,b".into()];
        assert!(c.sign(&m, &key).is_err());
        let mut c = claims();
        c.compat.micropython = Some(("1.x".into(), "2".into()));
        assert!(c.sign(&m, &key).is_err());
        let mut c = claims();
        c.device = "a\nrelease=9".into();
        assert!(c.sign(&m, &key).is_err());
    }
}
