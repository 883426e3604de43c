//! One WebSocket session: the task that alone owns the socket, and its
//! loop (read, write, liveness, the closing handshake).
//!
//! Commands are answered through the session's outbox, in order with the
//! messages publishers push there, exactly as on RESP: a `subscribe` reply
//! is queued before the subscription becomes visible, so it always precedes
//! the channel's first message. One `select!` serves the socket, the outbox,
//! liveness pings, token expiry and shutdown; while a batch is being
//! written the socket is read too, so a client's Close is answered at once.
//!
//! The ops live in `ops` and the subscriber side with its catch-up from
//! history in `recovery`; this file owns the socket.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant as TInstant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::hooks::Pending;
use super::protocol::DisconnectCode;
use super::recovery::{lag_threshold, LagState, WsSink};
use crate::auth::{Identity, TokenError};
use crate::http::AppState;
use crate::hub::{ClientId, Outbox, Stats};
use crate::proxy::{AppDisconnect, ConnectHeaders};

/// The upgraded connection, owned by its session.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Messages larger than this go out as fragments of this size (RFC 6455
/// §5.4): tungstenite copies each frame whole into its write buffer, and
/// that buffer keeps its largest size for the life of the connection, so a
/// 1 MB message sent as one frame left 1 MB behind in every session that
/// received it. In fragments the buffer stays within this plus the 8 KiB
/// write threshold, what a burst of small messages grows it to anyway.
const FRAGMENT: usize = 8 * 1024;

/// A frame read from the socket, or the end of the stream.
type Incoming = Option<Result<Message, WsError>>;

/// Pending output past which a request is held back, and the socket no
/// longer read, until the client has read its output down below this: a
/// client that sends requests and reads nothing would otherwise have every
/// reply queued, up to the hard limit, and small replies are not held to
/// the global budget (20 such clients held 700 MiB under a 32 MiB budget).
/// The reply loses no time: it would have been queued behind that output.
const READ_PAUSE_BYTES: usize = 64 * 1024;

/// Frames taken from the outbox and not yet handed to the socket.
#[derive(Default)]
pub(super) struct Outgoing {
    frames: VecDeque<Bytes>,
    /// Bytes of the first frame already handed over as fragments.
    sent: usize,
}

impl Outgoing {
    /// The next message, or fragment of a large one, to hand to the
    /// socket, with its payload's length. `Err` for a frame that is not
    /// UTF-8 (never: frames are serde_json output), dropped.
    fn next(&mut self) -> Option<Result<(Message, usize), ()>> {
        let frame = self.frames.front()?;
        let n = frame.len();
        if self.sent == 0 && (n <= FRAGMENT || std::str::from_utf8(frame).is_err()) {
            let frame = self.frames.pop_front()?;
            return Some(
                Utf8Bytes::try_from(frame)
                    .map(|t| (Message::Text(t), n))
                    .map_err(|_| ()),
            );
        }
        let (start, end) = (self.sent, (self.sent + FRAGMENT).min(n));
        let opcode = OpCode::Data(if start == 0 {
            Data::Text
        } else {
            Data::Continue
        });
        let part = frame.slice(start..end);
        if end == n {
            self.frames.pop_front();
            self.sent = 0;
        } else {
            self.sent = end;
        }
        Some(Ok((
            Message::Frame(Frame::message(part, opcode, end == n)),
            end - start,
        )))
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops what is queued; true when that cuts a message between its
    /// fragments (no other data message may follow then).
    fn abandon(&mut self) -> bool {
        self.frames.clear();
        std::mem::take(&mut self.sent) > 0
    }
}

pub(super) struct Session {
    pub(super) st: AppState,
    pub(super) id: ClientId,
    pub(super) sink: Arc<WsSink>,
    pub(super) identity: Identity,
    /// `connect` was sent (it may be sent once).
    pub(super) connected: bool,
    pub(super) channels: HashSet<String>,
    pub(super) patterns: HashSet<String>,
    pub(super) leaderboards: HashSet<String>,
    pub(super) expires_at: Option<tokio::time::Instant>,
    /// What the session's client address has used of its limits, shared
    /// with its other connections (`--subscribe-rate`, `--ws-publish-rate`,
    /// `--proxy-connect-rate`, `--max-untrusted-patterns-per-client`).
    pub(super) client: Arc<crate::rate::Client>,
    /// The upgrade's headers for the connect hook: kept (boxed, so
    /// sessions without them pay one pointer) only where a connect hook is
    /// configured and the URL held no token, until `connect`.
    pub(super) handshake: Option<Box<ConnectHeaders>>,
    /// Channels granted by subscription tokens (`subtokens`): allocated
    /// only by sessions that use them.
    pub(super) sub_tokens: Option<Box<super::subtokens::SubTokens>>,
}

/// How far ahead any deadline is set at most. Deadlines come from a
/// client's token (`exp`, up to `u64::MAX` seconds) and from the config;
/// `Instant + Duration` panics on overflow, and tokio's timer adds to the
/// deadline again, so they are capped well inside the clock's range.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `base + d`, capped at [`FAR_FUTURE`]: never panics.
pub(super) fn later(base: TInstant, d: Duration) -> TInstant {
    base + d.min(FAR_FUTURE)
}

/// When a token with expiry `exp` (Unix seconds, from the client) runs out.
pub(super) fn expiry_instant(exp: u64, leeway: Duration) -> TInstant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp)
        .saturating_sub(now_unix)
        .saturating_add(leeway);
    later(TInstant::now(), left)
}

/// How long a closing handshake may take: the Close frame (after pending
/// replies) out, and the peer's Close or EOF in.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What handling a frame leaves to the session loop.
pub(super) enum Step {
    /// Read on.
    Read,
    /// The session ends.
    End(End),
    /// Ask the app's backend, then resume the op (`hooks`): only this
    /// session waits for the answer.
    Ask(Box<Pending>),
}

/// What the upgrade request brought to authenticate with: one argument
/// (the token and the headers exclude each other), since the session
/// future keeps its arguments for its whole life.
pub enum Credentials {
    None,
    /// `?token=` on the URL.
    Token(String),
    /// No token, and a connect hook to ask: its request headers.
    Headers(Box<ConnectHeaders>),
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// The socket is gone (EOF, reset, write error): nothing more to send.
    Gone,
    /// The client sent a Close frame: it is answered with a Close
    /// (RFC 6455 §5.5.1), then TCP is closed.
    ClosedByClient,
    /// A `disconnect` push, then a Close frame with the same code.
    Disconnect(DisconnectCode),
    /// The same with the code and reason the app's backend gave.
    App(Box<AppDisconnect>),
    /// A Close frame with a WebSocket protocol code (RFC 6455 §7.4.1) and
    /// no push: the client broke the framing itself (1007 invalid UTF-8,
    /// 1002 protocol error).
    Violation(u16, &'static str),
}

impl Session {
    /// A frame read from the socket (or its end).
    fn receive(&mut self, msg: Incoming) -> Step {
        match msg {
            None => Step::End(End::Gone),
            Some(Ok(Message::Close(_))) => Step::End(End::ClosedByClient),
            Some(Err(e)) => {
                tracing::debug!(client = self.id, error = %e, "websocket read error");
                Step::End(read_error(&e))
            }
            Some(Ok(Message::Text(t))) => {
                if t.len() > self.st.cfg.ws_max_message_size {
                    return Step::End(End::Disconnect(DisconnectCode::MessageTooBig));
                }
                self.handle(t.as_str())
            }
            Some(Ok(Message::Binary(_))) => Step::End(End::Disconnect(DisconnectCode::BadRequest)),
            // Raw frames are never read: tungstenite assembles them.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Step::Read,
        }
    }

    /// What handling a frame left to do: `Ok(Some(pending))` when an op
    /// waits for the app's backend, `Err(end)` when the session ends.
    fn settle(step: Step) -> Result<Option<Box<Pending>>, End> {
        match step {
            Step::Read => Ok(None),
            Step::End(end) => Err(end),
            Step::Ask(pending) => Ok(Some(pending)),
        }
    }

    /// Leaves every channel, pattern, presence and leaderboard. Idempotent:
    /// `Drop` runs it again, so a panic cannot leave ghosts behind.
    fn cleanup(&mut self) {
        self.sink.outbox.close();
        let n = self.channels.len() + self.patterns.len();
        self.give_patterns(self.patterns.len());
        self.st.hub.leave_all(
            self.id,
            self.channels.iter().map(|c| c.as_bytes()),
            [],
            self.patterns.iter().map(|p| p.as_bytes()),
            self.leaderboards.iter().map(|k| k.as_bytes()),
        );
        self.channels.clear();
        self.patterns.clear();
        self.leaderboards.clear();
        self.st.ws.subscriptions.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The end a read error calls for: the client's own protocol faults are
/// answered with their WebSocket close codes, anything else means the
/// socket is gone.
fn read_error(e: &WsError) -> End {
    match e {
        // RFC 6455 §8.1: a text message that is not UTF-8 fails the
        // connection with 1007.
        WsError::Utf8(_) => End::Violation(1007, "invalid UTF-8 in a text frame"),
        WsError::Capacity(_) => End::Disconnect(DisconnectCode::MessageTooBig),
        WsError::Protocol(_) => End::Violation(1002, "protocol error"),
        _ => End::Gone,
    }
}

/// Ends the session on the wire, briefly: a client that does not read is
/// not waited for longer than [`CLOSE_WAIT`].
///
/// `pending` (replies queued before the end, such as a refused
/// `connect`'s error, after the rest of a message cut between fragments)
/// goes out before the `disconnect` push; where a message was `cut` and
/// will not be finished, no push follows it, only the Close frame (a
/// control frame may come between fragments). After our Close frame the
/// peer's is awaited: closing TCP with unread input would reset the
/// connection, and the client could lose the Close frame.
async fn finish(socket: &mut WebSocket, end: End, mut pending: Outgoing, cut: bool) {
    let (code, reason, push): (u16, String, Option<String>) = match end {
        End::Gone => return,
        End::ClosedByClient => {
            // tungstenite queued the answering Close when it read the
            // client's; flushing sends it (after any frame begun before).
            let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
            return;
        }
        End::Disconnect(code) => (code as u16, code.reason().into(), Some(code.push())),
        End::App(d) => {
            let push = super::protocol::disconnect_push(d.code, &d.reason, d.reconnect());
            (d.code, d.reason, Some(push))
        }
        End::Violation(code, reason) => (code, reason.into(), None),
    };
    let push = push.filter(|_| !cut);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(next) = pending.next() {
            if let Ok((msg, _)) = next {
                socket.feed(msg).await?;
            }
        }
        if let Some(push) = push {
            socket.feed(Message::Text(Utf8Bytes::from(push))).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: Utf8Bytes::from(reason),
            })))
            .await?;
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), WsError>(())
    })
    .await;
}

/// Runs one session to its end.
///
/// A plain function returning an `async move` block, not an `async fn`: an
/// async fn keeps its arguments twice in its future (as captured and as
/// locals, rust-lang/rust#62958), and this future is most of what an idle
/// connection costs.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn run(
    mut socket: WebSocket,
    st: AppState,
    credentials: Credentials,
    client: Arc<crate::rate::Client>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let (mut s, refused) = Session::open(st, credentials, client);
        let mut out = Outgoing::default();
        // One await of the session loop (each await point is space in this
        // future, which every idle connection keeps).
        let end = match refused {
            Some(code) => End::Disconnect(code),
            None => serve(&mut socket, &mut s, &mut out).await,
        };
        let cut = match s.flushes_on(&end) {
            // Replies still queued go out before the disconnect, in order
            // (a refused `connect` has its error reply there).
            true => {
                s.sink.outbox.take(&mut out.frames);
                false
            }
            false => out.abandon(),
        };
        s.ended(&end);
        // Boxed: the closing handshake takes space only while it runs.
        Box::pin(finish(&mut socket, end, out, cut)).await;
    }
}

impl Session {
    /// A new session of either transport, its URL credentials checked: a
    /// refused token is the code the session ends with at once.
    pub(super) fn open(
        st: AppState,
        credentials: Credentials,
        client: Arc<crate::rate::Client>,
    ) -> (Session, Option<DisconnectCode>) {
        let id = st.hub.next_client_id();
        Stats::add(&st.hub.stats().connections_total, 1);
        st.ws.open.fetch_add(1, Ordering::Relaxed);
        let mut s = Session {
            id,
            sink: Arc::new(WsSink {
                // Every session counts in its address's share.
                outbox: Arc::new(Outbox::with_budget(
                    st.cfg.output_limits,
                    st.hub.client_output(&client),
                )),
                lag: Mutex::new(LagState::default()),
                lag_bytes: lag_threshold(&st.cfg.output_limits),
            }),
            identity: st.auth.unauthenticated(),
            connected: false,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            leaderboards: HashSet::new(),
            expires_at: None,
            client,
            handshake: None,
            sub_tokens: None,
            st,
        };
        let url_token = match credentials {
            Credentials::None => None,
            Credentials::Token(t) => Some(t),
            Credentials::Headers(h) => {
                s.handshake = Some(h);
                None
            }
        };
        let limit = s.st.cfg.auth_budget();
        let checked =
            url_token.map(|t| s.client.authenticate(limit, || s.st.auth.verify_token(&t)));
        let refused = match checked {
            // Past the address's budget of failures: not checked at all.
            Some(Err(_wait)) => {
                Stats::add(&s.st.hub.stats().auth_failures, 1);
                Some(DisconnectCode::ConnectRateLimited)
            }
            Some(Ok(Err(e))) => {
                Stats::add(&s.st.hub.stats().auth_failures, 1);
                tracing::debug!(client = id, error = %e, "session token refused");
                Some(match e {
                    TokenError::Expired => DisconnectCode::TokenExpired,
                    _ => DisconnectCode::Unauthorized,
                })
            }
            Some(Ok(Ok(claims))) => {
                s.set_identity(Some(claims));
                None
            }
            None => None,
        };
        (s, refused)
    }

    /// The outbox's side of a loop turn, for either transport: ends a
    /// session whose recovery broke or whose output overflowed, replays
    /// what a lagging subscriber missed, and moves the queued frames to
    /// `frames`. `Ok(true)` after a replay step (yield to other tasks).
    pub(super) fn pump(&mut self, frames: &mut VecDeque<Bytes>, held: bool) -> Result<bool, End> {
        let sink = self.sink.clone();
        let (broken, behind) = {
            let lag = sink.lag();
            (lag.broken, lag.behind > 0)
        };
        if broken {
            return Err(End::Disconnect(DisconnectCode::InsufficientState));
        }
        let mut replayed = false;
        // A request held back (past READ_PAUSE_BYTES) goes before more of
        // the replay.
        if behind && !held && sink.outbox.pending_bytes() < sink.lag_bytes / 2 {
            replayed = self.catch_up().map_err(End::Disconnect)?;
        }
        sink.outbox.take(frames);
        if sink.outbox.overflowed().is_some() {
            return Err(End::Disconnect(DisconnectCode::Slow));
        }
        Ok(replayed)
    }

    /// Once authentication is configured, a session that holds no token
    /// and nothing an open namespace gave it is closed after
    /// --auth-timeout, as RESP connections are: idle anonymous sessions
    /// must not hold the slots.
    pub(super) fn auth_deadline(&self) -> Option<TInstant> {
        let cfg = &self.st.cfg;
        (cfg.has_auth() && !cfg.auth_timeout.is_zero() && self.identity == Identity::Anonymous)
            .then(|| later(TInstant::now(), cfg.auth_timeout))
    }

    /// The token and authentication deadlines at `now`: `Some` ends the
    /// session; a passed `auth` deadline is cleared.
    pub(super) fn overdue(&mut self, now: TInstant, auth: &mut Option<TInstant>) -> Option<End> {
        if self.expires_at.is_some_and(|e| now >= e) {
            return Some(End::Disconnect(DisconnectCode::TokenExpired));
        }
        // Subscription tokens past their end unsubscribe their channels.
        self.sub_tokens_due(now);
        if auth.is_some_and(|a| now >= a) {
            *auth = None;
            let idle = self.channels.is_empty()
                && self.patterns.is_empty()
                && self.leaderboards.is_empty();
            if self.identity == Identity::Anonymous && idle {
                return Some(End::Disconnect(DisconnectCode::Unauthorized));
            }
        }
        None
    }

    /// Whether replies still queued go out before `end`: not to a client
    /// that is not reading anyway, nor after the stream is gone.
    pub(super) fn flushes_on(&self, end: &End) -> bool {
        match end {
            End::Disconnect(code) => !matches!(code, DisconnectCode::Slow | DisconnectCode::NoPong),
            End::App(_) => true,
            _ => false,
        }
    }

    /// Leaves everything the session held, and counts a slow consumer.
    pub(super) fn ended(&mut self, end: &End) {
        self.cleanup();
        if *end == End::Disconnect(DisconnectCode::Slow) {
            Stats::add(&self.st.hub.stats().slow_disconnects, 1);
            tracing::warn!(
                client = self.id,
                "client closed for overcoming of output buffer limits"
            );
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cleanup();
        self.st.ws.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The session loop. Returns how the session ends.
async fn serve(socket: &mut WebSocket, s: &mut Session, out: &mut Outgoing) -> End {
    let sink = s.sink.clone();
    let outbox = &sink.outbox;
    let shutdown = s.st.ws.shutdown.clone();
    let cfg = s.st.cfg.clone();
    // A socket that accepts nothing for this long belongs to a client that
    // stopped reading.
    let stall = cfg.ws_ping_interval.saturating_add(cfg.ws_pong_timeout);
    // One timer for every deadline (next ping, pong due, token expiry): most
    // sessions are idle, and each timer is memory they keep.
    let mut next_ping = later(TInstant::now(), cfg.ws_ping_interval);
    let mut awaiting_pong: Option<TInstant> = None;
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    let mut armed = next_ping;
    // Bytes handed to tungstenite and not yet flushed to the socket. They
    // stay counted as pending output (and in the global budget) until the
    // flush: tungstenite copies each frame into its own write buffer, so a
    // large reply handed over is still memory held for this client.
    let mut unflushed = 0usize;
    let mut stall_deadline: Option<TInstant> = None;
    // A request read while output was past READ_PAUSE_BYTES: answered once
    // it is not (boxed: most sessions never hold one).
    let mut parked: Option<Box<Utf8Bytes>> = None;
    let mut auth_deadline = s.auth_deadline();
    // An op waiting for the app's backend: awaited at one place, the top
    // of the loop, before anything else is read (each await point of this
    // loop is space that every idle session keeps).
    let mut asking: Option<Box<Pending>> = None;
    loop {
        if let Some(pending) = asking.take() {
            // Boxed: the call takes space only while it runs. The socket is
            // read meanwhile: a request is parked, and a client that hangs
            // up ends the call, not holding its slot for --proxy-timeout.
            let mut call = Box::pin(s.ask(pending, &shutdown));
            let early = loop {
                tokio::select! {
                    end = &mut call => match end {
                        Some(end) => return end,
                        None => break None,
                    },
                    msg = socket.next(), if parked.is_none() => match msg {
                        Some(Ok(Message::Text(text))) => parked = Some(Box::new(text)),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            awaiting_pong = None;
                        }
                        other => break Some(other),
                    },
                }
            };
            drop(call);
            // A close, an error or a binary frame: the session ends.
            if let Some(msg) = early {
                if let Err(end) = Session::settle(s.receive(msg)) {
                    return end;
                }
            }
        }
        if let Some(text) = parked.take_if(|_| outbox.pending_bytes() < READ_PAUSE_BYTES) {
            match Session::settle(s.receive(Some(Ok(Message::Text(*text))))) {
                Ok(p) => asking = p,
                Err(end) => return end,
            }
            if asking.is_some() {
                continue;
            }
        }
        // A held request goes before more of the replay.
        match s.pump(&mut out.frames, parked.is_some()) {
            Err(end) => return end,
            // A long replay is encoding work on this thread: let the
            // other clients' tasks run between its steps.
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => {}
        }
        // A phase cut short by an incoming frame may have fed everything
        // but not flushed it yet: finishing that is a write phase too.
        if !out.is_empty() || unflushed > 0 {
            // Boxed: the write path's futures live on the heap only while a
            // write is in flight, keeping idle sessions small.
            // The stall deadline runs from the start of the batch, not of
            // each phase: a client that keeps sending (each frame ends a
            // phase early) but reads nothing is still cut off.
            let deadline = *stall_deadline.get_or_insert_with(|| later(TInstant::now(), stall));
            let read = parked.is_none();
            let write = write_phase(
                socket,
                out,
                &mut unflushed,
                outbox,
                &shutdown,
                deadline,
                read,
            );
            match Box::pin(write).await {
                Written::Done => stall_deadline = None,
                Written::Incoming(Some(Ok(Message::Text(text))))
                    if outbox.pending_bytes() >= READ_PAUSE_BYTES =>
                {
                    awaiting_pong = None;
                    parked = Some(Box::new(text));
                }
                Written::Incoming(msg) => {
                    awaiting_pong = None;
                    match Session::settle(s.receive(msg)) {
                        Ok(p) => asking = p,
                        Err(end) => return end,
                    }
                }
                Written::End(end) => return end,
            }
            continue;
        }
        let ping_due = awaiting_pong.map_or(next_ping, |t| later(t, cfg.ws_pong_timeout));
        let deadline = s.expires_at.map_or(ping_due, |e| e.min(ping_due));
        let deadline = auth_deadline.map_or(deadline, |a| a.min(deadline));
        let deadline = s.sub_deadline().map_or(deadline, |t| t.min(deadline));
        if deadline != armed {
            timer.as_mut().reset(deadline);
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Disconnect(DisconnectCode::Shutdown),
            _ = outbox.ready() => {}
            msg = socket.next(), if parked.is_none() => {
                awaiting_pong = None;
                match Session::settle(s.receive(msg)) {
                    Ok(p) => asking = p,
                    Err(end) => return end,
                }
            }
            _ = &mut timer => {
                let now = TInstant::now();
                if let Some(end) = s.overdue(now, &mut auth_deadline) {
                    return end;
                }
                match awaiting_pong {
                    Some(t) if now >= later(t, cfg.ws_pong_timeout) => {
                        return End::Disconnect(DisconnectCode::NoPong)
                    }
                    Some(_) => {}
                    None if now >= next_ping => {
                        awaiting_pong = Some(now);
                        next_ping = later(now, cfg.ws_ping_interval);
                        // Boxed: the send and its timer take space only
                        // while a ping is on its way.
                        let sent = Box::pin(tokio::time::timeout(
                            cfg.ws_pong_timeout,
                            socket.send(Message::Ping(Bytes::new())),
                        ))
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return End::Gone,
                            Err(_) => return End::Disconnect(DisconnectCode::NoPong),
                        }
                    }
                    None => {}
                }
                // Fired: re-arm on the next loop even if the deadline is equal.
                armed = now;
            }
        }
    }
}

/// What a write phase ended with.
enum Written {
    /// The batch is written and flushed.
    Done,
    /// A frame (or the end of the stream) arrived while writing: the loop
    /// handles it, then goes on with what is left of the batch.
    Incoming(Incoming),
    /// The session is over.
    End(End),
}

/// Writes the batch, watching for shutdown, overflow, a stalled socket and
/// (when `read`) the client's own frames.
async fn write_phase(
    socket: &mut WebSocket,
    out: &mut Outgoing,
    unflushed: &mut usize,
    outbox: &Outbox,
    shutdown: &tokio_util::sync::CancellationToken,
    stall: TInstant,
    read: bool,
) -> Written {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Written::End(End::Disconnect(DisconnectCode::Shutdown)),
        _ = wait_overflow(outbox) => Written::End(End::Disconnect(DisconnectCode::Slow)),
        _ = tokio::time::sleep_until(stall) => Written::End(End::Disconnect(DisconnectCode::Slow)),
        w = write_or_read(socket, out, unflushed, outbox, read) => w,
    }
}

/// Feeds the batch to the socket and flushes it, reporting the bytes to the
/// outbox once flushed, and returns early when a frame arrives (if `read`). Reading while
/// writing is what lets a client's Close be answered at once under a flood
/// of messages (without it the Close waits behind every queued message,
/// and a client that has stopped reading never gets an answer); one poll
/// serves both directions, so the socket needs no split (a lock and an
/// allocation per connection).
fn write_or_read<'a>(
    socket: &'a mut WebSocket,
    out: &'a mut Outgoing,
    unflushed: &'a mut usize,
    outbox: &'a Outbox,
    read: bool,
) -> impl std::future::Future<Output = Written> + 'a {
    std::future::poll_fn(move |cx| {
        if read {
            if let Poll::Ready(msg) = socket.poll_next_unpin(cx) {
                return Poll::Ready(Written::Incoming(msg));
            }
        }
        loop {
            match socket.poll_ready_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Written::End(End::Gone)),
                Poll::Ready(Ok(())) => {}
            }
            // One message, or one fragment of a large one: the socket is
            // ready for each, so tungstenite's buffer never holds more.
            let Some(next) = out.next() else {
                break;
            };
            // Our frames are serde_json output: valid UTF-8 by construction.
            let Ok((msg, n)) = next else {
                tracing::error!("websocket frame is not UTF-8; closing the session");
                return Poll::Ready(Written::End(End::Gone));
            };
            if socket.start_send_unpin(msg).is_err() {
                return Poll::Ready(Written::End(End::Gone));
            }
            *unflushed += n;
        }
        match socket.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {
                outbox.written(std::mem::take(unflushed));
                Poll::Ready(Written::Done)
            }
            Poll::Ready(Err(_)) => Poll::Ready(Written::End(End::Gone)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Resolves when the outbox overflows (used while a write is in flight).
pub(super) async fn wait_overflow(outbox: &Outbox) {
    loop {
        if outbox.overflowed().is_some() {
            return;
        }
        outbox.ready().await;
    }
}
