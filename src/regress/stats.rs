//! The statistics behind summaries and verdicts: quantiles, a summary of a
//! sample, the Mann-Whitney U rank test and a seeded bootstrap confidence
//! interval of the change between two medians.
//!
//! # The rank test
//! Two-sided Mann-Whitney U over the pooled ranks (ties get their mean
//! rank). Without ties and with at most [`EXACT_MAX_N`] values per side the
//! p-value is exact: the number of orderings of the pooled values that give
//! a U at least as extreme, over all `C(n+m, n)` orderings, counted by the
//! recurrence `f(n, m, u) = f(n-1, m, u-m) + f(n, m-1, u)`. Otherwise it is
//! the normal approximation with the tie correction of the variance and a
//! continuity correction. The exact test can never give a p-value below
//! `2 / C(n+m, n)` ([`min_p_value`]): with 4 runs a side that is 0.029,
//! so no verdict at `alpha = 0.01` is possible and compare says so.
//!
//! # The bootstrap
//! Percentile bootstrap of `median(B*) / median(A*) - 1` (or of the
//! difference when A's median is 0), resampling each side with
//! replacement, [`BOOTSTRAP_RESAMPLES`] times, from a ChaCha8 generator
//! seeded by the caller: the same inputs and seed give the same interval
//! on every machine.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Largest side for which the exact U distribution is used.
pub const EXACT_MAX_N: usize = 50;

/// Bootstrap resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 4000;

/// The `q`-quantile (0..=1) of sorted values, interpolating linearly
/// between order statistics (Hyndman and Fan type 7, as R and NumPy do).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// Location and spread of one metric over repeated runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Coefficient of variation: sample standard deviation over the
    /// absolute mean; `None` when the mean is 0 or there is one value.
    pub cv: Option<f64>,
}

impl Summary {
    /// The summary of finite values; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let cv = (n > 1 && mean != 0.0).then(|| {
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            var.sqrt() / mean.abs()
        });
        Some(Summary {
            n,
            median: quantile(&v, 0.5),
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
            min: v[0],
            max: v[n - 1],
            mean,
            cv,
        })
    }
}

/// Result of a two-sided Mann-Whitney U test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RankTest {
    /// U of the first sample.
    pub u: f64,
    pub p_value: f64,
    /// The p-value is exact (no ties, small samples), not approximate.
    pub exact: bool,
}

/// Ranks (1-based, ties averaged) of `a ++ b`, and the tie group sizes.
fn ranks(a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut pooled: Vec<(f64, usize)> = a.iter().chain(b).copied().zip(0..).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut ranks = vec![0.0; pooled.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for p in &pooled[i..=j] {
            ranks[p.1] = rank;
        }
        if j > i {
            ties.push(j - i + 1);
        }
        i = j + 1;
    }
    (ranks, ties)
}

/// Number of orderings of `n` A-values and `m` B-values giving each U of
/// A (index = U), as f64 (exact up to 2^53, then relative error ~1e-16).
fn u_counts(n: usize, m: usize) -> Vec<f64> {
    // f[m'][u] for the current n', built up over n' = 0..=n.
    let max_u = n * m;
    let mut prev: Vec<Vec<f64>> = (0..=m)
        .map(|_| {
            let mut v = vec![0.0; max_u + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for nn in 1..=n {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max_u + 1]; m + 1];
        cur[0][0] = 1.0;
        for mm in 1..=m {
            for u in 0..=nn * mm {
                let from_a = if u >= mm { prev[mm][u - mm] } else { 0.0 };
                cur[mm][u] = from_a + cur[mm - 1][u];
            }
        }
        prev = cur;
    }
    prev.swap_remove(m)
}

/// `C(n+m, n)` as f64.
fn binomial(n: usize, m: usize) -> f64 {
    let k = n.min(m);
    (0..k).fold(1.0, |acc, i| acc * (n + m - i) as f64 / (i + 1) as f64)
}

/// The smallest two-sided p-value the exact rank test can give for sides
/// of `n` and `m` values: `2 / C(n+m, n)` (1 when a side is empty).
pub fn min_p_value(n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    (2.0 / binomial(n, m)).min(1.0)
}

/// Two-sided Mann-Whitney U test of `a` against `b` (see the module docs).
/// `None` when a side is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<RankTest> {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return None;
    }
    let (ranks, ties) = ranks(a, b);
    let rank_sum_a: f64 = ranks[..n].iter().sum();
    let u = rank_sum_a - (n * (n + 1)) as f64 / 2.0;
    if ties.is_empty() && n <= EXACT_MAX_N && m <= EXACT_MAX_N {
        let counts = u_counts(n, m);
        let total: f64 = counts.iter().sum();
        let u_int = u.round() as usize;
        let lower: f64 = counts[..=u_int].iter().sum::<f64>() / total;
        let upper: f64 = counts[u_int..].iter().sum::<f64>() / total;
        return Some(RankTest {
            u,
            p_value: (2.0 * lower.min(upper)).min(1.0),
            exact: true,
        });
    }
    let (nf, mf) = (n as f64, m as f64);
    let big_n = nf + mf;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>();
    let variance = nf * mf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
    let p_value = if variance <= 0.0 {
        1.0 // every value equal: no evidence of a difference
    } else {
        let z = ((u - nf * mf / 2.0).abs() - 0.5).max(0.0) / variance.sqrt();
        libm::erfc(z / std::f64::consts::SQRT_2).min(1.0)
    };
    Some(RankTest {
        u,
        p_value,
        exact: false,
    })
}

/// How B's median differs from A's: relative (`B/A - 1`) when A's median
/// is not 0, else the plain difference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Change {
    Relative(f64),
    Absolute(f64),
}

impl Change {
    pub fn between(median_a: f64, median_b: f64) -> Change {
        if median_a != 0.0 {
            Change::Relative(median_b / median_a - 1.0)
        } else {
            Change::Absolute(median_b - median_a)
        }
    }

    /// The signed size (relative or absolute).
    pub fn value(self) -> f64 {
        match self {
            Change::Relative(v) | Change::Absolute(v) => v,
        }
    }
}

/// Percentile bootstrap interval of [`Change::between`] the medians, at
/// confidence `level` (e.g. 0.99), or `None` when a side is empty.
pub fn bootstrap_change(a: &[f64], b: &[f64], level: f64, seed: u64) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let relative = median(a) != 0.0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let resample = |v: &[f64], rng: &mut rand_chacha::ChaCha8Rng| {
        let r: Vec<f64> = (0..v.len()).map(|_| v[rng.gen_range(0..v.len())]).collect();
        median(&r)
    };
    let mut changes: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .filter_map(|_| {
            let ma = resample(a, &mut rng);
            let mb = resample(b, &mut rng);
            if relative {
                (ma != 0.0).then(|| mb / ma - 1.0)
            } else {
                Some(mb - ma)
            }
        })
        .filter(|c| c.is_finite())
        .collect();
    if changes.is_empty() {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    Some((quantile(&changes, tail), quantile(&changes, 1.0 - tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 0.75), 3.25);
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.median, 4.5);
        assert_eq!(s.mean, 5.0);
        // sample sd = sqrt(32/7)
        assert!((s.cv.unwrap() - (32.0f64 / 7.0).sqrt() / 5.0).abs() < 1e-12);
    }

    #[test]
    fn exact_u_test_matches_tables() {
        // Complete separation, 5 vs 5: p = 2/252.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let t = mann_whitney(&a, &b).unwrap();
        assert!(t.exact);
        assert_eq!(t.u, 0.0);
        assert!((t.p_value - 2.0 / 252.0).abs() < 1e-12, "{t:?}");
        assert!((min_p_value(5, 5) - 2.0 / 252.0).abs() < 1e-12);
        // [1,3,5,7] vs [2,4,6,8,9]: U = 6; 26 of the 126 orderings give
        // U <= 6 (counted by enumerating every subset), so p = 52/126.
        let t = mann_whitney(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0, 9.0]).unwrap();
        assert_eq!(t.u, 6.0);
        assert!((t.p_value - 52.0 / 126.0).abs() < 1e-12, "{t:?}");
        // Identical samples interleaved: p = 1.
        let t = mann_whitney(&[1.0, 4.0], &[2.0, 3.0]).unwrap();
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn u_counts_sum_to_all_orderings() {
        for (n, m) in [(1, 1), (3, 4), (5, 5), (7, 2)] {
            let total: f64 = u_counts(n, m).iter().sum();
            assert_eq!(total, binomial(n, m));
        }
    }

    #[test]
    fn tied_samples_use_the_corrected_normal_approximation() {
        let a = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let b = [3.0, 3.0, 4.0, 4.0, 5.0, 5.0];
        let t = mann_whitney(&a, &b).unwrap();
        assert!(!t.exact);
        assert_eq!(t.u, 2.0);
        // Mid-ranks 1.5, 3.5, 6.5: U = 23 - 21 = 2; tie groups 2,2,4,2,2 give
        // var = 36/12 * (13 - 84/132); z = (16 - 0.5) / sd; p = erfc(z/sqrt 2),
        // as scipy.stats.mannwhitneyu(a, b, method="asymptotic") computes it.
        assert!((t.p_value - 0.010_925_908).abs() < 1e-8, "{t:?}");
        let same = mann_whitney(&[2.0; 4], &[2.0; 4]).unwrap();
        assert_eq!(same.p_value, 1.0);
    }

    #[test]
    fn bootstrap_is_reproducible_and_covers_the_change() {
        let a: Vec<f64> = (0..10).map(|i| 100.0 + i as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 0.8).collect();
        let ci = bootstrap_change(&a, &b, 0.99, 7).unwrap();
        assert_eq!(ci, bootstrap_change(&a, &b, 0.99, 7).unwrap());
        assert!(ci.0 <= -0.2 + 1e-9 && -0.2 - 1e-9 <= ci.1, "{ci:?}");
        assert!(ci.1 < 0.0, "{ci:?}");
    }
}
