//! Each float parameter of a module with its path, as PyTorch's state dicts name it.
//!
//! Burn's `ModuleVisitor` tells where it is only by entering and leaving submodules; every
//! visitor that needs a parameter's name would keep that stack itself. [`visit_params`] keeps
//! it once and hands each parameter over with its dotted path.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// Looks at a module's float parameters one at a time, each with its path.
pub trait ParamVisitor<B: Backend> {
    /// `path` is the parameter's dotted module path (`conv1.weight`, `block1.0.bn1.gamma`).
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>);
}

/// A float parameter as [`params`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Burn's parameter id, as records (an optimizer's too) key it.
    pub id: String,
    /// The dotted path [`visit_params`] gives it.
    pub path: String,
    /// Its shape, known before it is initialised.
    pub shape: Vec<usize>,
}

/// Every float parameter of `module`, in visiting order; a parameter not yet initialised gives
/// the shape it will have, without being drawn.
pub fn params<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    struct List(Vec<ParamInfo>);
    impl<B: Backend> ParamVisitor<B> for List {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.0.push(ParamInfo {
                id: param.id.serialize(),
                path: path.to_string(),
                shape: param.lazy_shape().to_vec(),
            });
        }
    }
    let mut list = List(Vec::new());
    visit_params(module, &mut list);
    list.0
}

/// Visits every float parameter of `module`, in Burn's visiting order, with its path. The
/// variant of an enum module ([`crate::Classifier`]) is left out of the paths, so they are the
/// network's own: the names a bare network's record, PyTorch's state dicts and Kiln's stores
/// use (the stores skip enum variants likewise).
pub fn visit_params<B: Backend, M: Module<B>>(module: &M, visitor: &mut impl ParamVisitor<B>) {
    struct Paths<'a, V> {
        path: Vec<String>,
        inner: &'a mut V,
    }
    impl<B: Backend, V: ParamVisitor<B>> ModuleVisitor<B> for Paths<'_, V> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            if !container_type.starts_with("Enum:") {
                self.path.push(name.to_string());
            }
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            if !container_type.starts_with("Enum:") {
                self.path.pop();
            }
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.inner.visit(&self.path.join("."), param);
        }
    }
    module.visit(&mut Paths {
        path: Vec::new(),
        inner: visitor,
    });
}
