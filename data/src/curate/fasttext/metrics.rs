//! ROC-AUC for scoring a classifier on held-out documents.

/// The area under the ROC curve: the probability that a random positive
/// scores above a random negative, ties counting one half (Mann-Whitney U).
/// `None` when either class is empty or a score is NaN.
pub fn roc_auc(positives: &[f32], negatives: &[f32]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> = positives.iter().map(|&s| (s, true)).collect();
    all.extend(negatives.iter().map(|&s| (s, false)));
    if all.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of positive ranks (1-based, ties sharing their mean rank).
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * all[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let (np, nn) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

#[cfg(test)]
mod tests {
    use super::roc_auc;

    #[test]
    fn roc_auc_hand_computed() {
        // Pairs (pos, neg): 0.9 beats 0.1, 0.4, 0.5 (3); 0.5 beats 0.1, 0.4
        // and ties 0.5 (2.5); 0.3 beats 0.1 (1): 6.5 of 9.
        let auc = roc_auc(&[0.9, 0.5, 0.3], &[0.1, 0.4, 0.5]).unwrap();
        assert!((auc - 6.5 / 9.0).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[1.0, 2.0], &[0.0]), Some(1.0));
        assert_eq!(roc_auc(&[0.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 3], &[0.5; 4]), Some(0.5));
        assert_eq!(roc_auc(&[], &[1.0]), None);
    }
}
