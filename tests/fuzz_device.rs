//! Protocol fuzzing against a real virtual device (the MicroPython unix port
//! running the uota runtime).
//!
//! A known release is pushed first, so the device has a last good state,
//! and a snapshot of it is taken. Then a bounded number of sessions, each on
//! a fresh connection and generated from a deterministic seed, throw
//! malformed input at the device: random bytes in line mode, random frames,
//! mutated requests, mutated manifest streams after a valid `begin`, file
//! streams with wrong sizes, truncated, extra or oversized DATA, bad deflate,
//! and abrupt closes (FIN or RST) at random points. After every session the
//! device must still answer `ping` and `version`, must not have rebooted,
//! and every file on its filesystem outside the staging area must be
//! byte-identical to the snapshot; no reply may carry the signing key. At
//! the end the app files are compared over the wire too.
//!
//! The device has a signing key, and a release signature binds the nonce of
//! the hello on its connection, so the scripts hold their signed `begin`s as
//! `Step::SignedBegin`: what to sign and how to break it, decided by the
//! generator; the runner builds and signs the request from the hello it
//! received (see "Signed begins" below). The output counts the signed begins
//! by what they were meant to be and how the device answered; a full run
//! fails when fewer than 5 were accepted (the fuzzer would no longer reach
//! files, `staged`, `commit` and `abort`) and when one the device had to
//! refuse (stale nonce, another device, a release below the floor, …) was
//! accepted.
//!
//! A finding is printed with its case number, the bytes sent and the begins
//! as built; replay one case with `UOTA_FUZZ_CASE=<n>` (and the same
//! `UOTA_FUZZ_SEED`). `UOTA_FUZZ_CASES` overrides the number of cases;
//! `UOTA_FUZZ_RAISE_FLOOR=0` makes valid begins claim the device's floor
//! instead of numbers above it (the cases stay the same otherwise).
//! `docs/fuzzing.md` has the details.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{sha256_hex, start, Setup, TestDevice};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uota::auth::{challenge_response, session_key, AuthMethod, SigningKey};
use uota::bundle::Bundle;
use uota::compat::Compat;
use uota::config::Project;
use uota::device::PushOptions;
use uota::manifest::{FileEntry, Manifest};
use uota::protocol::frame::{encode_to_vec, FrameDecoder, FrameType, HEADER_LEN};
use uota::protocol::message::STATE_OPS;
use uota::protocol::session::{seal_body, MAC_TAIL_LEN};
use uota::protocol::Hello;
use uota::release::ReleaseClaims;
use uota::PushMode;

/// Cases of the default run (about 30 s in a debug build on 2 cores).
const CASES: usize = 300;
/// Cases of the default run against a device with micro-ota's legacy
/// sessions enabled (run beside the other one).
const LEGACY_CASES: usize = 200;
/// The default seed; any u64 works (`UOTA_FUZZ_SEED`).
const SEED: u64 = 0x0075_07a5_eed5_2018;
/// The device's signing key: every valid `begin` here is signed with it, and
/// no reply may ever contain it.
const KEY: &str = "fuzz-signing-key-7f3a9c";
/// The release pushed before fuzzing, which must survive it.
const VERSION: &str = "1.0.0";
/// A manifest entry of every valid `begin` whose bytes are never sent, so
/// that no fuzzed push can ever be committed (commit answers `incomplete`).
const SENTINEL: &str = "app/zz_fuzz_sentinel.py";

// ---------------------------------------------------------------------------
// Deterministic randomness (xorshift64*), no dependencies.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Between lo and hi random bytes.
    fn some_bytes(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        self.bytes(n)
    }

    fn hex(&mut self, n: usize) -> String {
        hex::encode(self.bytes(n.div_ceil(2)))[..n].to_string()
    }
}

// ---------------------------------------------------------------------------
// Material the generators draw from.

/// Paths: valid ones, traversal, absolute, protected (in several cases),
/// reserved, control characters, overlong, odd Unicode.
fn path_corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "main.py",
        "app/counter.py",
        "app/__init__.py",
        "config/ota.json",
        "app/new_file.py",
        "../evil.py",
        "app/../../evil.py",
        "app/../main.py",
        "/boot.py",
        "/main.py",
        "boot.py",
        "BOOT.PY",
        "Boot.py",
        "lib/uota/hal.py",
        "Lib/Uota/server.py",
        "LIB/UOTA/__init__.py",
        "lib/uota",
        "lib",
        "config",
        "config/.ota.secrets.json",
        "CONFIG/.OTA.SECRETS.JSON",
        "/config/.ota.secrets.json",
        "ota_stage/.uota_config/../.ota.secrets.json",
        "data/x.py",
        "DATA/x.py",
        "data",
        "ota_stage/x.py",
        "ota_stage",
        "OTA_STAGE/.ready",
        "ota_prev/main.py",
        "ota_prev.main.py",
        "ota_prev_manifest",
        "ota_version.json",
        "ota_manifest.txt",
        "ota_boot_state.json",
        "ota_version.json.tmp",
        "OTA_VERSION.JSON",
        ".ready",
        ".READY",
        ".ready.x",
        ".uota_session",
        ".uota_part.00",
        ".uota_fsck",
        "app//x.py",
        "app/./x.py",
        "./main.py",
        "app/",
        "",
        "/",
        "//",
        ".",
        "..",
        "a\0b.py",
        "a\nb.py",
        "a\rb.py",
        "a\tb.py",
        "a\u{7f}b.py",
        "a\\b.py",
        "..\\evil.py",
        "a:b.py",
        "C:/evil.py",
        "\u{85}x.py",
        "\u{2028}x.py",
        "\u{feff}main.py",
        "été.py",
        "😀/x.py",
        " ",
        "app/ ",
        "app/.. ",
        "app/x.py;rm",
        "%2e%2e/evil.py",
        // Nested under a protected file (it would become a folder).
        "boot.py/x",
        "BOOT.PY/main.py",
        "ota_floor.json/x",
        "ota_floor.json/a/b",
        "OTA_FLOOR.JSON/x",
        "ota_version.json/x",
        "ota_manifest.txt/a/b",
        "ota_boot_state.json/x",
        "ota_serial_session/x",
        "ota_settings.json",
        "ota_settings.json/x",
        "ota_floor.json.tmp/x",
        "config/.ota.secrets.json/x",
        "config/.ota.secrets.json.tmp",
        "Config/.Ota.Secrets.Json.bak",
        // Shadowing the runtime or a module it imports.
        "uota/__init__.py",
        "uota.py",
        "uota.mpy",
        "lib/uota.py",
        "hashlib.py",
        "lib/json.py",
        "JSON.PY",
        "asyncio/__init__.py",
        "lib/os/__init__.py",
        // Outside the app area.
        "README.md",
        "notes/x.txt",
        "config/other.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(255));
    v.push("a".repeat(256));
    v.push(format!("{}b", "a/".repeat(127)));
    v.push("é".repeat(128));
    v
}

/// A path under a protected file or folder, or one that shadows a module
/// the runtime imports, in a random case: a release may write none of them.
fn nested_path(rng: &mut Rng) -> String {
    const BASES: &[&str] = &[
        "boot.py",
        "config/.ota.secrets.json",
        "ota_floor.json",
        "ota_version.json",
        "ota_manifest.txt",
        "ota_boot_state.json",
        "ota_serial_session",
        "ota_settings.json",
        "lib/uota",
        "uota",
        "lib/uota.py",
        "json",
        "lib/hashlib",
        "asyncio",
        "os.py",
        "data",
    ];
    let mut base = rng.pick(BASES).to_string();
    match rng.below(3) {
        0 => base = base.to_uppercase(),
        1 => {
            base = base
                .chars()
                .map(|c| {
                    if rng.percent(50) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }
        _ => {}
    }
    let tail = rng.pick(&["", ".tmp", ".py", ".mpy"]);
    let under = rng.pick(&["x", "a/b", "__init__.py", "main.py"]);
    format!("{base}{tail}/{under}")
}

/// Paths that `rm` may never delete: `rm` of anything else in the corpus
/// (the app's own files, `config/ota.json`) is a legitimate deletion.
fn rm_safe(path: &str) -> bool {
    !matches!(
        path,
        "main.py" | "/main.py" | "app/counter.py" | "app/__init__.py" | "config/ota.json"
    )
}

/// Raw JSON number texts, including ones no 64-bit type holds.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "255",
    "256",
    "8192",
    "8193",
    "65535",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e3",
    "1.5",
    "-0",
    "0.0",
    "1e400",
    "-1e400",
    "1E2",
];

fn json_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string serializes")
}

/// A random JSON value as raw text (so that it may hold numbers serde_json
/// cannot represent, and lone surrogates).
fn rand_json(rng: &mut Rng, paths: &[String], depth: usize) -> String {
    match rng.below(if depth > 2 { 8 } else { 10 }) {
        0 => rng.pick(&["null", "true", "false"]).to_string(),
        1 | 2 => rng.pick(NUMBERS).to_string(),
        3 | 4 => json_str(rng.pick(paths)),
        5 => json_str(rng.hex(64)),
        6 => json_str(String::from_utf8_lossy(&rng.some_bytes(0, 40)).replace('\u{fffd}', "?")),
        7 => rng
            .pick(&[
                r#""\ud800""#,
                r#""\udfff\ud800""#,
                r#""a\u0000b""#,
                r#""\u0000""#,
                r#""""#,
                r#""ping""#,
            ])
            .to_string(),
        8 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| rand_json(rng, paths, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.below(3);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "{}:{}",
                        json_str(rng.pick(&["op", "path", "size", "x", ""])),
                        rand_json(rng, paths, depth + 1)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// What the generators know about the device and the releases.
struct World {
    paths: Vec<String>,
    max_frame: usize,
    key: uota::auth::SigningKey,
    /// Releases a valid `begin` may open: each holds the sentinel.
    releases: Vec<Manifest>,
    /// The bytes of every entry of those releases (except the sentinel).
    contents: BTreeMap<String, Vec<u8>>,
    /// Whether valid begins may claim release numbers above the device's
    /// floor (`UOTA_FUZZ_RAISE_FLOOR=0`: never, they claim the floor itself).
    raise_floor: bool,
}

impl World {
    fn new(baseline: &Manifest, project: &Project, max_frame: usize, rng: &mut Rng) -> World {
        let mut contents = BTreeMap::new();
        for e in &baseline.files {
            // What a push that installs the generated device config sends.
            let bytes = if e.path == uota::config::DEVICE_CONFIG_PATH {
                project.device_config_json()
            } else {
                std::fs::read(project.root.join(&e.path)).unwrap()
            };
            contents.insert(e.path.clone(), bytes);
        }
        contents.insert("app/counter.py".into(), b"# fuzz: changed\n".to_vec());
        contents.insert("app/fuzz_new.py".into(), b"print('new')\n".repeat(900));
        contents.insert("app/empty.py".into(), Vec::new());
        let mut releases = Vec::new();
        for version in ["9.9.9-fuzz", "9.9.9-fuzz-b", "x"] {
            let mut files: Vec<FileEntry> = contents
                .iter()
                .map(|(p, d)| FileEntry::from_bytes(p.clone(), d))
                .collect();
            // Each release also lists the sentinel, whose bytes never come.
            files.push(FileEntry {
                path: SENTINEL.into(),
                size: 7,
                sha256: rng.bytes(32).try_into().unwrap(),
            });
            releases.push(Manifest::new(version, files).unwrap());
        }
        World {
            paths: path_corpus(),
            max_frame,
            key: uota::auth::SigningKey::new(KEY),
            releases,
            contents,
            raise_floor: env_u64("UOTA_FUZZ_RAISE_FLOOR") != Some(0),
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions: a script of writes and reads on one connection.

enum Step {
    Send(Vec<u8>),
    /// Authenticate with the signing key, for the hello received on this
    /// connection; state-changing requests are sealed from then on.
    Auth,
    /// A request the runner sends when it gets here: sealed to the session
    /// when the connection authenticated and the op changes state, unless
    /// [`SealedReq::tamper`] says how to get the seal wrong.
    Req(Box<SealedReq>),
    /// A `begin` request the runner builds and signs when it gets here, for
    /// the hello it received on this connection (see [`SignedBegin`]).
    SignedBegin(Box<SignedBegin>),
    /// Read what the device answers until it is quiet for this long.
    Read(u64),
    Pause(u64),
    /// Run this session to its end on a second connection, meanwhile.
    Other(Box<Script>),
    /// Open one more connection, run these steps on it (bytes, reads and
    /// signed begins only), and leave it open until the session ends.
    Open(Vec<Step>),
}

struct Script {
    kind: &'static str,
    steps: Vec<Step>,
    /// Close with an RST instead of a FIN.
    reset: bool,
}

impl Script {
    fn new(kind: &'static str) -> Script {
        Script {
            kind,
            steps: Vec::new(),
            reset: false,
        }
    }

    fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        self.steps.push(Step::Send(bytes.into()));
    }

    fn line(&mut self, text: &[u8]) {
        let mut b = text.to_vec();
        b.push(b'\n');
        self.send(b);
    }

    fn frame(&mut self, kind: FrameType, payload: &[u8]) {
        self.send(encode_to_vec(kind, payload));
    }

    fn req(&mut self, json: &str) {
        self.steps
            .push(Step::Req(Box::new(SealedReq::new(json, Tamper::None))));
    }

    fn tampered_req(&mut self, json: &str, tamper: Tamper) {
        self.steps
            .push(Step::Req(Box::new(SealedReq::new(json, tamper))));
    }

    fn auth(&mut self) {
        self.steps.push(Step::Auth);
    }

    fn data(&mut self, payload: &[u8]) {
        self.frame(FrameType::Data, payload);
    }

    fn hello(&mut self) {
        self.line(b"uota 1");
        self.steps.push(Step::Read(15));
    }

    fn read(&mut self) {
        self.steps.push(Step::Read(25));
    }

    fn signed_begin(&mut self, begin: SignedBegin) {
        self.steps.push(Step::SignedBegin(Box::new(begin)));
    }

    /// How many bytes the main connection sends (a signed begin counted at
    /// its estimated length).
    fn sent_len(&self) -> usize {
        self.steps.iter().map(Step::len).sum()
    }

    /// What every connection of the session sent, for a report (signed
    /// begins as what they were told to be; the runner reports the requests
    /// it actually built).
    fn describe(&self, max: usize) -> String {
        let mut out = render(&self.steps, max);
        for step in &self.steps {
            match step {
                Step::Other(o) => out.push_str(&format!(
                    "\n    meanwhile on a second connection ({}): {}",
                    o.kind,
                    o.describe(max)
                )),
                Step::Open(steps) => out.push_str(&format!(
                    "\n    another connection left open after: {}",
                    render(steps, max)
                )),
                _ => {}
            }
        }
        out
    }

    /// Cut the session at a random byte (the link drops there). A signed
    /// begin counts as its estimated length; a cut inside it sends only its
    /// first bytes.
    fn truncate(&mut self, rng: &mut Rng) {
        let total = self.sent_len();
        if total == 0 {
            return;
        }
        let mut keep = rng.below(total);
        let mut steps = Vec::new();
        for s in std::mem::take(&mut self.steps) {
            match s {
                Step::Send(b) if b.len() > keep => {
                    steps.push(Step::Send(b[..keep].to_vec()));
                    // The manifest stream of an earlier begin may be cut.
                    for s in &mut steps {
                        if let Step::SignedBegin(b) = s {
                            b.intact = false;
                        }
                    }
                    break;
                }
                Step::Send(b) => {
                    keep -= b.len();
                    steps.push(Step::Send(b));
                }
                Step::SignedBegin(mut b) if b.estimate_len() > keep => {
                    b.cut = Some(keep);
                    steps.push(Step::SignedBegin(b));
                    break;
                }
                Step::SignedBegin(b) => {
                    keep -= b.estimate_len();
                    steps.push(Step::SignedBegin(b));
                }
                Step::Req(mut r) if r.estimate_len() > keep => {
                    r.cut = Some(keep);
                    steps.push(Step::Req(r));
                    break;
                }
                Step::Req(r) => {
                    keep -= r.estimate_len();
                    steps.push(Step::Req(r));
                }
                other => steps.push(other),
            }
        }
        self.steps = steps;
    }

    /// Resend the bytes in small pieces with short pauses (odd TCP
    /// segments); a signed begin is dripped the same way when it is sent.
    fn drip(&mut self, rng: &mut Rng) {
        let mut steps = Vec::new();
        for s in std::mem::take(&mut self.steps) {
            match s {
                Step::Send(b) if b.len() <= 2048 => {
                    let mut rest = &b[..];
                    while !rest.is_empty() {
                        let n = rng.range(1, 9).min(rest.len());
                        steps.push(Step::Send(rest[..n].to_vec()));
                        if rng.percent(10) {
                            steps.push(Step::Pause(1));
                        }
                        rest = &rest[n..];
                    }
                }
                Step::SignedBegin(mut b) => {
                    b.drip = Some(rng.next());
                    steps.push(Step::SignedBegin(b));
                }
                Step::Req(mut r) => {
                    r.drip = Some(rng.next());
                    steps.push(Step::Req(r));
                }
                other => steps.push(other),
            }
        }
        self.steps = steps;
    }
}

impl Step {
    /// Bytes this step sends on its own connection (estimated for a signed
    /// begin).
    fn len(&self) -> usize {
        match self {
            Step::Send(b) => b.len(),
            Step::SignedBegin(b) => b.cut.unwrap_or(usize::MAX).min(b.estimate_len()),
            Step::Req(r) => r.cut.unwrap_or(usize::MAX).min(r.estimate_len()),
            _ => 0,
        }
    }
}

/// The bytes of one connection's steps, escaped, with signed begins shown
/// as what they were told to be.
fn render(steps: &[Step], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut total = 0;
    for step in steps {
        match step {
            Step::Send(b) => {
                let n = b.len().min(max - shown.min(max));
                out.push_str(&escape(&b[..n]));
                shown += n;
                total += b.len();
            }
            Step::SignedBegin(b) if shown < max => {
                out.push_str(&format!("<{b}>"));
                shown += step.len();
                total += step.len();
            }
            Step::Req(r) if shown < max => {
                out.push_str(&format!("<{r}>"));
                shown += step.len();
                total += step.len();
            }
            Step::Auth => out.push_str("<auth with the key>"),
            _ => total += step.len(),
        }
    }
    if total > shown {
        out.push_str(&format!("… (about {total} bytes in all)"));
    }
    out
}

// ---------------------------------------------------------------------------
// Signed begins, built at run time.
//
// A release signature binds the nonce of the device's hello on the very
// connection that carries it (src/release.rs, docs/security.md), so a valid
// `begin` cannot be made before the session runs. A script holds a
// `Step::SignedBegin` instead: the release, which release number relative to
// the device's floor, and how to break the request, all drawn by the
// generator. The runner builds the request when it reaches the step, from
// the latest hello among the bytes it has received on that connection so far
// (waiting up to a moment more for one; without any it signs an empty nonce
// and device id, which the device refuses), and sends it as one REQ frame:
// whole, only its first `cut` bytes (a truncated session), or in drips of 1
// to 9 bytes with short pauses. Only the nonce, the device id and the
// device's floor come from the device, so a case replays the same way.

/// Which release number a `begin` claims, relative to the device's floor
/// (the `release` of its hello).
#[derive(Debug, Clone, Copy)]
enum ReleaseChoice {
    /// The floor itself: accepted (the same number again may be pushed).
    Floor,
    /// One above the floor (what the host signs by default).
    Next,
    /// Further above the floor.
    Ahead(u64),
    /// One below the floor, signed as a rollback: accepted.
    RollbackBelow,
    /// One below the floor without the rollback flag: `downgrade`.
    Below,
}

/// One change to a signed `begin`: before signing (the signature and the
/// request agree, and the device must judge the claim itself) or after
/// (the request no longer matches its signature, or is malformed).
#[derive(Debug, Clone)]
enum BeginEdit {
    /// Sign with the nonce of another session (a replay).
    StaleNonce(String),
    /// Sign for, and name, this device; `None`: the device's own id with a
    /// character appended. `Some("")` means any device (valid).
    Device(Option<String>),
    /// Sign these compatibility fields; whether they fit the virtual device.
    Compat(Compat, bool),
    /// After signing: a `count` (the signature covers the real one).
    Count(usize),
    /// After signing: this text as the signature.
    Sig(String),
    /// After signing: the signature in uppercase (still valid hex).
    SigUpper,
    /// After signing: no signature.
    NoSig,
    /// After signing: this version.
    Version(String),
    /// After signing: this mode.
    Mode(&'static str),
    /// After signing: `"runtime": true`.
    Runtime,
    /// After signing: the opposite of the signed rollback flag.
    RollbackFlipped,
    /// After signing: no release number.
    NoRelease,
    /// After signing: this raw JSON text as the release number.
    RawRelease(&'static str),
    /// After signing: a field set to a value; whether the device must
    /// refuse the begin for it.
    Field(&'static str, serde_json::Value, bool),
}

impl BeginEdit {
    /// Whether this edit alone must make the device refuse the begin of
    /// `m` on the device `id`.
    fn refused(&self, m: &Manifest, id: &str) -> bool {
        match self {
            BeginEdit::Device(Some(d)) => !d.is_empty() && d != id,
            BeginEdit::Compat(_, fits) => !fits,
            BeginEdit::Count(n) => *n != m.files.len(),
            BeginEdit::Version(v) => *v != m.version,
            BeginEdit::SigUpper => false,
            BeginEdit::Field(_, _, refused) => *refused,
            _ => true,
        }
    }
}

/// What the generator meant a begin to be, given the hello it was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Intent {
    /// Correctly signed and followed by its intact manifest stream.
    Valid,
    /// The device must refuse it, whatever follows.
    Broken,
    /// Either (mutated manifest lines, a cut request, …).
    Unknown,
}

struct SignedBegin {
    manifest: Manifest,
    release: ReleaseChoice,
    edits: Vec<BeginEdit>,
    /// Whether the script follows it with the release's manifest lines,
    /// unchanged, and the end of the stream.
    intact: bool,
    /// Send only this many bytes of the frame (the session is cut there).
    cut: Option<usize>,
    /// Send it in drips, with this seed.
    drip: Option<u64>,
}

impl std::fmt::Display for SignedBegin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "signed begin of {} (release {:?}",
            self.manifest.version, self.release
        )?;
        if !self.edits.is_empty() {
            write!(f, ", edits {:?}", self.edits)?;
        }
        if let Some(n) = self.cut {
            write!(f, ", cut after {n} bytes")?;
        }
        if self.drip.is_some() {
            write!(f, ", dripped")?;
        }
        write!(f, ")")
    }
}

impl SignedBegin {
    /// A correctly signed begin of `m` claiming `release`, followed by its
    /// intact manifest stream unless the generator says otherwise.
    fn new(m: &Manifest, release: ReleaseChoice) -> SignedBegin {
        SignedBegin {
            manifest: m.clone(),
            release,
            edits: Vec::new(),
            intact: true,
            cut: None,
            drip: None,
        }
    }

    /// The request for the device that sent `hello` (an empty nonce and
    /// device id without one), signed with the device's key.
    fn build(&self, hello: Option<&Hello>, key: &SigningKey) -> String {
        let (nonce, id, floor) = match hello {
            Some(h) => (h.nonce.clone(), h.id.clone(), h.release),
            None => (String::new(), String::new(), 0),
        };
        let (release, rollback) = match self.release {
            ReleaseChoice::Floor => (floor, false),
            ReleaseChoice::Next => (floor.saturating_add(1), false),
            ReleaseChoice::Ahead(k) => (floor.saturating_add(k), false),
            ReleaseChoice::RollbackBelow => (floor.saturating_sub(1), true),
            ReleaseChoice::Below => (floor.saturating_sub(1), false),
        };
        let mut claims = ReleaseClaims {
            release,
            rollback,
            mode: PushMode::Full,
            runtime: false,
            nonce,
            device: id.clone(),
            compat: Compat::default(),
        };
        for e in &self.edits {
            match e {
                BeginEdit::StaleNonce(n) => claims.nonce = n.clone(),
                BeginEdit::Device(Some(d)) => claims.device = d.clone(),
                BeginEdit::Device(None) => claims.device = format!("{id}0"),
                BeginEdit::Compat(c, _) => claims.compat = c.clone(),
                _ => {}
            }
        }
        let m = &self.manifest;
        // `sign` refuses claims the payload cannot carry: sign those as they
        // are (the device must refuse them).
        let sig = claims
            .sign(m, key)
            .unwrap_or_else(|_| hex::encode(key.sign(&claims.payload(m))));
        let mut v = json!({
            "op": "begin", "version": m.version, "mode": claims.mode.as_str(),
            "count": m.files.len(), "sig": sig, "runtime": claims.runtime,
            "release": claims.release, "device": claims.device,
        });
        let o = v.as_object_mut().expect("an object");
        if claims.rollback {
            o.insert("rollback".into(), json!(true));
        }
        if !claims.compat.is_empty() {
            o.insert(
                "compat".into(),
                serde_json::to_value(&claims.compat).unwrap(),
            );
        }
        let mut raw_release = None;
        for e in &self.edits {
            match e {
                BeginEdit::Count(n) => {
                    o.insert("count".into(), json!(n));
                }
                BeginEdit::Sig(s) => {
                    o.insert("sig".into(), json!(s));
                }
                BeginEdit::SigUpper => {
                    if let Some(s) = o.get("sig").and_then(|s| s.as_str()) {
                        let upper = s.to_uppercase();
                        o.insert("sig".into(), json!(upper));
                    }
                }
                BeginEdit::NoSig => {
                    o.remove("sig");
                }
                BeginEdit::Version(s) => {
                    o.insert("version".into(), json!(s));
                }
                BeginEdit::Mode(s) => {
                    o.insert("mode".into(), json!(s));
                }
                BeginEdit::Runtime => {
                    o.insert("runtime".into(), json!(true));
                }
                BeginEdit::RollbackFlipped => {
                    o.insert("rollback".into(), json!(!claims.rollback));
                }
                BeginEdit::NoRelease => {
                    o.remove("release");
                }
                BeginEdit::RawRelease(raw) => raw_release = Some(*raw),
                BeginEdit::Field(k, val, _) => {
                    o.insert((*k).into(), val.clone());
                }
                BeginEdit::StaleNonce(_) | BeginEdit::Device(_) | BeginEdit::Compat(..) => {}
            }
        }
        let mut text = v.to_string();
        if let Some(raw) = raw_release {
            let signed = format!("\"release\":{}", claims.release);
            text = text.replacen(&signed, &format!("\"release\":{raw}"), 1);
        }
        text
    }

    /// What the begin is meant to be for the device that sent `hello`.
    fn intent(&self, hello: Option<&Hello>) -> Intent {
        let Some(h) = hello else {
            // Signed with an empty nonce: never this session's.
            return Intent::Broken;
        };
        let below = matches!(self.release, ReleaseChoice::Below) && h.release > 0;
        if below || self.edits.iter().any(|e| e.refused(&self.manifest, &h.id)) {
            Intent::Broken
        } else if self.intact && self.cut.is_none() {
            Intent::Valid
        } else {
            Intent::Unknown
        }
    }

    /// The length of its frame for a typical hello.
    fn estimate_len(&self) -> usize {
        let hello = Hello {
            nonce: "0".repeat(32),
            id: "0".repeat(16),
            release: 1,
            ..Hello::default()
        };
        let key = SigningKey::new(KEY);
        HEADER_LEN + self.build(Some(&hello), &key).len()
    }
}

/// How a request's seal is got wrong (the device must refuse it as
/// `unbound`, close the connection and change nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    /// Sent as it is, without `seq` and seal.
    Unsealed,
    /// Sealed, then one byte of the body changed.
    Body,
    /// Sealed with the sequence number of the last sealed request (a replay).
    Replay,
    /// Sealed with a sequence number one too far (a dropped request).
    Skip,
    /// Sealed under another key (someone without the secret).
    OtherKey,
}

/// A request built at run time (see [`Step::Req`]).
struct SealedReq {
    json: String,
    tamper: Tamper,
    /// Send only this many bytes of the frame (the session is cut there).
    cut: Option<usize>,
    /// Send it in drips, with this seed.
    drip: Option<u64>,
}

impl std::fmt::Display for SealedReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json)?;
        if self.tamper != Tamper::None {
            write!(f, " seal {:?}", self.tamper)?;
        }
        if let Some(n) = self.cut {
            write!(f, ", cut after {n} bytes")?;
        }
        Ok(())
    }
}

impl SealedReq {
    fn new(json: &str, tamper: Tamper) -> SealedReq {
        SealedReq {
            json: json.to_string(),
            tamper,
            cut: None,
            drip: None,
        }
    }

    /// Whether the op is one the device wants sealed.
    fn changes_state(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.json)
            .ok()
            .and_then(|v| v["op"].as_str().map(str::to_string))
            .is_some_and(|op| STATE_OPS.contains(&op.as_str()))
    }

    /// The payload for a connection bound with `binding` (key, last seq);
    /// advances the sequence number as the device will.
    fn payload(&self, binding: &mut Option<([u8; 32], u64)>) -> Vec<u8> {
        let Some((key, seq)) = binding.as_mut() else {
            return self.json.clone().into_bytes();
        };
        if !self.changes_state() || self.tamper == Tamper::Unsealed {
            return self.json.clone().into_bytes();
        }
        let n = match self.tamper {
            Tamper::Replay => *seq,
            Tamper::Skip => *seq + 2,
            _ => *seq + 1,
        };
        let key = match self.tamper {
            Tamper::OtherKey => [0x5a; 32],
            _ => *key,
        };
        let mut sealed = seal_body(&key, with_seq(&self.json, n, None).as_bytes());
        if self.tamper == Tamper::Body {
            // Flip a letter of the op name (always inside the body).
            if let Some(i) = sealed.windows(6).position(|w| w == b"\"op\":\"") {
                sealed[i + 6] ^= 0x20;
            }
        }
        *seq += 1;
        sealed
    }

    /// The length of its frame (sealed).
    fn estimate_len(&self) -> usize {
        HEADER_LEN
            + self.json.len()
            + if self.changes_state() {
                MAC_TAIL_LEN + 10
            } else {
                0
            }
    }
}

/// A request's JSON text (an object) with `"seq":n` (and `"mdigest"`) put first.
fn with_seq(json: &str, seq: u64, mdigest: Option<&str>) -> String {
    let mut head = format!("{{\"seq\":{seq}");
    if let Some(d) = mdigest {
        head.push_str(&format!(",\"mdigest\":\"{d}\""));
    }
    let rest = json.trim_start().strip_prefix('{').unwrap_or(json);
    if rest.trim_start().starts_with('}') {
        format!("{head}{rest}")
    } else {
        format!("{head},{rest}")
    }
}

/// Raw JSON texts that are not a release number the begin was signed for.
const BAD_RELEASES: &[&str] = &[
    "\"2\"",
    "-1",
    "1.5",
    "1.0",
    "1e400",
    "true",
    "null",
    "[1]",
    "{}",
    "18446744073709551616",
    "123456789012345678901234567890",
];

/// A correctly signed begin of `m` with a release number the device
/// accepts, sometimes for any device or with fitting compatibility fields.
///
/// Numbers above the floor are valid too, and no fuzzed push is ever
/// committed (the sentinel), so the floor must never move.
fn valid_begin(rng: &mut Rng, w: &World, m: &Manifest) -> SignedBegin {
    let mut release = match rng.below(10) {
        0..=4 => ReleaseChoice::Floor,
        5..=7 => ReleaseChoice::Next,
        8 => ReleaseChoice::RollbackBelow,
        _ => ReleaseChoice::Ahead(rng.range(2, 1000) as u64),
    };
    if !w.raise_floor && matches!(release, ReleaseChoice::Next | ReleaseChoice::Ahead(_)) {
        release = ReleaseChoice::Floor;
    }
    let mut b = SignedBegin::new(m, release);
    if rng.percent(10) {
        b.edits.push(BeginEdit::Device(Some(String::new())));
    }
    if rng.percent(10) {
        let c = match rng.below(2) {
            0 => Compat {
                port: vec!["esp32".into(), "linux".into()],
                ..Compat::default()
            },
            _ => Compat {
                micropython: Some(("1.0".into(), "99.99".into())),
                ..Compat::default()
            },
        };
        b.edits.push(BeginEdit::Compat(c, true));
    }
    b
}

/// Random bytes in line mode: garbage, known commands with bad arguments,
/// over-long and non-UTF-8 lines; sometimes the hello and frame garbage.
fn gen_lines(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("lines");
    for _ in 0..rng.range(1, 8) {
        match rng.below(7) {
            0 => {
                let mut b = rng.some_bytes(0, 80);
                b.retain(|&c| c != b'\n');
                s.line(&b);
            }
            1 => {
                let n = rng.range(500, 3000);
                s.line(&vec![*rng.pick(b"a \xff/"); n]);
            }
            2 => {
                let mut b = rng.some_bytes(1, 200);
                if rng.percent(50) {
                    b.push(b'\r');
                }
                b.push(b'\n');
                s.send(b);
            }
            _ => {
                let cmd = *rng.pick(&[
                    "ping",
                    "version",
                    "ls",
                    "get",
                    "rm",
                    "stream_ota",
                    "start_ota",
                    "end_ota",
                    "manifest",
                    "file",
                    "abort",
                    "uota",
                    "UOTA",
                    "PING",
                    "Reset",
                    "",
                ]);
                let arg: Vec<u8> = match rng.below(5) {
                    0 => Vec::new(),
                    1 => rng.pick(NUMBERS).as_bytes().to_vec(),
                    2 => rng.some_bytes(1, 30),
                    _ => loop {
                        let p = rng.pick(&w.paths);
                        if cmd != "rm" || rm_safe(p) {
                            break p.as_bytes().to_vec();
                        }
                    },
                };
                let mut b = cmd.as_bytes().to_vec();
                if rng.percent(85) {
                    b.push(b' ');
                }
                b.extend(arg.iter().filter(|&&c| c != b'\n'));
                if rng.percent(20) {
                    b.push(b'\r');
                }
                s.line(&b);
            }
        }
        if rng.percent(40) {
            s.read();
        }
    }
    if rng.percent(20) {
        s.hello();
        let junk = rng.some_bytes(1, 40);
        s.send(junk);
    }
    s.read();
    s
}

/// One random frame: any type, a length that may lie, a random payload.
fn rand_frame(rng: &mut Rng, w: &World) -> Vec<u8> {
    let kind = match rng.below(10) {
        0..=3 => 1,
        4 | 5 => 3,
        6 => 2,
        7 => 0,
        _ => rng.next() as u8,
    };
    let payload = match rng.below(6) {
        0 => Vec::new(),
        1 => format!(r#"{{"op":{}}}"#, rand_json(rng, &w.paths, 0)).into_bytes(),
        2 => rand_json(rng, &w.paths, 0).into_bytes(),
        3 => vec![0; w.max_frame],
        _ => rng.some_bytes(1, 300),
    };
    let len: u32 = match rng.below(10) {
        0 => rng.next() as u32,
        1 => *rng.pick(&[u32::MAX, 0x7fff_ffff, 0x8000_0000, w.max_frame as u32 + 1]),
        2 => payload.len() as u32 + rng.range(1, 20) as u32,
        3 => (payload.len() as u32).saturating_sub(rng.range(1, 20) as u32),
        _ => payload.len() as u32,
    };
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn gen_frames(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("frames");
    s.hello();
    for _ in 0..rng.range(1, 6) {
        let f = rand_frame(rng, w);
        s.send(f);
        if rng.percent(50) {
            s.read();
        }
    }
    s.read();
    s
}

/// A mutated request: a known or unknown op with fields of random types.
/// Never `wipe` or `reset`, never a `passwd` that may succeed, `rm` only of paths no
/// `rm` may delete, and `commit` only before any `begin` of the session.
fn rand_request(rng: &mut Rng, w: &World, begun: bool) -> (String, String) {
    let mut ops = vec![
        "ping",
        "info",
        "ls",
        "get",
        "rm",
        "auth",
        "passwd",
        "begin",
        "file",
        "manifest",
        "staged",
        "abort",
        "frobnicate",
        "",
        "PING",
        "Wipe",
        "RESET",
        "op_ping",
        "_frames",
        "__init__",
        "ping ",
        "handle",
        "remove",
        "list_dir",
        "stop_serving",
    ];
    if !begun {
        ops.push("commit");
    }
    // Long names: 252 letters is MicroPython's longest attribute name
    // after the "op_" prefix the server adds.
    let long: [String; 2] = ["a".repeat(252), "a".repeat(253 + rng.below(300))];
    ops.extend(long.iter().map(String::as_str));
    let op = *rng.pick(&ops);
    let op_json = match rng.below(12) {
        0 => rand_json(rng, &w.paths, 1),
        _ => json_str(op),
    };
    let field = |rng: &mut Rng, name: &str| -> String {
        let v = match name {
            "path" if op == "rm" => loop {
                let p = rng.pick(&w.paths);
                if rm_safe(p) {
                    break json_str(p);
                }
            },
            "path" if rng.percent(60) => json_str(rng.pick(&w.paths)),
            // Never "" either: clearing the (absent) password is a legitimate
            // rewrite of the secrets file.
            "verifier" => match rng.below(4) {
                0 => json_str(rng.hex(65)),
                1 => json_str(rng.hex(63)),
                2 => json_str(format!("{}g", rng.hex(63))),
                _ => rng.pick(NUMBERS).to_string(),
            },
            "sha256" | "sig" | "mac" if rng.percent(50) => json_str(rng.hex(64)),
            "size" | "count" | "offset" if rng.percent(60) => rng.pick(NUMBERS).to_string(),
            "mode" if rng.percent(50) => json_str(rng.pick(&["full", "fast", "FULL", "delta"])),
            "enc" if rng.percent(50) => json_str(rng.pick(&["deflate", "gzip", "zlib", ""])),
            "version" if rng.percent(50) => json_str(rng.pick(&[
                "2.0",
                "",
                "a\u{1}b",
                "v\nx",
                &"9".repeat(65),
                &"9".repeat(64),
            ])),
            _ => rand_json(rng, &w.paths, 1),
        };
        format!("{}:{}", json_str(name), v)
    };
    let names: &[&str] = match op {
        "ls" | "get" | "rm" => &["path"],
        "auth" => &["mac"],
        "passwd" => &["verifier"],
        "begin" => &["version", "mode", "count", "sig", "runtime"],
        "file" => &["path", "size", "sha256", "offset", "enc"],
        "commit" => &["reset"],
        _ => &["path", "x"],
    };
    let mut fields = vec![format!("\"op\":{op_json}")];
    for name in names {
        if op == "passwd" || rng.percent(80) {
            fields.push(field(rng, name));
        }
    }
    if rng.percent(20) {
        let extra = *rng.pick(&["x", "op", "path", "ok", ""]);
        if extra != "op" || op != "passwd" {
            fields.push(field(rng, extra));
        }
    }
    // `commit` takes reset=false only: a reset would use up a boot attempt.
    if op == "commit" {
        fields.push("\"reset\":false".into());
    }
    (op.to_string(), format!("{{{}}}", fields.join(",")))
}

/// A payload that is not a well-formed request at all.
fn rand_bad_payload(rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => b"{\"op\":\"ping\"".to_vec(),
        1 => b"{\"op\":\"p\xffng\"}".to_vec(),
        2 => b"{\"op\":\"ping\",\"path\":\"a\x00b\"}".to_vec(),
        3 => {
            let d = rng.range(10, 3000);
            format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()
        }
        4 => {
            let d = rng.range(10, 3000);
            format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d)).into_bytes()
        }
        5 => b"\xef\xbb\xbf{\"op\":\"ping\"}".to_vec(),
        6 => b"{\"op\":\"ping\"} trailing".to_vec(),
        7 => b"[\"op\",\"ping\"]".to_vec(),
        _ => format!("{{\"op\":\"ls\",\"path\":\"{}\"}}", "a".repeat(8100)).into_bytes(),
    }
}

/// Manifest-ish text for a `begin` stream of a mutated request.
fn rand_manifest_text(rng: &mut Rng, w: &World) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(0, 5) {
        let sha = if rng.percent(70) {
            rng.hex(64)
        } else {
            let n = rng.range(0, 70);
            rng.hex(n)
        };
        let size = if rng.percent(60) {
            rng.below(100).to_string()
        } else {
            rng.pick(NUMBERS).to_string()
        };
        let path = if rng.percent(20) {
            nested_path(rng)
        } else {
            rng.pick(&w.paths).clone()
        };
        out.extend(format!("{sha} {size} {path}\n").into_bytes());
    }
    out
}

fn gen_requests(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("requests");
    s.hello();
    // Half the sessions authenticate with the key: their state-changing
    // requests reach the handlers sealed (or with a seal got wrong), the
    // others' are refused before any handler runs.
    if rng.percent(50) {
        s.auth();
    }
    let mut begun = false;
    for _ in 0..rng.range(1, 6) {
        if rng.percent(15) {
            let p = rand_bad_payload(rng);
            s.frame(FrameType::Request, &p);
        } else {
            let (op, json) = rand_request(rng, w, begun);
            let tamper = if rng.percent(15) {
                *rng.pick(&[
                    Tamper::Unsealed,
                    Tamper::Body,
                    Tamper::Replay,
                    Tamper::Skip,
                    Tamper::OtherKey,
                ])
            } else {
                Tamper::None
            };
            s.tampered_req(&json, tamper);
            match op.as_str() {
                "begin" => {
                    begun = true;
                    if rng.percent(80) {
                        let text = rand_manifest_text(rng, w);
                        for chunk in text.chunks(rng.range(1, 64)) {
                            s.data(chunk);
                        }
                        if rng.percent(85) {
                            s.data(b"");
                        }
                    }
                }
                "file" if rng.percent(70) => {
                    let body = rng.some_bytes(0, 200);
                    s.data(&body);
                    s.data(b"");
                }
                _ => {}
            }
        }
        if rng.percent(60) {
            s.read();
        }
    }
    s.read();
    s
}

/// Split a stream into DATA frames at random points (never an empty one,
/// which would end the stream early).
fn data_frames(s: &mut Script, rng: &mut Rng, bytes: &[u8], max: usize) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.range(1, max).min(rest.len());
        s.data(&rest[..n]);
        rest = &rest[n..];
    }
}

/// Mutate manifest lines: bad hashes and sizes, bad and protected paths,
/// unsorted and repeated lines, blank, over-long and non-UTF-8 lines.
fn mutate_lines(rng: &mut Rng, w: &World, text: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    for _ in 0..rng.range(1, 3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        let line = String::from_utf8_lossy(&lines[i]).to_string();
        let mut parts: Vec<String> = line.splitn(3, ' ').map(str::to_string).collect();
        parts.resize(3.max(parts.len()), String::new());
        match rng.below(12) {
            0 => {
                let choices = [parts[0].to_uppercase(), rng.hex(63), "g".repeat(64)];
                parts[0] = rng.pick(&choices).clone();
            }
            1 => parts[1] = rng.pick(NUMBERS).to_string(),
            2 => {
                parts[1] = rng
                    .pick(&["", " 5", "+5", "0x10", "5 ", "٣", "1_000"])
                    .to_string()
            }
            3 if rng.percent(30) => parts[2] = nested_path(rng),
            3 => parts[2] = rng.pick(&w.paths).clone(),
            4 => parts.truncate(rng.range(1, 2)),
            5 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
                continue;
            }
            6 => {
                let dup = lines[i].clone();
                lines.insert(i, dup);
                continue;
            }
            7 => {
                lines.insert(i, rng.pick(&[&b""[..], b"\r", b" ", b"\0"]).to_vec());
                continue;
            }
            8 => {
                lines[i] = vec![b'a'; rng.range(390, 1200)];
                continue;
            }
            9 => {
                lines[i].extend_from_slice(b"\xff\xfe");
                continue;
            }
            10 => {
                lines.remove(i);
                continue;
            }
            _ => {
                lines[i].push(b'\r');
                continue;
            }
        }
        lines[i] = parts.join(" ").into_bytes();
    }
    let mut out = lines.join(&b'\n');
    if rng.percent(90) {
        out.push(b'\n');
    }
    out
}

/// A signed `begin` whose manifest stream or request (or both) is mutated:
/// the old mutations after signing, and claims the device must refuse
/// although they are signed (a stale nonce, another device, a release below
/// the floor, a port that does not fit) or fields of the wrong type.
fn gen_begin(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("begin");
    s.hello();
    let m = rng.pick(&w.releases);
    let lines = m.manifest_lines();
    // Either the lines or the request are mutated (or both, or neither:
    // then the push is open and valid, and the session just ends).
    let lines_mutated = rng.percent(70);
    let mutated = if lines_mutated {
        mutate_lines(rng, w, &lines)
    } else {
        lines
    };
    let ends = rng.percent(90);
    let mut begin = valid_begin(rng, w, m);
    begin.intact = !lines_mutated && ends;
    for _ in 0..rng.below(3) {
        let edit = match rng.below(9) {
            0 => BeginEdit::Count(m.files.len() + 1),
            1 => BeginEdit::Count(m.files.len().saturating_sub(1)),
            2 => BeginEdit::Sig(rng.hex(64)),
            3 => BeginEdit::SigUpper,
            4 => BeginEdit::Sig(rng.pick(&["", "00"]).to_string()),
            5 => BeginEdit::NoSig,
            6 => BeginEdit::Version(format!("{}.1", m.version)),
            7 => BeginEdit::Mode("fast"),
            _ => BeginEdit::Runtime,
        };
        begin.edits.push(edit);
    }
    if rng.percent(40) {
        let edit = match rng.below(10) {
            0 => Some(BeginEdit::StaleNonce(rng.hex(32))),
            1 => Some(BeginEdit::Device(None)),
            2 => {
                let id = rng.pick(&["fuzz-other-device", "0", "*"]);
                Some(BeginEdit::Device(Some(id.to_string())))
            }
            3 => {
                begin.release = ReleaseChoice::Below;
                None
            }
            4 => Some(BeginEdit::RollbackFlipped),
            5 => {
                let c = match rng.below(3) {
                    0 => Compat {
                        port: vec!["esp32".into()],
                        ..Compat::default()
                    },
                    1 => Compat {
                        board: vec!["ESP32S3".into()],
                        ..Compat::default()
                    },
                    _ => Compat {
                        micropython: Some(("0.1".into(), "0.2".into())),
                        ..Compat::default()
                    },
                };
                Some(BeginEdit::Compat(c, false))
            }
            6 => Some(BeginEdit::RawRelease(
                BAD_RELEASES[rng.below(BAD_RELEASES.len())],
            )),
            7 => {
                // Values `compat` must not be (those that are empty, like
                // [] or {}, are read as no compatibility fields).
                let (v, refused) = rng
                    .pick(&[
                        (json!("esp32"), true),
                        (json!(["esp32"]), true),
                        (json!({"port": "esp32"}), true),
                        (json!({"port": [1]}), true),
                        (json!({"port": ["a,b"]}), true),
                        (json!({"port": ["linux\n"]}), true),
                        (json!({"board": [""]}), true),
                        (json!({"micropython": ["1.x", "2"]}), true),
                        (json!({"micropython": [1, 2]}), true),
                        (json!({"micropython": "1.0"}), true),
                        (json!({"micropython": ["1.0"]}), true),
                        (json!(7), true),
                        (json!([]), false),
                        (json!({}), false),
                        (json!(null), false),
                    ])
                    .clone();
                Some(BeginEdit::Field("compat", v, refused))
            }
            8 => Some(BeginEdit::NoRelease),
            _ => {
                let v = rng
                    .pick(&[
                        json!(5),
                        json!(null),
                        json!(["x"]),
                        json!("a\nrelease=9"),
                        json!("x".repeat(65)),
                    ])
                    .clone();
                Some(BeginEdit::Field("device", v, true))
            }
        };
        begin.edits.extend(edit);
    }
    if rng.percent(10) {
        let (_, j) = rand_request(rng, w, true);
        s.req(&j);
    } else {
        s.signed_begin(begin);
    }
    data_frames(&mut s, rng, &mutated, 200);
    if ends {
        s.data(b"");
    } else {
        // A request where the stream should go on.
        s.req(r#"{"op":"ping"}"#);
    }
    s.read();
    if rng.percent(40) {
        s.req(r#"{"op":"staged"}"#);
        s.read();
    }
    if rng.percent(30) {
        s.req(r#"{"op":"abort"}"#);
        s.read();
    }
    s
}

/// The data stream of one file: correct, or broken in one of many ways.
fn file_stream(s: &mut Script, rng: &mut Rng, w: &World, body: &[u8], broken: bool) {
    if !broken {
        // Correct, in random frame sizes.
        data_frames(s, rng, body, w.max_frame);
        s.data(b"");
        return;
    }
    match rng.below(9) {
        // Truncated.
        0 => {
            let n = rng.below(body.len().max(1));
            data_frames(s, rng, &body[..n.min(body.len())], w.max_frame);
            s.data(b"");
        }
        // Extra bytes.
        1 => {
            let mut b = body.to_vec();
            b.extend(rng.some_bytes(1, 50));
            data_frames(s, rng, &b, w.max_frame);
            s.data(b"");
        }
        // One byte changed.
        2 if !body.is_empty() => {
            let mut b = body.to_vec();
            let i = rng.below(b.len());
            b[i] ^= 1;
            data_frames(s, rng, &b, w.max_frame);
            s.data(b"");
        }
        // An oversized DATA frame (really sent, or only announced).
        3 => {
            if rng.percent(50) {
                s.data(&vec![b'x'; w.max_frame + 1]);
            } else {
                let mut hdr = vec![3];
                hdr.extend_from_slice(&rng.pick(&[u32::MAX, 1 << 24]).to_be_bytes());
                s.send(hdr);
            }
        }
        // No end of stream: the next request comes instead.
        4 => {
            data_frames(s, rng, body, w.max_frame);
            s.req(r#"{"op":"ping"}"#);
        }
        // Another frame type inside the stream.
        5 => {
            data_frames(s, rng, &body[..body.len() / 2], w.max_frame);
            s.frame(FrameType::Response, b"{}");
        }
        // Nothing at all.
        6 => s.data(b""),
        // Deflate data where plain bytes are expected.
        _ => {
            s.data(&deflate(body));
            s.data(b"");
        }
    }
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// The stream of a file sent with `"enc":"deflate"`: one zlib stream per
/// DATA frame; correct, or corrupted, truncated, a bomb, plain bytes.
fn deflate_stream(s: &mut Script, rng: &mut Rng, w: &World, body: &[u8], broken: bool) {
    if !broken {
        for piece in body.chunks(rng.range(1, 4 * w.max_frame)) {
            s.data(&deflate(piece));
        }
        s.data(b"");
        return;
    }
    let mut comp = match rng.below(3) {
        0 => deflate(&vec![0u8; 1 << 20]),
        1 => deflate(body),
        _ => body.to_vec(),
    };
    match rng.below(3) {
        0 if !comp.is_empty() => {
            let i = rng.below(comp.len());
            comp[i] ^= 0x55;
        }
        1 => comp.truncate(comp.len() / 2),
        _ => {}
    }
    if comp.len() <= w.max_frame {
        s.data(&comp);
    }
    s.data(b"");
}

/// One `file` request and its stream for entry `e` of release `m`.
fn file_op(s: &mut Script, rng: &mut Rng, w: &World, m: &Manifest, broken: bool) {
    let e = rng.pick(&m.files);
    let body = w.contents.get(&e.path).cloned().unwrap_or_default();
    let mut req = json!({"op": "file", "path": e.path, "size": e.size, "sha256": e.sha256_hex()});
    let compressed = rng.percent(25);
    if compressed {
        req["enc"] = json!("deflate");
    }
    // Break the request or the stream.
    let bad_req = broken && rng.percent(50);
    if bad_req {
        match rng.below(9) {
            0 => req["size"] = json!(e.size + 1),
            1 => req["size"] = json!(e.size.saturating_sub(1)),
            2 => req["size"] = json!(rng.pick(&[json!(-1), json!(1.5), json!("1"), json!(null)])),
            3 => req["sha256"] = json!(rng.hex(64)),
            4 => req["sha256"] = json!(e.sha256_hex().to_uppercase()),
            5 => req["path"] = json!(rng.pick(&w.paths)),
            6 => req["offset"] = json!(rng.below(e.size as usize + 2)),
            7 => {
                req["offset"] = rng
                    .pick(&[json!(-1), json!(1.5), json!("3"), json!(u64::MAX)])
                    .clone()
            }
            _ => req["enc"] = json!(rng.pick(&["gzip", "", "DEFLATE", "zlib"])),
        }
    }
    s.req(&req.to_string());
    let offset = req["offset"].as_u64().unwrap_or(0) as usize;
    let body = &body[offset.min(body.len())..];
    let broken_stream = broken && !bad_req;
    if compressed {
        deflate_stream(s, rng, w, body, broken_stream);
    } else {
        file_stream(s, rng, w, body, broken_stream);
    }
}

/// A valid, signed `begin`, then files with wrong sizes and hashes,
/// truncated, extra, oversized or compressed data, resumes at odd offsets,
/// `staged`, `commit` (never complete: the sentinel is missing) and `abort`.
fn gen_files(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("files");
    s.hello();
    let m = rng.pick(&w.releases);
    s.signed_begin(valid_begin(rng, w, m));
    data_frames(&mut s, rng, &m.manifest_lines(), 300);
    s.data(b"");
    s.read();
    if rng.percent(30) {
        s.req(r#"{"op":"staged"}"#);
        s.read();
    }
    // Mostly correct files, then (usually) a broken one: the session
    // reaches staged files, `staged` and `commit` as well as each error.
    let n = rng.range(1, 5);
    for i in 0..n {
        let broken = (i == n - 1 && rng.percent(70)) || rng.percent(10);
        file_op(&mut s, rng, w, m, broken);
        if rng.percent(30) {
            s.read();
        }
    }
    match rng.below(4) {
        0 => s.req(r#"{"op":"commit","reset":false}"#),
        1 => s.req(r#"{"op":"abort"}"#),
        2 => s.req(r#"{"op":"staged"}"#),
        _ => {}
    }
    s.read();
    s
}

/// Two connections: one holds a push session while the other fuzzes (its
/// pushes get `busy`, its `file`, `commit`, `abort` and `staged` may not
/// touch the first one's session); then the first goes on.
fn gen_pair(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("pair");
    s.hello();
    let m = rng.pick(&w.releases);
    s.signed_begin(valid_begin(rng, w, m));
    data_frames(&mut s, rng, &m.manifest_lines(), 300);
    s.data(b"");
    s.read();
    let mut other = match rng.below(3) {
        0 => gen_requests(rng, w),
        1 => gen_begin(rng, w),
        _ => gen_files(rng, w),
    };
    if rng.percent(25) {
        other.truncate(rng);
    }
    s.steps.push(Step::Other(Box::new(other)));
    let broken = rng.percent(30);
    file_op(&mut s, rng, w, m, broken);
    s.req(r#"{"op":"staged"}"#);
    s.req(r#"{"op":"commit","reset":false}"#);
    s.read();
    s
}

/// More connections than the device serves at once (it evicts the idlest
/// one that holds no push), each left half-way through something.
fn gen_crowd(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("crowd");
    for _ in 0..rng.range(3, 7) {
        let m = rng.pick(&w.releases);
        let mut b = Vec::new();
        match rng.below(5) {
            0 => {}
            1 => b.push(Step::Send(b"uota 1\n\x01\x00\x00".to_vec())),
            2 => b.push(Step::Send(rng.some_bytes(1, 40))),
            3 => {
                // Half a push: it holds the push session.
                b.push(Step::Send(b"uota 1\n".to_vec()));
                b.push(Step::Read(15));
                let mut begin = valid_begin(rng, w, m);
                begin.intact = false;
                b.push(Step::SignedBegin(Box::new(begin)));
                let lines = m.manifest_lines();
                b.push(Step::Send(encode_to_vec(
                    FrameType::Data,
                    &lines[..lines.len() / 2],
                )));
            }
            _ => b.push(Step::Send(b"ver".to_vec())),
        }
        s.steps.push(Step::Open(b));
    }
    let mut main = if rng.percent(50) {
        gen_files(rng, w)
    } else {
        gen_requests(rng, w)
    };
    s.steps.append(&mut main.steps);
    s
}

/// One file of an OTAS container: path, size, raw SHA-256, data.
type OtasFile = (Vec<u8>, u32, [u8; 32], Vec<u8>);

/// An OTAS container (micro-ota's `stream_ota`, docs/protocol.md §6) built
/// by hand, so that lengths and paths can be anything: magic, version,
/// count, per file path, size, raw SHA-256 and data, then the HMAC-SHA256 of
/// everything after the magic under the device's key.
fn otas(version: &[u8], count: u16, files: &[OtasFile]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(version.len() as u16).to_be_bytes());
    body.extend_from_slice(version);
    body.extend_from_slice(&count.to_be_bytes());
    for (path, size, sha, data) in files {
        body.extend_from_slice(&(path.len() as u16).to_be_bytes());
        body.extend_from_slice(path);
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(sha);
        body.extend_from_slice(data);
    }
    let mut out = b"OTAS".to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&uota::auth::hmac_sha256(KEY.as_bytes(), &body));
    out
}

/// micro-ota's `stream_ota <n>` + container, with the container (or the
/// announced length) broken. Every container lists the sentinel, whose
/// bytes are wrong, so none can ever be installed.
fn gen_stream_ota(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("stream_ota");
    let m = rng.pick(&w.releases);
    let mut files: Vec<OtasFile> = m
        .files
        .iter()
        .map(|e| {
            let data = match w.contents.get(&e.path) {
                Some(d) => d.clone(),
                None => rng.bytes(e.size as usize),
            };
            (e.path.as_bytes().to_vec(), e.size as u32, e.sha256, data)
        })
        .collect();
    let sentinel = files
        .iter()
        .position(|f| f.0 == SENTINEL.as_bytes())
        .unwrap();
    let keep = rng.range(0, files.len() - 1);
    if keep < files.len() - 1 && rng.percent(50) {
        // Fewer files, the sentinel first so that it is always among them.
        files.swap(0, sentinel);
        files.truncate(keep + 1);
    }
    let mut version = m.version.as_bytes().to_vec();
    let mut count = files.len() as u16;
    for _ in 0..rng.below(3) {
        let i = rng.below(files.len());
        // The container is signed after these changes: the sentinel keeps
        // its path, or a protected name would make the device skip it and
        // install the rest.
        let rename = files[i].0 != SENTINEL.as_bytes();
        match rng.below(10) {
            0 if rename && rng.percent(30) => files[i].0 = nested_path(rng).into_bytes(),
            0 if rename => files[i].0 = rng.pick(&w.paths).as_bytes().to_vec(),
            1 if rename => files[i].0 = b"app/\xff\xfe.py".to_vec(),
            2 => files[i].1 = files[i].1.wrapping_add(1),
            3 => files[i].1 = *rng.pick(&[u32::MAX, 1 << 30]),
            4 => files[i].2 = rng.bytes(32).try_into().unwrap(),
            5 => {
                let dup = files[i].clone();
                files.push(dup);
            }
            6 => {
                version = rng
                    .pick(&[&b""[..], b"\xff", b"v\n1", &[b'9'; 300]])
                    .to_vec()
            }
            7 => count = count.wrapping_add(*rng.pick(&[1, u16::MAX])),
            8 => {
                let half = files[i].3.len() / 2;
                files[i].3.truncate(half);
            }
            _ => files[i].3.extend(rng.some_bytes(1, 9)),
        }
    }
    let mut c = otas(&version, count, &files);
    match rng.below(8) {
        0 => c[..4].copy_from_slice(b"OTAZ"),
        1 => {
            let i = rng.below(c.len());
            c[i] ^= 1 << rng.below(8);
        }
        2 => {
            let n = c.len();
            c.truncate(rng.below(n));
        }
        _ => {}
    }
    let n = match rng.below(8) {
        0 => (c.len() + 1).to_string(),
        1 => c.len().saturating_sub(1).to_string(),
        2 => rng
            .pick(&["-1", "", "x", "99999999999999999999", "0x10"])
            .to_string(),
        _ => c.len().to_string(),
    };
    s.line(format!("stream_ota {n}").as_bytes());
    s.read();
    data_chunks(&mut s, rng, &c);
    s.read();
    s
}

/// Raw bytes in pieces of random size.
fn data_chunks(s: &mut Script, rng: &mut Rng, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.range(1, 20000).min(rest.len());
        s.send(rest[..n].to_vec());
        rest = &rest[n..];
    }
}

/// micro-ota's `start_ota` session: `manifest <n>` + signed JSON (always
/// listing the sentinel), `file <path>;<size>;<sha256>` + bytes, `end_ota`
/// (which must answer that the release is incomplete) or `abort`; mutated.
fn gen_start_ota(rng: &mut Rng, w: &World) -> Script {
    let mut s = Script::new("start_ota");
    s.line(b"start_ota");
    s.read();
    let mut m = rng.pick(&w.releases).clone();
    m.sign(&w.key);
    let mut json = m.to_json().into_bytes();
    match rng.below(8) {
        0 => {
            // Sizes are not signed: the signature still holds.
            let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let p = rng.pick(&m.files).path.clone();
            v["files"][p]["size"] = rand_json_value(rng);
            json = v.to_string().into_bytes();
        }
        1 => {
            let i = rng.below(json.len());
            json[i] = rng.next() as u8;
        }
        2 => json = rand_json(rng, &w.paths, 0).into_bytes(),
        3 => {
            let d = rng.range(10, 3000);
            json = format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes();
        }
        _ => {}
    }
    let n = match rng.below(8) {
        0 => (json.len() + rng.range(1, 10)).to_string(),
        1 => json.len().saturating_sub(1).to_string(),
        2 => rng
            .pick(&["-1", "", "x", "65537", "99999999999999999999"])
            .to_string(),
        _ => json.len().to_string(),
    };
    s.line(format!("manifest {n}").as_bytes());
    s.send(json);
    s.read();
    for _ in 0..rng.range(0, 4) {
        let e = rng.pick(&m.files).clone();
        let body = w.contents.get(&e.path).cloned().unwrap_or_default();
        let mut path = e.path.clone();
        let mut size = e.size.to_string();
        let mut sha = e.sha256_hex();
        let mut data = body.clone();
        match rng.below(10) {
            0 if rng.percent(30) => path = nested_path(rng),
            0 => path = rng.pick(&w.paths).clone(),
            1 => size = rng.pick(NUMBERS).to_string(),
            2 => sha = rng.hex(64),
            3 => data.truncate(data.len() / 2),
            4 => data.extend(rng.some_bytes(1, 9)),
            5 => path = format!("{path};1"),
            _ => {}
        }
        let line = if rng.percent(10) {
            format!("file {path};{size}")
        } else {
            format!("file {path};{size};{sha}")
        };
        s.line(line.as_bytes());
        data_chunks(&mut s, rng, &data);
        if rng.percent(50) {
            s.read();
        }
    }
    match rng.below(6) {
        0 => s.line(b"abort"),
        1 => s.line(&vec![b'x'; 1100]),
        2 => s.line(b"frobnicate"),
        _ => s.line(b"end_ota"),
    }
    s.read();
    s
}

/// A random JSON value (for `serde_json` documents).
fn rand_json_value(rng: &mut Rng) -> serde_json::Value {
    match rng.below(6) {
        0 => json!(-1),
        1 => json!(1.5),
        2 => json!("12"),
        3 => json!(null),
        4 => json!(u64::MAX),
        _ => json!([1]),
    }
}

fn generate(rng: &mut Rng, w: &World, legacy: bool) -> Script {
    let mut s = if legacy && rng.percent(60) {
        if rng.percent(50) {
            gen_stream_ota(rng, w)
        } else {
            gen_start_ota(rng, w)
        }
    } else {
        match rng.below(22) {
            0..=2 => gen_lines(rng, w),
            3..=5 => gen_frames(rng, w),
            6..=10 => gen_requests(rng, w),
            11..=14 => gen_begin(rng, w),
            15..=19 => gen_files(rng, w),
            20 => gen_pair(rng, w),
            _ => gen_crowd(rng, w),
        }
    };
    if rng.percent(25) {
        s.truncate(rng);
    }
    if s.sent_len() <= 1500 && rng.percent(10) {
        s.drip(rng);
    }
    s.reset = rng.percent(30);
    s
}

// ---------------------------------------------------------------------------
// Running sessions and checking the device.

const IO_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(t: &TestDevice) -> Option<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Ok(s)) =
            tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((t.host(), t.port()))).await
        {
            s.set_nodelay(true).ok();
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Read until the device is quiet for `quiet_ms` (or closes); at most 1 s.
async fn drain(stream: &mut TcpStream, quiet_ms: u64, out: &mut Vec<u8>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 16384];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(quiet_ms), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return true,
        }
    }
    true
}

/// How the device answered a signed begin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum BeginReply {
    Accepted {
        resumed: bool,
    },
    Refused(String),
    /// No reply frame came (the session was cut, or the connection was not
    /// in frame mode).
    None,
}

/// One signed begin the runner sent, for the report and the counts.
struct BeginRecord {
    json: String,
    intent: Intent,
    reply: BeginReply,
}

/// What a session did, as the runner saw it.
#[derive(Default)]
struct Outcome {
    /// Everything the device sent, on every connection of the session.
    got: Vec<u8>,
    begins: Vec<BeginRecord>,
}

/// One connection of a session.
struct Conn {
    stream: TcpStream,
    /// What the device sent on it.
    got: Vec<u8>,
    /// Whether the device still takes bytes on it.
    open: bool,
    /// The signed begins sent on it, with where in `got` their reply starts.
    begins: Vec<(usize, BeginRecord)>,
    /// The session key and the last sequence number, once authenticated.
    binding: Option<([u8; 32], u64)>,
    /// Whether authentication was tried (once per connection).
    auth_tried: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            got: Vec::new(),
            open: true,
            begins: Vec::new(),
            binding: None,
            auth_tried: false,
        }
    }

    /// The latest hello received here, waiting a moment for a late one.
    async fn hello(&mut self) -> Option<Hello> {
        let mut hello = last_hello(&self.got);
        if hello.is_none() && self.open {
            self.open = drain(&mut self.stream, 50, &mut self.got).await;
            hello = last_hello(&self.got);
        }
        hello
    }

    /// Authenticate with the signing key (once): the device's reply is
    /// awaited, and an accepted answer binds the connection.
    async fn auth(&mut self) {
        if self.auth_tried || !self.open {
            return;
        }
        self.auth_tried = true;
        let Some(h) = self.hello().await else {
            return;
        };
        let mac = challenge_response(AuthMethod::Key, KEY.as_bytes(), &h.nonce, &h.id);
        let req = json!({"op": "auth", "mac": mac, "with": "key"}).to_string();
        let at = self.got.len();
        self.send(&encode_to_vec(FrameType::Request, req.as_bytes()))
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.open && Instant::now() < deadline {
            if let Some(v) = first_response(&self.got[at..]) {
                if v["ok"] == json!(true) {
                    self.binding = Some((session_key(KEY.as_bytes(), &h.nonce, &h.id), 0));
                }
                return;
            }
            self.open = drain(&mut self.stream, 20, &mut self.got).await;
        }
    }

    /// Send a frame whole, cut, or in drips.
    async fn send_frame(&mut self, frame: &[u8], cut: Option<usize>, drip: Option<u64>) {
        let frame = &frame[..cut.unwrap_or(usize::MAX).min(frame.len())];
        match drip {
            None => self.send(frame).await,
            Some(seed) => {
                let mut rng = Rng::new(seed);
                let mut rest = frame;
                while !rest.is_empty() {
                    let n = rng.range(1, 9).min(rest.len());
                    self.send(&rest[..n]).await;
                    if rng.percent(10) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    rest = &rest[n..];
                }
            }
        }
    }

    async fn send(&mut self, b: &[u8]) {
        if self.open {
            match tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(b)).await {
                Ok(Ok(())) => {}
                // The device closed (after an error) or stopped reading.
                _ => self.open = false,
            }
        }
    }

    /// Run a step that concerns this connection only.
    async fn step(&mut self, step: &Step) {
        match step {
            Step::Send(b) => self.send(b).await,
            Step::Read(ms) if self.open => {
                self.open = drain(&mut self.stream, *ms, &mut self.got).await;
            }
            Step::SignedBegin(b) if self.open => self.signed_begin(b).await,
            Step::Auth => self.auth().await,
            Step::Req(r) if self.open => {
                let payload = r.payload(&mut self.binding);
                let frame = encode_to_vec(FrameType::Request, &payload);
                self.send_frame(&frame, r.cut, r.drip).await;
            }
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            _ => {}
        }
    }

    /// Build, sign and send a begin for the latest hello received here
    /// (authenticating first: a device with a key takes a begin only in a
    /// session sealed with it).
    async fn signed_begin(&mut self, b: &SignedBegin) {
        self.auth().await;
        let hello = self.hello().await;
        let mut json = b.build(hello.as_ref(), &SigningKey::new(KEY));
        let intent = b.intent(hello.as_ref());
        let payload = match self.binding.as_mut() {
            Some((key, seq)) => {
                *seq += 1;
                let mdigest = sha256_hex(&b.manifest.manifest_lines());
                json = with_seq(&json, *seq, Some(&mdigest));
                seal_body(key, json.as_bytes())
            }
            None => json.clone().into_bytes(),
        };
        let frame = encode_to_vec(FrameType::Request, &payload);
        self.begins.push((
            self.got.len(),
            BeginRecord {
                json,
                intent,
                reply: BeginReply::None,
            },
        ));
        self.send_frame(&frame, b.cut, b.drip).await;
    }

    /// Close the connection (with an RST when `reset`), and add what it
    /// got, and its begins with their replies, to `out`.
    fn finish(self, reset: bool, out: &mut Outcome) {
        if reset {
            self.stream.set_zero_linger().ok();
        }
        drop(self.stream);
        for (at, mut b) in self.begins {
            b.reply = begin_reply(&self.got[at..]);
            out.begins.push(b);
        }
        out.got.extend(self.got);
    }
}

/// The device's latest hello (`uota 1 {json}`) in what it sent.
fn last_hello(got: &[u8]) -> Option<Hello> {
    let mut found = None;
    let mut from = 0;
    while let Some(i) = got[from..].windows(5).position(|w| w == b"uota ") {
        let start = from + i;
        if let Some(n) = got[start..].iter().position(|&c| c == b'\n') {
            let line = String::from_utf8_lossy(&got[start..start + n]);
            if let Ok(Some(h)) = Hello::parse(line.trim_end()) {
                found = Some(h);
            }
        }
        from = start + 1;
    }
    found
}

/// The answer to a begin: the first reply frame in `bytes`, which start
/// where the device's output stood when the begin was sent (a begin's reply
/// comes after its manifest stream; the scripts send their begins with no
/// earlier request unanswered).
fn begin_reply(bytes: &[u8]) -> BeginReply {
    match first_response(bytes) {
        Some(v) if v["ok"] == json!(true) => BeginReply::Accepted {
            resumed: v["resumed"] == json!(true),
        },
        Some(v) => BeginReply::Refused(v["err"].as_str().unwrap_or("?").to_string()),
        None => BeginReply::None,
    }
}

/// The first reply frame in `bytes` (which start at a frame boundary).
fn first_response(bytes: &[u8]) -> Option<serde_json::Value> {
    let mut decoder = FrameDecoder::new(usize::MAX);
    let mut rest = bytes;
    while let Ok(Some((f, used))) = decoder.decode_slice(rest) {
        if f.kind == FrameType::Response {
            return Some(serde_json::from_slice(&f.payload).unwrap_or_default());
        }
        rest = &rest[used..];
    }
    None
}

/// Run one session; returns what happened, or None when the device could
/// not be reached at all.
async fn run(t: &TestDevice, script: &Script) -> Option<Outcome> {
    let mut main = Conn::new(connect(t).await?);
    let mut out = Outcome::default();
    let mut extra = Vec::new();
    for step in &script.steps {
        match step {
            Step::Other(other) => {
                if let Some(o) = Box::pin(run(t, other)).await {
                    out.got.extend(o.got);
                    out.begins.extend(o.begins);
                }
            }
            Step::Open(steps) => {
                if let Some(c) = connect(t).await {
                    let mut c = Conn::new(c);
                    for s in steps {
                        c.step(s).await;
                    }
                    extra.push(c);
                }
            }
            other => main.step(other).await,
        }
    }
    main.finish(script.reset, &mut out);
    for c in extra {
        c.finish(false, &mut out);
    }
    Some(out)
}

/// Count the error codes (and resumes) in what the device sent.
fn tally(got: &[u8], hist: &mut BTreeMap<String, usize>) {
    let text = String::from_utf8_lossy(got);
    for pat in ["\"err\": \"", "\"err\":\""] {
        for (i, _) in text.match_indices(pat) {
            let rest = &text[i + pat.len()..];
            let code = rest.split('"').next().unwrap_or("");
            *hist.entry(code.to_string()).or_default() += 1;
        }
    }
    for pat in ["\"resumed\": true", "\"resumed\":true"] {
        let n = text.matches(pat).count();
        if n > 0 {
            *hist.entry("(resumed)".into()).or_default() += n;
        }
    }
    // Line-mode replies (micro-ota's sessions): the reply word, and for
    // "error: …" its first words.
    for l in text.lines() {
        let key = if l.starts_with("error: ") {
            let words: Vec<&str> = l.split_whitespace().take(3).collect();
            words.join(" ").chars().take(32).collect::<String>()
        } else if let Some(w) = ["ready", "aborted", "sig_mismatch", "sha256_mismatch"]
            .into_iter()
            .find(|w| l.starts_with(w))
        {
            w.to_string()
        } else {
            continue;
        };
        *hist.entry(format!("line {key:?}")).or_default() += 1;
    }
}

/// `ping` and `version` in line mode; the version JSON on success.
async fn alive(t: &TestDevice) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last = String::new();
    while Instant::now() < deadline {
        let Some(mut s) = connect(t).await else {
            last = "cannot connect".into();
            continue;
        };
        if s.write_all(b"ping\nversion\n").await.is_err() {
            last = "write failed".into();
            continue;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let until = Instant::now() + Duration::from_secs(3);
        while got.iter().filter(|&&b| b == b'\n').count() < 2 && Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&got).to_string();
        let mut lines = text.lines();
        if lines.next() == Some("pong") {
            if let Some(v) = lines.next() {
                return Ok(v.to_string());
            }
        }
        last = format!("unexpected reply {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Every file and folder on the device's filesystem (a host folder) with
/// its hash, except the staging area, which pushes may change.
fn disk_snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "ota_stage" || rel.starts_with("ota_stage/") {
                continue;
            }
            if p.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(root, &p, out);
            } else {
                let data = std::fs::read(&p).unwrap_or_default();
                out.insert(rel, sha256_hex(&data));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn diff_snapshots(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => out.push(format!("changed {k}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("added {k}"));
    }
    out
}

/// Hashes of every file in the device's app folders, read over the wire.
async fn wire_snapshot(t: &TestDevice) -> BTreeMap<String, String> {
    common::wire_snapshot(t, |path| {
        path.starts_with("ota_stage")
            || path.starts_with("data")
            || path == "config/.ota.secrets.json"
    })
    .await
}

fn boots(log: &str) -> usize {
    log.matches("[uota] I uota runtime").count()
}

fn hexdump(bytes: &[u8], max: usize) -> String {
    let mut s = escape(&bytes[..bytes.len().min(max)]);
    if bytes.len() > max {
        s.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    s
}

/// Bytes as text, other than printable ASCII as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes {
        if b.is_ascii_graphic() || *b == b' ' {
            s.push(*b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Push the starter project as release 1.0.0 and wait until it is confirmed,
/// so that nothing on the device changes by itself during the fuzzing.
async fn baseline(t: &TestDevice) -> Manifest {
    let cfg_path = t.project.join("config/ota.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["confirmAfter"] = 1.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let project = Project::load(&t.project).unwrap();
    let manifest = Bundle::for_project(&project, PushMode::Full)
        .unwrap()
        .into_manifest();
    let mut dev = t.connect().await;
    let opts = PushOptions {
        signing_key: project.secrets.signing_key.clone(),
        ..PushOptions::default()
    };
    dev.push(&project.root, &manifest, &opts, &mut |_| {})
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut dev = t.wait_version(VERSION).await;
        let info = dev.info().await.unwrap();
        let state = info.extra.get("release").and_then(|r| r.get("state"));
        if state.and_then(|s| s.as_str()) == Some("confirmed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "release never confirmed: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the boot's last writes settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    manifest
}

async fn max_frame(t: &TestDevice) -> usize {
    let mut s = connect(t).await.expect("device reachable");
    s.write_all(b"uota 1\n").await.unwrap();
    let mut got = Vec::new();
    drain(&mut s, 200, &mut got).await;
    let line = String::from_utf8_lossy(&got).to_string();
    let hello = uota::protocol::Hello::parse(line.trim_end())
        .unwrap()
        .expect("a uota hello");
    hello.max_frame
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

async fn fuzz(default_cases: usize, legacy: bool) {
    let started = Instant::now();
    let t = start(Setup {
        key: Some(KEY),
        legacy,
        ..Setup::default()
    })
    .await;
    assert!(t.host().starts_with("127."), "loopback only");
    let manifest = baseline(&t).await;
    let project = Project::load(&t.project).unwrap();
    let max_frame = max_frame(&t).await;
    let before_disk = disk_snapshot(&t.root);
    let before_wire = wire_snapshot(&t).await;
    let boots_before = boots(&t.log());
    let version_before = alive(&t).await.expect("device answers before fuzzing");
    assert!(version_before.contains(VERSION), "{version_before}");

    let seed = env_u64("UOTA_FUZZ_SEED").unwrap_or(SEED);
    let cases = env_u64("UOTA_FUZZ_CASES").map_or(default_cases, |n| n as usize);
    let only = env_u64("UOTA_FUZZ_CASE").map(|n| n as usize);
    // UOTA_FUZZ_VERBOSE=<n>: print every session, n bytes of each.
    let verbose = env_u64("UOTA_FUZZ_VERBOSE").map(|n| n as usize);
    let world = World::new(&manifest, &project, max_frame, &mut Rng::new(seed));
    println!(
        "device fuzzing{}: seed {seed:#x}, {cases} cases, max_frame {max_frame}, setup {:.1} s",
        if legacy { " (legacy sessions on)" } else { "" },
        started.elapsed().as_secs_f64()
    );

    let fuzz_start = Instant::now();
    let mut findings: Vec<String> = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    // Signed begins by what they were meant to be and how the device answered.
    let mut begin_replies: BTreeMap<(Intent, String), usize> = BTreeMap::new();
    let mut errors_seen = t.log().len();
    let mut logged_errors: Vec<String> = Vec::new();
    let mut run_cases = 0;
    let mut bytes_sent = 0;
    for case in 0..cases {
        if only.is_some_and(|o| o != case) {
            continue;
        }
        let mut rng = Rng::new(seed ^ (case as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let script = generate(&mut rng, &world, legacy);
        *kinds.entry(script.kind).or_default() += 1;
        run_cases += 1;
        bytes_sent += script.sent_len();
        let outcome = run(&t, &script).await;
        // The begins as the runner built them, and the answers.
        let begins_sent: String = outcome
            .iter()
            .flat_map(|o| &o.begins)
            .map(|b| format!("\n    begin ({:?}): {} -> {:?}", b.intent, b.json, b.reply))
            .collect();
        let report = |what: String| {
            format!(
                "case {case} ({}, {}): {what}\n    sent: {}{begins_sent}",
                script.kind,
                if script.reset { "RST" } else { "FIN" },
                script.describe(600)
            )
        };
        let mut problems = Vec::new();
        match &outcome {
            None => problems.push("could not connect".to_string()),
            Some(Outcome { got, begins }) => {
                tally(got, &mut replies);
                for b in begins {
                    let answer = match &b.reply {
                        BeginReply::Accepted { resumed: false } => "accepted".to_string(),
                        BeginReply::Accepted { resumed: true } => "accepted (resumed)".into(),
                        BeginReply::Refused(code) => code.clone(),
                        BeginReply::None => "(no reply)".into(),
                    };
                    *begin_replies.entry((b.intent, answer)).or_default() += 1;
                    if b.intent == Intent::Broken && matches!(b.reply, BeginReply::Accepted { .. })
                    {
                        problems.push(format!(
                            "a begin the device had to refuse was accepted: {}",
                            b.json
                        ));
                    }
                }
                if let Some(max) = verbose {
                    println!(
                        "case {case} ({}): {}{begins_sent}\n    got: {}",
                        script.kind,
                        script.describe(max),
                        hexdump(got, max)
                    );
                }
                if got.windows(KEY.len()).any(|w| w == KEY.as_bytes()) {
                    problems.push(format!(
                        "a reply carries the signing key: {}",
                        hexdump(got, 300)
                    ));
                }
            }
        }
        match alive(&t).await {
            Ok(v) if v == version_before => {}
            Ok(v) => problems.push(format!("version changed to {v}")),
            Err(e) => problems.push(format!("device stopped answering: {e}")),
        }
        let log = t.log();
        if boots(&log) != boots_before {
            problems.push("the device rebooted (crash or reset)".into());
        }
        let changed = diff_snapshots(&before_disk, &disk_snapshot(&t.root));
        if !changed.is_empty() {
            problems.push(format!("files outside staging changed: {changed:?}"));
        }
        if log.len() > errors_seen {
            // An error line and its traceback (up to the next log line).
            let mut in_error = false;
            for l in log[errors_seen..].lines() {
                if l.starts_with("[uota] E") {
                    in_error = true;
                    logged_errors.push(format!("case {case} ({}): {l}", script.kind));
                } else if in_error && !l.starts_with('[') {
                    if let Some(last) = logged_errors.last_mut() {
                        last.push_str(&format!("\n        {l}"));
                    }
                } else {
                    in_error = false;
                }
            }
            errors_seen = log.len();
        }
        if !problems.is_empty() {
            let r = report(problems.join("; "));
            println!("FINDING {r}");
            findings.push(r);
            if findings.len() >= 5 {
                println!("stopping after 5 findings");
                break;
            }
        }
    }
    let fuzz_secs = fuzz_start.elapsed().as_secs_f64();

    // The last good state, checked over the wire as a host sees it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut dev = t.connect().await;
    dev.ping().await.expect("device still answers ping");
    let version = dev
        .version()
        .await
        .expect("device still reports its version");
    if version != VERSION {
        findings.push(format!("end: version is {version}, not {VERSION}"));
    }
    let after_wire = wire_snapshot(&t).await;
    let changed = diff_snapshots(&before_wire, &after_wire);
    if !changed.is_empty() {
        findings.push(format!("end: app files changed over the wire: {changed:?}"));
    }
    let changed = diff_snapshots(&before_disk, &disk_snapshot(&t.root));
    if !changed.is_empty() {
        findings.push(format!("end: files outside staging changed: {changed:?}"));
    }

    println!(
        "sessions by kind: {kinds:?}; {bytes_sent} bytes sent in {fuzz_secs:.1} s ({:.1} cases/s)",
        run_cases as f64 / fuzz_secs
    );
    println!("error replies (and micro-ota line replies): {replies:?}");
    let accepted: usize = begin_replies
        .iter()
        .filter(|((_, a), _)| a.starts_with("accepted"))
        .map(|(_, n)| n)
        .sum();
    let mut by_answer: BTreeMap<&str, usize> = BTreeMap::new();
    for ((_, a), n) in &begin_replies {
        *by_answer.entry(a.as_str()).or_default() += n;
    }
    println!(
        "signed begins: {} sent, {accepted} accepted; by answer: {by_answer:?}",
        begin_replies.values().sum::<usize>()
    );
    for intent in [Intent::Valid, Intent::Broken, Intent::Unknown] {
        let these: BTreeMap<&str, usize> = begin_replies
            .iter()
            .filter(|((i, _), _)| *i == intent)
            .map(|((_, a), n)| (a.as_str(), *n))
            .collect();
        println!("  meant {intent:?}: {these:?}");
    }
    if !logged_errors.is_empty() {
        // Grouped by the exception (the traceback's last line): how often,
        // and the first case, with its traceback.
        let mut groups: BTreeMap<String, (usize, &String)> = BTreeMap::new();
        for e in &logged_errors {
            let exc = e.lines().last().unwrap_or("").trim().to_string();
            groups.entry(exc).or_insert((0, e)).0 += 1;
        }
        println!(
            "errors the device logged: {} (not counted as findings: the device kept \
             running; \"connection failed\" means it dropped the connection unanswered)",
            logged_errors.len()
        );
        for (exc, (n, first)) in &groups {
            println!("  {n} x {exc}; first: {first}");
        }
    }
    println!("cases: {run_cases}, findings: {}", findings.len());
    for f in &findings {
        println!("  {f}");
    }
    if !findings.is_empty() {
        println!("device log (tail):\n{}", tail(&t.log(), 60));
    }
    assert!(findings.is_empty(), "{} findings", findings.len());
    // The fuzzer must get past `begin` on a signed device: without accepted
    // begins it never reaches files, `staged`, `commit` or `abort`.
    if only.is_none() && run_cases >= 50 {
        assert!(
            accepted >= 5,
            "only {accepted} signed begins were accepted: the fuzzer lost its depth"
        );
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_survives_protocol_fuzzing() {
    fuzz(CASES, false).await;
}

/// A device with `"legacy": true` also takes micro-ota's `stream_ota` and
/// `start_ota` sessions: most of these cases are those, mutated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_device_survives_protocol_fuzzing() {
    fuzz(LEGACY_CASES, true).await;
}

/// Ten times the cases (a few minutes); `benches/fuzz.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by benches/fuzz.sh"]
async fn device_survives_long_protocol_fuzzing() {
    fuzz(CASES * 10, false).await;
}

/// Ten times the legacy cases; `benches/fuzz.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by benches/fuzz.sh"]
async fn legacy_device_survives_long_protocol_fuzzing() {
    fuzz(LEGACY_CASES * 10, true).await;
}

/// The runner's signed begins, without a device: signed for the hello's
/// nonce, id and floor; with an empty nonce when there is no hello.
#[test]
fn signed_begins_are_built_from_the_latest_hello() {
    let m = Manifest::new("1.2", vec![FileEntry::from_bytes("main.py", b"x")]).unwrap();
    let key = SigningKey::new(KEY);
    let mut got =
        br#"uota 1 {"proto": 1, "max_frame": 8192, "nonce": "aa", "id": "d1", "release": 3}"#
            .to_vec();
    got.extend_from_slice(b"\n\x02\x00\x00\x00\x02{}junk uota 2\n");
    got.extend_from_slice(
        br#"uota 1 {"proto": 1, "max_frame": 8192, "nonce": "bb", "id": "d2", "release": 4}"#,
    );
    got.push(b'\n');
    let hello = last_hello(&got).expect("a hello");
    assert_eq!((hello.nonce.as_str(), hello.id.as_str()), ("bb", "d2"));
    let mut b = SignedBegin::new(&m, ReleaseChoice::Next);
    let v: serde_json::Value = serde_json::from_str(&b.build(Some(&hello), &key)).unwrap();
    let claims = ReleaseClaims {
        release: 5,
        rollback: false,
        mode: PushMode::Full,
        runtime: false,
        nonce: "bb".into(),
        device: "d2".into(),
        compat: Compat::default(),
    };
    assert_eq!(v["sig"], json!(claims.sign(&m, &key).unwrap()));
    assert_eq!(
        (v["release"].clone(), v["device"].clone()),
        (json!(5), json!("d2"))
    );
    assert_eq!(b.intent(Some(&hello)), Intent::Valid);
    b.edits.push(BeginEdit::RawRelease("1.0"));
    assert!(b.build(Some(&hello), &key).contains(r#""release":1.0"#));
    assert_eq!(b.intent(Some(&hello)), Intent::Broken);
    // No hello: an empty nonce and device id, which no device accepts.
    assert!(last_hello(b"uota 1 {garbage\n").is_none());
    let b = SignedBegin::new(&m, ReleaseChoice::Floor);
    let v: serde_json::Value = serde_json::from_str(&b.build(None, &key)).unwrap();
    assert_eq!(
        (v["release"].clone(), v["device"].clone()),
        (json!(0), json!(""))
    );
    assert_eq!(b.intent(None), Intent::Broken);
    // The reply is the first RES frame after the begin.
    let mut reply = encode_to_vec(FrameType::Data, b"x");
    reply.extend(encode_to_vec(
        FrameType::Response,
        br#"{"ok": false, "err": "downgrade"}"#,
    ));
    assert_eq!(begin_reply(&reply), BeginReply::Refused("downgrade".into()));
    assert_eq!(begin_reply(b"unknown\n"), BeginReply::None);
}
