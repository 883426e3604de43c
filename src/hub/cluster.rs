//! Cluster-wide introspection: the live nodes, and channels, subscriber
//! counts and patterns over every node. This node answers from its
//! registry; the engine's [`Cluster`](super::engine::Cluster) part brings
//! the other nodes' heartbeats and answers (none in memory mode).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::engine::cluster::{ANSWER_MAX_BYTES, ANSWER_MAX_NAMES};
use super::engine::cluster::{QUESTION_MAX_BYTES, QUESTION_MAX_NAMES};
use super::engine::{Answer, NodeLoad, NodeReport, NodeSource, Pending, Question, Survey};
use super::glob::Glob;
use super::{Hub, Space, Stats};
use crate::auth::{scope_sees_channel, scope_sees_pattern};

/// A cluster-wide answer and how complete it is.
#[derive(Debug, Clone, Default)]
pub struct ClusterView<T> {
    pub value: T,
    /// Nodes whose data it holds, this one included.
    pub nodes: usize,
    /// Live nodes that did not answer in time.
    pub missing: Vec<String>,
    /// Some node left names out (its answer was at the size cap).
    pub truncated: bool,
    /// Why the other nodes could not be asked (Redis unreachable, too many
    /// surveys in flight).
    pub problem: Option<String>,
}

impl<T> ClusterView<T> {
    /// Whether some live node's data may be missing.
    pub fn partial(&self) -> bool {
        !self.missing.is_empty() || self.truncated || self.problem.is_some()
    }

    /// `{"nodes", "partial"[, "missing", "truncated", "problem"]}` for the
    /// HTTP API.
    pub fn status_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "nodes": self.nodes, "partial": self.partial() });
        if !self.missing.is_empty() {
            v["missing"] = serde_json::json!(self.missing);
        }
        if self.truncated {
            v["truncated"] = serde_json::json!(true);
        }
        if let Some(p) = &self.problem {
            v["problem"] = serde_json::json!(p);
        }
        v
    }

    fn with<U>(self, value: U) -> ClusterView<U> {
        ClusterView {
            value,
            nodes: self.nodes,
            missing: self.missing,
            truncated: self.truncated,
            problem: self.problem,
        }
    }
}

/// A node as `/api/nodes` lists it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub report: NodeReport,
    /// Time since its last heartbeat arrived (zero for this node).
    pub age: Duration,
    /// This node.
    pub this: bool,
}

/// `/stats` over every live node.
#[derive(Debug, Clone, Default)]
pub struct ClusterStats {
    /// Every live node's heartbeat figures added up (this node's current).
    pub total: NodeReport,
    /// Distinct channels with a subscriber somewhere.
    pub channels: u64,
    /// Distinct patterns subscribed somewhere.
    pub patterns: u64,
}

/// A NUMSUB too large to ask the other nodes about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PUBSUB NUMSUB asks the other nodes about at most {QUESTION_MAX_NAMES} channels ({QUESTION_MAX_BYTES} bytes of names) at once")]
pub struct TooManyNames;

/// This node for the engine: its heartbeat and its answers.
struct HubNode {
    hub: Weak<Hub>,
    name: String,
    load: Arc<dyn Fn() -> NodeLoad + Send + Sync>,
}

impl NodeSource for HubNode {
    fn report(&self) -> NodeReport {
        match self.hub.upgrade() {
            Some(hub) => hub.report(&self.name, (self.load)()),
            None => NodeReport::default(),
        }
    }

    fn answer(&self, q: &Question) -> Answer {
        match self.hub.upgrade() {
            Some(hub) => hub.local_answer(q, true),
            None => Answer::default(),
        }
    }
}

/// The other nodes' answers to a survey, by node name.
type Surveyed = ClusterView<Vec<(String, Answer)>>;

impl Hub {
    /// Names this node and tells the engine how to report its load: the
    /// engine starts its heartbeats and answers the other nodes' surveys.
    /// Called once by the server (later calls do nothing).
    pub fn start_cluster(
        self: &Arc<Self>,
        name: String,
        load: Arc<dyn Fn() -> NodeLoad + Send + Sync>,
    ) {
        let node: Arc<dyn NodeSource> = Arc::new(HubNode {
            hub: Arc::downgrade(self),
            name,
            load,
        });
        if self.node.set(node.clone()).is_ok() {
            self.engine.broker.cluster().start(node);
        }
    }

    fn report(&self, name: &str, load: NodeLoad) -> NodeReport {
        let s = &self.stats;
        NodeReport {
            name: name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.uptime().as_millis() as u64,
            connections: load.connections,
            subscriptions: load.subscriptions,
            channels: self.registry.channel_count() as u64,
            patterns: self.registry.numpat() as u64,
            published: Stats::get(&s.published),
            delivered: Stats::get(&s.delivered),
            slow_disconnects: Stats::get(&s.slow_disconnects),
        }
    }

    /// This node's heartbeat as it would be sent now.
    pub fn this_node(&self) -> NodeReport {
        match self.node.get() {
            Some(n) => n.report(),
            None => self.report("", NodeLoad::default()),
        }
    }

    /// This node's own answer; within the caps when `capped` (answers to
    /// other nodes).
    fn local_answer(&self, q: &Question, capped: bool) -> Answer {
        let mut out = Answer::default();
        let mut bytes = 0usize;
        let mut push = |out: &mut Answer, name: Bytes, n: u64| -> bool {
            if capped {
                bytes += name.len();
                if out.counts.len() >= ANSWER_MAX_NAMES || bytes > ANSWER_MAX_BYTES {
                    out.truncated = true;
                    return false;
                }
            }
            out.counts.push((name, n));
            true
        };
        // The asker's rights (a token's globs, at most SCOPE_MAX_GLOBS of
        // SCOPE_MAX_BYTES): what they hide is left out before the caps, so
        // a narrow token's answer is small and not cut by names it could
        // never see. Each name costs a match per glob.
        let scope = q.scope();
        let globs: Option<Vec<Glob>> =
            scope.map(|s| s.iter().map(|g| Glob::new(g.as_bytes())).collect());
        match q {
            Question::Channels { space, pattern, .. } => {
                for c in self.registry.channels(*space, pattern.as_deref()) {
                    if globs.as_ref().is_some_and(|g| !scope_sees_channel(g, &c)) {
                        continue;
                    }
                    let n = self.registry.numsub(*space, &c) as u64;
                    if n > 0 && !push(&mut out, c, n) {
                        break;
                    }
                }
            }
            Question::NumSub { space, channels } => {
                for c in channels.iter().take(QUESTION_MAX_NAMES) {
                    let n = self.registry.numsub(*space, c) as u64;
                    if !push(&mut out, c.clone(), n) {
                        break;
                    }
                }
            }
            Question::Patterns { .. } => {
                for p in self.registry.patterns() {
                    if scope.is_some_and(|s| !scope_sees_pattern(s, &p)) {
                        continue;
                    }
                    if !push(&mut out, p, 1) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// This node's answer and, when `others`, the other nodes', as they
    /// came (awaited by the caller, or waited for).
    fn ask(&self, q: Question, others: bool) -> Pending<'_, (Answer, Surveyed)> {
        let local = self.local_answer(&q, false);
        let survey = if others {
            self.engine.broker.cluster().survey(q)
        } else {
            Pending::ready(Survey::default())
        };
        survey.map(move |survey| {
            let truncated = survey.answers.iter().any(|(_, a)| a.truncated);
            let view = ClusterView {
                nodes: 1 + survey.answers.len(),
                value: survey.answers,
                missing: survey.missing,
                truncated,
                problem: survey.problem,
            };
            (local, view)
        })
    }

    /// Tells the other nodes this one is leaving (a clean stop), so they
    /// drop it at once; no heartbeat follows. Nothing in memory mode.
    pub async fn leave_cluster(&self) {
        self.engine.broker.cluster().leave().await
    }

    /// How many other nodes are live now (0 in memory mode).
    pub fn cluster_peers(&self) -> usize {
        self.engine.broker.cluster().peers().peers.len()
    }

    /// Channels with a subscriber on any node (matching `pattern`; those
    /// `scope`, a token's subscribe globs, lets its holder see), with
    /// their subscribers summed over the nodes. Unordered. Without
    /// `others`, this node's alone (nothing waits on other nodes: a
    /// transaction holding the keyspace). Other nodes filter with `scope`
    /// where the engine can carry it: the caller filters again.
    pub fn cluster_channels(
        &self,
        space: Space,
        pattern: Option<&[u8]>,
        scope: Option<&[String]>,
        others: bool,
    ) -> ClusterView<Vec<(Bytes, u64)>> {
        self.cluster_channels_pending(space, pattern, scope, others)
            .wait()
    }

    /// [`Hub::cluster_channels`], for a caller that awaits (nothing parks
    /// a thread while the other nodes answer).
    pub fn cluster_channels_pending(
        &self,
        space: Space,
        pattern: Option<&[u8]>,
        scope: Option<&[String]>,
        others: bool,
    ) -> Pending<'_, ClusterView<Vec<(Bytes, u64)>>> {
        let q = Question::Channels {
            space,
            pattern: pattern.map(Bytes::copy_from_slice),
            scope: scope.map(<[String]>::to_vec),
        };
        // Globs that match nothing: nobody else to ask.
        let others = others && scope.is_none_or(|s| !s.is_empty());
        self.ask(q, others).map(|(local, view)| {
            if view.value.is_empty() {
                return view.with(local.counts);
            }
            let mut sum: HashMap<Bytes, u64> = local.counts.into_iter().collect();
            for (_, a) in &view.value {
                for (c, n) in &a.counts {
                    let e = sum.entry(c.clone()).or_default();
                    *e = e.saturating_add(*n);
                }
            }
            view.with(sum.into_iter().collect())
        })
    }

    /// The subscribers of each of `channels` summed over the nodes. The
    /// other nodes are asked about at most [`QUESTION_MAX_NAMES`] channels
    /// ([`QUESTION_MAX_BYTES`] of names) at once: more is refused while
    /// there are other nodes. Without `others`, this node's alone.
    pub fn cluster_numsub(
        &self,
        space: Space,
        channels: &[Bytes],
        others: bool,
    ) -> Result<ClusterView<Vec<u64>>, TooManyNames> {
        self.cluster_numsub_pending(space, channels, others).wait()
    }

    /// [`Hub::cluster_numsub`], for a caller that awaits.
    pub fn cluster_numsub_pending(
        &self,
        space: Space,
        channels: &[Bytes],
        others: bool,
    ) -> Pending<'_, Result<ClusterView<Vec<u64>>, TooManyNames>> {
        let bytes: usize = channels.iter().map(|c| c.len()).sum();
        let too_many = channels.len() > QUESTION_MAX_NAMES || bytes > QUESTION_MAX_BYTES;
        if too_many && others && !self.engine.broker.cluster().peers().peers.is_empty() {
            return Pending::ready(Err(TooManyNames));
        }
        if too_many || channels.is_empty() || !others {
            let counts = channels
                .iter()
                .map(|c| self.registry.numsub(space, c) as u64)
                .collect();
            return Pending::ready(Ok(ClusterView {
                value: counts,
                nodes: 1,
                ..Default::default()
            }));
        }
        let channels = channels.to_vec();
        let q = Question::NumSub {
            space,
            channels: channels.clone(),
        };
        self.ask(q, true).map(move |(local, view)| {
            let mut counts: Vec<u64> = local.counts.iter().map(|(_, n)| *n).collect();
            for (_, a) in &view.value {
                // An answer names the channels it counts: match them by
                // name, so a short or reordered answer cannot shift the
                // counts.
                let theirs: HashMap<&Bytes, u64> = a.counts.iter().map(|(c, n)| (c, *n)).collect();
                for (i, c) in channels.iter().enumerate() {
                    counts[i] = counts[i].saturating_add(theirs.get(c).copied().unwrap_or(0));
                }
            }
            Ok(view.with(counts))
        })
    }

    /// The distinct patterns subscribed on any node (those `scope` lets
    /// its holder see, as [`Hub::cluster_channels`]). Unordered. Without
    /// `others`, this node's alone.
    pub fn cluster_patterns(
        &self,
        scope: Option<&[String]>,
        others: bool,
    ) -> ClusterView<Vec<Bytes>> {
        self.cluster_patterns_pending(scope, others).wait()
    }

    /// [`Hub::cluster_patterns`], for a caller that awaits.
    pub fn cluster_patterns_pending(
        &self,
        scope: Option<&[String]>,
        others: bool,
    ) -> Pending<'_, ClusterView<Vec<Bytes>>> {
        let q = Question::Patterns {
            scope: scope.map(<[String]>::to_vec),
        };
        let others = others && scope.is_none_or(|s| !s.is_empty());
        self.ask(q, others).map(|(local, view)| {
            if view.value.is_empty() {
                return view.with(local.counts.into_iter().map(|(p, _)| p).collect());
            }
            let mut all: std::collections::HashSet<Bytes> =
                local.counts.into_iter().map(|(p, _)| p).collect();
            for (_, a) in &view.value {
                all.extend(a.counts.iter().map(|(p, _)| p.clone()));
            }
            view.with(all.into_iter().collect())
        })
    }

    /// The live nodes: this one first, then the others by name.
    pub fn nodes(&self) -> ClusterView<Vec<NodeInfo>> {
        let peers = self.engine.broker.cluster().peers();
        let mut list = vec![NodeInfo {
            report: self.this_node(),
            age: Duration::ZERO,
            this: true,
        }];
        let mut others: Vec<NodeInfo> = peers
            .peers
            .into_iter()
            .map(|p| NodeInfo {
                report: p.report,
                age: p.age,
                this: false,
            })
            .collect();
        others.sort_by(|a, b| a.report.name.cmp(&b.report.name));
        list.extend(others);
        ClusterView {
            nodes: list.len(),
            value: list,
            missing: Vec::new(),
            truncated: false,
            problem: peers.problem,
        }
    }

    /// `/stats` over every live node: their heartbeat figures added up,
    /// and the distinct channels and patterns (two surveys).
    pub fn cluster_stats(&self) -> ClusterView<ClusterStats> {
        let nodes = self.nodes();
        let mut total = NodeReport::default();
        for n in &nodes.value {
            let r = &n.report;
            // Saturating: another node's figures are whatever it sent.
            let add = |t: &mut u64, n: u64| *t = t.saturating_add(n);
            add(&mut total.connections.resp, r.connections.resp);
            add(&mut total.connections.ws, r.connections.ws);
            add(&mut total.connections.http, r.connections.http);
            add(&mut total.subscriptions, r.subscriptions);
            add(&mut total.channels, r.channels);
            add(&mut total.patterns, r.patterns);
            add(&mut total.published, r.published);
            add(&mut total.delivered, r.delivered);
            add(&mut total.slow_disconnects, r.slow_disconnects);
        }
        if nodes.value.len() == 1 {
            let (channels, patterns) = (total.channels, total.patterns);
            return nodes.with(ClusterStats {
                total,
                channels,
                patterns,
            });
        }
        let channels = self.cluster_channels(Space::Global, None, None, true);
        let patterns = self.cluster_patterns(None, true);
        let mut missing = channels.missing.clone();
        for m in &patterns.missing {
            if !missing.contains(m) {
                missing.push(m.clone());
            }
        }
        ClusterView {
            value: ClusterStats {
                total,
                channels: channels.value.len() as u64,
                patterns: patterns.value.len() as u64,
            },
            nodes: nodes.value.len(),
            missing,
            truncated: channels.truncated || patterns.truncated,
            problem: nodes.problem.or(channels.problem).or(patterns.problem),
        }
    }
}
