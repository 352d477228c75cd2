//! Attaching LoRA adapters to a built model's projections, and folding them
//! back in. Every projection is a `Linear`; [`Decoder::linears_mut`] lists
//! them with their module paths so adapters can be chosen by checkpoint name.

use burn::tensor::backend::Backend;

use crate::decoder::{Block, Decoder};
use crate::layers::{Linear, LoraSpec, SwiGluMlp};
use crate::{LanguageModel, ModelError};

/// Checkpoint names of adapter tensors end with these.
pub const ADAPTER_SUFFIXES: [&str; 2] = [".lora.a", ".lora.b"];

/// True for an adapter tensor's checkpoint name.
pub fn is_adapter_name(name: &str) -> bool {
    ADAPTER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// One projection of a model: its module path (`layers.0.self_attn.q_proj`)
/// and its checkpoint name without the tensor suffix
/// (`model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionName {
    pub path: String,
    pub name: String,
    /// Input width (the length quantisation groups run along).
    pub d_in: usize,
}

fn mlp_linears<'a, B: Backend>(
    prefix: &str,
    mlp: &'a mut SwiGluMlp<B>,
    out: &mut Vec<(String, &'a mut Linear<B>)>,
) {
    out.push((format!("{prefix}.gate_proj"), &mut mlp.gate_proj));
    out.push((format!("{prefix}.up_proj"), &mut mlp.up_proj));
    out.push((format!("{prefix}.down_proj"), &mut mlp.down_proj));
}

fn block_linears<'a, B: Backend>(
    prefix: &str,
    block: &'a mut Block<B>,
    out: &mut Vec<(String, &'a mut Linear<B>)>,
) {
    match block {
        Block::Attention(b) => {
            let a = &mut b.self_attn;
            out.push((format!("{prefix}.self_attn.q_proj"), &mut a.q_proj));
            out.push((format!("{prefix}.self_attn.k_proj"), &mut a.k_proj));
            out.push((format!("{prefix}.self_attn.v_proj"), &mut a.v_proj));
            out.push((format!("{prefix}.self_attn.o_proj"), &mut a.o_proj));
            if let Some(mlp) = b.mlp.as_mut() {
                mlp_linears(&format!("{prefix}.mlp"), mlp, out);
            }
        }
        Block::Mamba(b) => {
            let m = &mut b.mixer;
            out.push((format!("{prefix}.mixer.in_proj"), &mut m.in_proj));
            out.push((format!("{prefix}.mixer.x_proj"), &mut m.x_proj));
            out.push((format!("{prefix}.mixer.dt_proj"), &mut m.dt_proj));
            out.push((format!("{prefix}.mixer.out_proj"), &mut m.out_proj));
        }
        Block::Rwkv(b) => {
            let t = &mut b.att;
            for (n, l) in [
                ("receptance", &mut t.receptance),
                ("key", &mut t.key),
                ("value", &mut t.value),
                ("output", &mut t.output),
                ("w1", &mut t.w1),
                ("w2", &mut t.w2),
                ("a1", &mut t.a1),
                ("a2", &mut t.a2),
                ("g1", &mut t.g1),
                ("g2", &mut t.g2),
            ] {
                out.push((format!("{prefix}.att.{n}"), l));
            }
            for (n, l) in [("v1", t.v1.as_mut()), ("v2", t.v2.as_mut())] {
                if let Some(l) = l {
                    out.push((format!("{prefix}.att.{n}"), l));
                }
            }
            out.push((format!("{prefix}.ffn.key"), &mut b.ffn.key));
            out.push((format!("{prefix}.ffn.value"), &mut b.ffn.value));
        }
    }
}

impl<B: Backend> Decoder<B> {
    /// Every stored projection with its module path. The tied head is not
    /// one (it is a view of the embedding table).
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        let mut out = Vec::new();
        for (i, block) in self.layers.iter_mut().enumerate() {
            block_linears(&format!("layers.{i}"), block, &mut out);
        }
        if let Some(mlp) = self.shared_mlp.as_mut() {
            mlp_linears("shared_mlp", mlp, &mut out);
        }
        if let Some(head) = self.lm_head.as_mut() {
            out.push(("lm_head".to_string(), head));
        }
        out
    }
}

impl<B: crate::FusedOps> Decoder<B> {
    /// True when any projection carries an adapter.
    pub fn has_adapters(&self) -> bool {
        crate::param_infos::<B, Self>(self)
            .iter()
            .any(|p| is_adapter_name(&p.name))
    }

    /// Module path and checkpoint name of every stored projection.
    pub fn projection_names(&mut self) -> Vec<ProjectionName> {
        let paths: Vec<(String, usize)> = self
            .linears_mut()
            .into_iter()
            .map(|(p, l)| (p, l.d_in()))
            .collect();
        paths
            .into_iter()
            .map(|(path, d_in)| {
                let full = self.tensor_name(&format!("{path}.weight"));
                let name = full.strip_suffix(".weight").unwrap_or(&full).to_string();
                ProjectionName { path, name, d_in }
            })
            .collect()
    }

    /// Fresh adapters (`spec`) on the projections `select` picks (by
    /// [`ProjectionName`]); returns the model and the names adapted. `A` draws
    /// from the backend's seeded RNG in module order.
    pub fn with_lora(
        mut self,
        spec: &LoraSpec,
        select: &dyn Fn(&ProjectionName) -> bool,
    ) -> Result<(Self, Vec<String>), ModelError> {
        spec.check("adapter")?;
        let names = self.projection_names();
        let mut adapted = Vec::new();
        for ((_, linear), pn) in self.linears_mut().into_iter().zip(&names) {
            if select(pn) {
                let taken = std::mem::replace(linear, placeholder(linear));
                *linear = taken.with_lora(spec);
                adapted.push(pn.name.clone());
            }
        }
        Ok((self, adapted))
    }

    /// Every adapter folded into its base weight in f32 and removed
    /// (`W + s A B`): an ordinary model whose outputs equal the adapted one's.
    pub fn merge_adapters(mut self) -> Self {
        for (_, linear) in self.linears_mut() {
            if linear.lora.is_some() {
                let taken = std::mem::replace(linear, placeholder(linear));
                *linear = taken.merged();
            }
        }
        self
    }
}

/// A cheap stand-in while a projection is moved out and rebuilt (shares the
/// weight's storage; never used).
fn placeholder<B: Backend>(l: &Linear<B>) -> Linear<B> {
    Linear {
        weight: l.weight.clone(),
        bias: None,
        fused: l.fused,
        transposed: l.transposed,
        lora: None,
        quant: None,
        calib: None,
    }
}

impl<B: crate::FusedOps> Decoder<B> {
    /// Fake quantisation (`Some`) or none on the projections `select` picks;
    /// returns how many it set.
    pub fn set_quant(
        &mut self,
        spec: Option<crate::quant::QuantSpec>,
        select: &dyn Fn(&ProjectionName) -> bool,
    ) -> usize {
        let names = self.projection_names();
        let mut n = 0;
        for ((_, linear), pn) in self.linears_mut().into_iter().zip(&names) {
            if select(pn) {
                linear.quant = spec;
                n += 1;
            }
        }
        n
    }
}
