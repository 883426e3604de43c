//! Redis glob patterns (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\` escapes), byte-wise.
//!
//! The semantics are those of Redis 7.0's `stringmatchlen`, quirks included:
//! an empty subject matches only the empty pattern (so `*` does not match the
//! empty channel), reversed ranges are swapped, an unterminated `[` class
//! swallows the rest of the pattern, and `\` escapes the next byte both inside
//! and outside classes. And Redis gives up past 1000 nested stars (its guard
//! against deep recursion, `nesting > 1000`): a pattern with more than 1000
//! stars that are followed by something other than a star never matches a
//! non-empty subject (`*a` × 1001 does not match `a` × 1001; `*a` × 1000
//! followed by `*` matches `a` × 1005). Herald does not recurse, but keeps
//! the rule, so PSUBSCRIBE, KEYS and PUBSUB CHANNELS answer as Redis does.
//! Class ranges compare bytes as C's signed `char`, as Redis on x86-64
//! does: `[a-\xff]` is the range -1..=97 there, so it matches neither `b`
//! nor `\x80` (checked against redis-server 7.0.15 with KEYS).
//!
//! Unlike Redis, which recurses on every `*`, a pattern is compiled once into
//! tokens that each consume exactly one byte, grouped into the segments
//! between stars. That is equivalent, because every token but `*` consumes
//! exactly one byte, so a segment always spans as many subject bytes as it
//! has tokens.
//!
//! Matching, with n the subject's length and no recursion anywhere:
//!
//! - the segment before the first star must match at the start, the one
//!   after the last star at the end (no star: the whole subject, same length);
//! - each segment between stars is searched left to right from where the
//!   previous one ended, and its leftmost occurrence is taken. That is never
//!   wrong: a segment has a fixed length, so its leftmost occurrence leaves
//!   the longest rest of the subject, and whatever the later segments find in
//!   a shorter rest they also find in a longer one (a star precedes them);
//! - a segment of literal bytes is found with `memchr::memmem` (Two-Way, so
//!   O(n + m) for any input); a segment with `?` or classes is tried position
//!   by position while that is cheap (subject × tokens ≤ 4096), otherwise with
//!   a bit-parallel shift-and over its tokens, O(n · ⌈m/64⌉) for a segment of
//!   m tokens.
//!
//! The searches for consecutive segments cover disjoint parts of the subject,
//! so a publish costs O(n + pattern) for star-and-literal patterns (the
//! `*` + 32 KiB + `b` attack on a 64 KiB channel: microseconds instead of
//! 0.83 s), and at most O(n · ⌈L/64⌉) where L is the longest segment holding
//! a `?` or a class. L is below the pattern length (1 KiB for clients without
//! the password: at most 16 words per subject byte) and below n (a longer
//! segment cannot fit and is refused in O(1)), so with channels capped at
//! 64 KiB the worst case, a password client's 64 KiB segment of classes,
//! is bounded (about 2^26 word steps). No budget cuts a match short: every
//! answer is exact.

/// Subject bytes × segment tokens up to which a segment with `?` or classes
/// is tried position by position: for short channels that beats building
/// the shift-and table.
const NAIVE_LIMIT: usize = 4096;

/// Redis's recursion limit: the star that would recurse deeper matches
/// nothing.
const MAX_NESTING: usize = 1000;

/// One compiled element of a glob pattern, as `compile` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*`: any run of bytes, possibly empty (consecutive stars collapse).
    Star,
    /// `?`: exactly one byte.
    Any,
    /// A literal byte (plain or `\`-escaped).
    Byte(u8),
    /// `[...]`: one byte in (or, negated, not in) the class.
    Class { negate: bool, items: Vec<ClassItem> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Byte(u8),
    /// Inclusive range of signed bytes (C's `char` on x86-64, as Redis
    /// compares them), already ordered low..=high.
    Range(i8, i8),
}

impl ClassItem {
    fn contains(&self, b: u8) -> bool {
        match *self {
            ClassItem::Byte(x) => x == b,
            ClassItem::Range(lo, hi) => lo <= b as i8 && b as i8 <= hi,
        }
    }
}

/// A token that consumes one byte, as matching uses it: a class becomes the
/// set of the 256 bytes it accepts (negation applied), so testing a byte is
/// one bit test whatever the class's size.
#[derive(Debug, Clone)]
enum Tok {
    Byte(u8),
    Any,
    Set(Box<[u64; 4]>),
}

impl Tok {
    fn from_token(t: &Token) -> Option<Tok> {
        Some(match t {
            Token::Star => return None,
            Token::Any => Tok::Any,
            Token::Byte(b) => Tok::Byte(*b),
            Token::Class { negate, items } => {
                let mut set = [0u64; 4];
                for b in 0..=255u8 {
                    if items.iter().any(|i| i.contains(b)) != *negate {
                        set[usize::from(b >> 6)] |= 1 << (b & 63);
                    }
                }
                Tok::Set(Box::new(set))
            }
        })
    }

    #[inline]
    fn accepts(&self, b: u8) -> bool {
        match self {
            Tok::Byte(x) => *x == b,
            Tok::Any => true,
            Tok::Set(set) => set[usize::from(b >> 6)] & (1 << (b & 63)) != 0,
        }
    }
}

/// The tokens between two stars (or an end of the pattern).
#[derive(Debug, Clone)]
enum Segment {
    /// Literal bytes only.
    Literal(Box<[u8]>),
    /// At least one `?` or class.
    Tokens(Box<[Tok]>),
}

impl Segment {
    fn new(tokens: &[Token]) -> Segment {
        let literal: Option<Vec<u8>> = tokens
            .iter()
            .map(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        match literal {
            Some(bytes) => Segment::Literal(bytes.into()),
            None => Segment::Tokens(tokens.iter().filter_map(Tok::from_token).collect()),
        }
    }

    /// Subject bytes it spans.
    fn len(&self) -> usize {
        match self {
            Segment::Literal(b) => b.len(),
            Segment::Tokens(t) => t.len(),
        }
    }

    /// True when `s` (exactly `self.len()` bytes) matches.
    fn matches_exactly(&self, s: &[u8]) -> bool {
        match self {
            Segment::Literal(b) => **b == *s,
            Segment::Tokens(t) => t.len() == s.len() && t.iter().zip(s).all(|(t, &b)| t.accepts(b)),
        }
    }

    /// Where the leftmost occurrence in `hay` starts.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        match self {
            Segment::Literal(b) => find_literal(b, hay),
            Segment::Tokens(t) => find_tokens(t, hay),
        }
    }
}

/// Below this many subject bytes a literal segment is looked for window by
/// window (at most 64 × its length compares): building a memmem searcher
/// costs more than the search on a typical channel name.
const SHORT_HAY: usize = 64;

/// The leftmost start of `needle` in `hay`.
fn find_literal(needle: &[u8], hay: &[u8]) -> Option<usize> {
    match needle {
        [] => Some(0),
        [b] => memchr::memchr(*b, hay),
        _ if hay.len() < SHORT_HAY => hay.windows(needle.len()).position(|w| w == needle),
        _ => memchr::memmem::find(hay, needle),
    }
}

/// The leftmost start in `hay` where every token accepts its byte.
fn find_tokens(toks: &[Tok], hay: &[u8]) -> Option<usize> {
    let m = toks.len();
    let last_start = hay.len().checked_sub(m)?;
    if hay.len().saturating_mul(m) <= NAIVE_LIMIT {
        return (0..=last_start).find(|&i| toks.iter().zip(&hay[i..]).all(|(t, &b)| t.accepts(b)));
    }
    shift_and(toks, hay)
}

/// Shift-and (Baeza-Yates–Gonnet): after reading `hay[i]`, bit j of the
/// state says whether tokens 0..=j match the bytes ending at i. One pass
/// over `hay`, ⌈m/64⌉ words a byte. The table of accepted bytes (256 rows
/// of ⌈m/64⌉ words) is built per call rather than kept with the pattern, so
/// a subscribed pattern costs no memory for it.
fn shift_and(toks: &[Tok], hay: &[u8]) -> Option<usize> {
    let m = toks.len();
    if m == 0 {
        return Some(0);
    }
    let words = m.div_ceil(64);
    let mut table = vec![0u64; 256 * words];
    for (j, t) in toks.iter().enumerate() {
        let (w, bit) = (j / 64, 1u64 << (j % 64));
        match t {
            Tok::Byte(b) => table[usize::from(*b) * words + w] |= bit,
            Tok::Any => (0..256).for_each(|c| table[c * words + w] |= bit),
            Tok::Set(set) => (0..256usize)
                .filter(|&c| set[c >> 6] & (1 << (c & 63)) != 0)
                .for_each(|c| table[c * words + w] |= bit),
        }
    }
    let (last_word, last_bit) = ((m - 1) / 64, 1u64 << ((m - 1) % 64));
    let mut state = vec![0u64; words];
    for (i, &c) in hay.iter().enumerate() {
        let row = &table[usize::from(c) * words..][..words];
        let mut carry = 1u64;
        for (d, r) in state.iter_mut().zip(row) {
            let next_carry = *d >> 63;
            *d = ((*d << 1) | carry) & r;
            carry = next_carry;
        }
        if state[last_word] & last_bit != 0 {
            return Some(i + 1 - m);
        }
    }
    None
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    /// The bytes every matching subject starts with.
    prefix: Box<[u8]>,
    /// The segment before the first star (the whole pattern without one).
    head: Segment,
    /// With at least one star: the segments between stars, and the last.
    rest: Option<(Box<[Segment]>, Segment)>,
    /// The subject bytes the segments span together.
    min_len: usize,
    empty: bool,
    /// More than [`MAX_NESTING`] stars before a non-star token.
    too_deep: bool,
}

impl Glob {
    /// Compiles `pattern`. Every byte string is a valid pattern.
    pub fn new(pattern: &[u8]) -> Glob {
        let tokens = compile(pattern);
        // Redis recurses once per star that is not the pattern's last token
        // (a final star returns "match" at once); stars are already collapsed.
        let nesting = tokens.iter().filter(|t| **t == Token::Star).count()
            - usize::from(tokens.last() == Some(&Token::Star));
        let prefix: Box<[u8]> = tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        let mut segments: Vec<Segment> = tokens
            .split(|t| *t == Token::Star)
            .map(Segment::new)
            .collect();
        let min_len = segments.iter().map(Segment::len).sum();
        // `split` yields one more piece than there are stars, so at least one.
        let rest = if segments.len() > 1 {
            let tail = segments.pop();
            let middle: Box<[Segment]> = segments.drain(1..).collect();
            tail.map(|t| (middle, t))
        } else {
            None
        };
        let head = segments
            .pop()
            .unwrap_or_else(|| Segment::Literal(Box::default()));
        Glob {
            prefix,
            head,
            rest,
            min_len,
            empty: pattern.is_empty(),
            too_deep: nesting > MAX_NESTING,
        }
    }

    /// The literal bytes that every subject matching this pattern starts with.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// True when `subject` matches, with Redis's semantics. Cost: see the
    /// module docs.
    pub fn matches(&self, subject: &[u8]) -> bool {
        if subject.is_empty() {
            // Redis never enters its loop for an empty subject.
            return self.empty;
        }
        if subject.len() < self.min_len || self.too_deep {
            return false;
        }
        let Some((middle, tail)) = &self.rest else {
            return subject.len() == self.head.len() && self.head.matches_exactly(subject);
        };
        // min_len covers head and tail, so these split points are in order.
        let end = subject.len() - tail.len();
        let (Some(head_bytes), Some(tail_bytes)) =
            (subject.get(..self.head.len()), subject.get(end..))
        else {
            return false;
        };
        if !self.head.matches_exactly(head_bytes) || !tail.matches_exactly(tail_bytes) {
            return false;
        }
        let mut pos = self.head.len();
        for seg in middle.iter() {
            let Some(hay) = subject.get(pos..end) else {
                return false;
            };
            match seg.find(hay) {
                Some(i) => pos += i + seg.len(),
                None => return false,
            }
        }
        true
    }
}

/// Tokenizes a pattern exactly as `stringmatchlen` walks it. The walk over
/// the pattern never depends on the subject's bytes, only on whether bytes
/// remain, which is what makes compiling ahead of time possible.
fn compile(pat: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                out.push(Token::Any);
                i += 1;
            }
            b'[' => {
                i += 1;
                let negate = pat.get(i) == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut items = Vec::new();
                loop {
                    let rest = pat.len().saturating_sub(i);
                    if rest >= 2 && pat[i] == b'\\' {
                        items.push(ClassItem::Byte(pat[i + 1]));
                        i += 2;
                    } else if rest == 0 {
                        break;
                    } else if pat[i] == b']' {
                        i += 1;
                        break;
                    } else if rest >= 3 && pat[i + 1] == b'-' {
                        let (a, b) = (pat[i] as i8, pat[i + 2] as i8);
                        items.push(ClassItem::Range(a.min(b), a.max(b)));
                        i += 3;
                    } else {
                        items.push(ClassItem::Byte(pat[i]));
                        i += 1;
                    }
                }
                out.push(Token::Class { negate, items });
            }
            b'\\' if i + 1 < pat.len() => {
                out.push(Token::Byte(pat[i + 1]));
                i += 2;
            }
            b => {
                out.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    out
}

/// Matches without compiling: for one-off checks (PUBSUB CHANNELS, KEYS).
pub fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    Glob::new(pattern).matches(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plain port of Redis 7.0's recursive `stringmatchlen` (without the
    /// `skipLongerMatches` shortcut, which does not change results), used as
    /// the reference. Reads past the end yield 0, as the C string's NUL does.
    fn reference(pat: &[u8], s: &[u8]) -> bool {
        fn at(b: &[u8], i: usize) -> u8 {
            b.get(i).copied().unwrap_or(0)
        }
        fn rec(pat: &[u8], mut p: usize, s: &[u8], mut si: usize, nesting: usize) -> bool {
            if nesting > 1000 {
                return false;
            }
            let mut plen = pat.len() - p;
            let mut slen = s.len() - si;
            while plen > 0 && slen > 0 {
                match pat[p] {
                    b'*' => {
                        while plen > 0 && at(pat, p + 1) == b'*' {
                            p += 1;
                            plen -= 1;
                        }
                        if plen == 1 {
                            return true;
                        }
                        while slen > 0 {
                            if rec(pat, p + 1, s, si, nesting + 1) {
                                return true;
                            }
                            si += 1;
                            slen -= 1;
                        }
                        return false;
                    }
                    b'?' => {
                        si += 1;
                        slen -= 1;
                    }
                    b'[' => {
                        p += 1;
                        plen -= 1;
                        let not = at(pat, p) == b'^';
                        if not {
                            p += 1;
                            plen -= 1;
                        }
                        let mut m = false;
                        loop {
                            if at(pat, p) == b'\\' && plen >= 2 {
                                p += 1;
                                plen -= 1;
                                if pat[p] == s[si] {
                                    m = true;
                                }
                            } else if plen > 0 && pat[p] == b']' {
                                break;
                            } else if plen == 0 {
                                p -= 1;
                                plen += 1;
                                break;
                            } else if plen >= 3 && pat[p + 1] == b'-' {
                                let (mut a, mut b) = (pat[p] as i8, pat[p + 2] as i8);
                                if a > b {
                                    std::mem::swap(&mut a, &mut b);
                                }
                                p += 2;
                                plen -= 2;
                                if s[si] as i8 >= a && s[si] as i8 <= b {
                                    m = true;
                                }
                            } else if pat[p] == s[si] {
                                m = true;
                            }
                            p += 1;
                            plen -= 1;
                        }
                        if not {
                            m = !m;
                        }
                        if !m {
                            return false;
                        }
                        si += 1;
                        slen -= 1;
                    }
                    c => {
                        let c = if c == b'\\' && plen >= 2 {
                            p += 1;
                            plen -= 1;
                            pat[p]
                        } else {
                            c
                        };
                        if c != s[si] {
                            return false;
                        }
                        si += 1;
                        slen -= 1;
                    }
                }
                p += 1;
                plen -= 1;
                if slen == 0 {
                    while at(pat, p) == b'*' && plen > 0 {
                        p += 1;
                        plen -= 1;
                    }
                    break;
                }
            }
            plen == 0 && slen == 0
        }
        rec(pat, 0, s, 0, 0)
    }

    /// The matcher this module had before segments: one backtracking point
    /// at the last star, O(pattern × subject). Kept as an oracle for the new
    /// one, which must agree with it everywhere.
    fn old_matches(pattern: &[u8], subject: &[u8]) -> bool {
        fn token_matches(t: &Token, b: u8) -> bool {
            match t {
                Token::Star | Token::Any => true,
                Token::Byte(x) => *x == b,
                Token::Class { negate, items } => items.iter().any(|i| i.contains(b)) != *negate,
            }
        }
        if subject.is_empty() {
            return pattern.is_empty();
        }
        let toks = compile(pattern);
        let (mut p, mut s) = (0usize, 0usize);
        let mut backtrack: Option<(usize, usize)> = None;
        while s < subject.len() {
            if p < toks.len() {
                match &toks[p] {
                    Token::Star => {
                        backtrack = Some((p, s));
                        p += 1;
                        continue;
                    }
                    t if token_matches(t, subject[s]) => {
                        p += 1;
                        s += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match backtrack {
                Some((sp, ss)) => {
                    backtrack = Some((sp, ss + 1));
                    p = sp + 1;
                    s = ss + 1;
                }
                None => return false,
            }
        }
        toks[p..].iter().all(|t| *t == Token::Star)
    }

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn basics() {
        assert!(m("news.*", "news.tech"));
        assert!(!m("news.*", "new.tech"));
        assert!(m("h?llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed range");
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("[\\]]", "]"));
        assert!(!m("*", ""), "Redis: * does not match the empty string");
        assert!(m("", ""));
        assert!(m("a[", "a") == reference(b"a[", b"a"));
        assert!(m("a[^", "ab"));
        assert!(m("***", "x"));
    }

    #[test]
    fn prefix() {
        assert_eq!(Glob::new(b"news.*").literal_prefix(), b"news.");
        assert_eq!(Glob::new(b"a\\*b*").literal_prefix(), b"a*b");
        assert_eq!(Glob::new(b"*x").literal_prefix(), b"");
        assert_eq!(Glob::new(b"ab?").literal_prefix(), b"ab");
    }

    #[test]
    fn adversarial_is_fast() {
        let subject = vec![b'a'; 100_000];
        let g = Glob::new(b"*a*a*a*a*a*a*a*a*a*a*a*a*b");
        let t = std::time::Instant::now();
        assert!(!g.matches(&subject));
        // Generous bound: linear-ish work, far from exponential.
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let deep = "*a".repeat(20_000);
        assert!(
            !Glob::new(deep.as_bytes()).matches(&vec![b'a'; 20_000]),
            "past Redis's nesting limit"
        );
    }

    /// Checked against redis-server 7.0.15 (see tests/pattern_churn.rs).
    #[test]
    fn redis_nesting_limit() {
        let a = |n: usize| vec![b'a'; n];
        let stars = |n: usize| "*a".repeat(n);
        for (pat, subject, want) in [
            (stars(1000), a(1000), true),
            (stars(1001), a(1001), false),
            (stars(1001), a(2000), false),
            (stars(1000) + "*", a(1005), true),
            (stars(1000) + "**", a(1000), true),
            (stars(1000) + "*b", [a(1000), b"b".to_vec()].concat(), false),
            ("a".to_owned() + &"*?".repeat(1001), a(1002), false),
        ] {
            // Not against `reference`: without Redis's skipLongerMatches its
            // recursion is exponential on these.
            assert_eq!(
                Glob::new(pat.as_bytes()).matches(&subject),
                want,
                "{}",
                pat.len()
            );
        }
    }

    #[test]
    fn segments_with_wildcards() {
        assert!(m("*a?c*", "xxabcxx"));
        assert!(m("*a?c", "abcabc"));
        assert!(!m("*a?c", "abcab"));
        assert!(m("a*[xy]z*b", "aqqqyzb"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "ac"));
        assert!(!m("ab*ba", "aba"), "head and tail may not overlap");
        assert!(m("ab*ba", "abba"));
        assert!(m("*", "x"));
        assert!(!m("?", ""));
        assert!(!m("", "a"));
    }

    /// Long subjects and segments, past `NAIVE_LIMIT` and past one word of
    /// shift-and state, checked against the old matcher.
    #[test]
    fn shift_and_agrees_on_long_inputs() {
        let mut subject = vec![b'a'; 5000];
        subject[4000] = b'b';
        subject[4999] = b'c';
        for (pat, want) in [
            (format!("*{}b*", "a?".repeat(50)), true),
            (format!("*{}b*", "a?".repeat(2001)), false),
            (format!("*[ab]{}c", "a".repeat(200)), true),
            (format!("*[bc]{}c", "a".repeat(200)), false),
            (format!("*{}?{}c", "a".repeat(100), "a".repeat(897)), true),
            (format!("*{}[^a]{}*", "?".repeat(129), "a".repeat(64)), true),
            (
                format!("*{}[^a]{}*", "?".repeat(129), "a".repeat(1000)),
                false,
            ),
        ] {
            let g = Glob::new(pat.as_bytes());
            assert_eq!(g.matches(&subject), want, "{pat}");
            assert_eq!(old_matches(pat.as_bytes(), &subject), want, "oracle {pat}");
        }
    }

    #[test]
    fn star_literal_attack_is_linear() {
        let mut pat = vec![b'*'];
        pat.extend(std::iter::repeat_n(b'a', 32 << 10));
        pat.push(b'b');
        let subject = vec![b'a'; 64 << 10];
        let t = std::time::Instant::now();
        assert!(!Glob::new(&pat).matches(&subject));
        // The old matcher needs 2^31 steps here; memmem needs 2^16.
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    fn pat_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'*'),
                Just(b'?'),
                Just(b'['),
                Just(b']'),
                Just(b'^'),
                Just(b'-'),
                Just(b'\\'),
                Just(b'a'),
                Just(b'b'),
                Just(b'c'),
                Just(0u8),
            ],
            0..12,
        )
    }

    fn subject_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'b'),
                Just(b'c'),
                Just(b'*'),
                Just(b'-'),
                Just(b']'),
                Just(b'\\'),
                Just(0u8)
            ],
            0..10,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn agrees_with_redis_reference(p in pat_strategy(), s in subject_strategy()) {
            prop_assert_eq!(Glob::new(&p).matches(&s), reference(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }

        #[test]
        fn prefix_is_sound(p in pat_strategy(), s in subject_strategy()) {
            let g = Glob::new(&p);
            if g.matches(&s) {
                prop_assert!(s.starts_with(g.literal_prefix()));
            }
        }
    }

    /// Patterns with few stars and long segments over a two-letter subject,
    /// so segments occur often and almost-occur more often.
    fn long_segment_pattern() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                8 => Just(&b"a"[..]),
                2 => Just(&b"b"[..]),
                2 => Just(&b"?"[..]),
                1 => Just(&b"[ab]"[..]),
                1 => Just(&b"[^a]"[..]),
                1 => Just(&b"*"[..]),
            ],
            1..160,
        )
        .prop_map(|v| v.concat())
    }

    fn long_subject() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![6 => Just(b'a'), 1 => Just(b'b')], 1..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]
        /// The new matcher against the old one on inputs long enough to
        /// take every path: position by position, shift-and over one and
        /// several words, memmem.
        #[test]
        fn agrees_with_old_matcher(p in long_segment_pattern(), s in long_subject()) {
            prop_assert_eq!(Glob::new(&p).matches(&s), old_matches(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }

        /// Subjects built to contain the pattern's pieces, so that matches
        /// are as common as failures.
        #[test]
        fn agrees_with_old_matcher_on_matches(p in long_segment_pattern(), fill in long_subject()) {
            let s: Vec<u8> = p.iter().zip(fill.iter().cycle()).map(|(&c, &f)| match c {
                b'*' | b'?' | b'[' | b']' | b'^' => f,
                c => c,
            }).collect();
            prop_assert_eq!(Glob::new(&p).matches(&s), old_matches(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }
    }
}
