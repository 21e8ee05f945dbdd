//! Times `kiln_cpu`'s convolution paths and its max pools on the seed models' layer shapes
//! (and a few probes of the thresholds between paths), one thread pool of all cores, median
//! of 15 calls after 3 untimed ones. What the choices in `conv`, `direct` and `winograd` were
//! measured with; a step's speed is `cargo xtask bench`'s to measure, not this.
//!
//! `cargo run --release -p kiln-cpu --example kernel_times` prints, per layer, the time of the
//! path `conv` picks (`chosen`), then of the direct kernels and, where it applies, Winograd's,
//! called directly. With `KILN_CPU_DIRECT=0 KILN_CPU_WINOGRAD=0` the `chosen` column is im2col +
//! GEMM.

use std::time::Instant;

use kiln_cpu::conv::{self, Conv2dGeometry};
use kiln_cpu::pool::{max_pool2d, max_pool2d_with_indices, Pool2dGeometry};
use kiln_cpu::{direct, winograd};

fn median_ms(f: &dyn Fn()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed) % 13) as f32 * 0.1 - 0.6)
        .collect()
}

fn main() {
    // (name, batch, in channels, size, out channels, kernel, padding)
    let layers = [
        ("lenet5 conv1", 256, 1, 28, 6, 5, 2),
        ("lenet5 conv2", 256, 6, 14, 16, 5, 0),
        ("convnet conv1", 64, 1, 28, 4, 5, 2),
        ("convnet conv2", 64, 4, 14, 8, 5, 2),
        ("simple-cnn conv", 32, 3, 32, 16, 3, 0),
        ("cnn-dropout conv1", 32, 3, 32, 32, 3, 1),
        ("cnn-dropout conv2", 32, 32, 32, 32, 3, 1),
        ("probe 16->16", 32, 16, 32, 16, 3, 1),
        ("probe 3->64", 32, 3, 32, 64, 3, 1),
    ];
    println!("milliseconds: forward / input gradient / weight gradient");
    for (name, batch, ins, size, outs, k, p) in layers {
        let geo = Conv2dGeometry {
            batch,
            in_channels: ins,
            in_size: [size, size],
            out_channels: outs,
            kernel: [k, k],
            stride: [1, 1],
            padding: [p, p],
            dilation: [1, 1],
        };
        let x = values(geo.batch * ins * size * size, 1);
        let w = values(outs * ins * k * k, 2);
        let [oh, ow] = geo.out_size();
        let g = values(batch * outs * oh * ow, 3);
        let three = |fwd: &dyn Fn(), xg: &dyn Fn(), wg: &dyn Fn()| {
            format!(
                "{:7.3} {:7.3} {:7.3}",
                median_ms(fwd),
                median_ms(xg),
                median_ms(wg)
            )
        };
        let mut line = format!(
            "{name:18} chosen {}",
            three(
                &|| drop(conv::conv2d_forward(&geo, &x, &w, None)),
                &|| drop(conv::conv2d_input_grad(&geo, &w, &g)),
                &|| drop(conv::conv2d_weight_grad(&geo, &x, &g)),
            )
        );
        // Every layer here has stride 1 and padding below the kernel: the direct kernels
        // run on all of them, chosen or not.
        line += &format!(
            " | direct {}",
            three(
                &|| drop(direct::forward(&geo, &x, &w, None)),
                &|| drop(direct::input_grad(&geo, &w, &g)),
                &|| drop(direct::weight_grad(&geo, &x, &g)),
            )
        );
        if winograd::applies(&geo) {
            line += &format!(
                " | winograd {}",
                three(
                    &|| drop(winograd::forward(&geo, &x, &w, None)),
                    &|| drop(winograd::input_grad(&geo, &w, &g)),
                    &|| drop(winograd::weight_grad(&geo, &x, &g)),
                )
            );
        }
        println!("{line}");
    }
    // resnet-cifar10's convolutions at its batch of 64 (`kiln summary resnet-cifar10`), each
    // on the path `conv` picks (with KILN_CPU_WINOGRAD=0 the 3x3 stride-1 layers go to
    // im2col, with KILN_CPU_DIRECT=0 the stem), and how many of each the network has, so
    // that the column of totals is where one evaluation pass (forward) or one training
    // step's convolutions spend their time (the stem's input gradient aside: training never
    // asks for it).
    println!("resnet-cifar10, batch 64: forward / input gradient / weight gradient (ms), count");
    let mut totals = [0.0; 3];
    for (name, ins, size, outs, k, s, p, count) in [
        ("stem 7x7/2", 3, 96, 64, 7, 2, 0, 1),
        ("stage1 3x3", 64, 23, 64, 3, 1, 1, 4),
        ("stage2 3x3/2", 64, 23, 128, 3, 2, 1, 1),
        ("stage2 1x1/2", 64, 23, 128, 1, 2, 0, 1),
        ("stage2 3x3", 128, 12, 128, 3, 1, 1, 3),
        ("stage3 3x3/2", 128, 12, 256, 3, 2, 1, 1),
        ("stage3 1x1/2", 128, 12, 256, 1, 2, 0, 1),
        ("stage3 3x3", 256, 6, 256, 3, 1, 1, 3),
        ("stage4 3x3/2", 256, 6, 512, 3, 2, 1, 1),
        ("stage4 1x1/2", 256, 6, 512, 1, 2, 0, 1),
        ("stage4 3x3", 512, 3, 512, 3, 1, 1, 3),
    ] {
        let geo = Conv2dGeometry {
            batch: 64,
            in_channels: ins,
            in_size: [size, size],
            out_channels: outs,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
        };
        let [oh, ow] = geo.out_size();
        let x = values(64 * ins * size * size, 1);
        let w = values(outs * ins * k * k, 2);
        let g = values(64 * outs * oh * ow, 3);
        let ms = [
            median_ms(&|| drop(conv::conv2d_forward(&geo, &x, &w, None))),
            median_ms(&|| drop(conv::conv2d_input_grad(&geo, &w, &g))),
            median_ms(&|| drop(conv::conv2d_weight_grad(&geo, &x, &g))),
        ];
        for (t, m) in totals.iter_mut().zip(ms) {
            *t += m * count as f64;
        }
        let path = if winograd::chosen(&geo) {
            "winograd"
        } else if direct::forward_chosen(&geo) {
            "direct"
        } else {
            "im2col"
        };
        println!(
            "{name:14} {path:8} {:8.3} {:8.3} {:8.3}  x{count}",
            ms[0], ms[1], ms[2]
        );
    }
    println!(
        "{:23} {:8.3} {:8.3} {:8.3}",
        "total", totals[0], totals[1], totals[2]
    );
    // (name, planes, size, window, stride, padding)
    for (name, planes, size, k, s, p) in [
        ("lenet5 pool1", 256 * 6, 28, 2, 2, 0),
        ("lenet5 pool2", 256 * 16, 10, 2, 2, 0),
        ("resnet stem pool", 64 * 64, 45, 3, 2, 1),
    ] {
        let geo = Pool2dGeometry {
            planes,
            in_size: [size, size],
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            ceil_mode: false,
        };
        // Pseudo-random values: a repeating pattern would let the old branchy code's
        // predictions hit every time, as they never do on real activations.
        let x: Vec<f32> = (0..planes * size * size)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0)
            .collect();
        let indexed = median_ms(&|| drop(max_pool2d_with_indices(&geo, &x)));
        let plain = median_ms(&|| drop(max_pool2d(&geo, &x)));
        println!("{name:18} max pool with indices {indexed:7.3}, values only {plain:7.3}");
    }
}
