//! Per-image transforms done at batch time, the way torchvision's pipelines do them: geometric
//! changes on the raw pixels first (`RandomCrop(padding)`, `RandomHorizontalFlip`, `Resize`),
//! then scaling and normalisation ([`crate::Normalize`]).

use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Training-time augmentation of the improved recipes. Evaluation never augments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Pad each side with this many black pixels and crop back to the original size at a
    /// random offset (`RandomCrop(size, padding)`); 0 turns it off.
    #[serde(default)]
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2 (`RandomHorizontalFlip`).
    #[serde(default)]
    pub hflip: bool,
}

impl Augment {
    /// Whether this augmentation leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.hflip
    }

    /// Applies the augmentation to one channel-first image of `channels` x `h` x `w` values.
    pub fn apply(
        &self,
        image: &[u8],
        channels: usize,
        h: usize,
        w: usize,
        rng: &mut SmallRng,
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
        let flip = self.hflip && rng.random_bool(0.5);
        let mut out = vec![0u8; image.len()];
        for c in 0..channels {
            let plane = &image[c * h * w..(c + 1) * h * w];
            let dst = &mut out[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue; // padding: stays black
                }
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    if sx >= 0 && sx < w as isize {
                        dst[y * w + x] = plane[sy as usize * w + sx as usize];
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
    use rand::SeedableRng;

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

    #[test]
    fn flip_mirrors_and_crop_shifts_in_black() {
        let image: Vec<u8> = (1..=9).collect(); // 1 channel, 3x3
        let mut rng = SmallRng::seed_from_u64(0);
        let flip = Augment {
            crop_padding: 0,
            hflip: true,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(flip.apply(&image, 1, 3, 3, &mut rng));
        }
        let mirrored = vec![3, 2, 1, 6, 5, 4, 9, 8, 7];
        assert_eq!(seen, [image.clone(), mirrored].into_iter().collect());

        let crop = Augment {
            crop_padding: 1,
            hflip: false,
        };
        for _ in 0..50 {
            let out = crop.apply(&image, 1, 3, 3, &mut rng);
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
