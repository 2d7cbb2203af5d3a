//! Authentication: who a client is, on a *secure* node (one with a
//! certificates directory; `docs/security.md`, "Users and authentication").
//!
//! A client proves a user by
//!
//! - a password: HTTP `Authorization: Basic`, checked against the user's
//!   SCRAM-SHA-256 verifier ([`geodb_sql::password`]), or SCRAM-SHA-256 on
//!   the PostgreSQL port (`pg.rs`), which never sends the password;
//! - a client certificate signed by the cluster CA whose common name is the
//!   user (`geodb cert create-client --user alice`), presented in the TLS
//!   handshake of either port ([`certificate_user`]). This is how `root`,
//!   which has no password until given one, logs in first.
//!
//! A node without certificates authenticates nobody (`--insecure`, `geodb
//! dev`): every client is unchecked, as before.
//!
//! Failed logins are counted (`geodb_auth_failures_total{listener,
//! reason}`), logged with the user name, the client's address and the
//! reason (never a password or a verifier), and rate limited
//! ([`Limiter`]): a token bucket per user name and one per client address,
//! each holding `auth.login_failures_burst` failures and gaining one back
//! every `auth.login_failure_refill_ms`. A login whose user or address has
//! no failure left is refused before its credentials are checked (HTTP 429
//! / SQLSTATE `53300`), so a password guesser gets no answer either way;
//! a success does not refill.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use geodb_sql::access::User;
use geodb_sql::password::Verifier;
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;

use crate::config::AuthConfig;
use crate::http::ApiError;
use crate::telemetry::names;

/// Buckets the limiter keeps at most; beyond it, buckets that are full
/// again are forgotten, and if none is, a new user or address is refused
/// until one is (failing closed: an attacker with more addresses than this
/// can slow everyone's logins down, never guess faster).
const BUCKETS_MAX: usize = 10_000;

/// Who a request or connection runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: Arc<str>,
    /// Whether the user had the admin role when it logged in (statements
    /// check the catalog again each time; this gates `/v1/admin/*`).
    pub admin: bool,
}

impl Identity {
    pub fn of(user: &User) -> Identity {
        Identity { user: Arc::from(user.name.as_str()), admin: user.admin }
    }
}

/// Where a login came in (the `listener` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    Pg,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Pg => "pg",
        }
    }
}

/// Why a login failed (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No credentials at all.
    Missing,
    /// Credentials that do not parse (a malformed `Authorization` header).
    Malformed,
    /// A user that does not exist, a user without a password, or a wrong
    /// password: one reason, as the client is told one thing.
    Password,
    /// A client certificate whose user does not exist.
    Certificate,
    /// Refused by the rate limit before the credentials were checked.
    RateLimited,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::Password => "password",
            Failure::Certificate => "certificate",
            Failure::RateLimited => "rate_limited",
        }
    }

    /// The error the client gets: 28000 without (usable) credentials,
    /// 28P01 for a failed password, 53300 beyond the rate limit.
    pub fn error(self, user: &str) -> ApiError {
        match self {
            Failure::Missing => ApiError::new("28000", "authentication required: a password, a client certificate"),
            Failure::Malformed => ApiError::new("28000", "malformed Authorization header (expected Basic)"),
            Failure::Password => ApiError::new("28P01", format!("password authentication failed for user \"{user}\"")),
            Failure::Certificate => {
                ApiError::new("28000", format!("certificate authentication failed for user \"{user}\""))
            }
            Failure::RateLimited => ApiError::new(
                "53300",
                "too many failed logins for this user or from this address: wait before trying again",
            ),
        }
    }
}

/// The node's authentication state.
pub struct Auth {
    /// Whether clients must authenticate (the node has certificates).
    pub required: bool,
    limiter: Limiter,
    /// Keys the made-up salts of users that do not exist (see
    /// [`Auth::verifier_for`]); drawn at start, never stored.
    unknown_user_key: ring::hmac::Key,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("required", &self.required).finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(required: bool, config: &AuthConfig) -> Auth {
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut key).expect("the system random generator works");
        Auth {
            required,
            limiter: Limiter::new(config.login_failures_burst, Duration::from_millis(config.login_failure_refill_ms)),
            unknown_user_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    /// Whether a login for `user` from `address` may be tried now; if not,
    /// counts and logs it.
    pub fn admit(&self, listener: Listener, user: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if self.limiter.admits(user, address, Instant::now()) {
            return Ok(());
        }
        count_and_log(listener, Failure::RateLimited, user, address);
        Err(Failure::RateLimited.error(user))
    }

    /// Records a failed login: it takes one failure from the user's and
    /// the address's buckets, and is counted and logged. Returns the error
    /// the client gets.
    pub fn failed(&self, listener: Listener, failure: Failure, user: &str, address: Option<IpAddr>) -> ApiError {
        // No credentials at all guess nothing: counted, not limited.
        if failure != Failure::Missing {
            self.limiter.failed(user, address, Instant::now());
        }
        count_and_log(listener, failure, user, address);
        failure.error(user)
    }

    /// The verifier a password login for `user` is checked against: the
    /// user's own, or, for a user that does not exist or has no password,
    /// one no password matches, with a salt made up from the name (the same
    /// on every attempt at this node), so that neither the answer, the time
    /// it takes nor the salt SCRAM shows says whether the user exists.
    pub fn verifier_for(&self, user: Option<&User>, name: &str) -> (Verifier, bool) {
        if let Some(verifier) = user.and_then(|user| user.password.clone()).filter(Verifier::is_well_formed) {
            return (verifier, true);
        }
        let salt = ring::hmac::sign(&self.unknown_user_key, name.as_bytes());
        // Random keys: no password derives them. Checking a password
        // against them costs what checking a real one does.
        let mut keys = [0u8; 64];
        ring::rand::SystemRandom::new().fill(&mut keys).expect("the system random generator works");
        let verifier = Verifier {
            iterations: geodb_sql::password::ITERATIONS,
            salt: salt.as_ref()[..geodb_sql::password::SALT_BYTES].to_vec(),
            stored_key: keys[..32].try_into().expect("32 bytes"),
            server_key: keys[32..].try_into().expect("32 bytes"),
        };
        (verifier, false)
    }
}

fn count_and_log(listener: Listener, failure: Failure, user: &str, address: Option<IpAddr>) {
    metrics::counter!(names::AUTH_FAILURES, "listener" => listener.label(), "reason" => failure.label()).increment(1);
    // The user name as the client sent it, bounded; never a password.
    let user: String = user.chars().take(64).collect();
    let address = address.map_or_else(|| "unknown".to_string(), |address| address.to_string());
    tracing::warn!(listener = listener.label(), reason = failure.label(), %user, peer = %address, "login failed");
}

/// The user a client certificate names: its common name, if it is a client
/// certificate (a node certificate, whose names are under
/// `geodb.internal`, names no user). The handshake already checked it
/// against the cluster CA.
pub fn certificate_user(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        let node = names.value.general_names.iter().any(|name| {
            matches!(name, x509_parser::extensions::GeneralName::DNSName(name) if name.ends_with(".geodb.internal"))
        });
        if node {
            return None;
        }
    }
    let mut names = parsed.subject().iter_common_name();
    let name = names.next()?.as_str().ok()?.to_string();
    // Two common names: which one would be the user is not for us to guess.
    if names.next().is_some() {
        return None;
    }
    Some(name)
}

/// Token buckets of failed logins, per user name and per client address.
struct Limiter {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BucketKey {
    User(String),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    failures_left: f64,
    at: Instant,
}

impl Limiter {
    fn new(burst: u32, refill: Duration) -> Limiter {
        Limiter {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::default(),
        }
    }

    fn keys(user: &str, address: Option<IpAddr>) -> impl Iterator<Item = BucketKey> {
        let user: String = user.chars().take(geodb_sql::access::USER_NAME_BYTES_MAX + 1).collect();
        std::iter::once(BucketKey::User(user)).chain(address.map(BucketKey::Address))
    }

    /// A bucket's failures left at `now`.
    fn left(&self, bucket: &Bucket, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() / self.refill.as_secs_f64();
        (bucket.failures_left + gained).min(self.burst)
    }

    fn admits(&self, user: &str, address: Option<IpAddr>, now: Instant) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let full = buckets.len() >= BUCKETS_MAX;
        Self::keys(user, address).all(|key| match buckets.get(&key) {
            Some(bucket) => self.left(bucket, now) >= 1.0,
            None => !full,
        })
    }

    fn failed(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= BUCKETS_MAX {
            buckets.retain(|_, bucket| self.left(bucket, now) < self.burst);
        }
        for key in Self::keys(user, address) {
            if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(&key) {
                continue;
            }
            let left = buckets.get(&key).map_or(self.burst, |bucket| self.left(bucket, now));
            buckets.insert(key, Bucket { failures_left: (left - 1.0).max(0.0), at: now });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_burst_are_refused_until_refilled() {
        let limiter = Limiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.admits("alice", Some(address), start));
            limiter.failed("alice", Some(address), start);
        }
        assert!(!limiter.admits("alice", Some(address), start));
        // The user's bucket is empty from any address; the address's for any user.
        assert!(!limiter.admits("alice", Some("10.0.0.2".parse().unwrap()), start));
        assert!(!limiter.admits("bob", Some(address), start));
        assert!(limiter.admits("bob", Some("10.0.0.2".parse().unwrap()), start));
        // One failure comes back per refill period.
        assert!(limiter.admits("alice", Some(address), start + Duration::from_secs(10)));
        limiter.failed("alice", Some(address), start + Duration::from_secs(10));
        assert!(!limiter.admits("alice", Some(address), start + Duration::from_secs(15)));
    }

    #[test]
    fn unknown_users_get_a_stable_made_up_salt_and_never_match() {
        let auth = Auth::new(true, &AuthConfig::default());
        let (first, real) = auth.verifier_for(None, "nobody");
        let (second, _) = auth.verifier_for(None, "nobody");
        assert!(!real);
        assert_eq!(first.salt, second.salt);
        assert_ne!(first.stored_key, second.stored_key);
        assert!(!first.check(""));
        let (other, _) = auth.verifier_for(None, "somebody");
        assert_ne!(first.salt, other.salt);
    }

    #[test]
    fn failures_map_to_postgresql_codes() {
        assert_eq!(Failure::Missing.error("a").code, "28000");
        assert_eq!(Failure::Password.error("a").code, "28P01");
        assert_eq!(Failure::RateLimited.error("a").code, "53300");
        assert_eq!(Failure::Password.error("a").status.as_u16(), 401);
        assert_eq!(Failure::RateLimited.error("a").status.as_u16(), 429);
    }
}
