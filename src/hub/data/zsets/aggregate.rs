//! The rules of ZUNIONSTORE and ZINTERSTORE: each input's scores times its
//! weight, combined per member by SUM, MIN or MAX, as Redis's
//! `zunionInterGenericCommand` does. Where the arithmetic gives NaN
//! (`inf * 0`, `inf + -inf`), the score is 0, as in Redis; infinities
//! otherwise stay.

use std::collections::HashMap;

use bytes::Bytes;

use crate::hub::zset::ZSet;

/// AGGREGATE: how the weighted scores of one member combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Min,
    Max,
}

impl Aggregate {
    /// `a` and `b` combined; 0 where that is NaN.
    pub fn combine(self, a: f64, b: f64) -> f64 {
        let r = match self {
            Aggregate::Sum => a + b,
            Aggregate::Min => a.min(b),
            Aggregate::Max => a.max(b),
        };
        if r.is_nan() {
            0.0
        } else {
            r
        }
    }
}

/// A score times its input's weight; 0 where that is NaN.
pub fn weigh(score: f64, weight: f64) -> f64 {
    let r = score * weight;
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

/// Which members a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZStoreOp {
    /// Members of any input.
    Union,
    /// Members of every input (none when an input is missing).
    Inter,
}

/// The result of combining `inputs` (one per source key: its members and
/// scores, `None` for a missing key; a plain set's members score 1) with
/// `weights` (one per input) under `agg`.
pub fn combine(
    inputs: &[Option<Vec<(Bytes, f64)>>],
    weights: &[f64],
    agg: Aggregate,
    op: ZStoreOp,
) -> ZSet {
    let weight = |i: usize| weights.get(i).copied().unwrap_or(1.0);
    let mut acc: HashMap<Bytes, f64> = HashMap::new();
    match op {
        ZStoreOp::Union => {
            for (i, input) in inputs.iter().enumerate() {
                for (m, s) in input.iter().flatten() {
                    let v = weigh(*s, weight(i));
                    acc.entry(m.clone())
                        .and_modify(|a| *a = agg.combine(*a, v))
                        .or_insert(v);
                }
            }
        }
        ZStoreOp::Inter if inputs.iter().all(|i| i.is_some()) => {
            let sets: Vec<HashMap<&Bytes, f64>> = inputs
                .iter()
                .flatten()
                .map(|v| v.iter().map(|(m, s)| (m, *s)).collect())
                .collect();
            if let Some(first) = inputs.first().and_then(|i| i.as_ref()) {
                'outer: for (m, s) in first {
                    let mut total = weigh(*s, weight(0));
                    for (j, set) in sets.iter().enumerate().skip(1) {
                        match set.get(m) {
                            Some(v) => total = agg.combine(total, weigh(*v, weight(j))),
                            None => continue 'outer,
                        }
                    }
                    acc.insert(m.clone(), total);
                }
            }
        }
        ZStoreOp::Inter => {}
    }
    let mut z = ZSet::new();
    for (m, s) in acc {
        z.insert(m, s);
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn input(items: &[(&'static str, f64)]) -> Option<Vec<(Bytes, f64)>> {
        Some(
            items
                .iter()
                .map(|(m, s)| (Bytes::from_static(m.as_bytes()), *s))
                .collect(),
        )
    }

    fn scores(z: &ZSet) -> Vec<(String, f64)> {
        z.all()
            .into_iter()
            .map(|(m, s)| (String::from_utf8_lossy(&m).into_owned(), s))
            .collect()
    }

    fn s(m: &str, v: f64) -> (String, f64) {
        (m.to_string(), v)
    }

    #[test]
    fn union_sums_weighted_scores_by_default() {
        let a = input(&[("x", 1.0), ("y", 2.0)]);
        let b = input(&[("y", 3.0), ("z", 4.0)]);
        let z = combine(
            &[a.clone(), b.clone()],
            &[1.0, 1.0],
            Aggregate::Sum,
            ZStoreOp::Union,
        );
        assert_eq!(scores(&z), [s("x", 1.0), s("z", 4.0), s("y", 5.0)]);
        let z = combine(&[a, b], &[2.0, 0.5], Aggregate::Sum, ZStoreOp::Union);
        assert_eq!(scores(&z), [s("x", 2.0), s("z", 2.0), s("y", 5.5)]);
    }

    #[test]
    fn min_and_max_pick_among_weighted_scores() {
        let a = input(&[("x", 1.0), ("y", 2.0)]);
        let b = input(&[("x", 3.0), ("y", 1.0)]);
        let w = [2.0, 1.0];
        let z = combine(&[a.clone(), b.clone()], &w, Aggregate::Min, ZStoreOp::Union);
        assert_eq!(scores(&z), [s("y", 1.0), s("x", 2.0)]);
        let z = combine(&[a, b], &w, Aggregate::Max, ZStoreOp::Inter);
        assert_eq!(scores(&z), [s("x", 3.0), s("y", 4.0)]);
    }

    #[test]
    fn intersection_keeps_members_of_every_input() {
        let a = input(&[("x", 1.0), ("y", 2.0), ("z", 3.0)]);
        let b = input(&[("y", 10.0), ("z", 20.0)]);
        let c = input(&[("z", 100.0), ("y", 0.0)]);
        let z = combine(
            &[a.clone(), b.clone(), c],
            &[1.0, 1.0, 1.0],
            Aggregate::Sum,
            ZStoreOp::Inter,
        );
        assert_eq!(scores(&z), [s("y", 12.0), s("z", 123.0)]);
        // A missing key empties an intersection, not a union.
        assert!(combine(
            &[a.clone(), None],
            &[1.0, 1.0],
            Aggregate::Sum,
            ZStoreOp::Inter
        )
        .is_empty());
        let z = combine(&[a, None], &[1.0, 1.0], Aggregate::Sum, ZStoreOp::Union);
        assert_eq!(z.len(), 3);
    }

    #[test]
    fn nan_becomes_zero_and_infinities_stay() {
        // inf * 0 is NaN: 0.
        assert_eq!(weigh(INF, 0.0), 0.0);
        assert_eq!(weigh(-INF, 2.0), -INF);
        // inf + -inf is NaN: 0.
        assert_eq!(Aggregate::Sum.combine(INF, -INF), 0.0);
        assert_eq!(Aggregate::Sum.combine(INF, 1.0), INF);
        assert_eq!(Aggregate::Min.combine(INF, -INF), -INF);
        assert_eq!(Aggregate::Max.combine(INF, -INF), INF);
        let a = input(&[("x", INF), ("y", INF)]);
        let b = input(&[("x", -INF), ("y", 1.0)]);
        let z = combine(
            &[a.clone(), b.clone()],
            &[1.0, 1.0],
            Aggregate::Sum,
            ZStoreOp::Union,
        );
        assert_eq!(scores(&z), [s("x", 0.0), s("y", INF)]);
        let z = combine(&[a, b], &[0.0, 1.0], Aggregate::Sum, ZStoreOp::Inter);
        assert_eq!(scores(&z), [s("x", -INF), s("y", 1.0)]);
    }

    #[test]
    fn plain_sets_score_one_and_weights_default_to_one() {
        // A plain set arrives as members scored 1 (see `Hub::zstore`).
        let set = input(&[("a", 1.0), ("b", 1.0)]);
        let z = combine(&[set], &[], Aggregate::Sum, ZStoreOp::Union);
        assert_eq!(scores(&z), [s("a", 1.0), s("b", 1.0)]);
        assert!(combine(&[], &[], Aggregate::Sum, ZStoreOp::Inter).is_empty());
    }
}
