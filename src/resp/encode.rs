//! Reply encoding for RESP2 and RESP3, with no I/O. Each function appends
//! one element to a `BytesMut`; the protocol decides how aggregates, nulls
//! and pushes look, exactly as Redis 7.0 writes them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::hub::{Delivery, DeliveryKind, WireFormat};

/// A reply buffer that knows the client's protocol version.
pub struct Out<'a> {
    pub buf: &'a mut BytesMut,
    pub resp3: bool,
}

fn put_len(buf: &mut BytesMut, prefix: u8, n: usize) {
    buf.put_u8(prefix);
    let mut b = itoa::Buffer::new();
    buf.extend_from_slice(b.format(n).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

impl Out<'_> {
    pub fn simple(&mut self, s: &str) {
        self.buf.put_u8(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply; `msg` includes its code (`ERR ...`, `NOAUTH ...`).
    /// Newlines are replaced by spaces, as Redis does, so the frame stays whole.
    pub fn error(&mut self, msg: &str) {
        self.error_bytes(msg.as_bytes())
    }

    /// [`Out::error`] for messages that quote client bytes.
    pub fn error_bytes(&mut self, msg: &[u8]) {
        self.buf.put_u8(b'-');
        for &b in msg {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.buf.put_u8(b':');
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk(&mut self, data: &[u8]) {
        put_len(self.buf, b'$', data.len());
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A null bulk string (`$-1` / `_`).
    pub fn null(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        put_len(self.buf, b'*', n);
    }

    /// A map of `n` pairs (a flat array of `2n` in RESP2).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            put_len(self.buf, b'%', n);
        } else {
            put_len(self.buf, b'*', n * 2);
        }
    }

    /// A map of `n` pairs in RESP3, an array of `n` in RESP2 (replies that
    /// Redis shapes as `[[k, v], ...]` in RESP2).
    pub fn map_or_array(&mut self, n: usize) {
        put_len(self.buf, if self.resp3 { b'%' } else { b'*' }, n);
    }

    /// A set (an array in RESP2).
    pub fn set(&mut self, n: usize) {
        put_len(self.buf, if self.resp3 { b'~' } else { b'*' }, n);
    }

    /// An out-of-band push (an array in RESP2).
    pub fn push(&mut self, n: usize) {
        put_len(self.buf, if self.resp3 { b'>' } else { b'*' }, n);
    }

    /// A verbatim string (`=len\r\ntxt:...` in RESP3, a bulk in RESP2).
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            put_len(self.buf, b'=', text.len() + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    pub fn bulks<I, T>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.array(items.len());
        for i in items {
            self.bulk(i.as_ref());
        }
    }
}

/// Encodes a pub/sub delivery as Redis does: `message`, `pmessage` or
/// `smessage`, as an array (RESP2) or a push (RESP3).
pub fn encode_delivery(d: &Delivery<'_>, fmt: WireFormat) -> Bytes {
    let p = d.publication;
    let mut buf = BytesMut::with_capacity(p.payload.len() + p.channel.len() + 48);
    let mut out = Out {
        buf: &mut buf,
        resp3: fmt == WireFormat::Resp3,
    };
    match (d.kind, d.pattern) {
        (DeliveryKind::PMessage, Some(pattern)) => {
            out.push(4);
            out.bulk(b"pmessage");
            out.bulk(pattern);
        }
        (DeliveryKind::SMessage, _) => {
            out.push(3);
            out.bulk(b"smessage");
        }
        _ => {
            out.push(3);
            out.bulk(b"message");
        }
    }
    out.bulk(&p.channel);
    out.bulk(&p.payload);
    buf.freeze()
}

impl Out<'_> {
    /// A null array (`*-1` / `_`), as COMMAND INFO uses for unknown names.
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }
}
