//! Looking inside a forward pass.
//!
//! Every network writes its forward pass once, as `forward_probed`, and reports each layer's
//! output to the [`Probe`] it is given. Training passes [`NoProbe`] (nothing is computed for
//! it); a summary records output shapes and parameter counts ([`Summary`]); a feature-map
//! picture keeps the maps of the convolutions. So the layer table, the feature maps and the
//! logits all come from the same code.

use std::fmt;

use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
use burn::nn::{Dropout, Linear, Relu};
use burn::prelude::*;

use crate::BatchNorm;

/// What a layer produced, per image: feature maps `[batch, channels, height, width]` or a
/// vector `[batch, features]`.
pub enum Output<'a, B: Backend> {
    /// `[batch, channels, height, width]`.
    Maps(&'a Tensor<B, 4>),
    /// `[batch, features]`.
    Vector(&'a Tensor<B, 2>),
}

impl<B: Backend> Output<'_, B> {
    /// The tensor's shape, batch dimension included.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Output::Maps(t) => t.dims().to_vec(),
            Output::Vector(t) => t.dims().to_vec(),
        }
    }
}

/// A tensor a layer can produce and a probe can look at.
pub trait Observable<B: Backend> {
    /// The tensor as a probe sees it.
    fn output(&self) -> Output<'_, B>;
}

impl<B: Backend> Observable<B> for Tensor<B, 4> {
    fn output(&self) -> Output<'_, B> {
        Output::Maps(self)
    }
}

impl<B: Backend> Observable<B> for Tensor<B, 2> {
    fn output(&self) -> Output<'_, B> {
        Output::Vector(self)
    }
}

/// One layer as a probe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo<'a> {
    /// The field path in the module, e.g. `conv1` or `layers.1.blocks.0`.
    pub name: &'a str,
    /// The layer type as PyTorch prints it, e.g. `Conv2d`, `ReLU`, `AvgPool2d`.
    pub kind: &'static str,
    /// Parameters of this layer as PyTorch counts them: frozen ones included, batch-norm
    /// running statistics (buffers in PyTorch) excluded.
    pub params: usize,
}

/// A fully connected layer whose input does not have the features it was built for: the
/// input image size does not fit the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeClash {
    /// The layer's name.
    pub layer: String,
    /// Input features it was built for.
    pub expected: usize,
    /// Input features that arrived.
    pub found: usize,
    /// The shape that arrived at the layer, before flattening.
    pub input: Vec<usize>,
}

impl fmt::Display for ShapeClash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {} input features, found {} (its input is {:?})",
            self.layer, self.expected, self.found, self.input
        )
    }
}

impl std::error::Error for ShapeClash {}

/// Receives the layers of a forward pass in order.
pub trait Probe<B: Backend> {
    /// Whether to call [`Probe::observe`]; when false nothing is computed for the probe.
    fn active(&self) -> bool {
        true
    }

    /// Called with each layer's output, in forward order.
    fn observe(&mut self, layer: LayerInfo<'_>, output: Output<'_, B>);

    /// A fully connected layer got the wrong number of features. The default panics with a
    /// message naming the layer and both numbers; a probe that collects clashes returns, and
    /// the pass goes on with zeros of the right shape so the rest can still be described.
    fn clash(&mut self, clash: ShapeClash) {
        panic!("input size does not fit the network: {clash}");
    }
}

/// The probe of training and evaluation: watches nothing.
pub struct NoProbe;

impl<B: Backend> Probe<B> for NoProbe {
    fn active(&self) -> bool {
        false
    }

    fn observe(&mut self, _: LayerInfo<'_>, _: Output<'_, B>) {}
}

/// A building block whose type a summary names.
pub trait Layer<B: Backend>: Module<B> {
    /// The type as PyTorch prints it, e.g. `Conv2d`.
    fn kind(&self) -> &'static str;
}

macro_rules! layer_kind {
    ($($ty:ty => $kind:literal),* $(,)?) => {
        $(impl<B: Backend> Layer<B> for $ty {
            fn kind(&self) -> &'static str {
                $kind
            }
        })*
    };
}

layer_kind! {
    Conv2d<B> => "Conv2d",
    Linear<B> => "Linear",
    BatchNorm<B> => "BatchNorm2d",
    MaxPool2d => "MaxPool2d",
    AvgPool2d => "AvgPool2d",
    AdaptiveAvgPool2d => "AdaptiveAvgPool2d",
    Relu => "ReLU",
    Dropout => "Dropout",
}

/// Reports `output`, which `layer` produced, and passes it on:
/// `let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));`
pub fn tap<B, P, L, Y>(probe: &mut P, name: &str, layer: &L, output: Y) -> Y
where
    B: Backend,
    P: Probe<B> + ?Sized,
    L: Layer<B>,
    Y: Observable<B>,
{
    report(
        probe,
        name,
        layer.kind(),
        || parameter_count(layer),
        &output,
    );
    output
}

/// Flattens feature maps to one vector per image, reported as a `Flatten` layer.
pub fn flatten<B: Backend, P: Probe<B> + ?Sized>(
    probe: &mut P,
    name: &str,
    maps: Tensor<B, 4>,
) -> Tensor<B, 2> {
    let flat = maps.flatten(1, 3);
    report(probe, name, "Flatten", || 0, &flat);
    flat
}

/// Hands one layer to the probe; nothing (not even the parameter count) is computed for an
/// inactive probe.
fn report<B: Backend, P: Probe<B> + ?Sized, Y: Observable<B>>(
    probe: &mut P,
    name: &str,
    kind: &'static str,
    params: impl FnOnce() -> usize,
    output: &Y,
) {
    if probe.active() {
        let info = LayerInfo {
            name,
            kind,
            params: params(),
        };
        probe.observe(info, output.output());
    }
}

/// A fully connected layer, checked: a wrong number of input features goes to
/// [`Probe::clash`] instead of failing deep inside a matrix product.
pub fn linear<B: Backend, P: Probe<B> + ?Sized>(
    probe: &mut P,
    name: &str,
    layer: &Linear<B>,
    input: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [batch, found] = input.dims();
    let [expected, outputs] = layer.weight.dims();
    let output = if found == expected {
        layer.forward(input)
    } else {
        probe.clash(ShapeClash {
            layer: name.to_string(),
            expected,
            found,
            input: input.dims().to_vec(),
        });
        Tensor::zeros([batch, outputs], &input.device())
    };
    tap(probe, name, layer, output)
}

/// Parameters as PyTorch's `sum(p.numel() for p in m.parameters())` counts them: frozen ones
/// (airbench's whitening filters) included, as in PyTorch; Burn's `num_params` also counts
/// batch norm's running mean and variance, which PyTorch keeps as buffers.
pub fn parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    #[derive(Default)]
    struct Count {
        total: usize,
        /// Innermost field being visited, with the struct that holds it.
        path: Vec<(String, String)>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Count {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path
                .push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let buffer = self.path.last().is_some_and(|(field, container)| {
                container == "Struct:BatchNorm" && field.starts_with("running_")
            });
            if !buffer {
                self.total += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count::default();
    module.visit(&mut count);
    count.total
}

/// One row of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// The layer's field path.
    pub name: String,
    /// The layer type as PyTorch prints it.
    pub kind: &'static str,
    /// Output shape for one image (the batch dimension left out).
    pub output: Vec<usize>,
    /// Parameters of the layer, as [`parameter_count`] counts them.
    pub params: usize,
}

/// The layer table of a network for one input size, and any shape clashes found on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// One row per layer, in forward order.
    pub rows: Vec<SummaryRow>,
    /// Fully connected layers whose input size did not fit.
    pub clashes: Vec<ShapeClash>,
}

impl<B: Backend> Probe<B> for Summary {
    fn observe(&mut self, layer: LayerInfo<'_>, output: Output<'_, B>) {
        self.rows.push(SummaryRow {
            name: layer.name.to_string(),
            kind: layer.kind,
            output: output.dims()[1..].to_vec(),
            params: layer.params,
        });
    }

    fn clash(&mut self, clash: ShapeClash) {
        self.clashes.push(clash);
    }
}

impl Summary {
    /// Rows that contain other rows (a residual block and its convolutions) would count
    /// parameters twice, so networks report either a block or its parts, never both.
    pub fn total_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| {
            let parts: Vec<String> = s.iter().map(usize::to_string).collect();
            format!("[{}]", parts.join(", "))
        };
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let kind_w = self
            .rows
            .iter()
            .map(|r| r.kind.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let shape_w = self
            .rows
            .iter()
            .map(|r| shape(&r.output).len())
            .max()
            .unwrap_or(0)
            .max(12);
        writeln!(
            f,
            "{:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>12}",
            "layer", "type", "output shape", "parameters"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>12}",
                r.name,
                r.kind,
                shape(&r.output),
                group_thousands(r.params)
            )?;
        }
        write!(
            f,
            "total parameters: {}",
            group_thousands(self.total_params())
        )?;
        for c in &self.clashes {
            write!(f, "\nshape clash: {c}")?;
        }
        Ok(())
    }
}

/// One layer's feature maps for one image: `values` is `[channels, height, width]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Maps {
    /// The layer's field path.
    pub layer: String,
    /// The layer type, with its activation where one follows (`Conv2d + ReLU`).
    pub kind: &'static str,
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// The maps, row-major.
    pub values: Vec<f32>,
}

/// Keeps the output of every convolution (and residual block) for the first image of the
/// batch: the feature-map pictures of the MNIST and CIFAR tutorials. A convolution followed
/// directly by its activation is kept after the activation, as the MNIST tutorial's
/// `retrieve_features` returns `relu(conv1(x))`; one followed by a batch norm keeps its raw
/// output.
#[derive(Debug, Clone, Default)]
pub struct FeatureMaps {
    /// One entry per convolution (or residual block), in forward order.
    pub layers: Vec<Maps>,
    /// Whether the last layer observed was a convolution kept in `layers`.
    after_conv: bool,
}

impl<B: Backend> Probe<B> for FeatureMaps {
    fn observe(&mut self, layer: LayerInfo<'_>, output: Output<'_, B>) {
        let after_conv = std::mem::take(&mut self.after_conv);
        let Output::Maps(maps) = output else { return };
        let activation = matches!(layer.kind, "ReLU" | "Sigmoid");
        if !(matches!(layer.kind, "Conv2d" | "BasicBlock") || activation && after_conv) {
            return;
        }
        let [_, c, h, w] = maps.dims();
        let first = maps.clone().slice([0..1, 0..c, 0..h, 0..w]);
        let values = first
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("converted to f32");
        if activation {
            let conv = self
                .layers
                .last_mut()
                .expect("after_conv: a convolution was kept");
            conv.kind = match layer.kind {
                "ReLU" => "Conv2d + ReLU",
                _ => "Conv2d + Sigmoid",
            };
            conv.values = values;
            return;
        }
        self.after_conv = layer.kind == "Conv2d";
        self.layers.push(Maps {
            layer: layer.name.to_string(),
            kind: layer.kind,
            shape: [c, h, w],
            values,
        });
    }
}

/// The weights of the first convolution, `[out, in, kh, kw]` with its values row-major: the
/// first 4-dimensional parameter in field order, which is `conv1` (or the ResNet stem) in
/// every network here.
pub fn first_conv_kernels<B: Backend, M: Module<B>>(module: &M) -> Option<([usize; 4], Vec<f32>)> {
    struct First<B: Backend>(Option<Tensor<B, 4>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for First<B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if D == 4 && self.0.is_none() {
                let t = param.val();
                let dims = t.dims();
                self.0 = Some(t.reshape([dims[0], dims[1], dims[2], dims[3]]));
            }
        }
    }
    let mut first = First::<B>(None);
    module.visit(&mut first);
    let kernels = first.0?;
    let shape = kernels.dims();
    let values = kernels.into_data().convert::<f32>().into_vec().ok()?;
    Some((shape, values))
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CnnDropoutConfig, ConvNetConfig, ImageClassifier, LeNet5Config, ResNetConfig,
        SimpleCnnConfig,
    };
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    /// (name, type, output shape) of each row.
    fn layout(s: &Summary) -> Vec<(&str, &str, Vec<usize>)> {
        s.rows
            .iter()
            .map(|r| (r.name.as_str(), r.kind, r.output.clone()))
            .collect()
    }

    #[test]
    fn lenet5_summary_is_the_tutorials_table() {
        let device = Default::default();
        let s = LeNet5Config::classic()
            .init::<B>(&device)
            .summary([1, 28, 28], &device);
        // The LeNet tutorial's printout: 28x28 padded conv keeps 28, pooling halves, the
        // unpadded 5x5 conv gives 10, pooling 5; 16 * 5 * 5 = 400 features.
        let expected: Vec<(&str, &str, Vec<usize>)> = vec![
            ("conv1", "Conv2d", vec![6, 28, 28]),
            ("act1", "Sigmoid", vec![6, 28, 28]),
            ("pool1", "AvgPool2d", vec![6, 14, 14]),
            ("conv2", "Conv2d", vec![16, 10, 10]),
            ("act2", "Sigmoid", vec![16, 10, 10]),
            ("pool2", "AvgPool2d", vec![16, 5, 5]),
            ("flatten", "Flatten", vec![400]),
            ("fc1", "Linear", vec![120]),
            ("act3", "Sigmoid", vec![120]),
            ("dropout1", "Dropout", vec![120]),
            ("fc2", "Linear", vec![84]),
            ("act4", "Sigmoid", vec![84]),
            ("dropout2", "Dropout", vec![84]),
            ("fc3", "Linear", vec![10]),
        ];
        assert_eq!(layout(&s), expected);
        let params: Vec<usize> = s.rows.iter().map(|r| r.params).collect();
        assert_eq!(
            params,
            [156, 0, 0, 2416, 0, 0, 0, 48_120, 0, 0, 10_164, 0, 0, 850]
        );
        assert_eq!(s.total_params(), 61_706);
        assert!(s.clashes.is_empty());
        let text = s.to_string();
        assert!(text.contains("total parameters: 61,706"), "{text}");
        assert!(
            text.contains("conv2     Conv2d     [16, 10, 10]         2,416\n"),
            "{text}"
        );
    }

    #[test]
    fn simple_cnn_summary_computes_the_3600_features() {
        let device = Default::default();
        let s = SimpleCnnConfig::new()
            .init::<B>(&device)
            .summary([3, 32, 32], &device);
        assert_eq!(
            layout(&s),
            vec![
                ("conv1", "Conv2d", vec![16, 30, 30]),
                ("pool", "MaxPool2d", vec![16, 15, 15]),
                ("relu", "ReLU", vec![16, 15, 15]),
                ("flatten", "Flatten", vec![3600]),
                ("fc", "Linear", vec![10]),
            ]
        );
        assert_eq!(s.total_params(), 448 + 36_010);
    }

    #[test]
    fn an_input_size_that_does_not_fit_is_reported_with_both_shapes() {
        let device = Default::default();
        // The simple CNN at 96x96 (as if the ResNet's resize were applied to it):
        // 16 x 47 x 47 = 35,344 features reach a layer built for 3,600.
        let s = SimpleCnnConfig::new()
            .init::<B>(&device)
            .summary([3, 96, 96], &device);
        assert_eq!(
            s.clashes,
            vec![ShapeClash {
                layer: "fc".into(),
                expected: 3600,
                found: 35_344,
                input: vec![1, 35_344],
            }]
        );
        // The table still goes to the end, so the reader sees where the sizes went.
        assert_eq!(s.rows.last().unwrap().output, vec![10]);
        let text = s.to_string();
        assert!(
            text.contains("shape clash: fc: expected 3600 input features, found 35344"),
            "{text}"
        );
    }

    #[test]
    #[should_panic(expected = "fc: expected 3600 input features, found 35344")]
    fn training_on_a_clashing_size_panics_with_the_same_message() {
        let device = Default::default();
        let model = SimpleCnnConfig::new().init::<B>(&device);
        model.logits(Tensor::zeros([1, 3, 96, 96], &device));
    }

    #[test]
    fn convnet_and_dropout_cnn_summaries() {
        let device = Default::default();
        let s = ConvNetConfig::new()
            .init::<B>(&device)
            .summary([1, 28, 28], &device);
        let shapes: Vec<Vec<usize>> = s.rows.iter().map(|r| r.output.clone()).collect();
        assert_eq!(
            shapes,
            vec![
                vec![4, 28, 28],
                vec![4, 28, 28],
                vec![4, 14, 14],
                vec![8, 14, 14],
                vec![8, 14, 14],
                vec![8, 7, 7],
                vec![392],
                vec![512],
                vec![512],
                vec![512],
                vec![10],
            ]
        );
        assert_eq!(s.total_params(), 104 + 808 + 201_216 + 5_130);

        let s = CnnDropoutConfig::new()
            .init::<B>(&device)
            .summary([3, 32, 32], &device);
        let flat = s.rows.iter().find(|r| r.name == "flatten").unwrap();
        assert_eq!(flat.output, vec![8192]);
        assert_eq!(s.total_params(), 896 + 9_248 + 4_194_816 + 5_130);
    }

    #[test]
    fn feature_maps_keep_each_convolution_of_the_first_image() {
        let device = Default::default();
        let model = ConvNetConfig::new().init::<B>(&device);
        let image =
            Tensor::<B, 3>::random([1, 28, 28], burn::tensor::Distribution::Default, &device);
        let maps = model.feature_maps(image.clone());
        let shapes: Vec<(&str, [usize; 3])> =
            maps.iter().map(|m| (m.layer.as_str(), m.shape)).collect();
        assert_eq!(shapes, vec![("conv1", [4, 28, 28]), ("conv2", [8, 14, 14])]);
        assert!(maps.iter().all(|m| m.kind == "Conv2d + ReLU"), "{maps:?}");
        // conv1's maps are relu(conv1(image)), as the tutorial's `retrieve_features`.
        let direct =
            burn::tensor::activation::relu(model.conv1.forward(image.clone().unsqueeze::<4>()))
                .into_data()
                .to_vec::<f32>()
                .unwrap();
        assert_eq!(maps[0].values, direct);

        let ([out, inp, kh, kw], values) = first_conv_kernels(&model).unwrap();
        assert_eq!([out, inp, kh, kw], [4, 1, 5, 5]);
        assert_eq!(
            values,
            model
                .conv1
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        );
        // The ResNet's first convolution is its 7x7 stem.
        let resnet = ResNetConfig::tutorial().init::<B>(&device);
        assert_eq!(first_conv_kernels(&resnet).unwrap().0, [64, 3, 7, 7]);
        // The classic LeNet-5's maps are drawn after its sigmoid.
        let lenet = crate::LeNet5Config::classic().init::<B>(&device);
        let kinds: Vec<&str> = lenet.feature_maps(image).iter().map(|m| m.kind).collect();
        assert_eq!(kinds, ["Conv2d + Sigmoid", "Conv2d + Sigmoid"]);
    }

    #[test]
    fn resnet_summary_reports_blocks_and_excludes_running_statistics() {
        let device = Default::default();
        let model = ResNetConfig::tutorial().init::<B>(&device);
        let s = model.summary([3, 96, 96], &device);
        let find = |name: &str| s.rows.iter().find(|r| r.name == name).unwrap().clone();
        // 96 -> unpadded stride-2 7x7 stem 45 -> max pool 23 -> stages 23, 12, 6, 3
        // -> AvgPool(3) -> 1, as the tutorial's network.
        assert_eq!(find("conv1").output, vec![64, 45, 45]);
        assert_eq!(find("maxpool").output, vec![64, 23, 23]);
        assert_eq!(find("layers.0.blocks.1").output, vec![64, 23, 23]);
        assert_eq!(find("layers.3.blocks.0").output, vec![512, 3, 3]);
        assert_eq!(find("head").output, vec![512, 1, 1]);
        assert_eq!(find("head").kind, "AvgPool2d");
        assert_eq!(s.rows.iter().filter(|r| r.kind == "BasicBlock").count(), 8);
        // Every parameter is in exactly one row: the total is the module's count
        // less batch norm's running means and variances (2 x channels per batch norm).
        let bn_channels = 64 + 2 * 2 * (64 + 128 + 256 + 512);
        assert_eq!(s.total_params(), model.num_params() - 2 * bn_channels);
        assert_eq!(parameter_count(&model), s.total_params());
    }
}
