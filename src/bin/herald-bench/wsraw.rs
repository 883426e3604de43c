//! A minimal WebSocket client for the subscribers of `ws-fanout`: the
//! opening handshake over a plain TCP socket, and frames parsed in place
//! from a [`Reader`] with no allocation per message.
//!
//! With thousands of subscribers on a 2-core machine the load generator
//! shares the CPU with the server it measures, so the cost per received
//! message matters: a general WebSocket library allocates a message per
//! frame, this parser only slices the read buffer. Only what a subscriber
//! needs is supported: `ws://` URLs, no extensions (no compression is
//! offered in the handshake), unmasked server frames, pings answered with
//! pongs. Client frames are masked as RFC 6455 requires.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::readbuf::Reader;
use crate::{publish, TIMEOUT};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame, borrowed from the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Parses the first complete frame of `buf`: the frame and its length;
/// `None` when incomplete.
#[inline]
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        bail!("WebSocket frame with RSV bits set (no extension was negotiated)");
    }
    if b1 & 0x80 != 0 {
        bail!("masked WebSocket frame from the server");
    }
    let (len, head) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > (1 << 30) {
        bail!("WebSocket frame of {len} bytes");
    }
    let end = head + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload: &buf[head..end],
        },
        end,
    )))
}

const MASK: [u8; 4] = [0x5a, 0x3c, 0xa5, 0xc3];

/// Appends a final, masked client frame.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// The parts of a `ws://host:port/path` URL.
#[derive(Clone, Debug)]
pub struct Url {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported here"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host.contains(':') && !host.ends_with(']') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .ok_or_else(|| anyhow!("no address for {host}"))?;
        Ok(Url {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Connects and completes the opening handshake (bounded by [`TIMEOUT`]).
/// Bytes the server sent after its `101` response are already in the
/// returned reader.
pub async fn connect(url: &Url, chunk: usize) -> Result<(TcpStream, Reader)> {
    let deadline = Instant::now() + TIMEOUT;
    let mut s = publish::connect(url.addr).await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: aGVyYWxkLWJlbmNoLWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    let end = loop {
        if let Some(i) = memmem::find(&head, b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            bail!("WebSocket handshake response head longer than 16 KiB");
        }
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut tmp))
            .await
            .with_context(|| format!("WebSocket handshake with {} timed out", url.addr))??;
        if n == 0 {
            bail!("server closed the connection during the WebSocket handshake");
        }
        head.extend_from_slice(&tmp[..n]);
    };
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if !status_line.starts_with(b"HTTP/1.1 101") {
        bail!(
            "WebSocket upgrade refused: {}",
            String::from_utf8_lossy(status_line).trim_end()
        );
    }
    let mut r = Reader::with_capacity(chunk);
    r.push(&head[end..]);
    Ok((s, r))
}

/// Sends one text frame.
pub async fn send_text(s: &mut TcpStream, text: &str) -> Result<()> {
    let mut out = Vec::with_capacity(text.len() + 14);
    encode(&mut out, OP_TEXT, text.as_bytes());
    s.write_all(&out).await.context("WebSocket send failed")
}

/// Reads frames until a text frame satisfies `done` (frames before it are
/// skipped; pings are answered); fails on close or after [`TIMEOUT`].
pub async fn wait_text(
    s: &mut TcpStream,
    r: &mut Reader,
    mut done: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut pong = None;
        while let Some(f) = r.next_ws()? {
            match f.opcode {
                OP_TEXT if f.fin && done(f.payload)? => return Ok(()),
                OP_CLOSE => bail!(
                    "server closed the WebSocket: {}",
                    String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default())
                ),
                OP_PING => pong = Some(f.payload.to_vec()),
                _ => {}
            }
        }
        if let Some(p) = pong {
            let mut out = Vec::new();
            encode(&mut out, OP_PONG, &p);
            s.write_all(&out).await?;
        }
        match tokio::time::timeout_at(deadline.into(), r.fill(s)).await {
            Err(_) => bail!("no WebSocket reply within {TIMEOUT:?}"),
            Ok(Ok(0)) => bail!("WebSocket connection closed before the reply"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames() {
        let mut b = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        b.extend_from_slice(&[0x82, 126, 0, 200]);
        b.extend(std::iter::repeat_n(7u8, 200));
        let (f, n) = parse(&b).unwrap().unwrap();
        assert!(f.fin);
        assert_eq!((f.opcode, f.payload), (OP_TEXT, &b"abc"[..]));
        let (f, m) = parse(&b[n..]).unwrap().unwrap();
        assert_eq!((f.opcode, f.payload.len()), (OP_PING, 0));
        let (f, k) = parse(&b[n + m..]).unwrap().unwrap();
        assert_eq!((f.opcode, f.payload.len()), (OP_BINARY, 200));
        assert_eq!(n + m + k, b.len());
        for cut in 0..n {
            assert!(parse(&b[..cut]).unwrap().is_none());
        }
        assert!(parse(&[0x81, 0x83, 0, 0, 0, 0, 1, 2, 3]).is_err());
    }

    #[test]
    fn encodes_masked() {
        let mut out = Vec::new();
        encode(&mut out, OP_TEXT, b"hi");
        assert_eq!(&out[..2], &[0x81, 0x82]);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ out[2 + i % 4])
            .collect();
        assert_eq!(unmasked, b"hi");
    }

    #[test]
    fn parses_urls() {
        let u = Url::parse("ws://127.0.0.1:8080/sub/x").unwrap();
        assert_eq!(u.addr.port(), 8080);
        assert_eq!(u.path, "/sub/x");
        assert_eq!(u.host, "127.0.0.1:8080");
        assert!(Url::parse("wss://h/x").is_err());
    }
}
