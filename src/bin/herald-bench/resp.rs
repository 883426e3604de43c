//! A minimal RESP2/RESP3 client codec: command encoding and a zero-copy
//! reply parser over a byte buffer.
//!
//! Replies are parsed flat: an aggregate's first [`MAX_ITEMS`] elements are
//! kept as borrowed [`Item`]s (enough for `message`, `pmessage` and
//! subscribe confirmations), deeper nesting is skipped and shows as
//! [`Item::Nested`]. Nothing is allocated per frame.

use anyhow::{bail, Result};

/// Elements of an aggregate kept by the parser; later ones are skipped.
pub const MAX_ITEMS: usize = 4;

/// One scalar of a reply, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Item<'a> {
    Bulk(&'a [u8]),
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    #[default]
    Nil,
    /// An aggregate nested inside an aggregate (skipped).
    Nested,
}

/// One complete reply or push.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Item(Item<'a>),
    /// An array, push, set or map (maps count keys and values as elements).
    Aggregate {
        len: usize,
        items: [Item<'a>; MAX_ITEMS],
    },
}

impl<'a> Frame<'a> {
    /// The payload when this is a `message` (or `pmessage`) push.
    #[inline]
    pub fn message_payload(&self) -> Option<&'a [u8]> {
        match self {
            Frame::Aggregate { len: 3, items } if items[0] == Item::Bulk(b"message") => {
                match items[2] {
                    Item::Bulk(p) => Some(p),
                    _ => None,
                }
            }
            Frame::Aggregate { len: 4, items } if items[0] == Item::Bulk(b"pmessage") => {
                match items[3] {
                    Item::Bulk(p) => Some(p),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The error text when this is an error reply.
    pub fn error(&self) -> Option<&'a [u8]> {
        match self {
            Frame::Item(Item::Error(e)) => Some(e),
            _ => None,
        }
    }
}

/// Appends `args` as a RESP multibulk command.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line starting at `at` (type byte excluded) and the position after
/// its `\r\n`; `None` when incomplete.
#[inline]
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    // Header lines are a few bytes long: a plain scan beats memchr's setup.
    let rel = buf[at..].iter().position(|&b| b == b'\r')?;
    let end = at + rel;
    if end + 1 >= buf.len() {
        return None;
    }
    Some((&buf[at + 1..end], end + 2))
}

#[inline]
fn int(s: &[u8]) -> Result<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        bail!("bad RESP integer {:?}", String::from_utf8_lossy(s));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            bail!("bad RESP integer {:?}", String::from_utf8_lossy(s));
        }
        n = n * 10 + (d - b'0') as i64;
    }
    Ok(if neg { -n } else { n })
}

/// Parses one element at `at`: the element and the position after it
/// (`None` when incomplete). Aggregates are skipped as `Item::Nested`.
fn element<'a>(buf: &'a [u8], at: usize) -> Result<Option<(Item<'a>, usize)>> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at) else {
        return Ok(None);
    };
    let item = match kind {
        b'+' => Item::Simple(head),
        b'-' | b'!' => {
            if kind == b'!' {
                let n = int(head)?;
                let end = next + n.max(0) as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                return Ok(Some((Item::Error(&buf[next..end]), end + 2)));
            }
            Item::Error(head)
        }
        b':' => Item::Int(int(head)?),
        b'_' => Item::Nil,
        b',' | b'#' | b'(' => Item::Simple(head),
        b'$' | b'=' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Item::Nil, next)));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            return Ok(Some((Item::Bulk(&buf[next..end]), end + 2)));
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let n = int(head)?;
            let count = if kind == b'%' || kind == b'|' {
                n * 2
            } else {
                n
            };
            let mut pos = next;
            for _ in 0..count.max(0) {
                match element(buf, pos)? {
                    Some((_, p)) => pos = p,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute precedes the real element.
                return element(buf, pos);
            }
            return Ok(Some((Item::Nested, pos)));
        }
        other => bail!("not a RESP frame (type byte {other:#04x})"),
    };
    Ok(Some((item, next)))
}

/// The fast path for the frame subscribers see most: a RESP2 `message`
/// push (`*3 $7 message $n channel $m payload`). Returns the payload and
/// the frame length; `None` when `buf` does not start with a complete
/// frame of exactly that shape (then use [`parse`]).
#[inline]
pub fn message(buf: &[u8]) -> Option<(&[u8], usize)> {
    const HEAD: &[u8] = b"*3\r\n$7\r\nmessage\r\n$";
    if !buf.starts_with(HEAD) {
        return None;
    }
    let (chan_len, at) = digits(buf, HEAD.len())?;
    let at = at + chan_len + 2;
    if buf.get(at) != Some(&b'$') {
        return None;
    }
    let (len, at) = digits(buf, at + 1)?;
    let end = at + len;
    if buf.len() < end + 2 {
        return None;
    }
    Some((&buf[at..end], end + 2))
}

/// A decimal length at `at` ended by `\r\n`: the value and the position
/// after the line.
#[inline]
fn digits(buf: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut n = 0usize;
    let start = at;
    while let Some(&c) = buf.get(at) {
        match c {
            b'0'..=b'9' if at - start < 18 => n = n * 10 + (c - b'0') as usize,
            b'\r' if at > start => return Some((n, at + 2)),
            _ => return None,
        }
        at += 1;
    }
    None
}

/// Parses the first complete frame of `buf`: the frame and its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        b'*' | b'>' | b'~' | b'%' => {
            let Some((head, mut pos)) = line(buf, 0) else {
                return Ok(None);
            };
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Frame::Item(Item::Nil), pos)));
            }
            let count = if kind == b'%' { n * 2 } else { n } as usize;
            let mut items = [Item::Nil; MAX_ITEMS];
            for i in 0..count {
                match element(buf, pos)? {
                    Some((item, p)) => {
                        // Elements past MAX_ITEMS are parsed (to find the
                        // frame's end) but not kept.
                        if let Some(slot) = items.get_mut(i) {
                            *slot = item;
                        }
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Aggregate { len: count, items }, pos)))
        }
        b'|' => {
            // Skip the attribute (a map), then parse what it annotates.
            let Some((head, mut pos)) = line(buf, 0) else {
                return Ok(None);
            };
            for _ in 0..(int(head)? * 2).max(0) {
                match element(buf, pos)? {
                    Some((_, p)) => pos = p,
                    None => return Ok(None),
                }
            }
            Ok(parse(&buf[pos..])?.map(|(f, len)| (f, pos + len)))
        }
        _ => Ok(element(buf, 0)?.map(|(item, len)| (Frame::Item(item), len))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_message_push() {
        let b = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:12\r\n";
        let (f, n) = parse(b).unwrap().unwrap();
        assert_eq!(f.message_payload(), Some(&b"hello"[..]));
        let (f, m) = parse(&b[n..]).unwrap().unwrap();
        assert!(matches!(f, Frame::Item(Item::Int(12))));
        assert_eq!(n + m, b.len());
        for cut in 0..n {
            assert!(parse(&b[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn fast_path_matches_parser() {
        let b = b"*3\r\n$7\r\nmessage\r\n$10\r\nbench.ws.0\r\n$5\r\nhello\r\n";
        assert_eq!(message(b), Some((&b"hello"[..], b.len())));
        for cut in 0..b.len() {
            assert_eq!(message(&b[..cut]), None, "cut {cut}");
        }
        assert_eq!(message(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"), None);
        assert_eq!(message(b"*3\r\n$7\r\nmessage\r\n$x\r\n"), None);
    }

    #[test]
    fn parses_resp3_and_nested() {
        let b = b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\nx\r\n";
        let (f, n) = parse(b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(f.message_payload(), Some(&b"x"[..]));
        let b = b"*2\r\n*1\r\n:1\r\n-ERR x\r\n+OK\r\n";
        let (f, n) = parse(b).unwrap().unwrap();
        assert_eq!(&b[n..], b"+OK\r\n");
        match f {
            Frame::Aggregate { len, items } => {
                assert_eq!(len, 2);
                assert_eq!(items[0], Item::Nested);
                assert_eq!(items[1], Item::Error(b"ERR x"));
            }
            _ => panic!(),
        }
        let (f, _) = parse(b"-ERR bad\r\n").unwrap().unwrap();
        assert_eq!(f.error(), Some(&b"ERR bad"[..]));
        assert!(parse(b"?x\r\n").is_err());
    }

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        encode(&mut out, &[b"PUBLISH", b"c", b""]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$0\r\n\r\n");
    }
}
