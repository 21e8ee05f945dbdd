//! What the kernels' unit tests share: test inputs and the convolution summed in `f64`.

use crate::conv::Conv2dGeometry;

/// A deterministic stream of values in [-2, 2).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// The input position that output `o` reads through kernel position `k` along one
/// dimension, or `None` in the padding.
fn source(geo: &Conv2dGeometry, d: usize, o: usize, k: usize) -> Option<usize> {
    (o * geo.stride[d] + k * geo.dilation[d])
        .checked_sub(geo.padding[d])
        .filter(|&i| i < geo.in_size[d])
}

/// Every product of the convolution, in a fixed order: `f(x, w, y)` with the flat indices of
/// its input element `[N, C, H, W]`, weight `[O, C, KH, KW]` and output `[N, O, OH, OW]`.
fn products(geo: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let [h, w] = geo.in_size;
    let [oh, ow] = geo.out_size();
    let [kh, kw] = geo.kernel;
    for n in 0..geo.batch {
        for o in 0..outs {
            for oy in 0..oh {
                for ox in 0..ow {
                    for c in 0..ins {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (Some(iy), Some(ix)) =
                                    (source(geo, 0, oy, ki), source(geo, 1, ox, kj))
                                else {
                                    continue;
                                };
                                f(
                                    ((n * ins + c) * h + iy) * w + ix,
                                    ((o * ins + c) * kh + ki) * kw + kj,
                                    ((n * outs + o) * oh + oy) * ow + ox,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `len` sums in `f64`, each from `start(k)`: for every product, `term` names the sum `k` it
/// goes to and its value. Beside each sum, the sum of its terms' magnitudes (the size of the
/// terms rounding acts on).
fn sums(
    geo: &Conv2dGeometry,
    len: usize,
    start: impl Fn(usize) -> f64,
    term: impl Fn(usize, usize, usize) -> (usize, f64),
) -> (Vec<f64>, Vec<f64>) {
    let mut sum: Vec<f64> = (0..len).map(&start).collect();
    let mut scale: Vec<f64> = sum.iter().map(|v| v.abs()).collect();
    products(geo, |x, w, y| {
        let (k, v) = term(x, w, y);
        sum[k] += v;
        scale[k] += v.abs();
    });
    (sum, scale)
}

/// The convolution summed in `f64`, and each output's scale `Σ |w| |x|`.
pub(crate) fn convolution(
    geo: &Conv2dGeometry,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let plane = geo.out_plane();
    sums(
        geo,
        geo.output_len(),
        |y| bias.map_or(0.0, |b| f64::from(b[y / plane % geo.out_channels])),
        |i, j, y| (y, f64::from(x[i]) * f64::from(wt[j])),
    )
}

/// The weight gradient `[O, C, KH, KW]` summed in `f64` from the input and the output's
/// gradient, and each element's scale.
pub(crate) fn weight_gradient(geo: &Conv2dGeometry, x: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>) {
    sums(
        geo,
        geo.weight_len(),
        |_| 0.0,
        |i, j, y| (j, f64::from(x[i]) * f64::from(g[y])),
    )
}

/// The input gradient `[N, C, H, W]` summed in `f64` from the weight and the output's
/// gradient, and each element's scale.
pub(crate) fn input_gradient(geo: &Conv2dGeometry, wt: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>) {
    sums(
        geo,
        geo.input_len(),
        |_| 0.0,
        |i, j, y| (i, f64::from(wt[j]) * f64::from(g[y])),
    )
}

/// A stride-1, undilated convolution's geometry.
pub(crate) fn geometry(
    batch: usize,
    ins: usize,
    size: [usize; 2],
    outs: usize,
    kernel: [usize; 2],
    padding: [usize; 2],
) -> Conv2dGeometry {
    Conv2dGeometry {
        batch,
        in_channels: ins,
        in_size: size,
        out_channels: outs,
        kernel,
        stride: [1, 1],
        padding,
        dilation: [1, 1],
    }
}

/// The largest error over the outputs, relative to each output's scale.
fn worst(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .zip(scale)
        .map(|((g, w), s)| (f64::from(*g) - w).abs() / s.max(1e-30))
        .fold(0.0, f64::max)
}

/// Asserts that `got` is within `margin` of `reference`'s sums, relative to each one's scale;
/// the message names `what` and the worst error.
pub(crate) fn assert_within(
    what: impl std::fmt::Display,
    got: &[f32],
    (want, scale): (Vec<f64>, Vec<f64>),
    margin: f64,
) {
    let err = worst(got, &want, &scale);
    assert!(err <= margin, "{what}: error {err:e} of the scale");
}
