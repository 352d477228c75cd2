//! How the trainable parameters are laid out for data-parallel collectives:
//! one flat f32 buffer (parameters in table order) cut into buckets, each
//! bucket padded to a multiple of the world size and split into equal
//! blocks, block `r` owned by rank `r` (FSDP's flat-parameter sharding, per
//! bucket). Equal blocks are what MPI's reduce-scatter-block needs; padding
//! never reaches a checkpoint (a rank's [`Segment`]s cover real elements only).
//! ZeRO-3's per-block gather groups the parameters by block: each block's
//! parameters are one bucket (one all-gather), the rest is cut by size.

use std::ops::Range;

use super::World;

/// One parameter's place in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    pub len: usize,
}

/// A contiguous flat range reduced by one collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: usize,
    pub end: usize,
    /// Elements per rank (the padded bucket is `block * world size`).
    pub block: usize,
    /// Where this bucket's block starts in a rank's shard buffer.
    pub shard_offset: usize,
    /// The group (decoder block) whose parameters the bucket holds, whole;
    /// None for a bucket cut by size.
    pub group: Option<usize>,
}

/// The part of one parameter a rank owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    /// First owned element within the parameter (flattened).
    pub param_offset: usize,
    pub len: usize,
    /// Its index in the flat buffer.
    pub flat: usize,
    /// Its index in the rank's shard buffer.
    pub local: usize,
}

impl Segment {
    /// The key of this segment's optimizer state and checkpoint tensors.
    pub fn key(&self) -> String {
        segment_key(&self.name, self.param_offset)
    }
}

/// `NAME@OFFSET`: a parameter segment's key (`@` never occurs in names).
pub fn segment_key(name: &str, offset: usize) -> String {
    format!("{name}@{offset}")
}

/// The parameter name and offset of a [`segment_key`].
pub fn parse_segment_key(key: &str) -> Option<(&str, usize)> {
    let (name, off) = key.rsplit_once('@')?;
    Some((name, off.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    pub world: World,
    pub slots: Vec<Slot>,
    pub buckets: Vec<Bucket>,
    /// Real elements (the sum of the slots' lengths).
    pub total: usize,
}

impl FlatLayout {
    /// `params`: (name, shape) in the order gradients are flattened.
    pub fn new(params: &[(String, Vec<usize>)], world: World, bucket_elements: usize) -> Self {
        Self::grouped(params, world, bucket_elements, &[])
    }

    /// As [`FlatLayout::new`], with `groups[i]` the group of parameter `i`
    /// (None, or missing: ungrouped). Each run of consecutive parameters of
    /// one group becomes one bucket whatever its size; runs of ungrouped
    /// parameters are cut into buckets of `bucket_elements`.
    pub fn grouped(
        params: &[(String, Vec<usize>)],
        world: World,
        bucket_elements: usize,
        groups: &[Option<usize>],
    ) -> Self {
        let mut slots = Vec::with_capacity(params.len());
        let mut offset = 0;
        for (name, shape) in params {
            let len = shape.iter().product();
            slots.push(Slot {
                name: name.clone(),
                shape: shape.clone(),
                offset,
                len,
            });
            offset += len;
        }
        let group_of = |i: usize| groups.get(i).copied().flatten();
        let mut buckets = Vec::new();
        let (mut i, mut shard_offset) = (0, 0);
        while i < slots.len() {
            let group = group_of(i);
            let mut j = i + 1;
            while j < slots.len() && group_of(j) == group {
                j += 1;
            }
            let (run_start, run_end) = (slots[i].offset, slots[j - 1].offset + slots[j - 1].len);
            let per = match group {
                Some(_) => (run_end - run_start).max(1),
                None => bucket_elements.max(1),
            };
            let mut start = run_start;
            while start < run_end {
                let end = (start + per).min(run_end);
                let block = (end - start).div_ceil(world.size);
                buckets.push(Bucket {
                    start,
                    end,
                    block,
                    shard_offset,
                    group,
                });
                shard_offset += block;
                start = end;
            }
            i = j;
        }
        FlatLayout {
            world,
            slots,
            buckets,
            total: offset,
        }
    }

    /// Length of a rank's shard buffer (padding included).
    pub fn shard_len(&self) -> usize {
        self.buckets.iter().map(|b| b.block).sum()
    }

    /// The flat range of `bucket` that `rank` owns (empty in the padding).
    pub fn owned(&self, bucket: &Bucket, rank: usize) -> Range<usize> {
        let start = (bucket.start + rank * bucket.block).min(bucket.end);
        let end = (bucket.start + (rank + 1) * bucket.block).min(bucket.end);
        start..end
    }

    /// The parameter segments `rank` owns, in flat order.
    pub fn segments(&self, rank: usize) -> Vec<Segment> {
        let mut out = Vec::new();
        for b in &self.buckets {
            let own = self.owned(b, rank);
            let local0 = b.shard_offset + (own.start - (b.start + rank * b.block).min(b.end));
            for s in &self.slots {
                let lo = own.start.max(s.offset);
                let hi = own.end.min(s.offset + s.len);
                if lo < hi {
                    out.push(Segment {
                        name: s.name.clone(),
                        param_offset: lo - s.offset,
                        len: hi - lo,
                        flat: lo,
                        local: local0 + (lo - own.start),
                    });
                }
            }
        }
        out
    }

    /// The padded buffer a bucket's collective takes: `flat[start..end]`
    /// then zeros up to `block * world size`.
    pub fn padded_bucket(&self, flat: &[f32], b: &Bucket) -> Vec<f32> {
        let mut buf = vec![0.0f32; b.block * self.world.size];
        buf[..b.end - b.start].copy_from_slice(&flat[b.start..b.end]);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sizes: &[usize], n: usize, bucket: usize) -> FlatLayout {
        let params: Vec<(String, Vec<usize>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| (format!("p{i}"), vec![s]))
            .collect();
        FlatLayout::new(&params, World { rank: 0, size: n }, bucket)
    }

    #[test]
    fn segments_of_all_ranks_tile_every_parameter_once() {
        for (sizes, n, bucket) in [
            (vec![10, 3, 7], 3, 8),
            (vec![5], 4, 100),
            (vec![1, 1, 1], 2, 2),
            (vec![64, 33], 1, 16),
            (vec![7, 9], 3, 1),
        ] {
            let l = layout(&sizes, n, bucket);
            let mut covered: Vec<Vec<u32>> = sizes.iter().map(|&s| vec![0; s]).collect();
            let mut locals = Vec::new();
            for r in 0..n {
                let mut used = vec![false; l.shard_len()];
                for seg in l.segments(r) {
                    let i: usize = seg.name[1..].parse().expect("index");
                    assert_eq!(seg.flat, l.slots[i].offset + seg.param_offset);
                    for k in 0..seg.len {
                        covered[i][seg.param_offset + k] += 1;
                        assert!(!used[seg.local + k], "local index reused");
                        used[seg.local + k] = true;
                    }
                    locals.push(seg.local);
                }
            }
            for c in covered {
                assert!(c.iter().all(|&v| v == 1), "{sizes:?} n {n}: {c:?}");
            }
        }
    }

    /// A group is one bucket however large; ungrouped runs are cut by size
    /// from their own start; segments still tile every parameter once.
    #[test]
    fn groups_are_one_bucket_each() {
        let params: Vec<(String, Vec<usize>)> = [5, 10, 3, 7, 4]
            .iter()
            .enumerate()
            .map(|(i, &s)| (format!("p{i}"), vec![s]))
            .collect();
        let groups = [None, Some(0), Some(0), Some(1), None];
        let l = FlatLayout::grouped(&params, World { rank: 0, size: 3 }, 4, &groups);
        let spans: Vec<(usize, usize, Option<usize>)> = l
            .buckets
            .iter()
            .map(|b| (b.start, b.end, b.group))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 4, None),
                (4, 5, None),
                (5, 18, Some(0)),
                (18, 25, Some(1)),
                (25, 29, None)
            ]
        );
        assert_eq!(l.buckets[2].block, 5);
        assert_eq!(l.shard_len(), 2 + 1 + 5 + 3 + 2);
        let mut covered = vec![0u32; 29];
        for r in 0..3 {
            for seg in l.segments(r) {
                for k in 0..seg.len {
                    covered[seg.flat + k] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "{covered:?}");
        let plain = FlatLayout::new(&params, World { rank: 0, size: 3 }, 4);
        assert!(plain.buckets.iter().all(|b| b.group.is_none()));
        assert_eq!(plain.buckets.len(), 8);
    }

    #[test]
    fn blocks_are_equal_and_padding_sits_at_bucket_ends() {
        let l = layout(&[10], 3, 100);
        assert_eq!(l.buckets.len(), 1);
        assert_eq!(l.buckets[0].block, 4);
        assert_eq!(l.owned(&l.buckets[0], 2), 8..10);
        assert_eq!(l.shard_len(), 4);
        let padded = l.padded_bucket(&[1.0; 10], &l.buckets[0]);
        assert_eq!(padded.len(), 12);
        assert_eq!(&padded[10..], &[0.0, 0.0]);
        assert_eq!(parse_segment_key("a.b@12"), Some(("a.b", 12)));
    }
}
