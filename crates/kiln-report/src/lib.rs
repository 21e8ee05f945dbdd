//! Pictures and reports of Kiln's runs: the curves, confusion matrix, prediction grid, kernels
//! and feature maps of a run (`plots/`, PNG and SVG), and `index.html` pages for one run or
//! several side by side.
//!
//! Everything here is drawn from a run folder's files and from what
//! `kiln_experiments::inspect` computes with the trained model; nothing here trains. It is a
//! crate of its own so that embedding Kiln's runner does not pull in plotting, a font and
//! HTML: the runner draws pictures only when given [`write_run_pictures`] as its
//! `RunOptions::draw`, which `kiln run` does.
//!
//! What it is not: a dashboard or a live view. Pictures are redrawn from files
//! (`kiln plots RUN`), and reports are static pages that open offline.

#![warn(missing_docs)]

mod draw;
pub mod pictures;
pub mod report;

pub use draw::{features, redraw, write_feature_pictures, write_run_pictures, FeatureInput};
pub use report::{write_comparison, write_run_report};
