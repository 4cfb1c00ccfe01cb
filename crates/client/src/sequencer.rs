//! Read-committed sequencing of messages by their ids (see [`crate::message_id`]).
//!
//! A [`Sequencer`] takes a journal's messages in the order they were read and releases
//! exactly the committed ones, once each, in each producer's clock order:
//! - a message whose clock is at or below its producer's last acknowledged clock is a
//!   duplicate (an append retried, a journal re-read) and is dropped;
//! - `OUTSIDE_TXN` is released at once, and acknowledges its own clock;
//! - `CONTINUE_TXN` waits in its producer's pending transaction;
//! - `ACK_TXN` at clock `c` releases the pending messages with clocks below `c`, in clock
//!   order, and discards those above it: an acknowledgement at a clock earlier than the
//!   pending messages (a producer recovering its last committed state) rolls them back.
//!
//! One producer's messages reach a journal in the order it published them (a retried
//! append lands before its next one), which is what makes the rules above sound.

use std::collections::HashMap;

use uuid::Uuid;

use crate::message_id::{self, Clock, Flags, IdError, ProducerId};

/// Releases committed messages in order (see the module documentation).
#[derive(Debug)]
pub struct Sequencer<M> {
    producers: HashMap<ProducerId, Producer<M>>,
}

#[derive(Debug)]
struct Producer<M> {
    /// The last acknowledged clock.
    acked: Option<Clock>,
    /// The pending transaction's messages, by clock.
    pending: Vec<(Clock, M)>,
    /// The journal offset of the pending transaction's first message read.
    begin: Option<i64>,
}

/// What a checkpoint keeps of one producer: enough to read its messages again from
/// `begin` after a restart and release each committed one exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// The last acknowledged clock, if any.
    pub last_ack: Option<Clock>,
    /// The journal offset where the producer's pending transaction begins, if one is
    /// pending: reading must start there again to recover its messages.
    pub begin: Option<i64>,
}

impl<M> Default for Sequencer<M> {
    fn default() -> Self {
        Self {
            producers: HashMap::new(),
        }
    }
}

impl<M> Sequencer<M> {
    /// A sequencer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sequencer that continues from checkpointed producer states (see
    /// [`states`](Self::states)); its reader must start at or before every `begin`.
    pub fn restore(states: impl IntoIterator<Item = (ProducerId, ProducerState)>) -> Self {
        let producers = states
            .into_iter()
            .map(|(id, state)| {
                let producer = Producer {
                    acked: state.last_ack,
                    pending: Vec::new(),
                    begin: None,
                };
                (id, producer)
            })
            .collect();
        Self { producers }
    }

    /// Takes the next message read, with its `id` and the journal `offset` it begins at;
    /// returns the messages this commits, in order (empty while it waits for its
    /// transaction, or when it is a duplicate, a rollback, or an acknowledgement). An id
    /// that is not a message id is an error and changes nothing.
    pub fn push(&mut self, id: &Uuid, offset: i64, message: M) -> Result<Vec<M>, IdError> {
        let (producer, clock, flags) = message_id::parse(id)?;
        let state = self.producers.entry(producer).or_insert(Producer {
            acked: None,
            pending: Vec::new(),
            begin: None,
        });
        let duplicate = state.acked.is_some_and(|acked| clock <= acked);
        let released = match flags {
            Flags::CONTINUE_TXN => {
                if !duplicate && !state.pending.iter().any(|(c, _)| *c == clock) {
                    let at = state.pending.partition_point(|(c, _)| *c < clock);
                    state.pending.insert(at, (clock, message));
                    state.begin = Some(state.begin.map_or(offset, |b| b.min(offset)));
                }
                Vec::new()
            }
            Flags::ACK_TXN => {
                let cut = state.pending.partition_point(|(c, _)| *c < clock);
                let rolled_back = state.pending.split_off(cut);
                drop(rolled_back);
                let committed = std::mem::take(&mut state.pending);
                state.begin = None;
                state.acked = state.acked.max(Some(clock));
                committed.into_iter().map(|(_, m)| m).collect()
            }
            // OUTSIDE_TXN, and flags this sequencer does not know, which Gazette's readers
            // also treat as outside any transaction.
            _ => {
                if duplicate {
                    Vec::new()
                } else {
                    // A producer that publishes outside a transaction has given up the one
                    // it had pending.
                    state.pending.retain(|(c, _)| *c > clock);
                    if state.pending.is_empty() {
                        state.begin = None;
                    }
                    state.acked = Some(clock);
                    vec![message]
                }
            }
        };
        Ok(released)
    }

    /// Messages waiting for their transaction's acknowledgement, across producers.
    pub fn pending(&self) -> usize {
        self.producers.values().map(|p| p.pending.len()).sum()
    }

    /// Each producer's last acknowledged clock.
    pub fn acknowledged(&self) -> impl Iterator<Item = (ProducerId, Clock)> + '_ {
        self.producers
            .iter()
            .filter_map(|(id, p)| p.acked.map(|clock| (*id, clock)))
    }

    /// Each producer's state, as a checkpoint records it.
    pub fn states(&self) -> impl Iterator<Item = (ProducerId, ProducerState)> + '_ {
        self.producers.iter().map(|(id, p)| {
            let state = ProducerState {
                last_ack: p.acked,
                begin: (!p.pending.is_empty()).then_some(p.begin).flatten(),
            };
            (*id, state)
        })
    }

    /// The earliest offset a pending transaction begins at: a reader restarted from a
    /// checkpoint must start there (or earlier) to see those messages again.
    pub fn earliest_pending(&self) -> Option<i64> {
        self.states().filter_map(|(_, s)| s.begin).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(producer: u8, clock: u64, flags: Flags) -> Uuid {
        message_id::build(
            ProducerId::new([0, producer, 0, 0, 0, 0]),
            Clock(clock),
            flags,
        )
        .expect("id")
    }

    /// A test message: its producer and clock.
    type Msg = (u8, u64);

    /// One producer's transactions: each a count of messages, whether it commits, and
    /// whether it is published outside a transaction instead.
    #[derive(Debug, Clone)]
    struct Txn {
        messages: usize,
        commits: bool,
        outside: bool,
    }

    /// What producer `p` appends for `txns` (with `dups[i]` extra copies of its i-th
    /// append, right after it, as a retried append lands), and what it commits, in order.
    fn publish(p: u8, txns: &[Txn], dups: &[u8]) -> (Vec<(Uuid, Msg)>, Vec<Msg>) {
        let mut clock = 100u64;
        let mut last_committed = 0u64;
        let mut appended = Vec::new();
        let mut committed = Vec::new();
        for txn in txns {
            if txn.outside {
                clock += 1;
                appended.push((id(p, clock, Flags::OUTSIDE_TXN), (p, clock)));
                committed.push((p, clock));
                last_committed = clock;
                continue;
            }
            let mut these = Vec::new();
            for _ in 0..txn.messages {
                clock += 1;
                appended.push((id(p, clock, Flags::CONTINUE_TXN), (p, clock)));
                these.push((p, clock));
            }
            if txn.commits {
                clock += 1;
                appended.push((id(p, clock, Flags::ACK_TXN), (p, clock)));
                committed.extend(these);
                last_committed = clock;
            } else {
                // A rollback: the producer acknowledges its last committed clock again.
                appended.push((id(p, last_committed, Flags::ACK_TXN), (p, last_committed)));
            }
        }
        let mut with_dups = Vec::new();
        for (i, append) in appended.into_iter().enumerate() {
            for _ in 0..=dups.get(i).copied().unwrap_or(0) {
                with_dups.push(append);
            }
        }
        (with_dups, committed)
    }

    fn txns() -> impl Strategy<Value = Vec<Txn>> {
        proptest::collection::vec(
            (0usize..4, any::<bool>(), proptest::bool::weighted(0.2)).prop_map(
                |(messages, commits, outside)| Txn {
                    messages,
                    commits,
                    outside,
                },
            ),
            0..8,
        )
    }

    proptest! {
        /// Any interleaving of three producers' appends, with duplicates and rollbacks,
        /// reads as exactly the committed messages, once each, in each producer's order.
        #[test]
        fn exactly_the_committed_messages_once_in_order(
            a in txns(), b in txns(), c in txns(),
            dups in proptest::collection::vec(0u8..3, 64),
            picks in proptest::collection::vec(0usize..3, 256),
        ) {
            let streams = [publish(1, &a, &dups), publish(2, &b, &dups), publish(3, &c, &dups)];
            let mut queues: Vec<std::collections::VecDeque<_>> =
                streams.iter().map(|(appended, _)| appended.iter().copied().collect()).collect();
            let mut sequencer = Sequencer::new();
            let mut read = Vec::new();
            let mut pick = picks.iter().cycle();
            while queues.iter().any(|q| !q.is_empty()) {
                let mut q = *pick.next().expect("cycle") % 3;
                while queues[q].is_empty() {
                    q = (q + 1) % 3;
                }
                let (uuid, message) = queues[q].pop_front().expect("non-empty");
                read.extend(sequencer.push(&uuid, 0, message).expect("a message id"));
            }
            for (p, (_, committed)) in streams.iter().enumerate() {
                let got: Vec<(u8, u64)> =
                    read.iter().copied().filter(|(q, _)| usize::from(*q) == p + 1).collect();
                prop_assert_eq!(&got, committed, "producer {}", p + 1);
            }
            prop_assert_eq!(sequencer.pending(), 0, "nothing waits once every txn ended");
        }
    }

    proptest! {
        /// A reader that checkpoints its producer states and read-through offset, crashes,
        /// and restarts from the checkpoint (reading again from the earliest pending
        /// transaction) still reads exactly the committed messages, once each, in order.
        #[test]
        fn restarts_from_checkpoints_read_each_committed_message_once(
            a in txns(), b in txns(), c in txns(),
            dups in proptest::collection::vec(0u8..3, 64),
            picks in proptest::collection::vec(0usize..3, 256),
            checkpoints in proptest::collection::vec(any::<bool>(), 256),
            crashes in proptest::collection::vec(0usize..64, 0..4),
        ) {
            let streams = [publish(1, &a, &dups), publish(2, &b, &dups), publish(3, &c, &dups)];
            let mut queues: Vec<std::collections::VecDeque<_>> =
                streams.iter().map(|(appended, _)| appended.iter().copied().collect()).collect();
            // The journal: the three producers' appends interleaved; offsets are indexes.
            let mut journal = Vec::new();
            let mut pick = picks.iter().cycle();
            while queues.iter().any(|q| !q.is_empty()) {
                let mut q = *pick.next().expect("cycle") % 3;
                while queues[q].is_empty() {
                    q = (q + 1) % 3;
                }
                journal.push(queues[q].pop_front().expect("non-empty"));
            }

            let mut sequencer = Sequencer::new();
            let mut read: Vec<Msg> = Vec::new();
            // The last checkpoint: states, read-through offset and messages released.
            let mut checkpoint: (Vec<(ProducerId, ProducerState)>, usize, usize) =
                (Vec::new(), 0, 0);
            let mut crashes = crashes.into_iter();
            let mut next_crash = crashes.next();
            let mut since_checkpoint = 0;
            let mut at = 0;
            while at < journal.len() {
                let (uuid, message) = journal[at];
                read.extend(sequencer.push(&uuid, at as i64, message).expect("a message id"));
                at += 1;
                since_checkpoint += 1;
                if checkpoints[at % checkpoints.len()] {
                    checkpoint = (sequencer.states().collect(), at, read.len());
                    since_checkpoint = 0;
                }
                if next_crash.is_some_and(|n| since_checkpoint > n) {
                    next_crash = crashes.next();
                    // What was released after the checkpoint was never committed.
                    read.truncate(checkpoint.2);
                    sequencer = Sequencer::restore(checkpoint.0.iter().copied());
                    let pending = checkpoint.0.iter().filter_map(|(_, s)| s.begin).min();
                    at = pending.map_or(checkpoint.1, |b| (b as usize).min(checkpoint.1));
                    since_checkpoint = 0;
                }
            }
            for (p, (_, committed)) in streams.iter().enumerate() {
                let got: Vec<(u8, u64)> =
                    read.iter().copied().filter(|(q, _)| usize::from(*q) == p + 1).collect();
                prop_assert_eq!(&got, committed, "producer {}", p + 1);
            }
        }
    }

    #[test]
    fn pending_until_acknowledged_and_ids_checked() {
        let mut s = Sequencer::new();
        assert!(
            s.push(&id(1, 10, Flags::CONTINUE_TXN), 0, "a")
                .expect("ok")
                .is_empty()
        );
        assert!(
            s.push(&id(1, 11, Flags::CONTINUE_TXN), 0, "b")
                .expect("ok")
                .is_empty()
        );
        assert_eq!(s.pending(), 2);
        assert_eq!(
            s.push(&id(1, 12, Flags::ACK_TXN), 0, "ack").expect("ok"),
            vec!["a", "b"]
        );
        assert!(
            s.push(&id(1, 11, Flags::CONTINUE_TXN), 0, "b")
                .expect("ok")
                .is_empty(),
            "duplicate"
        );
        let (producer, clock) = s.acknowledged().next().expect("one producer");
        assert_eq!((producer.0[1], clock), (1, Clock(12)));
        let not_v1 = Uuid::from_u128(0x6f1e_2b3c_4d5e_4f60_8a7b_8c9d_0e1f_2a3b);
        assert!(s.push(&not_v1, 0, "x").is_err());
        assert_eq!(s.pending(), 0);
    }
}
