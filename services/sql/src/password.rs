//! Password verifiers: what GeoDB stores instead of a password.
//!
//! A password is kept only as a SCRAM-SHA-256 verifier (RFC 5802 §3,
//! RFC 7677), as PostgreSQL keeps it:
//!
//! ```text
//! SaltedPassword := PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations)
//! ClientKey      := HMAC(SaltedPassword, "Client Key")
//! StoredKey      := SHA-256(ClientKey)
//! ServerKey      := HMAC(SaltedPassword, "Server Key")
//! ```
//!
//! The salt is 16 random bytes and the iteration count [`ITERATIONS`].
//! Only the salt, the count, `StoredKey` and `ServerKey` are stored: the
//! same record serves a SCRAM exchange on the PostgreSQL port (the client
//! proves it knows `ClientKey` without sending it) and a plaintext password
//! over HTTPS ([`Verifier::check`] derives `StoredKey` from it and compares
//! in constant time). Neither key lets anyone log in: `StoredKey` is a hash
//! of the client key, and `ServerKey` only proves the server to the client.
//!
//! Every primitive is *ring*'s (PBKDF2, HMAC, SHA-256, the system random
//! generator) but the constant-time comparison, `subtle`'s; SASLprep is the `stringprep`
//! crate's, applied as libpq applies it (a password it refuses is used as
//! given).

use std::borrow::Cow;
use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations of a new verifier: PostgreSQL's default
/// (`scram_iterations`), the least RFC 7677 allows.
pub const ITERATIONS: u32 = 4096;
/// Salt bytes of a new verifier (PostgreSQL's length).
pub const SALT_BYTES: usize = 16;
/// The fewest iterations a stored verifier may have; fewer means a
/// corrupt or forged record.
const ITERATIONS_MIN: u32 = 4096;
/// The most iterations a stored verifier may have: a bound on the work one
/// login costs.
const ITERATIONS_MAX: u32 = 1_000_000;
/// The longest password taken (bytes): hashing is cheap per byte, but an
/// unbounded input is never right.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// A SCRAM-SHA-256 verifier. Its `Debug` never shows the keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = [0u8; SALT_BYTES];
        ring::rand::SystemRandom::new().fill(&mut salt).expect("the system random generator works");
        Verifier::with_salt(password, &salt, ITERATIONS)
    }

    /// A verifier of `password` with the given salt and iterations.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let server_key = hmac_sha256(&salted, b"Server Key");
        Verifier { iterations, salt: salt.to_vec(), stored_key, server_key }
    }

    /// Whether `password` is the one this verifier was made from: derives
    /// its `StoredKey` and compares in constant time.
    pub fn check(&self, password: &str) -> bool {
        if !self.is_well_formed() || password.len() > PASSWORD_BYTES_MAX {
            return false;
        }
        let salted = salted_password(password, &self.salt, self.iterations);
        let stored_key = sha256(&hmac_sha256(&salted, b"Client Key"));
        bool::from(stored_key.ct_eq(&self.stored_key))
    }

    /// Whether the record is usable (it came from disk).
    pub fn is_well_formed(&self) -> bool {
        (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) && !self.salt.is_empty()
    }
}

/// `Hi(SASLprep(password), salt, i)` of RFC 5802.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let prepared = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, prepared.as_bytes(), &mut out);
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message).as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_only() {
        let verifier = Verifier::new("correct horse");
        assert!(verifier.check("correct horse"));
        assert!(!verifier.check("correct horse "));
        assert!(!verifier.check(""));
        assert_eq!(verifier.iterations, ITERATIONS);
        assert_eq!(verifier.salt.len(), SALT_BYTES);
        // A fresh salt each time: two verifiers of one password differ.
        assert_ne!(Verifier::new("correct horse").stored_key, verifier.stored_key);
    }

    #[test]
    fn the_keys_are_rfc_7677s() {
        // RFC 7677 §3: user "user", password "pencil", this salt, 4096
        // iterations; its exchange's proof and signature follow from these
        // keys, so checking them checks the derivation.
        let salt = [0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81];
        let verifier = Verifier::with_salt("pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final_without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{client_first_bare},{server_first},{client_final_without_proof}");
        let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
        // v= of the RFC's server-final message, base64-decoded.
        let expected = [
            0xea, 0xba, 0xe2, 0x4d, 0x10, 0x62, 0xdb, 0x75, 0xa9, 0x45, 0x1f, 0xf0, 0xb6, 0xea, 0x7e, 0x98, 0xc8, 0x54,
            0x65, 0x49, 0xff, 0x74, 0x1e, 0x67, 0x2d, 0x32, 0x51, 0xb2, 0x39, 0x7d, 0xe4, 0x6e,
        ];
        assert_eq!(server_signature, expected);
    }

    #[test]
    fn debug_never_shows_keys() {
        let shown = format!("{:?}", Verifier::new("secret"));
        assert_eq!(shown, "Verifier { iterations: 4096, .. }");
    }

    #[test]
    fn a_malformed_record_checks_nothing() {
        let mut verifier = Verifier::new("x");
        verifier.iterations = 1;
        assert!(!verifier.check("x"));
    }
}
