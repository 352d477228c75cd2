//! ZeRO-1/2's parameter all-gather after the update, written back into the
//! model bucket by bucket: a window slides over the gathered buckets in
//! the order the model mapper visits parameters, so the host holds one
//! bucket (or one parameter spanning several) instead of the whole flat
//! buffer.

use std::collections::{BTreeMap, HashSet};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use kiln_models::{Decoder, TrainBackend};

use super::zero::{internal, new_param, Sharding};
use super::Collective;
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;
use crate::optim::Optimizer;

impl Sharding {
    /// Every rank's new parameters, all-gathered bucket by bucket and
    /// written into the model as they arrive: the host holds one bucket
    /// (or one parameter, when it spans several) instead of the whole flat
    /// buffer. Buckets are gathered in flat order, which is the order the
    /// mapper visits parameters in, and every bucket is gathered once on
    /// every rank.
    pub(super) fn gather_params<AB: TrainBackend>(
        &self,
        model: Decoder<AB>,
        table: &ParamTable,
        master: &[f32],
        opt: &Optimizer<AB::InnerBackend>,
        with_grad: &HashSet<String>,
        c: &dyn Collective,
    ) -> Result<Decoder<AB>> {
        let offsets = self.slot_offsets(with_grad);
        let mut mapper = GatherParams::<AB> {
            table,
            offsets,
            opt,
            stream: BucketStream::new(self, master, c),
        };
        let model = model.map(&mut mapper);
        mapper.stream.finish()?;
        Ok(model)
    }
}

/// The all-gathered flat parameters, one bucket at a time, as a window
/// that slides forward over the flat buffer.
struct BucketStream<'a> {
    sharding: &'a Sharding,
    master: &'a [f32],
    c: &'a dyn Collective,
    /// The next bucket to gather.
    next: usize,
    /// Gathered values of `[start, start + window.len())`.
    window: Vec<f32>,
    start: usize,
    /// Values before this flat offset are no longer needed.
    pos: usize,
    error: Option<TrainerError>,
}

impl<'a> BucketStream<'a> {
    fn new(sharding: &'a Sharding, master: &'a [f32], c: &'a dyn Collective) -> Self {
        BucketStream {
            sharding,
            master,
            c,
            next: 0,
            window: Vec::new(),
            start: 0,
            pos: 0,
            error: None,
        }
    }

    /// Gathers the next bucket onto the end of the window, first dropping
    /// what lies before `pos` (one move per bucket, not per parameter).
    fn gather_next(&mut self) -> Result<()> {
        let used = self.pos.saturating_sub(self.start).min(self.window.len());
        self.window.drain(..used);
        self.start += used;
        let s = self.sharding;
        let b = s.layout.buckets[self.next];
        self.next += 1;
        s.comm.add(b.block * s.size() * 4);
        let mine = &self.master[b.shard_offset..b.shard_offset + b.block];
        let all = self.c.all_gather(mine)?; // [block * N]
        if b.start != self.start + self.window.len() {
            return Err(internal("ZeRO all-gather", "buckets out of flat order"));
        }
        self.window.extend_from_slice(&all[..b.end - b.start]);
        Ok(())
    }

    /// The values of `[offset, offset + len)`; earlier values are no
    /// longer needed. `None` after an error (kept for [`Self::finish`]).
    fn take(&mut self, offset: usize, len: usize) -> Option<Vec<f32>> {
        if self.error.is_some() {
            return None;
        }
        if offset < self.pos {
            self.error = Some(internal("ZeRO all-gather", "parameters out of flat order"));
            return None;
        }
        while self.start + self.window.len() < offset + len {
            if self.next == self.sharding.layout.buckets.len() {
                self.error = Some(internal(
                    "ZeRO all-gather",
                    "parameter past the last bucket",
                ));
                return None;
            }
            if let Err(e) = self.gather_next() {
                self.error = Some(e);
                return None;
            }
        }
        self.pos = offset + len;
        let at = offset - self.start;
        Some(self.window[at..at + len].to_vec())
    }

    /// Gathers the buckets no parameter asked for (every rank gathers
    /// every bucket) and reports the first error.
    fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        while self.next < self.sharding.layout.buckets.len() {
            self.pos = usize::MAX;
            self.gather_next()?;
        }
        Ok(())
    }
}

/// [`WriteParams`] reading the flat values from a [`BucketStream`].
struct GatherParams<'a, AB: AutodiffBackend> {
    table: &'a ParamTable,
    offsets: BTreeMap<&'a str, (usize, usize)>,
    opt: &'a Optimizer<AB::InnerBackend>,
    stream: BucketStream<'a>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for GatherParams<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let found = self.table.by_id.get(&id).and_then(|&i| {
            let info = &self.table.infos[i];
            let shape: [usize; D] = info.shape.clone().try_into().ok()?;
            self.offsets
                .get(info.name.as_str())
                .map(|o| (info.name.as_str(), *o, shape))
        });
        let Some((name, (offset, len), shape)) = found else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        match self.stream.take(offset, len) {
            Some(values) => {
                let t = new_param(values, shape, &tensor, self.opt, name);
                Param::from_mapped_value(id, t, mapper)
            }
            None => Param::from_mapped_value(id, tensor, mapper),
        }
    }
}
