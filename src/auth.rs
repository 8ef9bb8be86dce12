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

/// micro-ota's password verifier: the lowercase hex SHA-256 of the password's
/// UTF-8 bytes, unsalted. uota devices still accept it from a migrated
/// micro-ota config (hello `kdf` = `sha256`); new verifiers are
/// [`Password::verifier`] (salted PBKDF2).
pub fn password_verifier(password: &str) -> String {
    sha256_hex(password.as_bytes())
}

/// PBKDF2 iterations of the verifiers uota creates. The host computes the
/// verifier once per connection; the device never does, except for micro-ota's
/// plaintext password line in legacy mode (docs/security.md gives the cost).
pub const PBKDF2_ITERATIONS: u32 = 20_000;

/// The prefix of a salted verifier string: `pbkdf2-sha256$<iter>$<salt hex>$<hash hex>`.
pub const PBKDF2_PREFIX: &str = "pbkdf2-sha256";

/// PBKDF2-HMAC-SHA256 with one 32-byte output block (RFC 8018).
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = <Hmac<Sha256> as Mac>::new_from_slice(password).expect("any key length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations.max(1) {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

/// How a device derived the verifier it stores, as its hello reports it
/// (`kdf`): what the host needs to compute the same 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordKdf {
    /// micro-ota's unsalted SHA-256 (a migrated device).
    Sha256,
    /// Salted PBKDF2-HMAC-SHA256.
    Pbkdf2 {
        /// Iteration count.
        iterations: u32,
        /// The device's own random salt.
        salt: Vec<u8>,
    },
}

impl fmt::Debug for PasswordKdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordKdf::Sha256 => f.write_str("Sha256"),
            PasswordKdf::Pbkdf2 { iterations, salt } => f
                .debug_struct("Pbkdf2")
                .field("iterations", iterations)
                .field("salt", &hex::encode(salt))
                .finish(),
        }
    }
}

/// Most PBKDF2 iterations a host computes for a device (a hostile hello must
/// not make the host spin for minutes).
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;

impl PasswordKdf {
    /// Parse a hello's `kdf` field: `""`/`"sha256"`, or
    /// `pbkdf2-sha256$<iterations>$<salt hex>`.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for anything else, or more than
    /// [`MAX_PBKDF2_ITERATIONS`] iterations.
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() || text == "sha256" {
            return Ok(PasswordKdf::Sha256);
        }
        let bad = || {
            Error::Protocol(format!(
                "the device reports an unknown password kdf {text:?}"
            ))
        };
        let mut parts = text.split('$');
        if parts.next() != Some(PBKDF2_PREFIX) {
            return Err(bad());
        }
        let iterations: u32 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        let salt = parts
            .next()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(bad)?;
        if parts.next().is_some()
            || iterations == 0
            || iterations > MAX_PBKDF2_ITERATIONS
            || salt.is_empty()
            || salt.len() > 64
        {
            return Err(bad());
        }
        Ok(PasswordKdf::Pbkdf2 { iterations, salt })
    }
}

/// Context strings of authentication and session binding (docs/security.md).
const AUTH_PASSWORD_CONTEXT: &str = "uota-auth:v2:";
const AUTH_KEY_CONTEXT: &str = "uota-auth-key:v2:";
const SESSION_CONTEXT: &str = "uota-session:v2:";

/// Which secret a host proves in `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// The password (its 32-byte derived verifier).
    Password,
    /// The device's signing key.
    Key,
}

impl AuthMethod {
    /// The name on the wire (`auth`'s `with` field, the hello's `auth_with`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Key => "key",
        }
    }
}

/// The host's answer to a device's challenge: hex HMAC-SHA256 under
/// `secret` (the derived password verifier, or the signing key's bytes) of
/// `context + nonce + ":" + device id`, where the context names the method.
/// Binding the device id means an answer is useful to one device only.
pub fn challenge_response(
    method: AuthMethod,
    secret: &[u8],
    nonce: &str,
    device_id: &str,
) -> String {
    let context = match method {
        AuthMethod::Password => AUTH_PASSWORD_CONTEXT,
        AuthMethod::Key => AUTH_KEY_CONTEXT,
    };
    let mut mac = HmacSha256::new(secret);
    mac.update(context.as_bytes());
    mac.update(nonce.as_bytes());
    mac.update(b":");
    mac.update(device_id.as_bytes());
    hex::encode(mac.finalize())
}

/// The key that binds an authenticated session's state-changing requests:
/// HMAC-SHA256 under the authenticating secret of
/// `"uota-session:v2:" + nonce + ":" + device id`.
pub fn session_key(secret: &[u8], nonce: &str, device_id: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new(secret);
    mac.update(SESSION_CONTEXT.as_bytes());
    mac.update(nonce.as_bytes());
    mac.update(b":");
    mac.update(device_id.as_bytes());
    mac.finalize()
}

/// The 32-byte secret behind a stored verifier string (hex SHA-256, or
/// `pbkdf2-sha256$iter$salt$hash`), as the device keys its MACs with.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when it is neither.
pub fn verifier_secret(verifier: &str) -> Result<[u8; 32]> {
    let hash = match verifier.strip_prefix(PBKDF2_PREFIX) {
        Some(rest) => rest.rsplit('$').next().unwrap_or_default(),
        None => verifier,
    };
    decode_verifier(hash)
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

    /// A new verifier for a device to store: PBKDF2-HMAC-SHA256 of the
    /// password with a fresh random salt and [`PBKDF2_ITERATIONS`], as
    /// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`. Each call salts
    /// anew, so two devices with the same password store different verifiers.
    pub fn verifier(&self) -> String {
        use rand::RngCore;
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        self.verifier_with(PBKDF2_ITERATIONS, &salt)
    }

    /// The verifier for a given salt and iteration count.
    pub fn verifier_with(&self, iterations: u32, salt: &[u8]) -> String {
        let hash = pbkdf2_sha256(self.0.as_bytes(), salt, iterations);
        format!(
            "{PBKDF2_PREFIX}${iterations}${}${}",
            hex::encode(salt),
            hex::encode(hash)
        )
    }

    /// The 32-byte secret a device holding a verifier made with `kdf` keys
    /// its challenge with.
    pub fn secret(&self, kdf: &PasswordKdf) -> [u8; 32] {
        match kdf {
            PasswordKdf::Sha256 => sha256(self.0.as_bytes()),
            PasswordKdf::Pbkdf2 { iterations, salt } => {
                pbkdf2_sha256(self.0.as_bytes(), salt, *iterations)
            }
        }
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
    fn pbkdf2_matches_published_vectors() {
        // PBKDF2-HMAC-SHA256, dkLen 32 (RFC 7914 §11 and the common test set).
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn verifiers_are_salted_per_call_and_parse_back() {
        let pw = Password::new("secret");
        let a = pw.verifier();
        let b = pw.verifier();
        assert_ne!(
            a, b,
            "two devices with one password store different verifiers"
        );
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[0], PBKDF2_PREFIX);
        assert_eq!(parts[1], PBKDF2_ITERATIONS.to_string());
        let kdf = PasswordKdf::parse(&format!("{}${}${}", parts[0], parts[1], parts[2])).unwrap();
        assert_eq!(hex::encode(pw.secret(&kdf)), parts[3]);
        assert_eq!(verifier_secret(&a).unwrap(), pw.secret(&kdf));
        // micro-ota's unsalted verifier still works for a migrated device.
        assert_eq!(
            verifier_secret(&password_verifier("secret")).unwrap(),
            pw.secret(&PasswordKdf::Sha256)
        );
        for bad in [
            "pbkdf2-sha256$0$00",
            "pbkdf2-sha256$x$00",
            "pbkdf2-sha256$10$",
            "md5",
            "pbkdf2-sha256$99999999$00",
        ] {
            assert!(PasswordKdf::parse(bad).is_err(), "{bad}");
        }
        assert!(verifier_secret("zz").is_err());
    }

    #[test]
    fn challenge_responses_bind_nonce_device_and_method() {
        let secret = [7u8; 32];
        let r = challenge_response(AuthMethod::Password, &secret, "n1", "dev-a");
        let expected = hex::encode(hmac_sha256(&secret, b"uota-auth:v2:n1:dev-a"));
        assert_eq!(r, expected);
        assert_ne!(
            r,
            challenge_response(AuthMethod::Password, &secret, "n2", "dev-a")
        );
        assert_ne!(
            r,
            challenge_response(AuthMethod::Password, &secret, "n1", "dev-b")
        );
        assert_ne!(
            r,
            challenge_response(AuthMethod::Key, &secret, "n1", "dev-a")
        );
        assert_ne!(
            session_key(&secret, "n1", "dev-a"),
            session_key(&secret, "n2", "dev-a")
        );
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
