//! Walking a module's float parameters by path (`encoder.0.weight`), the key every kiln state file
//! uses: unlike `ParamId`, a path is the same in the process that saved and the one that loads.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// The current path, kept as a stack of names by `enter_module`/`exit_module`.
#[derive(Default)]
pub(crate) struct PathStack(Vec<String>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn joined(&self) -> String {
        self.0.join(".")
    }
}

/// Calls `f(path, param)` for every float parameter of a module.
pub(crate) struct VisitFloats<F> {
    pub(crate) path: PathStack,
    pub(crate) f: F,
}

impl<B: Backend, F: FnMut(&str, Tensor<B, 1>, &[usize])> ModuleVisitor<B> for VisitFloats<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let dims = value.dims();
        let n = dims.iter().product::<usize>();
        (self.f)(&self.path.joined(), value.reshape([n]), &dims);
    }
}

/// Replaces every float parameter by `f(path, flattened value)` (or leaves it when `f` gives
/// `None`), keeping the parameter's id and shape.
pub(crate) struct MapFloats<F> {
    pub(crate) path: PathStack,
    pub(crate) f: F,
}

impl<B: Backend, F: FnMut(&str, Tensor<B, 1>) -> Option<Tensor<B, 1>>> ModuleMapper<B> for MapFloats<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n = dims.iter().product::<usize>();
        let tensor = match (self.f)(&self.path.joined(), tensor.clone().reshape([n])) {
            Some(new) => new.reshape(dims),
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The path of every float parameter of `module`, in visiting order, with its shape.
pub fn param_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut visitor = VisitFloats {
        path: PathStack::default(),
        f: |path: &str, _: Tensor<B, 1>, dims: &[usize]| out.push((path.to_string(), dims.to_vec())),
    };
    module.visit(&mut visitor);
    out
}

/// Rebuilds `target` with each float parameter replaced by `f(target_value, source_value)`, where
/// `source` is a module of the same structure (both flattened to one dimension).
///
/// # Panics
/// If `source` lacks one of `target`'s parameters or its size differs: the two modules must come
/// from the same code, which is the caller's promise, not user data.
pub fn zip_map_params<B: Backend, M: Module<B>>(
    target: M,
    source: &M,
    mut f: impl FnMut(Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 1>,
) -> M {
    let mut values = HashMap::new();
    source.visit(&mut VisitFloats {
        path: PathStack::default(),
        f: |path: &str, value: Tensor<B, 1>, _: &[usize]| {
            values.insert(path.to_string(), value);
        },
    });
    target.map(&mut MapFloats {
        path: PathStack::default(),
        f: |path: &str, value: Tensor<B, 1>| {
            let other = values.remove(path).unwrap_or_else(|| panic!("zip_map_params: source has no parameter {path}"));
            assert_eq!(other.dims(), value.dims(), "zip_map_params: {path} differs in size");
            Some(f(value, other))
        },
    })
}

/// Calls `f(path, gradient)` with the flattened gradient of every float parameter that has one.
pub(crate) struct VisitGrads<'g, B: AutodiffBackend, F> {
    pub(crate) path: PathStack,
    pub(crate) grads: &'g B::Gradients,
    pub(crate) f: F,
}

impl<B: AutodiffBackend, F: FnMut(&str, Tensor<B::InnerBackend, 1>)> ModuleVisitor<B> for VisitGrads<'_, B, F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // The gradient belongs to the parameter's own (leaf) tensor: take it before reshaping.
        if let Some(grad) = param.val().grad(self.grads) {
            let n = grad.dims().iter().product::<usize>();
            (self.f)(&self.path.joined(), grad.reshape([n]));
        }
    }
}

/// Replaces the value of float parameters of a training module by `f(path, flattened value)`,
/// working on the inner backend and keeping each parameter a leaf that requires a gradient.
pub(crate) struct UpdateFloats<F> {
    pub(crate) path: PathStack,
    pub(crate) f: F,
}

impl<B: AutodiffBackend, F: FnMut(&str, Tensor<B::InnerBackend, 1>) -> Option<Tensor<B::InnerBackend, 1>>>
    ModuleMapper<B> for UpdateFloats<F>
{
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n = dims.iter().product::<usize>();
        let require_grad = tensor.is_require_grad();
        let tensor = match (self.f)(&self.path.joined(), tensor.clone().inner().reshape([n])) {
            Some(new) => {
                let new = Tensor::<B, D>::from_inner(new.reshape(dims));
                if require_grad { new.require_grad() } else { new }
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}
