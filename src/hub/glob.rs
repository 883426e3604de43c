//! Redis glob patterns (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\` escapes), byte-wise.
//!
//! The semantics are those of Redis 7.0's `stringmatchlen`, quirks included:
//! an empty subject matches only the empty pattern (so `*` does not match the
//! empty channel), reversed ranges are swapped, an unterminated `[` class
//! swallows the rest of the pattern, and `\` escapes the next byte both inside
//! and outside classes.
//!
//! Unlike Redis, which recurses on every `*`, a pattern is compiled once into
//! tokens that each consume exactly one byte (or any run, for `*`) and matched
//! with a single backtracking point. That is equivalent, because every token
//! but `*` consumes exactly one byte, and it runs in O(pattern × subject) time
//! with no recursion, so adversarial patterns cannot blow the stack or the CPU.

/// One compiled element of a glob pattern.
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
    /// Inclusive range, already ordered low..=high.
    Range(u8, u8),
}

impl ClassItem {
    fn contains(&self, b: u8) -> bool {
        match *self {
            ClassItem::Byte(x) => x == b,
            ClassItem::Range(lo, hi) => lo <= b && b <= hi,
        }
    }
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
    /// The bytes every matching subject starts with.
    prefix_len: usize,
    prefix: Vec<u8>,
    empty: bool,
}

impl Glob {
    /// Compiles `pattern`. Every byte string is a valid pattern.
    pub fn new(pattern: &[u8]) -> Glob {
        let tokens = compile(pattern);
        let prefix: Vec<u8> = tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        Glob {
            prefix_len: prefix.len(),
            prefix,
            tokens,
            empty: pattern.is_empty(),
        }
    }

    /// The literal bytes that every subject matching this pattern starts with.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len]
    }

    /// True when `subject` matches, with Redis's semantics.
    pub fn matches(&self, subject: &[u8]) -> bool {
        if subject.is_empty() {
            // Redis never enters its loop for an empty subject.
            return self.empty;
        }
        let toks = &self.tokens;
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
}

fn token_matches(t: &Token, b: u8) -> bool {
    match t {
        Token::Star => true,
        Token::Any => true,
        Token::Byte(x) => *x == b,
        Token::Class { negate, items } => items.iter().any(|i| i.contains(b)) != *negate,
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
                        let (a, b) = (pat[i], pat[i + 2]);
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
        fn rec(pat: &[u8], mut p: usize, s: &[u8], mut si: usize) -> bool {
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
                            if rec(pat, p + 1, s, si) {
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
                                let (mut a, mut b) = (pat[p], pat[p + 2]);
                                if a > b {
                                    std::mem::swap(&mut a, &mut b);
                                }
                                p += 2;
                                plen -= 2;
                                if s[si] >= a && s[si] <= b {
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
        rec(pat, 0, s, 0)
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
        assert!(Glob::new(deep.as_bytes()).matches(&vec![b'a'; 20_000]));
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
}
