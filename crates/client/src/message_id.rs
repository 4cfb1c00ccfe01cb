//! Message ids: Gazette's v1 UUIDs, which make exactly-once processing possible.
//!
//! Every message a producer publishes carries an RFC 4122 version 1 UUID whose parts mean:
//! - the 48-bit **node** is the [`ProducerId`] (random, with the multicast bit set, so it
//!   can never be a real MAC address);
//! - the 60-bit timestamp (100 ns ticks since 15 October 1582) followed by the top 4 bits
//!   of the 14-bit clock sequence is the producer's [`Clock`], which only grows: a reader
//!   drops a message whose clock is at or below one it already acknowledged;
//! - the low 10 bits of the clock sequence are [`Flags`]: outside a transaction, part of
//!   one, or the acknowledgement that commits (or rolls back) a producer's transaction.
//!
//! The layout is Gazette's, so ids written by Gazette's publishers read here and the other
//! way round. Encoding and decoding the UUID itself is the `uuid` crate's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// 100 ns ticks from 15 October 1582 (the v1 UUID epoch) to the Unix epoch.
const GREGORIAN_TO_UNIX_TICKS: u64 = 0x01B2_1DD2_1381_4000;

/// Largest flags value (10 bits).
pub const MAX_FLAGS: u16 = 0x3ff;

/// The producer of a message: the node field of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub [u8; 6]);

impl ProducerId {
    /// A producer id from `bytes`, with the multicast bit set (as every producer id has).
    pub fn new(mut bytes: [u8; 6]) -> Self {
        bytes[0] |= 0x01;
        Self(bytes)
    }

    /// A fresh random producer id (seeded by the standard library's per-process random
    /// hashing keys, the time and the process id).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(now.as_nanos());
        hasher.write_u32(std::process::id());
        let bits = hasher.finish().to_be_bytes();
        Self::new([bits[0], bits[1], bits[2], bits[3], bits[4], bits[5]])
    }
}

/// A producer's clock: a v1 timestamp (60 bits of 100 ns ticks) and a 4-bit counter below
/// it, so a producer can stamp 16 messages within one tick and still order them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Clock(pub u64);

impl Clock {
    /// The clock at `time` (counter 0). Times before the v1 epoch are clock 0.
    pub fn at(time: SystemTime) -> Self {
        let ticks = match time.duration_since(UNIX_EPOCH) {
            Ok(since) => GREGORIAN_TO_UNIX_TICKS.saturating_add(ticks_of(since)),
            Err(before) => GREGORIAN_TO_UNIX_TICKS.saturating_sub(ticks_of(before.duration())),
        };
        Self(ticks.min((1 << 60) - 1) << 4)
    }

    /// The wall-clock time of this clock (to 100 ns; the counter is ignored).
    pub fn time(self) -> SystemTime {
        let ticks = self.0 >> 4;
        let nanos = |t: u64| Duration::from_nanos(t.saturating_mul(100));
        if ticks >= GREGORIAN_TO_UNIX_TICKS {
            UNIX_EPOCH + nanos(ticks - GREGORIAN_TO_UNIX_TICKS)
        } else {
            UNIX_EPOCH - nanos(GREGORIAN_TO_UNIX_TICKS - ticks)
        }
    }

    /// The next clock value (the counter, carrying into the timestamp).
    #[must_use]
    pub fn tick(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// Moves the clock to `time` if that is later, else ticks it: a producer's clock never
    /// goes back, even when the wall clock does.
    #[must_use]
    pub fn update(self, time: SystemTime) -> Self {
        self.tick().max(Self::at(time))
    }
}

fn ticks_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos() / 100).unwrap_or(u64::MAX)
}

/// The transaction flags of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// Outside any transaction: processed as soon as it is read.
    pub const OUTSIDE_TXN: Flags = Flags(0x0);
    /// Part of the producer's pending transaction: processed once acknowledged.
    pub const CONTINUE_TXN: Flags = Flags(0x1);
    /// Commits the producer's messages with smaller clocks (or, at a clock below pending
    /// ones, rolls them back).
    pub const ACK_TXN: Flags = Flags(0x2);
}

/// A message id that is not one of these v1 UUIDs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Flags need more than 10 bits.
    #[error("message flags {0:#x} do not fit in 10 bits (at most {MAX_FLAGS:#x})")]
    FlagsTooLarge(u16),
    /// Not a version 1 (time-based) RFC 4122 UUID.
    #[error("message id {0} is not an RFC 4122 version 1 UUID (version {1})")]
    NotVersion1(Uuid, usize),
}

/// The id of a message of `producer` at `clock` with `flags`.
pub fn build(producer: ProducerId, clock: Clock, flags: Flags) -> Result<Uuid, IdError> {
    if flags.0 > MAX_FLAGS {
        return Err(IdError::FlagsTooLarge(flags.0));
    }
    let ticks = clock.0 >> 4;
    let sequence = ((clock.0 & 0xf) as u16) << 10 | flags.0;
    Ok(uuid::Builder::from_gregorian_timestamp(ticks, sequence, &producer.0).into_uuid())
}

/// The producer, clock and flags of a message id.
pub fn parse(id: &Uuid) -> Result<(ProducerId, Clock, Flags), IdError> {
    let (Some(timestamp), Some(node), uuid::Variant::RFC4122) =
        (id.get_timestamp(), id.get_node_id(), id.get_variant())
    else {
        return Err(IdError::NotVersion1(*id, id.get_version_num()));
    };
    if id.get_version_num() != 1 {
        return Err(IdError::NotVersion1(*id, id.get_version_num()));
    }
    let (ticks, sequence) = timestamp.to_gregorian();
    let clock = Clock(ticks << 4 | u64::from(sequence >> 10));
    Ok((ProducerId(node), clock, Flags(sequence & MAX_FLAGS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_round_trip(node in any::<[u8; 6]>(), clock in any::<u64>(), flags in 0..=MAX_FLAGS) {
            let producer = ProducerId::new(node);
            let id = build(producer, Clock(clock), Flags(flags)).expect("id");
            prop_assert_eq!(id.get_version_num(), 1);
            prop_assert_eq!(parse(&id).expect("parse"), (producer, Clock(clock), Flags(flags)));
        }

        #[test]
        fn clocks_only_grow(start in any::<u32>(), steps in proptest::collection::vec(-5_000i64..5_000, 1..50)) {
            let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let mut clock = Clock::at(base + Duration::from_micros(u64::from(start)));
            for step in steps {
                let now = if step >= 0 {
                    base + Duration::from_micros(step as u64)
                } else {
                    base - Duration::from_micros(step.unsigned_abs())
                };
                let next = clock.update(now);
                prop_assert!(next > clock, "{next:?} after {clock:?}");
                clock = next;
            }
        }
    }

    #[test]
    fn a_known_id_decodes_to_its_parts() {
        // 2024-01-02T03:04:05Z, counter 3, flags ACK_TXN, producer 01:02:03:04:05:06. The
        // expected text is Python's `uuid.UUID(fields=...)` of the same v1 fields.
        let time = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        let clock = Clock(Clock::at(time).0 + 3);
        let producer = ProducerId::new([1, 2, 3, 4, 5, 6]);
        let id = build(producer, clock, Flags::ACK_TXN).expect("id");
        assert_eq!(id.to_string(), "968b8080-a91b-11ee-8c02-010203040506");
        let (p, c, f) = parse(&id).expect("parse");
        assert_eq!((p, c, f), (producer, clock, Flags::ACK_TXN));
        assert_eq!(c.time(), time);
    }

    #[test]
    fn bad_flags_and_other_versions_are_refused() {
        let err = build(ProducerId::random(), Clock(0), Flags(0x400)).expect_err("11 bits");
        assert_eq!(
            err.to_string(),
            "message flags 0x400 do not fit in 10 bits (at most 0x3ff)"
        );
        let v4 = Uuid::from_u128(0x6f1e_2b3c_4d5e_4f60_8a7b_8c9d_0e1f_2a3b);
        assert!(matches!(parse(&v4), Err(IdError::NotVersion1(_, 4))));
        assert!(ProducerId::random().0[0] & 0x01 == 1, "multicast bit set");
    }
}
