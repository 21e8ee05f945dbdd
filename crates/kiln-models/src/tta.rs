//! Test-time augmentation: a network's logits averaged over mirrored and shifted copies of
//! each image, as airbench94 evaluates (`infer` of its `utils.py`, "tta_level" 1 and 2).
//!
//! [`Tta`] wraps any [`ImageClassifier`] and is one itself, so evaluation code runs unchanged.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ImageClassifier, NoProbe, Probe};

/// Which copies of each image the logits are averaged over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestTimeAugmentation {
    /// The image alone.
    #[default]
    None,
    /// The image and its mirror image, half each.
    Mirror,
    /// Half the mirror average of the image, a quarter each that of the image shifted one
    /// pixel down and right and one pixel up and left (its border reflected, as
    /// `F.pad(mode="reflect")` does): six passes.
    MirrorTranslate,
}

impl TestTimeAugmentation {
    /// Whether it changes nothing.
    pub fn is_none(&self) -> bool {
        *self == TestTimeAugmentation::None
    }
}

/// `model` evaluated with test-time augmentation.
pub struct Tta<'a, M> {
    model: &'a M,
    augmentation: TestTimeAugmentation,
}

impl<'a, M> Tta<'a, M> {
    /// `model`, its logits averaged as `augmentation` says.
    pub fn new(model: &'a M, augmentation: TestTimeAugmentation) -> Self {
        Tta {
            model,
            augmentation,
        }
    }
}

impl<B: Backend, M: ImageClassifier<B>> ImageClassifier<B> for Tta<'_, M> {
    /// The probe sees the plain pass only (the layer table and feature maps are the network's).
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        probe: &mut P,
    ) -> Tensor<B, 2> {
        let model = self.model;
        match self.augmentation {
            TestTimeAugmentation::None => model.forward_probed(images, probe),
            TestTimeAugmentation::Mirror => mirrored(model, images, probe),
            TestTimeAugmentation::MirrorTranslate => {
                let down = mirrored(model, shift(images.clone(), 1), &mut NoProbe);
                let up = mirrored(model, shift(images.clone(), -1), &mut NoProbe);
                let own = mirrored(model, images, probe);
                own.mul_scalar(0.5) + (down + up).mul_scalar(0.25)
            }
        }
    }
}

/// The mean of `model`'s logits for `x` and for its mirror image.
fn mirrored<B: Backend, M: ImageClassifier<B>, P: Probe<B> + ?Sized>(
    model: &M,
    x: Tensor<B, 4>,
    probe: &mut P,
) -> Tensor<B, 2> {
    let flipped = model.logits(x.clone().flip([3]));
    (model.forward_probed(x, probe) + flipped).mul_scalar(0.5)
}

/// `x` shifted by one pixel down and right (`by` = 1) or up and left (-1), the row and column
/// brought in mirrored from the other side of the edge: `F.pad(x, (1,)*4, "reflect")` cropped
/// at offset 0 or 2.
fn shift<B: Backend>(x: Tensor<B, 4>, by: i32) -> Tensor<B, 4> {
    let along = |x: Tensor<B, 4>, dim: usize| {
        let n = x.dims()[dim];
        if by > 0 {
            Tensor::cat(
                vec![x.clone().narrow(dim, 1, 1), x.narrow(dim, 0, n - 1)],
                dim,
            )
        } else {
            Tensor::cat(
                vec![x.clone().narrow(dim, 1, n - 1), x.narrow(dim, n - 2, 1)],
                dim,
            )
        }
    };
    along(along(x, 2), 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    /// Logits that are the image's pixels: a "network" that shows what it was given.
    struct Pixels;
    impl ImageClassifier<B> for Pixels {
        fn forward_probed<P: Probe<B> + ?Sized>(&self, x: Tensor<B, 4>, _: &mut P) -> Tensor<B, 2> {
            let [n, c, h, w] = x.dims();
            x.reshape([n, c * h * w])
        }
    }

    fn reflect(i: isize, n: isize) -> usize {
        (if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }) as usize
    }

    #[test]
    fn shifts_reflect_the_border_as_pytorchs_pad_then_crop() {
        let device = Default::default();
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [1, 1, 3, 4]), &device);
        for by in [1, -1] {
            let out = shift(x.clone(), by).into_data().to_vec::<f32>().unwrap();
            for y in 0..3isize {
                for xx in 0..4isize {
                    let want =
                        values[reflect(y - by as isize, 3) * 4 + reflect(xx - by as isize, 4)];
                    assert_eq!(out[(y * 4 + xx) as usize], want, "by {by} at ({y}, {xx})");
                }
            }
        }
    }

    #[test]
    fn the_logits_are_the_weighted_mean_over_the_copies() {
        let device = Default::default();
        let values: Vec<f32> = (0..12).map(|v| (v * v) as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 1, 3, 4]), &device);
        let logits = |t: TestTimeAugmentation| Tta::new(&Pixels, t).logits(x.clone());
        let plain = Pixels.logits(x.clone());
        assert_eq!(
            logits(TestTimeAugmentation::None).into_data(),
            plain.clone().into_data()
        );
        let mirror = (plain + Pixels.logits(x.clone().flip([3]))).mul_scalar(0.5);
        logits(TestTimeAugmentation::Mirror)
            .into_data()
            .assert_approx_eq::<f32>(
                &mirror.clone().into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        let m = |x: Tensor<B, 4>| {
            (Pixels.logits(x.clone()) + Pixels.logits(x.flip([3]))).mul_scalar(0.5)
        };
        let both = mirror.mul_scalar(0.5)
            + (m(shift(x.clone(), 1)) + m(shift(x.clone(), -1))).mul_scalar(0.25);
        logits(TestTimeAugmentation::MirrorTranslate)
            .into_data()
            .assert_approx_eq::<f32>(&both.into_data(), burn::tensor::Tolerance::absolute(1e-4));
    }
}
