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
}
