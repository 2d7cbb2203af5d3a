//! The state machine the workload replicates: single-key registers.
//!
//! Each group holds a few `u64` registers, all starting at 0. Commands are
//! reads (served through read-index, never logged), writes and
//! compare-and-set, encoded in a fixed 33-byte layout and tagged with the
//! operation id that lets the simulator answer the client that issued it.

use std::collections::BTreeMap;

use geodb_geo::paxos::Slot;

/// One register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write(u64),
    Cas { expected: u64, new: u64 },
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Value(u64),
    Written,
    Swapped(bool),
}

/// A logged command: which operation, on which key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub op_id: u64,
    pub key: u64,
    pub op: Op,
}

const COMMAND_BYTES: usize = 33;

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, a, b) = match self.op {
            Op::Read => (0u8, 0, 0),
            Op::Write(value) => (1, value, 0),
            Op::Cas { expected, new } => (2, expected, new),
        };
        let mut out = Vec::with_capacity(COMMAND_BYTES);
        out.extend_from_slice(&self.op_id.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Command {
        assert_eq!(bytes.len(), COMMAND_BYTES, "a register command is {COMMAND_BYTES} bytes");
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (a, b) = (word(17), word(25));
        let op = match bytes[8] {
            0 => Op::Read,
            1 => Op::Write(a),
            2 => Op::Cas { expected: a, new: b },
            kind => panic!("unknown register command kind {kind}"),
        };
        Command { op_id: word(0), key: word(9), op }
    }
}

/// The registers of one group on one node, rebuilt from snapshot and log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub values: BTreeMap<u64, u64>,
    pub applied: Slot,
}

impl Registers {
    pub fn read(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(0)
    }

    pub fn execute(&mut self, command: &Command) -> Output {
        match command.op {
            Op::Read => Output::Value(self.read(command.key)),
            Op::Write(value) => {
                self.values.insert(command.key, value);
                Output::Written
            }
            Op::Cas { expected, new } => {
                let swapped = self.read(command.key) == expected;
                if swapped {
                    self.values.insert(command.key, new);
                }
                Output::Swapped(swapped)
            }
        }
    }

    /// A digest of the values, to compare replicas and snapshots at one slot.
    pub fn digest(&self) -> u64 {
        // FNV-1a over the sorted pairs: stable across runs and platforms.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (key, value) in &self.values {
            for byte in key.to_le_bytes().into_iter().chain(value.to_le_bytes()) {
                hash ^= byte as u64;
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * self.values.len());
        for (key, value) in &self.values {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    pub fn restore(slot: Slot, data: &[u8]) -> Registers {
        assert_eq!(data.len() % 16, 0, "a register snapshot is a list of pairs");
        let values = data
            .chunks_exact(16)
            .map(|pair| {
                let key = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
                let value = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
                (key, value)
            })
            .collect();
        Registers { values, applied: slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn commands_round_trip(op_id: u64, key: u64, kind in 0u8..3, a: u64, b: u64) {
            let op = match kind { 0 => Op::Read, 1 => Op::Write(a), _ => Op::Cas { expected: a, new: b } };
            let command = Command { op_id, key, op };
            prop_assert_eq!(Command::decode(&command.encode()), command);
        }

        #[test]
        fn snapshots_round_trip(values in prop::collection::btree_map(any::<u64>(), any::<u64>(), 0..8)) {
            let registers = Registers { values, applied: Slot(3) };
            prop_assert_eq!(Registers::restore(Slot(3), &registers.snapshot()), registers);
        }
    }

    #[test]
    fn compare_and_set_swaps_only_on_a_match() {
        let mut registers = Registers::default();
        let cas = |expected, new| Command { op_id: 1, key: 9, op: Op::Cas { expected, new } };
        assert_eq!(registers.execute(&cas(1, 2)), Output::Swapped(false));
        assert_eq!(registers.execute(&cas(0, 2)), Output::Swapped(true));
        assert_eq!(registers.read(9), 2);
    }
}
