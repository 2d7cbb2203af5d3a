//! The hybrid logical clock.
//!
//! A hybrid logical clock (Kulkarni, Demirbas et al., *Logical Physical
//! Clocks and Consistent Snapshots in Globally Distributed Databases*, 2014)
//! hands out [`Timestamp`]s that
//!
//! 1. strictly increase at each node (every [`Hlc::now`] is greater than
//!    every earlier reading and every timestamp passed to [`Hlc::update`]),
//! 2. stay close to physical time: the physical part is the largest
//!    physical reading seen, locally or in a received timestamp, and the
//!    logical counter only orders events within one physical reading,
//! 3. carry causality across nodes: a timestamp received in a message is
//!    folded in with the max rule, so everything after the receipt is
//!    ordered after the send.
//!
//! The physical clock is a trait ([`Clock`]) so that tests and the
//! simulator inject time (skew, drift, jumps backwards). Why not the
//! `hlc-gen` crate: its clock source cannot be injected and its resolution
//! is fixed at milliseconds (see `docs/design/hlc.md`).
//!
//! The bound ε (`max_offset_ns`) is the operator's promise about clock
//! error. A received timestamp more than ε ahead of the local physical
//! clock is refused ([`Error::ClockOffset`]) rather than dragging this
//! node's clock forward without limit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use geodb_storage::Timestamp;

use crate::{Error, Result};

/// A physical clock: nanoseconds since the Unix epoch. It may jump
/// backwards (NTP steps); the HLC never does.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        // A clock before 1970 is a broken machine; reading 0 keeps the HLC
        // monotone (it only ever moves forwards) while the operator looks.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64)
    }
}

/// A clock that moves only when told to: for tests and the simulator.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ns: u64) -> Self {
        ManualClock(AtomicU64::new(now_ns))
    }

    pub fn set(&self, now_ns: u64) {
        self.0.store(now_ns, Ordering::SeqCst);
    }

    pub fn advance(&self, by_ns: u64) {
        self.0.fetch_add(by_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A hybrid logical clock over a physical [`Clock`].
pub struct Hlc {
    clock: Box<dyn Clock>,
    last: Mutex<Timestamp>,
    max_offset_ns: u64,
    /// 0 while this node's clock is within the bound of its peers'; else
    /// the offset measured (set by the node's [`crate::Host`]).
    unsynchronized_ns: AtomicU64,
}

impl Hlc {
    /// A clock that refuses remote timestamps more than `max_offset_ns`
    /// ahead of its physical clock.
    pub fn new(clock: Box<dyn Clock>, max_offset_ns: u64) -> Self {
        Hlc { clock, last: Mutex::new(Timestamp::ZERO), max_offset_ns, unsynchronized_ns: AtomicU64::new(0) }
    }

    /// Records what the node's offset measurements say: `Some(offset)` when
    /// its clock is further than the bound from most of its peers', `None`
    /// when it is within it.
    pub fn set_unsynchronized(&self, offset_ns: Option<u64>) {
        self.unsynchronized_ns.store(offset_ns.map_or(0, |offset| offset.max(1)), Ordering::SeqCst);
    }

    /// The offset beyond the bound, if this node's clock is outside it.
    pub fn unsynchronized(&self) -> Option<u64> {
        match self.unsynchronized_ns.load(Ordering::SeqCst) {
            0 => None,
            offset => Some(offset),
        }
    }

    /// Refuses work that relies on the bound (coordinated transactions)
    /// while this node's clock is outside it.
    pub fn check_synchronized(&self) -> Result<()> {
        match self.unsynchronized() {
            None => Ok(()),
            Some(offset_ns) => Err(Error::ClockUnsynchronized { offset_ns, bound_ns: self.max_offset_ns }),
        }
    }

    pub fn max_offset_ns(&self) -> u64 {
        self.max_offset_ns
    }

    /// The physical clock's reading.
    pub fn physical_now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Timestamp> {
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new timestamp, greater than every earlier one.
    pub fn now(&self) -> Timestamp {
        let physical = self.clock.now_ns();
        let mut last = self.last();
        // Kulkarni et al. §3.3, send/local event: l' = max(l, pt); the counter
        // increments only when the physical part did not move forwards.
        // `Timestamp::next` carries a full counter into the physical part, so
        // counter overflow cannot repeat or reorder timestamps.
        let next = if physical > last.physical { Timestamp::new(physical, 0) } else { last.next() };
        assert!(next > *last, "hybrid logical clock went backwards");
        *last = next;
        next
    }

    /// Folds in a timestamp received from another node (the max rule) and
    /// returns a local timestamp greater than it. Refuses timestamps more
    /// than the bound ahead of the local physical clock, unless this clock
    /// is past them already (then they drag nothing forward).
    pub fn update(&self, remote: Timestamp) -> Result<Timestamp> {
        self.receive(remote)?;
        Ok(self.now())
    }

    /// Folds in a timestamp received from another node (the max rule),
    /// with [`Hlc::update`]'s check, without taking a reading.
    pub fn receive(&self, remote: Timestamp) -> Result<()> {
        let physical = self.clock.now_ns();
        let offset_ns = remote.physical.saturating_sub(physical);
        if offset_ns > self.max_offset_ns && remote > *self.last() {
            return Err(Error::ClockOffset { offset_ns, bound_ns: self.max_offset_ns });
        }
        self.observe(remote);
        Ok(())
    }

    /// [`Hlc::observe`] for a timestamp this node's physical clock has
    /// already reached; a later one is not followed. Timestamps a node
    /// applies or hears of may lie ahead of every clock on purpose (writes
    /// of a shard that closes timestamps, R14): following them would push
    /// every timestamp this node hands out, and every commit wait, that far
    /// ahead, and its readings past what the refusal rule allows its peers.
    /// Causality needs no more: every node-to-node message carries its
    /// sender's reading ([`Hlc::receive`]), and each shard keeps its own
    /// floor above its timestamps.
    pub fn observe_past(&self, ts: Timestamp) {
        if ts.physical <= self.clock.now_ns() {
            self.observe(ts);
        }
    }

    /// Makes every later reading greater than `ts`, without the offset
    /// check: for timestamps this node itself made durable earlier (a
    /// restart must not hand out timestamps below its own data).
    pub fn observe(&self, ts: Timestamp) {
        let mut last = self.last();
        if ts > *last {
            *last = ts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    enum Step {
        /// Move the physical clock by this many ns (negative: backwards).
        Tick(i64),
        Now,
        Receive(u64, u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (-1_000i64..1_000).prop_map(Step::Tick),
            Just(Step::Now),
            (0u64..20_000, any::<u32>()).prop_map(|(p, l)| Step::Receive(p, l)),
        ]
    }

    proptest! {
        #[test]
        fn readings_are_monotone_and_never_behind_a_received_timestamp(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            let clock = Arc::new(ManualClock::new(10_000));
            let hlc = Hlc::new(Box::new(clock.clone()), 500);
            let mut previous = Timestamp::ZERO;
            for step in steps {
                match step {
                    Step::Tick(by) => clock.set(clock.now_ns().saturating_add_signed(by)),
                    Step::Now => {
                        let ts = hlc.now();
                        prop_assert!(ts > previous);
                        prop_assert!(ts.physical >= clock.now_ns());
                        previous = ts;
                    }
                    Step::Receive(physical, logical) => {
                        let remote = Timestamp::new(physical, logical);
                        match hlc.update(remote) {
                            Ok(ts) => {
                                prop_assert!(ts > remote && ts > previous);
                                previous = ts;
                            }
                            Err(Error::ClockOffset { offset_ns, .. }) => {
                                prop_assert!(physical > clock.now_ns() + 500);
                                prop_assert_eq!(offset_ns, physical - clock.now_ns());
                            }
                            Err(other) => prop_assert!(false, "unexpected {other}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn logical_counter_overflow_carries_into_the_physical_part() {
        let clock = Arc::new(ManualClock::new(100));
        let hlc = Hlc::new(Box::new(clock.clone()), 1_000);
        hlc.observe(Timestamp::new(100, u32::MAX - 1));
        let a = hlc.now();
        let b = hlc.now();
        assert_eq!(a, Timestamp::new(100, u32::MAX));
        assert_eq!(b, Timestamp::new(101, 0));
        assert!(b > a);
    }

    #[test]
    fn a_clock_stepping_backwards_does_not_move_the_hlc_backwards() {
        let clock = Arc::new(ManualClock::new(1_000));
        let hlc = Hlc::new(Box::new(clock.clone()), 10);
        let before = hlc.now();
        clock.set(10);
        let after = hlc.now();
        assert!(after > before);
        assert_eq!(after.physical, 1_000);
    }

    #[test]
    fn a_message_carries_its_senders_clock_and_the_receiver_follows_it_within_the_bound() {
        use crate::host::{Body, NodeMessage, observe_sender_clock, stamp_messages};
        use geodb_geo::NodeId;
        let ahead = Hlc::new(Box::new(ManualClock::new(5_000)), 10);
        let receiver_clock = Arc::new(ManualClock::new(4_995));
        let receiver = Hlc::new(Box::new(receiver_clock.clone()), 10);
        let ping = || NodeMessage::new(NodeId(1), NodeId(2), Body::ClockPing { sent_ns: 0 });
        let mut messages = vec![ping(), ping()];
        stamp_messages(&ahead, &mut messages);
        assert_eq!(messages[0].hlc, messages[1].hlc, "one reading for the whole batch");
        assert_eq!(messages[0].hlc, Timestamp::new(5_000, 0));
        assert!(observe_sender_clock(&receiver, &messages[0]));
        assert!(receiver.now() > messages[0].hlc, "the receiver's next timestamp is above the sender's reading");

        // A sender more than ε ahead is not followed.
        receiver_clock.set(4_000);
        let far = Hlc::new(Box::new(ManualClock::new(6_000)), 10);
        let mut message = ping();
        stamp_messages(&far, std::slice::from_mut(&mut message));
        assert!(!observe_sender_clock(&receiver, &message));
        assert!(receiver.now() < message.hlc);
    }

    #[test]
    fn a_timestamp_beyond_the_bound_is_refused() {
        let clock = Arc::new(ManualClock::new(1_000));
        let hlc = Hlc::new(Box::new(clock.clone()), 10);
        assert!(hlc.update(Timestamp::new(1_010, 0)).is_ok());
        assert!(matches!(
            hlc.update(Timestamp::new(1_011, 0)),
            Err(Error::ClockOffset { offset_ns: 11, bound_ns: 10 })
        ));
    }
}
