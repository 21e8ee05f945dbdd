//! Ops that Kiln's networks call and that a Burn backend may run as one fused kernel, with a
//! default built from Burn's own ops for every backend that has none.
//!
//! Burn's backend traits have no batch-norm op: `burn::nn::BatchNorm` is about ten primitive
//! ops each way, each a pass over the activations and most a fresh buffer, where PyTorch runs
//! one kernel forward and one backward. A backend cannot take over an op its trait does not
//! have, and Kiln's networks stay generic over `B: Backend` (so every backend, and every user's
//! own, still runs them), so the choice is made at run time instead:
//!
//! - [`batch_norm`] is what a network calls. It runs the kernels registered for its backend
//!   type, else the default made of Burn ops ([`batch_norm::default_train`],
//!   [`batch_norm::default_inference`]).
//! - A backend with kernels implements [`batch_norm::BatchNormKernels`] on its primitives and
//!   registers them once with [`batch_norm::register_kernels`], which registers the backend
//!   itself (inference, what `model.valid()` runs) and `Autodiff` over it (training: the
//!   kernels' forward and backward as one autodiff node, through burn-autodiff's `Backward`).
//!   Kiln's `kiln-cpu` and `kiln-tch` do; the `kiln` binary registers them before it runs
//!   anything. A program that embeds Kiln's crates calls `kiln_cpu::register_kernels()` (or
//!   `kiln_tch::...`) itself; without it, training is the same arithmetic, only slower.
//!
//! The registry is keyed by the backend's `TypeId`, so a lookup is one read lock and one hash:
//! nothing next to a pass over a layer's activations.
#![warn(missing_docs)]

pub mod batch_norm;
