//! The distillation objective: the student's next-token loss mixed with a
//! divergence from a teacher's distribution on the same batch. The teacher
//! runs forward only, on the inner (non-autodiff) backend: no graph, no
//! gradient, no optimizer state. Or its distributions come from an offline
//! cache (`[distill] cache`), read by each row's window. With `lmbda > 0`
//! a share of batches is on-policy (GKD): the student continues each row's
//! prompt by sampling, and learns the teacher's distribution on what it
//! wrote.

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::Batch;
use kiln_models::{Decoder, LanguageModel, TrainBackend};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::distill_cache::{CacheReader, CacheTargets, SparseTargets};
use crate::distill_loss::{distill_loss, DistillLoss};
use crate::loss::{masked_mean_over, token_nll};
use crate::objective::{batch_tensors, scored_targets, Objective};

/// Where the teacher's distribution comes from.
pub struct CachedTeacher {
    pub reader: Arc<CacheReader>,
    pub targets: CacheTargets,
}

pub struct Distill<B: TrainBackend> {
    /// The teacher model; `None` when every batch is served by the cache.
    pub teacher: Option<Decoder<B::InnerBackend>>,
    pub cache: Option<CachedTeacher>,
    pub loss: DistillLoss,
    pub temperature: f64,
    /// Weight of the divergence; the next-token loss gets `1 - alpha`.
    pub alpha: f64,
    pub fused: bool,
    /// Share of on-policy batches (GKD's lambda).
    pub lmbda: f64,
    /// Tokens the student writes per on-policy row (the rest is prompt).
    pub new_tokens: usize,
    /// Seed of the on-policy choice and sampling.
    pub seed: u64,
}

/// splitmix64 finaliser.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stream seeded by the run's seed and the batch's tokens: the same batch
/// (a resumed run draws the same batches) makes the same choices.
fn batch_rng(seed: u64, batch: &Batch) -> ChaCha8Rng {
    let h = batch.inputs.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(mix(seed ^ mix(h)))
}

/// `keep` (1 = the position takes part) as a `[N]` tensor.
fn keep_tensor<B: Backend>(keep: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = keep.len();
    Tensor::from_data(TensorData::new(keep, [n]), device)
}

impl<B: TrainBackend> Distill<B> {
    /// Teacher logits `[N, V]` (f32, the student's vocabulary) for `x`.
    fn teacher_logits(&self, x: Tensor<B, 2, Int>, v: usize) -> Tensor<B, 2> {
        let teacher = match &self.teacher {
            Some(t) => t,
            None => {
                panic!("distill: no teacher for an online batch (config validation requires one)")
            }
        };
        let [b, t] = x.dims();
        let logits = teacher.forward(x.inner()); // [B, T, V'], no graph
                                                 // A half-precision teacher's logits are compared in f32.
        let logits = logits.narrow(2, 0, v).cast(burn::tensor::FloatDType::F32);
        Tensor::<B, 3>::from_inner(logits).reshape([b * t, v])
    }

    /// The cache's sparse targets of every position of the batch.
    fn cached_targets(&self, cache: &CachedTeacher, batch: &Batch) -> SparseTargets {
        let m = &cache.reader.manifest;
        let k = match cache.targets {
            CacheTargets::Sampled => m.layout.samples,
            CacheTargets::TopK => m.layout.top_k,
        };
        let mut out = SparseTargets::with_capacity(k, batch.batch_size * batch.seq_len);
        for o in &batch.origins {
            if cache
                .reader
                .window(o.domain, o.start, cache.targets, &mut out)
                .is_none()
            {
                panic!(
                    "distill.cache: window at token {} of domain {} is not cached (the data was checked at start-up)",
                    o.start, o.domain
                );
            }
        }
        out
    }

    /// On-policy: each row keeps its first `seq_len - new_tokens` tokens and
    /// the student samples the rest; only the written positions (and the
    /// one before them) are scored, by the divergence alone (as GKD).
    fn on_policy_loss(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (b, s) = (batch.batch_size, batch.seq_len);
        let new = if self.new_tokens == 0 {
            s / 2
        } else {
            self.new_tokens
        }
        .clamp(1, s.saturating_sub(1).max(1));
        let prompt = s - new;
        let student = model.valid();
        let rows =
            sample_continuations(&student, batch, prompt, new, self.temperature, rng, device);
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(rows, [b, s]), device);
        let logits = model.forward(x.clone()); // [B, T, V]
        let v = logits.dims()[2];
        let teacher = self.teacher_logits(x, v);
        let keep: Vec<f32> = (0..b * s)
            .map(|i| if i % s + 1 >= prompt { 1.0 } else { 0.0 })
            .collect();
        let scored = keep.iter().filter(|&&k| k > 0.0).count();
        distill_loss(
            logits.reshape([b * s, v]),
            teacher,
            keep_tensor(keep, device),
            scored,
            self.loss,
            self.temperature,
            self.fused,
        )
    }
}

/// The rows of `batch` with positions `prompt..prompt + new` sampled from
/// `model` (KV cache: the prompts once, then one token per step).
fn sample_continuations<M: LanguageModel<Bk>, Bk: kiln_models::FusedOps>(
    model: &M,
    batch: &Batch,
    prompt: usize,
    new: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
    device: &Bk::Device,
) -> Vec<i64> {
    let (b, s) = (batch.batch_size, batch.seq_len);
    let mut rows: Vec<Vec<i64>> = batch
        .inputs
        .chunks(s)
        .map(|r| r[..prompt].iter().map(|&t| t as i64).collect())
        .collect();
    let mut cache = model.new_cache();
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    let mut logits = model.forward_cached(
        Tensor::from_data(TensorData::new(flat, [b, prompt]), device),
        &mut cache,
    );
    for step in 0..new {
        let [_, t, v] = logits.dims();
        let last: Vec<f32> = logits
            .clone()
            .slice([0..b, t - 1..t, 0..v])
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        let next: Vec<i64> = last
            .chunks(v.max(1))
            .map(|row| sample(row, temperature, rng) as i64)
            .collect();
        for (r, &n) in rows.iter_mut().zip(&next) {
            r.push(n);
        }
        if step + 1 < new {
            logits = model.forward_cached(
                Tensor::from_data(TensorData::new(next, [b, 1]), device),
                &mut cache,
            );
        }
    }
    rows.concat()
}

/// One id from `softmax(logits / temperature)` by inverse CDF.
fn sample(logits: &[f32], temperature: f64, rng: &mut ChaCha8Rng) -> usize {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z)) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&z| ((z as f64 - max) / temperature).exp())
        .collect();
    let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
    for (i, &x) in w.iter().enumerate() {
        u -= x;
        if u <= 0.0 {
            return i;
        }
    }
    w.len().saturating_sub(1)
}

/// Forward KL from sparse teacher targets: per position `T^2 sum_j w_j
/// (log q_j - log p_S(id_j))` over the `k` targets (`log p_S` at
/// temperature `T`), the mean over the `keep` positions. With the top-k
/// targets at k = V this is the dense forward KL; with the sampled ones an
/// unbiased estimate of it and of its gradient.
pub fn sparse_forward_kl<B: Backend>(
    student: Tensor<B, 2>,
    targets: &SparseTargets,
    keep: Tensor<B, 1>,
    scored: usize,
    temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = student.dims();
    let k = targets.k;
    let dev = student.device();
    let ls = log_softmax(student.mul_scalar(1.0 / temperature), 1); // [N, V]
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(targets.ids.clone(), [n, k]), &dev);
    let w = Tensor::<B, 2>::from_data(TensorData::new(targets.weights.clone(), [n, k]), &dev);
    let lt = Tensor::<B, 2>::from_data(TensorData::new(targets.teacher_logp.clone(), [n, k]), &dev);
    let per = (w * (lt - ls.gather(1, ids))).sum_dim(1).reshape([n]); // [N]
    (per.mul_scalar(temperature * temperature) * keep)
        .sum()
        .div_scalar(scored.max(1) as f64)
}

impl<B: TrainBackend> Objective<B> for Distill<B> {
    fn loss_over(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        device: &B::Device,
        divisor: f64,
    ) -> Tensor<B, 1> {
        if self.lmbda > 0.0 {
            let mut rng = batch_rng(self.seed, batch);
            if rng.random::<f64>() < self.lmbda {
                // A mean over the generated positions, whatever `divisor`.
                return self.on_policy_loss(model, batch, &mut rng, device);
            }
        }
        let (x, y) = batch_tensors::<B>(batch, device); // [B, T], [B, T]
        let [b, t] = x.dims();
        let logits = model.forward(x.clone()); // [B, T, V]
        let v = logits.dims()[2];
        let scored = scored_targets(batch);
        let keep: Vec<f32> = batch
            .targets
            .iter()
            .map(|&t| {
                if t == kiln_data::instruct::IGNORE {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let keep = keep_tensor(keep, device);
        let flat = logits.clone().reshape([b * t, v]);
        let kd = match &self.cache {
            Some(cache) => {
                let targets = self.cached_targets(cache, batch);
                sparse_forward_kl(flat, &targets, keep, scored, self.temperature)
            }
            None => {
                let teacher = self.teacher_logits(x, v);
                distill_loss(
                    flat,
                    teacher,
                    keep,
                    scored,
                    self.loss,
                    self.temperature,
                    self.fused,
                )
            }
        };
        // The divergence is a mean over this batch's `scored` rows: rescaled
        // to a mean over `divisor` (a rank's share of the global count).
        let kd = kd.mul_scalar(scored.max(1) as f64 / divisor.max(1e-30));
        if self.alpha >= 1.0 {
            return kd;
        }
        let ce = masked_mean_over(token_nll(logits, y, self.fused), divisor);
        kd.mul_scalar(self.alpha) + ce.mul_scalar(1.0 - self.alpha)
    }
}
