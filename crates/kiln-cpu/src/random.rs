//! Bernoulli masks (dropout) from a counter-based generator, filled in parallel.
//!
//! burn-flex draws every element from one seeded generator in turn, on one thread: 8-10% of
//! cnn-dropout-cifar10's training step. Here element `i` of a draw is SplitMix64's output at
//! position `i` of a stream keyed per draw (as Philox-style generators in JAX and PyTorch's
//! CUDA backend key theirs), so any split of the elements over threads gives the same mask.
//! The key is drawn from burn-flex's seeded generator, so the backend's seed (`B::seed`, which
//! the training loop sets per batch) fixes every mask, and resuming a run reproduces them.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise the split, fixed so the work done per
/// element never depends on the machine (it does not anyway: each element is independent).
const CHUNK: usize = 1 << 14;

/// SplitMix64's increment (the golden ratio in 64 bits) and output function (Steele, Lea and
/// Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` values, each 1.0 with probability `prob` and 0.0 otherwise, from stream `key`.
pub fn bernoulli(key: u64, len: usize, prob: f64) -> Vec<f32> {
    // A draw u in [0, 2^53) is below prob * 2^53 with probability prob (to 2^-53).
    let threshold = (prob.clamp(0.0, 1.0) * (1u64 << 53) as f64) as u64;
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = (c * CHUNK) as u64;
            for (j, x) in chunk.iter_mut().enumerate() {
                let u = mix(key.wrapping_add((start + j as u64 + 1).wrapping_mul(GAMMA))) >> 11;
                *x = if u < threshold { 1.0 } else { 0.0 };
            }
        });
    out
}

/// A stream key from two uniform `f64` draws in [0, 1) of the backend's seeded generator.
pub fn key_from(draws: [f64; 2]) -> u64 {
    let bits = |u: f64| (u * (1u64 << 53) as f64) as u64;
    mix(bits(draws[0]) ^ (bits(draws[1]) << 11))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_of_ones_is_the_probability() {
        let n = 1 << 20;
        for prob in [0.1, 0.5, 0.75] {
            let ones = bernoulli(42, n, prob).iter().filter(|&&x| x == 1.0).count() as f64;
            // Five standard deviations of a binomial count.
            let sd = (n as f64 * prob * (1.0 - prob)).sqrt();
            assert!(
                (ones - n as f64 * prob).abs() < 5.0 * sd,
                "prob {prob}: {ones} ones of {n}"
            );
        }
        assert!(bernoulli(7, 1000, 0.0).iter().all(|&x| x == 0.0));
        assert!(bernoulli(7, 1000, 1.0).iter().all(|&x| x == 1.0));
    }

    #[test]
    fn neighbours_are_uncorrelated_and_keys_give_other_masks() {
        let n = 1 << 20;
        let m = bernoulli(3, n, 0.5);
        // Pairs (i, i+1) equal half the time for independent fair bits.
        let same = m.windows(2).filter(|w| w[0] == w[1]).count() as f64;
        let sd = ((n - 1) as f64 * 0.25).sqrt();
        assert!((same - (n - 1) as f64 * 0.5).abs() < 5.0 * sd, "{same}");
        let other = bernoulli(4, n, 0.5);
        let agree = m.iter().zip(&other).filter(|(a, b)| a == b).count() as f64;
        assert!(
            (agree - n as f64 * 0.5).abs() < 5.0 * (n as f64 * 0.25).sqrt(),
            "{agree}"
        );
    }

    #[test]
    fn the_mask_does_not_depend_on_the_thread_count() {
        let n = 5 * CHUNK + 123;
        let many = bernoulli(11, n, 0.3);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| bernoulli(11, n, 0.3));
        assert_eq!(many, one);
        // A shorter draw is the longer one's beginning: position, not length, decides.
        assert_eq!(bernoulli(11, 100, 0.3), many[..100]);
    }
}
