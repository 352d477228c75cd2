//! Parameters by name: the bridge between burn modules (addressed by
//! `ParamId`) and everything that must be stable across runs and tools
//! (checkpoints, optimizer state, export).

use std::collections::BTreeMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::ops::FusedOps;
use crate::{LanguageModel, ModelError};

/// A host copy of one tensor, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One parameter's identity: its checkpoint name, burn id and shape.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub id: ParamId,
    pub shape: Vec<usize>,
}

/// Tracks the module path during a visit (`layers.3.self_attn.q_proj.weight`).
/// Enum modules (the block kinds of a stack) add their variant name as a
/// level of their own; it is left out, so names do not depend on the enum.
#[derive(Default)]
struct PathStack(Vec<Option<String>>);

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        let is_variant = container.starts_with("Enum:");
        self.0.push((!is_variant).then(|| name.to_string()));
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self) -> String {
        self.0
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Receives a parameter's checkpoint name and host copy.
type TensorSink<'a> = &'a mut dyn FnMut(&str, NamedTensor);

struct InfoVisitor<'a, F: Fn(&str) -> String> {
    path: PathStack,
    rename: F,
    out: Vec<ParamInfo>,
    /// Receives each parameter's host copy as it is visited.
    data: Option<TensorSink<'a>>,
}

impl<B: Backend, F: Fn(&str) -> String> ModuleVisitor<B> for InfoVisitor<'_, F> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = (self.rename)(&self.path.path());
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        if let Some(sink) = self.data.as_mut() {
            let values = tensor
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            sink(
                &name,
                NamedTensor {
                    shape: shape.clone(),
                    data: values,
                },
            );
        }
        self.out.push(ParamInfo {
            name,
            id: param.id,
            shape,
        });
    }
}

/// Every float parameter of `model`, in module order, with its checkpoint name.
pub fn param_infos<B: FusedOps, M: LanguageModel<B>>(model: &M) -> Vec<ParamInfo> {
    let mut v = InfoVisitor {
        path: PathStack::default(),
        rename: |p: &str| model.tensor_name(p),
        out: Vec::new(),
        data: None,
    };
    model.visit(&mut v);
    v.out
}

/// Host copies of every parameter, keyed by checkpoint name.
pub fn named_tensors<B: FusedOps, M: LanguageModel<B>>(model: &M) -> BTreeMap<String, NamedTensor> {
    let mut out = BTreeMap::new();
    for_each_tensor(model, &mut |name, t| {
        out.insert(name.to_string(), t);
    });
    out
}

/// Each parameter's host copy with its checkpoint name, in module order,
/// handed to `f` one at a time: callers that must not hold a host copy of
/// the whole model (ZeRO's shard fill) keep at most one tensor.
pub fn for_each_tensor<B: FusedOps, M: LanguageModel<B>>(
    model: &M,
    f: &mut dyn FnMut(&str, NamedTensor),
) {
    let mut v = InfoVisitor {
        path: PathStack::default(),
        rename: |p: &str| model.tensor_name(p),
        out: Vec::new(),
        data: Some(f),
    };
    model.visit(&mut v);
}

struct Loader<'a, F: Fn(&str) -> String> {
    path: PathStack,
    rename: F,
    /// Parameters (by checkpoint name) to replace; the others keep their values.
    select: &'a dyn Fn(&str) -> bool,
    tensors: &'a BTreeMap<String, NamedTensor>,
    used: Vec<String>,
    error: Option<ModelError>,
    source: &'a str,
}

impl<B: Backend, F: Fn(&str) -> String> ModuleMapper<B> for Loader<'_, F> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = (self.rename)(&self.path.path());
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() || !(self.select)(&name) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let expected = tensor.dims().to_vec();
        let Some(found) = self.tensors.get(&name) else {
            self.error = Some(ModelError::MissingTensor {
                name,
                source_desc: self.source.to_string(),
                hint: "the weights were saved from a different [model] config".into(),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if found.shape != expected || found.data.len() != expected.iter().product::<usize>() {
            self.error = Some(ModelError::ShapeMismatch {
                name,
                source_desc: self.source.to_string(),
                expected,
                found: found.shape.clone(),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let grad = tensor.is_require_grad();
        let mut loaded = Tensor::<B, D>::from_data(
            TensorData::new(found.data.clone(), found.shape.clone()),
            &tensor.device(),
        );
        if grad {
            loaded = loaded.require_grad();
        }
        self.used.push(name);
        Param::from_mapped_value(id, loaded, mapper)
    }
}

/// Replaces every parameter of `model` with the tensor of the same checkpoint
/// name. Missing, extra or mis-shaped tensors are errors naming `source`.
pub fn load_named_tensors<B: FusedOps, M: LanguageModel<B>>(
    model: M,
    tensors: &BTreeMap<String, NamedTensor>,
    source: &str,
) -> Result<M, ModelError> {
    load_named_tensors_where(model, tensors, source, &|_| true)
}

/// Replaces the parameters whose checkpoint name satisfies `select` (e.g.
/// only the adapters, or one shard's names) and leaves the others as they
/// are. A selected parameter missing from `tensors`, a mis-shaped one, or a
/// tensor of `tensors` that no selected parameter takes is an error.
pub fn load_named_tensors_where<B: FusedOps, M: LanguageModel<B>>(
    model: M,
    tensors: &BTreeMap<String, NamedTensor>,
    source: &str,
    select: &dyn Fn(&str) -> bool,
) -> Result<M, ModelError> {
    // Module path -> checkpoint name, taken before `map` consumes the model.
    let mut paths = InfoVisitor {
        path: PathStack::default(),
        rename: |p: &str| p.to_string(),
        out: Vec::new(),
        data: None,
    };
    model.visit(&mut paths);
    let names: std::collections::HashMap<String, String> = paths
        .out
        .into_iter()
        .map(|p| {
            let name = model.tensor_name(&p.name);
            (p.name, name)
        })
        .collect();
    let mut loader = Loader {
        path: PathStack::default(),
        rename: |p: &str| names.get(p).cloned().unwrap_or_else(|| p.to_string()),
        select,
        tensors,
        used: Vec::new(),
        error: None,
        source,
    };
    let model = model.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    let extra: Vec<&str> = tensors
        .keys()
        .filter(|k| !loader.used.contains(k))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        return Err(ModelError::UnexpectedTensors {
            source_desc: source.to_string(),
            names: extra.join(", "),
        });
    }
    Ok(model)
}
