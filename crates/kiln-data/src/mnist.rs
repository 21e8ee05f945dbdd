//! MNIST and Fashion-MNIST: 28x28 grayscale images in IDX files, 60,000 for training and
//! 10,000 for testing.

use std::path::Path;

use crate::fetch::{existing_file, DatasetFiles, Locator, RemoteFile};
use crate::{idx, DataError, ImageSet, Split};

/// A data set stored as the four IDX files of the MNIST family.
#[derive(Debug, Clone, Copy)]
pub struct IdxDataset {
    /// Where the four IDX files are found or fetched.
    pub files: DatasetFiles,
    /// Class names, in label order.
    pub classes: &'static [&'static str],
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// Zalando's Fashion-MNIST. Checksums are those of the official downloads (as published in
/// TensorFlow Datasets' `url_checksums/fashion_mnist.txt`); Debian's `dataset-fashion-mnist`
/// re-gzips the same data, so copies found on disk are checked for structure, not hash.
pub const FASHION_MNIST: IdxDataset = IdxDataset {
    files: DatasetFiles {
        name: "fashion-mnist",
        mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        files: &[
            RemoteFile {
                name: TRAIN_IMAGES,
                sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            },
            RemoteFile {
                name: TRAIN_LABELS,
                sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            },
            RemoteFile {
                name: TEST_IMAGES,
                sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            },
            RemoteFile {
                name: TEST_LABELS,
                sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            },
        ],
        system_dirs: &["/usr/share/datasets/fashion-mnist"],
    },
    classes: &[
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
};

/// LeCun's MNIST digits. Checksums are those of the official files (TensorFlow Datasets'
/// `url_checksums/mnist.txt`); the mirrors are the ones torchvision uses.
pub const MNIST: IdxDataset = IdxDataset {
    files: DatasetFiles {
        name: "mnist",
        mirrors: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        files: &[
            RemoteFile {
                name: TRAIN_IMAGES,
                sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            },
            RemoteFile {
                name: TRAIN_LABELS,
                sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            },
            RemoteFile {
                name: TEST_IMAGES,
                sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            },
            RemoteFile {
                name: TEST_LABELS,
                sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            },
        ],
        system_dirs: &[],
    },
    classes: &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
};

impl IdxDataset {
    /// Finds (or fetches) the files and loads one split.
    pub fn load(&self, locator: &Locator, split: Split) -> Result<ImageSet, DataError> {
        let dir = locator.locate(&self.files)?;
        self.load_from(&dir, split)
    }

    /// Loads one split from a directory that holds the files (gzipped or unpacked; either the
    /// directory itself or its `<name>/` subfolder, as [`Locator::locate`] returns it).
    pub fn load_from(&self, dir: &Path, split: Split) -> Result<ImageSet, DataError> {
        let (images, labels) = file_names(split);
        // A missing file falls through to the reader, whose error names the expected path.
        let path = |name: &str| existing_file(dir, name).unwrap_or_else(|| dir.join(name));
        let (images, labels) = idx::read_pair(&path(images), &path(labels), self.classes.len())?;
        let classes = self.classes.iter().map(|c| c.to_string()).collect();
        Ok(ImageSet::new(
            1,
            images.rows,
            images.cols,
            images.pixels,
            labels,
            classes,
        ))
    }
}

/// The images and labels files of `split`, as the MNIST family publishes them.
fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => (TRAIN_IMAGES, TRAIN_LABELS),
        Split::Test => (TEST_IMAGES, TEST_LABELS),
    }
}

/// Writes one split of 28x28 grayscale images (`pixels`, row-major, one byte each) and their
/// `labels` into `dir` under the published gzipped file names, so [`IdxDataset::load_from`]
/// reads them back. Meant for test fixtures, like [`idx::write_images`].
pub fn write_split(dir: &Path, split: Split, pixels: &[u8], labels: &[u8]) -> std::io::Result<()> {
    let (images_name, labels_name) = file_names(split);
    idx::write_images(&dir.join(images_name), 28, 28, pixels, true)?;
    idx::write_labels(&dir.join(labels_name), labels, true)
}
