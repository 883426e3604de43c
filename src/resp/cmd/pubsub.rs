//! Pub/sub commands: PUBLISH, SPUBLISH, (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE and
//! PUBSUB, with Redis 7.0's replies in both protocols.

use bytes::Bytes;

use super::{help_reply, Command};
use crate::hub::engine::{EngineError, Pending};
use crate::hub::{Hub, Space, Ticket};
use crate::resp::connection::{Conn, Then};
use crate::resp::names::NameSet;

const PS: &[&str] = &["pubsub", "loading", "stale", "fast"];
const PS_ACL: &[&str] = &["@pubsub", "@fast"];
const SUB_FLAGS: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const SUB_ACL: &[&str] = &["@pubsub", "@slow"];

pub const PUBLISH: Command = Command::new(
    "publish",
    3,
    "pubsub",
    "Posts a message to a channel.",
    publish,
)
.flags(PS)
.acl(PS_ACL);
pub const SPUBLISH: Command = Command::new(
    "spublish",
    3,
    "pubsub",
    "Post a message to a shard channel",
    spublish,
)
.flags(PS)
.acl(PS_ACL);
pub const SUBSCRIBE: Command = Command::new(
    "subscribe",
    -2,
    "pubsub",
    "Listens for messages published to channels.",
    subscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);
pub const UNSUBSCRIBE: Command = Command::new(
    "unsubscribe",
    -1,
    "pubsub",
    "Stops listening to messages posted to channels.",
    unsubscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);
pub const PSUBSCRIBE: Command = Command::new(
    "psubscribe",
    -2,
    "pubsub",
    "Listens for messages published to channels that match one or more patterns.",
    psubscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);
pub const PUNSUBSCRIBE: Command = Command::new(
    "punsubscribe",
    -1,
    "pubsub",
    "Stops listening to messages published to channels that match one or more patterns.",
    punsubscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);
pub const SSUBSCRIBE: Command = Command::new(
    "ssubscribe",
    -2,
    "pubsub",
    "Listens for messages published to shard channels.",
    ssubscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);
pub const SUNSUBSCRIBE: Command = Command::new(
    "sunsubscribe",
    -1,
    "pubsub",
    "Stops listening to messages posted to shard channels.",
    sunsubscribe,
)
.pubsub_ok()
.flags(SUB_FLAGS)
.acl(SUB_ACL);

const PUBSUB_SUBS: &[Command] = &[
    Command::new(
        "channels",
        -2,
        "pubsub",
        "Returns the active channels.",
        channels,
    )
    .flags(&["pubsub", "loading", "stale"])
    .acl(&["@pubsub", "@slow"]),
    Command::new(
        "numsub",
        -2,
        "pubsub",
        "Returns a count of subscribers to channels.",
        numsub,
    )
    .flags(&["pubsub", "loading", "stale"])
    .acl(&["@pubsub", "@slow"]),
    Command::new(
        "numpat",
        2,
        "pubsub",
        "Returns a count of unique pattern subscriptions.",
        numpat,
    )
    .flags(&["pubsub", "loading", "stale"])
    .acl(&["@pubsub", "@slow"]),
    Command::new(
        "shardchannels",
        -2,
        "pubsub",
        "Returns the active shard channels.",
        shardchannels,
    )
    .flags(&["pubsub", "loading", "stale"])
    .acl(&["@pubsub", "@slow"]),
    Command::new(
        "shardnumsub",
        -2,
        "pubsub",
        "Returns the count of subscribers of shard channels.",
        shardnumsub,
    )
    .flags(&["pubsub", "loading", "stale"])
    .acl(&["@pubsub", "@slow"]),
    Command::new(
        "help",
        2,
        "pubsub",
        "Returns helpful text about the different subcommands.",
        help,
    )
    .flags(&["loading", "stale"])
    .acl(&["@slow"]),
];
pub const PUBSUB: Command = Command::new(
    "pubsub",
    -2,
    "pubsub",
    "A container for Pub/Sub commands.",
    help,
)
.subs(PUBSUB_SUBS);

const NOPERM: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";

/// Redis refuses the whole command when any channel is not allowed.
fn allowed(conn: &mut Conn, names: &[Bytes], kind: Kind, publish: bool) -> bool {
    let Some(id) = &conn.identity else {
        return false;
    };
    let cfg = &conn.server.cfg;
    let ok = names.iter().all(|n| match (kind, publish) {
        (_, true) => id.may_publish(n, cfg),
        (Kind::Pattern, false) => id.may_psubscribe(n, cfg),
        (_, false) => id.may_subscribe(n, cfg),
    });
    if !ok {
        crate::hub::Stats::add(&conn.server.hub.stats().auth_failures, 1);
        conn.reply().error(NOPERM);
    }
    ok
}

fn publish(conn: &mut Conn, args: &[Bytes]) {
    if !allowed(conn, &args[1..2], Kind::Channel, true)
        || !publish_name_ok(conn, &args[1])
        || !publish_rate_ok(conn)
    {
        return;
    }
    if conn.in_exec || conn.total_subscriptions() > 0 {
        // A subscribed (RESP3) client may publish to itself: its earlier
        // replies go out first, then its own message, then this reply, in
        // Redis's order. So no staging, and no flushing inside EXEC's reply.
        if !conn.in_exec {
            conn.flush_replies();
            if conn.server.hub.publishes_pipeline() {
                let (c, p) = (args[1].clone(), args[2].clone());
                await_publish(conn, move |hub| {
                    hub.publish_pending(c, p).map(|r| r.map(|p| p.receivers))
                });
                return;
            }
        }
        let r = conn.server.hub.publish(args[1].clone(), args[2].clone());
        conn.publish_reply(r.map(|p| p.receivers));
        return;
    }
    conn.stage_publish(args[1].clone(), args[2].clone());
}

/// The checks PUBLISH (or SPUBLISH, `shard`) makes before publishing;
/// false when one refused (its error replied).
pub(super) fn publish_allowed(conn: &mut Conn, args: &[Bytes], shard: bool) -> bool {
    let kind = if shard { Kind::Shard } else { Kind::Channel };
    allowed(conn, &args[1..2], kind, true) && publish_name_ok(conn, &args[1])
}

fn spublish(conn: &mut Conn, args: &[Bytes]) {
    if !allowed(conn, &args[1..2], Kind::Shard, true)
        || !publish_name_ok(conn, &args[1])
        || !publish_rate_ok(conn)
    {
        return;
    }
    let (c, p) = (args[1].clone(), args[2].clone());
    if conn.server.hub.publishes_pipeline() && !conn.in_exec {
        await_publish(conn, move |hub| hub.spublish_pending(c, p));
        return;
    }
    let r = conn.server.hub.spublish(c, p);
    conn.publish_reply(r);
}

/// Publishes through an engine whose publishes are round trips: the
/// connection awaits the answer (no thread parks on it) and runs its next
/// request once it is there.
fn await_publish(
    conn: &mut Conn,
    publish: impl for<'h> FnOnce(&'h Hub) -> Pending<'h, Result<usize, EngineError>> + Send + 'static,
) {
    await_hub(conn, publish, |conn, r| conn.publish_reply(r));
}

/// Asks the hub something a remote engine answers with a round trip (a
/// publish, a survey of the other nodes): the connection awaits it (no
/// thread parks) as one serial step, then `then` replies.
fn await_hub<T: Send + 'static>(
    conn: &mut Conn,
    ask: impl for<'h> FnOnce(&'h Hub) -> Pending<'h, T> + Send + 'static,
    then: impl FnOnce(&mut Conn, T) + Send + 'static,
) {
    let hub = conn.server.hub.clone();
    conn.await_serial(async move {
        let v = ask(&hub).await;
        Box::new(move |conn: &mut Conn| then(conn, v)) as Then
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    fn words(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::Channel => (b"subscribe", b"unsubscribe"),
            Kind::Pattern => (b"psubscribe", b"punsubscribe"),
            Kind::Shard => (b"ssubscribe", b"sunsubscribe"),
        }
    }

    fn held(self, conn: &Conn) -> &NameSet {
        match self {
            Kind::Channel => &conn.channels,
            Kind::Pattern => &conn.patterns,
            Kind::Shard => &conn.shard_channels,
        }
    }

    fn set(self, conn: &mut Conn) -> &mut NameSet {
        match self {
            Kind::Channel => &mut conn.channels,
            Kind::Pattern => &mut conn.patterns,
            Kind::Shard => &mut conn.shard_channels,
        }
    }

    /// Where the hub keeps it: `None` for a pattern.
    fn space(self) -> Option<Space> {
        match self {
            Kind::Channel => Some(Space::Global),
            Kind::Shard => Some(Space::Shard),
            Kind::Pattern => None,
        }
    }

    /// The count Redis puts in confirmations: channels and patterns together,
    /// shard channels on their own.
    fn count(self, conn: &Conn) -> usize {
        match self {
            Kind::Shard => conn.shard_channels.len(),
            _ => conn.subscription_count(),
        }
    }
}

fn confirm(conn: &mut Conn, word: &[u8], name: Option<&[u8]>, count: usize) {
    let mut out = conn.reply();
    out.push(3);
    out.bulk(word);
    match name {
        Some(n) => out.bulk(n),
        None => out.null(),
    }
    out.int(count as i64);
}

/// A client without the password holds at most 64 × `--max-pattern-length`
/// bytes of patterns (64 KiB by default): every publish is matched against
/// every pattern whose literal prefix fits, and a pattern that starts with
/// `*` and holds classes costs a search over the channel, so the total is
/// what bounds the work one connection adds to each publish.
fn patterns_fit(conn: &mut Conn, name: &[u8]) -> bool {
    if matches!(conn.identity, Some(crate::auth::Identity::Password)) {
        return true;
    }
    let budget = conn.server.cfg.max_pattern_length.saturating_mul(64);
    let held: usize = conn.patterns.iter().map(|p| p.len()).sum();
    if held + name.len() > budget {
        conn.reply().error(&format!(
            "ERR patterns of this connection would exceed {budget} bytes"
        ));
        return false;
    }
    true
}

/// A client without the password takes each pattern from its address's
/// share (`--max-untrusted-patterns-per-client`) and from the global
/// `--max-untrusted-patterns` quota: the bound above is per connection,
/// and many connections would multiply it; the share keeps one address
/// from taking the whole quota.
fn pattern_quota_ok(conn: &mut Conn) -> bool {
    if matches!(conn.identity, Some(crate::auth::Identity::Password)) {
        return true;
    }
    let share = conn.server.cfg.max_untrusted_patterns_per_client;
    if !conn.client.take_pattern(share) {
        conn.reply().error(&format!(
            "ERR max patterns per client address reached ({share}); retry later"
        ));
        return false;
    }
    let quota = conn.server.hub.untrusted_patterns();
    if quota.take() {
        conn.counted_patterns += 1;
        return true;
    }
    conn.client.give_patterns(1);
    let max = quota.limit();
    conn.reply().error(&format!(
        "ERR max patterns of clients without the password reached ({max}); retry later"
    ));
    false
}

/// A client without the password publishes on channel names of at most
/// `--max-pattern-length`: it chooses both the patterns and the channels
/// they are matched against. Password clients (backends) publish as in
/// Redis, with no limit.
fn publish_name_ok(conn: &mut Conn, name: &[u8]) -> bool {
    matches!(conn.identity, Some(crate::auth::Identity::Password))
        || check_name(conn, name, Kind::Channel)
}

/// A client without the password publishes at most `--ws-publish-rate`
/// times a second per address, as WebSocket and SSE clients do (the same
/// bucket: an address's publishes over every protocol count together).
/// Password clients (backends) publish with no rate.
fn publish_rate_ok(conn: &mut Conn) -> bool {
    if matches!(conn.identity, Some(crate::auth::Identity::Password)) {
        return true;
    }
    let rate = conn.server.cfg.ws_publish_rate;
    let limit = crate::rate::RateLimit { rate, burst: rate };
    if conn.client.take_publish(limit) {
        return true;
    }
    conn.reply().error(&format!(
        "ERR publish rate limit exceeded ({rate} per second from this address); retry later"
    ));
    false
}

fn check_name(conn: &mut Conn, name: &[u8], kind: Kind) -> bool {
    let max = conn.max_name_len(kind == Kind::Pattern);
    if name.len() > max {
        conn.reply().error(&format!(
            "ERR channel name or pattern longer than {max} bytes"
        ));
        return false;
    }
    true
}

/// A client without the password adds subscriptions at most at
/// `--subscribe-rate` (after a burst of `--subscribe-burst`): each one may
/// push a join (and, when it leaves, a leave) to every subscriber of the
/// channel, so a client toggling one would otherwise make the hub push
/// 2 × N events per toggle. The names the command adds count, one each
/// (repeats and those already held cost nothing); a refused command
/// subscribes to none of them. A command adding more than the burst passes
/// on a full bucket and empties it (see `rate`): a client library's
/// resubscribe after a reconnect names every channel it held in one
/// command, and Redis never refuses one for its size. Leaving is never
/// refused.
fn subscribe_rate_ok(conn: &mut Conn, names: &[Bytes], kind: Kind) -> bool {
    if matches!(conn.identity, Some(crate::auth::Identity::Password)) {
        return true;
    }
    let held = kind.held(conn);
    // Each name once: a command repeating one name adds it once, and
    // must not cost (and empty the bucket) as if it added many.
    let mut seen = std::collections::HashSet::new();
    let new = names
        .iter()
        .filter(|n| !held.contains(n) && seen.insert(*n))
        .count();
    let limit = conn.server.cfg.subscribe_limit;
    let cost = u32::try_from(new).unwrap_or(u32::MAX);
    if conn.client.take_subscribes(limit, cost) {
        return true;
    }
    conn.reply().error(&format!(
        "ERR subscribe rate limit exceeded ({} per second, {} at once); retry later",
        limit.rate, limit.burst
    ));
    false
}

/// Engine subscribes prepared for one command: each new name's outcome,
/// until a confirmation takes its ticket.
type Prepared = std::collections::HashMap<Bytes, Result<Ticket, EngineError>>;

/// Engine subscribes of one command under way at once: a resubscribe of
/// thousands of channels goes out in rounds of this many (each round one
/// wait for Redis), not as thousands of tasks at once.
const PREPARE_ROUND: usize = 128;

fn subscribe_kind(conn: &mut Conn, args: &[Bytes], kind: Kind) {
    if !allowed(conn, &args[1..], kind, false) || !subscribe_rate_ok(conn, &args[1..], kind) {
        return;
    }
    if !conn.server.hub.subscribes_await() || conn.in_exec {
        // The memory engine answers at once. (Inside EXEC, which cannot
        // await, this thread waits for a remote engine.)
        return subscribe_names(conn, &args[1..], kind, None);
    }
    // Engine mode: the names this node does not carry yet are subscribed
    // in the engine first, this command's together; the connection awaits
    // them (no thread parks), running nothing else meanwhile, then
    // confirms and registers in order.
    let names = args[1..].to_vec();
    let todo = new_names(conn, &names, kind);
    let (hub, space) = (conn.server.hub.clone(), kind.space());
    let start = |n: &Bytes| (n.clone(), hub.prepare_subscribe_pending(space, n));
    let mut round: Vec<_> = todo.iter().take(PREPARE_ROUND).map(start).collect();
    if todo.len() <= PREPARE_ROUND && round.iter().all(|(_, p)| matches!(p, Pending::Ready(_))) {
        // The node carries them all already: nothing to wait for.
        let prepared = round
            .into_iter()
            .filter_map(|(n, p)| Some((n, p.now().ok()?)))
            .collect();
        return subscribe_names(conn, &names, kind, Some(prepared));
    }
    conn.await_serial(async move {
        let mut prepared = Prepared::with_capacity(todo.len());
        let mut rest = todo.iter().skip(round.len());
        while !round.is_empty() {
            for (name, p) in round.drain(..) {
                prepared.insert(name, p.await);
            }
            round.extend(
                rest.by_ref()
                    .take(PREPARE_ROUND)
                    .map(|n| (n.clone(), hub.prepare_subscribe_pending(space, n))),
            );
        }
        Box::new(move |conn: &mut Conn| subscribe_names(conn, &names, kind, Some(prepared))) as Then
    });
}

/// The names of a command the engine must be asked about: each once, at
/// most as many as the connection has room for, none the checks below
/// refuse for its length (the rest are refused there as always).
fn new_names(conn: &Conn, names: &[Bytes], kind: Kind) -> Vec<Bytes> {
    let room = conn
        .max_subscriptions()
        .saturating_sub(conn.total_subscriptions());
    let max_len = conn.max_name_len(kind == Kind::Pattern);
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter(|n| n.len() <= max_len && !kind.held(conn).contains(n) && seen.insert(*n))
        .take(room)
        .cloned()
        .collect()
}

/// A queued (P|S)SUBSCRIBE inside EXEC in engine mode, checked (ACL, the
/// subscribe rate) and with its engine subscribes started when EXEC runs,
/// so the connection awaits them with the transaction (no thread parks)
/// and confirms them in EXEC's reply. `Err`: not a subscribe, or the
/// memory engine (run as any local command).
pub(super) struct ExecSubscribe {
    args: Vec<Bytes>,
    kind: Kind,
    /// Refused: the error reply, already made.
    refused: Option<Bytes>,
    pending: Vec<(Bytes, Pending<'static, Result<Ticket, EngineError>>)>,
}

/// See [`ExecSubscribe`]. The names the client holds already are prepared
/// too (at once): an UNSUBSCRIBE earlier in the same EXEC may drop them.
pub(super) fn exec_subscribe(
    conn: &mut Conn,
    name: &str,
    args: Vec<Bytes>,
) -> Result<ExecSubscribe, Vec<Bytes>> {
    let kind = match name {
        "subscribe" => Kind::Channel,
        "psubscribe" => Kind::Pattern,
        "ssubscribe" => Kind::Shard,
        _ => return Err(args),
    };
    if !conn.server.hub.subscribes_await() {
        return Err(args);
    }
    let saved = std::mem::take(&mut conn.out);
    let ok = allowed(conn, &args[1..], kind, false) && subscribe_rate_ok(conn, &args[1..], kind);
    let err = std::mem::replace(&mut conn.out, saved).freeze();
    if !ok {
        return Ok(ExecSubscribe {
            args,
            kind,
            refused: Some(err),
            pending: Vec::new(),
        });
    }
    let mut names = new_names(conn, &args[1..], kind);
    names.extend(
        args[1..]
            .iter()
            .filter(|n| kind.held(conn).contains(n))
            .cloned(),
    );
    let (hub, space) = (&conn.server.hub, kind.space());
    let pending = names
        .into_iter()
        .map(|n| {
            let p = hub.prepare_subscribe_pending(space, &n);
            (n, p)
        })
        .collect();
    Ok(ExecSubscribe {
        args,
        kind,
        refused: None,
        pending,
    })
}

impl ExecSubscribe {
    /// Whether the engine answered every name already.
    pub(super) fn ready(&self) -> bool {
        self.pending
            .iter()
            .all(|(_, p)| matches!(p, Pending::Ready(_)))
    }

    /// The engine's answers, [`ExecSubscribe::ready`] already.
    pub(super) fn prepared_now(self) -> ExecSubscribed {
        let prepared = self
            .pending
            .into_iter()
            .filter_map(|(n, p)| Some((n, p.now().ok()?)))
            .collect();
        ExecSubscribed {
            args: self.args,
            kind: self.kind,
            refused: self.refused,
            prepared,
        }
    }

    /// Awaits the engine's answers.
    pub(super) async fn prepared(self) -> ExecSubscribed {
        let mut prepared = Prepared::with_capacity(self.pending.len());
        for (name, p) in self.pending {
            prepared.insert(name, p.await);
        }
        ExecSubscribed {
            args: self.args,
            kind: self.kind,
            refused: self.refused,
            prepared,
        }
    }
}

/// An [`ExecSubscribe`] the engine answered: run in EXEC's reply.
pub(super) struct ExecSubscribed {
    args: Vec<Bytes>,
    kind: Kind,
    refused: Option<Bytes>,
    prepared: Prepared,
}

impl ExecSubscribed {
    /// Its replies, inside EXEC's (registrations deferred to its end).
    pub(super) fn run(self, conn: &mut Conn) {
        if let Some(err) = self.refused {
            return conn.reply_frame(&err);
        }
        subscribe_names(conn, &self.args[1..], self.kind, Some(self.prepared));
    }
}

/// Confirms and registers `names` in order. `prepared`: the engine's
/// outcomes, awaited already (engine mode); `None`, this thread asks the
/// engine (which the memory engine answers at once).
fn subscribe_names(conn: &mut Conn, names: &[Bytes], kind: Kind, mut prepared: Option<Prepared>) {
    let (word, _) = kind.words();
    for name in names {
        if kind.set(conn).contains(name) {
            let count = kind.count(conn);
            confirm(conn, word, Some(name), count);
            continue;
        }
        if !check_name(conn, name, kind) {
            continue;
        }
        let max = conn.max_subscriptions();
        if conn.total_subscriptions() >= max {
            conn.reply().error(&format!(
                "ERR max subscriptions per connection reached ({max})"
            ));
            continue;
        }
        if kind == Kind::Pattern && !(patterns_fit(conn, name) && pattern_quota_ok(conn)) {
            continue;
        }
        let space = kind.space();
        // The engine before the confirmation: a refusal is the only answer.
        let ticket = match prepared.as_mut() {
            None => conn.server.hub.prepare_subscribe(space, name),
            Some(prepared) => match prepared.remove(name) {
                Some(Ok(t)) => Ok(t),
                Some(Err(e)) => {
                    // A repeat of the name meets the same refusal.
                    prepared.insert(name.clone(), Err(e.clone()));
                    Err(e)
                }
                // Inside EXEC, a name its UNSUBSCRIBE dropped and took
                // again: this thread asks (rare).
                None if conn.in_exec => conn.server.hub.prepare_subscribe(space, name),
                // Room was counted before the engine refused others of
                // this command: not asked, and not waited for here.
                None => Err(EngineError::Unavailable(
                    "subscribe not attempted; retry".into(),
                )),
            },
        };
        let ticket = match ticket {
            Ok(t) => t,
            Err(e) => {
                conn.reply().error(&format!("ERR {e}"));
                conn.settle_pattern_quota();
                continue;
            }
        };
        // A copy of its own: the argument is a slice of the whole request,
        // which it would keep alive for as long as the subscription lasts.
        kind.set(conn).insert(Bytes::copy_from_slice(name));
        let count = kind.count(conn);
        confirm(conn, word, Some(name), count);
        // The confirmation must reach the outbox before the registry can
        // deliver the first message on this channel.
        conn.flush_replies();
        conn.register(space, name.clone(), ticket);
    }
    conn.sync_counts();
}

fn unsubscribe_kind(conn: &mut Conn, args: &[Bytes], kind: Kind) {
    let (_, word) = kind.words();
    let names: Vec<Bytes> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        kind.set(conn).iter().cloned().collect()
    };
    if names.is_empty() {
        let count = kind.count(conn);
        confirm(conn, word, None, count);
        return;
    }
    for name in names {
        if kind.set(conn).remove(&name) {
            let hub = &conn.server.hub;
            let id = conn.handle.id;
            match kind {
                Kind::Channel => hub.unsubscribe(Space::Global, &name, id),
                Kind::Shard => hub.unsubscribe(Space::Shard, &name, id),
                Kind::Pattern => hub.punsubscribe(&name, id),
            };
        }
        let count = kind.count(conn);
        confirm(conn, word, Some(&name), count);
    }
    if kind == Kind::Pattern {
        conn.settle_pattern_quota();
    }
    conn.sync_counts();
}

fn subscribe(conn: &mut Conn, args: &[Bytes]) {
    subscribe_kind(conn, args, Kind::Channel)
}
fn psubscribe(conn: &mut Conn, args: &[Bytes]) {
    subscribe_kind(conn, args, Kind::Pattern)
}
fn ssubscribe(conn: &mut Conn, args: &[Bytes]) {
    subscribe_kind(conn, args, Kind::Shard)
}
fn unsubscribe(conn: &mut Conn, args: &[Bytes]) {
    unsubscribe_kind(conn, args, Kind::Channel)
}
fn punsubscribe(conn: &mut Conn, args: &[Bytes]) {
    unsubscribe_kind(conn, args, Kind::Pattern)
}
fn sunsubscribe(conn: &mut Conn, args: &[Bytes]) {
    unsubscribe_kind(conn, args, Kind::Shard)
}

fn list_channels(conn: &mut Conn, args: &[Bytes], space: Space) {
    if args.len() > 3 {
        let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
        msg.extend_from_slice(&args[1][..args[1].len().min(128)]);
        msg.extend_from_slice(b"'. Try PUBSUB HELP.");
        conn.reply().error_bytes(&msg);
        return;
    }
    if !may_survey(conn) {
        return;
    }
    // Every node's channels: in engine mode a survey of the other nodes,
    // waited for here (at most `SURVEY_TIMEOUT`); what did not arrive in
    // time is left out (docs/engine.md). Inside EXEC, which holds the
    // keyspace, this node's alone: a transaction never waits on others.
    // A token's globs go with the question: other nodes answer with only
    // what it may see (docs/engine.md); the list is filtered here still.
    // In engine mode the connection awaits the survey (no thread parks).
    let others = !conn.in_exec;
    let scope = conn.identity.as_ref().and_then(|i| i.survey_scope());
    let pattern = args.get(2).cloned();
    if others && conn.server.hub.subscribes_await() {
        let scope = scope.map(<[String]>::to_vec);
        await_hub(
            conn,
            move |hub| {
                hub.cluster_channels_pending(space, pattern.as_deref(), scope.as_deref(), true)
            },
            reply_channels,
        );
        return;
    }
    let view = conn
        .server
        .hub
        .cluster_channels(space, pattern.as_deref(), scope, others);
    reply_channels(conn, view);
}

/// The channels of a survey this client may see.
fn reply_channels(conn: &mut Conn, view: crate::hub::ClusterView<Vec<(Bytes, u64)>>) {
    let mut list: Vec<Bytes> = view.value.into_iter().map(|(c, _)| c).collect();
    list.retain(|c| visible(conn, c));
    conn.reply().bulks(list.iter());
}

/// Whether this client may ask the other nodes (a survey) now: clients
/// without the password pay [`crate::rate::SURVEY_READS`] of their
/// address's `--read-rate` bucket, since every other node answers with up
/// to a MiB. Inside EXEC, or with no other node, nothing is asked and
/// nothing paid. False (an error answered) when the bucket is empty.
fn may_survey(conn: &mut Conn) -> bool {
    if conn.in_exec
        || matches!(conn.identity, Some(crate::auth::Identity::Password))
        || conn.server.hub.cluster_peers() == 0
    {
        return true;
    }
    let limit = conn.server.cfg.read_limit;
    if conn.client.take_survey(limit) {
        return true;
    }
    conn.reply().error(&format!(
        "ERR rate limit: PUBSUB asks every node; {} a second from this address (--read-rate {} / {})",
        (limit.rate / crate::rate::SURVEY_READS).max(1),
        limit.rate,
        crate::rate::SURVEY_READS
    ));
    false
}

/// Introspection shows a client only the channels it may subscribe to:
/// a token limited to `chat:*` learns nothing of `secret:*`, not even that
/// it has subscribers.
fn visible(conn: &Conn, channel: &[u8]) -> bool {
    match &conn.identity {
        Some(crate::auth::Identity::Password) => true,
        Some(id) => id.may_subscribe(channel, &conn.server.cfg),
        None => false,
    }
}

fn channels(conn: &mut Conn, args: &[Bytes]) {
    list_channels(conn, args, Space::Global)
}
fn shardchannels(conn: &mut Conn, args: &[Bytes]) {
    list_channels(conn, args, Space::Shard)
}

fn count_subs(conn: &mut Conn, args: &[Bytes], space: Space) {
    if !may_survey(conn) {
        return;
    }
    // Only the channels this client may see are asked about (in engine
    // mode, of every node: a survey): the others count 0.
    let shown: Vec<bool> = args[2..].iter().map(|c| visible(conn, c)).collect();
    let asked: Vec<Bytes> = args[2..]
        .iter()
        .zip(&shown)
        .filter(|(_, s)| **s)
        .map(|(c, _)| c.clone())
        .collect();
    let others = !conn.in_exec;
    let args = args.to_vec();
    if others && conn.server.hub.subscribes_await() {
        await_hub(
            conn,
            move |hub| hub.cluster_numsub_pending(space, &asked, true),
            move |conn, r| reply_counts(conn, &args, &shown, r),
        );
        return;
    }
    let r = conn.server.hub.cluster_numsub(space, &asked, others);
    reply_counts(conn, &args, &shown, r);
}

/// NUMSUB's reply: the counts of the channels this client may see, 0 for
/// the others.
fn reply_counts(
    conn: &mut Conn,
    args: &[Bytes],
    shown: &[bool],
    r: Result<crate::hub::ClusterView<Vec<u64>>, crate::hub::TooManyNames>,
) {
    let counts = match r {
        Ok(view) => view.value,
        Err(e) => {
            conn.reply().error(&format!("ERR {e}"));
            return;
        }
    };
    let mut counts = counts.into_iter();
    let mut out = conn.reply();
    out.array((args.len() - 2) * 2);
    for (c, s) in args[2..].iter().zip(shown) {
        out.bulk(c);
        let n = if *s { counts.next().unwrap_or(0) } else { 0 };
        // Other nodes' counts are summed as they came: cap, never wrap.
        out.int(n.min(i64::MAX as u64) as i64);
    }
}

fn numsub(conn: &mut Conn, args: &[Bytes]) {
    count_subs(conn, args, Space::Global)
}
fn shardnumsub(conn: &mut Conn, args: &[Bytes]) {
    count_subs(conn, args, Space::Shard)
}

fn numpat(conn: &mut Conn, _args: &[Bytes]) {
    if !may_survey(conn) {
        return;
    }
    let scope = match &conn.identity {
        Some(crate::auth::Identity::Password) => None,
        Some(id) => id.survey_scope().map(<[String]>::to_vec),
        None => return conn.reply().int(0),
    };
    let others = !conn.in_exec;
    if others && conn.server.hub.subscribes_await() {
        await_hub(
            conn,
            move |hub| hub.cluster_patterns_pending(scope.as_deref(), true),
            reply_numpat,
        );
        return;
    }
    let view = conn.server.hub.cluster_patterns(scope.as_deref(), others);
    reply_numpat(conn, view);
}

/// NUMPAT's reply: the patterns of a survey this client may see.
fn reply_numpat(conn: &mut Conn, view: crate::hub::ClusterView<Vec<Bytes>>) {
    let n = match &conn.identity {
        Some(crate::auth::Identity::Password) => view.value.len(),
        Some(id) => {
            let cfg = &conn.server.cfg;
            view.value
                .iter()
                .filter(|p| id.may_psubscribe(p, cfg))
                .count()
        }
        None => 0,
    };
    conn.reply().int(n as i64);
}

fn help(conn: &mut Conn, _args: &[Bytes]) {
    help_reply(
        conn,
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
        ],
    );
}
