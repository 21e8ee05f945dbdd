//! The experiment file's schema. Unknown keys are errors (`deny_unknown_fields`) and every value
//! is checked once by [`ExperimentSpec::validate`], which gives a [`ValidSpec`] (what the runner
//! and the benchmark take) or a [`SpecError`] naming the key, what was expected and what was
//! found.

use kiln_data::mnist::{FASHION_MNIST, MNIST};
use kiln_data::{
    load_image_folder_sized, Augment, Cifar10Format, DataError, IdxDataset, ImageBatcher, ImageSet,
    Locator, Normalize, Split, CIFAR10_CLASSES,
};
use kiln_train::Recipe;

pub use crate::models::ModelSpec;
use serde::{Deserialize, Serialize};

/// An experiment: one TOML file saying which data, which network and how to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Its name, as `kiln run` takes it and as the run folders are named.
    pub name: String,
    /// One line, shown by `kiln list`.
    pub description: String,
    /// Whose module names the network's PyTorch state dict uses (`kiln import`, `kiln export`).
    #[serde(default, skip_serializing_if = "TorchNaming::is_kiln")]
    pub torch_names: TorchNaming,
    /// Which data set and how to prepare it.
    pub data: DataSpec,
    /// Which network.
    pub model: ModelSpec,
    /// How to train it.
    pub recipe: Recipe,
}

/// The module names of a network's PyTorch code, where they are not Kiln's field names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TorchNaming {
    /// Kiln's own field names (the MNIST ConvNet and the modern LeNet-5 tutorials use them too).
    #[default]
    Kiln,
    /// The one-conv CIFAR-10 tutorial's `Conv`.
    SimpleCnnTutorial,
    /// The CIFAR-10 dropout CNN as published.
    CnnDropoutTutorial,
    /// The classic LeNet-5 tutorial's `nn.Sequential`.
    Lenet5Classic,
    /// The 96x96 ResNet tutorial's `resnet` / `residual`.
    ResnetTutorial,
    /// airbench94's `nn.Sequential` (`make_net94`).
    Airbench94,
}

impl TorchNaming {
    fn is_kiln(&self) -> bool {
        *self == TorchNaming::Kiln
    }

    /// The key renaming between these module names and Kiln's.
    pub fn names(self) -> kiln_models::TorchNames {
        use kiln_models::{airbench, cnn_dropout, lenet5, resnet, simple_cnn, TorchNames};
        match self {
            TorchNaming::Kiln => TorchNames::SAME,
            TorchNaming::SimpleCnnTutorial => simple_cnn::TUTORIAL_TORCH_NAMES,
            TorchNaming::CnnDropoutTutorial => cnn_dropout::TUTORIAL_TORCH_NAMES,
            TorchNaming::Lenet5Classic => lenet5::CLASSIC_TORCH_NAMES,
            TorchNaming::ResnetTutorial => resnet::TUTORIAL_TORCH_NAMES,
            TorchNaming::Airbench94 => airbench::AIRBENCH_TORCH_NAMES,
        }
    }
}

/// The `[data]` table: the data set, its layout and how images are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Which data set.
    pub dataset: DatasetName,
    /// The files' layout; the data set's usual one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Fixed `{ mean = [...], std = [...] }` of pixels scaled to [0, 1], or statistics of the
    /// training images: `"global"` (one mean and std) or `"per-channel"`.
    pub normalize: NormalizeSpec,
    /// Convert RGB images to one luma channel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub grayscale: bool,
    /// Resize to `resize` x `resize` (bilinear, as Pillow's `Image.resize` on 8-bit images, which
    /// torchvision's `Resize` calls), e.g. CIFAR-10 to 96 for the ResNet tutorial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
    /// Training-time augmentation (random crop with padding, horizontal flip).
    #[serde(default, skip_serializing_if = "Augment::is_identity")]
    pub augment: Augment,
    /// `dataset = "folder"` only: 1 (grayscale) or 3 (colour, the default); images are
    /// converted to it as they load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// `dataset = "folder"` only: resize every image to `image_size` x `image_size` as it
    /// loads, so images of any size make one set; without it every image must have the first
    /// one's size. A run records the size its images had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// `dataset = "folder"` only: the class folders to read, in label order; without it every
    /// subfolder of `train/`, sorted. A run records the classes it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Train on the first `percent`% of the training images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Hold out the first `count` images of a split for validation (the MNIST tutorial takes
    /// the first 5,000 test images; the remaining 5,000 are the test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSplit>,
    /// Train on the first N training images only (for smoke runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_test: Option<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How pixels are normalised after scaling to `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NormalizeSpec {
    /// Fixed means and standard deviations.
    Fixed(Normalize),
    /// Statistics computed from the training images at the start of a run.
    FromTrainingSet(Statistics),
}

/// Which statistics of the training images normalise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Statistics {
    /// One mean and one standard deviation over every pixel.
    Global,
    /// A mean and a standard deviation per channel.
    PerChannel,
}

impl NormalizeSpec {
    /// The normalisation to apply, computing statistics from `train` where asked.
    pub fn resolve(&self, train: &kiln_data::ImageSet) -> Normalize {
        match self {
            NormalizeSpec::Fixed(n) => n.clone(),
            NormalizeSpec::FromTrainingSet(kind) => {
                let (mean, std) = train.pixel_stats(*kind == Statistics::PerChannel);
                Normalize { mean, std }
            }
        }
    }
}

/// Validation images held out of a split (`validation = { from = "test", count = 5000 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSplit {
    /// The split the validation images are taken from (its remainder stays in that split).
    pub from: Split,
    /// How many images, taken from the start of that split.
    pub count: usize,
}

/// The data sets Kiln knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST handwritten digits, 28x28 grayscale.
    Mnist,
    /// Fashion-MNIST clothing, 28x28 grayscale.
    FashionMnist,
    /// CIFAR-10, 32x32 colour.
    Cifar10,
    /// The user's own images: `<data-dir>/{train,test}/<class>/*.png|jpg`, classes, channels
    /// and size given by `data.classes`, `data.channels` and `data.image_size` or found there.
    Folder,
}

/// How a data set's files are laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The four IDX files of the MNIST family.
    Idx,
    /// CIFAR-10's binary batches (`cifar-10-batches-bin/`), the default for CIFAR-10.
    Binary,
    /// CIFAR-10's python pickles (`cifar-10-batches-py/`, torchvision's copy).
    Python,
    /// `<data-dir>/{train,test}/<class>/*.png|jpg`, e.g. the JPEG copy of CIFAR-10.
    Folder,
}

impl std::str::FromStr for Layout {
    type Err = String;

    /// The names the TOML files use, so `--layout` and `data.layout` accept the same words.
    fn from_str(s: &str) -> Result<Self, String> {
        use serde::de::value::{Error, StrDeserializer};
        Self::deserialize(StrDeserializer::<Error>::new(s)).map_err(|_| {
            let names = Layout::ALL.map(Layout::word).join(", ");
            format!("expected one of {names}; found {s:?}")
        })
    }
}

impl Layout {
    const ALL: [Layout; 4] = [Layout::Idx, Layout::Binary, Layout::Python, Layout::Folder];

    /// The word experiment files and `--layout` use (serde's name for it, which a test checks).
    pub fn word(self) -> &'static str {
        match self {
            Layout::Idx => "idx",
            Layout::Binary => "binary",
            Layout::Python => "python",
            Layout::Folder => "folder",
        }
    }
}

impl DatasetName {
    #[cfg(test)]
    const ALL: [DatasetName; 4] = [
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::Folder,
    ];

    /// The word experiment files use (`dataset = "cifar10"`; serde's name for it, which a test
    /// checks), for messages about the experiment file.
    pub fn word(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Folder => "folder",
        }
    }

    /// The data set's name in the data cache and in progress output (`cifar-10`, as its
    /// publishers write it).
    pub fn name(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar-10",
            DatasetName::Folder => "folder",
        }
    }

    /// Colour channels of the images (a folder set's default: colour).
    pub fn channels(self) -> usize {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => 1,
            DatasetName::Cifar10 | DatasetName::Folder => 3,
        }
    }

    /// Side of the (square) images as the data set publishes them; a folder set has none.
    pub fn image_size(self) -> Option<usize> {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => Some(28),
            DatasetName::Cifar10 => Some(32),
            DatasetName::Folder => None,
        }
    }

    /// The layouts its files can come in, the default first.
    fn layouts(self) -> &'static [Layout] {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => &[Layout::Idx, Layout::Folder],
            DatasetName::Cifar10 => &[Layout::Binary, Layout::Python, Layout::Folder],
            DatasetName::Folder => &[Layout::Folder],
        }
    }

    fn default_layout(self) -> Layout {
        self.layouts()[0]
    }

    fn idx(self) -> Option<&'static IdxDataset> {
        match self {
            DatasetName::Mnist => Some(&MNIST),
            DatasetName::FashionMnist => Some(&FASHION_MNIST),
            DatasetName::Cifar10 | DatasetName::Folder => None,
        }
    }

    /// Class names, in label order; a folder set's come from its folders.
    pub fn classes(self) -> Option<&'static [&'static str]> {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => self.idx().map(|idx| idx.classes),
            DatasetName::Cifar10 => Some(&CIFAR10_CLASSES),
            DatasetName::Folder => None,
        }
    }
}

impl DataSpec {
    /// Channels of the images the model sees (`grayscale` and `channels` applied).
    pub fn channels(&self) -> usize {
        if self.grayscale {
            1
        } else {
            self.channels.unwrap_or(self.dataset.channels())
        }
    }

    /// `[channels, height, width]` of the images the model sees, for the data set's published
    /// image size (grayscale and resize applied). Image folders may hold other sizes; a run
    /// uses the size it loads and records it in its `config.toml`. A folder set whose size is
    /// known only from its images is an error naming `data.image_size`.
    pub fn input_shape(&self) -> Result<[usize; 3], String> {
        let side = self
            .resize
            .or(self.image_size)
            .or(self.dataset.image_size())
            .ok_or_else(|| {
                "data.image_size: a folder data set's image size is needed before its images are \
                 read; give it (or use a run's config.toml, which records it)"
                    .to_string()
            })?;
        Ok([self.channels(), side, side])
    }

    /// The class names in label order: the data set's, or a folder set's `data.classes` (an
    /// error naming the key where they are known only from the folders).
    pub fn classes(&self) -> Result<Vec<String>, String> {
        match (self.dataset.classes(), &self.classes) {
            (Some(names), _) => Ok(names.iter().map(|c| c.to_string()).collect()),
            (None, Some(names)) => Ok(names.clone()),
            (None, None) => Err(
                "data.classes: a folder data set's classes are needed before its folders are \
                 read; list them (or use a run's config.toml, which records them)"
                    .to_string(),
            ),
        }
    }

    /// The layout to read: the spec's, else the data set's usual one.
    pub fn layout(&self) -> Layout {
        self.layout.unwrap_or(self.dataset.default_layout())
    }

    /// The batcher for a run that trains on `train`: this spec's resize, augmentation and
    /// normalisation (statistics, where asked for, computed over `train`).
    pub fn batcher(&self, train: &ImageSet) -> ImageBatcher {
        ImageBatcher {
            resize: self.resize.map(|side| [side, side]),
            augment: self.augment,
            ..ImageBatcher::for_set(train, self.normalize.resolve(train))
        }
    }

    /// The batcher that evaluates a trained network on images of `shape` (`[channels, height,
    /// width]` as read): this spec's resize, no augmentation, the run's resolved `normalize`.
    pub fn eval_batcher(&self, shape: [usize; 3], normalize: Normalize) -> ImageBatcher {
        ImageBatcher {
            shape,
            resize: self.resize.map(|side| [side, side]),
            augment: Default::default(),
            normalize,
        }
    }

    /// Finds (or fetches) the files and loads one split.
    pub fn load(&self, locator: &Locator, split: Split) -> Result<ImageSet, DataError> {
        let dataset = self.dataset;
        match (self.layout(), dataset.idx()) {
            (Layout::Idx, Some(idx)) => idx.load(locator, split),
            (Layout::Binary, None) => Cifar10Format::Binary.load(locator, split),
            (Layout::Python, None) => Cifar10Format::Python.load(locator, split),
            (Layout::Folder, _) => {
                let Some(root) = locator.data_dir.as_ref().or(locator.env_dir.as_ref()) else {
                    return Err(DataError::NotFound {
                        dataset: dataset.name().into(),
                        message:
                            "the folder layout is read from --data-dir DIR (or KILN_DATA_DIR), \
                                  which must hold train/<class>/ and test/<class>/ image folders"
                                .into(),
                    });
                };
                let split_dir = match split {
                    Split::Train => "train",
                    Split::Test => "test",
                };
                // Without known names (a folder set without `data.classes`), the scan finds them.
                let known = self.classes().ok();
                let given: Option<Vec<&str>> = known
                    .as_ref()
                    .map(|names| names.iter().map(String::as_str).collect());
                let size = self.image_size.map(|side| [side, side]);
                let set = load_image_folder_sized(root, split_dir, given.as_deref(), size)?;
                // A set of the user's has the channels its spec asks for, whatever its files
                // hold; a known data set's copy keeps its own (and `grayscale` applies later).
                Ok(match dataset {
                    DatasetName::Folder if self.channels() == 1 => set.to_grayscale(),
                    DatasetName::Folder => set.to_rgb(),
                    _ => set,
                })
            }
            (layout, _) => unreachable!("validate() rejects {layout:?} for {dataset:?}"),
        }
    }
}

/// Changes to a spec's values by their TOML keys (`recipe.epochs`, `data.limit_train`, ...), as
/// `kiln run`'s flags and `--set KEY=VALUE` give them: one list, applied in one place
/// ([`ExperimentSpec::apply`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(Vec<(String, toml::Value)>);

impl Overrides {
    /// Adds `key = value` where `value` is set.
    ///
    /// # Panics
    /// If `value` has no TOML form: the caller's types are the spec's own, so this is a bug.
    pub fn set<T: Serialize>(mut self, key: &str, value: Option<T>) -> Self {
        if let Some(v) = value {
            let v = toml::Value::try_from(v).expect("an override's value has a TOML form");
            self.0.push((key.to_string(), v));
        }
        self
    }

    /// Adds `KEY=VALUE` as `--set` gives it. The value is read as a TOML value (`0.01`, `64`,
    /// `true`, `"sgd"`, `{ from = "test", count = 500 }`) and otherwise taken as a string, so
    /// `recipe.optimizer.name=adam` needs no quotes. Whether the key exists and the value fits
    /// is [`ExperimentSpec::apply`]'s to say.
    pub fn set_text(mut self, assignment: &str) -> Result<Self, SpecError> {
        let (key, text) = split_assignment(assignment)?;
        self.0.push((key.to_string(), value_of_text(text)));
        Ok(self)
    }

    /// The keys the overrides change, as [`SpecError::key`] names them.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(key, _)| key.as_str()).collect()
    }

    /// Each override as `KEY=VALUE` with the value in TOML, as [`Overrides::set_text`] reads
    /// it back: what a `kiln run` started by another command (`kiln sweep`) is given.
    pub fn assignments(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(key, value)| format!("{key}={}", inline_toml(value)))
            .collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `KEY=VALUE` split at its first `=`; an error names the assignment and the form expected.
pub fn split_assignment(assignment: &str) -> Result<(&str, &str), SpecError> {
    let malformed = || SpecError {
        origin: None,
        key: String::new(),
        problem: format!(
            "--set: expected KEY=VALUE with a spec key such as recipe.optimizer.lr=0.01, found \
             {assignment:?}"
        ),
    };
    let (key, text) = assignment.split_once('=').ok_or_else(malformed)?;
    let key = key.trim();
    let key_ok = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !key_ok {
        return Err(malformed());
    }
    Ok((key, text.trim()))
}

/// A `--set` value: TOML where it parses as one, else the text as a string.
fn value_of_text(text: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct One {
        v: toml::Value,
    }
    toml::from_str::<One>(&format!("v = {text}"))
        .map(|one| one.v)
        .unwrap_or_else(|_| toml::Value::String(text.to_string()))
}

/// A value as inline TOML, on one line (`toml::Value`'s `Display` writes tables as sections).
fn inline_toml(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(table) => {
            let fields: Vec<String> = table
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline_toml(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline_toml).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

impl ExperimentSpec {
    /// Parses a TOML experiment (unknown keys and wrong types are errors); `origin` (a file
    /// path or built-in name) is named in any error. The values are checked by
    /// [`ExperimentSpec::validate`], once any overrides are applied.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError {
            origin: Some(origin.to_string()),
            key: String::new(),
            problem: e.to_string().trim_end().to_string(),
        })
    }

    /// The spec as TOML, as the run folder's `config.toml` holds it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a spec always serialises")
    }

    /// Applies the overrides; [`ExperimentSpec::validate`] checks the result
    /// ([`Overrides::keys`] says whether a refused key came from them). An error names a key
    /// the spec does not have or a value of the wrong type.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), SpecError> {
        let mut doc = toml::Value::try_from(&*self).expect("a spec always serialises");
        for (key, value) in &overrides.0 {
            let mut table = &mut doc;
            let mut parts = key.split('.').peekable();
            while let Some(part) = parts.next() {
                let toml::Value::Table(t) = table else {
                    break; // not a table: the parse below names the key
                };
                if parts.peek().is_none() {
                    t.insert(part.to_string(), value.clone());
                    break;
                }
                table = t
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(Default::default()));
            }
        }
        *self = doc.try_into().map_err(|e: toml::de::Error| SpecError {
            origin: None,
            key: overrides.keys().join(", "),
            problem: e.to_string().trim_end().to_string(),
        })?;
        Ok(())
    }

    /// Checks every value: the spec as the runner and the benchmark take it.
    pub fn validate(self) -> Result<ValidSpec, SpecError> {
        self.check().map_err(SpecError::from_message)?;
        Ok(ValidSpec(self))
    }

    /// Every check of [`ExperimentSpec::validate`], as a `key: problem` message (the recipe's
    /// and the models' checks, in crates that do not know [`SpecError`], say theirs so too).
    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "name: expected letters, digits, '-' or '_' (it names the run folder), found {:?}",
                self.name
            ));
        }
        for (key, limit) in [
            ("data.limit_train", self.data.limit_train),
            ("data.limit_test", self.data.limit_test),
        ] {
            if limit == Some(0) {
                return Err(format!("{key}: expected at least 1, found 0"));
            }
        }
        if self.data.validation.is_some_and(|v| v.count == 0) {
            return Err("data.validation.count: expected at least 1, found 0".into());
        }
        let fitting = self.data.dataset.layouts();
        if !fitting.contains(&self.data.layout()) {
            let expected: Vec<_> = fitting.iter().map(|l| format!("{:?}", l.word())).collect();
            return Err(format!(
                "data.layout: {:?} does not fit dataset = {:?}; expected {}",
                self.data.layout().word(),
                self.data.dataset.word(),
                expected.join(" or "),
            ));
        }
        self.validate_folder_keys()?;
        let channels = self.data.channels();
        if let NormalizeSpec::Fixed(n) = &self.data.normalize {
            n.validate(channels)
                .map_err(|e| format!("data.normalize.{e}"))?;
        }
        if self.data.resize == Some(0) {
            return Err("data.resize: expected at least 1 pixel, found 0".into());
        }
        if let Some(p) = self.data.percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "data.percent: expected a value in (0, 100], found {p}"
                ));
            }
        }
        self.model.validate()?;
        self.recipe.validate()
    }
}

impl ExperimentSpec {
    /// `data.channels`, `data.image_size` and `data.classes`: only for a folder set, and sane.
    fn validate_folder_keys(&self) -> Result<(), String> {
        let data = &self.data;
        if data.dataset != DatasetName::Folder {
            for (key, given) in [
                ("channels", data.channels.is_some()),
                ("image_size", data.image_size.is_some()),
                ("classes", data.classes.is_some()),
            ] {
                if given {
                    return Err(format!(
                        "data.{key}: only for dataset = \"folder\" (dataset = {:?} has its own; \
                         `grayscale` and `resize` change them)",
                        data.dataset.word()
                    ));
                }
            }
            return Ok(());
        }
        if let Some(c) = data.channels.filter(|c| ![1, 3].contains(c)) {
            return Err(format!(
                "data.channels: expected 1 (grayscale) or 3 (colour), found {c}"
            ));
        }
        if let Some(side) = data
            .image_size
            .filter(|s| !(MIN_SIDE..=MAX_SIDE).contains(s))
        {
            return Err(format!(
                "data.image_size: expected {MIN_SIDE} to {MAX_SIDE} pixels, found {side}"
            ));
        }
        if let Some(classes) = &data.classes {
            if classes.is_empty() {
                return Err("data.classes: expected at least one class, found none".into());
            }
            for (i, class) in classes.iter().enumerate() {
                // Names are folder names under train/ and test/: nothing that leaves them.
                let plain = !class.is_empty()
                    && !class.starts_with('.')
                    && !class.contains(['/', '\\', '\0']);
                if !plain {
                    return Err(format!(
                        "data.classes: expected folder names (not empty, no '/' or '\\', not \
                         starting with '.'), found {class:?}"
                    ));
                }
                if classes[..i].contains(class) {
                    return Err(format!("data.classes: {class:?} is listed twice"));
                }
            }
            if classes.len() > 256 {
                return Err(format!(
                    "data.classes: expected at most 256 classes (labels are bytes), found {}",
                    classes.len()
                ));
            }
        }
        Ok(())
    }
}

/// A spec that [`ExperimentSpec::validate`] accepted. The runner and the benchmark take only
/// this, so a spec is checked once, after its overrides, and never again on its way to the
/// loop; it reads as the spec it wraps.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec(ExperimentSpec);

impl ValidSpec {
    /// Parses and validates a TOML experiment that is used as it is (a run folder's
    /// `config.toml`, a built-in); `origin` is named in any error.
    pub fn from_toml(text: &str, origin: &str) -> Result<ValidSpec, SpecError> {
        ExperimentSpec::from_toml(text, origin)?
            .validate()
            .map_err(|e| e.in_file(origin))
    }

    /// The spec, to change it (and validate it again).
    pub fn into_inner(self) -> ExperimentSpec {
        self.0
    }
}

impl std::ops::Deref for ValidSpec {
    type Target = ExperimentSpec;

    fn deref(&self) -> &ExperimentSpec {
        &self.0
    }
}

/// Why an experiment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{problem}", prefix(origin.as_deref()), prefix((!key.is_empty()).then_some(key.as_str())))]
pub struct SpecError {
    /// The file or built-in experiment, where the error is about one.
    pub origin: Option<String>,
    /// The dotted key (`recipe.optimizer.lr`); empty when the TOML itself does not parse (its
    /// problem then gives the line).
    pub key: String,
    /// What was expected and what was found.
    pub problem: String,
}

fn prefix(part: Option<&str>) -> String {
    part.map(|p| format!("{p}: ")).unwrap_or_default()
}

impl SpecError {
    /// The same error, said of `origin` (a file or built-in name).
    pub fn in_file(self, origin: &str) -> SpecError {
        SpecError {
            origin: Some(origin.to_string()),
            ..self
        }
    }

    /// Splits a check's `key: problem` message.
    fn from_message(message: String) -> SpecError {
        let (key, problem) = message.split_once(": ").unwrap_or(("", &message));
        SpecError {
            origin: None,
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }
}

/// The smallest and largest image side a folder set may be resized to, or have: smaller ones
/// leave no feature map for LeNet-5; larger ones would not fit in memory as a set.
pub const MIN_SIDE: usize = 16;
/// See [`MIN_SIDE`].
pub const MAX_SIDE: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: &str = include_str!("../../../experiments/lenet5-fashion-mnist.toml");

    #[test]
    fn overrides_set_their_keys_and_a_wrong_key_or_type_is_named() {
        let mut spec = ExperimentSpec::from_toml(BUILTIN, "lenet5").unwrap();
        let overrides = Overrides::default()
            .set("recipe.epochs", Some(3usize))
            .set("data.limit_train", Some(100usize))
            .set("recipe.seed", None::<u64>);
        assert_eq!(overrides.keys(), ["recipe.epochs", "data.limit_train"]);
        let seed = spec.recipe.seed;
        spec.apply(&overrides).unwrap();
        assert_eq!(
            (spec.recipe.epochs, spec.data.limit_train, spec.recipe.seed),
            (3.into(), Some(100), seed)
        );
        let err = spec
            .apply(&Overrides::default().set("recipe.epoch", Some(3usize)))
            .unwrap_err();
        assert_eq!(err.key, "recipe.epoch");
        assert!(err.problem.contains("epoch"), "{}", err.problem);
        let err = spec
            .apply(&Overrides::default().set("recipe.epochs", Some("three")))
            .unwrap_err();
        assert!(err.problem.contains("three"), "{}", err.problem);
        assert_eq!(spec.recipe.epochs, 3, "a refused override changes nothing");
    }

    #[test]
    fn set_reads_toml_values_and_plain_words_and_round_trips() {
        let overrides = Overrides::default()
            .set_text("recipe.optimizer.lr=0.05")
            .and_then(|o| o.set_text("recipe.batch_size = 64"))
            .and_then(|o| o.set_text("data.layout=idx"))
            .and_then(|o| o.set_text("data.validation={ from = \"train\", count = 500 }"))
            .unwrap();
        let mut spec = ExperimentSpec::from_toml(BUILTIN, "lenet5").unwrap();
        spec.apply(&overrides).unwrap();
        assert_eq!(spec.recipe.batch_size, 64);
        assert_eq!(spec.data.layout(), Layout::Idx);
        assert_eq!(
            spec.data.validation,
            Some(ValidationSplit {
                from: Split::Train,
                count: 500
            })
        );
        assert!(spec.to_toml().contains("lr = 0.05"));
        // Another optimizer keeps none of Adam's keys only when its whole table is set.
        let mut sgd = spec.clone();
        let err = sgd
            .apply(
                &Overrides::default()
                    .set_text("recipe.optimizer.name=sgd")
                    .unwrap(),
            )
            .unwrap_err();
        assert!(err.problem.contains("betas"), "{err}");
        sgd.apply(
            &Overrides::default()
                .set_text("recipe.optimizer={ name = \"sgd\", lr = 0.1, momentum = 0.9 }")
                .unwrap(),
        )
        .unwrap();
        assert!(
            sgd.to_toml().contains("name = \"sgd\""),
            "{}",
            sgd.to_toml()
        );
        // What `assignments` writes, `set_text` reads back to the same overrides.
        let again = overrides
            .assignments()
            .iter()
            .try_fold(Overrides::default(), |o, a| o.set_text(a))
            .unwrap();
        assert_eq!(again, overrides);
        for bad in ["recipe.epochs", "=3", "recipe..epochs=3", "recipe epochs=3"] {
            let err = Overrides::default().set_text(bad).unwrap_err();
            assert!(err.problem.contains(&format!("{bad:?}")), "{err}");
        }
        // A value of the wrong type is named by its key when applied.
        let wrong = Overrides::default().set_text("recipe.epochs=many").unwrap();
        let err = spec.apply(&wrong).unwrap_err();
        assert_eq!(err.key, "recipe.epochs");
    }

    #[test]
    fn layout_override_uses_the_toml_names() {
        let mut spec = ExperimentSpec::from_toml(BUILTIN, "lenet5").unwrap();
        let folder: Layout = "folder".parse().unwrap();
        spec.apply(&Overrides::default().set("data.layout", Some(folder)))
            .unwrap();
        assert_eq!(spec.data.layout(), Layout::Folder);
        let err = "jpeg".parse::<Layout>().unwrap_err();
        assert!(
            err.contains("idx, binary, python, folder") && err.contains("\"jpeg\""),
            "{err}"
        );
    }

    #[test]
    fn builtin_lenet5_has_the_published_recipe() {
        let spec = ExperimentSpec::from_toml(BUILTIN, "lenet5").unwrap();
        assert_eq!(spec.recipe.epochs, 14);
        assert_eq!(spec.recipe.batch_size, 256);
        assert_eq!(
            spec.recipe.optimizer,
            kiln_train::OptimizerSpec::Adam {
                lr: 0.01,
                weight_decay: 0.001,
                betas: [0.9, 0.999],
                eps: 1e-8
            }
        );
        assert_eq!(
            spec.recipe.scheduler,
            kiln_train::SchedulerSpec::Step {
                step_size: 1,
                gamma: 0.7
            }
        );
        // The resolved spec written to a run folder parses back to the same spec.
        assert_eq!(
            ExperimentSpec::from_toml(&spec.to_toml(), "round trip").unwrap(),
            spec
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (from, to, key) in [
            (
                "log_every = 50",
                "log_every = 50\nlearning_rate = 0.1",
                "learning_rate",
            ),
            ("dropout = 0.5", "dropout = 0.5\nwidth = 3", "width"),
            ("gamma = 0.7", "gamma = 0.7\nmilestones = [3]", "milestones"),
            ("[data]", "[data]\nshuffle = true", "shuffle"),
        ] {
            let err = ExperimentSpec::from_toml(&BUILTIN.replace(from, to), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("x.toml: "), "{err}");
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
    }

    #[test]
    fn layout_and_dataset_names_are_the_words_files_use() {
        for layout in Layout::ALL {
            assert_eq!(layout.word().parse::<Layout>(), Ok(layout));
        }
        use serde::de::value::{Error, StrDeserializer};
        for dataset in DatasetName::ALL {
            let word = StrDeserializer::<Error>::new(dataset.word());
            assert_eq!(DatasetName::deserialize(word), Ok(dataset));
        }
    }

    #[test]
    fn invalid_values_are_named() {
        let names: Vec<_> = (0..257).map(|i| format!("\"c{i}\"")).collect();
        let too_many_classes = format!("dataset = \"folder\"\nclasses = [{}]", names.join(", "));
        for (from, to, message) in [
            (
                "batch_size = 256",
                "batch_size = 0",
                "recipe.batch_size: expected at least 1, found 0",
            ),
            (
                "batch_size = 256",
                "batch_size = 256\nmax_steps = 0",
                "recipe.max_steps: expected at least 1, found 0",
            ),
            (
                "batch_size = 256",
                "batch_size = 256\nvalidate_every = 0",
                "recipe.validate_every: expected at least 1, found 0",
            ),
            (
                "batch_size = 256",
                "batch_size = 256\nrecompute_bn_batches = 0",
                "recipe.recompute_bn_batches: expected at least 1, found 0",
            ),
            (
                "lr = 0.01",
                "lr = -1.0",
                "recipe.optimizer.lr: expected a positive number, found -1",
            ),
            (
                "lr = 0.01",
                "lr = 0.0",
                "recipe.optimizer.lr: expected a positive number, found 0",
            ),
            (
                "lr = 0.01",
                "lr = nan",
                "recipe.optimizer.lr: expected a positive number, found NaN",
            ),
            (
                "epochs = 14",
                "epochs = 0",
                "recipe.epochs: expected a number above 0, found 0",
            ),
            // A wrong type names the key and both types.
            (
                "batch_size = 256",
                "batch_size = \"256\"",
                "invalid type: string \"256\", expected usize",
            ),
            (
                "gamma = 0.7",
                "gamma = 1.5",
                "recipe.scheduler.gamma: expected a value in (0, 1], found 1.5",
            ),
            (
                "dropout = 0.5",
                "dropout = 1.0",
                "model.dropout: expected a value in [0, 1), found 1",
            ),
            (
                "std = [0.5]",
                "std = [0.0]",
                "data.normalize.std: expected positive finite values, found 0",
            ),
            (
                "name = \"lenet5-fashion-mnist\"",
                "name = \"../x\"",
                "name: expected letters",
            ),
            (
                "[data]",
                "[data]\nlayout = \"binary\"",
                "data.layout: \"binary\" does not fit dataset = \"fashion-mnist\"; expected \"idx\" or \"folder\"",
            ),
            (
                "dataset = \"fashion-mnist\"",
                "dataset = \"cifar10\"\nchannels = 3",
                "data.channels: only for dataset = \"folder\" (dataset = \"cifar10\" has its own;",
            ),
            (
                "[data]",
                "[data]\nlimit_test = 0",
                "data.limit_test: expected at least 1, found 0",
            ),
            (
                "[data]",
                "[data]\npercent = 150.0",
                "data.percent: expected a value in (0, 100], found 150",
            ),
            (
                "dataset = \"fashion-mnist\"",
                too_many_classes.as_str(),
                "data.classes: expected at most 256 classes (labels are bytes), found 257",
            ),
        ] {
            let text = BUILTIN.replace(from, to);
            assert_ne!(text, BUILTIN, "{from:?} is not in the built-in experiment");
            let err = ValidSpec::from_toml(&text, "x.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("x.toml: {message}"))
                    || (err.starts_with("x.toml: ")
                        && err.contains(message)
                        && err.contains("batch_size")),
                "{err}"
            );
        }
        let err = ExperimentSpec::from_toml(
            &BUILTIN.replace("\"fashion-mnist\"", "\"imagenet\""),
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `imagenet`"), "{err}");
    }

    #[test]
    fn a_simple_cnn_too_small_for_its_convolution_and_pooling_is_refused() {
        let text = include_str!("../../../fuzz/seeds/experiment_toml/simple-cnn-too-small.toml");
        let err = ValidSpec::from_toml(text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.toml: model.image_size: expected at least 4, found 3"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_value_is_a_typed_error_naming_the_key() {
        let spec = ExperimentSpec::from_toml(BUILTIN, "x.toml").unwrap();
        let mut bad = spec.clone();
        bad.recipe.batch_size = 0;
        assert_eq!(
            bad.validate().unwrap_err().in_file("x.toml"),
            SpecError {
                origin: Some("x.toml".into()),
                key: "recipe.batch_size".into(),
                problem: "expected at least 1, found 0".into(),
            }
        );
        let mut bad = spec.clone();
        bad.data.classes = Some(vec!["cat".into()]);
        let err = bad.validate().unwrap_err();
        assert_eq!((err.origin, err.key.as_str()), (None, "data.classes"));
        let err = ExperimentSpec::from_toml("name = 3", "x.toml").unwrap_err();
        assert_eq!(
            (err.origin.as_deref(), err.key.as_str()),
            (Some("x.toml"), "")
        );
        assert!(err.to_string().starts_with("x.toml: "), "{err}");
        // What validate accepts reads as the spec itself.
        assert_eq!(spec.clone().validate().unwrap().recipe, spec.recipe);
    }
}
