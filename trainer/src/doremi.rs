//! DoReMi's proxy objective (Xie et al. 2023, arXiv 2305.10429; reference
//! implementation `sangmichaelxie/doremi`, `trainer.py`, `doremiv1`).
//!
//! Each optimizer step:
//! 1. per token, the excess loss `max(0, proxy nll - reference nll)`; per
//!    domain, its mean over the step's scored tokens of that domain (a
//!    domain absent from the step keeps its last score);
//! 2. `log w += eta * score`, `w = softmax`, `w = (1 - c) w + c / k`; the
//!    running average of `w` (the initial weights count as the first) is
//!    the output;
//! 3. the proxy's loss weighs each token's nll by its domain's weight:
//!    `sum(w[d] * nll) / sum(w[d])` over the micro-batch's scored tokens.
//!
//! The sampler keeps drawing from the run's own mixture (the reference
//! weights); only the loss is reweighted. The reference model runs forward
//! only, on the inner backend. The weights live in the trainer state, so a
//! resumed proxy continues them exactly.
//!
//! On N ranks each rank scores its share of the global batch: the step's
//! per-domain excess sums and counts are summed over ranks before the
//! update (every rank then holds the same weights), and each micro-batch's
//! loss is divided by the global sum of token weights over N (its share),
//! so the averaged gradient is the one-process one.

use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, TensorData};
use kiln_data::instruct::IGNORE;
use kiln_data::Batch;
use kiln_models::{Decoder, LanguageModel, TrainBackend};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};
use crate::loss::token_nll;
use crate::objective::{batch_tensors, Objective};
use crate::world::{all_sum_f64, Collective};

/// DoReMi's domain weights and what updates them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainWeights {
    pub domains: Vec<String>,
    /// The weights the loss uses now.
    #[serde(with = "exact_f64s")]
    pub current: Vec<f64>,
    /// Their running average: the mixture a later run takes.
    #[serde(with = "exact_f64s")]
    pub average: Vec<f64>,
    /// The last per-domain excess loss.
    #[serde(with = "exact_f64s")]
    pub scores: Vec<f64>,
    /// Weights averaged so far (the initial ones included).
    pub counter: u64,
}

impl DomainWeights {
    /// The reference's start: the run's mixture weights (normalised), the
    /// scores at `ln(vocab)` (a uniform model's loss).
    pub fn new(domains: Vec<String>, initial: &[f64], vocab_size: usize) -> DomainWeights {
        let total: f64 = initial.iter().sum();
        let current: Vec<f64> = initial.iter().map(|w| w / total).collect();
        DomainWeights {
            domains,
            average: current.clone(),
            scores: vec![(vocab_size as f64).ln(); current.len()],
            current,
            counter: 1,
        }
    }

    /// One exponentiated-gradient step from per-domain excess losses
    /// (`None`: the domain had no scored token this step).
    pub fn update(&mut self, excess: &[Option<f64>], eta: f64, smoothing: f64) {
        for (s, e) in self.scores.iter_mut().zip(excess) {
            if let Some(e) = e {
                *s = *e;
            }
        }
        let logits: Vec<f64> = self
            .current
            .iter()
            .zip(&self.scores)
            .map(|(w, s)| w.ln() + eta * s)
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let k = self.current.len() as f64;
        self.current = exp
            .iter()
            .map(|e| (1.0 - smoothing) * e / sum + smoothing / k)
            .collect();
        self.counter += 1;
        let n = self.counter as f64;
        for (a, w) in self.average.iter_mut().zip(&self.current) {
            *a = (*a * (n - 1.0) + w) / n;
        }
    }

    /// The averaged weights as the `[data.mixture]` a run takes.
    pub fn mixture_toml(&self, run: &str, step: u64) -> String {
        let mut out = format!(
            "# DoReMi domain weights: the average over {} weight vectors of the proxy run\n\
             # {run} (step {step}). Train with them: paste this table into a run's config.\n\
             [data.mixture]\n",
            self.counter
        );
        for (d, w) in self.domains.iter().zip(&self.average) {
            out.push_str(&format!("{} = {w}\n", toml_key(d)));
        }
        out
    }
}

/// A domain name as a TOML key (quoted unless bare-safe).
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Sum and count of the clipped excess loss per domain over one step's
/// micro-batches.
#[derive(Debug, Clone, Default)]
pub struct StepExcess {
    sums: Vec<f64>,
    counts: Vec<u64>,
}

impl StepExcess {
    pub fn new(domains: usize) -> StepExcess {
        StepExcess {
            sums: vec![0.0; domains],
            counts: vec![0; domains],
        }
    }

    /// Adds one micro-batch: per-token proxy and reference nll, `[B * T]`.
    pub fn add(&mut self, proxy: &[f32], reference: &[f32], batch: &Batch) {
        for (i, ((&p, &r), &t)) in proxy.iter().zip(reference).zip(&batch.targets).enumerate() {
            if t == IGNORE {
                continue;
            }
            let d = batch.origins.get(i / batch.seq_len).map_or(0, |o| o.domain);
            if d < self.sums.len() {
                // An f32 difference, as the reference takes it on f32 tensors.
                self.sums[d] += (p - r).max(0.0) as f64;
                self.counts[d] += 1;
            }
        }
    }

    /// Sums and counts over all ranks (counts travel as f64: exact).
    fn reduce(&mut self, c: &dyn Collective) -> Result<()> {
        let k = self.sums.len();
        let mut mine = self.sums.clone();
        mine.extend(self.counts.iter().map(|&n| n as f64));
        let all = all_sum_f64(c, &mine)?; // [2k]
        self.sums = all[..k].to_vec();
        self.counts = all[k..].iter().map(|&n| n.round() as u64).collect();
        Ok(())
    }

    /// The mean clipped excess per domain (`None`: no token of it).
    pub fn means(&self) -> Vec<Option<f64>> {
        self.sums
            .iter()
            .zip(&self.counts)
            .map(|(s, &c)| (c > 0).then(|| s / c as f64))
            .collect()
    }
}

/// Each token's weight in the proxy loss, `[B * T]`: its row's domain
/// weight, 0 where the target takes no loss.
pub fn token_weights(batch: &Batch, weights: &[f64]) -> Vec<f32> {
    batch
        .targets
        .iter()
        .enumerate()
        .map(|(i, &tgt)| {
            let d = batch.origins.get(i / batch.seq_len).map_or(0, |o| o.domain);
            match weights.get(d) {
                Some(&w) if tgt != IGNORE => w as f32,
                _ => 0.0,
            }
        })
        .collect()
}

struct Progress {
    weights: DomainWeights,
    pending: StepExcess,
    /// Micro-batches of the current step: seen and expected.
    seen: usize,
    expected: usize,
}

pub struct Doremi<B: TrainBackend> {
    pub reference: Decoder<B::InnerBackend>,
    pub eta: f64,
    pub smoothing: f64,
    pub fused: bool,
    progress: Mutex<Progress>,
    collective: Arc<dyn Collective>,
    /// A failed collective inside `loss_over` (which returns a tensor):
    /// the step reads it through [`Objective::failure`].
    failed: Mutex<Option<TrainerError>>,
}

impl<B: TrainBackend> Doremi<B> {
    pub fn new(
        reference: Decoder<B::InnerBackend>,
        weights: DomainWeights,
        eta: f64,
        smoothing: f64,
        fused: bool,
        collective: Arc<dyn Collective>,
    ) -> Self {
        let k = weights.current.len();
        Doremi {
            reference,
            eta,
            smoothing,
            fused,
            progress: Mutex::new(Progress {
                weights,
                pending: StepExcess::new(k),
                seen: 0,
                expected: 1,
            }),
            collective,
            failed: Mutex::new(None),
        }
    }

    /// `value`, or `fallback` with the error kept for the step to report.
    fn or_fail<T>(&self, value: Result<T>, fallback: T) -> T {
        value.unwrap_or_else(|e| {
            if let Ok(mut slot) = self.failed.lock() {
                slot.get_or_insert(e);
            }
            fallback
        })
    }

    pub fn weights(&self) -> DomainWeights {
        self.lock().weights.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // A panic elsewhere cannot leave the weights half-written: each
        // update assigns whole vectors.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: TrainBackend> Objective<B> for Doremi<B> {
    fn start_step(&self, micro_batches: usize) {
        let mut p = self.lock();
        p.seen = 0;
        p.expected = micro_batches.max(1);
    }

    /// Normalised by this rank's share of the global micro-batch's summed
    /// token weights (the domain weights replace `scored`'s counts).
    fn loss_over(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        device: &B::Device,
        _scored: f64,
    ) -> Tensor<B, 1> {
        let (x, y) = batch_tensors::<B>(batch, device); // [B, T], [B, T]
        let [b, t] = x.dims();
        let nll = token_nll(model.forward(x.clone()), y.clone(), self.fused); // [B, T]
        let reference = token_nll(self.reference.forward(x.inner()), y.inner(), self.fused); // [B, T]
        let proxy: Vec<f32> = nll.clone().inner().into_data().to_vec().unwrap_or_default();
        let reference: Vec<f32> = reference.into_data().to_vec().unwrap_or_default();
        let weights = {
            let mut p = self.lock();
            p.pending.add(&proxy, &reference, batch);
            p.seen += 1;
            // The weights change once per optimizer step, before the loss of
            // its last micro-batch (as the reference does).
            if p.seen == p.expected {
                let k = p.weights.current.len();
                let mut step = std::mem::replace(&mut p.pending, StepExcess::new(k));
                let reduced = step.reduce(self.collective.as_ref());
                self.or_fail(reduced, ());
                p.weights.update(&step.means(), self.eta, self.smoothing);
            }
            p.weights.current.clone()
        };
        let per_token = token_weights(batch, &weights);
        let local: f64 = per_token.iter().map(|&w| w as f64).sum();
        let size = self.collective.world().size as f64;
        let global = all_sum_f64(self.collective.as_ref(), &[local]).map(|v| v[0]);
        let normalizer = self.or_fail(global, local * size) / size;
        let w = Tensor::<B, 2>::from_data(TensorData::new(per_token, [b, t]), device); // [B, T]
        (nll * w)
            .sum()
            .div_scalar(normalizer.max(f64::MIN_POSITIVE)) // [1]
    }

    fn state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.lock().weights).ok()
    }

    fn restore(&self, state: Option<&serde_json::Value>) -> Result<()> {
        let Some(v) = state else {
            return Err(TrainerError::invalid(
                "doremi",
                "the checkpoint holds no DoReMi weights (it was not a DoReMi proxy run): \
                 resume with the config it was trained with",
            ));
        };
        let saved: DomainWeights = serde_json::from_value(v.clone()).map_err(|e| {
            TrainerError::invalid("doremi", format!("the checkpoint's DoReMi weights: {e}"))
        })?;
        let mut p = self.lock();
        if saved.domains != p.weights.domains {
            return Err(TrainerError::invalid(
                "doremi",
                format!(
                    "the checkpoint's domains {:?} differ from this run's {:?}: resume on the same data",
                    saved.domains, p.weights.domains
                ),
            ));
        }
        p.weights = saved;
        Ok(())
    }

    fn metrics(&self) -> Vec<(String, f64)> {
        let p = self.lock();
        let w = &p.weights;
        let mut out = Vec::new();
        for (i, d) in w.domains.iter().enumerate() {
            out.push((format!("doremi/weight/{d}"), w.current[i]));
            out.push((format!("doremi/average/{d}"), w.average[i]));
            out.push((format!("doremi/excess/{d}"), w.scores[i]));
        }
        out
    }

    fn run_files(&self, run: &str, step: u64) -> Vec<(&'static str, String)> {
        vec![(DOREMI_FILE, self.weights().mixture_toml(run, step))]
    }

    fn failure(&self) -> Option<TrainerError> {
        self.failed.lock().ok().and_then(|mut e| e.take())
    }
}

/// The averaged weights, written into the run directory at every checkpoint.
pub const DOREMI_FILE: &str = "doremi.toml";

/// f64s as their shortest round-trip decimal strings: exact through JSON
/// whichever float parser reads them back.
mod exact_f64s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| format!("{x:?}")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| s.parse::<f64>().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_survive_json_bitwise() {
        let mut w = DomainWeights::new(vec!["a".into(), "b c".into()], &[1.0, 3.0], 50);
        w.update(&[Some(0.3), None], 1.0, 1e-3);
        let back: DomainWeights =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
        assert!(w.mixture_toml("r", 1).contains("\"b c\" = "));
    }
}
