//! Copies and element-wise arithmetic on strided views, a contiguous run at a time.
//!
//! Burn's batch norm works on views: its statistics go through
//! `x.swap_dims(0, 1).reshape([C, N * H * W])`, and it normalises with per-channel `[1, C, 1, 1]`
//! tensors broadcast against `[N, C, H, W]` activations, forward, backward and in evaluation.
//! burn-flex walks such layouts one element at a time through its general strided iterator
//! (it has fast paths only for layouts that collapse to two dimensions); on a ResNet that walk
//! was over half of a training step. The layouts Burn produces here have a contiguous or
//! broadcast innermost dimension (the `H * W` plane), so this module works run by run over it:
//! each run a `memcpy` or a plain loop the compiler vectorises, runs split over threads.

use burn_backend::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

/// Shortest contiguous run worth copying run by run; below it burn-flex's own copy (which
/// tiles two-dimensional transposes) is as good.
const MIN_COPY_RUN: usize = 8;

/// Elements per parallel task: enough that splitting pays for itself.
const TASK_ELEMS: usize = 1 << 16;

/// The tensor with a contiguous layout, copied run by run when its layout allows it and by
/// burn-flex otherwise. A tensor that already is contiguous is returned as it is.
pub fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.is_contiguous() {
        return tensor;
    }
    let elem = match tensor.dtype() {
        DType::Bool(_) | DType::QFloat(_) => return tensor.to_contiguous(),
        other => other.size(),
    };
    let layout = tensor.layout();
    let plan = RunPlan::new(layout.shape(), [layout.strides()], [layout.start_offset()]);
    let Some(plan) = plan.filter(|p| p.inner == [1] && p.run >= MIN_COPY_RUN) else {
        return tensor.to_contiguous();
    };
    let src = tensor.bytes();
    let run_bytes = plan.run * elem;
    let mut dst = vec![0u8; plan.runs() * run_bytes];
    plan.for_each_run(&mut dst, run_bytes, |out, [start]| {
        let start = start * elem;
        out.copy_from_slice(&src[start..start + run_bytes]);
    });
    FlexTensor::new(
        Bytes::from_bytes_vec(dst),
        Layout::contiguous(layout.shape().clone()),
        tensor.dtype(),
    )
}

/// The element-wise operations Kiln computes on broadcast views.
#[derive(Clone, Copy, Debug)]
pub enum BinaryOp {
    /// `lhs + rhs`
    Add,
    /// `lhs - rhs`
    Sub,
    /// `lhs * rhs`
    Mul,
    /// `lhs / rhs`
    Div,
}

/// `lhs op rhs` with Burn's broadcasting, for `f32` tensors of the same rank whose layouts
/// (after broadcasting) have an innermost dimension that each side reads contiguously or as one
/// repeated value; `None` otherwise, for the caller to hand to burn-flex. Tensors of the same
/// shape that are both contiguous are also left to burn-flex, whose SIMD path (in place when it
/// can) is the fastest there is for them.
pub fn binary(lhs: &FlexTensor, rhs: &FlexTensor, op: BinaryOp) -> Option<FlexTensor> {
    let (l, r) = (lhs.layout(), rhs.layout());
    if lhs.dtype() != DType::F32
        || rhs.dtype() != DType::F32
        || l.num_dims() != r.num_dims()
        || (l.shape() == r.shape() && l.is_contiguous() && r.is_contiguous())
    {
        return None;
    }
    let mut shape = Vec::with_capacity(l.num_dims());
    let mut strides = [Vec::new(), Vec::new()];
    for d in 0..l.num_dims() {
        let (a, b) = (l.shape()[d], r.shape()[d]);
        let size = match (a, b) {
            _ if a == b => a,
            (1, _) => b,
            (_, 1) => a,
            _ => return None,
        };
        shape.push(size);
        // A broadcast dimension steps by nothing.
        strides[0].push(if a == size { l.strides()[d] } else { 0 });
        strides[1].push(if b == size { r.strides()[d] } else { 0 });
    }
    let plan = RunPlan::new(
        &shape,
        [&strides[0], &strides[1]],
        [l.start_offset(), r.start_offset()],
    )?;
    if plan.inner.iter().any(|&s| s > 1) {
        return None;
    }
    let (a, b) = (lhs.storage::<f32>(), rhs.storage::<f32>());
    let out = match op {
        BinaryOp::Add => apply(&plan, a, b, |x, y| x + y),
        BinaryOp::Sub => apply(&plan, a, b, |x, y| x - y),
        BinaryOp::Mul => apply(&plan, a, b, |x, y| x * y),
        BinaryOp::Div => apply(&plan, a, b, |x, y| x / y),
    };
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(shape)),
        DType::F32,
    ))
}

/// The runs of `plan` computed with `f`; one instance per operation, so that each inner loop
/// is a plain loop the compiler vectorises.
fn apply(plan: &RunPlan<2>, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; plan.runs() * plan.run];
    plan.for_each_run(&mut out, plan.run, |out, [sa, sb]| {
        let run = out.len();
        match plan.inner {
            [1, 1] => {
                for ((o, &x), &y) in out.iter_mut().zip(&a[sa..sa + run]).zip(&b[sb..sb + run]) {
                    *o = f(x, y);
                }
            }
            [1, 0] => {
                let y = b[sb];
                for (o, &x) in out.iter_mut().zip(&a[sa..sa + run]) {
                    *o = f(x, y);
                }
            }
            [0, 1] => {
                let x = a[sa];
                for (o, &y) in out.iter_mut().zip(&b[sb..sb + run]) {
                    *o = f(x, y);
                }
            }
            _ => out.fill(f(a[sa], b[sb])),
        }
    });
    out
}

/// `K` strided operands of one shape seen as contiguous runs of the output: size-1 dimensions
/// dropped, neighbouring dimensions merged where every operand steps from one into the other,
/// the innermost dimension the run. A stride of 0 is a broadcast dimension.
#[derive(Debug, PartialEq)]
struct RunPlan<const K: usize> {
    /// Elements in each run.
    run: usize,
    /// Each operand's stride along the run.
    inner: [usize; K],
    /// Outer dimensions, outermost first: size and each operand's stride.
    outer: Vec<(usize, [usize; K])>,
    /// Each operand's offset of the first element.
    offsets: [usize; K],
}

impl<const K: usize> RunPlan<K> {
    /// `None` when a stride is negative (a flipped view).
    fn new(shape: &[usize], strides: [&[isize]; K], offsets: [usize; K]) -> Option<Self> {
        let mut dims: Vec<(usize, [usize; K])> = Vec::new(); // innermost first
        for d in (0..shape.len()).rev() {
            if shape[d] == 1 {
                continue;
            }
            let mut step = [0; K];
            for k in 0..K {
                step[k] = usize::try_from(strides[k][d]).ok()?;
            }
            match dims.last_mut() {
                Some((size, inner)) if (0..K).all(|k| inner[k] * *size == step[k]) => {
                    *size *= shape[d];
                }
                _ => dims.push((shape[d], step)),
            }
        }
        let (run, inner) = dims.first().copied().unwrap_or((1, [0; K]));
        let outer = dims.iter().skip(1).rev().copied().collect();
        Some(Self {
            run,
            inner,
            outer,
            offsets,
        })
    }

    fn runs(&self) -> usize {
        self.outer.iter().map(|(size, _)| size).product()
    }

    /// Each operand's offset of the start of run number `index` (in row-major order).
    fn starts(&self, mut index: usize) -> [usize; K] {
        let mut starts = self.offsets;
        for (size, step) in self.outer.iter().rev() {
            let i = index % size;
            index /= size;
            for k in 0..K {
                starts[k] += i * step[k];
            }
        }
        starts
    }

    /// Calls `f` with each run's slice of the contiguous output `out` (`chunk` items a run)
    /// and the operands' offsets of that run, runs split over threads.
    fn for_each_run<T: Send>(
        &self,
        out: &mut [T],
        chunk: usize,
        f: impl Fn(&mut [T], [usize; K]) + Sync,
    ) {
        let runs_per_task = (TASK_ELEMS / self.run).max(1);
        out.par_chunks_mut(runs_per_task * chunk)
            .enumerate()
            .for_each(|(task, part)| {
                for (i, run) in part.chunks_exact_mut(chunk).enumerate() {
                    f(run, self.starts(task * runs_per_task + i));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize], start: f32) -> FlexTensor {
        let n: usize = shape.iter().product();
        FlexTensor::new(
            Bytes::from_elems((0..n).map(|v| start + v as f32).collect::<Vec<_>>()),
            Layout::contiguous(Shape::from(shape.to_vec())),
            DType::F32,
        )
    }

    fn values(tensor: &FlexTensor) -> Vec<f32> {
        tensor.to_contiguous().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn batch_norm_view_is_copied_as_runs_of_one_plane() {
        let view = iota(&[3, 5, 4, 3], 0.0).transpose(0, 1);
        let l = view.layout();
        let plan = RunPlan::new(l.shape(), [l.strides()], [0]).unwrap();
        assert_eq!((plan.run, plan.runs(), plan.inner), (12, 15, [1]));
        assert_eq!(plan.starts(1), [5 * 12], "second run: image 1 of channel 0");
        let copy = contiguous(view.clone());
        assert!(copy.is_contiguous());
        assert_eq!(copy.layout().shape(), view.layout().shape());
        assert_eq!(values(&copy), values(&view));
    }

    #[test]
    fn large_views_split_over_tasks_give_the_same_values() {
        // 64 images x 32 channels of 16x16: several parallel tasks.
        let view = iota(&[64, 32, 16, 16], 0.0).transpose(0, 1);
        assert_eq!(values(&contiguous(view.clone())), values(&view));
        let narrowed = iota(&[4, 6, 10, 16], 0.0).narrow(3, 4, 8).narrow(1, 1, 3);
        assert_eq!(values(&contiguous(narrowed.clone())), values(&narrowed));
    }

    #[test]
    fn layouts_without_long_runs_are_left_to_burn_flex() {
        let transposed = iota(&[2, 3, 16, 16], 0.0).transpose(2, 3);
        assert_eq!(values(&contiguous(transposed.clone())), values(&transposed));
        let short = iota(&[4, 4, 2, 2], 0.0).transpose(0, 1);
        assert_eq!(values(&contiguous(short.clone())), values(&short));
    }

    #[test]
    fn contiguous_tensors_are_not_copied() {
        let tensor = iota(&[2, 2, 8, 8], 0.0);
        let same = contiguous(tensor.clone());
        assert!(std::ptr::eq(tensor.bytes().as_ptr(), same.bytes().as_ptr()));
    }

    fn eval(op: BinaryOp, a: f32, b: f32) -> f32 {
        match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    /// `lhs op rhs` element by element over the broadcast shape, from logical indices.
    fn reference(lhs: &FlexTensor, rhs: &FlexTensor, op: BinaryOp) -> Vec<f32> {
        let (ls, rs) = (lhs.layout().shape().to_vec(), rhs.layout().shape().to_vec());
        let shape: Vec<usize> = ls.iter().zip(&rs).map(|(a, b)| *a.max(b)).collect();
        let (lv, rv) = (values(lhs), values(rhs));
        let flat = |dims: &[usize], idx: &[usize]| {
            dims.iter()
                .zip(idx)
                .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
        };
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut i| {
                let mut idx = vec![0; shape.len()];
                for d in (0..shape.len()).rev() {
                    idx[d] = i % shape[d];
                    i /= shape[d];
                }
                eval(op, lv[flat(&ls, &idx)], rv[flat(&rs, &idx)])
            })
            .collect()
    }

    #[test]
    fn broadcast_arithmetic_matches_element_by_element() {
        let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
        let x = iota(&[6, 5, 7, 9], 1.0);
        let per_channel = iota(&[1, 5, 1, 1], 2.0);
        let cases = [
            (x.clone(), per_channel.clone()),
            (per_channel.clone(), x.clone()),
            // A transposed gradient plus a contiguous one (batch norm's backward).
            (iota(&[5, 6, 7, 9], 1.0).transpose(0, 1), x.clone()),
            (x.clone(), iota(&[1, 1, 7, 9], 3.0)),
            (iota(&[6, 5, 1, 1], 1.0), iota(&[1, 5, 1, 1], 2.0)),
            (iota(&[40, 1], 1.0), iota(&[1, 300], 0.5)),
        ];
        for (lhs, rhs) in &cases {
            for op in ops {
                let out = binary(lhs, rhs, op).expect("a layout Kiln computes");
                let what = format!("{op:?} {:?} {:?}", lhs.layout(), rhs.layout());
                assert_eq!(values(&out), reference(lhs, rhs, op), "{what}");
            }
        }
    }

    #[test]
    fn other_layouts_are_left_to_burn_flex() {
        let x = iota(&[4, 8], 0.0);
        assert!(
            binary(&x, &x, BinaryOp::Add).is_none(),
            "same shape, contiguous"
        );
        let t = iota(&[8, 4], 0.0).transpose(0, 1);
        assert!(
            binary(&t, &x, BinaryOp::Add).is_none(),
            "a strided innermost dimension"
        );
        assert!(
            binary(&x, &iota(&[3, 8], 0.0), BinaryOp::Add).is_none(),
            "shapes that do not broadcast"
        );
    }
}
