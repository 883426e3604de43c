//! The SSE transport: the same sessions as `/ws`, over two HTTP requests.
//!
//! `GET /sse` opens a `text/event-stream` whose events carry exactly the
//! JSON a WebSocket frame would; the first is the `connect` reply, with the
//! `session` id that `POST /sse/{session}` takes ops for (one object, or
//! an array). The POSTed ops feed the same `Session::handle`, and the
//! stream is written from the same outbox, with the same limits, catch-up
//! and deadlines; only the wire differs: events instead of frames, `:`
//! comment lines instead of pings, the end of the stream instead of a
//! Close frame.
//!
//! The session id is a bearer secret (128 random bits): whoever holds it
//! may send ops as the session's user.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant as TInstant;

use super::hooks::Pending;
use super::protocol::{disconnect_push, DisconnectCode};
use super::session::{later, Credentials, End, Session, Step};
use super::{origin_allowed, WsQuery};
use crate::http::{ApiError, AppState};
use crate::hub::Stats;

/// Ops one POST may carry.
pub const MAX_BATCH: usize = 100;
/// POSTs a session holds unread; past them a POST gets 503 (109).
const QUEUED_POSTS: usize = 16;
/// How long the last events (the disconnect push) may take to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The ops of one POST, each as its JSON text.
type Batch = Vec<String>;

/// The open SSE sessions by id: where their POSTs go.
#[derive(Default)]
pub struct Registry {
    sessions: dashmap::DashMap<String, Inbox>,
}

/// A session's POSTs not yet read, bounded in number and in bytes (at
/// most `--http-max-body-size` in all: one full POST).
#[derive(Clone)]
struct Inbox {
    tx: mpsc::Sender<Batch>,
    bytes: Arc<AtomicUsize>,
}

/// Removes a session's entry when its task ends, however it ends.
struct Entry {
    st: AppState,
    key: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.st.ws.sse.sessions.remove(&self.key);
    }
}

/// 128 bits from the OS's generator, as hex; `None` when it fails.
fn session_key() -> Option<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `Access-Control-Allow-Origin` for an allowed browser origin (an SSE page
/// may be served from another origin listed in `--allowed-origins`).
fn cors(headers: &HeaderMap, resp: &mut Response) {
    if let Some(origin) = headers.get(header::ORIGIN) {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `GET /sse`: opens a session whose output is this response's body.
/// Every answer of an allowed origin carries CORS headers, refusals too
/// (a page must tell "full" from a network error).
pub async fn open(
    State(st): State<AppState>,
    Query(q): Query<WsQuery>,
    peer: Option<axum::Extension<crate::http::listener::PeerAddr>>,
    headers: HeaderMap,
) -> Response {
    if !origin_allowed(&headers, &st.cfg) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "sse origin refused");
        return ApiError::OriginNotAllowed.into_response();
    }
    let ip = super::client_ip(&st, peer.as_deref(), &headers);
    let mut resp = open_stream(st, q, &headers, ip);
    cors(&headers, &mut resp);
    resp
}

fn open_stream(st: AppState, q: WsQuery, headers: &HeaderMap, ip: std::net::IpAddr) -> Response {
    let client = st.hub.client(ip);
    let slot = match super::session_slot(&st, ip) {
        Ok(slot) => slot,
        Err(refused) => return refused,
    };
    let Ok(permit) = st.ws.limit.clone().try_acquire_owned() else {
        Stats::add(&st.hub.stats().rejected_connections, 1);
        return ApiError::TooManyClients.into_response();
    };
    let mut credentials = super::credentials(q, headers, &st);
    // A stream without a token asks the connect hook as it opens: that
    // call counts against the address's --proxy-connect-rate here, and a
    // refusal costs no session.
    if let Credentials::Headers(h) = &mut credentials {
        h.transport = Some("sse");
        if let Err(wait) = client.take_connect(st.cfg.proxy_connect_limit) {
            return ApiError::RateLimited {
                what: "connects",
                retry_after: crate::rate::retry_secs(wait),
            }
            .into_response();
        }
    }
    let Some(key) = session_key() else {
        tracing::error!("no random bytes for an sse session id");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let (tx, ops_rx) = mpsc::channel::<Batch>(QUEUED_POSTS);
    let queued = Arc::new(AtomicUsize::new(0));
    let inbox = Inbox {
        tx,
        bytes: queued.clone(),
    };
    // One chunk in flight: a client that stops reading stops the session's
    // writes, and its outbox fills as a WebSocket's would.
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(1);
    st.ws.sse.sessions.insert(key.clone(), inbox);
    let entry = Entry {
        st: st.clone(),
        key,
    };
    let tracker = st.ws.tracker.clone();
    tokio::spawn(tracker.track_future(async move {
        run(st, credentials, client, entry, (ops_rx, queued), body_tx).await;
        drop(permit);
        drop(slot);
    }));
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies (nginx) must not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `POST /sse/{session}`: one op or an array of them, answered on the
/// session's stream; the POST itself gets 202.
pub async fn post(
    State(st): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !origin_allowed(&headers, &st.cfg) {
        return ApiError::OriginNotAllowed.into_response();
    }
    let mut resp = take_post(&st, &key, &body);
    cors(&headers, &mut resp);
    resp
}

/// Queues a POST's ops on its session: 202, or the refusal.
fn take_post(st: &AppState, key: &str, body: &Bytes) -> Response {
    let Some(inbox) = st.ws.sse.sessions.get(key).map(|e| e.value().clone()) else {
        return ApiError::NotFound.into_response();
    };
    let ops = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(ops)) if !ops.is_empty() && ops.len() <= MAX_BATCH => ops,
        Ok(op @ Value::Object(_)) => vec![op],
        Ok(_) => {
            return ApiError::InvalidBody(serde::de::Error::custom(format!(
                "expected an op object or an array of 1 to {MAX_BATCH}"
            )))
            .into_response()
        }
        Err(e) => return ApiError::InvalidBody(e).into_response(),
    };
    let max = st.cfg.ws_max_message_size;
    let batch: Batch = ops.iter().map(Value::to_string).collect();
    if batch.iter().any(|t| t.len() > max) {
        return ApiError::BodyTooLarge.into_response();
    }
    let n: usize = batch.iter().map(String::len).sum();
    let before = inbox.bytes.fetch_add(n, Ordering::AcqRel);
    if before > 0 && before + n > st.cfg.http_max_body_size {
        inbox.bytes.fetch_sub(n, Ordering::AcqRel);
        ApiError::Busy.into_response()
    } else {
        match inbox.tx.try_send(batch) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(e) => {
                inbox.bytes.fetch_sub(n, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => ApiError::Busy.into_response(),
                    mpsc::error::TrySendError::Closed(_) => ApiError::NotFound.into_response(),
                }
            }
        }
    }
}

/// One `data:` event per frame, as one chunk, with its payload bytes.
fn events(frames: &mut VecDeque<Bytes>, session: &mut Option<String>) -> (Bytes, usize) {
    let mut chunk = Vec::new();
    let mut n = 0;
    for frame in frames.drain(..) {
        n += frame.len();
        chunk.extend_from_slice(b"data: ");
        // The first frame is the `connect` reply: it names the session.
        match session.take().and_then(|key| with_session(&frame, key)) {
            Some(named) => chunk.extend_from_slice(&named),
            None => chunk.extend_from_slice(&frame),
        }
        chunk.extend_from_slice(b"\n\n");
    }
    (Bytes::from(chunk), n)
}

/// A `connect` reply with `session` added to its `result`.
fn with_session(frame: &[u8], key: String) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(frame).ok()?;
    v.get_mut("result")?
        .as_object_mut()?
        .insert("session".into(), Value::String(key));
    serde_json::to_vec(&v).ok()
}

/// How often an idle stream gets a heartbeat: `--ws-ping-interval`, or
/// more often where the HTTP listener would otherwise close the connection
/// as stalled (no byte moved through two of its checks, every
/// `--http-header-timeout` or `--http-body-timeout`, the longer).
fn heartbeat_interval(cfg: &crate::config::Config) -> Duration {
    let stall_check = cfg.http_header_timeout.max(cfg.http_body_timeout);
    cfg.ws_ping_interval
        .min(stall_check / 2)
        .max(Duration::from_millis(100))
}

/// Runs one SSE session to its end.
async fn run(
    st: AppState,
    credentials: Credentials,
    client: Arc<crate::rate::Client>,
    entry: Entry,
    mut ops: (mpsc::Receiver<Batch>, Arc<AtomicUsize>),
    body: mpsc::Sender<Bytes>,
) {
    let (mut s, refused) = Session::open(st, credentials, client);
    let end = match refused {
        Some(code) => End::Disconnect(code),
        None => serve(&mut s, Some(entry.key.clone()), &mut ops, &body).await,
    };
    // No more POSTs from here.
    drop(entry);
    let mut frames = VecDeque::new();
    if s.flushes_on(&end) {
        s.sink.outbox.take(&mut frames);
    }
    s.ended(&end);
    let push = match end {
        End::Disconnect(code) => Some(code.push()),
        End::App(d) => Some(disconnect_push(d.code, &d.reason, d.reconnect())),
        _ => None,
    };
    frames.extend(push.map(Bytes::from));
    if !frames.is_empty() {
        let (chunk, _) = events(&mut frames, &mut None);
        let _ = tokio::time::timeout(CLOSE_WAIT, body.send(chunk)).await;
    }
}

/// The session loop: POSTed ops in, events out. Returns how it ends.
async fn serve(
    s: &mut Session,
    mut session: Option<String>,
    (ops, queued): &mut (mpsc::Receiver<Batch>, Arc<AtomicUsize>),
    body: &mpsc::Sender<Bytes>,
) -> End {
    let sink = s.sink.clone();
    let outbox = &sink.outbox;
    let shutdown = s.st.ws.shutdown.clone();
    let cfg = s.st.cfg.clone();
    // A stream that takes nothing for this long has a client that stopped
    // reading (as a WebSocket that accepts nothing).
    let stall = cfg.ws_ping_interval.saturating_add(cfg.ws_pong_timeout);
    let beat_every = heartbeat_interval(&cfg);
    let mut next_beat = later(TInstant::now(), beat_every);
    let mut auth_deadline = s.auth_deadline();
    let mut queue: VecDeque<String> = VecDeque::new();
    // The stream opens with the `connect` reply (the URL's token, or the
    // connect hook with the request's cookies).
    let mut asking: Option<Box<Pending>> = match s.handle(r#"{"id":0,"op":"connect"}"#) {
        Step::Read => None,
        Step::End(end) => return end,
        Step::Ask(p) => Some(p),
    };
    let mut frames = VecDeque::new();
    loop {
        if let Some(pending) = asking.take() {
            // A reader that hangs up while the app decides ends the call
            // too: it must not hold its connection slot for the timeout.
            tokio::select! {
                end = Box::pin(s.ask(pending, &shutdown)) => if let Some(end) = end {
                    return end;
                },
                _ = body.closed() => return End::Gone,
            }
        }
        // The ops of a POST, in order; one that asks the app's backend
        // holds the rest until it is answered.
        while let Some(text) = queue.pop_front() {
            match s.handle(&text) {
                Step::Read => {}
                Step::End(end) => return end,
                Step::Ask(p) => {
                    asking = Some(p);
                    break;
                }
            }
        }
        if asking.is_some() {
            continue;
        }
        match s.pump(&mut frames, false) {
            Err(end) => return end,
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => {}
        }
        if !frames.is_empty() {
            let (chunk, n) = events(&mut frames, &mut session);
            let deadline = later(TInstant::now(), stall);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Disconnect(DisconnectCode::Shutdown),
                _ = super::session::wait_overflow(outbox) => return End::Disconnect(DisconnectCode::Slow),
                _ = tokio::time::sleep_until(deadline) => return End::Disconnect(DisconnectCode::Slow),
                sent = body.send(chunk) => if sent.is_err() { return End::Gone },
            }
            // Handed to the response body: hyper writes it next.
            outbox.written(n);
            next_beat = later(TInstant::now(), beat_every);
            continue;
        }
        let deadline = s.expires_at.map_or(next_beat, |e| e.min(next_beat));
        let deadline = auth_deadline.map_or(deadline, |a| a.min(deadline));
        let deadline = s.sub_deadline().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Disconnect(DisconnectCode::Shutdown),
            _ = body.closed() => return End::Gone,
            _ = outbox.ready() => {}
            batch = ops.recv() => match batch {
                Some(batch) => {
                    let n: usize = batch.iter().map(String::len).sum();
                    queued.fetch_sub(n, Ordering::AcqRel);
                    queue.extend(batch);
                }
                None => return End::Gone,
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now = TInstant::now();
                if let Some(end) = s.overdue(now, &mut auth_deadline) {
                    return end;
                }
                if now >= next_beat {
                    next_beat = later(now, beat_every);
                    // A heartbeat the stream cannot take within the pong
                    // timeout: the client is not reading.
                    let beat = body.send(Bytes::from_static(b":\n\n"));
                    match tokio::time::timeout(cfg.ws_pong_timeout, beat).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Gone,
                        Err(_) => return End::Disconnect(DisconnectCode::NoPong),
                    }
                }
            }
        }
    }
}
