//! The cluster part of the engine seam: which nodes are live, and what the
//! other nodes answer to a question about their subscriptions (see the
//! "Cluster" contract in the module documentation).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Pending;
use crate::hub::Space;

/// How long a survey waits for the other nodes' answers.
pub const SURVEY_TIMEOUT: Duration = Duration::from_millis(500);
/// Most names one node puts in an answer to another node.
pub const ANSWER_MAX_NAMES: usize = 10_000;
/// Most name bytes one node puts in an answer to another node.
pub const ANSWER_MAX_BYTES: usize = 1 << 20;
/// Most channels one survey asks about (`PUBSUB NUMSUB`).
pub const QUESTION_MAX_NAMES: usize = 1000;
/// Most channel-name bytes one survey asks about.
pub const QUESTION_MAX_BYTES: usize = 64 << 10;
/// Most globs a question's [`Scope`] carries.
pub const SCOPE_MAX_GLOBS: usize = 64;
/// Most glob bytes a question's [`Scope`] carries.
pub const SCOPE_MAX_BYTES: usize = 4 << 10;

/// A node's client connections, as `/stats` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connections {
    pub resp: u64,
    pub ws: u64,
    pub http: u64,
}

/// What the front ends know of a node's load (the hub knows the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub connections: Connections,
    /// Subscriptions of every client (channels, patterns, shard channels).
    pub subscriptions: u64,
}

/// A node's heartbeat: who it is, its load and its counters. Fields a
/// node of another version leaves out read as 0 (or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    pub name: String,
    pub version: String,
    pub uptime_ms: u64,
    pub connections: Connections,
    pub subscriptions: u64,
    /// Channels with a subscriber on the node.
    pub channels: u64,
    /// Distinct patterns subscribed on the node.
    pub patterns: u64,
    pub published: u64,
    pub delivered: u64,
    pub slow_disconnects: u64,
}

/// Another live node, as its last heartbeat showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub report: NodeReport,
    /// Time since that heartbeat arrived.
    pub age: Duration,
}

/// The other live nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub peers: Vec<Peer>,
    /// Why the list may be incomplete or stale (the engine cannot hear the
    /// other nodes right now); `None` when it is current.
    pub problem: Option<String>,
}

/// The asking client's rights: the `subscribe` globs of its token. An
/// answer to a question that carries one holds only the names they let
/// the client see (a channel, or what a `__presence__:`/`__leaderboard__:`
/// channel reports on, that a glob matches; a pattern the globs contain):
/// [`crate::auth::scope_sees_channel`], [`crate::auth::scope_sees_pattern`].
/// `None`: every name (the asker filters, if it must).
///
/// Within [`SCOPE_MAX_GLOBS`] and [`SCOPE_MAX_BYTES`] an engine carries
/// it to the other nodes; a larger one it may drop, so an answer may hold
/// more than the scope allows: the asker filters again either way.
pub type Scope = Option<Vec<String>>;

/// A question every node answers about its own subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// The channels with a subscriber (matching `pattern`, within
    /// `scope`), with counts.
    Channels {
        space: Space,
        pattern: Option<Bytes>,
        scope: Scope,
    },
    /// The subscribers of each channel.
    NumSub { space: Space, channels: Vec<Bytes> },
    /// The patterns subscribed (within `scope`).
    Patterns { scope: Scope },
}

impl Question {
    /// The asker's rights the question carries.
    pub fn scope(&self) -> Option<&[String]> {
        match self {
            Question::Channels { scope, .. } | Question::Patterns { scope } => scope.as_deref(),
            Question::NumSub { .. } => None,
        }
    }
}

/// Whether `scope` is within what one question carries.
pub fn scope_fits(scope: &[String]) -> bool {
    scope.len() <= SCOPE_MAX_GLOBS
        && scope.iter().map(String::len).sum::<usize>() <= SCOPE_MAX_BYTES
}

/// One node's answer: names with counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub counts: Vec<(Bytes, u64)>,
    /// The node left names out ([`ANSWER_MAX_NAMES`], [`ANSWER_MAX_BYTES`]).
    pub truncated: bool,
}

/// What a survey of the other nodes brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// Each answering node's name and answer.
    pub answers: Vec<(String, Answer)>,
    /// Live nodes that did not answer in time.
    pub missing: Vec<String>,
    /// Why the survey could not be sent or heard (Redis unreachable, too
    /// many surveys in flight); `None` when it went out.
    pub problem: Option<String>,
}

/// This node, as the engine reports it to the others and answers their
/// surveys. The hub implements it.
pub trait NodeSource: Send + Sync + 'static {
    /// This node's heartbeat.
    fn report(&self) -> NodeReport;

    /// This node's answer to another node's question, within
    /// [`ANSWER_MAX_NAMES`] and [`ANSWER_MAX_BYTES`].
    fn answer(&self, question: &Question) -> Answer;
}

/// Cluster-wide questions (see the module's contract). The defaults are a
/// single node's: nobody else to ask.
pub trait Cluster: Send + Sync {
    /// Starts heartbeats and answering other nodes' surveys, for `node`.
    /// The server calls it once, inside its runtime.
    fn start(&self, node: Arc<dyn NodeSource>) {
        let _ = node;
    }

    /// The other live nodes (this one excluded).
    fn peers(&self) -> Peers {
        Peers::default()
    }

    /// Asks every other live node `question`; waits at most
    /// [`SURVEY_TIMEOUT`] for their answers.
    fn survey(&self, question: Question) -> Pending<'_, Survey> {
        let _ = question;
        Pending::ready(Survey::default())
    }

    /// Tells the other nodes this one is leaving (a clean stop): they drop
    /// it from their live nodes at once rather than when its heartbeats
    /// stop arriving. No heartbeat is sent after it.
    fn leave(&self) -> Pending<'_, ()> {
        Pending::ready(())
    }
}

/// A node alone: the memory engine's (and any engine's by default).
pub struct SingleNode;

impl Cluster for SingleNode {}
