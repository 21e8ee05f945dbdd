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

/// Max pooling forward: returns the output `[planes, OH, OW]` and, for each output, the flat
/// index `h * W + w` of its maximum within the input plane: the first one in row-major order
/// on ties, as PyTorch; a NaN wins, so it propagates; `(-inf, -1)` for a window wholly in the
/// padding.
pub fn max_pool2d_with_indices(geo: &Pool2dGeometry, input: &[f32]) -> (Vec<f32>, Vec<i64>) {
    max_pool(geo, input, true)
}

/// Max pooling forward without indices (inference): the same values, and no index buffer
/// written or allocated.
pub fn max_pool2d(geo: &Pool2dGeometry, input: &[f32]) -> Vec<f32> {
    max_pool(geo, input, false).0
}

fn max_pool(geo: &Pool2dGeometry, input: &[f32], with_indices: bool) -> (Vec<f32>, Vec<i64>) {
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
    let isa = Isa::best();
    let plane_out = (oh * ow).max(1);
    let mut output = vec![0.0; geo.planes * oh * ow];
    let mut indices = vec![0i64; if with_indices { output.len() } else { 0 }];
    let job = |scratch: &mut PlaneScratch,
               ((out, idx), plane): ((&mut [f32], &mut [i64]), &[f32])| {
        if plain_2x2 {
            max_pool_2x2(isa, plane, geo.in_size[1], [oh, ow], out, idx);
        } else {
            max_pool_plane(isa, geo, &rows, &cols, plane, scratch, out, idx);
        }
    };
    let scratch = PlaneScratch::default;
    let planes = input.par_chunks(geo.in_plane().max(1));
    if with_indices {
        output
            .par_chunks_mut(plane_out)
            .zip(indices.par_chunks_mut(plane_out))
            .zip(planes)
            .for_each_init(scratch, job);
    } else {
        output
            .par_chunks_mut(plane_out)
            .map(|out| (out, &mut [][..]))
            .zip(planes)
            .for_each_init(scratch, job);
    }
    (output, indices)
}

/// Whether `v` displaces `best` as a window's maximum: strictly larger, or the first NaN.
/// Non-short-circuit `|` and `&`, so that both sides are computed and the choices compile to
/// selects: which tap is largest is a coin toss for the branch predictor, and its misses made
/// the pools 7% of LeNet-5's step (`perf`, AMD EPYC, 2026-12-07).
#[inline(always)]
fn displaces(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// Per input column, lane by lane: the maximum down a window's rows and the row holding it.
#[derive(Default)]
struct ColumnMaxima {
    value: Vec<f32>,
    row: Vec<u32>,
}

impl ColumnMaxima {
    fn fit(&mut self, len: usize) {
        self.value.resize(len, 0.0);
        self.row.resize(len, 0);
    }
}

/// Where each of a row of maxima is.
#[derive(Default)]
struct Places {
    row: Vec<u32>,
    col: Vec<u32>,
}

impl Places {
    fn fit(&mut self, len: usize) {
        self.row.resize(len, 0);
        self.col.resize(len, 0);
    }
}

/// Per output column, lane by lane: the maximum so far and where it is.
#[derive(Default)]
struct Maxima {
    value: Vec<f32>,
    at: Places,
}

impl Maxima {
    fn fit(&mut self, len: usize) {
        self.value.resize(len, 0.0);
        self.at.fit(len);
    }
}

/// The buffers one thread reuses across the planes it pools. Updates go from one buffer of a
/// pair to the other rather than in place: an in-place select compiled to masked stores,
/// which took most of the pool's time on the AMD EPYC (`perf annotate`, 2026-12-07).
#[derive(Default)]
struct PlaneScratch {
    /// Per input column (padded to a multiple of the stride).
    down: [ColumnMaxima; 2],
    /// The same, split by column modulo the stride: phase p holds columns p, p + stride, ...
    phases: ColumnMaxima,
    /// Per output column.
    across: [Maxima; 2],
    /// Where the maxima of the output row being written are, for the indices (their values
    /// go straight into the output).
    found: Places,
}

impl PlaneScratch {
    fn fit(&mut self, padded_width: usize, out_width: usize) {
        for m in self.down.iter_mut().chain([&mut self.phases]) {
            m.fit(padded_width);
        }
        for m in &mut self.across {
            m.fit(out_width);
        }
        self.found.fit(out_width);
    }
}

multiversion! {
    /// One plane's windows, one row of outputs at a time in two passes: down the rows of its
    /// windows, each input column's maximum and the row holding it; then across each window's
    /// columns. Both passes run whole rows at a time, which vectorises: the second reads the
    /// columns split by their position modulo the stride, where every tap of the windows that
    /// lie wholly inside the plane is one contiguous run. On ties the earlier row wins, then
    /// the earlier column: the first maximum in row-major order, as a window scanned whole
    /// (NaNs alike). `idx` empty: values only.
    fn max_pool_plane(
        geo: &Pool2dGeometry,
        rows: &[(usize, usize, usize)],
        cols: &[(usize, usize, usize)],
        plane: &[f32],
        scratch: &mut PlaneScratch,
        out: &mut [f32],
        idx: &mut [i64],
    ) {
        let (w, stride, ow) = (geo.in_size[1], geo.stride[1], cols.len());
        let per_phase = w.div_ceil(stride);
        scratch.fit(per_phase * stride, ow);
        let PlaneScratch { down, phases, across, found } = scratch;
        // Output columns whose windows lie wholly inside the plane: a contiguous range.
        let lo = cols.iter().position(|c| c.1 == geo.kernel[1]).unwrap_or(ow);
        let hi = lo + cols[lo..].iter().take_while(|c| c.1 == geo.kernel[1]).count();
        for (oy, &(y0, ny, dy)) in rows.iter().enumerate() {
            let out = &mut out[oy * ow..][..ow];
            if ny == 0 {
                out.fill(f32::NEG_INFINITY);
                if !idx.is_empty() {
                    idx[oy * ow..][..ow].fill(-1);
                }
                continue;
            }
            let [mut cur, mut next] = down.each_mut();
            cur.value[..w].copy_from_slice(&plane[y0 * w..][..w]);
            cur.row.fill(y0 as u32);
            for y in (1..ny).map(|k| y0 + k * dy) {
                let line = &plane[y * w..][..w];
                let dst = next.value.iter_mut().zip(next.row.iter_mut());
                let src = cur.value.iter().zip(&cur.row).zip(line);
                for ((m, r), ((&old, &old_row), &v)) in dst.zip(src) {
                    let take = displaces(v, old);
                    *m = if take { v } else { old };
                    *r = if take { y as u32 } else { old_row };
                }
                std::mem::swap(&mut cur, &mut next);
            }
            // Border columns: tap by tap.
            for ox in (0..lo).chain(hi..ow) {
                let (x0, nx, dx) = cols[ox];
                if nx == 0 {
                    let none = (f32::NEG_INFINITY, u32::MAX, 0);
                    (out[ox], found.row[ox], found.col[ox]) = none;
                    continue;
                }
                let (mut best, mut row, mut col) = (cur.value[x0], cur.row[x0], x0 as u32);
                for x in (1..nx).map(|k| x0 + k * dx) {
                    let (v, r) = (cur.value[x], cur.row[x]);
                    let take = displaces_earlier(v, r, best, row);
                    best = if take { v } else { best };
                    row = if take { r } else { row };
                    col = if take { x as u32 } else { col };
                }
                (out[ox], found.row[ox], found.col[ox]) = (best, row, col);
            }
            if lo < hi {
                let taps = if stride == 1 {
                    &*cur
                } else {
                    for p in 0..stride {
                        let src = cur.value.chunks_exact(stride).zip(cur.row.chunks_exact(stride));
                        let dst = phases.value[p * per_phase..][..per_phase].iter_mut();
                        let dst = dst.zip(phases.row[p * per_phase..][..per_phase].iter_mut());
                        for ((m, r), (ms, rs)) in dst.zip(src) {
                            (*m, *r) = (ms[p], rs[p]);
                        }
                    }
                    &*phases
                };
                let (first, dx, n) = (cols[lo].0, cols[lo].2, hi - lo);
                // Where column x's run starts in `taps`.
                let start = |x: usize| {
                    if stride == 1 {
                        x
                    } else {
                        (x % stride) * per_phase + x / stride
                    }
                };
                let [mut best, mut next] = across.each_mut();
                let s = start(first);
                best.value[..n].copy_from_slice(&taps.value[s..][..n]);
                best.at.row[..n].copy_from_slice(&taps.row[s..][..n]);
                for (j, c) in best.at.col[..n].iter_mut().enumerate() {
                    *c = (first + j * stride) as u32;
                }
                for x in (1..geo.kernel[1]).map(|k| first + k * dx) {
                    let s = start(x);
                    let cand = taps.value[s..][..n].iter().zip(&taps.row[s..][..n]);
                    let cand = cand.zip((0..n as u32).map(|j| x as u32 + j * stride as u32));
                    let old = best.value.iter().zip(&best.at.row).zip(&best.at.col);
                    let dst = next.value.iter_mut().zip(next.at.row.iter_mut());
                    let dst = dst.zip(next.at.col.iter_mut());
                    for (((m, r), c), ((&ov, &or), &oc), ((&v, &vr), vc)) in
                        dst.zip(old).zip(cand).map(|((d, o), c)| (d, o, c))
                    {
                        let take = displaces_earlier(v, vr, ov, or);
                        *m = if take { v } else { ov };
                        *r = if take { vr } else { or };
                        *c = if take { vc } else { oc };
                    }
                    std::mem::swap(&mut best, &mut next);
                }
                out[lo..hi].copy_from_slice(&best.value[..n]);
                found.row[lo..hi].copy_from_slice(&best.at.row[..n]);
                found.col[lo..hi].copy_from_slice(&best.at.col[..n]);
            }
            if !idx.is_empty() {
                let idx = &mut idx[oy * ow..][..ow];
                for ((i, &r), &c) in idx.iter_mut().zip(&found.row).zip(&found.col) {
                    *i = if r == u32::MAX { -1 } else { r as i64 * w as i64 + c as i64 };
                }
            }
        }
    }
}

/// Whether `v` (from row `r`) displaces `best` (from row `row`) when the two come from
/// different columns, `v`'s the later one: larger, or equal and from an earlier row, or a NaN
/// where `best` is none or from a later row.
#[inline(always)]
fn displaces_earlier(v: f32, r: u32, best: f32, row: u32) -> bool {
    let earlier = r < row;
    (v > best) | ((v == best) & earlier) | (v.is_nan() & (!best.is_nan() | earlier))
}

multiversion! {
    /// The tutorials' `MaxPool2d(2)` (2x2 windows, stride 2, no padding, every window inside
    /// the plane) without the general path's row pass: the same results, ties and NaNs
    /// included. `idx` empty: values only.
    fn max_pool_2x2(plane: &[f32], w: usize, size: [usize; 2], out: &mut [f32], idx: &mut [i64]) {
        let [oh, ow] = size;
        for (oy, out) in out.chunks_exact_mut(ow).take(oh).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            let window = |x: usize| {
                let taps = [top[x], top[x + 1], bottom[x], bottom[x + 1]];
                let (mut best, mut at) = (taps[0], 0usize);
                for (k, &v) in taps.iter().enumerate().skip(1) {
                    let take = displaces(v, best);
                    best = if take { v } else { best };
                    at = if take { k } else { at };
                }
                (best, ((2 * oy + at / 2) * w + x + at % 2) as i64)
            };
            if idx.is_empty() {
                for (ox, o) in out.iter_mut().enumerate() {
                    *o = window(2 * ox).0;
                }
            } else {
                let idx = &mut idx[oy * ow..][..ow];
                for (ox, (o, i)) in out.iter_mut().zip(idx).enumerate() {
                    (*o, *i) = window(2 * ox);
                }
            }
        }
    }
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

    /// Two NaNs, and two equal maxima, one in an earlier row and a later column: the first in
    /// row-major order wins, as in PyTorch's scan, not the first column.
    #[test]
    fn ties_across_rows_and_columns_resolve_in_row_major_order() {
        let geo = Pool2dGeometry {
            ceil_mode: false,
            ..geometry([3, 3], [3, 3], [1, 1], [0, 0], [1, 1])
        };
        let nan = f32::NAN;
        let (_, idx) =
            max_pool2d_with_indices(&geo, &[0.0, 1.0, nan, nan, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(idx, [2]);
        let (out, idx) =
            max_pool2d_with_indices(&geo, &[0.0, 1.0, 7.0, 7.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!((out, idx), (vec![7.0], vec![2]));
    }

    /// A window scanned whole, row-major: the reference the two-pass and 2x2 paths must
    /// match bit for bit, index for index.
    fn window_max(geo: &Pool2dGeometry, plane: &[f32], oy: usize, ox: usize) -> (f32, i64) {
        let (mut best, mut at) = (f32::NEG_INFINITY, -1i64);
        let w = geo.in_size[1] as isize;
        for ky in 0..geo.kernel[0] {
            let y = (oy * geo.stride[0] + ky * geo.dilation[0]) as isize - geo.padding[0] as isize;
            for kx in 0..geo.kernel[1] {
                let x =
                    (ox * geo.stride[1] + kx * geo.dilation[1]) as isize - geo.padding[1] as isize;
                if y < 0 || x < 0 || y >= geo.in_size[0] as isize || x >= w {
                    continue;
                }
                let v = plane[(y * w + x) as usize];
                if at < 0 || v > best || (v.is_nan() && !best.is_nan()) {
                    (best, at) = (v, (y * w + x) as i64);
                }
            }
        }
        (best, at)
    }

    /// Both paths (the 2x2 one and the two-pass one) against whole-window scans, with ties,
    /// signed zeros, infinities and NaNs (one alone, two side by side) in the input, on the
    /// seed models' windows and on padded, dilated, rectangular and `ceil_mode` ones; and the
    /// values-only path against the values of the indexed one.
    #[test]
    fn every_path_takes_the_first_maximum_of_a_whole_window_scan() {
        let geometries = [
            geometry([6, 9], [2, 2], [2, 2], [0, 0], [1, 1]),
            Pool2dGeometry {
                ceil_mode: false,
                ..geometry([7, 9], [2, 2], [2, 2], [0, 0], [1, 1])
            },
            Pool2dGeometry {
                ceil_mode: false,
                ..geometry([45, 45], [3, 3], [2, 2], [1, 1], [1, 1])
            },
            geometry([7, 9], [3, 2], [2, 3], [1, 0], [1, 1]),
            geometry([11, 10], [2, 3], [1, 2], [0, 1], [2, 2]),
            geometry([5, 6], [3, 3], [1, 1], [1, 1], [1, 1]),
            geometry([2, 2], [3, 3], [1, 1], [1, 1], [1, 1]),
            geometry([4, 3], [3, 3], [2, 1], [1, 1], [1, 1]),
        ];
        for base in geometries {
            let geo = Pool2dGeometry { planes: 3, ..base };
            let plane = geo.in_plane();
            let mut input: Vec<f32> = (0..3 * plane)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            let len = input.len();
            let specials = [
                (10, f32::NAN),
                (plane + 7, f32::NAN),
                (plane + 8, f32::NAN),
                (2 * plane + 1, -0.0),
                (2 * plane + 2, 0.0),
                (2 * plane + 3, f32::INFINITY),
                (2 * plane + 4, f32::NEG_INFINITY),
            ];
            for (at, v) in specials {
                input[at % len] = v;
            }
            let (out, idx) = max_pool2d_with_indices(&geo, &input);
            let values = max_pool2d(&geo, &input);
            let [oh, ow] = geo.out_size();
            assert_eq!(out.len(), 3 * oh * ow, "{geo:?}");
            for (p, plane) in input.chunks(plane).enumerate() {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (v, i) = window_max(&geo, plane, oy, ox);
                        let o = p * oh * ow + oy * ow + ox;
                        let got = (out[o].to_bits(), idx[o], values[o].to_bits());
                        assert_eq!(got, (v.to_bits(), i, v.to_bits()), "{geo:?} output {o}");
                    }
                }
            }
        }
    }
}
