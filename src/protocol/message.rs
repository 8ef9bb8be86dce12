//! Typed requests and replies carried in REQ and RES frames (JSON payloads).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// What a uota device says about itself in reply to the hello line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the device speaks.
    pub proto: u32,
    /// Largest frame payload the device accepts.
    pub max_frame: usize,
    /// Whether the device requires `auth` before other requests.
    #[serde(default)]
    pub auth: bool,
    /// Fresh per-connection nonce for challenge-response authentication.
    #[serde(default)]
    pub nonce: String,
    /// Optional capabilities (`deflate`, …).
    #[serde(default)]
    pub caps: Vec<String>,
    /// Version of the device runtime.
    #[serde(default)]
    pub runtime: String,
    /// Whether the device accepts micro-ota's legacy push sessions.
    #[serde(default)]
    pub legacy: bool,
    /// The device's id (what per-device keys are derived from).
    #[serde(default)]
    pub id: String,
    /// The highest release number the device has accepted (0: none yet).
    /// Whatever a device says here is tolerated: a number too large or not
    /// an integer reads as the nearest `u64` (a hostile or poisoned floor must
    /// not make every command fail to parse the hello).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub release: u64,
    /// Secrets the device accepts in `auth` (`"password"`, `"key"`); empty
    /// for a device with neither.
    #[serde(default)]
    pub auth_with: Vec<String>,
    /// Version of the device's active release (an older runtime omits it).
    #[serde(default)]
    pub version: String,
    /// `confirmed`, or `pending` while the active release waits for its
    /// confirmation (an older runtime omits it).
    #[serde(default)]
    pub state: String,
    /// How the device derived its password verifier
    /// ([`crate::auth::PasswordKdf::parse`]); empty for SHA-256.
    #[serde(default)]
    pub kdf: String,
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f > 0.0)
                    .map(|f| f.min(u64::MAX as f64) as u64)
            })
            .unwrap_or(0),
        _ => 0,
    })
}

impl Hello {
    /// Parse the device's reply to the hello line: `uota <proto> <json>`.
    ///
    /// Returns `Ok(None)` when the line is not a uota hello at all (for
    /// example micro-ota's `unknown`), and an error when it claims to be one
    /// but is malformed.
    pub fn parse(line: &str) -> Result<Option<Hello>> {
        let Some(rest) = line.strip_prefix("uota ") else {
            return Ok(None);
        };
        let (_, json) = rest
            .split_once(' ')
            .ok_or_else(|| Error::Protocol(format!("malformed hello reply: {line:?}")))?;
        let hello: Hello = serde_json::from_str(json)
            .map_err(|e| Error::Protocol(format!("malformed hello reply: {e}")))?;
        if hello.max_frame < 256 {
            return Err(Error::Protocol(format!(
                "device advertises a max frame of {} bytes, below the minimum of 256",
                hello.max_frame
            )));
        }
        Ok(Some(hello))
    }

    /// Whether the device accepts `auth` with `method`.
    pub fn accepts(&self, method: crate::auth::AuthMethod) -> bool {
        self.auth_with.iter().any(|m| m == method.as_str())
    }

    /// Whether the device advertised capability `cap`.
    pub fn has_cap(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

/// Which files a push sends, and what the device does with the files of
/// the release before (the `mode` of `begin`, and of the signed release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// micro-ota's `fast`: the `fastOtaFiles` patterns only; a partial
    /// update: files are added or replaced, nothing is removed.
    #[default]
    Fast,
    /// micro-ota's `full`: `fastOtaFiles` plus `fullOtaFiles`; a complete
    /// release: the device drops files of the previous release that are not
    /// in the new one.
    Full,
}

impl PushMode {
    /// The mode's name on the wire and on the command line: `"fast"` or `"full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushMode::Fast => "fast",
            PushMode::Full => "full",
        }
    }
}

impl std::fmt::Display for PushMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PushMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fast" => Ok(PushMode::Fast),
            "full" => Ok(PushMode::Full),
            other => Err(Error::InvalidArgument(format!(
                "unknown push mode {other:?} (expected \"fast\" or \"full\")"
            ))),
        }
    }
}

/// The `op` names of the requests that change the device
/// ([`Request::changes_state`]): sealed in an authenticated session.
pub const STATE_OPS: &[&str] = &[
    "rm", "reset", "wipe", "passwd", "floor", "begin", "file", "rekey", "commit", "abort", "call",
    "listen",
];

/// A request (REQ frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Prove knowledge of the password or the signing key
    /// ([`crate::auth::challenge_response`]).
    Auth {
        /// Hex HMAC over the hello nonce and the device id.
        mac: String,
        /// `"password"` or `"key"`.
        with: String,
    },
    /// Liveness check.
    Ping,
    /// Device and release information.
    Info,
    /// List a folder.
    Ls {
        /// Device path.
        path: String,
        /// Ask for the entries as a DATA stream of `<d|f> <size> <name>`
        /// lines (a runtime that predates it replies with `entries`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        lines: bool,
    },
    /// Read a file (reply followed by a DATA stream).
    Get {
        /// Device path.
        path: String,
    },
    /// Remove a file or empty folder.
    Rm {
        /// Device path.
        path: String,
    },
    /// Reset the device.
    Reset,
    /// Remove the app, keeping runtime, config and data.
    Wipe,
    /// Set (or clear, with an empty string) the password verifier.
    Passwd {
        /// The new verifier ([`crate::auth::Password::verifier`]).
        verifier: String,
    },
    /// Set the release-number floor (the owner's way out of a floor set too high).
    Floor {
        /// The new floor (at most [`crate::release::MAX_RELEASE`]).
        release: u64,
    },
    /// Open a push session (followed by a DATA stream of manifest lines).
    Begin {
        /// Release version.
        version: String,
        /// Full or fast.
        mode: PushMode,
        /// Number of manifest entries.
        count: usize,
        /// Hex HMAC-SHA256 of the release payload (see [`crate::release`]), if signed.
        #[serde(skip_serializing_if = "Option::is_none")]
        sig: Option<String>,
        /// Whether the release may replace the runtime (`boot.py`, `lib/uota/`).
        runtime: bool,
        /// Release number (monotonically increasing).
        release: u64,
        /// Whether the release is signed as a rollback to a lower number.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        rollback: bool,
        /// The one device the release is for (empty: any).
        #[serde(skip_serializing_if = "String::is_empty")]
        device: String,
        /// Which devices the release fits.
        #[serde(skip_serializing_if = "crate::compat::Compat::is_empty")]
        compat: crate::compat::Compat,
        /// SHA-256 hex of the manifest stream that follows, so that in a
        /// sealed session the stream is bound as well as the request.
        #[serde(skip_serializing_if = "Option::is_none")]
        mdigest: Option<String>,
    },
    /// Send one file (followed by a DATA stream of its bytes).
    File {
        /// Device path.
        path: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256 hex.
        sha256: String,
        /// Resume: the DATA stream starts at this byte of the file.
        #[serde(skip_serializing_if = "is_zero")]
        offset: u64,
        /// Payload encoding: `Some("deflate")` for one zlib stream per DATA frame.
        #[serde(skip_serializing_if = "Option::is_none")]
        enc: Option<String>,
    },
    /// Replace the device's signing key with one encrypted under the current
    /// key (see [`crate::auth::rekey_message`]).
    Rekey {
        /// Hex ciphertext of the new key.
        key: String,
        /// Hex MAC of the ciphertext under the current key.
        mac: String,
    },
    /// Read the active release's manifest (reply followed by a DATA stream of lines).
    Manifest,
    /// The active release's version, entry count and the SHA-256 of its
    /// manifest lines, in the reply alone (no stream).
    Summary,
    /// List what the open push session has staged (reply followed by a DATA stream).
    Staged,
    /// Commit the staged release.
    Commit {
        /// Reset into the new release after committing.
        reset: bool,
    },
    /// Abandon the push session.
    Abort,
    /// End the connection (a serial session hands the console back to the REPL).
    Bye,
    /// Run a RemoteIO handler of the device's app (docs/remoteio.md). A
    /// call resent with the same id runs once.
    Call {
        /// The call's id, unique per call (at most 64 characters).
        id: String,
        /// The handler's name.
        name: String,
        /// Its keyword arguments.
        args: serde_json::Map<String, Value>,
    },
    /// Stream the device's output from sequence number `from` (the reply,
    /// then DATA frames until the link drops; docs/remoteio.md).
    Listen {
        /// The first sequence number wanted.
        from: u64,
        /// The boot `from` counts in (a device in another boot starts
        /// from its buffer's beginning); `None` for a first listen.
        #[serde(skip_serializing_if = "Option::is_none")]
        boot: Option<u64>,
        /// How often the device sends a keepalive while it has nothing to send.
        keepalive_ms: u64,
    },
}

impl Request {
    /// The `op` name, for error messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Auth { .. } => "auth",
            Request::Ping => "ping",
            Request::Info => "info",
            Request::Ls { .. } => "ls",
            Request::Get { .. } => "get",
            Request::Rm { .. } => "rm",
            Request::Reset => "reset",
            Request::Wipe => "wipe",
            Request::Passwd { .. } => "passwd",
            Request::Begin { .. } => "begin",
            Request::Rekey { .. } => "rekey",
            Request::File { .. } => "file",
            Request::Manifest => "manifest",
            Request::Summary => "summary",
            Request::Staged => "staged",
            Request::Commit { .. } => "commit",
            Request::Abort => "abort",
            Request::Bye => "bye",
            Request::Floor { .. } => "floor",
            Request::Call { .. } => "call",
            Request::Listen { .. } => "listen",
        }
    }

    /// Whether the request changes the device (or, for `listen`, reads
    /// what only an authenticated host may read). In an authenticated session
    /// these are sealed ([`crate::protocol::session`]); a device with a
    /// password or a signing key serves them only to an authenticated host.
    pub fn changes_state(&self) -> bool {
        let changes = matches!(
            self,
            Request::Rm { .. }
                | Request::Reset
                | Request::Wipe
                | Request::Passwd { .. }
                | Request::Floor { .. }
                | Request::Begin { .. }
                | Request::File { .. }
                | Request::Rekey { .. }
                | Request::Commit { .. }
                | Request::Abort
                | Request::Call { .. }
                | Request::Listen { .. }
        );
        debug_assert_eq!(changes, STATE_OPS.contains(&self.op()));
        changes
    }

    /// The JSON payload of this request.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("requests always serialize")
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A successful reply: the JSON object without its `ok` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The reply's fields.
    pub fields: serde_json::Map<String, Value>,
}

impl Response {
    /// Parse a RES payload for request `op`; an error reply becomes an [`Error`].
    pub fn parse(op: &str, payload: &[u8]) -> Result<Response> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| Error::Protocol(format!("malformed reply to {op}: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(Error::Protocol(format!("reply to {op} is not an object")));
        };
        match fields.remove("ok") {
            Some(Value::Bool(true)) => Ok(Response { fields }),
            Some(Value::Bool(false)) => {
                let code = fields.get("err").and_then(Value::as_str).unwrap_or("error");
                let msg = fields.get("msg").and_then(Value::as_str).unwrap_or("");
                Err(Error::from_device(op, code, msg))
            }
            _ => Err(Error::Protocol(format!("reply to {op} has no ok flag"))),
        }
    }

    /// Deserialize the reply's fields into a typed struct.
    pub fn into_typed<T: serde::de::DeserializeOwned>(self, op: &str) -> Result<T> {
        serde_json::from_value(Value::Object(self.fields))
            .map_err(|e| Error::Protocol(format!("unexpected reply to {op}: {e}")))
    }

    /// A string field.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// A boolean field (`false` when absent).
    pub fn bool_field(&self, name: &str) -> bool {
        self.fields
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// An unsigned integer field.
    pub fn u64_field(&self, name: &str) -> Option<u64> {
        self.fields.get(name).and_then(Value::as_u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn push_mode_names() {
        assert_eq!("fast".parse::<PushMode>().unwrap(), PushMode::Fast);
        assert_eq!("full".parse::<PushMode>().unwrap(), PushMode::Full);
        assert_eq!(PushMode::Full.to_string(), "full");
        assert!("delta".parse::<PushMode>().is_err());
        assert_eq!(serde_json::to_string(&PushMode::Fast).unwrap(), "\"fast\"");
    }

    #[test]
    fn hello_parses() {
        let h = Hello::parse(r#"uota 1 {"proto":1,"max_frame":8192,"auth":true,"nonce":"ab","caps":["deflate"],"runtime":"0.1.0"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(h.max_frame, 8192);
        assert!(h.auth && h.has_cap("deflate") && !h.legacy);
        assert_eq!(Hello::parse("unknown").unwrap(), None);
        assert!(Hello::parse("uota 1 {").is_err());
        assert!(Hello::parse(r#"uota 1 {"proto":1,"max_frame":3}"#).is_err());
    }

    #[test]
    fn requests_serialize_with_op_tag() {
        let r = Request::Begin {
            version: "1.0".into(),
            mode: PushMode::Full,
            count: 2,
            sig: None,
            runtime: false,
            release: 3,
            rollback: false,
            device: String::new(),
            compat: Default::default(),
            mdigest: None,
        };
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["op"], "begin");
        assert_eq!(v["mode"], "full");
        assert!(v.get("sig").is_none());
        assert_eq!(v["release"], 3);
        assert!(v.get("rollback").is_none() && v.get("compat").is_none());
        assert_eq!(
            String::from_utf8(Request::Ping.to_json()).unwrap(),
            r#"{"op":"ping"}"#
        );
    }

    #[test]
    fn error_replies_map_to_typed_errors() {
        let e =
            Response::parse("begin", br#"{"ok":false,"err":"sig_mismatch","msg":""}"#).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::SignatureMismatch);
        let e = Response::parse(
            "file",
            br#"{"ok":false,"err":"sha256_mismatch","msg":"app/a.py"}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::HashMismatch);
        let e =
            Response::parse("x", br#"{"ok":false,"err":"busy","msg":"another push"}"#).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Device);
        assert!(Response::parse("x", b"[1]").is_err());
        assert!(Response::parse("x", br#"{"v":1}"#).is_err());
    }

    proptest! {
        #[test]
        fn garbage_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Response::parse("x", &bytes);
            if let Ok(s) = std::str::from_utf8(&bytes) { let _ = Hello::parse(s); }
        }
    }
}
