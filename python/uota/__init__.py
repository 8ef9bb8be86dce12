"""uota: deploy MicroPython applications to devices over the air.

The work is done by the Rust extension ``uota._uota``; this package re-exports it.
"""

from uota._uota import (
    AuthError,
    ConfigError,
    Device,
    DeviceError,
    DirEntry,
    HashMismatch,
    InterpreterMissing,
    InvalidArgument,
    InvalidPath,
    LocalIOError,
    Manifest,
    ProtocolError,
    PushReport,
    ReleaseRefused,
    SignatureMismatch,
    TransportError,
    UotaError,
    UotaTimeoutError,
    VirtualDevice,
    __version__,
    derive_device_key,
    run_cli,
)

__all__ = [
    "AuthError",
    "ConfigError",
    "Device",
    "DeviceError",
    "DirEntry",
    "HashMismatch",
    "InterpreterMissing",
    "InvalidArgument",
    "InvalidPath",
    "LocalIOError",
    "Manifest",
    "ProtocolError",
    "PushReport",
    "ReleaseRefused",
    "SignatureMismatch",
    "TransportError",
    "UotaError",
    "UotaTimeoutError",
    "VirtualDevice",
    "__version__",
    "derive_device_key",
    "run_cli",
]
