//! Direct 2-D convolution, with no im2col, for the narrow layers of small networks (stride 1,
//! no dilation, few output channels; for the input gradient, few input channels) and for the
//! first layer of an image network (few input channels, any stride).
//!
//! Why: im2col copies every input value once per kernel position (25 times for a 5x5 kernel)
//! and gemm's AVX2 micro-kernel is 16 rows tall, so a layer with 4 to 6 output channels paid
//! for a copy of 25 images and used 6 of 16 rows: in LeNet-5's training step on `cpu` im2col
//! alone took 13% of the samples and gemm's kernel 16% (`perf`, AMD EPYC, 2026-12-07). A stem
//! reads 3 channels through a large kernel: resnet-cifar10's 7x7 stride-2 stem made an im2col
//! matrix twelve times its image and ran at a third of the processor's peak. Here each block
//! of outputs is summed in registers straight from the zero-padded input.
//!
//! The wide layout: with the input padded to `[hp, wp]`, output `(y, x)` reads
//! `padded[(y + ki) * wp + x + kj]`, so numbering the outputs `q = y * wp + x` turns every
//! kernel position into one contiguous run, `padded[q + ki * wp + kj]`, whatever the image
//! size. The `wp - ow` positions past each output row (they wrap into the next row) are
//! computed too and dropped; that costs `(kw - 1) / ow` more products, 14% for LeNet-5's
//! first layer. A stride `s` splits each padded plane into its `s x s` phases (rows and columns
//! by their remainder modulo `s`), each `[hp / s, wp / s]` (rounded up): output `(y, x)` reads
//! kernel position `(ki, kj)` from phase `(ki mod s, kj mod s)` at `(y + ki / s, x + kj / s)`,
//! a contiguous run again, with `wp / s - ow` dropped positions per row.
//!
//! Products are fused multiply-adds (`f32::mul_add`, one rounding each), which every build
//! of [`crate::isa`] computes alike, so the bits do not depend on the instruction set, and
//! each output is summed by one thread in a fixed order, so they do not depend on the thread
//! count either.

use rayon::prelude::*;

use crate::conv::{Conv2dGeometry, Kernels};
use crate::isa::{multiversion, Isa};
use crate::winograd::pad_planes;

/// Lanes summed side by side: two AVX2 registers or one AVX-512 register per output channel.
const LANES: usize = 16;
/// Output channels summed together in the forward kernel: 6 x 16 lanes keep 12 of AVX2's 16
/// registers as accumulators, with room for the input's lanes and a broadcast weight.
const FORWARD_OUTS: usize = 6;
/// Output channels per weight-gradient task, and kernel positions per task: 3 x 4 running
/// sums of 8 lanes, 12 AVX2 registers.
const GRAD_OUTS: usize = 3;
const GRAD_TAPS: usize = 4;
const GRAD_LANES: usize = 8;
/// Images whose padded inputs and output gradients the weight gradient holds at once.
const GRAD_IMAGES: usize = 16;
/// At most this many output channels (input channels, for the input gradient). On the AMD
/// EPYC (2026-12-07, `examples/kernel_times.rs`) the direct sums still took a third to a half
/// of im2col + GEMM's time for the weight gradient at 3 -> 64 channels (3x3, 32 images of
/// 32x32) and about its time forward; wider layers have many input channels too, where
/// im2col's copy is a small share of the products and gemm runs full tiles. 32 also keeps
/// the ResNets' layers (64 channels and more), whose rounding the parity tests' tie-free
/// seeds were searched with, on the paths they had; their stems moved here since, and
/// resnet-cifar10's parity test still passes at its seed (2026-12-07).
const MAX_NARROW: usize = 32;
/// At most this many input channels make a layer an image network's first (grey, RGB or
/// RGBA), which [`forward`] and [`weight_grad`] take whatever its outputs and stride: few
/// channels through a large kernel make im2col's matrix many times the image (`kh kw / s²`,
/// 12x for resnet-cifar10's 7x7 stride-2 stem) for a GEMM only `3 kh kw` deep.
const MAX_IMAGE_CHANNELS: usize = 4;

/// Whether [`forward`] takes this convolution, and [`weight_grad`] with it: no dilation, a
/// kernel larger than 1x1, and either stride 1 with at most [`MAX_NARROW`] output channels or
/// any stride with at most [`MAX_IMAGE_CHANNELS`] input channels; unless the environment
/// variable `KILN_CPU_DIRECT` is `0` (read once), which keeps these layers on im2col + GEMM
/// for comparisons.
pub fn forward_chosen(geo: &Conv2dGeometry) -> bool {
    correlates(geo)
        && ((geo.stride == [1, 1] && geo.out_channels <= MAX_NARROW)
            || geo.in_channels <= MAX_IMAGE_CHANNELS)
        && enabled()
}

/// Whether [`input_grad`] takes this convolution: stride 1, with at most [`MAX_NARROW`] input
/// channels (the input gradient is a convolution with them as its outputs) and padding no
/// larger than the kernel's reach.
pub fn input_grad_chosen(geo: &Conv2dGeometry) -> bool {
    correlates(geo)
        && geo.stride == [1, 1]
        && geo.in_channels <= MAX_NARROW
        && (0..2).all(|d| geo.padding[d] < geo.kernel[d])
        && enabled()
}

/// Whether the direct kernels take all three of this layer's convolutions, which makes them
/// the choice over Winograd's too: at 16 channels in and out (3x3, 32 images of 32x32) they
/// took about half of Winograd's time forward and for the input gradient, at 32 channels
/// 0.65x to 1.0x of it, on the AMD EPYC (2026-12-07, `examples/kernel_times.rs`); Winograd's
/// transforms cost as much as the products they save where the channels are few.
pub fn preferred_to_winograd(geo: &Conv2dGeometry) -> bool {
    forward_chosen(geo) && input_grad_chosen(geo)
}

/// What the wide layout computes: no dilation, a kernel larger than 1x1, some outputs.
fn correlates(geo: &Conv2dGeometry) -> bool {
    geo.dilation == [1, 1]
        && geo.kernel != [1, 1]
        && geo.stride.iter().all(|&s| s > 0)
        && geo.batch > 0
        && geo.out_size().iter().all(|&s| s > 0)
}

fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("KILN_CPU_DIRECT").as_deref() != Ok("0"))
}

/// The padded planes, split into the stride's phases, and the wide layout of one convolution.
struct Wide {
    stride: [usize; 2],
    /// Height and width of one phase plane (of the padded plane itself at stride 1).
    phase: [usize; 2],
    /// Wide output positions, rounded up to whole lane blocks.
    positions: usize,
    /// Where each kernel position `(c, ki, kj)` starts reading in an image's phase planes, in
    /// that order (which is the order of the sums).
    offsets: Vec<usize>,
    /// Length of one image's phase planes, with room for the last block's reads.
    image_len: usize,
}

impl Wide {
    fn new(geo: &Conv2dGeometry, lanes: usize) -> Self {
        let [sy, sx] = geo.stride;
        let phase = [0, 1].map(|d| (geo.in_size[d] + 2 * geo.padding[d]).div_ceil(geo.stride[d]));
        let [hq, wq] = phase;
        let [kh, kw] = geo.kernel;
        let positions = (geo.out_size()[0] * wq).next_multiple_of(lanes);
        let offsets: Vec<usize> = (0..geo.in_channels)
            .flat_map(|c| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (c, ki, kj))))
            .map(|(c, ki, kj)| {
                let plane = (c * sy + ki % sy) * sx + kj % sx;
                plane * hq * wq + ki / sy * wq + kj / sx
            })
            .collect();
        let reach = offsets.iter().max().copied().unwrap_or(0) + positions;
        Wide {
            stride: geo.stride,
            phase,
            positions,
            offsets,
            image_len: reach.max(geo.in_channels * sy * sx * hq * wq),
        }
    }

    /// Wide positions per output row.
    fn pitch(&self) -> usize {
        self.phase[1]
    }

    /// One image's planes `[ins, h, w]` into `padded` as the phases of their zero-padded
    /// copies, `[ins][sy][sx][phase]`; zero around them and past them.
    fn pad(&self, geo: &Conv2dGeometry, image: &[f32], padded: &mut [f32]) {
        let planes = image.chunks_exact(geo.in_plane());
        if self.stride == [1, 1] {
            pad_planes(planes, geo.in_size, geo.padding, self.phase, padded);
            return;
        }
        padded.fill(0.0);
        let ([sy, sx], [hq, wq], [py, px]) = (self.stride, self.phase, geo.padding);
        for (c, plane) in planes.enumerate() {
            for (iy, line) in plane.chunks_exact(geo.in_size[1]).enumerate() {
                let r = iy + py;
                let row = ((c * sy + r % sy) * sx * hq + r / sy) * wq;
                for b in 0..sx {
                    // The input columns in phase b: (ix + px) mod sx = b.
                    let first = (b + sx - px % sx) % sx;
                    let dst = &mut padded[row + b * hq * wq + (first + px) / sx..];
                    for (d, &v) in dst.iter_mut().zip(line.iter().skip(first).step_by(sx)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// The forward convolution of `input [N, C, H, W]` with `weight [O, C, KH, KW]` and an
/// optional `bias [O]`, returning `[N, O, OH, OW]`. Panics unless [`forward_chosen`]'s
/// geometry (the switch aside).
pub fn forward(
    geo: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        correlates(geo),
        "direct convolution: no dilation and a kernel larger than 1x1 only: {geo:?}"
    );
    geo.check(input.len(), weight.len(), geo.output_len());
    correlate(Isa::best(), geo, input, weight, Kernels::AsGiven, bias)
}

/// The gradient with respect to the input of the convolution `geo`, from the weight
/// `[O, C, KH, KW]` and the output's gradient `[N, O, OH, OW]`; returns `[N, C, H, W]`. Panics
/// unless [`input_grad_chosen`]'s geometry (the switch aside).
pub fn input_grad(geo: &Conv2dGeometry, weight: &[f32], output_grad: &[f32]) -> Vec<f32> {
    assert!(
        correlates(geo) && geo.stride == [1, 1] && (0..2).all(|d| geo.padding[d] < geo.kernel[d]),
        "direct input gradient: stride 1, no dilation, a kernel larger than 1x1 and padding \
         smaller than the kernel only: {geo:?}"
    );
    geo.check(geo.input_len(), weight.len(), output_grad.len());
    correlate(
        Isa::best(),
        &geo.input_grad_geometry(),
        output_grad,
        weight,
        Kernels::FlippedTransposed,
        None,
    )
}

fn correlate(
    isa: Isa,
    geo: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    kernels: Kernels,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let wide = Wide::new(geo, LANES);
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let taps = wide.offsets.len();
    let per_kernel = geo.kernel[0] * geo.kernel[1];
    // Each block of outputs' weights as [taps][block], the order the kernel reads them.
    let blocks: Vec<std::ops::Range<usize>> = (0..outs)
        .step_by(FORWARD_OUTS)
        .map(|o| o..(o + FORWARD_OUTS).min(outs))
        .collect();
    let mut packed = Vec::with_capacity(taps * outs);
    for block in &blocks {
        for t in 0..taps {
            let (c, k) = (t / per_kernel, t % per_kernel);
            packed.extend(
                block
                    .clone()
                    .map(|o| kernels.at(weight, [outs, ins, per_kernel], [o, c, k])),
            );
        }
    }
    let [oh, ow] = geo.out_size();
    let image_in = ins * geo.in_plane();
    let image_out = outs * oh * ow;
    let mut output = vec![0.0; geo.batch * image_out];
    output
        .par_chunks_mut(image_out)
        .zip(input.par_chunks(image_in))
        .for_each_init(
            || {
                (
                    vec![0.0; wide.image_len],
                    vec![0.0; FORWARD_OUTS * wide.positions],
                )
            },
            |(padded, sums), (out, image)| {
                wide.pad(geo, image, padded);
                for block in &blocks {
                    let weights = &packed[block.start * taps..block.end * taps];
                    let bias = bias.map(|b| &b[block.clone()]);
                    let sums = &mut sums[..block.len() * wide.positions];
                    sum_block(isa, padded, &wide.offsets, weights, bias, sums);
                    for (o, row) in block.clone().zip(sums.chunks_exact(wide.positions)) {
                        let plane = &mut out[o * oh * ow..(o + 1) * oh * ow];
                        for (y, line) in plane.chunks_exact_mut(ow).enumerate() {
                            line.copy_from_slice(&row[y * wide.pitch()..][..ow]);
                        }
                    }
                }
            },
        );
    output
}

/// `N` consecutive values of `data` from `at`, as one (unaligned) vector load.
///
/// # Safety
/// `at + N <= data.len()`. The kernels check their whole range once, before their loops: a
/// bounds check per load cost them two compares and branches per vector.
#[inline(always)]
unsafe fn lanes<const N: usize>(data: &[f32], at: usize) -> [f32; N] {
    debug_assert!(at + N <= data.len());
    // SAFETY: the caller's bound keeps all N values inside `data`.
    unsafe { data.as_ptr().add(at).cast::<[f32; N]>().read_unaligned() }
}

multiversion! {
    /// One block of output channels over every wide position of one image: `sums [block]
    /// [positions]` from the padded planes and the block's weights `[taps][block]`.
    fn sum_block(padded: &[f32], offsets: &[usize], weights: &[f32], bias: Option<&[f32]>, sums: &mut [f32]) {
        match weights.len() / offsets.len().max(1) {
            1 => sum_block_of::<1>(padded, offsets, weights, bias, sums),
            2 => sum_block_of::<2>(padded, offsets, weights, bias, sums),
            3 => sum_block_of::<3>(padded, offsets, weights, bias, sums),
            4 => sum_block_of::<4>(padded, offsets, weights, bias, sums),
            5 => sum_block_of::<5>(padded, offsets, weights, bias, sums),
            6 => sum_block_of::<6>(padded, offsets, weights, bias, sums),
            n => unreachable!("blocks of 1 to {FORWARD_OUTS} outputs, not {n}"),
        }
    }
}

#[inline(always)]
fn sum_block_of<const B: usize>(
    padded: &[f32],
    offsets: &[usize],
    weights: &[f32],
    bias: Option<&[f32]>,
    sums: &mut [f32],
) {
    let positions = sums.len() / B;
    assert!(positions.is_multiple_of(LANES) && weights.len() == offsets.len() * B);
    // This bounds every read below.
    let reach = offsets.iter().max().map_or(0, |last| last + positions);
    assert!(reach <= padded.len(), "direct: padded planes too short");
    let start: [f32; B] = match bias {
        Some(b) => b.try_into().expect("one bias per output of the block"),
        None => [0.0; B],
    };
    for q in (0..positions).step_by(LANES) {
        let mut acc = start.map(|b| [b; LANES]);
        for (&offset, w) in offsets.iter().zip(weights.chunks_exact(B)) {
            // SAFETY: offset + q + LANES <= offset + positions <= reach <= padded.len().
            let x: [f32; LANES] = unsafe { lanes(padded, offset + q) };
            for (acc, &w) in acc.iter_mut().zip(w) {
                for (a, &x) in acc.iter_mut().zip(&x) {
                    *a = w.mul_add(x, *a);
                }
            }
        }
        for (o, acc) in acc.iter().enumerate() {
            sums[o * positions + q..][..LANES].copy_from_slice(acc);
        }
    }
}

/// The gradient with respect to the weight `[O, C, KH, KW]` of the convolution `geo`, from
/// its input `[N, C, H, W]` and the output's gradient `[N, O, OH, OW]`. Panics unless
/// [`forward_chosen`]'s geometry (the switch aside).
///
/// `dW[o, (c, ki, kj)] = Σ_images Σ_q dY_wide[o, q] · phases[q + offset(c, ki, kj)]`, with the
/// output gradient laid out wide and zero in the dropped positions. The tasks are fixed
/// blocks of output channels and kernel positions; each keeps its running sums (8 lanes per
/// weight) across all images, in image order, and adds the lanes up at the end.
pub fn weight_grad(geo: &Conv2dGeometry, input: &[f32], output_grad: &[f32]) -> Vec<f32> {
    assert!(
        correlates(geo),
        "direct weight gradient: no dilation and a kernel larger than 1x1 only: {geo:?}"
    );
    geo.check(input.len(), geo.weight_len(), output_grad.len());
    weight_grad_on(Isa::best(), geo, input, output_grad)
}

fn weight_grad_on(isa: Isa, geo: &Conv2dGeometry, input: &[f32], output_grad: &[f32]) -> Vec<f32> {
    let wide = Wide::new(geo, GRAD_LANES);
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let taps = wide.offsets.len();
    let [oh, ow] = geo.out_size();
    let (image_in, out_plane) = (ins * geo.in_plane(), oh * ow);
    // Kernel positions in groups of GRAD_TAPS, the last group filled up with position 0
    // (summed and dropped), and output channels in blocks of up to GRAD_OUTS.
    let groups = taps.div_ceil(GRAD_TAPS);
    let offsets: Vec<usize> = (0..groups * GRAD_TAPS)
        .map(|t| wide.offsets.get(t).copied().unwrap_or(0))
        .collect();
    let blocks = outs.div_ceil(GRAD_OUTS);
    let task_len = GRAD_OUTS * GRAD_TAPS;
    let mut running = vec![[0.0f32; GRAD_LANES]; blocks * groups * task_len];
    let images = GRAD_IMAGES.min(geo.batch);
    let mut padded = vec![0.0; images * wide.image_len];
    let mut grads = vec![0.0; images * outs * wide.positions];
    for first in (0..geo.batch).step_by(images) {
        let count = images.min(geo.batch - first);
        padded
            .par_chunks_mut(wide.image_len)
            .zip(grads.par_chunks_mut(outs * wide.positions))
            .zip(input[first * image_in..(first + count) * image_in].par_chunks(image_in))
            .zip(output_grad[first * outs * out_plane..].par_chunks(outs * out_plane))
            .for_each(|(((padded, grads), image), grad)| {
                wide.pad(geo, image, padded);
                grads.fill(0.0);
                for (src, dst) in grad
                    .chunks_exact(out_plane)
                    .zip(grads.chunks_exact_mut(wide.positions))
                {
                    for (y, line) in src.chunks_exact(ow).enumerate() {
                        dst[y * wide.pitch()..][..ow].copy_from_slice(line);
                    }
                }
            });
        let (padded, grads) = (
            &padded[..count * wide.image_len],
            &grads[..count * outs * wide.positions],
        );
        running
            .par_chunks_mut(task_len)
            .enumerate()
            .for_each(|(task, sums)| {
                let (block, group) = (task / groups, task % groups);
                let o = block * GRAD_OUTS..((block + 1) * GRAD_OUTS).min(outs);
                let offsets = &offsets[group * GRAD_TAPS..][..GRAD_TAPS];
                for (padded, grads) in padded
                    .chunks_exact(wide.image_len)
                    .zip(grads.chunks_exact(outs * wide.positions))
                {
                    let grads = &grads[o.start * wide.positions..o.end * wide.positions];
                    accumulate_products(isa, padded, offsets, grads, wide.positions, sums);
                }
            });
    }
    let mut weight_grad = vec![0.0; geo.weight_len()];
    for (task, sums) in running.chunks_exact(task_len).enumerate() {
        let (block, group) = (task / groups, task % groups);
        for (i, lanes) in sums.iter().enumerate() {
            let (o, t) = (
                block * GRAD_OUTS + i / GRAD_TAPS,
                group * GRAD_TAPS + i % GRAD_TAPS,
            );
            if o < outs && t < taps {
                weight_grad[o * taps + t] = lanes.iter().sum();
            }
        }
    }
    weight_grad
}

multiversion! {
    /// Adds one image's products to a task's running sums `[GRAD_OUTS][GRAD_TAPS]` (8 lanes
    /// each): the task's output channels' wide gradients `grads [block][positions]` times the
    /// padded planes read from each of its kernel positions' offsets.
    fn accumulate_products(padded: &[f32], offsets: &[usize], grads: &[f32], positions: usize, sums: &mut [[f32; GRAD_LANES]]) {
        match grads.len() / positions {
            1 => accumulate_of::<1>(padded, offsets, grads, positions, sums),
            2 => accumulate_of::<2>(padded, offsets, grads, positions, sums),
            3 => accumulate_of::<3>(padded, offsets, grads, positions, sums),
            n => unreachable!("blocks of 1 to {GRAD_OUTS} outputs, not {n}"),
        }
    }
}

#[inline(always)]
fn accumulate_of<const B: usize>(
    padded: &[f32],
    offsets: &[usize],
    grads: &[f32],
    positions: usize,
    sums: &mut [[f32; GRAD_LANES]],
) {
    let offsets: &[usize; GRAD_TAPS] = offsets.try_into().expect("a group of kernel positions");
    let mut acc = [[[0.0f32; GRAD_LANES]; GRAD_TAPS]; B];
    for (o, acc) in acc.iter_mut().enumerate() {
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = sums[o * GRAD_TAPS + t];
        }
    }
    assert!(positions.is_multiple_of(GRAD_LANES) && grads.len() == B * positions);
    assert!(
        offsets.iter().all(|&o| o + positions <= padded.len()),
        "direct: padded planes too short"
    );
    for q in (0..positions).step_by(GRAD_LANES) {
        // SAFETY: o * positions + q + GRAD_LANES <= B * positions = grads.len().
        let g: [[f32; GRAD_LANES]; B] =
            std::array::from_fn(|o| unsafe { lanes(grads, o * positions + q) });
        for (t, &offset) in offsets.iter().enumerate() {
            // SAFETY: offset + q + GRAD_LANES <= offset + positions <= padded.len().
            let x: [f32; GRAD_LANES] = unsafe { lanes(padded, offset + q) };
            for (acc, g) in acc.iter_mut().zip(&g) {
                for ((a, &g), &x) in acc[t].iter_mut().zip(g).zip(&x) {
                    *a = g.mul_add(x, *a);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        for (t, acc) in acc.iter().enumerate() {
            sums[o * GRAD_TAPS + t] = *acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        assert_within, convolution, geometry, input_gradient, values, weight_gradient,
    };

    /// Relative to the sum of the absolute products an output adds up: a plain `f32` sum of
    /// up to 400 products is off by well under 400 · 2⁻²⁴ (2.4e-5) of it, typically far less.
    const MARGIN: f64 = 1e-5;

    /// The small networks' layers (LeNet-5's, convnet-mnist's, simple-cnn's), then odd sizes:
    /// every block size of both kernels, rectangular kernels and padding, a kernel as wide as
    /// the padded input, more images than the weight gradient holds at once.
    fn cases() -> Vec<Conv2dGeometry> {
        vec![
            geometry(3, 1, [28, 28], 6, [5, 5], [2, 2]),
            geometry(2, 6, [14, 14], 16, [5, 5], [0, 0]),
            geometry(2, 4, [14, 14], 8, [5, 5], [2, 2]),
            geometry(2, 3, [32, 32], 16, [3, 3], [0, 0]),
            geometry(37, 2, [7, 9], 5, [3, 2], [1, 0]),
            geometry(3, 5, [6, 11], 13, [2, 3], [0, 2]),
            geometry(2, 7, [4, 4], 1, [6, 6], [1, 1]),
            geometry(1, 16, [5, 3], 2, [3, 3], [1, 1]),
        ]
    }

    #[test]
    fn forward_matches_the_direct_sum() {
        for (i, geo) in cases().into_iter().enumerate() {
            let x = values(geo.input_len(), 10 * i as u64 + 1);
            let w = values(geo.weight_len(), 10 * i as u64 + 2);
            let b = values(geo.out_channels, 10 * i as u64 + 3);
            for bias in [Some(&b[..]), None] {
                let got = forward(&geo, &x, &w, bias);
                assert_within(
                    format!("{geo:?}"),
                    &got,
                    convolution(&geo, &x, &w, bias),
                    MARGIN,
                );
            }
        }
    }

    /// Strided layers with few input channels: resnet-cifar10's stem at a smaller size and
    /// width, odd padding (which shifts the columns between phases), strides of 3 and mixed
    /// strides, a plane narrower than its stride's phases.
    fn strided_cases() -> Vec<Conv2dGeometry> {
        let strided = |geo: Conv2dGeometry, stride| Conv2dGeometry { stride, ..geo };
        vec![
            strided(geometry(2, 3, [29, 29], 20, [7, 7], [0, 0]), [2, 2]),
            strided(geometry(3, 3, [17, 16], 7, [7, 7], [3, 3]), [2, 2]),
            strided(geometry(2, 1, [20, 23], 5, [4, 5], [1, 2]), [3, 3]),
            strided(geometry(2, 4, [11, 14], 9, [3, 2], [1, 1]), [2, 1]),
            strided(geometry(17, 2, [5, 8], 3, [3, 3], [0, 2]), [1, 4]),
        ]
    }

    #[test]
    fn strided_forward_and_weight_grad_match_the_direct_sums() {
        for (i, geo) in strided_cases().into_iter().enumerate() {
            assert!(forward_chosen(&geo) && !input_grad_chosen(&geo), "{geo:?}");
            let x = values(geo.input_len(), 10 * i as u64 + 1);
            let w = values(geo.weight_len(), 10 * i as u64 + 2);
            let b = values(geo.out_channels, 10 * i as u64 + 3);
            let g = values(geo.output_len(), 10 * i as u64 + 4);
            for bias in [Some(&b[..]), None] {
                let got = forward(&geo, &x, &w, bias);
                let want = convolution(&geo, &x, &w, bias);
                assert_within(format!("{geo:?}"), &got, want, MARGIN);
            }
            let got = weight_grad(&geo, &x, &g);
            let what = format!("{geo:?} weight gradient");
            assert_within(what, &got, weight_gradient(&geo, &x, &g), MARGIN);
        }
    }

    #[test]
    fn input_grad_matches_the_direct_sum() {
        for (i, geo) in cases().into_iter().enumerate() {
            let w = values(geo.weight_len(), 10 * i as u64 + 5);
            let g = values(geo.output_len(), 10 * i as u64 + 6);
            let got = input_grad(&geo, &w, &g);
            let what = format!("{geo:?} input gradient");
            assert_within(what, &got, input_gradient(&geo, &w, &g), MARGIN);
        }
    }

    #[test]
    fn weight_grad_matches_the_direct_sum() {
        for (i, geo) in cases().into_iter().enumerate() {
            let x = values(geo.input_len(), 10 * i as u64 + 7);
            let g = values(geo.output_len(), 10 * i as u64 + 8);
            let got = weight_grad(&geo, &x, &g);
            let what = format!("{geo:?} weight gradient");
            assert_within(what, &got, weight_gradient(&geo, &x, &g), MARGIN);
        }
    }

    /// Each build this CPU can run (AVX-512, AVX2, baseline) gives the same bits: fused
    /// multiply-adds round once in every build.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let geo = geometry(17, 3, [13, 11], 8, [5, 3], [2, 1]);
        let strided = Conv2dGeometry {
            stride: [2, 3],
            ..geo
        };
        let x = values(geo.input_len(), 1);
        let w = values(geo.weight_len(), 2);
        let b = values(geo.out_channels, 3);
        let g = values(geo.output_len(), 4);
        let run_on = |isa| {
            (
                correlate(isa, &geo, &x, &w, Kernels::AsGiven, Some(&b)),
                correlate(
                    isa,
                    &geo.input_grad_geometry(),
                    &g,
                    &w,
                    Kernels::FlippedTransposed,
                    None,
                ),
                weight_grad_on(isa, &geo, &x, &g),
                correlate(isa, &strided, &x, &w, Kernels::AsGiven, Some(&b)),
                weight_grad_on(isa, &strided, &x, &g[..strided.output_len()]),
            )
        };
        let isas = Isa::available();
        let want = run_on(*isas.last().unwrap());
        for isa in isas {
            assert_eq!(run_on(isa), want, "{isa:?} build against the baseline");
        }
    }

    #[test]
    fn only_narrow_layers_and_image_inputs_are_chosen() {
        let base = geometry(2, 1, [28, 28], 6, [5, 5], [2, 2]);
        assert!(forward_chosen(&base) && input_grad_chosen(&base));
        let wide = Conv2dGeometry {
            in_channels: 40,
            out_channels: 40,
            ..base
        };
        assert!(!forward_chosen(&wide) && !input_grad_chosen(&wide));
        // cnn-dropout's second layer, 32 -> 32 channels 3x3, goes here rather than to
        // Winograd; with 40 channels on either side it does not.
        let both = Conv2dGeometry {
            in_channels: 32,
            out_channels: 32,
            kernel: [3, 3],
            padding: [1, 1],
            ..base
        };
        assert!(preferred_to_winograd(&both) && !crate::winograd::chosen(&both));
        for side in [
            Conv2dGeometry {
                in_channels: 40,
                ..both
            },
            Conv2dGeometry {
                out_channels: 40,
                ..both
            },
        ] {
            assert!(!preferred_to_winograd(&side) && crate::winograd::chosen(&side));
        }
        // A strided layer goes here forward (and for its weight gradient) when it reads an
        // image's few channels, whatever its outputs; never for its input gradient.
        let stem = Conv2dGeometry {
            in_channels: 3,
            out_channels: 64,
            kernel: [7, 7],
            stride: [2, 2],
            padding: [0, 0],
            ..base
        };
        assert!(forward_chosen(&stem) && !input_grad_chosen(&stem));
        assert!(forward_chosen(&Conv2dGeometry {
            stride: [1, 1],
            ..stem
        }));
        for other in [
            Conv2dGeometry {
                in_channels: 5,
                ..stem
            },
            Conv2dGeometry {
                stride: [2, 1],
                ..wide
            },
            Conv2dGeometry {
                dilation: [1, 2],
                ..base
            },
            Conv2dGeometry {
                kernel: [1, 1],
                padding: [0, 0],
                ..base
            },
        ] {
            assert!(
                !forward_chosen(&other) && !input_grad_chosen(&other),
                "{other:?}"
            );
        }
        // Padding as wide as the kernel leaves the input gradient a negative padding.
        let padded = Conv2dGeometry {
            kernel: [2, 2],
            padding: [2, 0],
            ..base
        };
        assert!(forward_chosen(&padded) && !input_grad_chosen(&padded));
    }
}
