//! 2-D convolution on contiguous `f32` NCHW slices: the forward pass and both gradients, as
//! im2col + GEMM on the `gemm` crate; for the stride-1 3x3 layers that [`winograd`] takes,
//! all three by Winograd's F(4x4, 3x3); for the narrow stride-1 layers and the first layers
//! of image networks that [`direct`] takes, by direct sums without im2col.
//!
//! Work is split over images, or groups of images of a size fixed by the geometry (forward,
//! input gradient), or over fixed blocks of the weight gradient's columns, never over a
//! reduction, so every output element is summed in the same order whatever the number of
//! threads: the same inputs give the same bits.

use rayon::prelude::*;

use crate::isa::Isa;
use crate::matmul::{matmul, View};
use crate::{direct, norm, winograd};

/// The fewest columns (images x output positions) the forward pass and the input gradient
/// give one GEMM. One image per GEMM left the late layers of the ResNets (3x3 to 12x12
/// outputs) with 9 to 144 columns, below or just past the 64-row tiles of gemm's AVX-512
/// kernel: its 16-row edge kernel took 18% of resnet-cifar10's step (`perf`, 2026-12-05).
const MIN_GEMM_COLUMNS: usize = 128;

/// The geometry of one 2-D convolution (groups = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_size: [usize; 2],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride per spatial dimension (non-zero).
    pub stride: [usize; 2],
    /// Zero padding on both sides of each spatial dimension.
    pub padding: [usize; 2],
    /// Dilation per spatial dimension (non-zero).
    pub dilation: [usize; 2],
}

impl Conv2dGeometry {
    /// Output height and width, as PyTorch and Burn compute them.
    pub fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|d| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            (self.in_size[d] + 2 * self.padding[d]).saturating_sub(span) / self.stride[d] + 1
        })
    }

    pub(crate) fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    pub(crate) fn out_plane(&self) -> usize {
        let [h, w] = self.out_size();
        h * w
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// A 1x1 kernel with unit stride and no padding reads the image as its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Images whose column matrices the forward pass and the input gradient put side by side
    /// in one GEMM: enough for [`MIN_GEMM_COLUMNS`] columns. A function of the geometry alone,
    /// never of the thread count, so the same inputs still give the same bits everywhere.
    fn images_per_gemm(&self) -> usize {
        if self.is_pointwise() {
            return 1;
        }
        MIN_GEMM_COLUMNS
            .div_ceil(self.out_plane().max(1))
            .clamp(1, self.batch.max(1))
    }

    /// A per-thread im2col buffer for [`Self::images_per_gemm`] images (empty for pointwise
    /// kernels, which need none).
    fn col_buffer(&self) -> Vec<f32> {
        vec![
            0.0;
            if self.is_pointwise() {
                0
            } else {
                self.patch_len() * self.out_plane() * self.images_per_gemm()
            }
        ]
    }

    /// A per-thread `[out_channels, images x out_plane]` buffer for a GEMM over several images
    /// (empty where one image is one GEMM).
    fn wide_buffer(&self) -> Vec<f32> {
        let images = self.images_per_gemm();
        vec![
            0.0;
            if images > 1 {
                self.out_channels * self.out_plane() * images
            } else {
                0
            }
        ]
    }

    pub(crate) fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_plane()
    }

    pub(crate) fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_plane()
    }

    pub(crate) fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// The input row read by output row `oy` through kernel row `ki`, or `None` in the
    /// padding.
    #[inline]
    fn source_row(&self, oy: usize, ki: usize) -> Option<usize> {
        (oy * self.stride[0] + ki * self.dilation[0])
            .checked_sub(self.padding[0])
            .filter(|&i| i < self.in_size[0])
    }

    /// For kernel column `kj`: the first input column read (possibly negative, in the left
    /// padding) and the range of output columns whose input column lies inside the image.
    #[inline]
    fn column_span(&self, kj: usize) -> (isize, std::ops::Range<usize>) {
        let ow = self.out_size()[1];
        let (s, w) = (self.stride[1] as isize, self.in_size[1] as isize);
        let first = (kj * self.dilation[1]) as isize - self.padding[1] as isize;
        // ox is inside when 0 <= first + ox * s < w.
        let lo = if first >= 0 { 0 } else { (-first + s - 1) / s };
        let hi = if first >= w {
            0
        } else {
            (w - first + s - 1) / s
        };
        let (lo, hi) = (lo as usize, (hi as usize).min(ow));
        (first, lo.min(hi)..hi)
    }

    /// Unfolds one image `[in_channels, h, w]` into the first `out_plane` columns of each of
    /// `col`'s `patch_len` rows, `row_len` apart (`out_plane` for one image alone; more where
    /// images sit side by side, `col` then starting at this image's first column).
    fn im2col(&self, image: &[f32], col: &mut [f32], row_len: usize) {
        self.im2col_channels(image, 0..self.in_channels, col, row_len);
    }

    /// [`Self::im2col`] of the input channels `channels` only, into `col`'s rows from the first
    /// of those channels' (`kernel` rows per channel).
    fn im2col_channels(
        &self,
        image: &[f32],
        channels: std::ops::Range<usize>,
        col: &mut [f32],
        row_len: usize,
    ) {
        let [oh, ow] = self.out_size();
        let [kh, kw] = self.kernel;
        let s = self.stride[1];
        let mut rows = col.chunks_mut(row_len).map(|row| &mut row[..oh * ow]);
        for c in channels {
            let plane = &image[c * self.in_plane()..(c + 1) * self.in_plane()];
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = rows.next().expect("col has patch_len rows");
                    let (first, inside) = self.column_span(kj);
                    for (oy, out_row) in row.chunks_exact_mut(ow).enumerate() {
                        let Some(iy) = self.source_row(oy, ki) else {
                            out_row.fill(0.0);
                            continue;
                        };
                        let line = &plane[iy * self.in_size[1]..(iy + 1) * self.in_size[1]];
                        out_row[..inside.start].fill(0.0);
                        out_row[inside.end..].fill(0.0);
                        // `inside` keeps every index in the line.
                        let start = (first + (inside.start * s) as isize) as usize;
                        let dst = &mut out_row[inside.clone()];
                        if s == 1 {
                            dst.copy_from_slice(&line[start..start + dst.len()]);
                        } else {
                            let src = &line[start..start + (dst.len() - 1) * s + 1];
                            for (v, x) in dst.iter_mut().zip(src.iter().step_by(s)) {
                                *v = *x;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds one image's columns of `col` (laid out as [`Self::im2col`] writes them, rows
    /// `row_len` apart) back onto that image's gradient.
    fn col2im(&self, col: &[f32], row_len: usize, image: &mut [f32]) {
        let [oh, ow] = self.out_size();
        let [kh, kw] = self.kernel;
        let s = self.stride[1];
        let mut rows = col.chunks(row_len).map(|row| &row[..oh * ow]);
        for c in 0..self.in_channels {
            let plane = &mut image[c * self.in_plane()..(c + 1) * self.in_plane()];
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = rows.next().expect("col has patch_len rows");
                    let (first, inside) = self.column_span(kj);
                    if inside.is_empty() {
                        continue;
                    }
                    for (oy, in_row) in row.chunks_exact(ow).enumerate() {
                        let Some(iy) = self.source_row(oy, ki) else {
                            continue;
                        };
                        let line = &mut plane[iy * self.in_size[1]..(iy + 1) * self.in_size[1]];
                        let start = (first + (inside.start * s) as isize) as usize;
                        let src = &in_row[inside.clone()];
                        let dst = &mut line[start..start + (src.len() - 1) * s + 1];
                        for (x, v) in dst.iter_mut().step_by(s).zip(src) {
                            *x += v;
                        }
                    }
                }
            }
        }
    }

    /// The stride-1 convolution whose forward pass is this one's input gradient: the output
    /// gradient convolved with the kernels flipped and transposed ([`Kernels::FlippedTransposed`]),
    /// padded by the kernel's reach less the padding (which must not exceed it).
    pub(crate) fn input_grad_geometry(&self) -> Conv2dGeometry {
        let back = Conv2dGeometry {
            in_channels: self.out_channels,
            in_size: self.out_size(),
            out_channels: self.in_channels,
            padding: [0, 1].map(|d| self.kernel[d] - 1 - self.padding[d]),
            ..*self
        };
        debug_assert_eq!(back.out_size(), self.in_size);
        back
    }

    pub(crate) fn check(&self, input: usize, weight: usize, output: usize) {
        assert_eq!(input, self.input_len(), "conv2d: input length for {self:?}");
        assert_eq!(
            weight,
            self.weight_len(),
            "conv2d: weight length for {self:?}"
        );
        assert_eq!(
            output,
            self.output_len(),
            "conv2d: output length for {self:?}"
        );
    }
}

/// How a kernel reads its `[outs, ins, kh, kw]` weights from the slice it is given: as they
/// are, or, for an input gradient run as a forward convolution, from the layer's own weight.
#[derive(Clone, Copy)]
pub(crate) enum Kernels {
    /// The weight is `[outs, ins, kh, kw]`.
    AsGiven,
    /// The weight is `[ins, outs, kh, kw]` and each kernel is rotated by 180 degrees.
    FlippedTransposed,
}

impl Kernels {
    /// Weight `(o, c, k)`, `k` the flat kernel position among `taps = kh * kw`.
    #[inline]
    pub(crate) fn at(
        self,
        weight: &[f32],
        [outs, ins, taps]: [usize; 3],
        [o, c, k]: [usize; 3],
    ) -> f32 {
        match self {
            Kernels::AsGiven => weight[(o * ins + c) * taps + k],
            Kernels::FlippedTransposed => weight[(c * outs + o) * taps + taps - 1 - k],
        }
    }
}

/// Forward convolution: `input [N, C, H, W]`, `weight [O, C, KH, KW]`, optional `bias [O]`,
/// returns `[N, O, OH, OW]`.
pub fn conv2d_forward(
    geo: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    geo.check(input.len(), weight.len(), geo.output_len());
    if winograd::chosen(geo) {
        return winograd::forward(geo, input, weight, bias);
    }
    if direct::forward_chosen(geo) {
        return direct::forward(geo, input, weight, bias);
    }
    let mut output = vec![0.0; geo.output_len()];
    let (plane, patch, outs) = (geo.out_plane(), geo.patch_len(), geo.out_channels);
    let image_len = geo.in_channels * geo.in_plane();
    let group = geo.images_per_gemm();
    output
        .par_chunks_mut(group * outs * plane)
        .zip(input.par_chunks(group * image_len))
        .for_each_init(
            || (geo.col_buffer(), geo.wide_buffer()),
            |(col, wide), (out, images)| {
                let count = images.len() / image_len;
                let cols = count * plane;
                let col: &[f32] = if geo.is_pointwise() {
                    images
                } else {
                    for (g, image) in images.chunks_exact(image_len).enumerate() {
                        geo.im2col(image, &mut col[g * plane..], cols);
                    }
                    col
                };
                // One image's result is already laid out as the output; several come back
                // as [outs, count x plane] and are put in image order below.
                let dst: &mut [f32] = if count == 1 {
                    &mut *out
                } else {
                    &mut wide[..outs * cols]
                };
                if let Some(bias) = bias {
                    for (row, b) in dst.chunks_exact_mut(cols).zip(bias) {
                        row.fill(*b);
                    }
                }
                let (a, b) = (
                    View::dense(weight, outs, patch),
                    View::dense(col, patch, cols),
                );
                matmul(dst, a, b, bias.is_some());
                if count > 1 {
                    scatter_images(wide, out, [count, outs, plane]);
                }
            },
        );
    output
}

/// `wide` `[outs, count x plane]` (images side by side) into `out` `[count, outs, plane]`.
fn scatter_images(wide: &[f32], out: &mut [f32], [count, outs, plane]: [usize; 3]) {
    for (o, row) in wide.chunks_exact(count * plane).take(outs).enumerate() {
        for (g, src) in row.chunks_exact(plane).enumerate() {
            out[(g * outs + o) * plane..][..plane].copy_from_slice(src);
        }
    }
}

/// `out` `[count, outs, plane]` into `wide` `[outs, count x plane]`: [`scatter_images`]
/// reversed.
fn gather_images(out: &[f32], wide: &mut [f32], [count, outs, plane]: [usize; 3]) {
    for (o, row) in wide.chunks_exact_mut(count * plane).take(outs).enumerate() {
        gather_row(out, o, row, [outs, plane]);
    }
}

/// Row `o` of [`gather_images`]'s result: channel `o` of each image, side by side.
fn gather_row(out: &[f32], o: usize, row: &mut [f32], [outs, plane]: [usize; 2]) {
    for (g, dst) in row.chunks_exact_mut(plane).enumerate() {
        dst.copy_from_slice(&out[(g * outs + o) * plane..][..plane]);
    }
}

/// Gradient of the loss with respect to the input, from the output's gradient
/// `output_grad [N, O, OH, OW]`; returns `[N, C, H, W]`.
pub fn conv2d_input_grad(geo: &Conv2dGeometry, weight: &[f32], output_grad: &[f32]) -> Vec<f32> {
    geo.check(geo.input_len(), weight.len(), output_grad.len());
    if winograd::chosen(geo) {
        return winograd::input_grad(geo, weight, output_grad);
    }
    if direct::input_grad_chosen(geo) {
        return direct::input_grad(geo, weight, output_grad);
    }
    let mut input_grad = vec![0.0; geo.input_len()];
    let (plane, patch, outs) = (geo.out_plane(), geo.patch_len(), geo.out_channels);
    let image_len = geo.in_channels * geo.in_plane();
    let group = geo.images_per_gemm();
    input_grad
        .par_chunks_mut(group * image_len)
        .zip(output_grad.par_chunks(group * outs * plane))
        .for_each_init(
            || (geo.col_buffer(), geo.wide_buffer()),
            |(col, wide), (image_grads, out_grads)| {
                let count = image_grads.len() / image_len;
                let cols = count * plane;
                let grads: &[f32] = if count == 1 {
                    out_grads
                } else {
                    gather_images(out_grads, wide, [count, outs, plane]);
                    &wide[..outs * cols]
                };
                // A pointwise kernel's column matrix is the image gradient itself.
                let dst: &mut [f32] = if geo.is_pointwise() {
                    &mut *image_grads
                } else {
                    &mut col[..patch * cols]
                };
                let a = View::transposed(weight, patch, outs);
                matmul(dst, a, View::dense(grads, outs, cols), false);
                if !geo.is_pointwise() {
                    for (g, image_grad) in image_grads.chunks_exact_mut(image_len).enumerate() {
                        geo.col2im(&col[g * plane..], cols, image_grad);
                    }
                }
            },
        );
    input_grad
}

/// Images unfolded together by the weight gradient: bounds the im2col buffer while leaving
/// enough images per step to amortise the parallel split.
const WEIGHT_GRAD_IMAGES: usize = 16;
/// Columns of the weight gradient per parallel task. Fixed (not derived from the thread
/// count) so that each element's sum is formed the same way on every machine.
const WEIGHT_GRAD_COLUMNS: usize = 64;
/// Below this many output positions per image, the weight gradient puts the images of a step
/// side by side and makes one GEMM of them (inner dimension images x positions) instead of one
/// per image: a ResNet's last stages have 3x3 to 6x6 outputs, and a GEMM whose inner
/// dimension is 9 spends its time packing, not multiplying.
const WEIGHT_GRAD_MIN_K: usize = 256;

/// Gradient of the loss with respect to the weight `[O, C, KH, KW]`, from the input and the
/// output's gradient.
pub fn conv2d_weight_grad(geo: &Conv2dGeometry, input: &[f32], output_grad: &[f32]) -> Vec<f32> {
    geo.check(input.len(), geo.weight_len(), output_grad.len());
    if winograd::chosen(geo) {
        return winograd::weight_grad(geo, input, output_grad);
    }
    if direct::forward_chosen(geo) {
        return direct::weight_grad(geo, input, output_grad);
    }
    let mut weight_grad = vec![0.0; geo.weight_len()];
    let (plane, patch, outs) = (geo.out_plane(), geo.patch_len(), geo.out_channels);
    let image_len = geo.in_channels * geo.in_plane();
    let images = WEIGHT_GRAD_IMAGES.min(geo.batch);
    let mut cols = vec![
        0.0;
        if geo.is_pointwise() {
            0
        } else {
            images * patch * plane
        }
    ];
    // The gradient is [outs, patch], transposed here to [patch, outs] so that a column block
    // is a contiguous run of rows; transposed back at the end.
    let mut grad_t = vec![0.0; patch * outs];
    let side_by_side = !geo.is_pointwise() && plane < WEIGHT_GRAD_MIN_K;
    let mut wide = vec![
        0.0;
        if side_by_side {
            outs * images * plane
        } else {
            0
        }
    ];
    for (step, first) in (0..geo.batch).step_by(images).enumerate() {
        let count = images.min(geo.batch - first);
        let inputs = &input[first * image_len..(first + count) * image_len];
        let grads = &output_grad[first * outs * plane..(first + count) * outs * plane];
        if side_by_side {
            // cols [patch, count x plane], a channel's rows per task, and the gradients
            // [outs, count x plane].
            let k = count * plane;
            let kernel_rows = geo.kernel[0] * geo.kernel[1];
            cols[..patch * k]
                .par_chunks_mut(kernel_rows * k)
                .enumerate()
                .for_each(|(c, rows)| {
                    for (g, image) in inputs.chunks_exact(image_len).enumerate() {
                        geo.im2col_channels(image, c..c + 1, &mut rows[g * plane..], k);
                    }
                });
            wide[..outs * k]
                .par_chunks_mut(k)
                .enumerate()
                .for_each(|(o, row)| gather_row(grads, o, row, [outs, plane]));
            let (cols, wide) = (&cols[..patch * k], &wide[..outs * k]);
            grad_t
                .par_chunks_mut(WEIGHT_GRAD_COLUMNS * outs)
                .enumerate()
                .for_each(|(block, dst)| {
                    let rows = dst.len() / outs;
                    let col = &cols[block * WEIGHT_GRAD_COLUMNS * k..];
                    let (a, b) = (View::dense(col, rows, k), View::transposed(wide, k, outs));
                    matmul(dst, a, b, step > 0);
                });
            continue;
        }
        if !geo.is_pointwise() {
            cols.par_chunks_mut(patch * plane)
                .zip(inputs.par_chunks(image_len))
                .for_each(|(col, image)| geo.im2col(image, col, plane));
        }
        let cols: &[f32] = if geo.is_pointwise() { inputs } else { &cols };
        grad_t
            .par_chunks_mut(WEIGHT_GRAD_COLUMNS * outs)
            .enumerate()
            .for_each(|(block, dst)| {
                let rows = dst.len() / outs;
                let offset = block * WEIGHT_GRAD_COLUMNS * plane;
                for n in 0..count {
                    let col = &cols[n * patch * plane + offset..];
                    let grad = &grads[n * outs * plane..(n + 1) * outs * plane];
                    // dst [rows, outs] (+)= col [rows, plane] * grad^T [plane, outs]
                    let accumulate = step > 0 || n > 0;
                    let a = View::dense(col, rows, plane);
                    matmul(dst, a, View::transposed(grad, plane, outs), accumulate);
                }
            });
    }
    for (o, row) in weight_grad.chunks_exact_mut(patch).enumerate() {
        for (p, v) in row.iter_mut().enumerate() {
            *v = grad_t[p * outs + o];
        }
    }
    weight_grad
}

/// Gradient of the loss with respect to the bias `[O]`: the output gradient summed over
/// images and positions, image by image in order, each plane in [`norm::sum`]'s lanes (one
/// running sum was a chain of dependent additions, 1.3% of LeNet-5's step).
pub fn conv2d_bias_grad(batch: usize, out_channels: usize, output_grad: &[f32]) -> Vec<f32> {
    let plane = output_grad.len() / (batch * out_channels).max(1);
    assert_eq!(
        output_grad.len(),
        batch * out_channels * plane,
        "conv2d bias gradient length"
    );
    let isa = Isa::best();
    (0..out_channels)
        .into_par_iter()
        .map(|o| {
            (0..batch)
                .map(|n| {
                    let start = (n * out_channels + o) * plane;
                    norm::sum(isa, &output_grad[start..start + plane])
                })
                .sum()
        })
        .collect()
}
