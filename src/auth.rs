//! Hashing, signing and authentication primitives.
//!
//! Everything here is pure computation over bytes: SHA-256 digests, HMAC-SHA256
//! signatures, the password verifier a device stores, and the answer to a
//! device's authentication challenge (see `docs/protocol.md`, section 3).
//!
//! Secrets are carried in [`SigningKey`] and [`Password`], whose `Debug` output
//! never shows their contents, so they can sit inside structs that get logged.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The prefix of the message a host MACs to answer a device's challenge.
pub const AUTH_CONTEXT: &str = "uota-auth:";

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// HMAC-SHA256 of `msg` under `key` (any key length).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new(key);
    mac.update(msg);
    mac.finalize()
}

/// An HMAC-SHA256 computed incrementally, for data that arrives in pieces.
///
/// ```
/// use uota::auth::{hmac_sha256, HmacSha256};
/// let mut mac = HmacSha256::new(b"key");
/// mac.update(b"hello ");
/// mac.update(b"world");
/// assert_eq!(mac.finalize(), hmac_sha256(b"key", b"hello world"));
/// ```
#[derive(Clone)]
pub struct HmacSha256(Hmac<Sha256>);

impl HmacSha256 {
    /// Start a MAC keyed with `key`.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of every length, so this never fails.
        let inner =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        HmacSha256(inner)
    }

    /// Feed more bytes into the MAC.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Finish and return the 32-byte tag.
    pub fn finalize(self) -> [u8; 32] {
        self.0.finalize().into_bytes().into()
    }
}

impl fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSha256(<keyed>)")
    }
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The verifier a device stores instead of the password: the lowercase hex
/// SHA-256 of the password's UTF-8 bytes (micro-ota's `otaPassword` format).
pub fn password_verifier(password: &str) -> String {
    sha256_hex(password.as_bytes())
}

/// The host's answer to a device's authentication challenge.
///
/// Returns the lowercase hex HMAC-SHA256 keyed with the raw verifier bytes
/// (the hex `verifier_hex` decoded) over `"uota-auth:" + nonce`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when `verifier_hex` is not 64 hex digits.
pub fn challenge_response(verifier_hex: &str, nonce: &str) -> Result<String> {
    let key = decode_verifier(verifier_hex)?;
    let mut mac = HmacSha256::new(&key);
    mac.update(AUTH_CONTEXT.as_bytes());
    mac.update(nonce.as_bytes());
    Ok(hex::encode(mac.finalize()))
}

fn decode_verifier(verifier_hex: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(verifier_hex, &mut out).map_err(|_| {
        Error::InvalidArgument(
            "a password verifier must be 64 hex digits (the SHA-256 of the password)".into(),
        )
    })?;
    Ok(out)
}

/// A release-signing key (micro-ota's `signingKey`).
///
/// Its bytes are the UTF-8 bytes of the configured string, as in micro-ota.
/// `Debug` prints `SigningKey(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(String);

impl SigningKey {
    /// Wrap a key string.
    pub fn new(key: impl Into<String>) -> Self {
        SigningKey(key.into())
    }

    /// The key bytes used for HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The key as configured. Handle with care: this is the secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the key is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// HMAC-SHA256 of `msg` under this key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 32] {
        hmac_sha256(self.as_bytes(), msg)
    }

    /// An incremental HMAC-SHA256 keyed with this key.
    pub fn mac(&self) -> HmacSha256 {
        HmacSha256::new(self.as_bytes())
    }
}

impl FromStr for SigningKey {
    type Err = Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(SigningKey::new(s))
    }
}

impl From<String> for SigningKey {
    fn from(s: String) -> Self {
        SigningKey(s)
    }
}

impl From<&str> for SigningKey {
    fn from(s: &str) -> Self {
        SigningKey(s.to_string())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// A device password in plaintext (micro-ota's `otaPassword` in the secrets file).
///
/// Only its [verifier](Password::verifier) ever goes to a uota device.
/// `Debug` prints `Password(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wrap a plaintext password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The plaintext, needed only for micro-ota's legacy password line.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the password is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lowercase hex SHA-256 the device stores (see [`password_verifier`]).
    pub fn verifier(&self) -> String {
        password_verifier(&self.0)
    }

    /// The answer to a device challenge carrying `nonce` (see [`challenge_response`]).
    pub fn challenge_response(&self, nonce: &str) -> String {
        let key = sha256(self.0.as_bytes());
        let mut mac = HmacSha256::new(&key);
        mac.update(AUTH_CONTEXT.as_bytes());
        mac.update(nonce.as_bytes());
        hex::encode(mac.finalize())
    }
}

impl FromStr for Password {
    type Err = Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Password::new(s))
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Password(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Password(s.to_string())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn sha256_known_values() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256(b"abc").to_vec(), unhex(&sha256_hex(b"abc")));
    }

    #[test]
    fn hmac_rfc4231_case_1() {
        let key = [0x0bu8; 20];
        assert_eq!(
            hmac_sha256(&key, b"Hi There").to_vec(),
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn hmac_rfc4231_case_6_long_key() {
        let key = [0xaau8; 131];
        assert_eq!(
            hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .to_vec(),
            unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn incremental_hmac_matches_one_shot() {
        let mut mac = SigningKey::new("Jefe").mac();
        for piece in [&b"what do ya"[..], b" want ", b"", b"for nothing?"] {
            mac.update(piece);
        }
        assert_eq!(
            mac.finalize(),
            hmac_sha256(b"Jefe", b"what do ya want for nothing?")
        );
    }

    #[test]
    fn constant_time_eq_behaves() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn verifier_is_sha256_hex_of_password() {
        assert_eq!(password_verifier("abc"), sha256_hex(b"abc"));
        assert_eq!(Password::new("abc").verifier(), password_verifier("abc"));
        let v = password_verifier("pässword");
        assert_eq!(v.len(), 64);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn challenge_response_keyed_with_raw_verifier() {
        let verifier = password_verifier("secret");
        let nonce = "00112233445566778899aabbccddeeff";
        let expected = hex::encode(hmac_sha256(
            &sha256(b"secret"),
            format!("uota-auth:{nonce}").as_bytes(),
        ));
        assert_eq!(challenge_response(&verifier, nonce).unwrap(), expected);
        assert_eq!(
            challenge_response(&verifier.to_uppercase(), nonce).unwrap(),
            expected
        );
        assert_eq!(Password::new("secret").challenge_response(nonce), expected);
        // A different nonce gives a different answer.
        assert_ne!(challenge_response(&verifier, "other").unwrap(), expected);
    }

    #[test]
    fn challenge_response_rejects_bad_verifier() {
        for bad in ["", "abc", "zz", &"0".repeat(63), &"0".repeat(66)] {
            let err = challenge_response(bad, "n").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let key = SigningKey::new("topsecret-key");
        let pw: Password = "hunter2".parse().unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
        assert_eq!(
            format!("{:#?}", Some(key.clone()))
                .matches("topsecret")
                .count(),
            0
        );
        assert!(!format!("{:?}", (key.clone(), pw.clone())).contains("hunter2"));
        assert_eq!(key.as_bytes(), b"topsecret-key");
        assert_eq!(pw.expose(), "hunter2");
        let parsed: SigningKey = "topsecret-key".parse().unwrap();
        assert_eq!(parsed, key);
    }
}
