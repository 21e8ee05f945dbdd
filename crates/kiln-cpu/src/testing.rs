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

/// The convolution summed in `f64`, and each output's scale `Σ |w| |x|` (the size of the
/// terms rounding acts on).
pub(crate) fn convolution(
    geo: &Conv2dGeometry,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let [h, w] = geo.in_size;
    let [oh, ow] = geo.out_size();
    let [kh, kw] = geo.kernel;
    let mut y = vec![0.0; geo.batch * outs * oh * ow];
    let mut scale = vec![0.0; y.len()];
    for n in 0..geo.batch {
        for o in 0..outs {
            for oy in 0..oh {
                for ox in 0..ow {
                    let i = ((n * outs + o) * oh + oy) * ow + ox;
                    let b = bias.map_or(0.0, |b| f64::from(b[o]));
                    let (mut sum, mut abs) = (b, b.abs());
                    for c in 0..ins {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (Some(iy), Some(ix)) =
                                    (source(geo, 0, oy, ki), source(geo, 1, ox, kj))
                                else {
                                    continue;
                                };
                                let xv = f64::from(x[((n * ins + c) * h + iy) * w + ix]);
                                let wv = f64::from(wt[((o * ins + c) * kh + ki) * kw + kj]);
                                sum += xv * wv;
                                abs += (xv * wv).abs();
                            }
                        }
                    }
                    y[i] = sum;
                    scale[i] = abs;
                }
            }
        }
    }
    (y, scale)
}

/// The weight gradient `[O, C, KH, KW]` summed in `f64` from the input and the output's
/// gradient, and each element's scale.
pub(crate) fn weight_gradient(geo: &Conv2dGeometry, x: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let [h, w] = geo.in_size;
    let [oh, ow] = geo.out_size();
    let [kh, kw] = geo.kernel;
    let mut grad = vec![0.0; geo.weight_len()];
    let mut scale = vec![0.0; grad.len()];
    for o in 0..outs {
        for c in 0..ins {
            for ki in 0..kh {
                for kj in 0..kw {
                    let (mut sum, mut abs) = (0.0f64, 0.0f64);
                    for n in 0..geo.batch {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let (Some(iy), Some(ix)) =
                                    (source(geo, 0, oy, ki), source(geo, 1, ox, kj))
                                else {
                                    continue;
                                };
                                let xv = f64::from(x[((n * ins + c) * h + iy) * w + ix]);
                                let gv = f64::from(g[((n * outs + o) * oh + oy) * ow + ox]);
                                sum += xv * gv;
                                abs += (xv * gv).abs();
                            }
                        }
                    }
                    let i = ((o * ins + c) * kh + ki) * kw + kj;
                    grad[i] = sum;
                    scale[i] = abs;
                }
            }
        }
    }
    (grad, scale)
}

/// The input gradient `[N, C, H, W]` summed in `f64` from the weight and the output's
/// gradient, and each element's scale.
pub(crate) fn input_gradient(geo: &Conv2dGeometry, wt: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let [h, w] = geo.in_size;
    let [oh, ow] = geo.out_size();
    let [kh, kw] = geo.kernel;
    let mut grad = vec![0.0; geo.input_len()];
    let mut scale = vec![0.0; grad.len()];
    for n in 0..geo.batch {
        for o in 0..outs {
            for oy in 0..oh {
                for ox in 0..ow {
                    let gv = f64::from(g[((n * outs + o) * oh + oy) * ow + ox]);
                    for c in 0..ins {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (Some(iy), Some(ix)) =
                                    (source(geo, 0, oy, ki), source(geo, 1, ox, kj))
                                else {
                                    continue;
                                };
                                let wv = f64::from(wt[((o * ins + c) * kh + ki) * kw + kj]);
                                let i = ((n * ins + c) * h + iy) * w + ix;
                                grad[i] += gv * wv;
                                scale[i] += (gv * wv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (grad, scale)
}

/// The largest error over the outputs, relative to each output's scale.
pub(crate) fn worst(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .zip(scale)
        .map(|((g, w), s)| (f64::from(*g) - w).abs() / s.max(1e-30))
        .fold(0.0, f64::max)
}
