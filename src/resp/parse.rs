//! Request parsing: RESP multibulk arrays and inline commands, on a byte
//! slice, with no I/O. A cheap walk finds where each argument lies; the
//! caller then splits the frame off its buffer and slices the arguments out
//! of it without copying.
//!
//! The rules and error texts are Redis 7.0's (`processMultibulkBuffer`,
//! `processInlineBuffer`), with the limits configurable.

use memchr::memchr;

/// Longest inline request or `*`/`$` header line Redis accepts.
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments one request may have.
pub const MAX_ARGS: usize = 1024 * 1024;
/// Most arguments / longest bulk before a client has authenticated.
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: i64 = 16384;

/// Parser limits.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_bulk_len: usize,
    /// The client has not authenticated yet and auth is required.
    pub unauthenticated: bool,
}

/// A protocol error: the reply text (after `-ERR `), then the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// One parsed request: argument ranges within the consumed prefix.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Bytes of input this request used.
    pub consumed: usize,
    /// `(start, end)` of each argument within those bytes. Inline arguments
    /// with quotes or escapes are unquoted into `owned` instead.
    pub args: Vec<(usize, usize)>,
    pub owned: Option<Vec<Vec<u8>>>,
}

/// Parses one request from the start of `buf`. `Ok(None)`: incomplete, read
/// more. A request with no arguments (`*0`, an empty line) comes back with
/// empty `args` and is to be skipped. Stateless: a connection uses a
/// [`Parser`] instead, which does not walk the same bytes again per read.
pub fn parse(buf: &[u8], limits: ParseLimits) -> Result<Option<Request>, ProtocolError> {
    Parser::default().parse(buf, limits)
}

/// A resumable request parser: what one call validated of an incomplete
/// request (the arguments found, where to go on) is kept for the next call,
/// so a request that arrives in many small reads costs one pass over its
/// bytes, not one pass per read. Without it a 1M-argument request in
/// 700-byte reads walked its growing prefix some 20,000 times.
///
/// Contract: between calls the caller may only append to the buffer; after
/// removing or changing bytes (a request consumed, the buffer cleared) it
/// calls [`Parser::reset`]. A complete request or an error resets it.
#[derive(Debug, Default)]
pub struct Parser {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// Nothing of the buffer's first request validated yet.
    #[default]
    Start,
    /// A multibulk whose header and first `args.len()` arguments are valid
    /// (boxed: the parser lives in every connection, idle ones included).
    Multibulk(Box<Partial>),
    /// An inline request whose first `scanned` bytes hold no newline.
    Inline { scanned: usize },
}

/// An incomplete multibulk request.
#[derive(Debug)]
struct Partial {
    count: usize,
    /// Where the next `$` header starts.
    pos: usize,
    args: Vec<(usize, usize)>,
}

impl Parser {
    /// Forgets the request in progress (the buffer changed under it).
    pub fn reset(&mut self) {
        self.state = State::Start;
    }

    /// True when part of a request has been validated and kept.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Start)
    }

    /// Parses the first request of `buf`, resuming where the previous call
    /// on the same (since appended) buffer stopped.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: ParseLimits,
    ) -> Result<Option<Request>, ProtocolError> {
        let r = match std::mem::take(&mut self.state) {
            State::Start => match buf.first() {
                None => Ok(None),
                Some(b'*') => self.multibulk_header(buf, limits),
                Some(_) => self.inline(buf, 0),
            },
            State::Multibulk(p) => {
                let Partial { count, pos, args } = *p;
                self.bulks(buf, limits, count, pos, args)
            }
            State::Inline { scanned } => self.inline(buf, scanned),
        };
        if r.is_err() {
            self.reset();
        }
        r
    }

    fn multibulk_header(
        &mut self,
        buf: &[u8],
        limits: ParseLimits,
    ) -> Result<Option<Request>, ProtocolError> {
        let Some((end, pos)) = header_line(buf, 0, "too big mbulk count string")? else {
            return Ok(None);
        };
        let count = match parse_i64(&buf[1..end]) {
            Some(n) if n <= MAX_ARGS as i64 => n,
            _ => return Err(ProtocolError("invalid multibulk length")),
        };
        if limits.unauthenticated && count > UNAUTH_MAX_ARGS {
            return Err(ProtocolError("unauthenticated multibulk length"));
        }
        if count <= 0 {
            return Ok(Some(Request {
                consumed: pos,
                ..Request::default()
            }));
        }
        let args = Vec::with_capacity(count.min(1024) as usize);
        self.bulks(buf, limits, count as usize, pos, args)
    }

    fn bulks(
        &mut self,
        buf: &[u8],
        limits: ParseLimits,
        count: usize,
        mut pos: usize,
        mut args: Vec<(usize, usize)>,
    ) -> Result<Option<Request>, ProtocolError> {
        while args.len() < count {
            #[cfg(test)]
            tests::HEADERS_WALKED.with(|c| c.set(c.get() + 1));
            let Some(&first) = buf.get(pos) else {
                self.state = State::Multibulk(Box::new(Partial { count, pos, args }));
                return Ok(None);
            };
            if first != b'$' {
                return Err(ProtocolError(expected_dollar(first)));
            }
            let Some((end, data)) = header_line(buf, pos, "too big bulk count string")? else {
                self.state = State::Multibulk(Box::new(Partial { count, pos, args }));
                return Ok(None);
            };
            let len = match parse_i64(&buf[pos + 1..end]) {
                Some(n) if n >= 0 && n as u64 <= limits.max_bulk_len as u64 => n,
                _ => return Err(ProtocolError("invalid bulk length")),
            };
            if limits.unauthenticated && len > UNAUTH_MAX_BULK {
                return Err(ProtocolError("unauthenticated bulk length"));
            }
            let len = len as usize;
            // Redis skips the two bytes after the data without checking them.
            if buf.len() < data + len + 2 {
                // Resume at this header: it is short, parsing it again is
                // cheap, and the bulk's data has not arrived yet.
                self.state = State::Multibulk(Box::new(Partial { count, pos, args }));
                return Ok(None);
            }
            args.push((data, data + len));
            pos = data + len + 2;
        }
        Ok(Some(Request {
            consumed: pos,
            args,
            owned: None,
        }))
    }

    fn inline(&mut self, buf: &[u8], scanned: usize) -> Result<Option<Request>, ProtocolError> {
        let from = scanned.min(buf.len());
        let Some(nl) = memchr(b'\n', &buf[from..]).map(|i| from + i) else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError("too big inline request"));
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(None);
        };
        let mut line = &buf[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let words = split_args(line).ok_or(ProtocolError("unbalanced quotes in request"))?;
        Ok(Some(Request {
            consumed: nl + 1,
            args: Vec::new(),
            owned: Some(words),
        }))
    }
}

/// Finds a `\r`-terminated header line starting at `at`; Redis looks for the
/// `\r` and trusts the `\n` after it.
fn header_line(
    buf: &[u8],
    at: usize,
    too_big: &'static str,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    match memchr(b'\r', &buf[at..]) {
        Some(i) => {
            if at + i + 2 > buf.len() {
                return Ok(None);
            }
            Ok(Some((at + i, at + i + 2)))
        }
        None => {
            if buf.len() - at > MAX_INLINE {
                Err(ProtocolError(too_big))
            } else {
                Ok(None)
            }
        }
    }
}

/// Redis's `string2ll`: an optional `-`, digits, no leading zeros or `+`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (d - b'0') as i128;
    }
    if neg {
        v = -v;
    }
    i64::try_from(v).ok()
}

/// Redis's message quotes the offending byte; we cannot format at runtime
/// into a `&'static str`, so printable ASCII gets its own interned text.
fn expected_dollar(got: u8) -> &'static str {
    const TABLE: [&str; 95] = {
        // Built at compile time from the printable ASCII range.
        macro_rules! row {
            ($($c:literal)*) => { [$(concat!("expected '$', got '", $c, "'")),*] };
        }
        row!(" " "!" "\"" "#" "$" "%" "&" "'" "(" ")" "*" "+" "," "-" "." "/"
             "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" ":" ";" "<" "=" ">" "?"
             "@" "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O"
             "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" "[" "\\" "]" "^" "_"
             "`" "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o"
             "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" "{" "|" "}" "~")
    };
    match got {
        0x20..=0x7e => TABLE[(got - 0x20) as usize],
        _ => "expected '$', got a non-printable byte",
    }
}

/// Redis's `sdssplitargs`: whitespace-separated words, with "double quotes"
/// (and `\n`, `\xHH`... escapes) and 'single quotes'. `None` on unbalanced
/// quotes or a closing quote not followed by a space.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq, mut done) = (false, false, false);
        while !done {
            let c = line.get(i).copied();
            if inq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if i + 3 < n
                            && line[i + 1] == b'x'
                            && line[i + 2].is_ascii_hexdigit()
                            && line[i + 3].is_ascii_hexdigit() =>
                    {
                        let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                        cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < n => {
                        i += 1;
                        cur.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                            return None;
                        }
                        done = true;
                    }
                    Some(b) => cur.push(b),
                }
            } else if insq {
                match c {
                    None => return None,
                    Some(b'\\') if i + 1 < n && line[i + 1] == b'\'' => {
                        i += 1;
                        cur.push(b'\'');
                    }
                    Some(b'\'') => {
                        if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                            return None;
                        }
                        done = true;
                    }
                    Some(b) => cur.push(b),
                }
            } else {
                match c {
                    None => done = true,
                    Some(b' ' | b'\n' | b'\r' | b'\t' | 0) => done = true,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(b) => cur.push(b),
                }
            }
            if i < n {
                i += 1;
            }
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    thread_local! {
        /// `$` headers the multibulk loop looked at (the parser's work).
        pub(super) static HEADERS_WALKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Feeds `input` to a [`Parser`] in `piece`-byte reads, as a connection
    /// would, and returns every request's arguments.
    fn feed(input: &[u8], piece: usize, limits: ParseLimits) -> Vec<Vec<Vec<u8>>> {
        let mut p = Parser::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            while let Some(r) = p.parse(&buf, limits).unwrap() {
                let a = match r.owned {
                    Some(o) => o,
                    None => r.args.iter().map(|&(a, b)| buf[a..b].to_vec()).collect(),
                };
                out.push(a);
                buf.drain(..r.consumed);
                p.reset();
            }
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(&buf)
        );
        out
    }

    #[test]
    fn resumed_parsing_matches_one_pass() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\nset a \"b c\"\n*0\r\n*1\r\n$0\r\n\r\n";
        let whole = feed(input, input.len(), L);
        assert_eq!(whole.len(), 5);
        for piece in 1..input.len() {
            assert_eq!(feed(input, piece, L), whole, "piece {piece}");
        }
    }

    #[test]
    fn small_reads_do_not_walk_a_request_again() {
        const N: usize = 100_000;
        let mut input = format!("*{N}\r\n").into_bytes();
        for i in 0..N {
            let a = (i % 1000).to_string();
            input.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        let reads = input.len().div_ceil(700);
        HEADERS_WALKED.with(|c| c.set(0));
        let got = feed(&input, 700, L);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), N);
        assert_eq!(got[0][N - 1], b"999");
        let walked = HEADERS_WALKED.with(|c| c.get());
        // Each header once, plus at most one header looked at again per
        // read (the one cut off by the end of the read).
        assert!(
            walked <= N + reads,
            "walked {walked} headers for {N} arguments in {reads} reads"
        );
    }

    #[test]
    fn errors_in_resumed_requests() {
        let mut p = Parser::default();
        assert_eq!(p.parse(b"*2\r\n$1\r\na\r\n", L), Ok(None));
        assert!(p.in_progress());
        assert_eq!(
            p.parse(b"*2\r\n$1\r\na\r\n+x\r\n", L),
            Err(ProtocolError("expected '$', got '+'"))
        );
        assert!(!p.in_progress(), "an error resets the parser");
        let unauth = ParseLimits {
            unauthenticated: true,
            ..L
        };
        assert_eq!(
            p.parse(b"*2\r\n$1\r\na\r\n$20000\r\n", unauth),
            Err(ProtocolError("unauthenticated bulk length"))
        );
    }

    const L: ParseLimits = ParseLimits {
        max_bulk_len: 1 << 20,
        unauthenticated: false,
    };

    fn args(buf: &[u8]) -> Vec<Vec<u8>> {
        let r = parse(buf, L).unwrap().unwrap();
        match r.owned {
            Some(o) => o,
            None => r.args.iter().map(|&(a, b)| buf[a..b].to_vec()).collect(),
        }
    }

    #[test]
    fn multibulk() {
        assert_eq!(
            args(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n"),
            vec![b"PING".to_vec(), b"hi".to_vec()]
        );
        assert_eq!(parse(b"*2\r\n$4\r\nPING\r\n$2\r\nh", L), Ok(None));
        assert_eq!(parse(b"*2\r", L), Ok(None));
        assert_eq!(
            parse(b"*x\r\n", L),
            Err(ProtocolError("invalid multibulk length"))
        );
        assert_eq!(
            parse(b"*1\r\n+a\r\n", L),
            Err(ProtocolError("expected '$', got '+'"))
        );
        assert_eq!(
            parse(b"*1\r\n$-1\r\n", L),
            Err(ProtocolError("invalid bulk length"))
        );
        assert_eq!(
            parse(b"*1\r\n$2000000\r\n", L),
            Err(ProtocolError("invalid bulk length"))
        );
        let r = parse(b"*0\r\nPING\r\n", L).unwrap().unwrap();
        assert_eq!((r.consumed, r.args.len()), (4, 0));
    }

    #[test]
    fn inline() {
        assert_eq!(args(b"PING\r\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            args(b"set a \"b c\\x41\"\n"),
            vec![b"set".to_vec(), b"a".to_vec(), b"b cA".to_vec()]
        );
        assert_eq!(
            args(b"echo 'it\\'s'\n"),
            vec![b"echo".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(
            parse(b"echo \"abc\n", L),
            Err(ProtocolError("unbalanced quotes in request"))
        );
        assert_eq!(parse(b"PING", L), Ok(None));
        assert!(parse(&vec![b'a'; MAX_INLINE + 1], L).is_err());
    }

    #[test]
    fn integers_like_redis() {
        assert_eq!(parse_i64(b"12"), Some(12));
        assert_eq!(parse_i64(b"-3"), Some(-3));
        assert_eq!(parse_i64(b"012"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&data, L);
        }

        #[test]
        fn mangled_frames_never_panic(
            n in 0usize..5,
            cut in 0usize..64,
            flip in any::<(usize, u8)>(),
        ) {
            let mut f = format!("*{n}\r\n").into_bytes();
            for i in 0..n {
                f.extend(format!("${}\r\n{}\r\n", i + 1, "x".repeat(i + 1)).bytes());
            }
            let idx = flip.0 % f.len();
            f[idx] = flip.1;
            f.truncate(cut.min(f.len()).max(1));
            if let Ok(Some(r)) = parse(&f, L) {
                prop_assert!(r.consumed <= f.len());
                for (a, b) in r.args { prop_assert!(a <= b && b <= f.len()); }
            }
        }
    }
}
