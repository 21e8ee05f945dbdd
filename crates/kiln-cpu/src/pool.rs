//! 2-D max pooling on contiguous `f32` NCHW slices, with the argmax indices that training
//! needs and the backward pass that scatters through them, and 2-D average pooling with its
//! backward. Work is split over (image, channel) planes, each written by one thread, so
//! results do not depend on the thread count.

use rayon::prelude::*;

use crate::isa::{multiversion, Isa};

/// The geometry of one 2-D pooling (average pooling takes no dilation: it must be 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Images times channels: the number of independent planes.
    pub planes: usize,
    /// Input height and width.
    pub in_size: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride per spatial dimension (non-zero).
    pub stride: [usize; 2],
    /// Implicit `-inf` padding on both sides.
    pub padding: [usize; 2],
    /// Dilation per spatial dimension (non-zero).
    pub dilation: [usize; 2],
    /// Round the output size up (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
}

impl Pool2dGeometry {
    /// Output height and width, with PyTorch's rule that the last window must start inside
    /// the input or its left padding.
    pub fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|d| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            let room = (self.in_size[d] + 2 * self.padding[d]).saturating_sub(span);
            let s = self.stride[d];
            let mut out = if self.ceil_mode {
                room.div_ceil(s)
            } else {
                room / s
            } + 1;
            if self.ceil_mode && (out - 1) * s >= self.in_size[d] + self.padding[d] {
                out -= 1;
            }
            out
        })
    }

    fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    /// For output `o` along dimension `d`: the first input position its window reads (maybe
    /// negative, in the padding), and the range of taps that land inside the input.
    #[inline]
    fn taps(&self, d: usize, o: usize) -> (isize, std::ops::Range<usize>) {
        let first = (o * self.stride[d]) as isize - self.padding[d] as isize;
        let (dil, size) = (self.dilation[d] as isize, self.in_size[d] as isize);
        // Tap k is inside when 0 <= first + k * dil < size.
        let lo = if first >= 0 {
            0
        } else {
            (-first + dil - 1) / dil
        };
        let hi = if first >= size {
            0
        } else {
            (size - first + dil - 1) / dil
        };
        let hi = (hi as usize).min(self.kernel[d]);
        (first, (lo as usize).min(hi)..hi)
    }

    /// Every output position's taps along dimension `d` (the first input position inside the
    /// image, how many taps land inside, the step between them), computed once per call
    /// rather than once per output.
    fn all_taps(&self, d: usize) -> Vec<(usize, usize, usize)> {
        let out = self.out_size()[d];
        (0..out)
            .map(|o| {
                let (first, taps) = self.taps(d, o);
                let start = first + (taps.start * self.dilation[d]) as isize;
                (start.max(0) as usize, taps.len(), self.dilation[d])
            })
            .collect()
    }
}

/// The maximum of one window of `plane` (width `w`) and its flat index: the first one on
/// ties, as PyTorch; a NaN wins, so it propagates. `(-inf, -1)` for a window wholly in the
/// padding.
#[inline]
fn window_max(
    plane: &[f32],
    w: usize,
    (y0, ny, dy): (usize, usize, usize),
    (x0, nx, dx): (usize, usize, usize),
) -> (f32, i64) {
    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
    for iy in (y0..).step_by(dy).take(ny) {
        let line = &plane[iy * w..(iy + 1) * w];
        for ix in (x0..).step_by(dx).take(nx) {
            let v = line[ix];
            if v > best || at == usize::MAX || (v.is_nan() && !best.is_nan()) {
                (best, at) = (v, iy * w + ix);
            }
        }
    }
    (best, if at == usize::MAX { -1 } else { at as i64 })
}

/// Max pooling forward: returns the output `[planes, OH, OW]` and, for each output, the flat
/// index `h * W + w` of its maximum within the input plane (see `window_max` for ties).
pub fn max_pool2d_with_indices(geo: &Pool2dGeometry, input: &[f32]) -> (Vec<f32>, Vec<i64>) {
    let [oh, ow] = geo.out_size();
    assert_eq!(
        input.len(),
        geo.planes * geo.in_plane(),
        "max_pool2d: input length for {geo:?}"
    );
    let (rows, cols) = (geo.all_taps(0), geo.all_taps(1));
    let plain_2x2 = geo.kernel == [2, 2]
        && geo.stride == [2, 2]
        && geo.padding == [0, 0]
        && geo.dilation == [1, 1]
        && 2 * oh <= geo.in_size[0]
        && 2 * ow <= geo.in_size[1];
    let mut output = vec![0.0; geo.planes * oh * ow];
    let mut indices = vec![0i64; output.len()];
    output
        .par_chunks_mut(oh * ow)
        .zip(indices.par_chunks_mut(oh * ow))
        .zip(input.par_chunks(geo.in_plane()))
        .for_each(|((out, idx), plane)| {
            if plain_2x2 {
                return max_pool_2x2(plane, geo.in_size[1], [oh, ow], out, idx);
            }
            for (oy, &ry) in rows.iter().enumerate() {
                for (ox, &rx) in cols.iter().enumerate() {
                    (out[oy * ow + ox], idx[oy * ow + ox]) =
                        window_max(plane, geo.in_size[1], ry, rx);
                }
            }
        });
    (output, indices)
}

/// The tutorials' `MaxPool2d(2)` (2x2 windows, stride 2, no padding, every window inside the
/// plane) without the general path's per-tap bookkeeping, which a profile of LeNet-5 put at
/// 15% of a training step; the same results, ties and NaNs included. Written without
/// branches: which of four taps is largest is a coin toss for the branch predictor, and its
/// misses made this 7% of LeNet-5's step (`perf`, AMD EPYC, 2026-12-07).
fn max_pool_2x2(plane: &[f32], w: usize, [oh, ow]: [usize; 2], out: &mut [f32], idx: &mut [i64]) {
    max_pool_2x2_on(Isa::best(), plane, w, [oh, ow], out, idx)
}

multiversion! {
    fn max_pool_2x2_on(plane: &[f32], w: usize, size: [usize; 2], out: &mut [f32], idx: &mut [i64]) {
        let [oh, ow] = size;
        for (oy, (out, idx)) in out.chunks_exact_mut(ow).zip(idx.chunks_exact_mut(ow)).take(oh).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for (ox, (o, i)) in out.iter_mut().zip(idx.iter_mut()).enumerate() {
                let x = 2 * ox;
                let taps = [top[x], top[x + 1], bottom[x], bottom[x + 1]];
                let (mut best, mut at) = (taps[0], 0usize);
                for (k, &v) in taps.iter().enumerate().skip(1) {
                    // Non-short-circuit `|` and `&`, so that both sides are computed and the
                    // choice compiles to selects.
                    let take = (v > best) | (v.is_nan() & !best.is_nan());
                    best = if take { v } else { best };
                    at = if take { k } else { at };
                }
                *o = best;
                *i = ((2 * oy + at / 2) * w + x + at % 2) as i64;
            }
        }
    }
}

/// Max pooling forward without indices (inference): the same windows, the indices dropped
/// (their buffer is a quarter of the input's size or less for the usual 2x2 windows).
pub fn max_pool2d(geo: &Pool2dGeometry, input: &[f32]) -> Vec<f32> {
    max_pool2d_with_indices(geo, input).0
}

/// Max pooling backward: each output's gradient added to the input position its index names.
pub fn max_pool2d_backward(geo: &Pool2dGeometry, output_grad: &[f32], indices: &[i64]) -> Vec<f32> {
    let [oh, ow] = geo.out_size();
    let plane_out = oh * ow;
    assert_eq!(
        output_grad.len(),
        geo.planes * plane_out,
        "max_pool2d backward: gradient length"
    );
    assert_eq!(
        indices.len(),
        output_grad.len(),
        "max_pool2d backward: indices length"
    );
    let mut input_grad = vec![0.0; geo.planes * geo.in_plane()];
    input_grad
        .par_chunks_mut(geo.in_plane())
        .zip(output_grad.par_chunks(plane_out))
        .zip(indices.par_chunks(plane_out))
        .for_each(|((grad_in, grad_out), idx)| {
            for (g, &i) in grad_out.iter().zip(idx) {
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| grad_in.get_mut(i)) {
                    *slot += g;
                }
            }
        });
    input_grad
}

/// PyTorch's average-pooling window for output `o` along dimension `d`: the input positions
/// it covers (start, end exclusive; empty when the window lies wholly in the padding) and its
/// length counting the padding but not the part past it that `ceil_mode` adds.
fn avg_window(geo: &Pool2dGeometry, d: usize, o: usize) -> (usize, usize, usize) {
    let (size, pad) = (geo.in_size[d] as isize, geo.padding[d] as isize);
    let start = (o * geo.stride[d]) as isize - pad;
    let end = (start + geo.kernel[d] as isize).min(size + pad);
    let padded = (end - start).max(0) as usize;
    let (lo, hi) = (start.max(0), end.min(size));
    (lo as usize, hi.max(lo) as usize, padded)
}

/// One output's input rows and columns (start, end exclusive) and its divisor.
type AvgWindow = ((usize, usize), (usize, usize), f32);

/// Every output's window along both dimensions and the divisor PyTorch uses for it: the
/// padded window size with `count_include_pad`, else the number of input positions in it.
fn avg_windows(geo: &Pool2dGeometry, count_include_pad: bool) -> Vec<AvgWindow> {
    assert_eq!(geo.dilation, [1, 1], "average pooling has no dilation");
    let [oh, ow] = geo.out_size();
    let mut windows = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        let (y0, y1, py) = avg_window(geo, 0, oy);
        for ox in 0..ow {
            let (x0, x1, px) = avg_window(geo, 1, ox);
            let divisor = if count_include_pad {
                py * px
            } else {
                (y1 - y0) * (x1 - x0)
            };
            windows.push(((y0, y1), (x0, x1), divisor as f32));
        }
    }
    windows
}

/// Average pooling forward: output `[planes, OH, OW]`, each the sum of its window divided as
/// PyTorch does, by the window's size counting the padding (but not what `ceil_mode` adds past
/// it) with `count_include_pad`, else by the number of input positions in it; 0 for a window
/// with no input in it.
pub fn avg_pool2d(geo: &Pool2dGeometry, input: &[f32], count_include_pad: bool) -> Vec<f32> {
    assert_eq!(
        input.len(),
        geo.planes * geo.in_plane(),
        "avg_pool2d: input length for {geo:?}"
    );
    let windows = avg_windows(geo, count_include_pad);
    let w = geo.in_size[1];
    let mut output = vec![0.0; geo.planes * windows.len()];
    output
        .par_chunks_mut(windows.len().max(1))
        .zip(input.par_chunks(geo.in_plane().max(1)))
        .for_each(|(out, plane)| {
            for (o, &((y0, y1), (x0, x1), divisor)) in out.iter_mut().zip(&windows) {
                if y0 == y1 || x0 == x1 {
                    continue;
                }
                let mut sum = 0.0;
                for line in plane[y0 * w..y1 * w].chunks_exact(w) {
                    sum += line[x0..x1].iter().sum::<f32>();
                }
                *o = sum / divisor;
            }
        });
    output
}

/// Average pooling backward: each output's gradient, divided as in the forward pass, added to
/// every input position of its window.
pub fn avg_pool2d_backward(
    geo: &Pool2dGeometry,
    output_grad: &[f32],
    count_include_pad: bool,
) -> Vec<f32> {
    let windows = avg_windows(geo, count_include_pad);
    assert_eq!(
        output_grad.len(),
        geo.planes * windows.len(),
        "avg_pool2d backward: gradient length for {geo:?}"
    );
    let w = geo.in_size[1];
    let mut input_grad = vec![0.0; geo.planes * geo.in_plane()];
    input_grad
        .par_chunks_mut(geo.in_plane().max(1))
        .zip(output_grad.par_chunks(windows.len().max(1)))
        .for_each(|(grad_in, grad_out)| {
            for (&g, &((y0, y1), (x0, x1), divisor)) in grad_out.iter().zip(&windows) {
                let share = g / divisor;
                for line in grad_in[y0 * w..y1 * w].chunks_exact_mut(w) {
                    line[x0..x1].iter_mut().for_each(|v| *v += share);
                }
            }
        });
    input_grad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(
        in_size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Pool2dGeometry {
        Pool2dGeometry {
            planes: 1,
            in_size,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode: true,
        }
    }

    /// Output sizes PyTorch 2.9 gives (`F.max_pool2d(..., ceil_mode=True).shape`). The first
    /// drops a last window that would start in the right padding; burn-flex 0.21 keeps it
    /// (4x4), which is why the comparison with burn-flex avoids that case.
    #[test]
    fn ceil_mode_sizes_follow_pytorch() {
        assert_eq!(
            geometry([7, 9], [3, 2], [2, 3], [1, 0], [1, 1]).out_size(),
            [4, 3]
        );
        assert_eq!(
            geometry([11, 10], [2, 3], [1, 2], [0, 1], [2, 2]).out_size(),
            [9, 5]
        );
    }

    #[test]
    fn every_output_takes_the_first_maximum_of_its_window_and_its_gradient_goes_there() {
        // One 3x4 plane, 2x2 windows, stride 2: two windows, with a tie in the first.
        let geo = Pool2dGeometry {
            ceil_mode: false,
            ..geometry([3, 4], [2, 2], [2, 2], [0, 0], [1, 1])
        };
        let input = [1.0, 5.0, 0.0, 2.0, 5.0, 3.0, 9.0, -1.0, 7.0, 7.0, 7.0, 7.0];
        let (out, idx) = max_pool2d_with_indices(&geo, &input);
        assert_eq!((out, idx.clone()), (vec![5.0, 9.0], vec![1, 6]));
        let grad = max_pool2d_backward(&geo, &[0.5, 2.0], &idx);
        assert_eq!(
            grad,
            [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    /// PyTorch 2.9's values: `F.avg_pool2d(x, 2, stride=2, padding=1, ceil_mode=True,
    /// count_include_pad=...)` on `x = torch.arange(12.).reshape(1, 1, 3, 4)`; the last row of
    /// windows starts in the bottom padding row and its divisor stops there.
    #[test]
    fn average_windows_divide_as_pytorch() {
        let geo = Pool2dGeometry {
            padding: [1, 1],
            ..geometry([3, 4], [2, 2], [2, 2], [1, 1], [1, 1])
        };
        assert_eq!(geo.out_size(), [2, 3]);
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(avg_pool2d(&geo, &x, true), [0.0, 0.75, 0.75, 3.0, 7.5, 4.5]);
        assert_eq!(avg_pool2d(&geo, &x, false), [0.0, 1.5, 3.0, 6.0, 7.5, 9.0]);
        // The gradient of the outputs' sum: each input is in one window, whose padded
        // size is 4 everywhere (PyTorch: `x.grad` is 0.25 throughout).
        assert_eq!(avg_pool2d_backward(&geo, &[1.0; 6], true), [0.25; 12]);
        assert_eq!(
            avg_pool2d_backward(&geo, &[1.0; 6], false),
            [1.0, 0.5, 0.5, 1.0, 0.5, 0.25, 0.25, 0.5, 0.5, 0.25, 0.25, 0.5]
        );
    }

    /// The 2x2 fast path against the general window code on the same windows, with ties and
    /// NaNs (one alone, two side by side) in the input.
    #[test]
    fn the_2x2_path_gives_the_general_paths_results() {
        let geo = Pool2dGeometry {
            planes: 3,
            ceil_mode: false,
            ..geometry([6, 9], [2, 2], [2, 2], [0, 0], [1, 1])
        };
        let mut input: Vec<f32> = (0..3 * 54).map(|i| ((i * 37) % 11) as f32).collect();
        input[10] = f32::NAN;
        input[70] = f32::NAN;
        input[71] = f32::NAN;
        let (out, idx) = max_pool2d_with_indices(&geo, &input);
        let (rows, cols) = (geo.all_taps(0), geo.all_taps(1));
        let [oh, ow] = geo.out_size();
        assert_eq!((rows.len(), cols.len()), (oh, ow));
        for (p, plane) in input.chunks(54).enumerate() {
            for (oy, &ry) in rows.iter().enumerate() {
                for (ox, &rx) in cols.iter().enumerate() {
                    let (v, i) = window_max(plane, 9, ry, rx);
                    let o = p * oh * ow + oy * ow + ox;
                    assert_eq!((out[o].to_bits(), idx[o]), (v.to_bits(), i), "output {o}");
                }
            }
        }
    }
}
