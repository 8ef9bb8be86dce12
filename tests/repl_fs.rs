//! The device filesystem over the REPL (`uota::repl::fs`), board info and
//! bootstrap, against serial virtual devices: the real MicroPython unix port
//! on a pseudo-terminal, opened by path like a board's serial port.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use uota::manifest::FileSource;
use uota::repl::fs::{DeflateMode, EntryKind, FsOptions, ReplFs, TreeFile};
use uota::repl::{Repl, ReplMode};
use uota::sim::{SerialSimOptions, VirtualSerialDevice};
use uota::transport::pty::PtyTransport;
use uota::{Error, ErrorKind};

/// A serial virtual device in a temp folder, and a REPL on its port.
struct Bench {
    dev: VirtualSerialDevice,
    repl: Repl<PtyTransport>,
    root: PathBuf,
    tmp: tempfile::TempDir,
}

async fn bench(tweak: impl FnOnce(&mut SerialSimOptions)) -> Bench {
    let tmp = tempfile::Builder::new()
        .prefix("uota-replfs-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("device");
    std::fs::create_dir_all(&root).unwrap();
    let mut opts = SerialSimOptions::folder(&root);
    opts.trace = Some(tmp.path().join("trace.log"));
    tweak(&mut opts);
    let dev = VirtualSerialDevice::start(opts)
        .await
        .expect("device starts");
    let repl = Repl::new(PtyTransport::open(dev.path()).expect("open the port"));
    Bench {
        dev,
        repl,
        root,
        tmp,
    }
}

/// The end of a relay trace, for failure messages.
fn tail(trace: &Path) -> String {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    if let Some(keep) = std::env::var_os("UOTA_TEST_KEEP_TRACE") {
        let _ = std::fs::write(keep, &text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Bench {
    fn trace_file(&self) -> PathBuf {
        self.tmp.path().join("trace.log")
    }

    /// Files under the device root that a put left behind.
    fn tmp_files(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".uota-tmp"))
            .map(|e| e.path().to_path_buf())
            .collect()
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// Python-looking text that compresses like source code.
fn python_source(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words = [
        "def", "self", "return", "value", "import", "for", "in", "range", "if", "else", "None",
        "print", "data", "result", "len", "buf", "config", "await", "async", "True",
    ];
    let mut out = String::new();
    while out.len() < len {
        let indent = rng.gen_range(0..3) * 4;
        out.push_str(&" ".repeat(indent));
        for _ in 0..rng.gen_range(2..9) {
            out.push_str(words[rng.gen_range(0..words.len())]);
            out.push(' ');
        }
        out.push_str(&format!("# {}\n", rng.gen_range(0..1000)));
    }
    out.truncate(len);
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_value_round_trips_raw_and_compressed() {
    let mut b = bench(|_| {}).await;
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
    for mode in [DeflateMode::Auto, DeflateMode::Off] {
        let opts = FsOptions {
            deflate: mode,
            ..FsOptions::default()
        };
        let t = b.trace_file();
        let mut fs = ReplFs::open(&mut b.repl, opts).await.unwrap();
        assert!(fs.info().deflate, "the unix port has deflate");
        let name = format!("/all-{mode:?}.bin");
        fs.put(&name, &data)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
        assert_eq!(
            fs.get(&name)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t))),
            data
        );
        fs.close().await.unwrap();
        let name = name.trim_start_matches('/');
        assert_eq!(std::fs::read(b.root.join(name)).unwrap(), data);
    }
    // Compressible bytes are sent compressed unless compression is off.
    let src = python_source(50_000, 1);
    let mut sent = Vec::new();
    for mode in [DeflateMode::Auto, DeflateMode::Off] {
        let opts = FsOptions {
            deflate: mode,
            ..FsOptions::default()
        };
        let mut fs = ReplFs::open(&mut b.repl, opts).await.unwrap();
        let before = fs.bytes_sent();
        fs.put("/src.py", &src).await.unwrap();
        sent.push(fs.bytes_sent() - before);
        assert_eq!(fs.get("/src.py").await.unwrap(), src);
        fs.close().await.unwrap();
    }
    assert!(sent[0] * 2 < sent[1], "deflate on/off sent {sent:?}");
    assert!(sent[1] >= src.len() as u64);
    assert!(b.tmp_files().is_empty());
    // The REPL is usable again.
    assert_eq!(b.repl.mode(), ReplMode::Raw);
    assert_eq!(b.repl.eval("6 * 7").await.unwrap(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_bigger_than_the_heap_stream_through_a_fixed_amount_of_ram() {
    // A 64 KB heap cannot hold any of these files: RAM use must not depend
    // on the file size.
    let mut b = bench(|o| o.heap_size = Some("64k".into())).await;
    let t = b.trace_file();
    let random = random_bytes(300 * 1024, 7);
    let source = python_source(300 * 1024, 8);
    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    let heap = fs.free("/").await.unwrap();
    assert!(heap.mem_free + heap.mem_alloc <= 64 * 1024, "{heap:?}");
    assert!(fs.info().wbits.is_some(), "{:?}", fs.info());
    let before = fs.bytes_sent();
    fs.put("/random.bin", &random)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    let raw_sent = fs.bytes_sent() - before;
    fs.put("/source.py", &source)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    let source_sent = fs.bytes_sent() - raw_sent - before;
    assert!(
        raw_sent >= random.len() as u64,
        "random bytes do not shrink"
    );
    assert!(
        source_sent * 2 < source.len() as u64,
        "source is sent compressed: {source_sent}"
    );
    assert_eq!(fs.get("/random.bin").await.unwrap(), random);
    assert_eq!(fs.get("/source.py").await.unwrap(), source);
    let after = fs.free("/").await.unwrap();
    assert!(after.mem_free > 8 * 1024, "{after:?}");
    fs.close().await.unwrap();
    assert_eq!(std::fs::read(b.root.join("random.bin")).unwrap(), random);
    assert_eq!(std::fs::read(b.root.join("source.py")).unwrap(), source);
    assert_eq!(b.dev.boots(), 1, "no MemoryError crash: {}", tail(&t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_tree_copies_a_nested_tree_and_skips_what_is_unchanged() {
    let mut b = bench(|_| {}).await;
    let t = b.trace_file();
    let local = b.tmp.path().join("project");
    let files = [
        ("main.py", python_source(3000, 1)),
        ("app/__init__.py", Vec::new()),
        ("app/core.py", python_source(20_000, 2)),
        ("app/sub/deep/x.bin", random_bytes(5000, 3)),
        ("lib/util.py", python_source(700, 4)),
        ("lib/all bytes.bin", (0..=255u8).collect()),
    ];
    for (rel, data) in &files {
        let path = local.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    std::fs::create_dir_all(local.join("data/empty")).unwrap();

    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let report = fs
        .put_tree(&local, "/", &mut |p| seen.push(p.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert_eq!(report.files_sent, files.len(), "{report:?}");
    assert_eq!(report.files_skipped, 0);
    assert!(report.files_compressed >= 2, "{report:?}");
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(report.bytes, total);
    assert_eq!(seen.len(), files.len());
    let last = seen.last().unwrap();
    assert_eq!((last.files_done, last.bytes_done), (files.len(), total));
    for (rel, data) in &files {
        assert_eq!(&std::fs::read(b.root.join(rel)).unwrap(), data, "{rel}");
    }
    assert!(b.root.join("data/empty").is_dir());

    // Again: nothing changed, nothing is sent.
    let report = fs.put_tree(&local, "/", &mut |_| {}).await.unwrap();
    assert_eq!(report.files_sent, 0, "{report:?}");
    assert_eq!(report.files_skipped, files.len());

    // One file changed: only it is sent. Into another folder, all are.
    std::fs::write(local.join("app/core.py"), b"changed = True\n").unwrap();
    let report = fs.put_tree(&local, "/", &mut |_| {}).await.unwrap();
    assert_eq!(
        (report.files_sent, report.files_skipped),
        (1, files.len() - 1)
    );
    assert_eq!(
        std::fs::read(b.root.join("app/core.py")).unwrap(),
        b"changed = True\n"
    );
    let report = fs.put_tree(&local, "/copy/of", &mut |_| {}).await.unwrap();
    assert_eq!(report.files_sent, files.len());
    assert_eq!(
        std::fs::read(b.root.join("copy/of/lib/all bytes.bin")).unwrap(),
        (0..=255u8).collect::<Vec<_>>()
    );

    // put_files: bytes from memory, folders made for them.
    let report = fs
        .put_files(
            &["/made/for/me".to_string()],
            &[TreeFile {
                path: "gen/x/y.txt".into(),
                data: FileSource::Bytes(b"generated".to_vec()),
            }],
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.files_sent, 1);
    fs.close().await.unwrap();
    assert_eq!(
        std::fs::read(b.root.join("gen/x/y.txt")).unwrap(),
        b"generated"
    );
    assert!(b.root.join("made/for/me").is_dir());
    assert!(b.tmp_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_stat_mkdir_rm_and_free() {
    let mut b = bench(|_| {}).await;
    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap();
    fs.mkdir("/a/b/c").await.unwrap();
    fs.mkdir("a/b").await.unwrap(); // exists: fine
    let st = fs.stat("/a/b").await.unwrap();
    assert_eq!(st.kind, EntryKind::Dir);
    fs.put("/a/b/c/f.txt", b"12345").await.unwrap();
    fs.put("/a/top.txt", b"x").await.unwrap();
    let st = fs.stat("/a/b/c/f.txt").await.unwrap();
    assert_eq!((st.kind, st.size), (EntryKind::File, 5));
    let names: Vec<(String, EntryKind, u64)> = fs
        .ls("/a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind, e.size))
        .collect();
    assert_eq!(
        names,
        vec![
            ("b".to_string(), EntryKind::Dir, 0),
            ("top.txt".to_string(), EntryKind::File, 1)
        ]
    );
    let root: Vec<String> = fs
        .ls("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(root, vec!["a"]);

    // Errors are typed, and the session goes on after them.
    let err = fs.stat("/nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::Device { code, .. } if code == "not_found"),
        "{err:?}"
    );
    assert!(!fs.exists("/nope").await.unwrap());
    assert!(fs.exists("/a/top.txt").await.unwrap());
    let err = fs.get("/missing.txt").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Device, "{err:?}");
    let err = fs.put("/no/such/folder/f.txt", b"x").await.unwrap_err();
    assert!(
        matches!(&err, Error::Device { code, .. } if code == "not_found"),
        "{err:?}"
    );
    let err = fs.mkdir("/a/top.txt/sub").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Device, "{err:?}");
    let err = fs.rm("/a", false).await.unwrap_err();
    assert!(
        matches!(&err, Error::Device { code, .. } if code == "not_empty"),
        "{err:?}"
    );
    let err = fs.ls("/a/top.txt").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Device, "{err:?}");
    assert!(matches!(
        fs.get("../etc/passwd").await.unwrap_err(),
        Error::InvalidPath { .. }
    ));

    fs.rm("/a/top.txt", false).await.unwrap();
    fs.rm("/a", true).await.unwrap();
    assert!(!fs.exists("/a").await.unwrap());
    assert!(fs.ls("/").await.unwrap().is_empty());
    let free = fs.free("/").await.unwrap();
    assert!(
        free.fs_total > 0 && free.fs_free <= free.fs_total,
        "{free:?}"
    );
    assert!(free.mem_free > 0);
    let hash = fs.sha256("/nothing").await.unwrap();
    assert!(hash.is_none());
    fs.put("/h", b"abc").await.unwrap();
    let (digest, size) = fs.sha256("/h").await.unwrap().unwrap();
    assert_eq!(size, 3);
    assert_eq!(hex::encode(digest), common::sha256_hex(b"abc"));
    fs.close().await.unwrap();
    assert!(!b.root.join("a").exists());
}

/// Start the agent by hand and read its hello, to speak the protocol raw.
async fn raw_agent(repl: &mut Repl<PtyTransport>, opts: &FsOptions) {
    repl.start(uota::repl::fs::agent_code(opts)).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.ends_with(b"\n") {
        assert!(Instant::now() < deadline, "no hello: {seen:?}");
        let n = tokio::time::timeout(Duration::from_secs(10), repl.read_raw(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("uota-fs:1 "),
        "{seen:?}"
    );
}

/// Read until `want` shows up (grant bytes and all), returning what came.
async fn read_until(repl: &mut Repl<PtyTransport>, want: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout(Duration::from_secs(10), repl.read_raw(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("waiting for {want:?}, got {seen:?}"))
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

fn put_frame(path: &str, flags: u8, body: &[u8], digest: &[u8], size: u32) -> Vec<u8> {
    let mut out = vec![b'P'];
    out.extend_from_slice(&((path.len() + 2) as u16).to_le_bytes());
    out.extend_from_slice(&[flags, if flags & 1 == 1 { 10 } else { 0 }]);
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(digest);
    out.extend_from_slice(&size.to_le_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_fails_verification_leaves_the_old_one_intact() {
    let mut b = bench(|_| {}).await;
    std::fs::write(b.root.join("keep.txt"), b"old contents").unwrap();
    // Generous credit so that the hand-made frames need no grants.
    let opts = FsOptions {
        credit: 1024,
        window: 8192,
        idle_timeout: Duration::from_secs(2),
        ..FsOptions::default()
    };
    let t = b.trace_file();
    raw_agent(&mut b.repl, &opts).await;

    // 1. The host lies about the digest.
    let body = b"new contents";
    let frame = put_frame("/keep.txt", 0, body, &[0u8; 32], body.len() as u32);
    b.repl.write_raw(&frame).await.unwrap();
    let got = read_until(&mut b.repl, b"/keep.txt").await;
    assert!(
        got.windows(5).any(|w| w == b"X\x0d\x00sh"),
        "an error reply with code sha: {got:?}"
    );
    assert_eq!(
        std::fs::read(b.root.join("keep.txt")).unwrap(),
        b"old contents"
    );
    assert!(b.tmp_files().is_empty());

    // 2. The compressed stream is corrupt (the right digest of what was meant).
    let digest = sha2_digest(body);
    let frame = put_frame(
        "/keep.txt",
        1,
        b"\xff\xfe\xfd garbage",
        &digest,
        body.len() as u32,
    );
    b.repl.write_raw(&frame).await.unwrap();
    let got = read_until(&mut b.repl, b"/keep.txt").await;
    assert!(got.starts_with(b"X") || got.contains(&b'X'), "{got:?}");
    assert_eq!(
        std::fs::read(b.root.join("keep.txt")).unwrap(),
        b"old contents"
    );
    assert!(b.tmp_files().is_empty());

    // 3. The host goes away half-way through a file: the agent waits for
    // the rest. `recover` gets it out (the temporary file is removed, the old
    // file kept) and the console back to the REPL.
    let mut half = vec![b'P'];
    half.extend_from_slice(&11u16.to_le_bytes());
    half.extend_from_slice(b"\x00\x00/keep.txt");
    half.extend_from_slice(&1000u16.to_le_bytes());
    half.extend_from_slice(&[b'z'; 40]);
    b.repl.write_raw(&half).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.tmp_files().len(), 1, "being written");
    uota::repl::fs::recover(&mut b.repl)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert_eq!(
        std::fs::read(b.root.join("keep.txt")).unwrap(),
        b"old contents"
    );
    assert!(b.tmp_files().is_empty(), "{:?}", b.tmp_files());
    assert_eq!(
        b.repl.eval("'console back'").await.unwrap(),
        "'console back'"
    );
    assert_eq!(b.dev.boots(), 1);

    // 4. Also when it stopped inside a compressed file, and with the REPL
    // of a new connection.
    let mut fs = ReplFs::open(&mut b.repl, opts.clone()).await.unwrap();
    fs.put("/keep.txt", b"newer contents").await.unwrap();
    drop(fs);
    let mut half = vec![b'P'];
    half.extend_from_slice(&11u16.to_le_bytes());
    half.extend_from_slice(b"\x01\x0a/keep.txt");
    half.extend_from_slice(&60_000u16.to_le_bytes());
    half.extend_from_slice(&[0x4b; 100]);
    b.repl.write_raw(&half).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.repl = Repl::new(PtyTransport::open(b.dev.path()).unwrap());
    uota::repl::fs::recover(&mut b.repl)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert_eq!(b.repl.eval("'back again'").await.unwrap(), "'back again'");
    assert_eq!(
        std::fs::read(b.root.join("keep.txt")).unwrap(),
        b"newer contents"
    );
    assert!(b.tmp_files().is_empty(), "{:?}", b.tmp_files());
}

/// A source that fails after `ok` bytes.
struct Failing {
    ok: usize,
}

impl std::io::Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ok == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok);
        buf[..n].fill(b'q');
        self.ok -= n;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fails_half_way_leaves_the_old_file_and_the_session() {
    let mut b = bench(|_| {}).await;
    std::fs::write(b.root.join("f.bin"), b"old").unwrap();
    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap();
    let err = fs
        .put_reader("/f.bin", &mut Failing { ok: 150_000 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(fs.get("/f.bin").await.unwrap(), b"old");
    // In a tree: the other files go in, the first error is reported.
    let local = b.tmp.path().join("tree");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("good.txt"), b"good").unwrap();
    let files = vec![
        TreeFile {
            path: "/good.txt".into(),
            data: FileSource::Disk(local.join("good.txt")),
        },
        TreeFile {
            path: "/missing.txt".into(),
            data: FileSource::Disk(local.join("missing.txt")),
        },
    ];
    let err = fs.put_files(&[], &files, &mut |_| {}).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    fs.close().await.unwrap();
    assert_eq!(std::fs::read(b.root.join("good.txt")).unwrap(), b"good");
    assert_eq!(std::fs::read(b.root.join("f.bin")).unwrap(), b"old");
    assert!(b.tmp_files().is_empty());
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    hex::decode(common::sha256_hex(data)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_restarts_its_agent() {
    let mut b = bench(|_| {}).await;
    let opts = FsOptions {
        idle_timeout: Duration::from_secs(2),
        ..FsOptions::default()
    };
    let mut fs = ReplFs::open(&mut b.repl, opts).await.unwrap();
    fs.put("/one", b"1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fs.put("/two", b"2").await.unwrap();
    assert_eq!(fs.get("/one").await.unwrap(), b"1");
    fs.close().await.unwrap();
    assert_eq!(b.repl.eval("1 + 1").await.unwrap(), "2");
    assert_eq!(std::fs::read(b.root.join("two")).unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_over_a_115200_baud_line() {
    let mut b = bench(|o| o.baud = Some(115_200)).await;
    let t = b.trace_file();
    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let src = python_source(4000, 9);
    fs.mkdir("/lib").await.unwrap();
    fs.put("/lib/bin.dat", &data)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    fs.put("/lib/src.py", &src).await.unwrap();
    assert_eq!(fs.get("/lib/bin.dat").await.unwrap(), data);
    let names: Vec<String> = fs
        .ls("/lib")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["bin.dat", "src.py"]);
    fs.close().await.unwrap();
    assert_eq!(std::fs::read(b.root.join("lib/src.py")).unwrap(), src);
    assert_eq!(b.repl.eval("'ok'").await.unwrap(), "'ok'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_info_is_sane_and_cached() {
    use uota::repl::info::{BoardInfo, InfoCache, CACHE_FILE};
    let mut b = bench(|_| {}).await;
    let info = BoardInfo::read(&mut b.repl).await.unwrap();
    assert!(info.micropython.starts_with("1."), "{info:?}");
    assert_eq!(info.platform, "linux");
    assert_eq!(info.mpy_version(), Some(6), "{info:?}");
    assert_eq!(info.mpy_arch(), Some("x64"));
    assert!(info.has_deflate);
    assert!(info.mem_free > 100_000, "{info:?}");
    assert!(
        info.fs_total > 0 && info.fs_free <= info.fs_total,
        "{info:?}"
    );
    // Nothing is left behind in the REPL's namespace.
    assert_eq!(
        b.repl.eval("'_uota_info' in globals()").await.unwrap(),
        "False"
    );

    let project = b.tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut cache = InfoCache::load(&project).unwrap();
    let key = info.cache_key(&b.dev.path().display().to_string());
    cache.insert(&key, &info);
    cache.save().unwrap();
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join(CACHE_FILE)).unwrap()).unwrap();
    assert_eq!(raw["mpy_version"], 6, "micro-ota's key: {raw}");
    assert_eq!(raw["devices"][&key]["platform"], "linux");
    assert_eq!(InfoCache::load(&project).unwrap().get(&key), Some(info));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpy_cross_output_runs_on_the_board() {
    use uota::repl::info::{BoardInfo, MpyCross};
    let Some(mpy_cross) = MpyCross::find().unwrap() else {
        eprintln!("mpy-cross not installed; skipping");
        return;
    };
    let mut b = bench(|_| {}).await;
    let info = BoardInfo::read(&mut b.repl).await.unwrap();
    mpy_cross.check_board(&info).unwrap();
    let mpy = mpy_cross
        .compile(
            b"def answer():\n    return 6 * 7\n",
            "lib/answer.py",
            Some(&info),
        )
        .unwrap();
    assert_eq!(&mpy[..2], b"M\x06");
    let mut fs = ReplFs::open(&mut b.repl, FsOptions::default())
        .await
        .unwrap();
    fs.mkdir("/lib").await.unwrap();
    fs.put("/lib/answer.mpy", &mpy).await.unwrap();
    fs.close().await.unwrap();
    let out = b
        .repl
        .exec("import sys\nsys.path.append('/lib')\nimport answer\nprint(answer.answer(), answer.__file__)")
        .await
        .unwrap();
    assert_eq!(out.stdout_text().trim(), "42 /lib/answer.mpy");

    // Another bytecode version is refused with a clear message.
    let mut old = info.clone();
    old.mpy = Some(5);
    let err = mpy_cross.check_board(&old).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("v5"), "{err}");
    let err = mpy_cross
        .compile(b"def broken(:\n", "x.py", None)
        .unwrap_err();
    assert!(err.to_string().contains("x.py"), "{err}");
}

/// Files under a device root, relative, `/`-separated, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    out.sort();
    out
}

/// A bare serial device that boots like a board, with its WiFi server on a
/// loopback address of its own.
async fn board_bench() -> Bench {
    let (host, port) = common::unique_addr();
    bench(move |o| {
        o.run_boot = true;
        o.env.push(("UOTA_SIM_HOST".into(), host));
        o.env.push(("UOTA_SIM_PORT".into(), port.to_string()));
    })
    .await
}

/// Wait until the relay trace shows `what`.
async fn wait_for_trace(trace: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(trace)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(Instant::now() < deadline, "no {what:?}:\n{}", tail(trace));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_installs_the_runtime_and_the_board_boots_into_uota() {
    use uota::config::Project;
    use uota::device::ConnectOptions;
    use uota::repl::bootstrap::{bootstrap, bootstrap_files, BootstrapOptions};
    use uota::Device;

    let mut b = board_bench().await;
    let t = b.trace_file();
    // What an earlier install left: OTA state, an old runtime module, the app.
    for (rel, text) in [
        ("ota_manifest.txt", "deadbeef 1 app/old.py\n"),
        ("ota_boot_state.json", r#"{"state": "pending"}"#),
        ("ota_prev/main.py", "old"),
        ("lib/uota/obsolete.py", "gone = True\n"),
        ("app/keep.py", "kept = True\n"),
        ("data/log.txt", "kept too\n"),
    ] {
        let path = b.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let project_dir = b.tmp.path().join("project");
    common::copy_tree(&common::repo().join("examples/starter"), &project_dir);
    let project = Project::load(&project_dir).unwrap();
    let opts = BootstrapOptions {
        password: Some("hunter2".into()),
        ..BootstrapOptions::default()
    };
    let report = bootstrap(&mut b.repl, Some(&project), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert!(report.reset);
    assert_eq!(report.compiled, 0);
    assert_eq!(report.board.platform, "linux");

    // The tree: what bootstrap_files renders, plus what was kept.
    let expected = bootstrap_files(Some(&project), &opts, None).unwrap();
    let mut want: Vec<String> = expected.iter().map(|f| f.path.clone()).collect();
    want.extend(["app/keep.py".to_string(), "data/log.txt".to_string()]);
    want.sort();
    let got: Vec<String> = tree(&b.root)
        .into_iter()
        .filter(|p| !p.starts_with("ota_")) // written by the runtime's first boot
        .collect();
    assert_eq!(got, want);
    for f in &expected {
        if f.path == "config/.ota.secrets.json" {
            continue; // salted anew on every render: checked below
        }
        assert_eq!(
            std::fs::read(b.root.join(&f.path)).unwrap(),
            f.contents,
            "{}",
            f.path
        );
    }
    assert_eq!(
        std::fs::read(b.root.join("config/ota.json")).unwrap(),
        project.device_config_json()
    );
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.root.join("config/.ota.secrets.json")).unwrap())
            .unwrap();
    // A salted verifier of the password: recomputed with its own salt, it matches.
    let stored = secrets["otaPassword"].as_str().unwrap();
    let parts: Vec<&str> = stored.split('$').collect();
    assert_eq!(parts.len(), 4, "{stored}");
    let salt = (0..parts[2].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&parts[2][i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    assert_eq!(
        stored,
        uota::auth::Password::new("hunter2").verifier_with(parts[1].parse().unwrap(), &salt)
    );
    assert!(!String::from_utf8_lossy(
        &std::fs::read(b.root.join("config/.ota.secrets.json")).unwrap()
    )
    .contains("hunter2"));
    for stale in ["ota_manifest.txt", "ota_prev", "lib/uota/obsolete.py"] {
        assert!(
            report.removed.contains(&format!("/{stale}")),
            "{:?}",
            report.removed
        );
    }
    assert!(!b.root.join("ota_manifest.txt").exists());
    assert!(b.root.join("data").is_dir());

    // The board rebooted into the runtime.
    wait_for_trace(&t, "listening on").await;
    assert_eq!(b.dev.boots(), 2, "{}", tail(&t));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.root.join("ota_boot_state.json")).unwrap())
            .unwrap();
    assert_ne!(state["state"], "pending", "{state}");

    // And it serves OTA over its console.
    let port = PtyTransport::open(b.dev.path()).unwrap();
    let mut dev = Device::connect_repl(
        Repl::new(port),
        ConnectOptions {
            password: Some("hunter2".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    dev.ping().await.unwrap();
    let listing: Vec<String> = dev
        .ls("lib/uota")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(listing.contains(&"hal.py".to_string()), "{listing:?}");
    dev.bye().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_with_mpy_then_again_with_py() {
    use uota::device::ConnectOptions;
    use uota::repl::bootstrap::{bootstrap, BootstrapOptions};
    use uota::repl::info::MpyCross;
    use uota::Device;

    if MpyCross::find().unwrap().is_none() {
        eprintln!("mpy-cross not installed; skipping");
        return;
    }
    let mut b = board_bench().await;
    let t = b.trace_file();
    let opts = BootstrapOptions {
        mpy: true,
        ..BootstrapOptions::default()
    };
    let report = bootstrap(&mut b.repl, None, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert!(report.compiled > 10, "{report:?}");
    let files = tree(&b.root);
    assert!(files.contains(&"lib/uota/hal.mpy".to_string()), "{files:?}");
    assert!(
        files.contains(&"lib/uota/transports/serial_stdio.mpy".to_string()),
        "{files:?}"
    );
    assert!(files.contains(&"boot.py".to_string()) && files.contains(&"main.py".to_string()));
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("lib/") && f.ends_with(".py")),
        "{files:?}"
    );
    wait_for_trace(&t, "listening on").await;

    // The .mpy runtime serves too.
    let port = PtyTransport::open(b.dev.path()).unwrap();
    let mut dev = Device::connect_repl(Repl::new(port), ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    dev.ping().await.unwrap();
    let io = dev.bye().await.unwrap();

    // Back to .py: the .mpy twins go, nothing else is resent needlessly.
    // (The board may restart after `bye`: wait until its REPL answers.)
    let mut repl = Repl::new(io);
    repl.timeouts_mut().enter_raw = Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = repl.eval("1").await {
        assert!(Instant::now() < deadline, "{e}\n{}", tail(&t));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runtime_boots = std::fs::read_to_string(&t)
        .unwrap()
        .matches("uota runtime")
        .count();
    let report = bootstrap(&mut repl, None, &BootstrapOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&t)));
    assert_eq!(report.compiled, 0);
    assert!(
        report.removed.contains(&"/lib/uota/hal.mpy".to_string()),
        "{:?}",
        report.removed
    );
    assert_eq!(
        report.put.files_skipped, 4,
        "boot.py, main.py, the config and secrets: {:?}",
        report.put
    );
    let files = tree(&b.root);
    assert!(!files.iter().any(|f| f.ends_with(".mpy")), "{files:?}");
    assert!(files.contains(&"lib/uota/hal.py".to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&t)
        .unwrap()
        .matches("uota runtime")
        .count()
        <= runtime_boots
    {
        assert!(Instant::now() < deadline, "not booted again: {}", tail(&t));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
