//! Stride-1 3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016): each 4x4 block of outputs comes
//! from a 6x6 block of inputs in 36 products per channel pair instead of 144, so a ResNet's
//! 3x3 layers do a quarter of im2col + GEMM's multiplications (4x on 12x12 maps, 2.25x on 3x3
//! ones, where a tile is mostly padding), with no im2col matrix.
//!
//! With the tiles' transforms `V = Bᵀ d B` (inputs), `U = G g Gᵀ` (weights) and
//! `Y = Aᵀ M A` (outputs), the channel sum becomes 36 independent matrix products, one per
//! position ξ of the 6x6 transform: `M[ξ] (outs x tiles) = U[ξ] (outs x ins) V[ξ] (ins x
//! tiles)`, run on `gemm`. The input gradient of a stride-1 3x3 convolution is itself one, of
//! the output gradient with the kernels flipped and their channel axes swapped, so
//! [`input_grad`] is [`forward`] on that.
//!
//! Rounding: the transforms' coefficients (up to 5 and 8) cost precision. Against an `f64`
//! direct convolution the error stays within a few units in the 6th significant digit of the
//! output's scale (the tests state the margin); MKL-DNN trained ImageNet networks with this
//! same F(4x4, 3x3).
//!
//! Determinism: images are taken in chunks whose size follows from the geometry alone, and
//! every value is computed by one task in a fixed order, so the thread count never changes a
//! bit.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::conv::{Conv2dGeometry, Kernels};
use crate::isa::Isa;
use crate::matmul::{matmul, View};

/// Outputs per tile side.
const TILE: usize = 4;
/// Inputs per tile side: a tile plus the kernel's reach.
const PATCH: usize = TILE + 2;
/// Positions of the 6x6 transform, one matrix product each.
const XI: usize = PATCH * PATCH;
/// Tiles transformed together, one per SIMD lane (16 `f32`: one AVX-512 register, two AVX2).
const LANES: usize = 16;
/// Below 3x3 outputs a 4x4 tile's 36 products make no more than 9 outputs' worth: no fewer
/// products than the direct sum, and (for the weight gradient of a 1x1 output) rounding
/// errors of 1e-4 of the result's scale, since the transforms mix the whole tile.
const MIN_OUTPUT: usize = 3;
/// Below this many channels on either side the transforms cost more than the products save.
const MIN_CHANNELS: usize = 16;
/// The transformed inputs of one chunk of images are kept under this size (bytes), so that
/// the scratch stays bounded whatever the batch.
const CHUNK_BYTES: usize = 8 << 20;

type Lane = [f32; LANES];

/// Whether [`forward`], [`input_grad`] and [`weight_grad`] take this convolution: 3x3,
/// stride 1, no dilation, padding at most 2 (so the input gradient's padding, 2 - p, is one
/// too), outputs at least 3x3 and enough channels for the transforms to pay.
pub fn applies(geo: &Conv2dGeometry) -> bool {
    geo.kernel == [3, 3]
        && geo.stride == [1, 1]
        && geo.dilation == [1, 1]
        && geo.padding.iter().all(|&p| p <= 2)
        && geo.in_channels >= MIN_CHANNELS
        && geo.out_channels >= MIN_CHANNELS
        && geo.batch > 0
        && geo.out_size().iter().all(|&s| s >= MIN_OUTPUT)
}

/// Whether [`crate::conv`] runs this convolution here: where it [`applies`] and the direct
/// kernels are not faster ([`crate::direct::preferred_to_winograd`]), unless the environment
/// variable `KILN_CPU_WINOGRAD` is `0` (read once), which keeps every convolution off this
/// path, for comparisons and for whoever wants the last digits of precision back.
pub fn chosen(geo: &Conv2dGeometry) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    applies(geo)
        && !crate::direct::preferred_to_winograd(geo)
        && *ENABLED.get_or_init(|| std::env::var("KILN_CPU_WINOGRAD").as_deref() != Ok("0"))
}

/// The forward convolution of `input [N, C, H, W]` with `weight [O, C, 3, 3]` and an optional
/// `bias [O]`, returning `[N, O, OH, OW]`. Panics unless [`applies`].
pub fn forward(
    geo: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        applies(geo),
        "winograd: not a convolution `applies` takes (3x3, stride 1, no dilation, padding <= 2, >= 16 channels each side, >= 3x3 outputs): {geo:?}"
    );
    run(geo, input, weight, Kernels::AsGiven, bias, CHUNK_BYTES)
}

/// The gradient with respect to the input of the convolution `geo`, from the output's
/// gradient `[N, O, OH, OW]` and the weight `[O, C, 3, 3]`; returns `[N, C, H, W]`. Panics
/// unless [`applies`].
pub fn input_grad(geo: &Conv2dGeometry, weight: &[f32], output_grad: &[f32]) -> Vec<f32> {
    assert!(
        applies(geo),
        "winograd: not a convolution `applies` takes (3x3, stride 1, no dilation, padding <= 2, >= 16 channels each side, >= 3x3 outputs): {geo:?}"
    );
    run(
        &geo.input_grad_geometry(),
        output_grad,
        weight,
        Kernels::FlippedTransposed,
        None,
        CHUNK_BYTES,
    )
}

/// The gradient with respect to the weight `[O, C, 3, 3]` of the convolution `geo`, from its
/// input `[N, C, H, W]` and the output's gradient `[N, O, OH, OW]`. Panics unless
/// [`applies`].
///
/// The adjoint of [`forward`]'s arithmetic: with the input tiles' transforms `V` and the
/// output gradient's tiles taken back through the output transform, `dM = A dY Aᵀ`, the
/// transformed kernels' gradient is 36 products `dU[ξ] = Σ_tiles dM[ξ] V[ξ]ᵀ`, and the
/// kernels' is `Gᵀ dU G`. Since the forward transforms compute the convolution exactly (in
/// exact arithmetic), this is the convolution's own weight gradient, in a quarter of the
/// products. Chunks of images are summed one after another, in order.
pub fn weight_grad(geo: &Conv2dGeometry, input: &[f32], output_grad: &[f32]) -> Vec<f32> {
    weight_grad_chunked(geo, input, output_grad, CHUNK_BYTES)
}

fn weight_grad_chunked(
    geo: &Conv2dGeometry,
    input: &[f32],
    output_grad: &[f32],
    chunk_bytes: usize,
) -> Vec<f32> {
    assert!(
        applies(geo),
        "winograd: not a convolution `applies` takes (3x3, stride 1, no dilation, padding <= 2, >= 16 channels each side, >= 3x3 outputs): {geo:?}"
    );
    geo.check(input.len(), geo.weight_len(), output_grad.len());
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let (in_plane, out_plane) = (geo.in_plane(), geo.out_plane());
    let tiles = Tiles::new(geo, chunk_bytes);
    let isa = Isa::best();
    let columns = tiles.images * tiles.per_image();
    let mut scratch = Scratch::take();
    let [du, v, dm] = scratch.parts([XI * outs * ins, XI * columns * ins, XI * columns * outs]);

    let extent = tiles.grid.map(|g| g * TILE);
    for (step, first) in (0..geo.batch).step_by(tiles.images).enumerate() {
        let count = tiles.images.min(geo.batch - first);
        let cols = count * tiles.per_image();
        let images = &input[first * ins * in_plane..(first + count) * ins * in_plane];
        let grads = &output_grad[first * outs * out_plane..(first + count) * outs * out_plane];
        transform_inputs(isa, geo, &tiles, images, &mut v[..ins * XI * cols]);
        // dM [outs][ξ][cols].
        dm[..outs * XI * cols]
            .par_chunks_mut(XI * cols)
            .enumerate()
            .for_each_init(
                || vec![0.0; count * extent[0] * extent[1]],
                |padded, (o, block)| {
                    let planes = grads.chunks_exact(out_plane).skip(o).step_by(outs);
                    pad_planes(planes, geo.out_size(), [0, 0], extent, padded);
                    transform_output_adjoint(isa, &tiles, extent, padded, block, cols);
                },
            );
        // dU [ξ][outs][ins] (+)= dM[ξ] V[ξ]ᵀ, one product per task.
        let (v, dm) = (&v[..ins * XI * cols], &dm[..outs * XI * cols]);
        du.par_chunks_mut(outs * ins)
            .enumerate()
            .for_each(|(xi, dst)| weight_product(dst, dm, v, xi, [outs, ins, cols], step > 0));
    }
    let mut weight_grad = vec![0.0; outs * ins * 9];
    let du = &*du;
    weight_grad
        .par_chunks_mut(ins * 9)
        .enumerate()
        .for_each(|(o, row)| transform_kernels_adjoint(du, [outs, ins], o, row));
    weight_grad
}

/// `dst [outs x ins] (+)= dM[ξ] (row o at o·XI·cols + ξ·cols) · V[ξ]ᵀ (V's row c at
/// c·XI·cols + ξ·cols)`.
fn weight_product(
    dst: &mut [f32],
    dm: &[f32],
    v: &[f32],
    xi: usize,
    [outs, ins, cols]: [usize; 3],
    accumulate: bool,
) {
    let a = View::new(&dm[xi * cols..], [outs, cols], [XI * cols, 1]);
    let b = View::new(&v[xi * cols..], [cols, ins], [1, XI * cols]);
    matmul(dst, a, b, accumulate);
}

/// Row `o` of the weight gradient, `[ins][3][3]`: `Gᵀ dU G` of each of its kernels' 36
/// transformed gradients, input channels side by side in the lanes.
fn transform_kernels_adjoint(du: &[f32], [outs, ins]: [usize; 2], o: usize, row: &mut [f32]) {
    let mut src = [[0.0f32; LANES]; XI];
    let mut tmp = [[0.0f32; LANES]; PATCH * 3];
    let mut g = [[0.0f32; LANES]; 9];
    for c0 in (0..ins).step_by(LANES) {
        let lanes = LANES.min(ins - c0);
        for (xi, lane) in src.iter_mut().enumerate() {
            copy_lanes(lane, &du[(xi * outs + o) * ins + c0..], lanes);
        }
        // Gᵀ along the 6x6 block's rows (3 rows out), then along its columns.
        for b in 0..PATCH {
            kernel_1d_adjoint(&src, b, PATCH, &mut tmp, b, PATCH);
        }
        for i in 0..3 {
            kernel_1d_adjoint(&tmp, i * PATCH, 1, &mut g, i * 3, 1);
        }
        for (l, kernel) in row[c0 * 9..(c0 + lanes) * 9]
            .chunks_exact_mut(9)
            .enumerate()
        {
            for (k, v) in kernel.iter_mut().enumerate() {
                *v = g[k][l];
            }
        }
    }
}

/// `Gᵀ` applied to the six lanes `src[start + k·stride]`, its three results written to
/// `dst[to + k·step]`: the adjoint of [`kernel_1d`].
#[inline(always)]
fn kernel_1d_adjoint(
    src: &[Lane],
    start: usize,
    stride: usize,
    dst: &mut [Lane],
    to: usize,
    step: usize,
) {
    for l in 0..LANES {
        let u = |k: usize| src[start + k * stride][l];
        let (u0, u1, u2, u3, u4, u5) = (u(0), u(1), u(2), u(3), u(4), u(5));
        dst[to][l] = u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0;
        dst[to + step][l] = (u2 - u1) / 6.0 + (u3 - u4) / 12.0;
        dst[to + 2 * step][l] = (u3 + u4 - u1 - u2) / 6.0 + u5;
    }
}

thread_local! {
    /// Scratch kept between calls on the thread that runs the ops: allocating (and faulting
    /// in) several megabytes per convolution cost more than the transforms.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// This thread's scratch, for one call; handed back when dropped. A nested call (none today)
/// would find it taken and allocate its own.
struct Scratch(Vec<f32>);

impl Scratch {
    fn take() -> Self {
        Scratch(SCRATCH.with(|s| s.take()))
    }

    /// Consecutive buffers of the given lengths, grown to fit.
    fn parts<const N: usize>(&mut self, sizes: [usize; N]) -> [&mut [f32]; N] {
        let total = sizes.iter().sum();
        if self.0.len() < total {
            self.0.resize(total, 0.0);
        }
        let mut rest = &mut self.0[..];
        sizes.map(|n| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            part
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.with(|s| s.replace(std::mem::take(&mut self.0)));
    }
}

struct Tiles {
    /// Tile rows and columns per image.
    grid: [usize; 2],
    /// Images per chunk.
    images: usize,
}

impl Tiles {
    fn new(geo: &Conv2dGeometry, chunk_bytes: usize) -> Self {
        let grid = geo.out_size().map(|s| s.div_ceil(TILE));
        let per_image = grid[0] * grid[1];
        let widest = geo.in_channels.max(geo.out_channels);
        let images = (chunk_bytes / (4 * XI * widest * per_image)).clamp(1, geo.batch);
        Tiles { grid, images }
    }

    fn per_image(&self) -> usize {
        self.grid[0] * self.grid[1]
    }
}

fn run(
    geo: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    kernels: Kernels,
    bias: Option<&[f32]>,
    chunk_bytes: usize,
) -> Vec<f32> {
    geo.check(input.len(), weight.len(), geo.output_len());
    let (ins, outs) = (geo.in_channels, geo.out_channels);
    let ow = geo.out_size()[1];
    let (in_plane, out_plane) = (geo.in_plane(), geo.out_plane());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), outs, "winograd: bias length");
    }
    let tiles = Tiles::new(geo, chunk_bytes);
    let isa = Isa::best();
    let columns = tiles.images * tiles.per_image();
    let mut output = vec![0.0; geo.batch * outs * out_plane];

    let tiled_plane = tiles.per_image() * TILE * TILE;
    let mut scratch = Scratch::take();
    let [u, v, m, staged] = scratch.parts([
        XI * outs * ins,
        XI * columns * ins,
        XI * columns * outs,
        columns * TILE * TILE * outs,
    ]);

    // U [outs][ξ][ins].
    u.par_chunks_mut(XI * ins)
        .enumerate()
        .for_each(|(o, row)| transform_kernels(isa, weight, kernels, [outs, ins], o, row));

    for first in (0..geo.batch).step_by(tiles.images) {
        let count = tiles.images.min(geo.batch - first);
        let cols = count * tiles.per_image();
        let images = &input[first * ins * in_plane..(first + count) * ins * in_plane];
        transform_inputs(isa, geo, &tiles, images, &mut v[..ins * XI * cols]);
        // M [ξ][outs][cols] = U[ξ] V[ξ], one product per task.
        let (u, v) = (&*u, &v[..ins * XI * cols]);
        m[..XI * outs * cols]
            .par_chunks_mut(outs * cols)
            .enumerate()
            .for_each(|(xi, dst)| product(dst, u, v, xi, [outs, ins, cols]));
        // Output channel o's whole tiles of every image, [outs][count][tiled_plane], then the
        // planes cut from them.
        let m = &m[..XI * outs * cols];
        staged[..outs * count * tiled_plane]
            .par_chunks_mut(count * tiled_plane)
            .enumerate()
            .for_each(|(o, staged)| transform_output(isa, &tiles, m, o, cols, outs, staged));
        let staged = &staged[..outs * count * tiled_plane];
        let width = tiles.grid[1] * TILE;
        output[first * outs * out_plane..(first + count) * outs * out_plane]
            .par_chunks_mut(out_plane)
            .enumerate()
            .for_each(|(i, plane)| {
                let (n, o) = (i / outs, i % outs);
                let b = bias.map_or(0.0, |b| b[o]);
                let tiled = &staged[(o * count + n) * tiled_plane..][..tiled_plane];
                for (line, tiled) in plane.chunks_exact_mut(ow).zip(tiled.chunks_exact(width)) {
                    for (v, t) in line.iter_mut().zip(tiled) {
                        *v = t + b;
                    }
                }
            });
    }
    output
}

/// `V [ins][ξ][cols]` of a chunk of `images`: channel c's block holds its tiles of every
/// image in the chunk.
fn transform_inputs(isa: Isa, geo: &Conv2dGeometry, tiles: &Tiles, images: &[f32], v: &mut [f32]) {
    let (ins, in_plane) = (geo.in_channels, geo.in_plane());
    let count = images.len() / (ins * in_plane);
    let cols = count * tiles.per_image();
    let [ph, pw] = padded_size(tiles);
    v.par_chunks_mut(XI * cols).enumerate().for_each_init(
        || vec![0.0; count * ph * pw],
        |padded, (c, block)| {
            let planes = images.chunks_exact(in_plane).skip(c).step_by(ins);
            pad_planes(planes, geo.in_size, geo.padding, [ph, pw], padded);
            transform_input(isa, tiles, [ph, pw], padded, block, cols);
        },
    );
}

/// `dst [outs x cols] = U[ξ] (row o at o·XI·ins + ξ·ins) · V[ξ] (row c at c·XI·cols + ξ·cols)`.
fn product(dst: &mut [f32], u: &[f32], v: &[f32], xi: usize, [outs, ins, cols]: [usize; 3]) {
    let a = View::new(&u[xi * ins..], [outs, ins], [XI * ins, 1]);
    let b = View::new(&v[xi * cols..], [ins, cols], [XI * cols, 1]);
    matmul(dst, a, b, false);
}

crate::isa::multiversion! {
    /// Row `o` of U, `[ξ][ins]`: `G g Gᵀ` of each of output channel `o`'s kernels, input
    /// channels side by side in the lanes. Runs at every call (the weights change every
    /// step), so it is multiversioned and copies whole lanes: a copy of a run-time length
    /// was a `memcpy` call per 16 values, 6% of the Winograd path's time in resnet-cifar10's
    /// evaluation (`perf`, AMD EPYC, 2026-12-07).
    fn transform_kernels(
        weight: &[f32],
        kernels: Kernels,
        dims: [usize; 2],
        o: usize,
        row: &mut [f32],
    ) {
        let [outs, ins] = dims;
        let mut g = [[0.0f32; LANES]; 9];
        let mut gg = [[0.0f32; LANES]; PATCH * 3];
        let mut u = [[0.0f32; LANES]; XI];
        for c0 in (0..ins).step_by(LANES) {
            let lanes = LANES.min(ins - c0);
            for (k, lane) in g.iter_mut().enumerate() {
                for (l, v) in lane[..lanes].iter_mut().enumerate() {
                    let c = c0 + l;
                    *v = kernels.at(weight, [outs, ins, 9], [o, c, k]);
                }
            }
            // G along the kernel's rows (for each of its 3 columns), then along its columns.
            for j in 0..3 {
                kernel_1d(&g, j, 3, &mut gg, j, 3);
            }
            for a in 0..PATCH {
                kernel_1d(&gg, a * 3, 1, &mut u, a * PATCH, 1);
            }
            for (xi, lane) in u.iter().enumerate() {
                if lanes == LANES {
                    row[xi * ins + c0..][..LANES].copy_from_slice(lane);
                } else {
                    row[xi * ins + c0..][..lanes].copy_from_slice(&lane[..lanes]);
                }
            }
        }
    }
}

/// `G` applied to the three lanes `src[start + k·stride]`, its six results written to
/// `dst[to + k·step]`.
#[inline(always)]
fn kernel_1d(src: &[Lane], start: usize, stride: usize, dst: &mut [Lane], to: usize, step: usize) {
    for l in 0..LANES {
        let (g0, g1, g2) = (
            src[start][l],
            src[start + stride][l],
            src[start + 2 * stride][l],
        );
        dst[to][l] = g0 / 4.0;
        dst[to + step][l] = -(g0 + g1 + g2) / 6.0;
        dst[to + 2 * step][l] = -(g0 - g1 + g2) / 6.0;
        dst[to + 3 * step][l] = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
        dst[to + 4 * step][l] = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
        dst[to + 5 * step][l] = g2;
    }
}

/// The first element of each tile of the block of tiles `first..first + LANES`, counted over
/// the images of a chunk in row-major tile order, in planes `[height, width]` stored one after
/// another; lanes past the last tile point at 0.
#[inline(always)]
fn tile_origins(
    tiles: &Tiles,
    first: usize,
    last: usize,
    [height, width]: [usize; 2],
) -> [usize; LANES] {
    let mut origins = [0; LANES];
    let (columns, per_image) = (tiles.grid[1], tiles.per_image());
    for (l, origin) in origins.iter_mut().enumerate() {
        let q = first + l;
        if q < last {
            let (n, t) = (q / per_image, q % per_image);
            *origin = n * height * width + (t / columns) * TILE * width + (t % columns) * TILE;
        }
    }
    origins
}

/// Sides of the zero-padded copy of an input plane that every tile's 6x6 patch lies in.
fn padded_size(tiles: &Tiles) -> [usize; 2] {
    tiles.grid.map(|g| g * TILE + PATCH - TILE)
}

/// Copies `planes` (`[h, w]` each) into `padded` (`[ph, pw]` each), `offset` rows and
/// columns in; everything else zero. For the inputs the offset is the padding and the padded
/// size [`padded_size`], so every tile's patch lies inside; for the output gradient, no
/// offset and the tiles' full extent.
pub(crate) fn pad_planes<'a>(
    planes: impl Iterator<Item = &'a [f32]>,
    [h, w]: [usize; 2],
    [py, px]: [usize; 2],
    [ph, pw]: [usize; 2],
    padded: &mut [f32],
) {
    padded.fill(0.0);
    for (plane, padded) in planes.zip(padded.chunks_exact_mut(ph * pw)) {
        let n = w.min(pw - px);
        for (y, line) in plane.chunks_exact(w).enumerate().take(h.min(ph - py)) {
            padded[(y + py) * pw + px..][..n].copy_from_slice(&line[..n]);
        }
    }
}

/// The `n x n` blocks at `origins` (one per lane) of planes `width` wide into the first `n`
/// rows and columns of `d`'s 6x6 grid of lanes: lane by lane, a block row at a time, so one
/// bounds check per row, not per value.
#[inline(always)]
fn gather<const N: usize>(
    padded: &[f32],
    origins: [usize; LANES],
    width: usize,
    d: &mut [Lane; XI],
) {
    for (l, origin) in origins.into_iter().enumerate() {
        for i in 0..N {
            let row: &[f32; N] = padded[origin + i * width..][..N]
                .try_into()
                .expect("a block row");
            for (j, &v) in row.iter().enumerate() {
                d[i * PATCH + j][l] = v;
            }
        }
    }
}

/// `src[..lanes]` into `dst[..lanes]`. A full lane is one fixed-size move (a vector load and
/// store); written as a slice copy, LLVM merged both cases into a call to `memcpy` per lane,
/// 15% of the layer's time.
#[inline(always)]
fn copy_lanes(dst: &mut [f32], src: &[f32], lanes: usize) {
    if lanes == LANES {
        let dst: &mut Lane = (&mut dst[..LANES]).try_into().expect("a full lane");
        *dst = src[..LANES].try_into().expect("a full lane");
    } else {
        for (d, s) in dst[..lanes].iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// The `N x N` blocks of every tile of a chunk (from planes of `size` in `padded`), each taken
/// to a 6x6 block by `transform_1d` along its rows and then its columns, into `block [ξ][cols]`,
/// sixteen tiles at a time: the input transform (`N` = 6, `Bᵀ`) and the output gradient's
/// (`N` = 4, `A`).
#[inline(always)]
fn tiles_to_block<const N: usize>(
    tiles: &Tiles,
    size: [usize; 2],
    padded: &[f32],
    block: &mut [f32],
    cols: usize,
    transform_1d: impl Fn(&[Lane; XI], usize, usize, &mut [Lane; XI]),
) {
    let mut d = [[0.0f32; LANES]; XI];
    let mut tmp = [[0.0f32; LANES]; XI];
    let mut out = [[0.0f32; LANES]; XI];
    for q0 in (0..cols).step_by(LANES) {
        let lanes = LANES.min(cols - q0);
        let origins = tile_origins(tiles, q0, cols, size);
        gather::<N>(padded, origins, size[1], &mut d);
        for j in 0..N {
            transform_1d(&d, j, PATCH, &mut tmp);
        }
        for i in 0..PATCH {
            transform_1d(&tmp, i * PATCH, 1, &mut out);
        }
        for (xi, lane) in out.iter().enumerate() {
            copy_lanes(&mut block[xi * cols + q0..], lane, lanes);
        }
    }
}

crate::isa::multiversion! {
    /// One channel's tiles of every image of a chunk, from its padded planes (`size` each),
    /// into `block [ξ][cols]`: `Bᵀ d B`.
    fn transform_input(tiles: &Tiles, size: [usize; 2], padded: &[f32], block: &mut [f32], cols: usize) {
        tiles_to_block::<PATCH>(tiles, size, padded, block, cols, input_1d)
    }
}

/// `Bᵀ` applied to the six lanes `src[start + k·stride]`, written to the same places of `dst`.
#[inline(always)]
fn input_1d(src: &[Lane; XI], start: usize, stride: usize, dst: &mut [Lane; XI]) {
    for l in 0..LANES {
        let d = |k: usize| src[start + k * stride][l];
        let (d0, d1, d2, d3, d4, d5) = (d(0), d(1), d(2), d(3), d(4), d(5));
        dst[start][l] = 4.0 * d0 - 5.0 * d2 + d4;
        dst[start + stride][l] = -4.0 * (d1 + d2) + d3 + d4;
        dst[start + 2 * stride][l] = 4.0 * (d1 - d2) - d3 + d4;
        dst[start + 3 * stride][l] = 2.0 * (d3 - d1) - d2 + d4;
        dst[start + 4 * stride][l] = 2.0 * (d1 - d3) - d2 + d4;
        dst[start + 5 * stride][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

crate::isa::multiversion! {
    /// Output channel `o`'s whole 4x4 tiles of every image of a chunk from `m [ξ][outs][cols]`,
    /// into `staged [count][tile rows · 4][tile columns · 4]`, sixteen tiles at a time.
    fn transform_output(tiles: &Tiles, m: &[f32], o: usize, cols: usize, outs: usize, staged: &mut [f32]) {
        let width = tiles.grid[1] * TILE;
        let height = tiles.grid[0] * TILE;
        let mut src = [[0.0f32; LANES]; XI];
        let mut tmp = [[0.0f32; LANES]; XI];
        let mut y = [[0.0f32; LANES]; XI];
        for q0 in (0..cols).step_by(LANES) {
            let lanes = LANES.min(cols - q0);
            for (xi, lane) in src.iter_mut().enumerate() {
                copy_lanes(lane, &m[(xi * outs + o) * cols + q0..], lanes);
            }
            // Aᵀ along the rows of the 6x6 blocks (4 rows out), then along their columns.
            for j in 0..PATCH {
                output_1d(&src, j, PATCH, &mut tmp);
            }
            for i in 0..TILE {
                output_1d(&tmp, i * PATCH, 1, &mut y);
            }
            let origins = tile_origins(tiles, q0, cols, [height, width]);
            for (l, origin) in origins.iter().enumerate().take(lanes) {
                for i in 0..TILE {
                    for j in 0..TILE {
                        staged[origin + i * width + j] = y[i * PATCH + j][l];
                    }
                }
            }
        }
    }
}

/// `Aᵀ` applied to the six lanes `src[start + k·stride]`, its four results written to the
/// first four of those places in `dst`.
#[inline(always)]
fn output_1d(src: &[Lane; XI], start: usize, stride: usize, dst: &mut [Lane; XI]) {
    for l in 0..LANES {
        let m = |k: usize| src[start + k * stride][l];
        let (m0, m1, m2, m3, m4, m5) = (m(0), m(1), m(2), m(3), m(4), m(5));
        let (a, b) = (m1 + m2, m1 - m2);
        let (c, d) = (m3 + m4, m3 - m4);
        dst[start][l] = m0 + a + c;
        dst[start + stride][l] = b + 2.0 * d;
        dst[start + 2 * stride][l] = a + 4.0 * c;
        dst[start + 3 * stride][l] = b + 8.0 * d + m5;
    }
}

crate::isa::multiversion! {
    /// One output channel's gradient tiles (4x4, from its planes padded to the tiles' full
    /// extent `size`) of every image of a chunk, taken back through the output transform
    /// into `block [ξ][cols]`: `A dY Aᵀ`.
    fn transform_output_adjoint(tiles: &Tiles, size: [usize; 2], padded: &[f32], block: &mut [f32], cols: usize) {
        tiles_to_block::<TILE>(tiles, size, padded, block, cols, output_1d_adjoint)
    }
}

/// `A` applied to the four lanes `src[start + k·stride]`, its six results written to the six
/// places `dst[start + k·stride]`: the adjoint of [`output_1d`].
#[inline(always)]
fn output_1d_adjoint(src: &[Lane; XI], start: usize, stride: usize, dst: &mut [Lane; XI]) {
    for l in 0..LANES {
        let y = |k: usize| src[start + k * stride][l];
        let (y0, y1, y2, y3) = (y(0), y(1), y(2), y(3));
        let (even, odd) = (y0 + y2, y1 + y3);
        let (even4, odd2) = (y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
        dst[start][l] = y0;
        dst[start + stride][l] = even + odd;
        dst[start + 2 * stride][l] = even - odd;
        dst[start + 3 * stride][l] = even4 + odd2;
        dst[start + 4 * stride][l] = even4 - odd2;
        dst[start + 5 * stride][l] = y3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_within, convolution, input_gradient, values, weight_gradient};

    /// Relative to the sum of the absolute products an output adds up: a plain `f32` dot
    /// product is off by up to about n·2⁻²⁴ of it; the transforms' coefficients make this
    /// a few times more.
    const MARGIN: f64 = 1e-5;

    /// A 3x3 layer's geometry.
    fn geometry(
        batch: usize,
        ins: usize,
        size: [usize; 2],
        outs: usize,
        padding: [usize; 2],
    ) -> Conv2dGeometry {
        crate::testing::geometry(batch, ins, size, outs, [3, 3], padding)
    }

    /// Odd sizes (partial tiles on both edges, partial lane blocks), every padding the kernel
    /// takes, more tiles per row than one lane block, and chunks of one image and of several.
    fn cases() -> Vec<(Conv2dGeometry, usize)> {
        vec![
            (geometry(3, 16, [23, 23], 17, [1, 1]), CHUNK_BYTES),
            (geometry(3, 16, [23, 23], 17, [1, 1]), 1),
            (geometry(5, 18, [6, 7], 16, [0, 2]), 2 * 4 * XI * 18 * 6),
            (geometry(2, 16, [3, 3], 20, [1, 1]), CHUNK_BYTES),
            (geometry(2, 16, [70, 9], 16, [2, 1]), CHUNK_BYTES),
            (geometry(1, 16, [5, 5], 16, [0, 0]), CHUNK_BYTES),
        ]
    }

    #[test]
    fn forward_matches_the_direct_convolution() {
        for (i, (geo, chunk)) in cases().into_iter().enumerate() {
            let x = values(geo.input_len(), 10 * i as u64 + 1);
            let w = values(geo.weight_len(), 10 * i as u64 + 2);
            let b = values(geo.out_channels, 10 * i as u64 + 3);
            let got = run(&geo, &x, &w, Kernels::AsGiven, Some(&b), chunk);
            let what = format!("{geo:?} (chunk {chunk} bytes)");
            assert_within(what, &got, convolution(&geo, &x, &w, Some(&b)), MARGIN);
        }
    }

    #[test]
    fn input_grad_matches_the_direct_sum() {
        for (i, (geo, _)) in cases().into_iter().enumerate() {
            let w = values(geo.weight_len(), 10 * i as u64 + 5);
            let g = values(geo.output_len(), 10 * i as u64 + 6);
            let got = input_grad(&geo, &w, &g);
            let what = format!("{geo:?} input gradient");
            assert_within(what, &got, input_gradient(&geo, &w, &g), MARGIN);
        }
    }

    #[test]
    fn weight_grad_matches_the_direct_sum() {
        for (i, (geo, chunk)) in cases().into_iter().enumerate() {
            let x = values(geo.input_len(), 10 * i as u64 + 7);
            let g = values(geo.output_len(), 10 * i as u64 + 8);
            let got = weight_grad_chunked(&geo, &x, &g, chunk);
            let what = format!("{geo:?} (chunk {chunk} bytes) weight gradient");
            assert_within(what, &got, weight_gradient(&geo, &x, &g), MARGIN);
        }
    }

    /// Each build of the transforms this CPU can run (AVX-512, AVX2, baseline) gives the same
    /// bits.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let geo = geometry(3, 16, [23, 21], 16, [1, 1]);
        let tiles = Tiles::new(&geo, CHUNK_BYTES);
        let cols = 3 * tiles.per_image();
        let [ph, pw] = padded_size(&tiles);
        let padded = values(3 * ph * pw, 7);
        let m = values(XI * 2 * cols, 8);
        let run_on = |isa| {
            let mut block = vec![0.0; XI * cols];
            transform_input(isa, &tiles, [ph, pw], &padded, &mut block, cols);
            let mut staged = vec![0.0; cols * TILE * TILE];
            transform_output(isa, &tiles, &m, 1, cols, 2, &mut staged);
            let mut adjoint = vec![0.0; XI * cols];
            let extent = tiles.grid.map(|g| g * TILE);
            transform_output_adjoint(isa, &tiles, extent, &staged, &mut adjoint, cols);
            (block, staged, adjoint)
        };
        let isas = Isa::available();
        let want = run_on(*isas.last().unwrap());
        for isa in isas {
            assert_eq!(run_on(isa), want, "{isa:?} build against the baseline");
        }
    }

    #[test]
    fn only_stride_1_3x3_layers_with_enough_channels_apply() {
        let base = geometry(2, 16, [8, 8], 16, [1, 1]);
        assert!(applies(&base));
        assert!(!applies(&Conv2dGeometry {
            stride: [2, 2],
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            kernel: [5, 5],
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            dilation: [1, 2],
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            padding: [3, 1],
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            in_channels: 3,
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            out_channels: 8,
            ..base
        }));
        assert!(!applies(&Conv2dGeometry {
            in_size: [3, 4],
            padding: [0, 0],
            ..base
        }));
    }
}
