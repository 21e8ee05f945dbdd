//! CIFAR-10: 60,000 colour images of 32x32 pixels in 10 classes, 50,000 for training (five
//! batches of 10,000) and 10,000 for testing, in either official layout:
//!
//! - binary (`cifar-10-binary.tar.gz` unpacks to `cifar-10-batches-bin/`): `data_batch_1.bin`
//!   .. `data_batch_5.bin` and `test_batch.bin`, each a plain sequence of 3,073-byte records:
//!   one label byte, then 3,072 pixel bytes, the 1,024 red values of the 32x32 image row-major,
//!   then the 1,024 green, then the 1,024 blue. That is channel-first, [`ImageSet`]'s layout.
//! - python (`cifar-10-python.tar.gz` unpacks to `cifar-10-batches-py/`; torchvision's copy is
//!   the same): `data_batch_1` .. `data_batch_5` and `test_batch`, each a Python pickle of a dict
//!   `{b'batch_label': bytes, b'labels': [int], b'data': numpy uint8 array (10000, 3072),
//!   b'filenames': [bytes]}` whose rows are the same 3,072 bytes as a binary record. The files
//!   are read by a small pickle reader that executes nothing (see `pickle.rs`); dicts written
//!   by Python 3 (`str` keys, protocols 2 to 5, numpy 1.x or 2.x) are read as well.
//!
//! Image folders holding CIFAR-10 as PNG or JPEG files are read by [`crate::folder`].

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::fetch::{ArchiveDataset, DatasetFiles, Locator, RemoteFile};
use crate::{DataError, ImageSet, Split};

mod pickle;

use pickle::{shape_str, NdArray, Value};

/// The class names; a label is an index into this list.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Colour channels of a CIFAR-10 image.
pub const CHANNELS: usize = 3;
/// Height of a CIFAR-10 image in pixels.
pub const HEIGHT: usize = 32;
/// Width of a CIFAR-10 image in pixels.
pub const WIDTH: usize = 32;
/// Pixel bytes per image (`3 * 32 * 32`).
pub const IMAGE_BYTES: usize = CHANNELS * HEIGHT * WIDTH;
/// Bytes per record of a binary batch: the label byte and the pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// The folder `cifar-10-binary.tar.gz` unpacks to.
pub const BINARY_FOLDER: &str = "cifar-10-batches-bin";
/// The folder `cifar-10-python.tar.gz` unpacks to.
pub const PYTHON_FOLDER: &str = "cifar-10-batches-py";

const BINARY_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const BINARY_TEST: &str = "test_batch.bin";
const PYTHON_TRAIN: [&str; 5] = [
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
];
const PYTHON_TEST: &str = "test_batch";

/// Alex Krizhevsky's page, the official (and only) home of the archives.
const MIRRORS: &[&str] = &["https://www.cs.toronto.edu/~kriz/"];

/// The binary archive. SHA-256 as published in TensorFlow Datasets'
/// `url_checksums/cifar10.txt` (170,052,171 bytes; md5 `c32a1d4ab5d03f1284b67883e8d87530`).
pub const CIFAR10_BINARY: ArchiveDataset = ArchiveDataset {
    files: DatasetFiles {
        name: "cifar-10",
        mirrors: MIRRORS,
        files: &[RemoteFile {
            name: "cifar-10-binary.tar.gz",
            sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        }],
        system_dirs: &[],
    },
    folder: BINARY_FOLDER,
    members: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ],
};

/// The python archive (torchvision's and Keras' download). SHA-256 as published in TensorFlow
/// Datasets' `url_checksums/cifar10.csv` and Keras' `cifar10.load_data` (170,498,071 bytes;
/// md5 `c58f30108f718f92721af3b95e74349a`).
pub const CIFAR10_PYTHON: ArchiveDataset = ArchiveDataset {
    files: DatasetFiles {
        name: "cifar-10",
        mirrors: MIRRORS,
        files: &[RemoteFile {
            name: "cifar-10-python.tar.gz",
            sha256: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        }],
        system_dirs: &[],
    },
    folder: PYTHON_FOLDER,
    members: &[
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ],
};

/// Which official layout to read (and download).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cifar10Format {
    /// The binary version: `data_batch_N.bin` records of one label byte and 3,072 pixel bytes.
    Binary,
    /// The python version: pickled `data_batch_N` dictionaries.
    Python,
}

impl Cifar10Format {
    /// The archive of this layout, for [`Locator::locate_archive`].
    pub fn archive(self) -> &'static ArchiveDataset {
        match self {
            Cifar10Format::Binary => &CIFAR10_BINARY,
            Cifar10Format::Python => &CIFAR10_PYTHON,
        }
    }

    /// Finds the unpacked files (unpacking or fetching the archive if needed) and loads one
    /// split.
    pub fn load(self, locator: &Locator, split: Split) -> Result<ImageSet, DataError> {
        let dir = locator.locate_archive(self.archive())?;
        self.load_from(&dir, split)
    }

    /// Loads one split from the batches folder or a folder holding it (see [`load_binary`]).
    pub fn load_from(self, dir: &Path, split: Split) -> Result<ImageSet, DataError> {
        match self {
            Cifar10Format::Binary => load_binary(dir, split),
            Cifar10Format::Python => load_python(dir, split),
        }
    }
}

fn classes() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect()
}

/// `dir/<folder>` if that is a folder, else `dir` itself.
fn batches_dir(dir: &Path, folder: &str) -> PathBuf {
    let inner = dir.join(folder);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Reads one binary batch file and returns its pixels (channel-first, image after image) and
/// labels.
///
/// Errors: [`DataError::Format`] for a file that is empty or not a whole number of 3,073-byte
/// records (with the sizes involved), [`DataError::LabelOutOfRange`] for a label above 9,
/// [`DataError::Io`] for operating-system errors. Any number of records is accepted (the
/// official files have 10,000).
pub fn read_binary_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let len = bytes.len();
    if len == 0 {
        return Err(DataError::format(
            path,
            format!(
                "empty file: expected CIFAR-10 records of {RECORD_BYTES} bytes (1 label byte + \
                 {IMAGE_BYTES} pixel bytes)"
            ),
        ));
    }
    if len % RECORD_BYTES != 0 {
        let hint = if len % (RECORD_BYTES + 1) == 0 {
            " (its size fits CIFAR-100's 3074-byte records: 2 label bytes)"
        } else {
            " (truncated, or not a CIFAR-10 binary batch)"
        };
        return Err(DataError::format(
            path,
            format!(
                "expected a whole number of {RECORD_BYTES}-byte records (1 label byte + \
                 {IMAGE_BYTES} pixel bytes; {} bytes for the official 10,000), found {len} \
                 bytes: {} whole records and {} bytes more{hint}",
                10_000 * RECORD_BYTES,
                len / RECORD_BYTES,
                len % RECORD_BYTES
            ),
        ));
    }
    let count = len / RECORD_BYTES;
    let mut pixels = Vec::with_capacity(count * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(count);
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if usize::from(label) >= CIFAR10_CLASSES.len() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                num_classes: CIFAR10_CLASSES.len(),
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// Writes a binary batch file in the official layout (`labels.len()` records). Meant for test
/// fixtures and conversions: it writes exactly the real format, but not atomically.
///
/// Fails with [`io::ErrorKind::InvalidInput`] unless `pixels` holds `labels.len()` images of
/// 3,072 bytes.
pub fn write_binary_batch(path: &Path, pixels: &[u8], labels: &[u8]) -> io::Result<()> {
    if pixels.len() != labels.len() * IMAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} pixel bytes for {} labels: expected {IMAGE_BYTES} per label",
                pixels.len(),
                labels.len()
            ),
        ));
    }
    let mut out = BufWriter::new(fs::File::create(path)?);
    for (label, image) in labels.iter().zip(pixels.chunks_exact(IMAGE_BYTES)) {
        out.write_all(&[*label])?;
        out.write_all(image)?;
    }
    out.flush()
}

/// Loads one split from the binary layout: `dir` is `cifar-10-batches-bin/` itself or a folder
/// holding it. Training is `data_batch_1.bin` .. `data_batch_5.bin` in that order, testing
/// `test_batch.bin`. Errors as for [`read_binary_batch`]; a missing file is a
/// [`DataError::Io`] naming its path.
pub fn load_binary(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
    load_batches(
        dir,
        BINARY_FOLDER,
        split,
        &BINARY_TRAIN,
        BINARY_TEST,
        read_binary_batch,
    )
}

/// Loads one split from the python layout: `dir` is `cifar-10-batches-py/` itself or a folder
/// holding it (torchvision's `root`). Training is `data_batch_1` .. `data_batch_5` in that
/// order, testing `test_batch`. Errors as for [`read_python_batch`].
pub fn load_python(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
    load_batches(
        dir,
        PYTHON_FOLDER,
        split,
        &PYTHON_TRAIN,
        PYTHON_TEST,
        read_python_batch,
    )
}

/// Reads one batch file into `(pixels, labels)`.
type ReadBatch = fn(&Path) -> Result<(Vec<u8>, Vec<u8>), DataError>;

fn load_batches(
    dir: &Path,
    folder: &str,
    split: Split,
    train: &[&str],
    test: &str,
    read: ReadBatch,
) -> Result<ImageSet, DataError> {
    let dir = batches_dir(dir, folder);
    let names: &[&str] = match split {
        Split::Train => train,
        Split::Test => std::slice::from_ref(&test),
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in names {
        let path = dir.join(name);
        let (p, l) = read(&path)?;
        tracing::debug!(file = %path.display(), images = l.len(), "read CIFAR-10 batch");
        if pixels.is_empty() {
            pixels = p;
            labels = l;
        } else {
            pixels.extend_from_slice(&p);
            labels.extend_from_slice(&l);
        }
    }
    Ok(ImageSet::new(
        CHANNELS,
        HEIGHT,
        WIDTH,
        pixels,
        labels,
        classes(),
    ))
}

/// Reads one python batch file (a pickled dict, see the module docs) and returns its pixels
/// (channel-first, image after image) and labels.
///
/// Only the `data` and `labels` entries are read (keys as byte strings or str). `data` must be
/// a numpy array of dtype uint8 (`u1`) and shape `(N, 3072)` in C order; `labels` a list (or a
/// 1-D integer numpy array) of `N` integers below 10.
///
/// Errors: [`DataError::Format`] naming the problem (an unsupported pickle opcode or callable
/// with its byte offset, a missing entry, a wrong dtype or shape), [`DataError::CountMismatch`]
/// when `labels` and `data` disagree on `N` (both paths are this file),
/// [`DataError::LabelOutOfRange`] for a label from 10 to 255 (other values are a `Format`
/// error), [`DataError::Io`] for operating-system errors.
pub fn read_python_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let fmt = |m: String| DataError::format(path, m);
    let root = pickle::run(&bytes).map_err(|e| {
        fmt(format!(
            "not a readable CIFAR-10 python batch: {} (at byte offset {})",
            e.message, e.offset
        ))
    })?;
    drop(bytes);
    if !matches!(root, Value::Dict(_)) {
        return Err(fmt(format!(
            "expected a pickled dict with 'data' and 'labels' entries, found {}",
            root.a_type_name()
        )));
    }
    let entry = |key: &str| {
        root.dict_get(key).ok_or_else(|| {
            fmt(format!(
                "the pickled dict has no '{key}' entry: expected 'data' and 'labels', found \
                 keys {}",
                root.dict_keys().join(", ")
            ))
        })
    };
    let data = entry("data")?;
    let labels = entry("labels")?;

    let array = NdArray::from_value(&data).map_err(|m| fmt(format!("'data': {m}")))?;
    if array.dtype.kind != 'u' || array.dtype.itemsize != 1 {
        return Err(fmt(format!(
            "'data': expected a numpy array of dtype uint8 ('u1'), found dtype '{}'",
            array.dtype.descr
        )));
    }
    let count = match array.shape[..] {
        [n, IMAGE_BYTES] => n,
        _ => {
            return Err(fmt(format!(
                "'data': expected shape (N, {IMAGE_BYTES}) (N images of 3x32x32 bytes), found \
                 {}",
                shape_str(&array.shape)
            )))
        }
    };
    if array.fortran_order && count > 1 {
        return Err(fmt(
            "'data': expected a C-order (row-major) array, found Fortran order".to_string(),
        ));
    }

    let values = label_values(&labels).map_err(|m| fmt(format!("'labels': {m}")))?;
    if values.len() != count {
        return Err(DataError::CountMismatch {
            images_path: path.to_path_buf(),
            labels_path: path.to_path_buf(),
            images: count,
            labels: values.len(),
        });
    }
    let num_classes = CIFAR10_CLASSES.len();
    let mut out_labels = Vec::with_capacity(count);
    for (index, &v) in values.iter().enumerate() {
        match u8::try_from(v) {
            Ok(label) if usize::from(label) < num_classes => out_labels.push(label),
            Ok(label) => {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label,
                    num_classes,
                })
            }
            Err(_) => {
                return Err(fmt(format!(
                    "label {v} at index {index} is out of range: expected a label below \
                     {num_classes} ({num_classes} classes)"
                )))
            }
        }
    }

    // Take the pixel buffer without a copy when nothing else holds it.
    let pixels = array.data;
    drop((root, data, labels));
    let pixels = Rc::try_unwrap(pixels).unwrap_or_else(|shared| shared.as_ref().clone());
    Ok((pixels, out_labels))
}

/// The integers of a list or tuple of ints, or of a 1-D integer numpy array.
fn label_values(v: &Value) -> Result<Vec<i64>, String> {
    let items = match v {
        Value::List(l) => l.items.borrow().clone(),
        Value::Tuple(t) => t.items.clone(),
        Value::Object(_) => return array_ints(&NdArray::from_value(v)?),
        other => {
            return Err(format!(
                "expected a list of ints, found {}",
                other.a_type_name()
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_int()
                .ok_or_else(|| format!("item {i} is {}, expected an int", x.a_type_name()))
        })
        .collect()
}

fn array_ints(a: &NdArray) -> Result<Vec<i64>, String> {
    if a.shape.len() != 1 {
        return Err(format!(
            "expected a list or a 1-D array, found an array of shape {}",
            shape_str(&a.shape)
        ));
    }
    let size = a.dtype.itemsize;
    let signed = match a.dtype.kind {
        'i' => true,
        'u' => false,
        _ => {
            return Err(format!(
                "expected integers, found an array of dtype '{}'",
                a.dtype.descr
            ))
        }
    };
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(format!("unsupported integer dtype '{}'", a.dtype.descr));
    }
    let little = a.dtype.little_endian();
    Ok(a.data
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            if little {
                b[..size].copy_from_slice(c);
            } else {
                for (dst, src) in b[..size].iter_mut().zip(c.iter().rev()) {
                    *dst = *src;
                }
            }
            if signed && c.len() < 8 && b[size - 1] & 0x80 != 0 {
                b[size..].fill(0xff);
            }
            i64::from_le_bytes(b)
        })
        .collect())
}
