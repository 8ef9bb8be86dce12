//! Release manifests: which files a release holds, with their sizes and SHA-256.
//!
//! A [`Manifest`] is built from a folder ([`Manifest::build`]; a project's
//! push is made by [`crate::bundle::Bundle`]), signed with micro-ota's signing payload
//! ([`Manifest::sign`]), compared with what a device has ([`Manifest::diff`]),
//! and written in two formats: micro-ota's push-manifest JSON
//! ([`Manifest::to_json`]) and the line format of `/ota_manifest.txt` and of the
//! `begin` stream ([`Manifest::manifest_lines`], `docs/protocol.md` section 4).
//!
//! Entries are kept sorted by the bytes of `path + ":"` (see
//! [`manifest_path_cmp`]), so `a.py` comes before `a`, because `.` sorts
//! before `:`.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind as IoErrorKind, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::auth::{constant_time_eq, SigningKey};
use crate::error::{Error, Result};

/// Longest device path, in bytes.
pub const MAX_PATH_LEN: usize = 255;

/// Project-root files that never go into a manifest, whatever the patterns
/// say: the project's secrets (`crate::config::SECRETS_PATH`) and micro-ota's
/// board cache.
pub const ALWAYS_EXCLUDED: &[&str] = &["config/.ota.secrets.json", ".uota_cache.json"];

const HASH_BUFFER: usize = 64 * 1024;
const MAX_HASH_THREADS: usize = 2;
/// Below this many files, hashing on one thread is as fast as spawning more.
const PARALLEL_MIN_FILES: usize = 64;

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileEntry {
    /// Device path, relative and `/`-separated (see [`validate_device_path`]).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

impl FileEntry {
    /// An entry for `path` holding exactly `data`.
    pub fn from_bytes(path: impl Into<String>, data: &[u8]) -> Self {
        FileEntry {
            path: path.into(),
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Where the bytes of a file to send come from: a file on disk, or bytes
/// made on the host (a generated config, a file compiled to `.mpy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// The local file at this path, streamed.
    Disk(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

impl FileSource {
    /// The size of the contents, in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read.
    pub fn size(&self) -> Result<u64> {
        match self {
            FileSource::Bytes(b) => Ok(b.len() as u64),
            FileSource::Disk(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| Error::io(p, e)),
        }
    }

    /// The SHA-256 of the contents.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read.
    pub fn sha256(&self) -> Result<[u8; 32]> {
        Ok(self.entry("-")?.sha256)
    }

    /// The manifest entry of these contents at the device path `path`
    /// (not checked here; [`Manifest::new`] checks paths).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read.
    pub fn entry(&self, path: &str) -> Result<FileEntry> {
        match self {
            FileSource::Bytes(b) => Ok(FileEntry::from_bytes(path, b)),
            FileSource::Disk(p) => hash_file(path, p, &mut vec![0u8; HASH_BUFFER]),
        }
    }

    /// The whole contents.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read.
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            FileSource::Bytes(b) => Ok(b.clone()),
            FileSource::Disk(p) => std::fs::read(p).map_err(|e| Error::io(p, e)),
        }
    }
}

/// Order two device paths the way manifests are sorted: by the bytes of
/// `path + ":"`.
pub fn manifest_path_cmp(a: &str, b: &str) -> Ordering {
    let colon = std::iter::once(b':');
    a.bytes().chain(colon.clone()).cmp(b.bytes().chain(colon))
}

/// Check that `path` is a valid device path: relative, `/`-separated UTF-8
/// without NUL, other control characters (a line break would corrupt the
/// manifest lines) or backslash, no empty, `.` or `..` component, no leading
/// `/`, at most [`MAX_PATH_LEN`] bytes.
///
/// # Errors
///
/// [`Error::InvalidPath`] saying which rule failed.
pub fn validate_device_path(path: &str) -> Result<()> {
    let reason = if path.is_empty() {
        Some("empty path")
    } else if path.len() > MAX_PATH_LEN {
        Some("longer than 255 bytes")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else if path.chars().any(char::is_control) {
        Some("contains a control character (such as a line break)")
    } else if path.contains('\\') {
        Some("contains a backslash (use '/' as separator)")
    } else if path.contains(':') {
        Some("contains ':' (it would make the signing order ambiguous, and FAT refuses it)")
    } else if path.starts_with('/') {
        Some("absolute path (must be relative to the device root)")
    } else if path.split('/').any(|c| c.is_empty()) {
        Some("empty path component")
    } else if path.split('/').any(|c| c == "." || c == "..") {
        Some("'.' or '..' component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// A release: its version and its files, sorted by [`manifest_path_cmp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Release version string.
    pub version: String,
    /// Files, sorted by the bytes of `path + ":"`, each path once.
    pub files: Vec<FileEntry>,
    /// Lowercase hex HMAC-SHA256 of the [signing payload](Manifest::signing_payload), if signed.
    pub sig: Option<String>,
}

/// How a newer manifest differs from an older one (see [`Manifest::diff`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    /// Entries of the newer manifest whose path the older one lacks.
    pub added: Vec<FileEntry>,
    /// Entries of the newer manifest whose size or hash differ from the older one's.
    pub changed: Vec<FileEntry>,
    /// Paths of the older manifest that the newer one lacks.
    pub removed: Vec<String>,
    /// Paths present in both with the same size and hash.
    pub unchanged: Vec<String>,
}

impl ManifestDiff {
    /// Whether the two manifests hold the same files.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// The entries whose bytes must be sent: added, then changed, in manifest order.
    pub fn to_send(&self) -> Vec<&FileEntry> {
        let mut out: Vec<&FileEntry> = self.added.iter().chain(&self.changed).collect();
        out.sort_by(|a, b| manifest_path_cmp(&a.path, &b.path));
        out
    }

    /// Total bytes of [`to_send`](ManifestDiff::to_send).
    pub fn bytes_to_send(&self) -> u64 {
        self.added.iter().chain(&self.changed).map(|e| e.size).sum()
    }
}

impl Manifest {
    /// A manifest of `files`, validated and sorted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPath`] for an invalid path, [`Error::InvalidArgument`]
    /// for a path given twice.
    pub fn new(version: impl Into<String>, mut files: Vec<FileEntry>) -> Result<Manifest> {
        for entry in &files {
            validate_device_path(&entry.path)?;
        }
        files.sort_by(|a, b| manifest_path_cmp(&a.path, &b.path));
        if let Some(pair) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::InvalidArgument(format!(
                "path {:?} appears twice in the manifest",
                pair[0].path
            )));
        }
        Ok(Manifest {
            version: version.into(),
            files,
            sig: None,
        })
    }

    /// Build a manifest from the files under `root`.
    ///
    /// `include` and `exclude` are micro-ota glob patterns relative to `root`:
    /// `**` crosses folders, `*` and `?` do not cross `/`. A file is taken when
    /// it matches an include pattern and no exclude pattern. Hidden files and
    /// folders (name starting with `.`) are never taken, nor are
    /// [`ALWAYS_EXCLUDED`] files; symbolic links are not followed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad pattern, [`Error::InvalidPath`] for
    /// a taken file whose name is not UTF-8 or not a valid device path,
    /// [`Error::Io`] when the tree cannot be read.
    pub fn build(
        root: &Path,
        include: &[String],
        exclude: &[String],
        version: &str,
    ) -> Result<Manifest> {
        let include = compile_globs(include).map_err(Error::InvalidArgument)?;
        let exclude = compile_globs(exclude).map_err(Error::InvalidArgument)?;
        build_from_globs(root, &include, &exclude, version)
    }

    /// Put `entry` in place of the entry with the same path, or add it;
    /// keeps the order. Clears [`sig`](Manifest::sig), which no longer holds.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPath`] for an invalid path.
    pub fn replace_entry(&mut self, entry: FileEntry) -> Result<()> {
        validate_device_path(&entry.path)?;
        match self
            .files
            .binary_search_by(|e| manifest_path_cmp(&e.path, &entry.path))
        {
            Ok(i) => self.files[i] = entry,
            Err(i) => self.files.insert(i, entry),
        }
        self.sig = None;
        Ok(())
    }

    /// The entry for `path`, if any (binary search; relies on the sort order).
    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|e| manifest_path_cmp(&e.path, path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }

    /// micro-ota's signing payload: the version, `"\n"`, then the sorted
    /// `"path:sha256hex"` strings joined with `"\n"`, with no trailing newline.
    pub fn signing_payload(&self) -> Vec<u8> {
        let len = self.version.len()
            + 1
            + self
                .files
                .iter()
                .map(|e| e.path.len() + 1 + 64 + 1)
                .sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(self.version.as_bytes());
        out.push(b'\n');
        // micro-ota sorts the "path:sha256hex" strings. That is the manifest
        // order unless a path contains ':' (then "a" + ":" + hash may sort
        // after "a:b" + ":" + hash), or the files were reordered by hand.
        let in_order = self.files.iter().all(|e| !e.path.contains(':'))
            && self
                .files
                .windows(2)
                .all(|w| manifest_path_cmp(&w[0].path, &w[1].path) == Ordering::Less);
        if in_order {
            let mut hex_buf = [0u8; 64];
            for (i, e) in self.files.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(e.path.as_bytes());
                out.push(b':');
                hex::encode_to_slice(e.sha256, &mut hex_buf).expect("64 bytes hold 32 in hex");
                out.extend_from_slice(&hex_buf);
            }
        } else {
            let mut lines: Vec<String> = self
                .files
                .iter()
                .map(|e| format!("{}:{}", e.path, e.sha256_hex()))
                .collect();
            lines.sort_unstable();
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(line.as_bytes());
            }
        }
        out
    }

    /// The lowercase hex HMAC-SHA256 of the signing payload under `key`.
    pub fn signature(&self, key: &SigningKey) -> String {
        hex::encode(key.sign(&self.signing_payload()))
    }

    /// Sign the manifest with `key`, setting [`sig`](Manifest::sig).
    pub fn sign(&mut self, key: &SigningKey) {
        self.sig = Some(self.signature(key));
    }

    /// Check [`sig`](Manifest::sig) against `key`, in constant time.
    ///
    /// # Errors
    ///
    /// [`Error::SignatureMismatch`] when unsigned or when the signature is wrong.
    pub fn verify(&self, key: &SigningKey) -> Result<()> {
        let Some(sig) = &self.sig else {
            return Err(Error::SignatureMismatch(
                "the manifest is not signed".into(),
            ));
        };
        let expected = key.sign(&self.signing_payload());
        let mut given = [0u8; 32];
        let well_formed = hex::decode_to_slice(sig, &mut given).is_ok();
        if well_formed && constant_time_eq(&given, &expected) {
            Ok(())
        } else {
            Err(Error::SignatureMismatch(
                "the manifest signature does not match the signing key".into(),
            ))
        }
    }

    /// micro-ota's push-manifest JSON:
    /// `{"version": V, "files": {path: {"size": N, "sha256": HEX}}, "sig": HEX}`
    /// (compact, files in manifest order, `sig` only when signed).
    pub fn to_json(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = String::with_capacity(32 + self.files.len() * 112);
        out.push_str("{\"version\":");
        out.push_str(&q(&self.version));
        out.push_str(",\"files\":{");
        for (i, e) in self.files.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&q(&e.path));
            out.push_str(":{\"size\":");
            out.push_str(&e.size.to_string());
            out.push_str(",\"sha256\":\"");
            out.push_str(&e.sha256_hex());
            out.push_str("\"}");
        }
        out.push('}');
        if let Some(sig) = &self.sig {
            out.push_str(",\"sig\":");
            out.push_str(&q(sig));
        }
        out.push('}');
        out
    }

    /// Parse micro-ota's push-manifest JSON (see [`to_json`](Manifest::to_json)).
    ///
    /// Extra keys are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for malformed JSON, missing keys or bad hex;
    /// [`Error::InvalidPath`] for a bad path.
    pub fn from_json(json: &str) -> Result<Manifest> {
        use serde_json::Value;
        let bad = |msg: String| Error::Protocol(format!("bad manifest JSON: {msg}"));
        let value: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let version = obj
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("\"version\" must be a string".into()))?;
        let files = obj
            .get("files")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("\"files\" must be an object".into()))?;
        let mut entries = Vec::with_capacity(files.len());
        for (path, info) in files {
            validate_device_path(path)?;
            let size = info
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("{path:?}: \"size\" must be a non-negative integer")))?;
            let sha = info
                .get("sha256")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{path:?}: \"sha256\" must be a string")))?;
            let sha256 = parse_sha256(sha).map_err(|m| bad(format!("{path:?}: {m}")))?;
            entries.push(FileEntry {
                path: path.clone(),
                size,
                sha256,
            });
        }
        let sig = match obj.get("sig") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let sig = parse_sha256(s).map_err(|m| bad(format!("\"sig\": {m}")))?;
                Some(hex::encode(sig))
            }
            Some(_) => return Err(bad("\"sig\" must be a string".into())),
        };
        let mut manifest = Manifest::new(version, entries).map_err(|e| match e {
            Error::InvalidArgument(m) => bad(m),
            other => other,
        })?;
        manifest.sig = sig;
        Ok(manifest)
    }

    /// The manifest as lines `<sha256hex> <size> <path>\n`, in manifest order
    /// (the `begin` stream and `/ota_manifest.txt`, `docs/protocol.md` section 4).
    pub fn manifest_lines(&self) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.files.iter().map(|e| e.path.len() + 88).sum());
        let mut hex_buf = [0u8; 64];
        for e in &self.files {
            hex::encode_to_slice(e.sha256, &mut hex_buf).expect("64 bytes hold 32 in hex");
            out.extend_from_slice(&hex_buf);
            // Writing into a Vec cannot fail.
            let _ = write!(out, " {} ", e.size);
            out.extend_from_slice(e.path.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Parse the line format of [`manifest_lines`](Manifest::manifest_lines).
    ///
    /// Blank lines and a trailing `\r` are tolerated; the result is sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a malformed line or a path given twice,
    /// [`Error::InvalidPath`] for a bad path.
    pub fn parse_lines(version: &str, bytes: &[u8]) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::Protocol(format!("manifest lines are not UTF-8: {e}")))?;
        let mut entries = Vec::new();
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let bad = |msg: &str| Error::Protocol(format!("manifest line {}: {msg}", n + 1));
            let mut parts = line.splitn(3, ' ');
            let (Some(sha), Some(size), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `<sha256> <size> <path>`"));
            };
            let sha256 = parse_sha256(sha).map_err(|m| bad(&m))?;
            let size = size
                .parse::<u64>()
                .map_err(|_| bad(&format!("bad size {size:?}")))?;
            validate_device_path(path)?;
            entries.push(FileEntry {
                path: path.to_string(),
                size,
                sha256,
            });
        }
        Manifest::new(version, entries).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::Protocol(format!("bad manifest lines: {m}")),
            other => other,
        })
    }

    /// How `newer` differs from `self` (the older manifest, e.g. the device's).
    ///
    /// A file counts as changed when its size or hash differs.
    pub fn diff(&self, newer: &Manifest) -> ManifestDiff {
        let old: HashMap<&str, &FileEntry> =
            self.files.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut diff = ManifestDiff::default();
        let mut seen = HashSet::with_capacity(newer.files.len());
        for e in &newer.files {
            seen.insert(e.path.as_str());
            match old.get(e.path.as_str()) {
                None => diff.added.push(e.clone()),
                Some(o) if o.sha256 != e.sha256 || o.size != e.size => diff.changed.push(e.clone()),
                Some(_) => diff.unchanged.push(e.path.clone()),
            }
        }
        diff.removed = self
            .files
            .iter()
            .filter(|e| !seen.contains(e.path.as_str()))
            .map(|e| e.path.clone())
            .collect();
        diff
    }
}

fn parse_sha256(s: &str) -> std::result::Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            s.len()
        ));
    }
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("bad hex: {e}"))?;
    Ok(out)
}

/// Compile micro-ota patterns into a set; the error is a readable message.
fn compile_globs(patterns: &[String]) -> std::result::Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let normalized = pattern.strip_prefix("./").unwrap_or(pattern);
        let glob = GlobBuilder::new(normalized)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid glob pattern {pattern:?}: {e}"))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| format!("invalid glob patterns: {e}"))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The relative `/`-joined path of `rel`, or `None` when a component is not UTF-8.
fn device_path_of(rel: &Path) -> Option<String> {
    let mut out = String::new();
    for component in rel.components() {
        if let Component::Normal(part) = component {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(part.to_str()?);
        }
    }
    Some(out)
}

/// Whether `path` is the filesystem of a device inside the project (a
/// virtual device's `--root`, a copy of a board): it holds the uota
/// runtime. Never part of a release, whatever the globs say.
fn is_device_root(path: &Path, kind: std::fs::FileType) -> bool {
    kind.is_dir()
        && ["server.py", "server.mpy"]
            .iter()
            .any(|f| path.join("lib/uota").join(f).is_file())
}

fn build_from_globs(
    root: &Path,
    include: &GlobSet,
    exclude: &GlobSet,
    version: &str,
) -> Result<Manifest> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            root,
            std::io::Error::new(IoErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut wanted: Vec<(String, PathBuf)> = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0 || !(is_hidden(e.file_name()) || is_device_root(e.path(), e.file_type()))
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("file system loop"));
            Error::io(path, source)
        })?;
        if !entry.file_type().is_file() {
            if entry.path_is_symlink() {
                tracing::debug!(path = %entry.path().display(), "skipping symbolic link");
            }
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under its root");
        if !include.is_match(rel) || exclude.is_match(rel) {
            continue;
        }
        let Some(device_path) = device_path_of(rel) else {
            return Err(Error::InvalidPath {
                path: rel.to_string_lossy().into_owned(),
                reason: "file name is not valid UTF-8".into(),
            });
        };
        if ALWAYS_EXCLUDED.contains(&device_path.as_str()) {
            continue;
        }
        validate_device_path(&device_path)?;
        wanted.push((device_path, entry.into_path()));
    }
    wanted.sort_by(|a, b| manifest_path_cmp(&a.0, &b.0));
    let files = hash_all(&wanted)?;
    tracing::debug!(root = %root.display(), files = files.len(), "built manifest");
    Ok(Manifest {
        version: version.to_string(),
        files,
        sig: None,
    })
}

/// Hash the files of `wanted`, keeping its order; uses up to two threads.
fn hash_all(wanted: &[(String, PathBuf)]) -> Result<Vec<FileEntry>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_HASH_THREADS);
    if threads < 2 || wanted.len() < PARALLEL_MIN_FILES {
        let mut buf = vec![0u8; HASH_BUFFER];
        return wanted
            .iter()
            .map(|(path, abs)| hash_file(path, abs, &mut buf))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FileEntry>>>> =
        Mutex::new((0..wanted.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![0u8; HASH_BUFFER];
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some((path, abs)) = wanted.get(i) else {
                        break;
                    };
                    local.push((i, hash_file(path, abs, &mut buf)));
                }
                let mut slots = results.lock().unwrap_or_else(|p| p.into_inner());
                for (i, r) in local {
                    slots[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every file was hashed"))
        .collect()
}

fn hash_file(path: &str, abs: &Path, buf: &mut [u8]) -> Result<FileEntry> {
    let mut file = File::open(abs).map_err(|e| Error::io(abs, e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(abs, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileEntry {
        path: path.to_string(),
        size,
        sha256: hasher.finalize().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hmac_sha256, sha256};
    use proptest::prelude::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry::from_bytes(path, data)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn paths(m: &Manifest) -> Vec<&str> {
        m.files.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn sort_puts_dot_before_colon() {
        let m = Manifest::new(
            "1",
            vec![
                entry("a", b"1"),
                entry("a.py", b"2"),
                entry("a/b", b"3"),
                entry("B", b"4"),
            ],
        )
        .unwrap();
        // '.' (0x2e) < '/' (0x2f) < ':' (0x3a) < 'B' (0x42)
        assert_eq!(paths(&m), ["B", "a.py", "a/b", "a"]);
        assert_eq!(manifest_path_cmp("a.py", "a"), Ordering::Less);
        assert_eq!(manifest_path_cmp("a", "a"), Ordering::Equal);
        assert_eq!(manifest_path_cmp("a", "a0"), Ordering::Greater);
        assert_eq!(m.get("a").unwrap().size, 1);
        assert_eq!(m.get("a/b").unwrap().size, 1);
        assert!(m.get("c").is_none());
    }

    #[test]
    fn new_rejects_duplicates_and_bad_paths() {
        let err = Manifest::new("1", vec![entry("x", b""), entry("x", b"1")]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let err = Manifest::new("1", vec![entry("../x", b"")]).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }));
    }

    #[test]
    fn signing_payload_matches_hand_computed_value() {
        let m = Manifest::new("1.2.0", vec![entry("main.py", b"abc"), entry("a", b"")]).unwrap();
        let expected = "1.2.0\n\
            a:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
            main.py:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(String::from_utf8(m.signing_payload()).unwrap(), expected);
        // Files reordered by hand still give micro-ota's sorted payload.
        let mut shuffled = m.clone();
        shuffled.files.reverse();
        assert_eq!(shuffled.signing_payload(), m.signing_payload());
        // micro-ota: version + "\n" + "\n".join([]) for an empty release.
        let empty = Manifest::new("2", vec![]).unwrap();
        assert_eq!(empty.signing_payload(), b"2\n");
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::new("k3y");
        let mut m = Manifest::new("1.0.0", vec![entry("main.py", b"print(1)")]).unwrap();
        assert!(matches!(m.verify(&key), Err(Error::SignatureMismatch(_))));
        m.sign(&key);
        let sig = m.sig.clone().unwrap();
        assert_eq!(sig, hex::encode(hmac_sha256(b"k3y", &m.signing_payload())));
        assert_eq!(sig.len(), 64);
        m.verify(&key).unwrap();
        assert!(m.verify(&SigningKey::new("other")).is_err());

        let mut tampered = m.clone();
        tampered.files[0].sha256 = sha256(b"print(2)");
        assert!(matches!(
            tampered.verify(&key),
            Err(Error::SignatureMismatch(_))
        ));
        let mut tampered = m.clone();
        tampered.version = "1.0.1".into();
        assert!(tampered.verify(&key).is_err());
        let mut tampered = m.clone();
        tampered.sig = Some("zz".into());
        assert!(tampered.verify(&key).is_err());
        // Uppercase hex of the right tag is still the right tag.
        let mut upper = m.clone();
        upper.sig = Some(sig.to_uppercase());
        upper.verify(&key).unwrap();
    }

    #[test]
    fn json_round_trip_and_format() {
        let mut m = Manifest::new(
            "1.0.0",
            vec![entry("app/x \"q\".py", b"x"), entry("main.py", b"abc")],
        )
        .unwrap();
        let unsigned = m.to_json();
        assert!(unsigned.starts_with(
            "{\"version\":\"1.0.0\",\"files\":{\"app/x \\\"q\\\".py\":{\"size\":1,\"sha256\":\""
        ));
        assert!(!unsigned.contains("sig"));
        assert_eq!(Manifest::from_json(&unsigned).unwrap(), m);
        m.sign(&SigningKey::new("k"));
        let json = m.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["files"]["main.py"]["size"], 3);
        assert_eq!(
            v["files"]["main.py"]["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(v["sig"], m.sig.clone().unwrap());
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        // Python's json.dumps with spaces parses too.
        let spaced = r#"{"version": "1", "files": {"a": {"size": 0, "sha256": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "src": "a.mpy6"}}}"#;
        let parsed = Manifest::from_json(spaced).unwrap();
        assert_eq!(parsed.files[0], entry("a", b""));
    }

    #[test]
    fn from_json_rejects_bad_input() {
        let good_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let protocol = [
            "not json".to_string(),
            "[]".to_string(),
            r#"{"files": {}}"#.to_string(),
            r#"{"version": "1"}"#.to_string(),
            r#"{"version": "1", "files": {"a": {"sha256": "00"}}}"#.to_string(),
            format!(
                r#"{{"version": "1", "files": {{"a": {{"size": -1, "sha256": "{good_sha}"}}}}}}"#
            ),
            r#"{"version": "1", "files": {"a": {"size": 1, "sha256": "abc"}}}"#.to_string(),
            format!(
                r#"{{"version": "1", "files": {{"a": {{"size": 1, "sha256": "{}"}}}}}}"#,
                "g".repeat(64)
            ),
            format!(
                r#"{{"version": "1", "files": {{}}, "sig": "{}"}}"#,
                "0".repeat(63)
            ),
            r#"{"version": "1", "files": {}, "sig": 5}"#.to_string(),
        ];
        for json in &protocol {
            let err = Manifest::from_json(json).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{json}: {err:?}");
        }
        for path in ["../etc/passwd", "/abs", "a//b", "a\\b"] {
            let json = serde_json::json!({"version": "1", "files": {path: {"size": 0, "sha256": good_sha}}})
                .to_string();
            let err = Manifest::from_json(&json).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{path}: {err:?}");
        }
    }

    #[test]
    fn lines_round_trip_and_format() {
        let m = Manifest::new(
            "3",
            vec![entry("with space.txt", b"hi"), entry("a.py", b"abc")],
        )
        .unwrap();
        let lines = m.manifest_lines();
        let text = String::from_utf8(lines.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 a.py\n{} 2 with space.txt\n",
                hex::encode(sha256(b"hi"))
            )
        );
        assert_eq!(Manifest::parse_lines("3", &lines).unwrap(), m);
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(Manifest::parse_lines("3", crlf.as_bytes()).unwrap(), m);
        assert!(Manifest::parse_lines("3", b"").unwrap().files.is_empty());
    }

    #[test]
    fn parse_lines_rejects_bad_input() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for bad in [
            format!("{sha} 0\n"),
            format!("{sha} x a\n"),
            format!("{} 0 a\n", &sha[..62]),
            format!("{sha} 0 a\n{sha} 1 a\n"),
        ] {
            let err = Manifest::parse_lines("1", bad.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{bad}: {err:?}");
        }
        let err = Manifest::parse_lines("1", format!("{sha} 0 ../a\n").as_bytes()).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }));
        assert!(Manifest::parse_lines("1", b"\xff\n").is_err());
    }

    #[test]
    fn diff_classifies_files() {
        let old = Manifest::new(
            "1",
            vec![
                entry("same", b"s"),
                entry("edit", b"1"),
                entry("gone", b"g"),
            ],
        )
        .unwrap();
        let new = Manifest::new(
            "2",
            vec![
                entry("same", b"s"),
                entry("edit", b"22"),
                entry("new", b"n"),
            ],
        )
        .unwrap();
        let d = old.diff(&new);
        assert_eq!(d.added, vec![entry("new", b"n")]);
        assert_eq!(d.changed, vec![entry("edit", b"22")]);
        assert_eq!(d.removed, ["gone"]);
        assert_eq!(d.unchanged, ["same"]);
        assert!(!d.is_empty());
        assert_eq!(d.bytes_to_send(), 3);
        let send: Vec<&str> = d.to_send().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(send, ["edit", "new"]);
        assert!(new.diff(&new).is_empty());
        let back = new.diff(&old);
        assert_eq!(back.removed, ["new"]);
        assert_eq!(back.added, vec![entry("gone", b"g")]);
    }

    #[test]
    fn validate_device_path_rules() {
        for ok in [
            "a",
            "main.py",
            "app/x.py",
            "a/b/c/d.txt",
            "spaced name.py",
            "ünï.py",
            "..a",
            "a..",
            ".hidden",
            &"x".repeat(255),
        ] {
            validate_device_path(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "",
            "/",
            "/a",
            "a/",
            "a//b",
            ".",
            "..",
            "./a",
            "../a",
            "a/../b",
            "a/..",
            "a/./b",
            "a\\b",
            "..\\a",
            "a\0b",
            "a\nb",
            "a\r",
            "\tx",
            "a\u{7f}",
            &"x".repeat(256),
            "//a",
        ] {
            let err = validate_device_path(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}");
        }
    }

    #[test]
    fn build_applies_glob_semantics() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "main.py", b"main");
        write(root, "boot.py", b"boot");
        write(root, "app/__init__.py", b"");
        write(root, "app/deep/er/x.py", b"x");
        write(root, "app/.hidden.py", b"h");
        write(root, "app/.cache/y.py", b"y");
        write(root, "config/ota.json", b"{}");
        write(root, "config/.ota.secrets.json", b"{}");
        write(root, ".uota_cache.json", b"{}");
        write(root, ".git/HEAD", b"ref");
        write(root, "dist/out.bin", b"o");
        write(root, "release.zip", b"z");
        write(root, "lib/pkg.zip", b"z");
        write(root, "lib/mod.py", b"m");

        let fast = Manifest::build(
            root,
            &strings(&["app/**", "main.py", "config/**"]),
            &strings(&[".git/**", "*.zip", "dist/**"]),
            "1.0.0",
        )
        .unwrap();
        assert_eq!(fast.version, "1.0.0");
        assert_eq!(
            paths(&fast),
            [
                "app/__init__.py",
                "app/deep/er/x.py",
                "config/ota.json",
                "main.py"
            ]
        );
        assert_eq!(fast.get("main.py").unwrap(), &entry("main.py", b"main"));

        let full = Manifest::build(
            root,
            &strings(&["**"]),
            &strings(&[".git/**", "*.zip", "dist/**"]),
            "1.0.0",
        )
        .unwrap();
        // `*.zip` does not cross '/', so lib/pkg.zip stays, as with Python's glob.
        assert_eq!(
            paths(&full),
            [
                "app/__init__.py",
                "app/deep/er/x.py",
                "boot.py",
                "config/ota.json",
                "lib/mod.py",
                "lib/pkg.zip",
                "main.py"
            ]
        );

        // `*` alone matches top-level files only.
        let top = Manifest::build(root, &strings(&["*"]), &[], "1").unwrap();
        assert_eq!(paths(&top), ["boot.py", "main.py", "release.zip"]);
        // `./` prefixes are tolerated; `?` does not cross '/'.
        let q = Manifest::build(root, &strings(&["./lib/???.py", "app?x.py"]), &[], "1").unwrap();
        assert_eq!(paths(&q), ["lib/mod.py"]);
        // Nothing included: empty manifest.
        assert!(Manifest::build(root, &[], &[], "1")
            .unwrap()
            .files
            .is_empty());
        // Bad pattern: a clear error.
        let err = Manifest::build(root, &strings(&["a/[b"]), &[], "1").unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(ref m) if m.contains("a/[b")),
            "{err}"
        );
        // Missing root.
        let err = Manifest::build(&root.join("nope"), &strings(&["**"]), &[], "1").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn build_skips_symlinks_and_reports_non_utf8_names() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.txt", b"s");
        write(root, "real.py", b"r");
        std::os::unix::fs::symlink(outside.path(), root.join("linked_dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("link.txt"))
            .unwrap();
        let m = Manifest::build(root, &strings(&["**"]), &[], "1").unwrap();
        assert_eq!(paths(&m), ["real.py"]);

        let name = std::ffi::OsStr::from_bytes(b"bad\xffname.py");
        std::fs::write(root.join(name), b"x").unwrap();
        let err = Manifest::build(root, &strings(&["**"]), &[], "1").unwrap_err();
        assert!(
            matches!(err, Error::InvalidPath { ref reason, .. } if reason.contains("UTF-8")),
            "{err}"
        );
        // Not included: no error.
        Manifest::build(root, &strings(&["real.py"]), &[], "1").unwrap();
    }

    #[test]
    fn build_hashes_many_files_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut expected = Vec::new();
        for i in 0..300 {
            let rel = format!("d{}/f{i}.py", i % 7);
            let data = format!("file {i}").repeat(i % 50 + 1);
            write(root, &rel, data.as_bytes());
            expected.push(entry(&rel, data.as_bytes()));
        }
        // One file larger than the hash buffer.
        let big: Vec<u8> = (0..(HASH_BUFFER * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        write(root, "big.bin", &big);
        expected.push(entry("big.bin", &big));
        let built = Manifest::build(root, &strings(&["**"]), &[], "v").unwrap();
        assert_eq!(built, Manifest::new("v", expected).unwrap());
    }

    #[test]
    fn a_device_folder_inside_the_project_is_never_part_of_a_release() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "main.py", b"m");
        write(
            root,
            "lib/uota/server.py",
            b"the project's own runtime copy",
        );
        // A virtual device's root, and a copy of a board (compiled runtime).
        write(root, "vdev/main.py", b"m");
        write(root, "vdev/lib/uota/server.py", b"s");
        write(root, "backup/board/lib/uota/server.mpy", b"s");
        write(root, "backup/board/data/x.json", b"{}");
        write(root, "backup/notes.txt", b"n");
        let built = Manifest::build(root, &strings(&["**"]), &[], "v").unwrap();
        let paths: Vec<&str> = built.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["backup/notes.txt", "lib/uota/server.py", "main.py"]);
    }

    fn arb_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-zA-Z0-9_.:-]{1,8}", 1..4)
            .prop_map(|parts| parts.join("/"))
            .prop_filter("valid device path", |p| validate_device_path(p).is_ok())
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            "[0-9a-z.]{1,8}",
            prop::collection::btree_map(arb_path(), (any::<u64>(), any::<[u8; 32]>()), 0..12),
        )
            .prop_map(|(version, files)| {
                let files = files
                    .into_iter()
                    .map(|(path, (size, sha256))| FileEntry { path, size, sha256 })
                    .collect();
                Manifest::new(version, files).unwrap()
            })
    }

    proptest! {
        #[test]
        fn prop_sorted_by_path_colon(m in arb_manifest()) {
            for w in m.files.windows(2) {
                let a = format!("{}:", w[0].path);
                let b = format!("{}:", w[1].path);
                prop_assert!(a.as_bytes() < b.as_bytes());
            }
        }

        #[test]
        fn prop_json_and_lines_round_trip(mut m in arb_manifest(), key in "[ -~]{0,16}") {
            prop_assert_eq!(&Manifest::parse_lines(&m.version, &m.manifest_lines()).unwrap(), &m);
            m.sign(&SigningKey::new(key.clone()));
            let back = Manifest::from_json(&m.to_json()).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert!(back.verify(&SigningKey::new(key)).is_ok());
        }

        #[test]
        fn prop_payload_is_micro_ota_format(m in arb_manifest()) {
            let mut items: Vec<String> =
                m.files.iter().map(|e| format!("{}:{}", e.path, e.sha256_hex())).collect();
            items.sort();
            let expected = format!("{}\n{}", m.version, items.join("\n"));
            prop_assert_eq!(m.signing_payload(), expected.into_bytes());
        }

        #[test]
        fn prop_diff_partitions(a in arb_manifest(), b in arb_manifest()) {
            let d = a.diff(&b);
            prop_assert_eq!(d.added.len() + d.changed.len() + d.unchanged.len(), b.files.len());
            prop_assert_eq!(d.removed.len() + d.changed.len() + d.unchanged.len(), a.files.len());
            prop_assert!(a.diff(&a).is_empty());
        }

        #[test]
        fn prop_traversal_always_rejected(prefix in "[a-z]{0,5}", suffix in "[a-z]{0,5}", dots in prop::sample::select(vec!["..", "."])) {
            let mut parts: Vec<&str> = Vec::new();
            if !prefix.is_empty() { parts.push(&prefix); }
            parts.push(dots);
            if !suffix.is_empty() { parts.push(&suffix); }
            let path = parts.join("/");
            prop_assert!(validate_device_path(&path).is_err());
            let absolute = format!("/{path}");
            prop_assert!(validate_device_path(&absolute).is_err());
            let backslashed = path.replace('/', "\\");
            prop_assert!(validate_device_path(&backslashed).is_err());
        }
    }
}
