//! The x87 80-bit `long double` arithmetic of Redis's INCRBYFLOAT and
//! HINCRBYFLOAT on x86-64, in software, so Herald's replies are Redis's to
//! the byte: parsing as glibc's `strtold` under Redis's `string2ld` rules,
//! one correctly rounded addition (64-bit significand, round to nearest,
//! ties to even, subnormals), and printing as `%.17Lf` with the trailing
//! zeros trimmed (`ld2string`'s human mode).
//!
//! Exact results come from a small unsigned big integer: a decimal input
//! is turned into binary with one long division, and printing needs at most
//! one `u128` product for the fraction.

use std::cmp::Ordering;

/// The smallest exponent of a significand's unit (subnormals and the
/// smallest normal numbers): 2^-16445.
const EMIN: i64 = -16445;
/// The largest: (2^64 - 1) × 2^16320 is the largest finite value.
const EMAX: i64 = 16320;
/// Redis refuses longer inputs (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;

/// A `long double`: `(-1)^neg × mant × 2^exp` (zero when `mant` is 0), or
/// an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDouble {
    Finite { neg: bool, mant: u64, exp: i64 },
    Inf { neg: bool },
}

const ZERO: LongDouble = LongDouble::Finite {
    neg: false,
    mant: 0,
    exp: 0,
};

/// An unsigned integer of any size, little-endian 64-bit limbs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Big(Vec<u64>);

impl Big {
    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bitlen(&self) -> usize {
        match self.0.last() {
            None => 0,
            Some(top) => self.0.len() * 64 - top.leading_zeros() as usize,
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|l| l >> (i % 64) & 1 == 1)
    }

    /// Whether any bit below position `i` is set.
    fn any_below(&self, i: usize) -> bool {
        let (limb, bit) = (i / 64, i % 64);
        self.0.iter().take(limb.min(self.0.len())).any(|l| *l != 0)
            || (bit > 0
                && self
                    .0
                    .get(limb)
                    .is_some_and(|l| l & ((1u64 << bit) - 1) != 0))
    }

    /// The 64 bits from position `lo` up.
    fn bits64(&self, lo: usize) -> u64 {
        let (limb, bit) = (lo / 64, lo % 64);
        let a = self.0.get(limb).copied().unwrap_or(0);
        let b = self.0.get(limb + 1).copied().unwrap_or(0);
        if bit == 0 {
            a
        } else {
            (a >> bit) | (b << (64 - bit))
        }
    }

    fn mul_small(&mut self, m: u64) {
        let mut carry = 0u128;
        for l in &mut self.0 {
            let v = *l as u128 * m as u128 + carry;
            *l = v as u64;
            carry = v >> 64;
        }
        if carry > 0 {
            self.0.push(carry as u64);
        }
        self.trim();
    }

    fn add_small(&mut self, a: u64) {
        let mut carry = a;
        for l in &mut self.0 {
            let (v, c) = l.overflowing_add(carry);
            *l = v;
            carry = c as u64;
            if carry == 0 {
                return;
            }
        }
        if carry > 0 {
            self.0.push(carry);
        }
    }

    fn shl(&self, n: usize) -> Big {
        let (limbs, bits) = (n / 64, n % 64);
        let mut out = vec![0u64; limbs];
        out.reserve(self.0.len() + 1);
        let mut carry = 0u64;
        for &l in &self.0 {
            if bits == 0 {
                out.push(l);
            } else {
                out.push((l << bits) | carry);
                carry = l >> (64 - bits);
            }
        }
        out.push(carry);
        let mut b = Big(out);
        b.trim();
        b
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    /// `self -= o` (`self >= o`).
    fn sub_assign(&mut self, o: &Big) {
        let mut borrow = false;
        for (i, l) in self.0.iter_mut().enumerate() {
            let r = o.0.get(i).copied().unwrap_or(0);
            let (v, b1) = l.overflowing_sub(r);
            let (v, b2) = v.overflowing_sub(borrow as u64);
            *l = v;
            borrow = b1 || b2;
        }
        self.trim();
    }

    fn add(&self, o: &Big) -> Big {
        let n = self.0.len().max(o.0.len());
        let mut out = Vec::with_capacity(n + 1);
        let mut carry = false;
        for i in 0..n {
            let a = self.0.get(i).copied().unwrap_or(0);
            let b = o.0.get(i).copied().unwrap_or(0);
            let (v, c1) = a.overflowing_add(b);
            let (v, c2) = v.overflowing_add(carry as u64);
            out.push(v);
            carry = c1 || c2;
        }
        out.push(carry as u64);
        let mut b = Big(out);
        b.trim();
        b
    }

    /// The quotient and whether the remainder is non-zero (binary long
    /// division: one step per quotient bit, and callers ask for ~67 bits).
    fn div(mut self, d: &Big) -> (Big, bool) {
        let (nb, db) = (self.bitlen(), d.bitlen());
        if nb < db {
            return (Big(Vec::new()), !self.is_zero());
        }
        let mut q = Big(vec![0; (nb - db) / 64 + 1]);
        for i in (0..=nb - db).rev() {
            let shifted = d.shl(i);
            if self.cmp(&shifted) != Ordering::Less {
                self.sub_assign(&shifted);
                q.0[i / 64] |= 1 << (i % 64);
            }
        }
        q.trim();
        (q, !self.is_zero())
    }

    /// Divides by `d` in place; the remainder.
    fn divrem_small(&mut self, d: u64) -> u64 {
        let mut rem = 0u128;
        for l in self.0.iter_mut().rev() {
            let cur = (rem << 64) | *l as u128;
            *l = (cur / d as u128) as u64;
            rem = cur % d as u128;
        }
        self.trim();
        rem as u64
    }

    fn pow10(n: usize) -> Big {
        let mut b = Big::from_u64(1);
        for _ in 0..n / 19 {
            b.mul_small(10u64.pow(19));
        }
        b.mul_small(10u64.pow((n % 19) as u32));
        b
    }

    fn to_decimal(&self) -> String {
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.is_zero() {
            chunks.push(n.divrem_small(10u64.pow(19)));
        }
        let mut s = chunks
            .pop()
            .map_or_else(|| "0".to_string(), |c| c.to_string());
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:019}"));
        }
        s
    }
}

/// Rounds `n × 2^e` (with `sticky`: plus something less than a unit of
/// `n`'s lowest bit, which then has at least 66 bits) to a long double.
fn round(neg: bool, n: &Big, e: i64, sticky: bool) -> LongDouble {
    if n.is_zero() {
        return LongDouble::Finite {
            neg,
            mant: 0,
            exp: 0,
        };
    }
    let b = n.bitlen() as i64;
    let mut exp = (e + b - 64).max(EMIN);
    let shift = exp - e;
    let mut mant = if shift > 0 {
        let s = shift as usize;
        let mant = if s < n.bitlen() { n.bits64(s) } else { 0 };
        let half = n.bit(s - 1);
        if half && (sticky || n.any_below(s - 1) || mant & 1 == 1) {
            mant.wrapping_add(1)
        } else {
            mant
        }
    } else {
        n.bits64(0) << (-shift) as u32
    };
    if mant == 0 && shift > 0 && n.bitlen() as i64 <= shift {
        // Everything was below the smallest subnormal's half: zero.
        return LongDouble::Finite {
            neg,
            mant: 0,
            exp: 0,
        };
    }
    if mant == 0 {
        // The significand overflowed while rounding up: 2^64.
        mant = 1 << 63;
        exp += 1;
    }
    if exp > EMAX {
        return LongDouble::Inf { neg };
    }
    LongDouble::Finite { neg, mant, exp }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses as Redis's `string2ld`: glibc's `strtold` over the whole
/// string, refusing leading space, NaN, and overflow or underflow to zero.
/// Infinity (`inf`, `infinity`) is a valid input.
pub fn parse(s: &[u8]) -> Option<LongDouble> {
    if s.is_empty() || s.len() >= MAX_CHARS || is_space(s[0]) {
        return None;
    }
    let (neg, rest) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(LongDouble::Inf { neg });
    }
    let r = if rest.len() > 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' {
        parse_hex(neg, &rest[2..])?
    } else {
        parse_decimal(neg, rest)?
    };
    match r {
        LongDouble::Inf { .. } => None,
        other => Some(other),
    }
}

/// Digits of `base`, an optional point and more digits: the digits'
/// value, how many came after the point, and the unread rest. `None`
/// when there is no digit at all.
fn mantissa(s: &[u8], base: u64) -> Option<(Big, i64, &[u8])> {
    let digit = |c: u8| (c as char).to_digit(base as u32).map(u64::from);
    let (per, scale) = if base == 10 {
        (19, 10u64.pow(19))
    } else {
        (15, 1u64 << 60)
    };
    let mut n = Big(Vec::new());
    let (mut chunk, mut in_chunk, mut any, mut frac, mut point) = (0u64, 0, false, 0i64, false);
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'.' && !point {
            point = true;
        } else if let Some(d) = digit(c) {
            any = true;
            if point {
                frac += 1;
            }
            chunk = chunk * base + d;
            in_chunk += 1;
            if in_chunk == per {
                n.mul_small(scale);
                n.add_small(chunk);
                (chunk, in_chunk) = (0, 0);
            }
        } else {
            break;
        }
        i += 1;
    }
    if !any {
        return None;
    }
    n.mul_small(base.pow(in_chunk));
    n.add_small(chunk);
    n.trim();
    Some((n, frac, &s[i..]))
}

/// An exponent: `[+-]digits`, saturated far beyond any finite value;
/// the whole rest must be it.
fn exponent(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |v, d| (v * 10 + (d - b'0') as i64).min(1 << 40));
    Some(if neg { -v } else { v })
}

fn parse_decimal(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (d, frac, rest) = mantissa(s, 10)?;
    let e10 = match rest.split_first() {
        None => 0,
        Some((c, exp)) if c | 0x20 == b'e' => exponent(exp)?,
        Some(_) => return None,
    };
    if d.is_zero() {
        return Some(LongDouble::Finite {
            neg,
            mant: 0,
            exp: 0,
        });
    }
    let q = e10 - frac;
    // Far outside the range: overflow or underflow, refused either way.
    let digits = d.to_decimal().len() as i64;
    if digits + q > 4934 || digits + q < -4952 {
        return None;
    }
    let r = if q >= 0 {
        let mut n = d;
        let p = Big::pow10(q as usize);
        n = mul(&n, &p);
        round(neg, &n, 0, false)
    } else {
        let b = Big::pow10((-q) as usize);
        let k = (b.bitlen() as i64 - d.bitlen() as i64 + 66).max(0) as usize;
        let (quot, rem) = d.shl(k).div(&b);
        round(neg, &quot, -(k as i64), rem)
    };
    underflow_refused(r)
}

fn parse_hex(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (h, frac, rest) = mantissa(s, 16)?;
    let e2 = match rest.split_first() {
        None => 0,
        Some((c, exp)) if c | 0x20 == b'p' => exponent(exp)?,
        Some(_) => return None,
    };
    if h.is_zero() {
        return Some(LongDouble::Finite {
            neg,
            mant: 0,
            exp: 0,
        });
    }
    let e = e2 - 4 * frac;
    let top = h.bitlen() as i64 + e;
    if !(EMIN - 2..=EMAX + 66).contains(&top) {
        return None;
    }
    underflow_refused(round(neg, &h, e, false))
}

/// A non-zero input that rounded to zero underflowed: `strtold` sets
/// ERANGE and Redis refuses it.
fn underflow_refused(r: LongDouble) -> Option<LongDouble> {
    match r {
        LongDouble::Finite { mant: 0, .. } => None,
        other => Some(other),
    }
}

fn mul(a: &Big, b: &Big) -> Big {
    let mut out = vec![0u64; a.0.len() + b.0.len() + 1];
    for (i, &x) in a.0.iter().enumerate() {
        let mut carry = 0u128;
        for (j, &y) in b.0.iter().enumerate() {
            let cur = out[i + j] as u128 + x as u128 * y as u128 + carry;
            out[i + j] = cur as u64;
            carry = cur >> 64;
        }
        let mut k = i + b.0.len();
        while carry > 0 {
            let cur = out[k] as u128 + carry;
            out[k] = cur as u64;
            carry = cur >> 64;
            k += 1;
        }
    }
    let mut r = Big(out);
    r.trim();
    r
}

/// `a + b`, rounded once. An infinity in, or out, gives an infinity (the
/// callers refuse NaN and infinity alike).
pub fn add(a: LongDouble, b: LongDouble) -> LongDouble {
    let (
        LongDouble::Finite {
            neg: an,
            mant: am,
            exp: ae,
        },
        LongDouble::Finite {
            neg: bn,
            mant: bm,
            exp: be,
        },
    ) = (a, b)
    else {
        return LongDouble::Inf { neg: false };
    };
    if am == 0 {
        return if bm == 0 { ZERO } else { b };
    }
    if bm == 0 {
        return a;
    }
    let e = ae.min(be);
    let na = Big::from_u64(am).shl((ae - e) as usize);
    let nb = Big::from_u64(bm).shl((be - e) as usize);
    let (neg, n) = if an == bn {
        (an, na.add(&nb))
    } else {
        match na.cmp(&nb) {
            Ordering::Equal => return ZERO,
            Ordering::Greater => {
                let mut n = na;
                n.sub_assign(&nb);
                (an, n)
            }
            Ordering::Less => {
                let mut n = nb;
                n.sub_assign(&na);
                (bn, n)
            }
        }
    };
    round(neg, &n, e, false)
}

/// `(long long) ceill(v * k)` as x86-64 computes it, as Redis reads a
/// blocking command's timeout in seconds (`k` = 1000): the product
/// rounded once to a long double, its ceiling, and `i64::MIN` (x87's
/// "integer indefinite") when that is out of range or infinite.
pub fn mul_ceil_i64(v: LongDouble, k: u64) -> i64 {
    let LongDouble::Finite { neg, mant, exp } = v else {
        return i64::MIN;
    };
    let p = round(
        neg,
        &mul(&Big::from_u64(mant), &Big::from_u64(k)),
        exp,
        false,
    );
    let LongDouble::Finite { neg, mant, exp } = p else {
        return i64::MIN;
    };
    // The magnitude's integer part, and whether a fraction is left.
    let (int, frac) = match exp {
        _ if mant == 0 => (0u128, false),
        64.. => return i64::MIN,
        0.. => ((mant as u128) << exp, false),
        ..=-64 => (0, true),
        _ => {
            let s = exp.unsigned_abs() as u32;
            ((mant >> s) as u128, mant & ((1u64 << s) - 1) != 0)
        }
    };
    let ceil = if neg {
        -(int as i128)
    } else {
        int as i128 + i128::from(frac)
    };
    i64::try_from(ceil).unwrap_or(i64::MIN)
}

/// Whether it is finite (neither infinity nor NaN).
pub fn is_finite(v: LongDouble) -> bool {
    matches!(v, LongDouble::Finite { .. })
}

/// Prints a finite value as Redis stores an INCRBYFLOAT result:
/// `%.17Lf` (ties to even on the exact binary value, as glibc), trailing
/// zeros and point trimmed, `-0` as `0`.
pub fn format(v: LongDouble) -> String {
    let LongDouble::Finite { neg, mant, exp } = v else {
        return if matches!(v, LongDouble::Inf { neg: true }) {
            "-inf".into()
        } else {
            "inf".into()
        };
    };
    let mut s = if exp >= 0 {
        Big::from_u64(mant).shl(exp as usize).to_decimal()
    } else {
        let sh = (-exp) as u32;
        let (mut int, frac) = if sh < 64 {
            ((mant >> sh) as u128, (mant & ((1u64 << sh) - 1)) as u128)
        } else {
            (0u128, mant as u128)
        };
        const SCALE: u128 = 100_000_000_000_000_000;
        let scaled = frac * SCALE;
        let mut q = if sh < 128 { scaled >> sh } else { 0 };
        if sh <= 128 {
            let r = if sh < 128 {
                scaled & ((1u128 << sh) - 1)
            } else {
                scaled
            };
            let half = 1u128 << (sh - 1);
            if r > half || (r == half && q & 1 == 1) {
                q += 1;
            }
        }
        if q == SCALE {
            q = 0;
            int += 1;
        }
        let mut s = format!("{int}.{q:017}");
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
        s
    };
    if neg && s != "0" {
        s.insert(0, '-');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> Option<String> {
        let r = add(parse(a.as_bytes())?, parse(b.as_bytes())?);
        is_finite(r).then(|| format(r))
    }

    #[test]
    fn sums_print_as_redis_prints_them() {
        // Replies of redis-server 7.0 (x86-64) to INCRBYFLOAT.
        assert_eq!(incr("0", "1.1").as_deref(), Some("1.1"));
        assert_eq!(incr("0.1", "0.2").as_deref(), Some("0.3"));
        assert_eq!(incr("10.50", "0.1").as_deref(), Some("10.6"));
        assert_eq!(incr("0", "5.0e3").as_deref(), Some("5000"));
        assert_eq!(incr("0", "2.5e-20").as_deref(), Some("0"));
        assert_eq!(incr("0", "-1e-30").as_deref(), Some("0"));
        assert_eq!(incr("5", "-5").as_deref(), Some("0"));
        assert_eq!(incr("3", "-1.5").as_deref(), Some("1.5"));
        assert_eq!(incr("-3", "1").as_deref(), Some("-2"));
        assert!(incr("1.1", "1e300").unwrap().starts_with(
            "10000000000000000000089973240795591938705239442732907479382600823212656465961809"
        ));
        assert_eq!(incr("1", "0x10").as_deref(), Some("17"));
        assert_eq!(incr("0", "1e4933"), None, "overflow is refused");
        assert_eq!(incr("0", "inf"), None);
        assert_eq!(incr("1e4932", "1e4932"), None, "a sum that overflows");
        // Exactly representable, printed in full.
        assert_eq!(incr("0", "0.5").as_deref(), Some("0.5"));
        assert_eq!(
            incr("0", "0.000003814697265625").as_deref(),
            Some("0.00000381469726562")
        );
    }

    #[test]
    fn parsing_follows_string2ld() {
        for bad in [
            "", " 1", "1 ", "abc", "1e", "1e+", ".", "-", "nan", "NaN", "0x", "1..2", "1e5.5",
            "--1", "1\u{0}",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        for good in [
            "1",
            "-1",
            "+1",
            "1.",
            ".5",
            "1e5",
            "1E-5",
            "0x1p3",
            "INF",
            "-Infinity",
            "007",
        ] {
            assert!(parse(good.as_bytes()).is_some(), "{good:?}");
        }
        assert_eq!(parse(b"1e-5000"), None, "underflow to zero is refused");
        assert!(
            parse(b"0e-5000").is_some(),
            "an exact zero is not an underflow"
        );
        assert!(parse(b"4e-4951").is_some(), "a subnormal is fine");
        assert_eq!(parse(&[b'1'; 5120]), None, "too long");
    }

    #[test]
    fn timeouts_are_read_as_redis_reads_them() {
        let ms = |s: &str| mul_ceil_i64(parse(s.as_bytes()).unwrap(), 1000);
        assert_eq!(ms("1"), 1000);
        assert_eq!(ms("0.0005"), 1);
        assert_eq!(ms(".5e-3"), 1);
        assert_eq!(ms("1e-300"), 1);
        assert_eq!(ms("-0.0001"), 0);
        assert_eq!(ms("-0"), 0);
        // Redis blocks forever on these: 0.001 is a little under, in binary.
        assert_eq!(ms("-0.001"), 0);
        assert_eq!(ms("0.001"), 1);
        assert_eq!(ms("-1.5"), -1500);
        assert_eq!(ms("0x10"), 16000);
        assert_eq!(ms("9223372036854775.807"), i64::MAX);
        assert_eq!(ms("9223372036854776"), i64::MIN);
        assert_eq!(ms("1e16"), i64::MIN);
        assert_eq!(ms("inf"), i64::MIN);
        assert_eq!(ms("-inf"), i64::MIN);
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 2^64 + 1 is a tie between 2^64 and 2^64 + 2: even wins.
        let v = parse(b"18446744073709551617").unwrap();
        assert_eq!(format(v), "18446744073709551616");
        let v = parse(b"18446744073709551619").unwrap();
        assert_eq!(format(v), "18446744073709551620");
        assert_eq!(
            format(parse(b"9223372036854775807").unwrap()),
            "9223372036854775807"
        );
    }
}
