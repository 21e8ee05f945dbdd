//! Per-image transforms done at batch time, the way torchvision's pipelines do them: geometric
//! changes on the raw pixels first (`RandomCrop(padding)`, `RandomHorizontalFlip`, `Resize`),
//! then scaling and normalisation ([`crate::Normalize`]).

use rand::rngs::SmallRng;
use rand::Rng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Training-time augmentation of the improved recipes. Evaluation never augments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Pad each side with this many pixels and crop back to the original size at a random
    /// offset (`RandomCrop(size, padding)`): a translation by up to this many pixels each way;
    /// 0 turns it off.
    #[serde(default)]
    pub crop_padding: usize,
    /// What the padding holds.
    #[serde(default, skip_serializing_if = "PaddingMode::is_zeros")]
    pub padding_mode: PaddingMode,
    /// Mirror left-right with probability 1/2 (`RandomHorizontalFlip`).
    #[serde(default)]
    pub hflip: bool,
    /// With `hflip`: mirror each image in every other epoch instead, starting from a choice
    /// drawn once per image (airbench94's alternating flip: Keller Jordan, "94% on CIFAR-10
    /// in 3.29 seconds on a single GPU", 2024). Every pair of epochs then sees each image
    /// both ways, where independent draws leave a quarter of them unmirrored or mirrored twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alternate_flip: bool,
}

/// What fills the border a translation brings in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaddingMode {
    /// Black pixels (torchvision's `RandomCrop(padding=p)`).
    #[default]
    Zeros,
    /// The image mirrored at its edge, the edge itself not repeated (`F.pad(mode="reflect")`,
    /// airbench94's translation).
    Reflect,
}

impl PaddingMode {
    fn is_zeros(&self) -> bool {
        *self == PaddingMode::Zeros
    }
}

/// Where a training image is drawn, for an augmentation that depends on more than its random
/// draws: the alternating flip's choice per image and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The recipe's seed.
    pub seed: u64,
    /// The epoch, from 1.
    pub epoch: usize,
    /// The image's index in the training set.
    pub index: usize,
}

impl Augment {
    /// Whether this augmentation leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.hflip
    }

    /// Applies the augmentation to one channel-first image of `channels` x `h` x `w` values,
    /// the image at `at` in its fit.
    pub fn apply(
        &self,
        image: &[u8],
        channels: usize,
        h: usize,
        w: usize,
        rng: &mut SmallRng,
        at: Position,
    ) -> Vec<u8> {
        let p = self.crop_padding as i64;
        // Offsets into the padded image, shifted back to source coordinates.
        let (dy, dx) = if p > 0 {
            (
                (rng.random_range(0..=2 * p) - p) as isize,
                (rng.random_range(0..=2 * p) - p) as isize,
            )
        } else {
            (0, 0)
        };
        let flip = match (self.hflip, self.alternate_flip) {
            (false, _) => false,
            (true, false) => rng.random_bool(0.5),
            (true, true) => {
                // The image's own first choice, the same in every epoch, then every other epoch.
                let key = at.seed ^ (at.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let first = SmallRng::seed_from_u64(key).random_bool(0.5);
                first ^ (at.epoch % 2 == 0)
            }
        };
        let reflect = self.padding_mode == PaddingMode::Reflect;
        // A source coordinate, or None where the padding is black.
        let source = |s: isize, n: usize| -> Option<usize> {
            let n = n as isize;
            match s {
                s if (0..n).contains(&s) => Some(s as usize),
                _ if !reflect => None,
                s if s < 0 => Some((-s).min(n - 1) as usize),
                s => Some((2 * (n - 1) - s).max(0) as usize),
            }
        };
        let mut out = vec![0u8; image.len()];
        for c in 0..channels {
            let plane = &image[c * h * w..(c + 1) * h * w];
            let dst = &mut out[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let Some(sy) = source(y as isize + dy, h) else {
                    continue; // padding: stays black
                };
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    if let Some(sx) = source(xx as isize + dx, w) {
                        dst[y * w + x] = plane[sy * w + sx];
                    }
                }
            }
        }
        out
    }
}

/// Bilinear resize of a channel-first image to `out_h` x `out_w`, with half-pixel centres
/// (`align_corners=False`, as PyTorch's and PIL's bilinear upscaling).
pub fn resize_bilinear(
    image: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let axis = |out: usize, size: usize| -> Vec<(usize, usize, f32)> {
        let scale = size as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(size - 1);
                let i1 = (i0 + 1).min(size - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(out_h, h), axis(out_w, w));
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let plane = &image[c * h * w..(c + 1) * h * w];
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// Resizes a channel-first 8-bit image as torchvision's `Resize` does on a PIL image: Pillow's
/// `Image.resize(size, BILINEAR)`, bit for bit. Pillow widens the filter when shrinking
/// (antialiasing), works in fixed point (22 fractional bits) and rounds to 8 bits after its
/// horizontal pass and again after its vertical one, so its result differs from the exact
/// [`resize_bilinear`] by up to one level: the tutorials resize this way, and so does Kiln.
pub fn resize_bilinear_pil(
    image: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    let (xs, ys) = (pil_coefficients(w, out_w), pil_coefficients(h, out_h));
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    let mut rows = vec![0u8; h * out_w];
    for c in 0..channels {
        let plane = &image[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            for (x, (first, k)) in xs.iter().enumerate() {
                let src = &plane[y * w + first..];
                rows[y * out_w + x] = pil_clip(k.iter().zip(src).map(|(&k, &p)| k * p as i64));
            }
        }
        for (first, k) in &ys {
            for x in 0..out_w {
                let column = k
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| k * rows[(first + i) * out_w + x] as i64);
                out.push(pil_clip(column));
            }
        }
    }
    out
}

/// Pillow's fixed-point precision for 8-bit images (`PRECISION_BITS` in `Resample.c`).
const PIL_PRECISION: u32 = 32 - 8 - 2;

/// For each output position along an axis of `size` pixels resized to `out`: the first input
/// pixel it reads and its fixed-point weights (Pillow's `precompute_coeffs` with the triangle
/// filter, then `normalize_coeffs_8bpc`).
fn pil_coefficients(size: usize, out: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = size as f64 / out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support, 1, widened when shrinking
    let ss = 1.0 / filter_scale;
    (0..out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            // C's (int) cast truncates; both values are non-negative here before the clamp.
            let first = ((center - support + 0.5).max(0.0)) as usize;
            let last = ((center + support + 0.5) as usize).min(size);
            let weights: Vec<f64> = (first..last)
                .map(|x| (1.0 - ((x as f64 - center + 0.5) * ss).abs()).max(0.0))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let scaled = k * (1u64 << PIL_PRECISION) as f64;
                    // (int)(±0.5 + k * 2^22): rounding half away from zero.
                    (if scaled < 0.0 {
                        scaled - 0.5
                    } else {
                        scaled + 0.5
                    }) as i64
                })
                .collect();
            (first, fixed)
        })
        .collect()
}

/// One output value from its fixed-point products: Pillow's `clip8`, with its half-unit start.
fn pil_clip(products: impl Iterator<Item = i64>) -> u8 {
    let sum = (1i64 << (PIL_PRECISION - 1)) + products.sum::<i64>();
    (sum >> PIL_PRECISION).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_constants_and_interpolates_between_pixels() {
        // A constant image stays constant.
        let out = resize_bilinear(&[7.0; 4], 1, 2, 2, 5, 5);
        assert!(out.iter().all(|&v| (v - 7.0).abs() < 1e-6));
        // 1x2 -> 1x4 with half-pixel centres: [0, 4] -> [0, 1, 3, 4].
        let out = resize_bilinear(&[0.0, 4.0], 1, 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
        // Channels are resized independently.
        let out = resize_bilinear(&[1.0, 1.0, 9.0, 9.0], 2, 1, 2, 1, 3);
        assert_eq!(out, vec![1.0, 1.0, 1.0, 9.0, 9.0, 9.0]);
    }

    const AT: Position = Position {
        seed: 0,
        epoch: 1,
        index: 0,
    };

    #[test]
    fn flip_mirrors_and_crop_shifts_in_black() {
        let image: Vec<u8> = (1..=9).collect(); // 1 channel, 3x3
        let mut rng = SmallRng::seed_from_u64(0);
        let flip = Augment {
            hflip: true,
            ..Augment::default()
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(flip.apply(&image, 1, 3, 3, &mut rng, AT));
        }
        let mirrored = vec![3, 2, 1, 6, 5, 4, 9, 8, 7];
        assert_eq!(seen, [image.clone(), mirrored].into_iter().collect());

        let crop = Augment {
            crop_padding: 1,
            ..Augment::default()
        };
        for _ in 0..50 {
            let out = crop.apply(&image, 1, 3, 3, &mut rng, AT);
            // Every output is the image shifted by at most one pixel, with zeros shifted in.
            let shifted = (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
                .any(|(dy, dx)| {
                    (0..3).all(|y: isize| {
                        (0..3).all(|x: isize| {
                            let (sy, sx) = (y + dy, x + dx);
                            let want = if (0..3).contains(&sy) && (0..3).contains(&sx) {
                                image[(sy * 3 + sx) as usize]
                            } else {
                                0
                            };
                            out[(y * 3 + x) as usize] == want
                        })
                    })
                });
            assert!(shifted, "{out:?}");
        }
    }

    #[test]
    fn reflect_padding_mirrors_the_image_at_its_edges_as_pytorch_pads() {
        // F.pad(x, (2, 2, 2, 2), mode="reflect") of a 1x1x4x4 image, then every 4x4 crop.
        let image: Vec<u8> = (0..16).collect();
        let reflect = |i: isize| {
            (if i < 0 {
                -i
            } else if i > 3 {
                6 - i
            } else {
                i
            }) as usize
        };
        let augment = Augment {
            crop_padding: 2,
            padding_mode: PaddingMode::Reflect,
            ..Augment::default()
        };
        let mut rng = SmallRng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let out = augment.apply(&image, 1, 4, 4, &mut rng, AT);
            let shift = (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| {
                    (0..4).all(|y: isize| {
                        (0..4).all(|x: isize| {
                            out[(y * 4 + x) as usize] as usize
                                == reflect(y + dy) * 4 + reflect(x + dx)
                        })
                    })
                });
            seen.insert(shift.expect("a reflected translation"));
        }
        assert_eq!(seen.len(), 25, "every offset in [-2, 2]^2 occurs");
    }

    #[test]
    fn alternating_flips_mirror_each_image_in_every_other_epoch() {
        let image: Vec<u8> = (1..=6).collect(); // 1 channel, 2x3
        let mirrored = vec![3, 2, 1, 6, 5, 4];
        let augment = Augment {
            hflip: true,
            alternate_flip: true,
            ..Augment::default()
        };
        let mut rng = SmallRng::seed_from_u64(0);
        let mut first_choices = Vec::new();
        for index in 0..64 {
            let at = |epoch| Position {
                seed: 7,
                epoch,
                index,
            };
            let mut flipped =
                |epoch| augment.apply(&image, 1, 2, 3, &mut rng, at(epoch)) == mirrored;
            let first = flipped(1);
            // Whatever the generator draws: the image's choice flips from epoch to epoch.
            for epoch in 2..6 {
                assert_eq!(flipped(epoch), first ^ (epoch % 2 == 0), "image {index}");
            }
            first_choices.push(first);
        }
        let mirrored_first = first_choices.iter().filter(|&&f| f).count();
        assert!(
            (16..=48).contains(&mirrored_first),
            "{mirrored_first} of 64 mirrored first"
        );
    }

    /// `pattern`'s channel-first pixels, as the Pillow script in the test below made them.
    fn pattern(c: usize, h: usize, w: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out.push(((37 * ch + 11 * y * w + 7 * x + x * y * 13) % 256) as u8);
                }
            }
        }
        out
    }

    /// Expected values from Pillow 13.0.0: `Image.resize((ow, oh), Image.BILINEAR)` of the
    /// same pattern as an RGB or L image (2026-12-05).
    #[test]
    fn pil_bilinear_is_pillows_to_the_bit() {
        let up = resize_bilinear_pil(&pattern(3, 4, 5), 3, 4, 5, 7, 9);
        assert_eq!(
            up,
            [
                0, 2, 6, 10, 14, 18, 22, 26, 28, 20, 23, 30, 36, 43, 49, 56, 62, 66, 51, 58, 68,
                79, 89, 100, 110, 121, 127, 83, 92, 106, 121, 136, 150, 165, 180, 189, 114, 125,
                144, 155, 164, 182, 202, 220, 231, 145, 159, 182, 132, 64, 87, 110, 133, 146, 165,
                180, 206, 118, 1, 27, 52, 78, 93, 37, 39, 43, 47, 51, 55, 59, 63, 65, 57, 60, 67,
                73, 80, 86, 93, 99, 103, 88, 95, 105, 116, 126, 137, 147, 158, 164, 120, 129, 143,
                158, 173, 187, 188, 131, 98, 151, 162, 181, 192, 201, 219, 212, 98, 31, 182, 196,
                219, 169, 101, 124, 136, 109, 92, 202, 217, 243, 155, 38, 64, 89, 115, 130, 74, 76,
                80, 84, 88, 92, 96, 100, 102, 94, 97, 104, 110, 117, 123, 130, 136, 140, 125, 132,
                142, 153, 163, 174, 184, 195, 201, 157, 166, 180, 195, 210, 153, 111, 126, 135,
                188, 193, 202, 219, 238, 124, 38, 56, 68, 219, 178, 110, 114, 138, 110, 92, 115,
                129, 239, 169, 52, 49, 75, 101, 126, 152, 167
            ]
        );
        // Shrinking widens the filter (Pillow's antialiasing).
        let down = resize_bilinear_pil(&pattern(1, 8, 8), 1, 8, 8, 3, 3);
        assert_eq!(down, [96, 102, 129, 112, 122, 136, 104, 121, 110]);
        // CIFAR-10's 32x32 to resnet-cifar10's 96x96.
        let big = resize_bilinear_pil(&pattern(3, 32, 32), 3, 32, 32, 96, 96);
        assert_eq!(big.iter().map(|&v| v as u64).sum::<u64>(), 3_502_080);
        assert_eq!(&big[..12], &[0, 0, 2, 5, 7, 9, 12, 14, 16, 19, 21, 23]);
        assert_eq!(
            &big[5000..5012],
            &[31, 21, 12, 88, 164, 240, 231, 221, 212, 203, 193, 184]
        );
    }
}
