//! [`Reader`]: the read buffer of one connection, handing out complete
//! RESP frames, HTTP responses or WebSocket frames parsed in place.

use std::io;

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{http, resp, wsraw};

/// The unparsed input of one connection.
pub struct Reader {
    buf: Vec<u8>,
    pos: usize,
    /// Capacity kept free for each read.
    chunk: usize,
}

impl Reader {
    pub fn new() -> Reader {
        Reader::with_capacity(64 * 1024)
    }

    /// A reader that reads up to about `chunk` bytes at a time (smaller
    /// for the thousands of WebSocket subscribers of one run).
    pub fn with_capacity(chunk: usize) -> Reader {
        Reader {
            buf: Vec::with_capacity(chunk),
            pos: 0,
            chunk,
        }
    }

    /// Appends bytes that were read elsewhere (e.g. after an HTTP head).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads more bytes from `r`; `Ok(0)` means end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < self.chunk / 4 {
            self.buf.reserve(self.chunk);
        }
        r.read_buf(&mut self.buf).await
    }

    /// The next complete frame, if buffered.
    #[inline]
    pub fn next_resp(&mut self) -> Result<Option<resp::Frame<'_>>> {
        let buf = &self.buf[self.pos..];
        match resp::parse(buf)? {
            Some((frame, n)) => {
                self.pos += n;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// The next complete frame, as a `message` payload when it is one
    /// (fast path), else as `Err(frame)` in `Some`.
    #[inline]
    pub fn next_message(&mut self) -> Result<Option<Result<&[u8], resp::Frame<'_>>>> {
        let buf = &self.buf[self.pos..];
        if let Some((payload, n)) = resp::message(buf) {
            self.pos += n;
            return Ok(Some(Ok(payload)));
        }
        match resp::parse(buf)? {
            Some((frame, n)) => {
                self.pos += n;
                Ok(Some(match frame.message_payload() {
                    Some(p) => Ok(p),
                    None => Err(frame),
                }))
            }
            None => Ok(None),
        }
    }

    /// The next complete WebSocket frame, if buffered.
    #[inline]
    pub fn next_ws(&mut self) -> Result<Option<wsraw::Frame<'_>>> {
        match wsraw::parse(&self.buf[self.pos..])? {
            Some((frame, n)) => {
                self.pos += n;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// The status of the next complete HTTP response, if buffered.
    pub fn next_http(&mut self) -> Result<Option<u16>> {
        match http::parse_response(&self.buf[self.pos..])? {
            Some((r, n)) => {
                self.pos += n;
                Ok(Some(r.status))
            }
            None => Ok(None),
        }
    }
}
