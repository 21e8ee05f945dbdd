//! Batch norm over `[N, C, H, W]` `f32` activations: the statistics, the normalisation and the
//! backward pass, each one or two passes over the data, where Burn's `BatchNorm` makes about
//! ten (most of them a fresh buffer).
//!
//! Channel `c` of image `n` is the plane `x[(n * C + c) * HW ..][.. HW]`. Statistics are summed
//! per plane in `f32` (one plane is at most a few thousand values) and across planes in `f64`,
//! channels in parallel; the element-wise passes run plane by plane in parallel. The variance is
//! the mean of squared deviations from the mean (two passes), not `E[x^2] - E[x]^2`, which
//! loses digits when a channel's mean is large against its spread. Each output depends on its
//! inputs alone, in a fixed order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::isa::{multiversion, Isa};

/// The shape of a batch of activations: `batch` images of `channels` planes of `plane` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    /// `N`.
    pub batch: usize,
    /// `C`.
    pub channels: usize,
    /// `H * W`.
    pub plane: usize,
}

impl Planes {
    fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// How many values each channel's statistics are over.
    pub fn count(&self) -> usize {
        self.batch * self.plane
    }

    fn channel_planes<'a>(&self, x: &'a [f32], channel: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, hw) = (self.channels, self.plane);
        (0..self.batch).map(move |n| &x[(n * c + channel) * hw..][..hw])
    }

    fn check(&self, what: &str, values: &[f32]) {
        assert_eq!(
            values.len(),
            self.len(),
            "batch norm: {what} has the wrong length"
        );
    }
}

/// Per-channel mean and biased variance of `x`.
pub fn batch_stats(x: &[f32], shape: Planes) -> (Vec<f32>, Vec<f32>) {
    shape.check("x", x);
    let count = shape.count() as f64;
    let isa = Isa::best();
    (0..shape.channels)
        .into_par_iter()
        .map(|channel| {
            let planes = || shape.channel_planes(x, channel);
            let mean = planes().map(|p| sum(isa, p) as f64).sum::<f64>() / count;
            let mean32 = mean as f32;
            let var = planes()
                .map(|p| sum_sq_dev(isa, p, mean32) as f64)
                .sum::<f64>()
                / count;
            (mean as f32, var as f32)
        })
        .unzip()
}

/// `out = x * scale[c] + shift[c]`, the normalisation with everything per channel folded into
/// one scale and one shift, then `max(0, .)` where `relu` is set. `out` is only written.
pub fn scale_shift(
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    shape: Planes,
    out: &mut [f32],
) {
    shape.check("x", x);
    shape.check("out", out);
    let isa = Isa::best();
    out.par_chunks_mut(shape.plane)
        .zip(x.par_chunks(shape.plane))
        .enumerate()
        .for_each(|(p, (out, x))| {
            let c = p % shape.channels;
            scale_shift_plane(isa, x, scale[c], shift[c], relu, out);
        });
}

multiversion! {
    fn scale_shift_plane(x: &[f32], a: f32, b: f32, relu: bool, out: &mut [f32]) {
        if relu {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v * a + b).max(0.0);
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * a + b;
            }
        }
    }
}

/// The ReLU's backward pass from its output: zeroes the gradient where the output is not
/// positive.
pub fn relu_backward_in_place(output: &[f32], grad: &mut [f32]) {
    assert_eq!(output.len(), grad.len(), "relu backward: lengths differ");
    const CHUNK: usize = 1 << 14;
    let isa = Isa::best();
    grad.par_chunks_mut(CHUNK)
        .zip(output.par_chunks(CHUNK))
        .for_each(|(grad, output)| relu_backward_chunk(isa, output, grad));
}

multiversion! {
    fn relu_backward_chunk(output: &[f32], grad: &mut [f32]) {
        for (g, &y) in grad.iter_mut().zip(output) {
            if y <= 0.0 {
                *g = 0.0;
            }
        }
    }
}

/// The per-channel scale and shift that normalise with `mean` and `var`:
/// `gamma / sqrt(var + epsilon)` and `beta - mean * scale`; also `1 / sqrt(var + epsilon)`.
pub fn fold(
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let invstd: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let scale: Vec<f32> = invstd.iter().zip(gamma).map(|(s, g)| s * g).collect();
    let shift = beta
        .iter()
        .zip(mean.iter().zip(&scale))
        .map(|(b, (m, s))| b - m * s)
        .collect();
    (scale, shift, invstd)
}

/// The backward pass of training-mode batch norm. Given `x`, the batch `mean` and `invstd`
/// it normalised with, `gamma` and the output's gradient in `grad`, overwrites `grad` with the
/// input's gradient and returns the gradients of `gamma` and `beta`:
///
/// with `xhat = (x - mean) * invstd`, `dbeta = sum(dy)`, `dgamma = sum(dy * xhat)` and
/// `dx = gamma * invstd * (dy - dbeta / n - xhat * dgamma / n)`, sums per channel over `n`
/// values.
pub fn backward_in_place(
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    grad: &mut [f32],
    shape: Planes,
) -> (Vec<f32>, Vec<f32>) {
    shape.check("x", x);
    shape.check("grad", grad);
    let isa = Isa::best();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = {
        let grad = &*grad;
        (0..shape.channels)
            .into_par_iter()
            .map(|c| {
                let mut sum_dy = 0.0f64;
                let mut sum_dy_xmu = 0.0f64;
                for (x, dy) in shape
                    .channel_planes(x, c)
                    .zip(shape.channel_planes(grad, c))
                {
                    sum_dy += sum(isa, dy) as f64;
                    sum_dy_xmu += dot_dev(isa, dy, x, mean[c]) as f64;
                }
                ((sum_dy_xmu * invstd[c] as f64) as f32, sum_dy as f32)
            })
            .unzip()
    };
    let n = shape.count() as f32;
    grad.par_chunks_mut(shape.plane)
        .zip(x.par_chunks(shape.plane))
        .enumerate()
        .for_each(|(p, (dy, x))| {
            let c = p % shape.channels;
            let k = gamma[c] * invstd[c];
            // dx = k * dy - k * dbeta / n - (x - mean) * k * invstd * dgamma / n
            let a = k * invstd[c] * dgamma[c] / n;
            let b = -k * dbeta[c] / n + mean[c] * a;
            backward_plane(isa, x, [k, a, b], dy);
        });
    (dgamma, dbeta)
}

multiversion! {
    /// `dy = k dy - a x + b`, the input gradient of one plane.
    fn backward_plane(x: &[f32], coefficients: [f32; 3], dy: &mut [f32]) {
        let [k, a, b] = coefficients;
        for (d, &v) in dy.iter_mut().zip(x) {
            *d = k * *d - v * a + b;
        }
    }
}

/// Lanes summed side by side: enough independent additions for the compiler to vectorise, and
/// a fixed order whatever the machine.
const LANES: usize = 16;

multiversion! {
    /// The sum of `values`, in [`LANES`] running sums (also the convolutions' bias gradient).
    pub(crate) fn sum(values: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = values.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().sum();
        for chunk in chunks {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    fn sum_sq_dev(values: &[f32], mean: f32) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = values.chunks_exact(LANES);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for chunk in chunks {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a += (v - mean) * (v - mean);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// `sum(dy * (x - mean))`.
    fn dot_dev(dy: &[f32], x: &[f32], mean: f32) -> f32 {
        let mut acc = [0.0f32; LANES];
        let (dys, xs) = (dy.chunks_exact(LANES), x.chunks_exact(LANES));
        let tail: f32 = dys
            .remainder()
            .iter()
            .zip(xs.remainder())
            .map(|(d, v)| d * (v - mean))
            .sum();
        for (dy, x) in dys.zip(xs) {
            for ((a, d), v) in acc.iter_mut().zip(dy).zip(x) {
                *a += d * (v - mean);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each build of the kernels this CPU can run (AVX-512, AVX2, baseline) gives the same
    /// bits, on lengths that leave a tail past the last full lane block.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let x: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let dy: Vec<f32> = (0..1001)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 5.0)
            .collect();
        let run_on = |isa| {
            let mut out = vec![0.0; x.len()];
            scale_shift_plane(isa, &x, 0.7, -0.2, true, &mut out);
            let mut grad = dy.clone();
            relu_backward_chunk(isa, &out, &mut grad);
            backward_plane(isa, &x, [0.3, 0.01, -0.5], &mut grad);
            let sums = [
                sum(isa, &x),
                sum_sq_dev(isa, &x, 0.4),
                dot_dev(isa, &dy, &x, 0.4),
            ];
            (out, grad, sums.map(f32::to_bits))
        };
        let isas = Isa::available();
        let want = run_on(*isas.last().unwrap());
        for isa in isas {
            assert_eq!(run_on(isa), want, "{isa:?} build against the baseline");
        }
    }

    /// A deterministic spread of values around per-channel offsets.
    fn sample(shape: Planes, offsets: &[f32]) -> Vec<f32> {
        (0..shape.len())
            .map(|i| {
                let c = (i / shape.plane) % shape.channels;
                offsets[c] + ((i * 7919 % 101) as f32 / 101.0 - 0.5) * (1.0 + c as f32)
            })
            .collect()
    }

    fn reference_stats(x: &[f32], shape: Planes) -> Vec<(f64, f64)> {
        (0..shape.channels)
            .map(|c| {
                let v: Vec<f64> = shape
                    .channel_planes(x, c)
                    .flatten()
                    .map(|&v| v as f64)
                    .collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
                (mean, var)
            })
            .collect()
    }

    #[test]
    fn statistics_match_f64_ones_even_far_from_zero() {
        // 37 values per plane: the lanes and the tail both count.
        let shape = Planes {
            batch: 5,
            channels: 3,
            plane: 37,
        };
        let x = sample(shape, &[1000.0, -2.0, 0.0]);
        let (mean, var) = batch_stats(&x, shape);
        for (c, (m, v)) in reference_stats(&x, shape).into_iter().enumerate() {
            assert!(
                (mean[c] as f64 - m).abs() < 1e-4 * m.abs().max(1.0),
                "mean {c}"
            );
            assert!(
                (var[c] as f64 - v).abs() < 1e-4 * v,
                "var {c}: {} vs {v}",
                var[c]
            );
        }
    }

    #[test]
    fn backward_matches_the_formula_in_f64() {
        let shape = Planes {
            batch: 3,
            channels: 2,
            plane: 21,
        };
        let x = sample(shape, &[0.5, -3.0]);
        let dy: Vec<f32> = (0..shape.len())
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let gamma = [1.5f32, -0.5];
        let (mean, var) = batch_stats(&x, shape);
        let (_, _, invstd) = fold(&mean, &var, &gamma, &[0.0, 0.0], 1e-5);
        let mut grad = dy.clone();
        let (dgamma, dbeta) = backward_in_place(&x, &mean, &invstd, &gamma, &mut grad, shape);

        let n = shape.count() as f64;
        for (c, (m, v)) in reference_stats(&x, shape).into_iter().enumerate() {
            let s = 1.0 / (v + 1e-5).sqrt();
            let idx: Vec<usize> = (0..shape.batch)
                .flat_map(|b| {
                    (0..shape.plane).map(move |j| (b * shape.channels + c) * shape.plane + j)
                })
                .collect();
            let xhat = |k: usize| (x[k] as f64 - m) * s;
            let db: f64 = idx.iter().map(|&k| dy[k] as f64).sum();
            let dg: f64 = idx.iter().map(|&k| dy[k] as f64 * xhat(k)).sum();
            assert!((dbeta[c] as f64 - db).abs() < 1e-4, "dbeta {c}");
            assert!((dgamma[c] as f64 - dg).abs() < 1e-4, "dgamma {c}");
            for &k in &idx {
                let dx = gamma[c] as f64 * s * (dy[k] as f64 - db / n - xhat(k) * dg / n);
                assert!(
                    (grad[k] as f64 - dx).abs() < 1e-4,
                    "dx at {k}: {} vs {dx}",
                    grad[k]
                );
            }
        }
    }

    #[test]
    fn scale_shift_applies_each_channels_pair() {
        let shape = Planes {
            batch: 2,
            channels: 2,
            plane: 3,
        };
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; 12];
        scale_shift(&x, &[2.0, -1.0], &[1.0, 0.5], false, shape, &mut out);
        let expected = [
            1.0, 3.0, 5.0, -2.5, -3.5, -4.5, 13.0, 15.0, 17.0, -8.5, -9.5, -10.5,
        ];
        assert_eq!(out, expected);
        scale_shift(&x, &[2.0, -1.0], &[1.0, 0.5], true, shape, &mut out);
        let relu = expected.map(|v: f32| v.max(0.0));
        assert_eq!(out, relu);
        let mut grad = vec![1.0; 12];
        relu_backward_in_place(&out, &mut grad);
        assert_eq!(grad, relu.map(|v| if v > 0.0 { 1.0 } else { 0.0 }));
    }
}
