//! The host side of micro-ota's push protocol, sans-IO.
//!
//! Used against devices running micro-ota's own runtime, and against uota
//! devices configured with `"legacy": true` (`docs/protocol.md` section 6).
//! Nothing here touches a socket: the functions build the bytes to send and
//! parse the reply lines received.
//!
//! Two sessions exist:
//!
//! * `stream_ota <n>` → `ready`, then one binary container built with
//!   [`OtasEncoder`] (its length from [`container_len`]) → `ok`;
//! * `start_ota` → `ready`; [`manifest_header`] + manifest JSON → `ok`; per
//!   file [`file_line`] + bytes → `ok`; [`end_ota_line`] → `ok`.
//!
//! When the device has a password, the first line of a connection is the
//! plaintext password ([`password_line`]); the device answers `ok` or `denied`.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{HmacSha256, Password, SigningKey};
use crate::error::{Error, Result};
use crate::manifest::{validate_device_path, FileEntry};

/// The 4-byte magic that opens an OTAS container (not covered by the HMAC).
pub const OTAS_MAGIC: &[u8; 4] = b"OTAS";
/// Length of the container's trailer (HMAC-SHA256 or zeros).
pub const TRAILER_LEN: usize = 32;
/// Longest reply line quoted in an error message.
const MAX_QUOTED_REPLY: usize = 200;

/// Builds a micro-ota `stream_ota` container piece by piece, so that file data
/// can stream from disk without being held in memory.
///
/// Layout (big-endian integers): `"OTAS"`, `u16` version length, version,
/// `u16` file count; per file `u16` path length, path, `u32` size, 32-byte
/// raw SHA-256, then `size` bytes of data; finally a 32-byte trailer, the
/// HMAC-SHA256 of everything after the magic under the signing key, or 32
/// zero bytes without a key.
///
/// Call [`header`](OtasEncoder::header) once, then for each file
/// [`file_header`](OtasEncoder::file_header) and [`data`](OtasEncoder::data)
/// for each chunk (the caller sends the chunk itself), then
/// [`trailer`](OtasEncoder::trailer).
#[derive(Debug)]
pub struct OtasEncoder {
    mac: Option<HmacSha256>,
}

impl OtasEncoder {
    /// A new encoder; with `signing_key` the trailer is an HMAC under it.
    pub fn new(signing_key: Option<&SigningKey>) -> Self {
        OtasEncoder {
            mac: signing_key.map(SigningKey::mac),
        }
    }

    fn absorb(&mut self, bytes: &[u8]) {
        if let Some(mac) = &mut self.mac {
            mac.update(bytes);
        }
    }

    /// The container's opening bytes: magic, version and file count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the version is longer than 65535 bytes.
    pub fn header(&mut self, version: &str, count: u16) -> Result<Vec<u8>> {
        let version_len = u16_len(version, "version")?;
        let mut out = Vec::with_capacity(4 + 2 + version.len() + 2);
        out.extend_from_slice(OTAS_MAGIC);
        out.extend_from_slice(&version_len.to_be_bytes());
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        self.absorb(&out[OTAS_MAGIC.len()..]);
        Ok(out)
    }

    /// The header of one file: path, size and raw SHA-256. Its data follows.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPath`] for an invalid device path,
    /// [`Error::InvalidArgument`] for a size above `u32::MAX`.
    pub fn file_header(&mut self, entry: &FileEntry) -> Result<Vec<u8>> {
        validate_device_path(&entry.path)?;
        let path_len = u16_len(&entry.path, "path")?;
        let size = file_size_u32(entry)?;
        let mut out = Vec::with_capacity(2 + entry.path.len() + 4 + 32);
        out.extend_from_slice(&path_len.to_be_bytes());
        out.extend_from_slice(entry.path.as_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&entry.sha256);
        self.absorb(&out);
        Ok(out)
    }

    /// Fold a chunk of file data into the trailer's HMAC. The caller sends
    /// the chunk itself, right after the file's header.
    pub fn data(&mut self, chunk: &[u8]) {
        self.absorb(chunk);
    }

    /// The 32-byte trailer that ends the container.
    pub fn trailer(self) -> [u8; 32] {
        match self.mac {
            Some(mac) => mac.finalize(),
            None => [0u8; TRAILER_LEN],
        }
    }
}

fn u16_len(s: &str, what: &str) -> Result<u16> {
    u16::try_from(s.len()).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} is {} bytes long; the stream_ota container allows at most 65535",
            s.len()
        ))
    })
}

fn file_size_u32(entry: &FileEntry) -> Result<u32> {
    u32::try_from(entry.size).map_err(|_| {
        Error::InvalidArgument(format!(
            "{} is {} bytes; the stream_ota container allows at most 4 GiB - 1 per file",
            entry.path, entry.size
        ))
    })
}

/// Total length in bytes of the container for `version` and `files`, the `n`
/// of the `stream_ota <n>` line.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for more than 65535 files, a version or path
/// longer than 65535 bytes, or a file larger than `u32::MAX` bytes.
pub fn container_len(version: &str, files: &[FileEntry]) -> Result<u64> {
    u16::try_from(files.len()).map_err(|_| {
        Error::InvalidArgument(format!(
            "{} files; the stream_ota container allows at most 65535",
            files.len()
        ))
    })?;
    u16_len(version, "version")?;
    let mut total = (OTAS_MAGIC.len() + 2 + version.len() + 2 + TRAILER_LEN) as u64;
    for entry in files {
        u16_len(&entry.path, "path")?;
        file_size_u32(entry)?;
        total += (2 + entry.path.len() + 4 + 32) as u64 + entry.size;
    }
    Ok(total)
}

/// `stream_ota <len>\n`: opens a binary push of a container of `len` bytes.
pub fn stream_ota_line(len: u64) -> String {
    format!("stream_ota {len}\n")
}

/// `start_ota\n`: opens a line-based push session.
pub fn start_ota_line() -> String {
    "start_ota\n".to_string()
}

/// `manifest <n>\n`: announces `json_len` bytes of manifest JSON in a `start_ota` session.
pub fn manifest_header(json_len: usize) -> String {
    format!("manifest {json_len}\n")
}

/// `file <path>;<size>;<sha256hex>\n`: announces one file's bytes in a `start_ota` session.
///
/// # Errors
///
/// [`Error::InvalidPath`] for an invalid device path or one holding `;`,
/// which the line format cannot carry.
pub fn file_line(entry: &FileEntry) -> Result<String> {
    validate_device_path(&entry.path)?;
    if entry.path.contains(';') {
        return Err(Error::InvalidPath {
            path: entry.path.clone(),
            reason: "micro-ota's file line cannot carry ';'".into(),
        });
    }
    Ok(format!(
        "file {};{};{}\n",
        entry.path,
        entry.size,
        entry.sha256_hex()
    ))
}

/// `end_ota\n`: commits a `start_ota` session.
pub fn end_ota_line() -> String {
    "end_ota\n".to_string()
}

/// `abort\n`: abandons a `start_ota` session.
pub fn abort_line() -> String {
    "abort\n".to_string()
}

/// The plaintext password line a micro-ota device expects first on a connection.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when the password holds a line break.
pub fn password_line(password: &Password) -> Result<String> {
    let pw = password.expose();
    if pw.contains(['\n', '\r']) {
        return Err(Error::InvalidArgument(
            "a micro-ota password cannot contain line breaks".into(),
        ));
    }
    Ok(format!("{pw}\n"))
}

/// The device path of micro-ota's device config.
pub const DEVICE_CONFIG: &str = "config/ota.json";

/// The `config/ota.json` bytes to send to a micro-ota device in place of
/// the project's `original`, as micro-ota's own CLI does (its device reads
/// its auth from that file, so a config pushed as it is in the project would
/// leave the device without a password or key): `signingKey` set to `key`,
/// `otaPassword` set to the lowercase hex SHA-256 of `password`.
///
/// Everything else is kept byte for byte: the other keys, their order and
/// the formatting; an existing value is replaced where it stands, a missing
/// key is added after the last one, in the object's own style. `None` when
/// neither a password nor a key is given (an empty one counts as none): the
/// file goes out unchanged, as micro-ota's CLI sends it then.
///
/// # Errors
///
/// [`Error::Config`] when `original` is not a JSON object: pushing it as it
/// is would take the device's password and key away.
pub fn device_config(
    original: &[u8],
    password: Option<&Password>,
    key: Option<&SigningKey>,
) -> Result<Option<Vec<u8>>> {
    let key = key.filter(|k| !k.is_empty());
    let password = password.filter(|p| !p.is_empty());
    if key.is_none() && password.is_none() {
        return Ok(None);
    }
    let bad = |message: String| Error::Config {
        path: DEVICE_CONFIG.into(),
        message,
    };
    let text = std::str::from_utf8(original).map_err(|_| bad("not valid UTF-8".into()))?;
    let members: TopLevel<'_> =
        serde_json::from_str(text).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    // micro-ota's order: signingKey, then otaPassword.
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(k) = key {
        set.push(("signingKey", json_string(k.expose())));
    }
    if let Some(p) = password {
        let hash = crate::auth::sha256_hex(p.expose().as_bytes());
        set.push(("otaPassword", json_string(&hash)));
    }
    let span = |raw: &serde_json::value::RawValue| {
        let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        start..start + raw.get().len()
    };
    // (where, how many bytes it replaces, the new text), in text order.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (name, raw) in &members.0 {
        if let Some((_, value)) = set.iter().find(|(n, _)| n == name) {
            let r = span(raw);
            edits.push((r.start, r.len(), value.clone()));
        }
    }
    let missing: Vec<&(&str, String)> = set
        .iter()
        .filter(|(n, _)| !members.0.iter().any(|(m, _)| m == n))
        .collect();
    if !missing.is_empty() {
        let open = text.find('{').expect("a JSON object has a brace");
        match members.0.first() {
            None => {
                // `{}` (with any whitespace inside): written anew.
                let close = text.rfind('}').expect("a JSON object has a brace");
                let body: Vec<String> = missing
                    .iter()
                    .map(|(n, v)| format!("{}: {v}", json_string(n)))
                    .collect();
                edits.push((open, close + 1 - open, format!("{{{}}}", body.join(", "))));
            }
            Some((_, first)) => {
                let first = span(first);
                // What separates a key from its value (`: `, `:` …) and
                // the whitespace before a key that follows a comma, copied
                // from the object's own members.
                let before = text[..first.start].trim_end();
                let colon = before.len() - 1; // the `:` (serde checked it)
                let ws_before = before[..colon].len() - before[..colon].trim_end().len();
                let sep = &text[colon - ws_before..first.start];
                let indent = if members.0.len() >= 2 {
                    let after = &text[first.end..];
                    let rest = &after[after.find(',').expect("members are comma-separated") + 1..];
                    &rest[..rest.find('"').unwrap_or(0)]
                } else {
                    let inner = &text[open + 1..];
                    let lead = &inner[..inner.find('"').unwrap_or(0)];
                    if lead.contains('\n') {
                        lead
                    } else if sep.ends_with(' ') {
                        " "
                    } else {
                        ""
                    }
                };
                let last = span(members.0.last().expect("not empty").1);
                let mut add = String::new();
                for (n, v) in &missing {
                    add.push(',');
                    add.push_str(indent);
                    add.push_str(&json_string(n));
                    add.push_str(sep);
                    add.push_str(v);
                }
                edits.push((last.end, 0, add));
            }
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len() + 128);
    let mut at = 0;
    for (start, len, new) in edits {
        out.push_str(&text[at..start]);
        out.push_str(&new);
        at = start + len;
    }
    out.push_str(&text[at..]);
    debug_assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_ok(),
        "{out}"
    );
    Ok(Some(out.into_bytes()))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The members of a JSON object, in order, each value as its raw text.
struct TopLevel<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = TopLevel<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry()? {
                    out.push(member);
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(Members)
    }
}

/// A successful micro-ota reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// `ok` (also the UART transport's `UOTA_OK`): the step succeeded.
    Ok,
    /// `ready`: the device awaits the session's data.
    Ready,
    /// `pong`: the answer to `ping`.
    Pong,
    /// `aborted`: the answer to `abort`; the staging area is gone.
    Aborted,
}

/// Parse a reply line from a micro-ota device (see [`parse_reply_to`]).
pub fn parse_reply(line: &str) -> Result<Reply> {
    parse_reply_to("micro-ota request", line)
}

/// Parse a micro-ota reply line to the request `op` (named in errors).
///
/// # Errors
///
/// * `denied` → [`Error::Auth`];
/// * `sig_mismatch` → [`Error::SignatureMismatch`];
/// * `sha256_mismatch <path>…` and `error: SHA256 mismatch: <path>` → [`Error::HashMismatch`];
/// * `error`, `error: <text>` and `[ERR] <text>` → [`Error::Device`] with code `error`;
/// * `unknown` → [`Error::Device`] with code `unknown` (the device does not
///   know the command, e.g. an old micro-ota without `stream_ota`);
/// * anything else → [`Error::Protocol`].
pub fn parse_reply_to(op: &str, line: &str) -> Result<Reply> {
    let line = line.trim();
    match line {
        "ok" | "UOTA_OK" => return Ok(Reply::Ok),
        "ready" => return Ok(Reply::Ready),
        "pong" => return Ok(Reply::Pong),
        "aborted" => return Ok(Reply::Aborted),
        "denied" => {
            return Err(Error::Auth(
                "denied: the device rejected the OTA password".into(),
            ))
        }
        "sig_mismatch" => return Err(Error::from_device(op, "sig_mismatch", "")),
        "unknown" => {
            return Err(Error::Device {
                op: op.to_string(),
                code: "unknown".into(),
                message: "the device does not know this command".into(),
            })
        }
        "error" => return Err(Error::from_device(op, "error", "")),
        _ => {}
    }
    if let Some(rest) = line.strip_prefix("sha256_mismatch ") {
        // The serial server appends ` got=<hex> exp=<hex>`.
        let path = rest.split(" got=").next().unwrap_or(rest).trim();
        return Err(Error::from_device(op, "sha256_mismatch", path));
    }
    if let Some(text) = line.strip_prefix("error:") {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("SHA256 mismatch:") {
            return Err(Error::from_device(op, "sha256_mismatch", path.trim()));
        }
        return Err(Error::from_device(op, "error", text));
    }
    if let Some(text) = line.strip_prefix("[ERR]") {
        return Err(Error::from_device(op, "error", text.trim()));
    }
    Err(Error::Protocol(format!(
        "unexpected reply to {op} from a micro-ota device: {:?}",
        truncate(line, MAX_QUOTED_REPLY)
    )))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The files a micro-ota device lists in its `/ota_manifest.json`
/// (`{"files": {path: {"size": N, "sha256": hex}}}`), as path → (size,
/// sha256 hex); `None` for anything else (then a push sends every file).
pub fn parse_installed(json: &[u8]) -> Option<BTreeMap<String, (u64, String)>> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let files = value.get("files")?.as_object()?;
    let mut out = BTreeMap::new();
    for (path, entry) in files {
        let size = entry.get("size")?.as_u64()?;
        let sha = entry.get("sha256")?.as_str()?.to_ascii_lowercase();
        out.insert(path.clone(), (size, sha));
    }
    Some(out)
}

/// The paths of `files` that a device holding `installed` lacks or holds
/// with other bytes: what a `start_ota` session must send.
pub fn changed_files(
    files: &[FileEntry],
    installed: &BTreeMap<String, (u64, String)>,
) -> BTreeSet<String> {
    files
        .iter()
        .filter(|f| {
            installed
                .get(&f.path)
                .is_none_or(|(size, sha)| *size != f.size || *sha != f.sha256_hex())
        })
        .map(|f| f.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hmac_sha256, sha256};
    use crate::error::ErrorKind;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry::from_bytes(path, data)
    }

    /// Run the encoder over `files`, feeding data in small uneven chunks.
    fn encode(key: Option<&SigningKey>, version: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut enc = OtasEncoder::new(key);
        let mut out = enc.header(version, files.len() as u16).unwrap();
        for (path, data) in files {
            out.extend(enc.file_header(&entry(path, data)).unwrap());
            for chunk in data.chunks(3) {
                enc.data(chunk);
                out.extend_from_slice(chunk);
            }
        }
        out.extend_from_slice(&enc.trailer());
        out
    }

    /// The expected container for version "1.2" with `a.py` = "hi" and
    /// `app/m.py` = "xyz", assembled by hand from the layout in micro-ota.md §4.4.
    fn hand_assembled_body() -> Vec<u8> {
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(&[0x00, 0x03]); // version length
        b.extend_from_slice(b"1.2");
        b.extend_from_slice(&[0x00, 0x02]); // file count
        b.extend_from_slice(&[0x00, 0x04]); // path length
        b.extend_from_slice(b"a.py");
        b.extend_from_slice(&[0x00, 0x00, 0x00, 0x02]); // size
        b.extend_from_slice(
            &hex::decode("8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4")
                .unwrap(),
        ); // sha256("hi")
        b.extend_from_slice(b"hi");
        b.extend_from_slice(&[0x00, 0x08]);
        b.extend_from_slice(b"app/m.py");
        b.extend_from_slice(&[0x00, 0x00, 0x00, 0x03]);
        b.extend_from_slice(&sha256(b"xyz"));
        b.extend_from_slice(b"xyz");
        b
    }

    #[test]
    fn container_without_key_matches_hand_assembled_bytes() {
        let files: [(&str, &[u8]); 2] = [("a.py", b"hi"), ("app/m.py", b"xyz")];
        let got = encode(None, "1.2", &files);
        let mut expected = b"OTAS".to_vec();
        expected.extend(hand_assembled_body());
        expected.extend_from_slice(&[0u8; 32]);
        assert_eq!(got, expected);
        let entries: Vec<FileEntry> = files.iter().map(|(p, d)| entry(p, d)).collect();
        assert_eq!(
            container_len("1.2", &entries).unwrap(),
            expected.len() as u64
        );
        assert_eq!(stream_ota_line(expected.len() as u64), "stream_ota 136\n");
    }

    #[test]
    fn container_with_key_ends_in_hmac_of_everything_after_magic() {
        let key = SigningKey::new("s3cret");
        let files: [(&str, &[u8]); 2] = [("a.py", b"hi"), ("app/m.py", b"xyz")];
        let got = encode(Some(&key), "1.2", &files);
        let body = hand_assembled_body();
        let mut expected = b"OTAS".to_vec();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(&hmac_sha256(b"s3cret", &body));
        assert_eq!(got, expected);
        // The magic is not covered: the HMAC over magic + body differs.
        let mut with_magic = b"OTAS".to_vec();
        with_magic.extend_from_slice(&body);
        assert_ne!(
            &got[got.len() - 32..],
            &hmac_sha256(b"s3cret", &with_magic)[..]
        );
    }

    #[test]
    fn empty_container() {
        let mut enc = OtasEncoder::new(None);
        let head = enc.header("", 0).unwrap();
        assert_eq!(head, b"OTAS\x00\x00\x00\x00");
        assert_eq!(enc.trailer(), [0u8; 32]);
        assert_eq!(container_len("", &[]).unwrap(), 8 + 32);
    }

    #[test]
    fn limits_are_enforced() {
        let mut enc = OtasEncoder::new(None);
        let long = "v".repeat(70_000);
        assert_eq!(
            enc.header(&long, 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let big = FileEntry {
            path: "big.bin".into(),
            size: u64::from(u32::MAX) + 1,
            sha256: [0; 32],
        };
        assert_eq!(
            enc.file_header(&big).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(container_len("1", std::slice::from_ref(&big)).is_err());
        let max = FileEntry {
            size: u64::from(u32::MAX),
            ..big.clone()
        };
        assert_eq!(&enc.file_header(&max).unwrap()[9..13], &[0xff; 4]);
        let bad = FileEntry {
            path: "../x".into(),
            ..max.clone()
        };
        assert_eq!(
            enc.file_header(&bad).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        let many: Vec<FileEntry> = (0..65_536).map(|i| entry(&format!("f{i}"), b"")).collect();
        assert!(container_len("1", &many).is_err());
        assert!(container_len("1", &many[..65_535]).is_ok());
    }

    #[test]
    fn line_builders() {
        let e = entry("app/x.py", b"abc");
        assert_eq!(start_ota_line(), "start_ota\n");
        assert_eq!(manifest_header(123), "manifest 123\n");
        assert_eq!(
            file_line(&e).unwrap(),
            "file app/x.py;3;ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        );
        assert_eq!(end_ota_line(), "end_ota\n");
        assert_eq!(abort_line(), "abort\n");
        assert_eq!(stream_ota_line(0), "stream_ota 0\n");
        assert_eq!(
            file_line(&entry("a;b", b"")).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        assert_eq!(
            file_line(&entry("a\nb", b"")).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        assert_eq!(
            file_line(&entry("/etc", b"")).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        assert_eq!(password_line(&Password::new("pw")).unwrap(), "pw\n");
        assert!(password_line(&Password::new("p\nw")).is_err());
    }

    #[test]
    fn replies_map_to_results() {
        assert_eq!(parse_reply("ok").unwrap(), Reply::Ok);
        assert_eq!(parse_reply("ok\r\n").unwrap(), Reply::Ok);
        assert_eq!(parse_reply("UOTA_OK").unwrap(), Reply::Ok);
        assert_eq!(parse_reply("ready\n").unwrap(), Reply::Ready);
        assert_eq!(parse_reply("pong").unwrap(), Reply::Pong);
        assert_eq!(parse_reply("aborted").unwrap(), Reply::Aborted);

        assert!(matches!(parse_reply("denied"), Err(Error::Auth(_))));
        assert!(matches!(
            parse_reply("sig_mismatch"),
            Err(Error::SignatureMismatch(_))
        ));
        match parse_reply("sha256_mismatch app/x.py") {
            Err(Error::HashMismatch { path }) => assert_eq!(path, "app/x.py"),
            other => panic!("{other:?}"),
        }
        match parse_reply("sha256_mismatch app/y.py got=00 exp=11") {
            Err(Error::HashMismatch { path }) => assert_eq!(path, "app/y.py"),
            other => panic!("{other:?}"),
        }
        match parse_reply("error: SHA256 mismatch: app/z.py") {
            Err(Error::HashMismatch { path }) => assert_eq!(path, "app/z.py"),
            other => panic!("{other:?}"),
        }
        match parse_reply_to("stream_ota", "error: bad magic") {
            Err(Error::Device { op, code, message }) => {
                assert_eq!(
                    (op.as_str(), code.as_str(), message.as_str()),
                    ("stream_ota", "error", "bad magic")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_reply("error"), Err(Error::Device { ref code, .. }) if code == "error")
        );
        assert!(
            matches!(parse_reply("[ERR] recv timeout"), Err(Error::Device { ref message, .. }) if message == "recv timeout")
        );
        assert!(
            matches!(parse_reply("unknown"), Err(Error::Device { ref code, .. }) if code == "unknown")
        );
        assert!(matches!(parse_reply(""), Err(Error::Protocol(_))));
        let long = "x".repeat(1000);
        match parse_reply(&long) {
            Err(Error::Protocol(m)) => assert!(m.len() < 400),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_reply("é".repeat(150).as_str()),
            Err(Error::Protocol(_))
        ));
    }

    // sha256("pw"), as micro-ota's CLI writes it.
    const PW_HASH: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

    fn transform(original: &str, pw: Option<&str>, key: Option<&str>) -> Option<String> {
        let pw = pw.map(Password::new);
        let key = key.map(SigningKey::new);
        device_config(original.as_bytes(), pw.as_ref(), key.as_ref())
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_pushed_config_carries_the_key_and_the_password_hash() {
        assert_eq!(crate::auth::sha256_hex(b"pw"), PW_HASH);
        // Missing keys go after the last one, in the file's own style.
        let pretty = "{\n  \"version\": \"1.0.0\",\n  \"port\": 2018,\n  \"transports\": [\n    \"wifi_tcp\"\n  ]\n}\n";
        assert_eq!(
            transform(pretty, Some("pw"), Some("k3y")).unwrap(),
            format!(
                "{{\n  \"version\": \"1.0.0\",\n  \"port\": 2018,\n  \"transports\": [\n    \"wifi_tcp\"\n  ],\n  \"signingKey\": \"k3y\",\n  \"otaPassword\": \"{PW_HASH}\"\n}}\n"
            )
        );
        // Present ones are replaced where they stand; nothing else moves.
        let python =
            "{\n    \"otaPassword\": \"\",\n    \"ssid\": \"x\",\n    \"signingKey\" : \"old\"\n}";
        assert_eq!(
            transform(python, Some("pw"), Some("k\"ey")).unwrap(),
            format!("{{\n    \"otaPassword\": \"{PW_HASH}\",\n    \"ssid\": \"x\",\n    \"signingKey\" : \"k\\\"ey\"\n}}")
        );
        // Compact, one of the two present.
        assert_eq!(
            transform("{\"b\":1,\"otaPassword\":null}", Some("pw"), Some("k")).unwrap(),
            format!("{{\"b\":1,\"otaPassword\":\"{PW_HASH}\",\"signingKey\":\"k\"}}")
        );
        // Only a password: the key is left as the file has it.
        assert_eq!(
            transform("{\"signingKey\": \"\"}", Some("pw"), None).unwrap(),
            format!("{{\"signingKey\": \"\", \"otaPassword\": \"{PW_HASH}\"}}")
        );
        assert_eq!(
            transform(" { } ", None, Some("k")).unwrap(),
            " {\"signingKey\": \"k\"} "
        );
        // Neither (or empty ones): sent as it is.
        assert_eq!(transform("{\"a\": 1}", None, None), None);
        assert_eq!(transform("{\"a\": 1}", Some(""), Some("")), None);
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        for bad in ["[1]", "{\"a\": }", "", "\"x\"", "{\"a\":1} x"] {
            let err = device_config(bad.as_bytes(), Some(&Password::new("pw")), None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
        }
        let err =
            device_config(b"{\"a\":\"\xff\"}", None, Some(&SigningKey::new("k"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        // Unicode escapes and nested objects survive untouched.
        let text = "{\"n\": {\"signingKey\": \"inner\"}, \"s\": \"\\u00e9\"}";
        let out = transform(text, None, Some("k")).unwrap();
        assert_eq!(
            out,
            "{\"n\": {\"signingKey\": \"inner\"}, \"s\": \"\\u00e9\", \"signingKey\": \"k\"}"
        );
    }

    #[test]
    fn the_installed_manifest_is_read_and_compared() {
        let a = FileEntry::from_bytes("main.py", b"print(1)\n");
        let b = FileEntry::from_bytes("app/x.py", b"x = 1\n");
        let json = format!(
            r#"{{"version": "1.0.0", "files": {{"main.py": {{"size": {}, "sha256": "{}"}}, "app/x.py": {{"size": 6, "sha256": "{}"}}}}}}"#,
            a.size,
            a.sha256_hex().to_uppercase(),
            "0".repeat(64)
        );
        let installed = parse_installed(json.as_bytes()).expect("parsed");
        assert_eq!(installed.len(), 2);
        let changed = changed_files(&[a, b], &installed);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec!["app/x.py"]);
        assert!(parse_installed(b"not json").is_none());
        assert!(parse_installed(br#"{"files": {"a": {"size": "1"}}}"#).is_none());
    }
}
