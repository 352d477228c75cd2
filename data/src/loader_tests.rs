//! Unit tests of `loader.rs` (samplers, evaluation windows, resume).

use super::*;

fn ramp(n: u32) -> Arc<Vec<u32>> {
    Arc::new((0..n).collect())
}

#[test]
fn split_is_nanogpt_style() {
    let s = TokenSplit::from_tokens((0..100).collect(), 0.1).unwrap();
    assert_eq!(s.train, (0..90).collect::<Vec<u32>>());
    assert_eq!(s.val, (90..100).collect::<Vec<u32>>());
    let s = TokenSplit::from_tokens((0..10).collect(), 0.0).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (10, 0));
    assert!(s.check_seq_len(9).is_ok());
    assert!(TokenSplit::from_tokens(vec![1], 1.0).is_err());
    assert!(TokenSplit::from_tokens(vec![1], f64::NAN).is_err());
}

#[test]
fn short_split_error_names_sizes_and_fix() {
    let s = TokenSplit::from_tokens((0..100).collect(), 0.1).unwrap();
    let err = s.check_seq_len(16).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("val") && msg.contains("10 tokens") && msg.contains("17"),
        "{msg}"
    );
    assert!(msg.contains("max_seq_len"), "{msg}");
    let err = BatchSampler::new(ramp(8), 8, 2, 0, 0, 1).unwrap_err();
    assert!(matches!(
        err,
        DataError::NotEnoughTokens {
            have: 8,
            need: 9,
            ..
        }
    ));
}

#[test]
fn batches_are_shifted_windows_in_range() {
    let mut s = BatchSampler::new(ramp(50), 8, 4, 1, 0, 1).unwrap();
    let mut seen_last = false;
    for _ in 0..500 {
        let b = s.next_batch();
        assert_eq!((b.batch_size, b.seq_len), (4, 8));
        assert_eq!((b.inputs.len(), b.targets.len()), (32, 32));
        for row in 0..4 {
            let x = &b.inputs[row * 8..row * 8 + 8];
            let y = &b.targets[row * 8..row * 8 + 8];
            assert!(x[0] < 50 - 8);
            seen_last |= x[0] == 50 - 8 - 1;
            for t in 0..8 {
                assert_eq!(x[t], x[0] + t as u32);
                assert_eq!(y[t], x[t] + 1);
            }
        }
    }
    assert!(seen_last, "the last start offset is never drawn");
}

#[test]
fn restore_continues_bitwise() {
    let tokens = ramp(10_000);
    let mut a = BatchSampler::new(tokens.clone(), 64, 8, 1234, 1, 4).unwrap();
    for _ in 0..7 {
        a.next_batch();
    }
    let json = serde_json::to_string(&a.state()).unwrap();
    let expected: Vec<Batch> = (0..5).map(|_| a.next_batch()).collect();

    let mut b = BatchSampler::new(tokens, 64, 8, 1234, 1, 4).unwrap();
    let state: SamplerState = serde_json::from_str(&json).unwrap();
    b.restore(&state).unwrap();
    assert_eq!(b.batches_drawn(), 7);
    let got: Vec<Batch> = (0..5).map(|_| b.next_batch()).collect();
    assert_eq!(got, expected);
    assert_eq!(b.state(), a.state());
}

#[test]
fn restore_rejects_other_shapes() {
    let tokens = ramp(1000);
    let state = BatchSampler::new(tokens.clone(), 16, 4, 0, 0, 2)
        .unwrap()
        .state();
    for (seq_len, batch) in [(32, 4), (16, 8)] {
        let mut other = BatchSampler::new(tokens.clone(), seq_len, batch, 0, 0, 2).unwrap();
        let err = other.restore(&state).unwrap_err();
        assert!(matches!(err, DataError::StateMismatch { .. }), "{err}");
    }
    // Another rank (or world size) continues the same global stream.
    let mut other_rank = BatchSampler::new(tokens.clone(), 16, 4, 0, 1, 2).unwrap();
    assert!(other_rank.restore(&state).is_ok());
    let mut other = BatchSampler::new(ramp(999), 16, 4, 0, 0, 2).unwrap();
    assert!(other.restore(&state).is_err());
    let mut wrong = state.clone();
    wrong.version = 99;
    let mut same = BatchSampler::new(tokens, 16, 4, 0, 0, 2).unwrap();
    assert!(matches!(
        same.restore(&wrong),
        Err(DataError::BadState { .. })
    ));
}

#[test]
fn ranks_draw_different_batches_and_seeds_repeat() {
    let tokens = ramp(100_000);
    let mut r0 = BatchSampler::new(tokens.clone(), 32, 4, 7, 0, 2).unwrap();
    let mut r1 = BatchSampler::new(tokens.clone(), 32, 4, 7, 1, 2).unwrap();
    let mut r0_again = BatchSampler::new(tokens, 32, 4, 7, 0, 2).unwrap();
    for _ in 0..20 {
        let (a, b) = (r0.next_batch(), r1.next_batch());
        assert_ne!(a, b);
        assert_eq!(a, r0_again.next_batch());
    }
}

#[test]
fn ranks_split_the_one_rank_batch() {
    let tokens = ramp(10_000);
    let mut one = BatchSampler::new(tokens.clone(), 8, 6, 3, 0, 1).unwrap();
    let mut ranks: Vec<BatchSampler> = (0..3)
        .map(|r| BatchSampler::new(tokens.clone(), 8, 6, 3, r, 3).unwrap())
        .collect();
    for _ in 0..5 {
        let whole = one.next_batch();
        for (r, s) in ranks.iter_mut().enumerate() {
            let part = s.next_batch();
            assert_eq!(part.batch_size, 2);
            for (i, row) in part.inputs.chunks(8).enumerate() {
                let k = r + 3 * i;
                assert_eq!(row, &whole.inputs[k * 8..(k + 1) * 8]);
            }
        }
    }
    // The state is global: rank 2 of 3 resumes as rank 0 of 2.
    let mut two = BatchSampler::new(tokens, 8, 6, 3, 0, 2).unwrap();
    two.restore(&ranks[2].state()).unwrap();
    let whole = one.next_batch();
    assert_eq!(&two.next_batch().inputs[..8], &whole.inputs[..8]);
    assert!(matches!(
        BatchSampler::new(ramp(100), 8, 5, 0, 0, 2),
        Err(DataError::BatchNotDivisible { .. })
    ));
}

#[test]
fn bad_rank_is_an_error() {
    assert!(matches!(
        BatchSampler::new(ramp(100), 8, 2, 0, 0, 0),
        Err(DataError::BadRank { .. })
    ));
    assert!(matches!(
        BatchSampler::new(ramp(100), 8, 2, 0, 2, 2),
        Err(DataError::BadRank { .. })
    ));
}

#[test]
fn word_pos_survives_json_as_string() {
    let s = SamplerState {
        version: 1,
        seed: 0,
        rank: 0,
        world_size: 1,
        seq_len: 1,
        batch_size: 1,
        n_tokens: 2,
        batches_drawn: 0,
        rng_word_pos: u128::MAX - 3,
    };
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains(&format!("\"{}\"", u128::MAX - 3)), "{json}");
    assert_eq!(serde_json::from_str::<SamplerState>(&json).unwrap(), s);
}

#[test]
fn eval_batches_are_fixed_evenly_spaced_and_disjoint() {
    let tokens: Vec<u32> = (0..1000).collect();
    let a = eval_batches(&tokens, 16, 4, 5);
    assert_eq!(a, eval_batches(&tokens, 16, 4, 5));
    assert_eq!(a.len(), 5);
    let starts: Vec<u32> = a
        .iter()
        .flat_map(|b| b.inputs.chunks(16).map(|row| row[0]))
        .collect();
    assert_eq!(starts.len(), 20);
    assert_eq!(starts[0], 0);
    assert_eq!(*starts.last().unwrap(), 1000 - 16 - 1);
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 16, "windows overlap: {starts:?}");
    }
    for b in &a {
        assert_eq!(b.targets[0], b.inputs[0] + 1);
    }
}

/// Rows' first input tokens (the ramp makes token == offset).
fn starts_of(batches: &[Batch]) -> Vec<u32> {
    batches
        .iter()
        .flat_map(|b| b.inputs.chunks(b.seq_len).map(|row| row[0]))
        .collect()
}

#[test]
fn eval_batches_on_little_data_do_not_overlap() {
    // 40 tokens, seq 16: 24 distinct offsets but only 2 disjoint windows;
    // asking for 10 batches of 4 gives one batch of those 2.
    let tokens: Vec<u32> = (0..40).collect();
    let b = eval_batches(&tokens, 16, 4, 10);
    assert_eq!((b.len(), b[0].batch_size), (1, 2));
    assert_eq!(starts_of(&b), vec![0, 40 - 16 - 1]);
    // One disjoint window: one batch of one.
    let tokens: Vec<u32> = (0..19).collect();
    let b = eval_batches(&tokens, 16, 4, 10);
    assert_eq!((b.len(), b[0].batch_size), (1, 1));
    assert_eq!(eval_batches(&tokens[..17], 16, 4, 10).len(), 1);
    assert!(eval_batches(&tokens[..16], 16, 4, 10).is_empty());
}

#[test]
fn unlimited_eval_batches_are_not_a_stride_1_sweep() {
    // The regression: with no batch limit every offset became a window
    // (984 windows here, each target scored ~16 times).
    let tokens: Vec<u32> = (0..1000).collect();
    let b = eval_batches(&tokens, 16, 4, usize::MAX);
    let starts = starts_of(&b);
    assert_eq!(starts.len(), 60, "{starts:?}"); // 62 disjoint, whole batches
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 16, "windows overlap: {starts:?}");
    }
}

/// How many times each position of a ramp is scored as a target.
fn coverage(split: &WholeSplit<'_>, n: usize, seq_len: usize, batch_size: usize) -> Vec<usize> {
    let mut seen = vec![0usize; n];
    let mut n_batches = 0;
    for eb in split.batches() {
        n_batches += 1;
        assert!(eb.batch.batch_size <= batch_size && eb.scored <= seq_len);
        for row in eb.batch.targets.chunks(seq_len) {
            for &t in &row[seq_len - eb.scored..] {
                seen[t as usize] += 1;
            }
        }
    }
    assert_eq!(n_batches, split.n_batches());
    seen
}

#[test]
fn whole_split_scores_every_target_exactly_once() {
    for (n, seq, bs) in [
        (1000, 16, 4),
        (993, 16, 4),
        (17, 16, 4),
        (33, 16, 1),
        (100, 7, 3),
    ] {
        let tokens: Vec<u32> = (0..n as u32).collect();
        let split = WholeSplit::new(&tokens, seq, bs);
        let seen = coverage(&split, n, seq, bs);
        assert_eq!(
            seen[0], 0,
            "n={n} seq={seq}: the first token is never a target"
        );
        assert!(
            seen[1..].iter().all(|&c| c == 1),
            "n={n} seq={seq} bs={bs}: {seen:?}"
        );
        assert_eq!(split.scored_tokens(), n - 1);
    }
    // 1000 tokens, seq 16: 62 tiled windows (992 targets) + one
    // end-aligned window scoring the last 7.
    let tokens: Vec<u32> = (0..1000).collect();
    let split = WholeSplit::new(&tokens, 16, 4);
    assert_eq!((split.full_windows(), split.tail_tokens()), (62, 7));
    assert_eq!((split.windows(), split.n_batches()), (63, 16 + 1));
    // Exact fit: no end-aligned window.
    let split = WholeSplit::new(&tokens[..16 * 8 + 1], 16, 4);
    assert_eq!((split.tail_tokens(), split.n_batches()), (0, 2));
    // Too short for one window.
    let split = WholeSplit::new(&tokens[..16], 16, 4);
    assert!(coverage(&split, 16, 16, 4).iter().all(|&c| c == 0));
    assert_eq!((split.scored_tokens(), split.n_batches()), (0, 0));
}

#[test]
fn whole_split_end_window_reads_full_context() {
    let tokens: Vec<u32> = (0..40).collect();
    let split = WholeSplit::new(&tokens, 16, 4);
    let last = split.batches().last().unwrap();
    // Targets 33..39 are left after windows at 0 and 16; the final
    // window starts at 40 - 17 = 23 and scores its last 7 targets.
    assert_eq!(last.scored, 7);
    assert_eq!(last.batch.inputs[0], 23);
    assert_eq!(*last.batch.targets.last().unwrap(), 39);
    assert_eq!(last.scored_tokens(), 7);
}
