//! The hub's write and read API for keyspace data: one method per data
//! operation, taking typed arguments (parsed by a front end) and returning
//! typed results (encoded by a front end). The keyspace lock and the data
//! types' rules live here and in the types (`hub::stream`, `hub::zset`),
//! never in a front end: a front end parses, authorizes, calls and encodes,
//! as mini-redis's `cmd` files do.

mod keys;
mod sets;
mod streams;
mod zsets;

/// Why a data operation failed, in the words Redis uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// Any other error, as the full Redis error line (`ERR no such key`).
    #[error("{0}")]
    Other(std::borrow::Cow<'static, str>),
}

impl From<super::engine::EngineError> for DataError {
    fn from(e: super::engine::EngineError) -> Self {
        DataError::Other(format!("ERR {e}").into())
    }
}

impl From<super::keyspace::WrongType> for DataError {
    fn from(_: super::keyspace::WrongType) -> Self {
        DataError::WrongType
    }
}

pub use self::streams::{
    AutoClaim, AutoClaimed, Claim, ClaimOpts, Claimed, ConsumerInfo, GroupError, GroupFrom,
    GroupInfo, PendingQuery, PendingRow, PendingSummary, ReadEntry, ReadFrom, StreamInfo, TrimArgs,
    XAdd, XRange, XReadResult, INVALID_ID,
};
pub use self::zsets::{
    Aggregate, LexBound, ScoreBound, ZAddFlags, ZAdded, ZRange, ZSpan, ZStoreOp,
};
pub use keys::{ExpireCondition, KeyTtl, KeyspaceStats};
pub use sets::{rand_index, random_picks, RandomPick, SetOp, PRESENCE_READ_ONLY};
mod blocking;
pub use self::blocking::KeyWakeups;
mod hashes;
mod list_waits;
mod lists;
mod longdouble;
mod strings;
pub use hashes::{FieldValue, INCR_NAN_OR_INFINITY, NOT_FLOAT_FIELD, NOT_INTEGER_FIELD};
pub use list_waits::{BlockingPop, ListServed, ListWaitGuard, ListWaits, PopTo, Popped};
pub use lists::{blocking_timeout, Lpos, INDEX_OUT_OF_RANGE, NO_SUCH_KEY};
pub use strings::{
    substring, Expiry, SetCondition, SetOptions, SetOutcome, NAN_OR_INFINITY, NOT_FLOAT,
    NOT_INTEGER, OVERFLOW, TOO_LONG,
};
