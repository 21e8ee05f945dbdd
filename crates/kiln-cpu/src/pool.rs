//! 2-D max pooling on contiguous `f32` NCHW slices, with the argmax indices that training
//! needs and the backward pass that scatters through them. Work is split over (image,
//! channel) planes, each written by one thread, so results do not depend on the thread count.

use rayon::prelude::*;

/// The geometry of one 2-D max pooling.
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
    let mut output = vec![0.0; geo.planes * oh * ow];
    let mut indices = vec![0i64; output.len()];
    output
        .par_chunks_mut(oh * ow)
        .zip(indices.par_chunks_mut(oh * ow))
        .zip(input.par_chunks(geo.in_plane()))
        .for_each(|((out, idx), plane)| {
            for (oy, &ry) in rows.iter().enumerate() {
                for (ox, &rx) in cols.iter().enumerate() {
                    (out[oy * ow + ox], idx[oy * ow + ox]) =
                        window_max(plane, geo.in_size[1], ry, rx);
                }
            }
        });
    (output, indices)
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
}
