//! A minimal HTTP/1.1 client codec for publishing over keep-alive
//! connections (pipelined requests, responses read in order): request
//! encoding and a response parser (`Content-Length` or chunked bodies).

use anyhow::{bail, Result};
use memchr::memmem;

/// Appends a `POST` request with `body`.
pub fn encode_post(out: &mut Vec<u8>, host: &str, path: &str, content_type: &str, body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The head of a request (everything up to the body) for a body of `len`.
pub fn post_head(host: &str, path: &str, content_type: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_post(&mut out, host, path, content_type, b"");
    let cl = b"Content-Length: 0\r\n\r\n";
    out.truncate(out.len() - cl.len());
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A parsed response. The body is skipped: publish replies only matter by
/// their status.
pub struct Response {
    pub status: u16,
}

fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// Parses the first complete response of `buf`: the response and its
/// length; `None` when incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>> {
    let Some(head_end) = memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            bail!("HTTP response head longer than 64 KiB");
        }
        return Ok(None);
    };
    let head = &buf[..head_end];
    let body_start = head_end + 4;
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let mut parts = status_line.split(|b| *b == b' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") {
        bail!(
            "not an HTTP/1 response: {:?}",
            String::from_utf8_lossy(&status_line[..status_line.len().min(80)])
        );
    }
    let status: u16 = std::str::from_utf8(parts.next().unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP status line"))?;
    if let Some(te) = header_value(head, "transfer-encoding") {
        if te.eq_ignore_ascii_case(b"chunked") {
            // Chunks: size line, data, CRLF; a zero-size chunk ends the body
            // (trailers are not expected and not supported).
            let mut pos = body_start;
            loop {
                let Some(rel) = memmem::find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                let size_text = std::str::from_utf8(&buf[pos..pos + rel]).unwrap_or("");
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| anyhow::anyhow!("bad chunk size {size_text:?}"))?;
                pos += rel + 2;
                if buf.len() < pos + size + 2 {
                    return Ok(None);
                }
                pos += size + 2;
                if size == 0 {
                    return Ok(Some((Response { status }, pos)));
                }
            }
        }
    }
    let len: usize = match header_value(head, "content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad Content-Length"))?,
        None => 0,
    };
    if buf.len() < body_start + len {
        return Ok(None);
    }
    Ok(Some((Response { status }, body_start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked() {
        let b = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        let (r, n) = parse_response(b).unwrap().unwrap();
        assert_eq!(r.status, 200);
        let (r, m) = parse_response(&b[n..]).unwrap().unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(n + m, b.len());
        assert!(parse_response(&b[..n - 1]).unwrap().is_none());
    }

    #[test]
    fn head_matches_full_request() {
        let mut full = Vec::new();
        encode_post(&mut full, "h", "/p", "text/plain", b"abc");
        let mut head = post_head("h", "/p", "text/plain", 3);
        head.extend_from_slice(b"abc");
        assert_eq!(full, head);
    }
}
