//! Medians and percentiles.

/// Median (mean of the middle two for an even count); NaN for no samples.
pub(crate) fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

pub(crate) fn median_of(xs: impl IntoIterator<Item = f64>) -> f64 {
    median(&xs.into_iter().collect::<Vec<_>>())
}

/// The per-round ratios `measure(a[i]) / measure(b[i])` of two paths measured in the same rounds,
/// and their median: how every receive-CPU ratio of the bench is taken.
pub(crate) fn per_round<T>(a: &[T], b: &[T], measure: impl Fn(&T) -> f64) -> (f64, Vec<f64>) {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| measure(x) / measure(y))
        .collect();
    (median(&ratios), ratios)
}

/// Percentile `p` (0..=100) with linear interpolation between closest ranks; NaN if empty.
pub(crate) fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0), 1.0);
        let xs: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&xs, 99.0), 100.0);
    }
}
