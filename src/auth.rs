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

/// Context string of per-device key derivation (see [`FleetKey::derive`]).
pub const DEVICE_KEY_CONTEXT: &str = "uota-device-key:v1:";

/// Context strings of a key rotation message (see [`rekey_message`]).
const REKEY_PAD_CONTEXT: &str = "uota-rekey-pad:";
const REKEY_MAC_CONTEXT: &str = "uota-rekey:";
const REKEY_PROOF_CONTEXT: &str = "uota-rekey-ok:";

/// Longest signing key a device accepts, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// A fleet key: the secret every per-device [`SigningKey`] is derived from.
///
/// A device only ever holds its own derived key, so a key extracted from one
/// device cannot sign releases for another. `Debug` prints `FleetKey(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey(String);

impl FleetKey {
    /// Wrap a fleet key string (its UTF-8 bytes are the HMAC key).
    pub fn new(key: impl Into<String>) -> Self {
        FleetKey(key.into())
    }

    /// A fresh random key: 32 bytes from the OS generator, as 64 hex digits.
    pub fn generate() -> Self {
        FleetKey(random_key_hex())
    }

    /// The key as configured. Handle with care: this is the secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the key is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The signing key of the device whose id is `device_id`:
    /// hex HMAC-SHA256 under the fleet key of `"uota-device-key:v1:" + device_id`.
    pub fn derive(&self, device_id: &str) -> SigningKey {
        let mut mac = HmacSha256::new(self.0.as_bytes());
        mac.update(DEVICE_KEY_CONTEXT.as_bytes());
        mac.update(device_id.as_bytes());
        SigningKey(hex::encode(mac.finalize()))
    }
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetKey(<redacted>)")
    }
}

/// 32 bytes from the OS random generator as 64 lowercase hex digits.
pub fn random_key_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A short public fingerprint of a key, safe to print: the first 16 hex
/// digits of SHA-256 over `"uota-key-id:" + key`.
pub fn key_fingerprint(key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"uota-key-id:");
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

/// A key rotation message: the new key encrypted and authenticated under the
/// current one, bound to the session nonce.
///
/// The new key is XORed with a one-time pad made of HMAC blocks
/// `HMAC(current, "uota-rekey-pad:" + nonce + ":" + i)` (i = 0, 1, …), and the
/// ciphertext is authenticated with `HMAC(current, "uota-rekey:" + nonce + ":" + hex(ciphertext))`.
/// Returns `(hex ciphertext, hex mac)`. The new key never crosses the link in
/// plaintext, and a recorded message is useless in another session.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when the new key is empty or longer than
/// [`MAX_KEY_LEN`] bytes.
pub fn rekey_message(
    current: &SigningKey,
    new: &SigningKey,
    nonce: &str,
) -> Result<(String, String)> {
    let plain = new.as_bytes();
    if plain.is_empty() || plain.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "a signing key must be 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    let ct: Vec<u8> = plain
        .iter()
        .zip(rekey_pad(current, nonce, plain.len()))
        .map(|(a, b)| a ^ b)
        .collect();
    let ct_hex = hex::encode(&ct);
    let mac = rekey_mac(current, nonce, &ct_hex);
    Ok((ct_hex, mac))
}

/// Undo [`rekey_message`] (what a device does), checking its MAC first.
///
/// # Errors
///
/// [`Error::SignatureMismatch`] when the MAC does not verify under `current`
/// for `nonce`; [`Error::InvalidArgument`] when the ciphertext is malformed.
pub fn open_rekey_message(
    current: &SigningKey,
    nonce: &str,
    ct_hex: &str,
    mac_hex: &str,
) -> Result<SigningKey> {
    if !constant_time_eq(
        rekey_mac(current, nonce, ct_hex).as_bytes(),
        mac_hex.as_bytes(),
    ) {
        return Err(Error::SignatureMismatch(
            "the key rotation message is not signed by the current key".into(),
        ));
    }
    let ct = hex::decode(ct_hex)
        .map_err(|_| Error::InvalidArgument("rekey ciphertext is not hex".into()))?;
    let plain: Vec<u8> = ct
        .iter()
        .zip(rekey_pad(current, nonce, ct.len()))
        .map(|(a, b)| a ^ b)
        .collect();
    String::from_utf8(plain)
        .map(SigningKey)
        .map_err(|_| Error::InvalidArgument("the rotated key is not UTF-8".into()))
}

/// The device's proof that it installed `new`: hex
/// `HMAC(new, "uota-rekey-ok:" + nonce)`.
pub fn rekey_proof(new: &SigningKey, nonce: &str) -> String {
    let mut mac = new.mac();
    mac.update(REKEY_PROOF_CONTEXT.as_bytes());
    mac.update(nonce.as_bytes());
    hex::encode(mac.finalize())
}

fn rekey_pad(current: &SigningKey, nonce: &str, len: usize) -> Vec<u8> {
    let mut pad = Vec::with_capacity(len + 32);
    let mut i = 0u32;
    while pad.len() < len {
        let mut mac = current.mac();
        mac.update(REKEY_PAD_CONTEXT.as_bytes());
        mac.update(nonce.as_bytes());
        mac.update(format!(":{i}").as_bytes());
        pad.extend_from_slice(&mac.finalize());
        i += 1;
    }
    pad.truncate(len);
    pad
}

fn rekey_mac(current: &SigningKey, nonce: &str, ct_hex: &str) -> String {
    let mut mac = current.mac();
    mac.update(REKEY_MAC_CONTEXT.as_bytes());
    mac.update(nonce.as_bytes());
    mac.update(b":");
    mac.update(ct_hex.as_bytes());
    hex::encode(mac.finalize())
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

    #[test]
    fn device_keys_differ_per_device_and_match_a_hand_computed_value() {
        let fleet = FleetKey::new("fleet-secret");
        let a = fleet.derive("dev-a");
        let b = fleet.derive("dev-b");
        assert_ne!(a, b);
        assert_eq!(
            a.expose(),
            hex::encode(hmac_sha256(b"fleet-secret", b"uota-device-key:v1:dev-a"))
        );
        assert_eq!(format!("{fleet:?}"), "FleetKey(<redacted>)");
        assert_eq!(FleetKey::generate().expose().len(), 64);
        assert_ne!(FleetKey::generate(), FleetKey::generate());
    }

    #[test]
    fn rekey_round_trip_and_tamper() {
        let cur = SigningKey::new("current");
        let new = SigningKey::new(random_key_hex());
        let (ct, mac) = rekey_message(&cur, &new, "n1").unwrap();
        assert!(!ct.contains(new.expose()));
        assert_eq!(open_rekey_message(&cur, "n1", &ct, &mac).unwrap(), new);
        // Another session's nonce, another key, a flipped bit: refused.
        assert!(open_rekey_message(&cur, "n2", &ct, &mac).is_err());
        assert!(open_rekey_message(&SigningKey::new("x"), "n1", &ct, &mac).is_err());
        let mut bad = ct.into_bytes();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        assert!(open_rekey_message(&cur, "n1", std::str::from_utf8(&bad).unwrap(), &mac).is_err());
        assert!(rekey_message(&cur, &SigningKey::new(""), "n").is_err());
        assert_eq!(rekey_proof(&new, "n1").len(), 64);
    }
}
