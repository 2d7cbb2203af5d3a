//! Authentication: who a client is, on a *secure* node (one with a
//! certificates directory; `docs/security.md`, "Users and authentication").
//!
//! A client proves a user by
//!
//! - a password: HTTP `Authorization: Basic`, checked against the user's
//!   SCRAM-SHA-256 verifier ([`geodb_sql::password`]), or SCRAM-SHA-256 on
//!   the PostgreSQL port (`pg.rs`), which never sends the password;
//! - a client certificate signed by the cluster CA for this cluster whose
//!   common name is the user (`geodb cert create-client --user alice
//!   --cluster-id N`), presented in the TLS handshake of either port
//!   ([`certificate_user`]). This is how `root`,
//!   which has no password until given one, logs in first.
//!
//! A node without certificates authenticates nobody (`--insecure`, `geodb
//! dev`): every client is unchecked, as before.
//!
//! Failed logins are counted (`geodb_auth_failures_total{listener,
//! reason}`), logged with the user name, the client's address and the
//! reason (never a password or a verifier; at most one line a second per
//! user and address), and rate limited ([`Limiter`]): a token bucket per
//! user name *and* client address, holding `auth.login_failures_burst`
//! failures and gaining one back every `auth.login_failure_refill_ms`, and
//! one per client address (an IPv6 address by its /64) holding
//! [`ADDRESS_SHARE`] times as many and refilling as many times as fast
//! (many users may share an address behind a proxy or NAT). A password
//! login takes one failure from both buckets when it is admitted, before
//! its credentials are checked, under one lock, so concurrent logins can
//! never try more passwords than the buckets hold; a login that succeeds
//! gives it back. A login whose buckets have no failure left is refused
//! before its credentials are checked (HTTP 429 / SQLSTATE `53300`), so a
//! password guesser gets no answer either way.
//!
//! There is no bucket per user name alone: one would let anyone lock any
//! user out by failing its logins on purpose. A guesser spread over many
//! addresses is then slowed only by the per-(user, address) buckets
//! (`docs/security.md`, "Failed logins"); client certificates are not
//! guessable, and are the login to give `root` and administrators.

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

/// Buckets the limiter keeps at most; at it, buckets that are full again
/// are forgotten (at admission as well as at a failure), and if none is,
/// a new user or address is refused until one refills (at most
/// `burst × refill` later): failing closed, an attacker with more
/// addresses than this can slow new logins down for a while, never guess
/// faster nor block them for good.
const BUCKETS_MAX: usize = 10_000;

/// A client address's bucket holds this many times the failures of a
/// user's bucket at that address, and refills as many times as fast.
pub const ADDRESS_SHARE: u32 = 8;

/// Refused logins of one user and address are logged at most this often
/// (the rest are counted in `geodb_auth_failures_total` only).
const LOG_INTERVAL: Duration = Duration::from_secs(1);

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
    /// When a failed login of a user and address was last logged.
    logged: Mutex<HashMap<(String, Option<IpAddr>), Instant>>,
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
            logged: Mutex::default(),
            unknown_user_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    /// Admits a password login for `user` from `address`, taking one
    /// failure from its buckets now (given back by [`Auth::succeeded`]);
    /// or, if a bucket has none left, refuses it, counted and logged.
    pub fn admit(&self, listener: Listener, user: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if self.limiter.admit(user, address, Instant::now()) {
            return Ok(());
        }
        self.count_and_log(listener, Failure::RateLimited, user, address);
        Err(Failure::RateLimited.error(user).retry_after(self.limiter.refill))
    }

    /// A login [`Auth::admit`] admitted succeeded: the failure it took
    /// comes back.
    pub fn succeeded(&self, user: &str, address: Option<IpAddr>) {
        self.limiter.give_back(user, address, Instant::now());
    }

    /// A login [`Auth::admit`] admitted failed (its failure is already
    /// taken): counted and logged. Returns the error the client gets.
    pub fn refused(&self, listener: Listener, failure: Failure, user: &str, address: Option<IpAddr>) -> ApiError {
        self.count_and_log(listener, failure, user, address);
        failure.error(user)
    }

    /// Records a failed login that was not admitted first (no credentials,
    /// malformed ones, a certificate for no user): it takes one failure
    /// from its buckets, unless it had no credentials at all, and is
    /// counted and logged. Returns the error the client gets.
    pub fn failed(&self, listener: Listener, failure: Failure, user: &str, address: Option<IpAddr>) -> ApiError {
        // No credentials at all guess nothing: counted, not limited.
        if failure != Failure::Missing {
            self.limiter.take(user, address, Instant::now());
        }
        self.count_and_log(listener, failure, user, address);
        failure.error(user)
    }

    fn count_and_log(&self, listener: Listener, failure: Failure, user: &str, address: Option<IpAddr>) {
        metrics::counter!(names::AUTH_FAILURES, "listener" => listener.label(), "reason" => failure.label())
            .increment(1);
        // The user name as the client sent it, bounded; never a password.
        let user: String = user.chars().take(64).collect();
        if !self.log_now(&user, address, Instant::now()) {
            return;
        }
        let peer = address.map_or_else(|| "unknown".to_string(), |address| address.to_string());
        // `?user`: escaped, so a name with control characters or line
        // breaks cannot forge log lines.
        tracing::warn!(
            listener = listener.label(),
            reason = failure.label(),
            ?user,
            %peer,
            "login failed (more failures of this user and address within 1 s are counted, not logged)"
        );
    }

    /// Whether a failure of `user` from `address` is logged: the first in
    /// [`LOG_INTERVAL`] is, the rest are not (a guesser cannot flood the log).
    fn log_now(&self, user: &str, address: Option<IpAddr>, now: Instant) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= BUCKETS_MAX {
            logged.retain(|_, at| now.saturating_duration_since(*at) < LOG_INTERVAL);
        }
        let key = (user.to_string(), address.map(address_key));
        match logged.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < LOG_INTERVAL => false,
            _ if logged.len() >= BUCKETS_MAX => false,
            _ => {
                logged.insert(key, now);
                true
            }
        }
    }

    /// The identity a handler runs a request as: `None` on a node that
    /// authenticates nobody; on a secure node, the one authentication
    /// found, and without one (a route the middleware did not cover) a
    /// refusal, never a request run unchecked.
    pub fn identity<'a>(&self, identity: Option<&'a Identity>) -> Result<Option<&'a Identity>, ApiError> {
        match identity {
            None if self.required => Err(Failure::Missing.error("")),
            identity => Ok(identity),
        }
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

/// The user a client certificate names: its common name, if it is a
/// client certificate of cluster `cluster` (its one organizational unit is
/// `cluster <id>`, [`crate::tls::client_cluster_unit`]) — a node
/// certificate, whose names are under `geodb.internal`, names no user, nor
/// does a client certificate of another cluster sharing the CA, or one
/// without a cluster. The handshake already checked it against the CA.
pub fn certificate_user(certificate: &CertificateDer<'_>, cluster: u64) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        let node = names.value.general_names.iter().any(|name| {
            matches!(name, x509_parser::extensions::GeneralName::DNSName(name) if name.ends_with(".geodb.internal"))
        });
        if node {
            return None;
        }
    }
    let subject = parsed.subject();
    let mut units = subject.iter_organizational_unit();
    let unit = units.next()?.as_str().ok()?;
    if units.next().is_some() || unit != crate::tls::client_cluster_unit(cluster) {
        return None;
    }
    let mut names = subject.iter_common_name();
    let name = names.next()?.as_str().ok()?.to_string();
    // Two common names: which one would be the user is not for us to guess.
    if names.next().is_some() {
        return None;
    }
    Some(name)
}

/// The address a client's buckets are keyed by: an IPv4 address (an
/// IPv4-mapped IPv6 one as the IPv4 one), or the /64 of an IPv6 address (a
/// host usually has a whole /64 to draw addresses from).
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Token buckets of failed logins, per user name and client address, and
/// per client address (see the module documentation).
struct Limiter {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BucketKey {
    User(String, Option<IpAddr>),
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

    fn keys(user: &str, address: Option<IpAddr>) -> Vec<BucketKey> {
        let user: String = user.chars().take(geodb_sql::access::USER_NAME_BYTES_MAX + 1).collect();
        let address = address.map(address_key);
        std::iter::once(BucketKey::User(user, address)).chain(address.map(BucketKey::Address)).collect()
    }

    /// The failures a bucket holds when full, and the failures it gains
    /// back a second.
    fn shape(&self, key: &BucketKey) -> (f64, f64) {
        let per_second = 1.0 / self.refill.as_secs_f64();
        match key {
            BucketKey::User(..) => (self.burst, per_second),
            BucketKey::Address(_) => {
                let share = f64::from(ADDRESS_SHARE);
                (self.burst * share, per_second * share)
            }
        }
    }

    /// A bucket's failures left at `now`.
    fn left(&self, key: &BucketKey, bucket: &Bucket, now: Instant) -> f64 {
        let (capacity, per_second) = self.shape(key);
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        (bucket.failures_left + gained).min(capacity)
    }

    /// Whether the table has room for the buckets of `keys` it lacks,
    /// forgetting full buckets (which say nothing a new one would not) if
    /// it must.
    fn room(&self, buckets: &mut HashMap<BucketKey, Bucket>, keys: &[BucketKey], now: Instant) -> bool {
        let new = keys.iter().filter(|key| !buckets.contains_key(key)).count();
        if buckets.len() + new <= BUCKETS_MAX {
            return true;
        }
        buckets.retain(|key, bucket| self.left(key, bucket, now) < self.shape(key).0);
        let new = keys.iter().filter(|key| !buckets.contains_key(key)).count();
        buckets.len() + new <= BUCKETS_MAX
    }

    /// Takes one failure from each of the login's buckets if each has one
    /// left, all under one lock: `false` (nothing taken) if any has none.
    fn admit(&self, user: &str, address: Option<IpAddr>, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = Self::keys(user, address);
        if !self.room(&mut buckets, &keys, now) {
            return false;
        }
        let left: Vec<f64> = keys
            .iter()
            .map(|key| buckets.get(key).map_or(self.shape(key).0, |bucket| self.left(key, bucket, now)))
            .collect();
        if left.iter().any(|left| *left < 1.0) {
            return false;
        }
        for (key, left) in keys.into_iter().zip(left) {
            buckets.insert(key, Bucket { failures_left: left - 1.0, at: now });
        }
        true
    }

    /// Takes one failure from each of the login's buckets that has one
    /// (a failure that was not admitted first).
    fn take(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = Self::keys(user, address);
        let room = self.room(&mut buckets, &keys, now);
        for key in keys {
            let left = match buckets.get(&key) {
                Some(bucket) => self.left(&key, bucket, now),
                None if room => self.shape(&key).0,
                None => continue,
            };
            buckets.insert(key, Bucket { failures_left: (left - 1.0).max(0.0), at: now });
        }
    }

    /// Gives back the failure [`Limiter::admit`] took (the login succeeded).
    fn give_back(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        for key in Self::keys(user, address) {
            if let Some(bucket) = buckets.get(&key) {
                let left = (self.left(&key, bucket, now) + 1.0).min(self.shape(&key).0);
                buckets.insert(key, Bucket { failures_left: left, at: now });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn failures_beyond_the_burst_are_refused_until_refilled() {
        let limiter = Limiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.admit("alice", ip("10.0.0.1"), start));
        }
        assert!(!limiter.admit("alice", ip("10.0.0.1"), start));
        // Another user at the address, and the user at another address, are
        // not refused: nobody can lock a user out from elsewhere.
        assert!(limiter.admit("bob", ip("10.0.0.1"), start));
        assert!(limiter.admit("alice", ip("10.0.0.2"), start));
        // One failure comes back per refill period.
        assert!(limiter.admit("alice", ip("10.0.0.1"), start + Duration::from_secs(10)));
        assert!(!limiter.admit("alice", ip("10.0.0.1"), start + Duration::from_secs(15)));
    }

    #[test]
    fn a_success_gives_back_the_failure_its_admission_took() {
        let limiter = Limiter::new(2, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limiter.admit("alice", ip("10.0.0.1"), now));
            limiter.give_back("alice", ip("10.0.0.1"), now);
        }
        assert!(limiter.admit("alice", ip("10.0.0.1"), now));
        assert!(limiter.admit("alice", ip("10.0.0.1"), now));
        assert!(!limiter.admit("alice", ip("10.0.0.1"), now));
    }

    #[test]
    fn concurrent_admissions_beyond_the_bucket_are_refused() {
        let limiter = Arc::new(Limiter::new(10, Duration::from_secs(60)));
        let now = Instant::now();
        let barrier = Arc::new(std::sync::Barrier::new(64));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (limiter, barrier) = (limiter.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    limiter.admit("app", ip("192.0.2.7"), now)
                })
            })
            .collect();
        let admitted = threads.into_iter().map(|thread| thread.join().unwrap()).filter(|a| *a).count();
        // As many as the bucket holds, however many came at once.
        assert_eq!(admitted, 10);
    }

    #[test]
    fn failures_of_a_user_from_one_address_do_not_refuse_it_from_another() {
        let limiter = Limiter::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..3 {
            limiter.take("app", ip("192.0.2.1"), now);
        }
        assert!(!limiter.admit("app", ip("192.0.2.1"), now));
        assert!(limiter.admit("app", ip("198.51.100.1"), now));
    }

    #[test]
    fn an_address_is_refused_past_its_larger_share_whatever_the_users() {
        let limiter = Limiter::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let share = 2 * ADDRESS_SHARE as usize;
        for user in 0..share {
            assert!(limiter.admit(&format!("user{user}"), ip("192.0.2.1"), now));
        }
        assert!(!limiter.admit("another", ip("192.0.2.1"), now));
        // An IPv6 address is one client with the rest of its /64.
        for user in 0..share {
            assert!(limiter.admit(&format!("user{user}"), ip(&format!("2001:db8::{user:x}")), now));
        }
        assert!(!limiter.admit("another", ip("2001:db8::ffff:1"), now));
        assert!(limiter.admit("another", ip("2001:db8:0:1::1"), now));
    }

    #[test]
    fn a_full_table_forgets_refilled_buckets_when_admitting() {
        let limiter = Limiter::new(1, Duration::from_secs(1));
        let start = Instant::now();
        // Each admission makes two buckets: fill the table.
        for n in 0..(BUCKETS_MAX as u32 / 2) {
            let address = std::net::Ipv4Addr::from(0x0a00_0000 + n);
            assert!(limiter.admit("app", Some(IpAddr::V4(address)), start));
        }
        // No bucket is full again yet: a new key is refused (fail closed)...
        assert!(!limiter.admit("app", ip("192.0.2.1"), start));
        // ...until they refill; then admission itself makes room.
        assert!(limiter.admit("app", ip("192.0.2.1"), start + Duration::from_secs(1)));
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
    fn a_secure_node_runs_nothing_without_an_identity() {
        let secure = Auth::new(true, &AuthConfig::default());
        assert_eq!(secure.identity(None).unwrap_err().code, "28000");
        let alice = Identity { user: Arc::from("alice"), admin: false };
        assert_eq!(secure.identity(Some(&alice)).unwrap(), Some(&alice));
        assert_eq!(Auth::new(false, &AuthConfig::default()).identity(None).unwrap(), None);
    }

    #[test]
    fn refused_logins_are_logged_once_a_second_per_user_and_address() {
        let auth = Auth::new(true, &AuthConfig::default());
        let now = Instant::now();
        assert!(auth.log_now("alice", ip("10.0.0.1"), now));
        assert!(!auth.log_now("alice", ip("10.0.0.1"), now + Duration::from_millis(500)));
        assert!(auth.log_now("bob", ip("10.0.0.1"), now));
        assert!(auth.log_now("alice", ip("10.0.0.1"), now + Duration::from_secs(1)));
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
