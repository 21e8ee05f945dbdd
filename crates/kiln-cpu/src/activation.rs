//! The logistic sigmoid and GELU, and their gradients, over `f32` slices, split over threads
//! and written so that the compiler vectorises them.
//!
//! burn-flex computes both one element at a time on one thread with the C library's `expf`
//! and `erff`, which put about a third of classic LeNet-5's training step in the sigmoid and
//! 7% of airbench94's in `erff`. Here `exp` is a polynomial (Cephes' `expf`: a two-part `ln 2`
//! range reduction and a degree-6 polynomial, within 2 ulp of the exact value over the range
//! that matters) in plain arithmetic, and the normal distribution function is built on it, so
//! a loop over a slice becomes SIMD code, compiled for AVX-512, AVX2 + FMA and the baseline and
//! chosen at run time ([`crate::isa`]). No fused multiply-add is used, so every build, and any
//! thread count, gives the same bits.

use rayon::prelude::*;

use crate::isa::{multiversion, Isa};

/// Elements per task: large enough that splitting costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// `exp(x)` for finite `x` in about [-87.3, 88.3]; below that it returns 0, above it
/// `+inf`, and NaN stays NaN. Branch-free so that it vectorises.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in few bits, so that `x - n ln 2` loses nothing.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.3;
    const HI: f32 = 88.3;

    let clamped = x.clamp(LO, HI);
    let shifted = clamped * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n, built from n's bits: n is in [-126, 127], so the exponent field stays normal.
    let k = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    let y = e * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn sigmoid_of(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `Phi(x)`, the standard normal distribution function, and `phi(x)`, its density, for the
/// exact (erf) GELU that PyTorch's `nn.GELU()` computes.
///
/// `Phi(x) = erfc(-x / sqrt 2) / 2`, with `erfc(z) = t exp(-z^2 + P(t))`, `t = 1 / (1 + z / 2)`
/// for `z >= 0`: the Chebyshev fit of Numerical Recipes (Press et al., 2nd ed., section 6.2,
/// `erfcc`), whose relative error is below 1.2e-7 for every `z`. It is relative, not absolute
/// as in the shorter Abramowitz and Stegun 7.1.26 fit, so that `x Phi(x)` keeps its digits for
/// negative `x` too. The tail is computed for `-|x|` and reflected, without a branch.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    let z2 = z * z;
    // Phi(-|x|) = erfc(|x| / sqrt 2) / 2.
    let tail = 0.5 * t * exp(p - z2);
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, FRAC_1_SQRT_2PI * exp(-z2))
}

multiversion! {
    fn gelu_chunk(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * normal_cdf_pdf(v).0;
        }
    }
}

multiversion! {
    fn gelu_backward_chunk(x: &[f32], grad: &mut [f32]) {
        for (g, &v) in grad.iter_mut().zip(x) {
            let (cdf, pdf) = normal_cdf_pdf(v);
            *g *= cdf + v * pdf;
        }
    }
}

/// Writes `gelu(x) = x Phi(x)` of every value of `x` into `out` (the same length).
pub fn gelu(x: &[f32], out: &mut [f32]) {
    in_chunks("gelu", x, out, gelu_chunk);
}

/// GELU's backward pass from its input `x`: multiplies each gradient by
/// `Phi(x) + x phi(x)`.
pub fn gelu_backward_in_place(x: &[f32], grad: &mut [f32]) {
    in_chunks("gelu backward", x, grad, gelu_backward_chunk);
}

/// `kernel(input chunk, output chunk)` over matching chunks of two equal-length slices, in
/// parallel, in the widest build the CPU has.
fn in_chunks(what: &str, input: &[f32], output: &mut [f32], kernel: fn(Isa, &[f32], &mut [f32])) {
    assert_eq!(input.len(), output.len(), "{what}: lengths differ");
    let isa = Isa::best();
    output
        .par_chunks_mut(CHUNK)
        .zip(input.par_chunks(CHUNK))
        .for_each(|(output, input)| kernel(isa, input, output));
}

multiversion! {
    fn sigmoid_chunk(values: &mut [f32]) {
        for v in values {
            *v = sigmoid_of(*v);
        }
    }
}

multiversion! {
    fn sigmoid_backward_chunk(output: &[f32], grad: &mut [f32]) {
        for (g, &s) in grad.iter_mut().zip(output) {
            *g *= s * (1.0 - s);
        }
    }
}

/// Replaces every value `x` with `1 / (1 + exp(-x))`.
pub fn sigmoid_in_place(values: &mut [f32]) {
    let isa = Isa::best();
    values
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| sigmoid_chunk(isa, chunk));
}

/// The sigmoid's backward pass from its output `s`: multiplies each gradient by `s (1 - s)`.
pub fn sigmoid_backward_in_place(output: &[f32], grad: &mut [f32]) {
    in_chunks("sigmoid backward", output, grad, sigmoid_backward_chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite floats of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_where_it_is_normal() {
        // Every 997th float in the range, against a double-precision reference.
        let (lo, hi) = ((-87.3f32).to_bits(), 88.3f32.to_bits());
        let positives = (0..hi).step_by(997).map(f32::from_bits);
        let negatives = (0x8000_0000..lo).step_by(997).map(f32::from_bits);
        let mut worst = (0, 0.0);
        for x in positives.chain(negatives) {
            let exact = (x as f64).exp() as f32;
            let d = ulps(exp(x), exact);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 2, "exp({}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn exp_saturates_and_keeps_nan() {
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn sigmoid_matches_double_precision_and_saturates() {
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 40.0).collect();
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30]);
        let mut ys = xs.clone();
        sigmoid_in_place(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(
                (y as f64 - exact).abs() <= 4.0 * f32::EPSILON as f64 * exact.max(1e-30),
                "sigmoid({x}) = {y}, exactly {exact}"
            );
        }
        let mut nan = [f32::NAN];
        sigmoid_in_place(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let xs: Vec<f32> = (0..3 * CHUNK + 5)
            .map(|i| ((i * 7919) % 20011) as f32 / 1000.0 - 10.0)
            .collect();
        let run_on = |isa| {
            let mut ys = xs.clone();
            sigmoid_chunk(isa, &mut ys);
            let mut grad = xs.clone();
            sigmoid_backward_chunk(isa, &ys, &mut grad);
            let mut gelus = vec![0.0; xs.len()];
            gelu_chunk(isa, &xs, &mut gelus);
            let mut gelu_grad = xs.clone();
            gelu_backward_chunk(isa, &xs, &mut gelu_grad);
            (ys, grad, gelus, gelu_grad)
        };
        let isas = Isa::available();
        let want = run_on(*isas.last().unwrap());
        for isa in isas {
            assert_eq!(run_on(isa), want, "{isa:?} build against the baseline");
        }
        // And the parallel entry points give the same bits as one chunk at a time.
        let mut ys = xs.clone();
        sigmoid_in_place(&mut ys);
        let mut grad = xs.clone();
        sigmoid_backward_in_place(&ys, &mut grad);
        let mut gelus = vec![0.0; xs.len()];
        gelu(&xs, &mut gelus);
        let mut gelu_grad = xs.clone();
        gelu_backward_in_place(&xs, &mut gelu_grad);
        assert_eq!((ys, grad, gelus, gelu_grad), want);
    }

    /// `Phi(x)` and `phi(x)` in double precision: `erfc` from libm.
    fn exact_cdf_pdf(x: f64) -> (f64, f64) {
        let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let pdf = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (cdf, pdf)
    }

    #[test]
    fn gelu_and_its_gradient_match_double_precision() {
        // Relative error: the fit's 1.2e-7, exp's 2 ulp, and the rounding of z^2, which grows
        // with x^2 in the exponent.
        let tolerance = |x: f64| 8.0 * f32::EPSILON as f64 * (1.0 + x * x / 2.0);
        // Below -13, Phi(x) underflows f32's normal range; those come back as 0.
        let xs: Vec<f32> = (-1300..=1300).map(|i| i as f32 / 100.0).collect();
        let mut ys = vec![0.0; xs.len()];
        gelu(&xs, &mut ys);
        let mut grads = vec![1.0; xs.len()];
        gelu_backward_in_place(&xs, &mut grads);
        for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&grads) {
            let (cdf, pdf) = exact_cdf_pdf(x as f64);
            let exact = x as f64 * cdf;
            assert!(
                (y as f64 - exact).abs() <= tolerance(x as f64) * exact.abs(),
                "gelu({x}) = {y}, exactly {exact}"
            );
            // The derivative is a difference for negative x: bound by its terms' size.
            let exact_grad = cdf + x as f64 * pdf;
            let size = cdf + (x as f64 * pdf).abs();
            assert!(
                (g as f64 - exact_grad).abs() <= tolerance(x as f64) * size,
                "gelu'({x}) = {g}, exactly {exact_grad}"
            );
        }
        let mut special = [0.0f32, f32::INFINITY, -30.0, f32::NAN];
        gelu(&special.clone(), &mut special);
        assert_eq!(special[..3], [0.0, f32::INFINITY, 0.0]);
        assert!(special[3].is_nan());
    }
}
