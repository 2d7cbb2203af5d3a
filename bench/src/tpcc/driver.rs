//! The remote terminal emulators (clause 5.2): `terminals` tasks, each
//! bound to one warehouse and district, drawing transactions with the
//! standard mix and running them back to back, or with the keying and think
//! times of clause 5.2.5 when asked.
//!
//! A transaction that fails with a retryable error (SQLSTATE `40001`,
//! `40P01`) runs again with the same input, up to [`RETRIES_MAX`] times;
//! its latency is measured from the first attempt to the end of the last,
//! as the user at the terminal sees it. Retries are counted apart from
//! failures. Only transactions that end inside the measurement window
//! (after `warmup`, for `duration`) count.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::load::now_micros;
use super::random::Constants;
use super::schema::{self, DISTRICTS_PER_WAREHOUSE, Population};
use super::session::{Session, Target};
use super::txns::{self, Input, Kind, Outcome, Terminal};

/// Attempts of one transaction after its first: enough to ride out a
/// burst of conflicts on a hot district, few enough that a livelock shows
/// up as failures instead of a hung terminal.
pub const RETRIES_MAX: u32 = 100;

/// Backoff before retry `n` is uniform in [0, 2^min(n, 6)] ms: short, so
/// retries stay cheap, and jittered, so conflicting terminals spread out.
const RETRY_BACKOFF_EXPONENT_MAX: u32 = 6;

/// Clause 5.2.5.4: a think time is at most ten times its mean.
const THINK_TIME_MEAN_MULTIPLE_MAX: f64 = 10.0;

/// Error messages kept per transaction type, for the report.
const ERROR_SAMPLES_MAX: usize = 5;

/// Latency histograms span 1 µs to 10 min at three significant digits.
const LATENCY_US_MAX: u64 = 600_000_000;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub terminals: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub keying_and_think: bool,
    /// GeoDB's tables declare column families ([`super::schema`]).
    pub column_families: bool,
    pub seed: u64,
}

/// What one transaction type did in the measurement window.
#[derive(Clone)]
pub struct KindStats {
    /// Latencies of transactions that completed (committed or rolled back by design), µs.
    pub latency_us: Histogram<u64>,
    pub committed: u64,
    /// New-Order's designed 1 % rollbacks.
    pub rolled_back: u64,
    /// Attempts that failed with a retryable error and were run again.
    pub retries: u64,
    /// Transactions that failed for good (non-retryable error or retries exhausted).
    pub failures: u64,
    pub error_samples: Vec<String>,
}

impl KindStats {
    fn new() -> KindStats {
        KindStats {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds"),
            committed: 0,
            rolled_back: 0,
            retries: 0,
            failures: 0,
            error_samples: Vec::new(),
        }
    }

    pub fn completed(&self) -> u64 {
        self.committed + self.rolled_back
    }

    fn merge(&mut self, other: &KindStats) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.committed += other.committed;
        self.rolled_back += other.rolled_back;
        self.retries += other.retries;
        self.failures += other.failures;
        for sample in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(sample) {
                self.error_samples.push(sample.clone());
            }
        }
    }
}

/// The whole run's measurements.
pub struct RunStats {
    pub per_kind: Vec<KindStats>,
    /// Completed transactions per second of the window, by type.
    pub timeline: Vec<[u64; 5]>,
    pub measured: Duration,
}

impl RunStats {
    fn new(measured: Duration) -> RunStats {
        RunStats {
            per_kind: Kind::ALL.iter().map(|_| KindStats::new()).collect(),
            timeline: vec![[0; 5]; measured.as_secs().max(1) as usize],
            measured,
        }
    }

    fn merge(&mut self, other: &RunStats) {
        for (mine, theirs) in self.per_kind.iter_mut().zip(&other.per_kind) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    pub fn kind(&self, kind: Kind) -> &KindStats {
        &self.per_kind[kind.index()]
    }

    fn minutes(&self) -> f64 {
        self.measured.as_secs_f64() / 60.0
    }

    /// Completed New-Orders per minute, the designed 1 % rollbacks
    /// included (they completed as the terminal asked).
    pub fn tpmc(&self) -> f64 {
        self.kind(Kind::NewOrder).completed() as f64 / self.minutes()
    }

    /// All completed transactions per minute.
    pub fn tpm_total(&self) -> f64 {
        self.per_kind.iter().map(KindStats::completed).sum::<u64>() as f64 / self.minutes()
    }
}

/// Clause 5.2.5: the greatest tpmC one terminal can reach with keying and
/// think times, 12.86 per warehouse of ten terminals.
pub const TPMC_PER_TERMINAL_IDEAL: f64 = 1.286;

/// Runs `config.terminals` terminals against `target` and gathers their
/// measurements.
pub async fn run<T: Target>(
    target: &T,
    population: Population,
    constants: Constants,
    config: Config,
) -> Result<RunStats, String> {
    let started = Instant::now();
    let window_start = started + config.warmup;
    let window_end = window_start + config.duration;
    let mut tasks = Vec::new();
    for index in 0..config.terminals {
        let warehouses = population.warehouses as usize;
        let terminal = Terminal {
            warehouse: (index % warehouses) as i64 + 1,
            district: ((index / warehouses) as i64 % DISTRICTS_PER_WAREHOUSE) + 1,
            population,
            constants,
        };
        let session =
            target.terminal_session(terminal.warehouse).await.map_err(|e| format!("terminal {index}: connect: {e}"))?;
        let seed = config.seed.wrapping_add(1 + index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(run_terminal(session, terminal, index, seed, config, window_start, window_end)));
    }
    let mut stats = RunStats::new(config.duration);
    for task in tasks {
        stats.merge(&task.await.map_err(|e| e.to_string())?);
    }
    Ok(stats)
}

async fn run_terminal<S: Session>(
    mut session: S,
    terminal: Terminal,
    index: usize,
    seed: u64,
    config: Config,
    window_start: Instant,
    window_end: Instant,
) -> RunStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = RunStats::new(config.duration);
    let mut history_sequence = 0;
    while Instant::now() < window_end {
        let kind = Kind::draw(&mut rng);
        if config.keying_and_think {
            sleep_until_or_end(Duration::from_secs_f64(kind.keying_s()), window_end).await;
            if Instant::now() >= window_end {
                break;
            }
        }
        let input = Input::draw(kind, &terminal, &mut rng);
        let started = Instant::now();
        let mut retries = 0;
        let mut outcome = None;
        let mut error = None;
        loop {
            history_sequence += 1;
            let history_id = schema::history_id(index as u64 + 1, history_sequence);
            match txns::run(&mut session, &terminal, &input, history_id, now_micros()).await {
                Ok(done) => {
                    outcome = Some(done);
                    break;
                }
                Err(e) if e.retryable && retries < RETRIES_MAX => {
                    retries += 1;
                    let backoff_ms_max = 1u64 << retries.min(RETRY_BACKOFF_EXPONENT_MAX);
                    tokio::time::sleep(Duration::from_micros(rng.random_range(0..=backoff_ms_max * 1000))).await;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let ended = Instant::now();
        if ended >= window_start && ended <= window_end {
            let kind_stats = &mut stats.per_kind[kind.index()];
            kind_stats.retries += u64::from(retries);
            match (outcome, error) {
                (Some(outcome), _) => {
                    match outcome {
                        Outcome::Committed => kind_stats.committed += 1,
                        Outcome::RolledBack => kind_stats.rolled_back += 1,
                    }
                    let micros = (ended - started).as_micros() as u64;
                    kind_stats.latency_us.record(micros.clamp(1, LATENCY_US_MAX)).expect("clamped into bounds");
                    let second = ((ended - window_start).as_secs() as usize).min(stats.timeline.len() - 1);
                    stats.timeline[second][kind.index()] += 1;
                }
                (None, Some(e)) => {
                    kind_stats.failures += 1;
                    let sample = e.to_string();
                    if kind_stats.error_samples.len() < ERROR_SAMPLES_MAX && !kind_stats.error_samples.contains(&sample)
                    {
                        kind_stats.error_samples.push(sample);
                    }
                }
                (None, None) => unreachable!("a transaction ends with an outcome or an error"),
            }
        }
        if config.keying_and_think {
            // Clause 5.2.5.4: negative exponential think time, capped.
            let mean = kind.think_mean_s();
            let uniform: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let think = (-uniform.ln() * mean).min(mean * THINK_TIME_MEAN_MULTIPLE_MAX);
            sleep_until_or_end(Duration::from_secs_f64(think), window_end).await;
        }
    }
    session.close().await;
    stats
}

async fn sleep_until_or_end(pause: Duration, end: Instant) {
    let wake = (Instant::now() + pause).min(end);
    tokio::time::sleep_until(wake.into()).await;
}
