//! The control channel between nodes: heartbeats, and surveys that ask
//! every live node about its own subscribers (cluster-wide `PUBSUB`,
//! `/api/channels`, `/stats`).
//!
//! Plain pub/sub on its own connection (plain `PUBLISH` reaches every node
//! of a Redis Cluster too):
//!
//! - `{prefix}:control`: every node's heartbeat (`H` + JSON
//!   [`NodeReport`] and `control`, every [`HEARTBEAT`]), survey questions
//!   (`Q`, `S`) and leaves (`L` + the leaving node's name);
//! - `{prefix}:control:{node}`: the answers to that node's questions (`A`).
//!
//! Questions and answers are fields of bytes, each a 4-byte big-endian
//! length and the bytes: `Q` from, id, kind, arguments; `S` from, id,
//! kind, the number of globs, the globs (the asker's [`Scope`]), then the
//! arguments; `A` from, id, `t` when truncated, then name and count pairs.
//! Everything read is bounded: frames past their kind's size are dropped
//! unread, at most [`MAX_PEERS`] nodes are tracked, answers are taken only
//! for surveys in flight from the nodes asked, a scope holds at most
//! [`SCOPE_MAX_GLOBS`] globs of [`SCOPE_MAX_BYTES`]. A node sends at most
//! [`SURVEYS_IN_FLIGHT`] surveys at once, each holding its slot at least
//! [`SURVEY_SPACING`].
//!
//! Versions: a heartbeat's `control` is the newest [`CONTROL_VERSION`] the
//! node speaks (absent, 0, before `S` and `L`). Older nodes ignore the
//! field, and frames of a tag they do not know; so a node sends `S` only
//! while every live node says it reads it, and `Q` (answered in full,
//! filtered by the asker) otherwise. A node that does not read `L` keeps
//! a leaver listed until its heartbeats age out, as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use super::RedisEngine;
use crate::hub::engine::cluster::{
    scope_fits, Answer, Cluster, NodeReport, NodeSource, Peer, Peers, Question, Scope, Survey,
    ANSWER_MAX_BYTES, ANSWER_MAX_NAMES, QUESTION_MAX_BYTES, QUESTION_MAX_NAMES, SCOPE_MAX_BYTES,
    SCOPE_MAX_GLOBS, SURVEY_TIMEOUT,
};
use crate::hub::engine::Pending;
use crate::hub::Space;

/// The control protocol this node speaks, in its heartbeats: 1 reads
/// scoped questions (`S`) and leaves (`L`).
pub const CONTROL_VERSION: u32 = 1;
/// How often a node sends its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node is live while its last heartbeat is younger than this (three
/// missed heartbeats and a half).
pub const LIVE_FOR: Duration = Duration::from_millis(3500);
/// Most other nodes tracked.
pub const MAX_PEERS: usize = 1024;
/// Surveys one node has in flight at most.
pub const SURVEYS_IN_FLIGHT: usize = 4;
/// Least time a survey holds its slot: a node sends at most
/// `SURVEYS_IN_FLIGHT / SURVEY_SPACING` (400) surveys a second.
pub const SURVEY_SPACING: Duration = Duration::from_millis(10);
/// Most bytes of answers one survey keeps, over every node (each answer
/// is bounded, but up to [`MAX_PEERS`] nodes answer): past it, an answer
/// counts as given, empty and truncated.
pub const SURVEY_MAX_BYTES: usize = 8 << 20;
/// Surveys waiting for a slot at most (each parks a RESP connection's
/// thread); past it, a survey is answered at once with this node's data.
pub const SURVEYS_QUEUED: usize = 16;
/// Answers to other nodes being sent at once; past it, questions go
/// unanswered (the asker counts this node as missing).
const REPLIES_IN_FLIGHT: usize = 16;
const MAX_NAME: usize = 256;
const MAX_HEARTBEAT: usize = 8 << 10;
const MAX_QUESTION: usize =
    QUESTION_MAX_BYTES + 4 * QUESTION_MAX_NAMES + SCOPE_MAX_BYTES + 4 * SCOPE_MAX_GLOBS + 1024;
const MAX_ANSWER: usize =
    ANSWER_MAX_BYTES + 2 * 4 * ANSWER_MAX_NAMES + 20 * ANSWER_MAX_NAMES + 1024;

/// The control channel's state, one per engine.
pub(super) struct Control {
    source: OnceLock<Arc<dyn NodeSource>>,
    peers: Mutex<HashMap<String, Known>>,
    pending: Mutex<HashMap<u64, Waiting>>,
    next_id: AtomicU64,
    surveys: Arc<tokio::sync::Semaphore>,
    /// Surveys waiting for a slot.
    queued: AtomicUsize,
    replies: Arc<tokio::sync::Semaphore>,
    /// The control subscription is up.
    linked: AtomicBool,
    /// Held by the heartbeat under way: one at a time, and a leave waits
    /// for it, so no heartbeat of this node arrives after its leave.
    beat: Arc<tokio::sync::Semaphore>,
    /// This node announced (or is announcing) its leave: no more heartbeats.
    leaving: AtomicBool,
    /// The engine itself, for the tasks `start` spawns.
    pub(super) me: OnceLock<Weak<RedisEngine>>,
}

/// Another node, as its last heartbeat showed it.
struct Known {
    report: NodeReport,
    at: Instant,
    /// The control protocol it speaks ([`CONTROL_VERSION`]; 0: older).
    control: u32,
}

/// What a heartbeat says besides its [`NodeReport`].
#[derive(Deserialize, Default)]
struct Caps {
    #[serde(default)]
    control: u32,
}

struct Waiting {
    left: HashSet<String>,
    answers: Vec<(String, Answer)>,
    /// Bytes of the answers kept (at most [`SURVEY_MAX_BYTES`]).
    bytes: usize,
    done: Arc<tokio::sync::Notify>,
}

impl Control {
    pub(super) fn new() -> Control {
        Control {
            source: OnceLock::new(),
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            surveys: Arc::new(tokio::sync::Semaphore::new(SURVEYS_IN_FLIGHT)),
            queued: AtomicUsize::new(0),
            replies: Arc::new(tokio::sync::Semaphore::new(REPLIES_IN_FLIGHT)),
            linked: AtomicBool::new(false),
            beat: Arc::new(tokio::sync::Semaphore::new(1)),
            leaving: AtomicBool::new(false),
            me: OnceLock::new(),
        }
    }

    fn live(&self) -> Vec<Peer> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|k| k.at.elapsed() < LIVE_FOR)
            .map(|k| Peer {
                report: k.report.clone(),
                age: k.at.elapsed(),
            })
            .collect()
    }

    /// The live nodes' names, and whether every one of them reads scoped
    /// questions.
    fn live_names(&self) -> (Vec<String>, bool) {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<&Known> = peers
            .values()
            .filter(|k| k.at.elapsed() < LIVE_FOR)
            .collect();
        let scoped = live.iter().all(|k| k.control >= 1);
        (live.iter().map(|k| k.report.name.clone()).collect(), scoped)
    }

    fn problem(&self) -> Option<String> {
        (!self.linked.load(Ordering::Relaxed))
            .then(|| "engine unavailable: the control channel is down".to_string())
    }
}

/// A survey counted in `Control::queued` until dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `len(4 bytes, big-endian) bytes` per field, after a tag byte.
fn encode(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
    let len = 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(tag);
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The fields of a frame; `None` when malformed.
fn decode(mut body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        body = &rest[len..];
    }
    Some(out)
}

fn kind_of(q: &Question) -> &'static [u8] {
    match q {
        Question::Channels {
            space: Space::Global,
            ..
        } => b"channels",
        Question::Channels {
            space: Space::Shard,
            ..
        } => b"shardchannels",
        Question::NumSub {
            space: Space::Global,
            ..
        } => b"numsub",
        Question::NumSub {
            space: Space::Shard,
            ..
        } => b"shardnumsub",
        Question::Patterns { .. } => b"patterns",
    }
}

/// `Q`, or `S` carrying the question's scope when `scoped` (every node
/// asked reads it) and the scope is within bounds.
fn question_frame(from: &str, id: u64, q: &Question, scoped: bool) -> Vec<u8> {
    let id = id.to_string();
    let mut fields: Vec<&[u8]> = vec![from.as_bytes(), id.as_bytes(), kind_of(q)];
    let scope = q.scope().filter(|s| scoped && scope_fits(s));
    let count;
    if let Some(globs) = scope {
        count = globs.len().to_string();
        fields.push(count.as_bytes());
        fields.extend(globs.iter().map(|g| g.as_bytes()));
    }
    match q {
        Question::Channels {
            pattern: Some(p), ..
        } => fields.push(p),
        Question::NumSub { channels, .. } => fields.extend(channels.iter().map(|c| &c[..])),
        _ => {}
    }
    encode(if scope.is_some() { b'S' } else { b'Q' }, &fields)
}

fn parse_question(fields: &[&[u8]]) -> Option<Question> {
    let args = &fields[3..];
    let space = |b: &[u8]| {
        if b.starts_with(b"shard") {
            Space::Shard
        } else {
            Space::Global
        }
    };
    match fields[2] {
        k @ (b"channels" | b"shardchannels") if args.len() <= 1 => Some(Question::Channels {
            space: space(k),
            pattern: args.first().map(|p| Bytes::copy_from_slice(p)),
            scope: None,
        }),
        k @ (b"numsub" | b"shardnumsub") if args.len() <= QUESTION_MAX_NAMES => {
            Some(Question::NumSub {
                space: space(k),
                channels: args.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
            })
        }
        b"patterns" if args.is_empty() => Some(Question::Patterns { scope: None }),
        _ => None,
    }
}

/// An `S` question: the fields of a `Q` with the scope after the kind
/// (the number of globs, then the globs). `None` past
/// [`SCOPE_MAX_GLOBS`]/[`SCOPE_MAX_BYTES`], for globs that are not UTF-8
/// (a token's are), or for a kind that takes no scope.
fn parse_scoped(fields: &[&[u8]]) -> Option<Question> {
    let n: usize = std::str::from_utf8(fields.get(3)?).ok()?.parse().ok()?;
    if n > SCOPE_MAX_GLOBS || fields.len() < 4 + n {
        return None;
    }
    let globs = &fields[4..4 + n];
    if globs.iter().map(|g| g.len()).sum::<usize>() > SCOPE_MAX_BYTES {
        return None;
    }
    let scope: Scope = Some(
        globs
            .iter()
            .map(|g| String::from_utf8(g.to_vec()).ok())
            .collect::<Option<Vec<String>>>()?,
    );
    let mut rest = fields[..3].to_vec();
    rest.extend_from_slice(&fields[4 + n..]);
    match parse_question(&rest)? {
        Question::Channels { space, pattern, .. } => Some(Question::Channels {
            space,
            pattern,
            scope,
        }),
        Question::Patterns { .. } => Some(Question::Patterns { scope }),
        Question::NumSub { .. } => None,
    }
}

fn answer_frame(from: &str, id: &[u8], a: &Answer) -> Vec<u8> {
    let counts: Vec<String> = a.counts.iter().map(|(_, n)| n.to_string()).collect();
    let mut fields: Vec<&[u8]> = vec![from.as_bytes(), id, if a.truncated { b"t" } else { b"" }];
    for ((name, _), n) in a.counts.iter().zip(&counts) {
        fields.push(name);
        fields.push(n.as_bytes());
    }
    encode(b'A', &fields)
}

fn parse_answer(fields: &[&[u8]]) -> Option<Answer> {
    let pairs = &fields[3..];
    if !pairs.len().is_multiple_of(2) || pairs.len() / 2 > ANSWER_MAX_NAMES {
        return None;
    }
    let mut counts = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        let n: u64 = std::str::from_utf8(p[1]).ok()?.parse().ok()?;
        counts.push((Bytes::copy_from_slice(p[0]), n));
    }
    Some(Answer {
        counts,
        truncated: fields[2] == b"t",
    })
}

impl RedisEngine {
    fn control_channel(&self) -> Vec<u8> {
        let mut k = self.opts.prefix.as_bytes().to_vec();
        k.extend_from_slice(b":control");
        k
    }

    fn reply_channel(&self, node: &[u8]) -> Vec<u8> {
        let mut k = self.control_channel();
        k.push(b':');
        k.extend_from_slice(node);
        k
    }

    /// Keeps the control subscription up, sends heartbeats and answers
    /// surveys, for as long as the engine lives.
    async fn control_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Ok(ps) = self.link.any_pubsub().await {
                let (mut sink, mut stream) = ps.split();
                let mine = self.reply_channel(self.opts.node.as_bytes());
                if sink.subscribe(self.control_channel()).await.is_ok()
                    && sink.subscribe(mine).await.is_ok()
                {
                    self.control.linked.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(50);
                    let mut tick = tokio::time::interval(HEARTBEAT);
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => self.on_control(&msg),
                                None => break,
                            },
                            _ = tick.tick() => self.heartbeat(),
                        }
                    }
                }
                self.control.linked.store(false, Ordering::Relaxed);
                tracing::warn!("engine control channel lost; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn heartbeat(self: &Arc<Self>) {
        self.control
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, k| k.at.elapsed() < LIVE_FOR);
        let Some(source) = self.control.source.get() else {
            return;
        };
        // One heartbeat under way at a time (a slow Redis skips beats
        // rather than piling them up), and none once leaving.
        let Ok(slot) = self.control.beat.clone().try_acquire_owned() else {
            return;
        };
        if self.control.leaving.load(Ordering::SeqCst) {
            return;
        }
        let mut beat = serde_json::to_value(source.report()).unwrap_or_default();
        if let Some(o) = beat.as_object_mut() {
            o.insert("control".into(), CONTROL_VERSION.into());
        }
        let mut frame = vec![b'H'];
        frame.extend_from_slice(beat.to_string().as_bytes());
        self.send(self.control_channel(), frame, Some(slot));
    }

    /// Publishes in the background (the control loop never waits on Redis).
    fn send(
        self: &Arc<Self>,
        channel: Vec<u8>,
        frame: Vec<u8>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(frame)
                .query_async::<i64>(&mut me.conn())
                .await;
            drop(permit);
        });
    }

    fn on_control(self: &Arc<Self>, msg: &redis::Msg) {
        let payload = msg.get_payload_bytes();
        let Some((&tag, body)) = payload.split_first() else {
            return;
        };
        match tag {
            b'H' if body.len() <= MAX_HEARTBEAT => {
                let Ok(r) = serde_json::from_slice::<NodeReport>(body) else {
                    return;
                };
                if r.name == self.opts.node || r.name.is_empty() || r.name.len() > MAX_NAME {
                    return;
                }
                let control = serde_json::from_slice::<Caps>(body)
                    .unwrap_or_default()
                    .control;
                let mut peers = self.control.peers.lock().unwrap_or_else(|e| e.into_inner());
                if peers.len() >= MAX_PEERS && !peers.contains_key(&r.name) {
                    peers.retain(|_, k| k.at.elapsed() < LIVE_FOR);
                }
                if peers.len() < MAX_PEERS || peers.contains_key(&r.name) {
                    let known = Known {
                        report: r.clone(),
                        at: Instant::now(),
                        control,
                    };
                    peers.insert(r.name, known);
                }
            }
            b'Q' if body.len() <= MAX_QUESTION => self.on_question(body, false),
            b'S' if body.len() <= MAX_QUESTION => self.on_question(body, true),
            b'A' if body.len() <= MAX_ANSWER => self.on_answer(body),
            b'L' if body.len() <= MAX_NAME => self.on_leave(body),
            _ => {}
        }
    }

    /// Another node stopped cleanly: it is no longer live, and surveys in
    /// flight stop waiting for its answer.
    fn on_leave(&self, name: &[u8]) {
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        if name == self.opts.node {
            return;
        }
        self.control
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let mut pending = self
            .control
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for w in pending.values_mut() {
            if w.left.remove(name) && w.left.is_empty() {
                w.done.notify_one();
            }
        }
    }

    fn on_question(self: &Arc<Self>, body: &[u8], scoped: bool) {
        let Some(fields) = decode(body) else {
            return;
        };
        if fields.len() < 3 || fields[0] == self.opts.node.as_bytes() || fields[0].len() > MAX_NAME
        {
            return;
        }
        let q = if scoped {
            parse_scoped(&fields)
        } else {
            parse_question(&fields)
        };
        let (Some(q), Some(source)) = (q, self.control.source.get()) else {
            return;
        };
        let Ok(permit) = self.control.replies.clone().try_acquire_owned() else {
            return;
        };
        let frame = answer_frame(&self.opts.node, fields[1], &source.answer(&q));
        self.send(self.reply_channel(fields[0]), frame, Some(permit));
    }

    fn on_answer(&self, body: &[u8]) {
        let Some(fields) = decode(body) else {
            return;
        };
        if fields.len() < 3 {
            return;
        }
        let Some(id) = std::str::from_utf8(fields[1])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let Ok(from) = std::str::from_utf8(fields[0]) else {
            return;
        };
        let mut pending = self
            .control
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(w) = pending.get_mut(&id) else {
            return;
        };
        if !w.left.remove(from) {
            return;
        }
        if w.bytes + body.len() > SURVEY_MAX_BYTES {
            // Past the survey's budget: answered, with nothing kept.
            let cut = Answer {
                counts: Vec::new(),
                truncated: true,
            };
            w.answers.push((from.to_string(), cut));
        } else if let Some(a) = parse_answer(&fields) {
            w.bytes += body.len();
            w.answers.push((from.to_string(), a));
        } else {
            w.left.insert(from.to_string());
        }
        if w.left.is_empty() {
            w.done.notify_one();
        }
    }

    async fn run_survey(
        &self,
        q: Question,
        (live, scoped): (Vec<String>, bool),
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Survey {
        let unasked = |problem: String| Survey {
            answers: Vec::new(),
            missing: live.clone(),
            problem: Some(problem),
        };
        let started = tokio::time::Instant::now();
        let id = self.control.next_id.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(tokio::sync::Notify::new());
        self.control
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Waiting {
                    left: live.iter().cloned().collect(),
                    answers: Vec::new(),
                    bytes: 0,
                    done: done.clone(),
                },
            );
        let sent = redis::cmd("PUBLISH")
            .arg(self.control_channel())
            .arg(question_frame(&self.opts.node, id, &q, scoped))
            .query_async::<i64>(&mut self.conn())
            .await;
        if sent.is_ok() {
            let _ = tokio::time::timeout(SURVEY_TIMEOUT, done.notified()).await;
        }
        let w = self
            .control
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        // The slot stays taken for at least SURVEY_SPACING.
        tokio::spawn(async move {
            tokio::time::sleep_until(started + SURVEY_SPACING).await;
            drop(permit);
        });
        if let Err(e) = sent {
            return unasked(self.failed(e).to_string());
        }
        let Some(w) = w else {
            return unasked("survey lost".into());
        };
        let mut missing: Vec<String> = w.left.into_iter().collect();
        missing.sort();
        Survey {
            answers: w.answers,
            missing,
            problem: None,
        }
    }
}

impl Cluster for RedisEngine {
    fn start(&self, node: Arc<dyn NodeSource>) {
        let me = self.control.me.get().and_then(Weak::upgrade);
        if let (Some(me), Ok(())) = (me, self.control.source.set(node)) {
            tokio::spawn(me.control_loop());
        }
    }

    fn peers(&self) -> Peers {
        Peers {
            peers: self.control.live(),
            problem: self.control.problem(),
        }
    }

    fn survey(&self, q: Question) -> Pending<'_, Survey> {
        let (live, scoped) = self.control.live_names();
        if let Some(problem) = self.control.problem() {
            return Pending::ready(Survey {
                answers: Vec::new(),
                missing: live,
                problem: Some(problem),
            });
        }
        if live.is_empty() {
            return Pending::ready(Survey::default());
        }
        let busy = |live| {
            Pending::ready(Survey {
                answers: Vec::new(),
                missing: live,
                problem: Some("too many surveys in flight on this node".into()),
            })
        };
        if let Ok(permit) = self.control.surveys.clone().try_acquire_owned() {
            return Pending::boxed(self.run_survey(q, (live, scoped), permit));
        }
        // A RESP survey parks its connection's thread: at most
        // SURVEYS_QUEUED wait for a slot, the rest are answered at once.
        let queued = &self.control.queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= SURVEYS_QUEUED {
            queued.fetch_sub(1, Ordering::Relaxed);
            return busy(live);
        }
        let waiting = Queued(queued);
        Pending::boxed(async move {
            let slot =
                tokio::time::timeout(SURVEY_TIMEOUT, self.control.surveys.clone().acquire_owned())
                    .await;
            drop(waiting);
            match slot {
                Ok(Ok(permit)) => self.run_survey(q, (live, scoped), permit).await,
                _ => busy(live).await,
            }
        })
    }

    fn leave(&self) -> Pending<'_, ()> {
        self.control.leaving.store(true, Ordering::SeqCst);
        Pending::boxed(async move {
            // The heartbeat under way reaches Redis before the leave (one
            // channel keeps its order), and none follows it.
            let _beat = self.control.beat.acquire().await;
            let mut frame = vec![b'L'];
            frame.extend_from_slice(self.opts.node.as_bytes());
            let _ = redis::cmd("PUBLISH")
                .arg(self.control_channel())
                .arg(frame)
                .query_async::<i64>(&mut self.conn())
                .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let q = Question::NumSub {
            space: Space::Shard,
            channels: vec![Bytes::from_static(b"a\r\nb"), Bytes::new()],
        };
        let f = question_frame("n1", 7, &q, true);
        let fields = decode(&f[1..]).unwrap();
        assert_eq!(fields[0], b"n1");
        assert_eq!(fields[1], b"7");
        assert_eq!(parse_question(&fields), Some(q));
        let a = Answer {
            counts: vec![(Bytes::from_static(b"x"), 3)],
            truncated: true,
        };
        let f = answer_frame("n2", b"7", &a);
        assert_eq!(parse_answer(&decode(&f[1..]).unwrap()), Some(a));
    }

    #[test]
    fn scoped_questions_round_trip_within_bounds() {
        let scope = Some(vec!["chat:*".to_string(), "news".to_string()]);
        let q = Question::Channels {
            space: Space::Global,
            pattern: Some(Bytes::from_static(b"c*")),
            scope: scope.clone(),
        };
        let f = question_frame("n1", 7, &q, true);
        assert_eq!(f[0], b'S');
        assert_eq!(parse_scoped(&decode(&f[1..]).unwrap()), Some(q.clone()));
        // Not every node reads it: a plain question, answered in full.
        let f = question_frame("n1", 7, &q, false);
        assert_eq!(f[0], b'Q');
        let plain = Question::Channels {
            space: Space::Global,
            pattern: Some(Bytes::from_static(b"c*")),
            scope: None,
        };
        assert_eq!(parse_question(&decode(&f[1..]).unwrap()), Some(plain));
        let q = Question::Patterns {
            scope: Some(Vec::new()),
        };
        let f = question_frame("n1", 8, &q, true);
        assert_eq!(parse_scoped(&decode(&f[1..]).unwrap()), Some(q));
        // A scope past the bounds is not carried.
        let wide = Question::Patterns {
            scope: Some(vec!["g".to_string(); SCOPE_MAX_GLOBS + 1]),
        };
        assert_eq!(question_frame("n1", 9, &wide, true)[0], b'Q');
        let long = Question::Patterns {
            scope: Some(vec!["g".repeat(SCOPE_MAX_BYTES + 1)]),
        };
        assert_eq!(question_frame("n1", 9, &long, true)[0], b'Q');
    }

    #[test]
    fn hostile_scoped_questions_are_refused() {
        let parse = |fields: &[&[u8]]| parse_scoped(&decode(&encode(b'S', fields)[1..]).unwrap());
        let ok: &[&[u8]] = &[b"n", b"1", b"channels", b"1", b"a*"];
        assert!(parse(ok).is_some());
        // Counts that lie, are too many, or are not numbers.
        assert_eq!(parse(&[b"n", b"1", b"channels", b"2", b"a*"]), None);
        assert_eq!(parse(&[b"n", b"1", b"channels", b"-1"]), None);
        assert_eq!(parse(&[b"n", b"1", b"channels", b"x"]), None);
        assert_eq!(parse(&[b"n", b"1", b"channels"]), None);
        let many = vec![&b"g"[..]; SCOPE_MAX_GLOBS + 1];
        let mut f: Vec<&[u8]> = vec![b"n", b"1", b"patterns", b"65"];
        f.extend(&many);
        assert_eq!(parse(&f), None);
        let big = vec![b'g'; SCOPE_MAX_BYTES + 1];
        assert_eq!(parse(&[b"n", b"1", b"patterns", b"1", &big]), None);
        // Not UTF-8; a kind that takes no scope; extra arguments.
        assert_eq!(parse(&[b"n", b"1", b"patterns", b"1", &[0xff]]), None);
        assert_eq!(parse(&[b"n", b"1", b"numsub", b"0", b"c"]), None);
        assert_eq!(parse(&[b"n", b"1", b"channels", b"0", b"p", b"q"]), None);
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode(&[0, 0, 0, 5, b'a']), None);
        assert_eq!(decode(&[0, 0]), None);
        let f = encode(b'A', &[b"n", b"1", b"", b"x"]);
        assert_eq!(parse_answer(&decode(&f[1..]).unwrap()), None);
        let f = encode(b'A', &[b"n", b"1", b"", b"x", b"-1"]);
        assert_eq!(parse_answer(&decode(&f[1..]).unwrap()), None);
        let f = encode(b'Q', &[b"n", b"1", b"bogus"]);
        assert_eq!(parse_question(&decode(&f[1..]).unwrap()), None);
    }
}
