//! CIFAR-10 in its official binary and python layouts, image folders, and fetching the archives:
//! round trips of generated files in the real formats, one specific error per kind of damage,
//! and the real images from `../shared/datasets/cifar10-jpeg.tar.gz`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_data::cifar::{
    self, Cifar10Format, BINARY_FOLDER, CIFAR10_BINARY, CIFAR10_CLASSES, CIFAR10_PYTHON,
    IMAGE_BYTES, PYTHON_FOLDER,
};
use kiln_data::fetch::{ArchiveDataset, DatasetFiles, Locator, RemoteFile};
use kiln_data::{load_image_folder, DataError, ImageSet, Split};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `n` images, numbered from `first`: in image `k` the R, G and B planes hold 3k, 3k + 1 and
/// 3k + 2 (mod 256), except every 97th pixel (from pixel 5), which holds its position mod 251,
/// so that a misplaced plane or pixel shows.
fn images(first: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * IMAGE_BYTES);
    for k in first..first + n {
        for c in 0..3 {
            let v = ((3 * k + c) % 256) as u8;
            for j in 0..1024 {
                // Every 97th pixel carries its own position, the rest the plane's value.
                out.push(if j % 97 == 5 { (j % 251) as u8 } else { v });
            }
        }
    }
    out
}

fn labels_for(first: usize, n: usize) -> Vec<u8> {
    (first..first + n).map(|k| ((k * 7) % 10) as u8).collect()
}

fn msg(e: &DataError) -> String {
    e.to_string()
}

fn has_path(e: &DataError, p: &Path) -> bool {
    msg(e).contains(&p.display().to_string())
}

/// Sizes of the generated batches: five training batches of different sizes, then the test one.
const TRAIN_SIZES: [usize; 5] = [3, 2, 4, 1, 2];
const TEST_SIZE: usize = 3;

/// Writes a complete binary layout into `dir/cifar-10-batches-bin`; returns the folder.
fn write_binary_layout(dir: &Path) -> PathBuf {
    let folder = dir.join(BINARY_FOLDER);
    fs::create_dir_all(&folder).unwrap();
    let mut first = 0;
    for (i, &n) in TRAIN_SIZES.iter().enumerate() {
        let path = folder.join(format!("data_batch_{}.bin", i + 1));
        cifar::write_binary_batch(&path, &images(first, n), &labels_for(first, n)).unwrap();
        first += n;
    }
    cifar::write_binary_batch(
        &folder.join("test_batch.bin"),
        &images(1000, TEST_SIZE),
        &labels_for(1000, TEST_SIZE),
    )
    .unwrap();
    folder
}

fn train_total() -> usize {
    TRAIN_SIZES.iter().sum()
}

// ---------------------------------------------------------------------------------------------
// A pickle writer that emits protocol 2 the way Python 2's cPickle wrote the CIFAR batches:
// `cPickle.dump(dict, f, 2)` of {'data': numpy uint8 array, 'labels': [int], 'batch_label': str,
// 'filenames': [str]}, with BINPUT memo entries from 1, MARK ... SETITEMS / APPENDS batches of
// up to 1000 items (a batch of 1 uses APPEND), numpy's `_reconstruct` + BUILD for the array.
// ---------------------------------------------------------------------------------------------

struct Py2 {
    out: Vec<u8>,
    memo: u32,
}

impl Py2 {
    fn new() -> Py2 {
        Py2 {
            out: vec![0x80, 0x02],
            memo: 0,
        }
    }

    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// BINPUT / LONG_BINPUT of the next memo index (cPickle starts at 1).
    fn put(&mut self) -> &mut Self {
        self.memo += 1;
        if self.memo < 256 {
            self.out.extend_from_slice(&[b'q', self.memo as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&self.memo.to_le_bytes());
        }
        self
    }

    /// A Python 2 `str`: SHORT_BINSTRING or BINSTRING; memoized if `memo`.
    fn str(&mut self, s: &[u8], memo: bool) -> &mut Self {
        if s.len() < 256 {
            self.out.extend_from_slice(&[b'U', s.len() as u8]);
        } else {
            self.out.push(b'T');
            self.out
                .extend_from_slice(&i32::try_from(s.len()).unwrap().to_le_bytes());
        }
        self.out.extend_from_slice(s);
        if memo {
            self.put();
        }
        self
    }

    fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            self.out.push(b'J');
            self.out
                .extend_from_slice(&i32::try_from(v).unwrap().to_le_bytes());
        }
        self
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.out.push(b'c');
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self.put()
    }

    fn tuple_of_ints(&mut self, v: &[usize]) -> &mut Self {
        if v.len() > 3 {
            self.op(b"(");
        }
        for &d in v {
            self.int(d as i64);
        }
        match v.len() {
            0 => self.op(b")"),
            1 => self.op(&[0x85]),
            2 => self.op(&[0x86]),
            3 => self.op(&[0x87]),
            _ => self.op(b"t"),
        }
    }

    /// A numpy array as numpy 1.x pickles it under Python 2, little-endian.
    fn array(&mut self, descr: &str, shape: &[usize], raw: &[u8]) -> &mut Self {
        let byteorder = if descr.ends_with('1') { "|" } else { "<" };
        self.array_ordered(descr, byteorder, shape, raw)
    }

    /// The same with its byte order given: `|` (single bytes), `<` or `>`.
    fn array_ordered(
        &mut self,
        descr: &str,
        byteorder: &str,
        shape: &[usize],
        raw: &[u8],
    ) -> &mut Self {
        self.array_with(|p| {
            p.tuple_of_ints(shape)
                .dtype(descr, byteorder)
                .op(&[0x89])
                .str(raw, false);
        })
    }

    /// `_reconstruct(ndarray, (0,), 'b')`: an array before BUILD gives it its state.
    fn reconstruct(&mut self) -> &mut Self {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.int(0)
            .op(&[0x85])
            .str(b"b", false)
            .op(&[0x87])
            .op(b"R");
        self.put()
    }

    /// An array whose state is `(1, <what state writes>)`: numpy writes the shape, the dtype,
    /// the memory order (a bool: Fortran?) and the raw bytes.
    fn array_with(&mut self, state: impl FnOnce(&mut Py2)) -> &mut Self {
        self.reconstruct().op(b"(").int(1);
        state(self);
        self.op(b"tb")
    }

    /// `dtype(descr, 0, 1)` with its state; `byteorder` is `|`, `<` or `>`.
    fn dtype(&mut self, descr: &str, byteorder: &str) -> &mut Self {
        self.global("numpy", "dtype");
        self.str(descr.as_bytes(), false)
            .int(0)
            .int(1)
            .op(&[0x87])
            .op(b"R");
        self.put();
        self.op(b"(")
            .int(3)
            .str(byteorder.as_bytes(), false)
            .op(b"NNN")
            .op(b"J\xff\xff\xff\xffJ\xff\xff\xff\xff")
            .int(0)
            .op(b"tb")
    }

    /// A Python 2 `unicode` (BINUNICODE): what Python 3 writes for a `str`.
    fn unicode(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&u32::try_from(s.len()).unwrap().to_le_bytes())
            .op(s.as_bytes())
    }

    /// `[items]` with cPickle's batching of APPENDS.
    fn list(&mut self, n: usize, mut item: impl FnMut(&mut Py2, usize)) -> &mut Self {
        self.op(b"]").put();
        let mut i = 0;
        while i < n {
            let batch = (n - i).min(1000);
            if batch == 1 {
                item(self, i);
                self.op(b"a");
            } else {
                self.op(b"(");
                for j in i..i + batch {
                    item(self, j);
                }
                self.op(b"e");
            }
            i += batch;
        }
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.out)
    }
}

/// A CIFAR python batch as cPickle wrote it; `data` writes the value of `'data'`.
fn py2_batch_with(data: impl FnOnce(&mut Py2), labels: &[i64], batch_label: &str) -> Vec<u8> {
    let mut p = Py2::new();
    p.op(b"}").put().op(b"(");
    p.str(b"data", true);
    data(&mut p);
    p.str(b"labels", true);
    p.list(labels.len(), |p, i| {
        p.int(labels[i]);
    });
    p.str(b"batch_label", true);
    p.str(batch_label.as_bytes(), true);
    p.str(b"filenames", true);
    p.list(labels.len(), |p, i| {
        p.str(format!("image_{i:05}.png").as_bytes(), true);
    });
    p.op(b"u");
    p.finish()
}

fn py2_batch(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let n = labels.len();
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    py2_batch_with(
        |p| {
            p.array("u1", &[n, IMAGE_BYTES], pixels);
        },
        &labels,
        "training batch 1 of 5",
    )
}

/// Writes a complete python layout into `dir/cifar-10-batches-py`, with the same images and
/// labels as [`write_binary_layout`]; returns the folder.
fn write_python_layout(dir: &Path) -> PathBuf {
    let folder = dir.join(PYTHON_FOLDER);
    fs::create_dir_all(&folder).unwrap();
    let mut first = 0;
    for (i, &n) in TRAIN_SIZES.iter().enumerate() {
        let bytes = py2_batch(&images(first, n), &labels_for(first, n));
        fs::write(folder.join(format!("data_batch_{}", i + 1)), bytes).unwrap();
        first += n;
    }
    let bytes = py2_batch(&images(1000, TEST_SIZE), &labels_for(1000, TEST_SIZE));
    fs::write(folder.join("test_batch"), bytes).unwrap();
    folder
}

fn assert_sets_equal(a: &ImageSet, b: &ImageSet) {
    assert_eq!(
        (a.channels, a.height, a.width, a.len()),
        (b.channels, b.height, b.width, b.len())
    );
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.classes, b.classes);
    for i in 0..a.len() {
        assert_eq!(a.image(i), b.image(i), "image {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Binary layout
// ---------------------------------------------------------------------------------------------

#[test]
fn binary_batch_has_the_official_record_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bin");
    // Two records: label, then 1024 R, 1024 G, 1024 B.
    let mut pixels = vec![10u8; 1024];
    pixels.extend(vec![20u8; 1024]);
    pixels.extend(vec![30u8; 1024]);
    pixels.extend((0..IMAGE_BYTES).map(|i| (i % 256) as u8));
    cifar::write_binary_batch(&path, &pixels, &[7, 2]).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 2 * 3073);
    assert_eq!(bytes[0], 7);
    assert!(bytes[1..1025].iter().all(|&b| b == 10));
    assert!(bytes[1025..2049].iter().all(|&b| b == 20));
    assert!(bytes[2049..3073].iter().all(|&b| b == 30));
    assert_eq!(bytes[3073], 2);
    assert_eq!(&bytes[3074..], &pixels[IMAGE_BYTES..]);

    // Read back: planes land in channels 0, 1, 2 of a channel-first image.
    let (p, l) = cifar::read_binary_batch(&path).unwrap();
    assert_eq!(l, vec![7, 2]);
    assert_eq!(p, pixels);

    // The writer refuses pixels that do not make whole images.
    let err = cifar::write_binary_batch(&path, &pixels[1..], &[7, 2]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn binary_layout_loads_train_in_batch_order_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_binary_layout(dir.path());

    // `dir` may be the batches folder itself or the folder holding it.
    for root in [dir.path(), folder.as_path()] {
        let train = cifar::load_binary(root, Split::Train).unwrap();
        assert_eq!((train.channels, train.height, train.width), (3, 32, 32));
        assert_eq!(train.len(), train_total());
        assert_eq!(train.classes, CIFAR10_CLASSES);
        // Batches 1..5 concatenated in order: image k is global image k.
        assert_eq!(train.labels(), &labels_for(0, train_total())[..]);
        for k in 0..train_total() {
            let img = train.image(k);
            // R, G, B planes in channels 0, 1, 2.
            assert_eq!(img[0], (3 * k % 256) as u8, "R of image {k}");
            assert_eq!(img[1024], ((3 * k + 1) % 256) as u8, "G of image {k}");
            assert_eq!(img[2048], ((3 * k + 2) % 256) as u8, "B of image {k}");
            // Pixel 102 of each plane holds its position.
            assert_eq!(img[2048 + 102], 102);
            assert_eq!(img, &images(k, 1)[..]);
        }

        let test = cifar::load_binary(root, Split::Test).unwrap();
        assert_eq!(test.len(), TEST_SIZE);
        assert_eq!(test.labels(), &labels_for(1000, TEST_SIZE)[..]);
        assert_eq!(test.image(2), &images(1002, 1)[..]);
    }
    // Through the format enum too.
    let set = Cifar10Format::Binary
        .load_from(dir.path(), Split::Test)
        .unwrap();
    assert_eq!(set.labels(), &labels_for(1000, TEST_SIZE)[..]);
}

#[test]
fn truncated_binary_batch_is_a_format_error_with_the_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    cifar::write_binary_batch(&path, &images(0, 3), &labels_for(0, 3)).unwrap();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..2 * 3073 + 100]).unwrap();
    let err = cifar::read_binary_batch(&path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(has_path(&err, &path), "{m}");
    assert!(
        m.contains("3073-byte records") && m.contains("found 6246 bytes"),
        "{m}"
    );
    assert!(
        m.contains("2 whole records and 100 bytes more") && m.contains("truncated"),
        "{m}"
    );

    // Empty file.
    fs::write(&path, b"").unwrap();
    let err = cifar::read_binary_batch(&path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(msg(&err).contains("empty file"), "{err}");

    // CIFAR-100's 3074-byte records get a hint.
    fs::write(&path, vec![0u8; 2 * 3074]).unwrap();
    let m = msg(&cifar::read_binary_batch(&path).unwrap_err());
    assert!(m.contains("CIFAR-100"), "{m}");

    // A missing batch of the layout: an I/O error naming it.
    let folder = write_binary_layout(dir.path());
    fs::remove_file(folder.join("data_batch_4.bin")).unwrap();
    let err = cifar::load_binary(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(has_path(&err, &folder.join("data_batch_4.bin")), "{err}");
}

#[test]
fn binary_label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    cifar::write_binary_batch(&path, &images(0, 4), &[1, 9, 10, 3]).unwrap();
    let err = cifar::read_binary_batch(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 2,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let m = msg(&err);
    assert!(has_path(&err, &path), "{m}");
    assert!(m.contains("label 10 at index 2"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Python layout
// ---------------------------------------------------------------------------------------------

#[test]
fn python_layout_reads_like_the_binary_one() {
    let dir = tempfile::tempdir().unwrap();
    write_binary_layout(dir.path());
    let folder = write_python_layout(dir.path());
    // The generated pickle starts the way the official files do.
    let head = fs::read(folder.join("data_batch_1")).unwrap();
    assert!(
        head.starts_with(b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\n"),
        "{:?}",
        &head[..40]
    );

    for split in [Split::Train, Split::Test] {
        let bin = cifar::load_binary(dir.path(), split).unwrap();
        let py = cifar::load_python(dir.path(), split).unwrap();
        assert_sets_equal(&py, &bin);
        let py2 = Cifar10Format::Python.load_from(&folder, split).unwrap();
        assert_sets_equal(&py2, &bin);
    }
    let (pixels, labels) = cifar::read_python_batch(&folder.join("data_batch_2")).unwrap();
    assert_eq!(pixels, images(3, 2));
    assert_eq!(labels, labels_for(3, 2));
}

#[test]
fn python_batch_with_long_lists_and_memo_past_255() {
    // 1,200 images: labels need two APPENDS batches (1000 + 200) and the filenames push the
    // memo past 255 (LONG_BINPUT).
    let n = 1200;
    let pixels: Vec<u8> = (0..n * IMAGE_BYTES).map(|i| (i % 253) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let bytes = py2_batch(&pixels, &labels);
    assert!(bytes.windows(5).any(|w| w == b"r\x00\x01\x00\x00"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1");
    fs::write(&path, &bytes).unwrap();
    let (p, l) = cifar::read_python_batch(&path).unwrap();
    assert_eq!(l, labels);
    assert_eq!(p, pixels);
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn pickle_with_an_unknown_opcode_names_it_and_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = py2_batch(&images(0, 1), &[3]);
    // Replace the MARK after the dict's BINPUT (offset 5) by PERSID ('P').
    assert_eq!(good[5], b'(');
    let mut bad = good.clone();
    bad[5] = b'P';
    let path = write_tmp(dir.path(), "data_batch_1", &bad);
    let err = cifar::read_python_batch(&path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(has_path(&err, &path), "{m}");
    assert!(
        m.contains("unsupported pickle opcode 0x50 ('P') PERSID") && m.contains("byte offset 5"),
        "{m}"
    );

    // An opcode no protocol has.
    bad[5] = 0xf0;
    fs::write(&path, &bad).unwrap();
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("unsupported pickle opcode 0xf0") && m.contains("byte offset 5"),
        "{m}"
    );
}

#[test]
fn pickle_calling_anything_else_is_refused_not_run() {
    // The classic exploit: os.system('touch <marker>').
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut p = Py2::new();
    p.global("os", "system");
    p.str(format!("touch {}", marker.display()).as_bytes(), false)
        .op(&[0x85])
        .op(b"R");
    let path = write_tmp(dir.path(), "evil", &p.finish());
    let err = cifar::read_python_batch(&path).unwrap_err();
    let m = msg(&err);
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(m.contains("refusing to call os.system"), "{m}");
    assert!(!marker.exists());
}

#[test]
fn pickle_data_of_the_wrong_dtype_or_shape_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();

    // int64 data, the shape right.
    let raw = vec![0u8; 2 * IMAGE_BYTES * 8];
    let bytes = py2_batch_with(
        |p| {
            p.array("i8", &[2, IMAGE_BYTES], &raw);
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "i8", &bytes);
    let err = cifar::read_python_batch(&path).unwrap_err();
    let m = msg(&err);
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(has_path(&err, &path), "{m}");
    assert!(
        m.contains("'data': expected a numpy array of dtype uint8 ('u1'), found dtype 'i8'"),
        "{m}"
    );

    // uint8 images of 3x32x32 given as (N, 3, 32, 32) instead of (N, 3072).
    let raw = images(0, 2);
    let bytes = py2_batch_with(
        |p| {
            p.array("u1", &[2, 3, 32, 32], &raw);
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "4d", &bytes);
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("expected shape (N, 3072)") && m.contains("found (2, 3, 32, 32)"),
        "{m}"
    );

    // (N, 1024): one channel only.
    let raw = vec![0u8; 2 * 1024];
    let bytes = py2_batch_with(
        |p| {
            p.array("u1", &[2, 1024], &raw);
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "gray", &bytes);
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("found (2, 1024)"), "{m}");

    // The raw data shorter than the shape says.
    let raw = vec![0u8; 2 * IMAGE_BYTES - 1];
    let bytes = py2_batch_with(
        |p| {
            p.array("u1", &[2, IMAGE_BYTES], &raw);
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "short", &bytes);
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("needs 6144 bytes of data, found 6143"), "{m}");

    // 'data' is a list, not an array.
    let bytes = py2_batch_with(
        |p| {
            p.list(2, |p, i| {
                p.int(i as i64);
            });
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "list", &bytes);
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("'data': expected a numpy array, found a list"),
        "{m}"
    );
}

#[test]
fn pickle_labels_mismatch_range_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pixels = images(0, 3);

    // 3 images, 2 labels.
    let bytes = py2_batch_with(
        |p| {
            p.array("u1", &[3, IMAGE_BYTES], &pixels);
        },
        &[1, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "count", &bytes);
    let err = cifar::read_python_batch(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let m = msg(&err);
    assert!(
        m.contains("3 images") && m.contains("2 labels") && has_path(&err, &path),
        "{m}"
    );

    // Label 12 at index 1.
    let bytes = py2_batch_with(
        |p| {
            p.array("u1", &[3, IMAGE_BYTES], &pixels);
        },
        &[1, 12, 2],
        "x",
    );
    let path = write_tmp(dir.path(), "range", &bytes);
    let err = cifar::read_python_batch(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 12,
                num_classes: 10,
                ..
            }
        ),
        "{err:?}"
    );

    // Label -1 and 300 do not fit a byte: a Format error with the value.
    for (bad, shown) in [
        (-1i64, "label -1 at index 2"),
        (300, "label 300 at index 2"),
    ] {
        let bytes = py2_batch_with(
            |p| {
                p.array("u1", &[3, IMAGE_BYTES], &pixels);
            },
            &[1, 2, bad],
            "x",
        );
        let path = write_tmp(dir.path(), "range2", &bytes);
        let err = cifar::read_python_batch(&path).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{err:?}");
        assert!(msg(&err).contains(shown), "{err}");
    }

    // CIFAR-100's dict has 'fine_labels', not 'labels'.
    let mut p = Py2::new();
    p.op(b"}").put().op(b"(");
    p.str(b"data", true)
        .array("u1", &[1, IMAGE_BYTES], &images(0, 1));
    p.str(b"fine_labels", true).list(1, |p, _| {
        p.int(3);
    });
    p.op(b"u");
    let path = write_tmp(dir.path(), "c100", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("no 'labels' entry") && m.contains("'data', 'fine_labels'"),
        "{m}"
    );

    // Not a dict at all.
    let mut p = Py2::new();
    p.op(b"]");
    let path = write_tmp(dir.path(), "list", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("expected a pickled dict") && m.contains("found a list"),
        "{m}"
    );
}

#[test]
fn damaged_pickles_give_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = py2_batch(&images(0, 1), &[4]);
    let raw_start = good
        .windows(5)
        .position(|w| w == b"T\x00\x0c\x00\x00")
        .unwrap()
        + 5;
    let raw_end = raw_start + IMAGE_BYTES;
    let path = dir.path().join("cut");

    // Every cut outside the raw pixels, and a few inside: an error naming the file.
    let cuts = (0..raw_start + 3)
        .chain([raw_start + 1000, raw_end - 1])
        .chain(raw_end..good.len());
    for cut in cuts {
        fs::write(&path, &good[..cut]).unwrap();
        let err = cifar::read_python_batch(&path).unwrap_err();
        assert!(
            matches!(err, DataError::Format { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(has_path(&err, &path), "{err}");
    }
    let err = {
        fs::write(&path, &good[..raw_start + 1000]).unwrap();
        cifar::read_python_batch(&path).unwrap_err()
    };
    assert!(msg(&err).contains("data ends early"), "{err}");

    // Every byte outside the pixels changed, in three ways: whatever happens, no panic, and an
    // accepted file still has the right shape.
    for i in (0..raw_start).chain(raw_end..good.len()) {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= x;
            fs::write(&path, &bad).unwrap();
            if let Ok((p, l)) = cifar::read_python_batch(&path) {
                assert_eq!(p.len(), l.len() * IMAGE_BYTES);
            }
        }
    }
}

#[test]
fn deeply_nested_pickle_is_refused() {
    // 100,000 nested lists: refused at depth 64, without deep recursion.
    let mut p = Py2::new();
    for _ in 0..100_000 {
        p.op(b"]");
    }
    for _ in 0..99_999 {
        p.op(b"a");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_tmp(dir.path(), "deep", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("nested more than 64 deep"), "{m}");

    // A list appended to itself (a cycle) is refused too.
    let mut p = Py2::new();
    p.op(b"]").put().op(b"h\x01a");
    let path = write_tmp(dir.path(), "cycle", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("changed after it was placed"), "{m}");

    // 64 tuples nested are a value; as the arguments of a call they would be 65 deep.
    let nested = |p: &mut Py2| {
        p.int(0);
        for _ in 0..64 {
            p.op(&[0x85]);
        }
    };
    let mut p = Py2::new();
    nested(&mut p);
    let path = write_tmp(dir.path(), "tuples", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("expected a pickled dict"), "{m}");
    let mut p = Py2::new();
    p.global("numpy", "dtype");
    nested(&mut p);
    p.op(b"R");
    let path = write_tmp(dir.path(), "call", &p.finish());
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(m.contains("nested more than 64 deep"), "{m}");
}

/// Reads a batch whose `'data'` value `data` writes (two labels): the error's message, after
/// checking it is a format error naming the file.
fn data_error(dir: &Path, name: &str, data: impl FnOnce(&mut Py2)) -> String {
    let path = write_tmp(dir, name, &py2_batch_with(data, &[1, 2], "x"));
    let err = cifar::read_python_batch(&path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{name}: {err:?}");
    assert!(has_path(&err, &path), "{name}: {err}");
    msg(&err)
}

#[test]
fn numpy_arrays_in_a_form_numpy_does_not_write_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let raw = images(0, 2);
    let shape = [2, IMAGE_BYTES];
    let expect = |m: String, part: &str| assert!(m.contains(part), "expected {part:?} in: {m}");

    expect(
        data_error(dir, "no-build", |p| {
            p.reconstruct();
        }),
        "'data': numpy array without its state (no BUILD tuple)",
    );
    expect(
        data_error(dir, "order-none", |p| {
            p.array_with(|p| {
                p.tuple_of_ints(&shape)
                    .dtype("u1", "|")
                    .op(b"N")
                    .str(&raw, false);
            });
        }),
        "numpy array state: expected a bool for the memory order, found None",
    );
    expect(
        data_error(dir, "raw-int", |p| {
            p.array_with(|p| {
                p.tuple_of_ints(&shape).dtype("u1", "|").op(&[0x89]).int(7);
            });
        }),
        "numpy array state: expected the raw data as bytes, found an int",
    );
    expect(
        data_error(dir, "dtype-text", |p| {
            p.array_with(|p| {
                p.tuple_of_ints(&shape)
                    .str(b"u1", false)
                    .op(&[0x89])
                    .str(&raw, false);
            });
        }),
        "expected a numpy dtype, found bytes",
    );
    expect(
        data_error(dir, "dtype-array", |p| {
            p.array_with(|p| {
                p.tuple_of_ints(&shape)
                    .array("u1", &[1], &[0])
                    .op(&[0x89])
                    .str(&raw, false);
            });
        }),
        "expected a numpy dtype, found a numpy array",
    );
    // numpy pickles an array of Python objects with dtype 'O8' and a list as its data.
    expect(
        data_error(dir, "objects", |p| {
            p.array_with(|p| {
                p.tuple_of_ints(&[2])
                    .dtype("O8", "|")
                    .op(&[0x89])
                    .list(2, |p, i| {
                        p.int(i as i64);
                    });
            });
        }),
        "numpy dtype 'O8': only numbers of a fixed size are read",
    );
    expect(
        data_error(dir, "bare-dtype", |p| {
            p.dtype("u1", "|");
        }),
        "'data': expected a numpy array, found a numpy dtype",
    );
    expect(
        data_error(dir, "frombuffer-int", |p| {
            p.global("numpy.core.numeric", "_frombuffer");
            p.op(b"(").int(7).dtype("u1", "|").tuple_of_ints(&shape);
            p.str(b"C", false).op(b"tR");
        }),
        "numpy _frombuffer: expected the data as bytes, found an int",
    );
    expect(
        data_error(dir, "one-dim", |p| {
            p.array("u1", &[2 * IMAGE_BYTES], &raw);
        }),
        "found (6144,)",
    );

    // The memory order as an int (protocols 0 and 1 write False as `I00`): 0 is C order and
    // reads; 1 is Fortran order, which a CIFAR batch never is.
    let with_order = |order: i64| {
        py2_batch_with(
            |p| {
                p.array_with(|p| {
                    p.tuple_of_ints(&shape)
                        .dtype("u1", "|")
                        .int(order)
                        .str(&raw, false);
                });
            },
            &[1, 2],
            "x",
        )
    };
    let path = write_tmp(dir, "order-0", &with_order(0));
    let (pixels, labels) = cifar::read_python_batch(&path).unwrap();
    assert!(pixels == raw && labels == [1, 2]);
    let path = write_tmp(dir, "order-1", &with_order(1));
    let m = msg(&cifar::read_python_batch(&path).unwrap_err());
    assert!(
        m.contains("expected a C-order (row-major) array, found Fortran order"),
        "{m}"
    );
}

/// A batch `{'data': <2 images>, 'labels': <what labels writes>}`, read.
fn read_with_labels(
    dir: &Path,
    name: &str,
    labels: impl FnOnce(&mut Py2),
) -> Result<Vec<u8>, DataError> {
    let mut p = Py2::new();
    p.op(b"}").put().op(b"(");
    p.str(b"data", true)
        .array("u1", &[2, IMAGE_BYTES], &images(0, 2));
    p.str(b"labels", true);
    labels(&mut p);
    p.op(b"u");
    let path = write_tmp(dir, name, &p.finish());
    cifar::read_python_batch(&path).map(|(_, labels)| labels)
}

#[test]
fn labels_as_numpy_arrays_of_any_integer_form() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let labels_array = |descr: &'static str,
                        byteorder: &'static str,
                        shape: &'static [usize],
                        raw: &'static [u8]| {
        move |p: &mut Py2| {
            p.array_ordered(descr, byteorder, shape, raw);
        }
    };
    let read = |name, write| read_with_labels(dir, name, write);

    // Big- and little-endian, signed and unsigned, as numpy writes them.
    assert_eq!(
        read(
            "be-i4",
            labels_array("i4", ">", &[2], &[0, 0, 0, 3, 0, 0, 0, 9])
        )
        .unwrap(),
        [3, 9]
    );
    assert_eq!(
        read("le-u2", labels_array("u2", "<", &[2], &[3, 0, 9, 0])).unwrap(),
        [3, 9]
    );
    assert_eq!(
        read("u1", labels_array("u1", "|", &[2], &[3, 9])).unwrap(),
        [3, 9]
    );
    let m = msg(&read(
        "be-i2-negative",
        labels_array("i2", ">", &[2], &[0, 3, 0xff, 0xff]),
    )
    .unwrap_err());
    assert!(m.contains("label -1 at index 1"), "{m}");

    for (name, write, part) in [
        (
            "two-dim",
            labels_array("u1", "|", &[1, 2], &[3, 9]),
            "'labels': expected a list or a 1-D array, found an array of shape (1, 2)",
        ),
        (
            "float",
            labels_array("f4", "<", &[2], &[0; 8]),
            "'labels': expected integers, found an array of dtype 'f4'",
        ),
        (
            "three-byte",
            labels_array("i3", "<", &[2], &[0; 6]),
            "'labels': unsupported integer dtype 'i3'",
        ),
    ] {
        let m = msg(&read(name, write).unwrap_err());
        assert!(m.contains(part), "{name}: expected {part:?} in: {m}");
    }
    let m = msg(&read_with_labels(dir, "item-none", |p| {
        p.op(b"(").int(3).op(b"Nt");
    })
    .unwrap_err());
    assert!(
        m.contains("'labels': item 1 is None, expected an int"),
        "{m}"
    );
    let m = msg(&read_with_labels(dir, "labels-none", |p| {
        p.op(b"N");
    })
    .unwrap_err());
    assert!(
        m.contains("'labels': expected a list of ints, found None"),
        "{m}"
    );
}

/// The byte strings Python 3 writes in protocol 2: `_codecs.encode(text, 'latin1')` and
/// `bytes`/`bytearray` calls; anything else they are given is refused by name.
#[test]
fn byte_string_calls_read_what_python_writes_and_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A batch whose key 'data' is the result of `call`: `module func arg..`, each argument
    // `u:text` (a str) or `b:text` (bytes).
    let read = |call: &str| {
        let [module, func, args @ ..] = &call.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{call}: expected a module, a function and arguments");
        };
        let mut p = Py2::new();
        p.op(b"}").put().op(b"(");
        p.global(module, func).op(b"(");
        for a in args {
            match a.split_once(':').unwrap() {
                ("u", text) => p.unicode(text),
                (_, text) => p.str(text.as_bytes(), false),
            };
        }
        p.op(b"tR");
        p.array("u1", &[1, IMAGE_BYTES], &images(0, 1));
        p.str(b"labels", true).list(1, |p, _| {
            p.int(4);
        });
        p.op(b"u");
        let path = write_tmp(dir, "call", &p.finish());
        cifar::read_python_batch(&path).map(|(_, labels)| labels)
    };

    for call in [
        "_codecs encode u:data u:latin1",
        "__builtin__ bytes b:data",
        "builtins bytearray u:data u:latin-1",
    ] {
        assert_eq!(read(call).unwrap_or_else(|e| panic!("{call}: {e}")), [4]);
    }
    for (call, part) in [
        (
            "_codecs encode u:data u:utf8",
            "_codecs.encode: expected (str, 'latin1')",
        ),
        (
            "_codecs encode b:data u:latin1",
            "_codecs.encode: expected (str, 'latin1')",
        ),
        (
            "__builtin__ bytes u:data u:utf8",
            "__builtin__.bytes: unsupported arguments",
        ),
        (
            "builtins bytes u:\u{0100} u:latin1",
            "latin-1 text holds a character above U+00FF",
        ),
        (
            "_codecs encode u:\u{0100} u:latin1",
            "latin-1 text holds a character above U+00FF",
        ),
    ] {
        let err = read(call).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{call}: {err:?}");
        assert!(
            msg(&err).contains(part),
            "{call}: expected {part:?} in: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Python 3 pickles. Written by hand here in the exact byte forms CPython 3 and numpy emit, and
// checked against real Python + numpy output in `tests/fixtures/` (see `real_python3_pickles`).
// ---------------------------------------------------------------------------------------------

/// A Python 3 protocol-4 pickle of `{'data': array, 'labels': [..]}` (str keys), the way
/// `pickle.dump(d, f, protocol=4)` writes it with numpy 2: FRAME, SHORT_BINUNICODE, MEMOIZE,
/// STACK_GLOBAL, BINBYTES for the raw data, `numpy._core.multiarray._reconstruct`.
fn py3_protocol4(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let n = labels.len();
    let mut body = Vec::new();
    let su = |b: &mut Vec<u8>, s: &str| {
        b.push(0x8c);
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
        b.push(0x94);
    };
    body.push(b'}');
    body.push(0x94);
    body.push(b'(');
    su(&mut body, "data");
    su(&mut body, "numpy._core.multiarray");
    su(&mut body, "_reconstruct");
    body.extend_from_slice(&[0x93, 0x94]);
    su(&mut body, "numpy");
    su(&mut body, "ndarray");
    body.extend_from_slice(&[0x93, 0x94]);
    body.extend_from_slice(b"K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01M");
    body.extend_from_slice(&(n as u16).to_le_bytes());
    body.extend_from_slice(b"M\x00\x0c\x86\x94");
    su(&mut body, "numpy");
    su(&mut body, "dtype");
    body.extend_from_slice(&[0x93, 0x94]);
    su(&mut body, "u1");
    body.extend_from_slice(b"\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89");
    body.push(b'B');
    body.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    body.extend_from_slice(pixels);
    body.extend_from_slice(b"\x94t\x94b");
    su(&mut body, "labels");
    body.extend_from_slice(b"]\x94(");
    for &l in labels {
        body.extend_from_slice(&[b'K', l]);
    }
    body.extend_from_slice(b"eu.");
    let mut out = vec![0x80, 4, 0x95];
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Python 3 protocol 2 of bytes keys and numpy 1.x: no bytes opcode exists in protocol 2, so
/// CPython writes `_codecs.encode('<latin-1 text>', 'latin1')` (and `__builtin__.bytes()` for
/// b'').
fn py3_protocol2(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let n = labels.len();
    let mut memo = 0u8;
    let mut out = vec![0x80, 2];
    let mut put = |out: &mut Vec<u8>| {
        out.extend_from_slice(&[b'q', memo]);
        memo += 1;
    };
    let bytes = |out: &mut Vec<u8>, put: &mut dyn FnMut(&mut Vec<u8>), b: &[u8]| {
        if b.is_empty() {
            out.extend_from_slice(b"c__builtin__\nbytes\n");
            put(out);
            out.extend_from_slice(b")R");
            put(out);
            return;
        }
        out.extend_from_slice(b"c_codecs\nencode\n");
        put(out);
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        out.push(b'X');
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        put(out);
        out.extend_from_slice(b"X\x06\x00\x00\x00latin1");
        put(out);
        out.extend_from_slice(&[0x86, b'R']);
        put(out);
    };
    out.push(b'}');
    put(&mut out);
    out.push(b'(');
    bytes(&mut out, &mut put, b"data");
    out.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\n");
    put(&mut out);
    out.extend_from_slice(b"cnumpy\nndarray\n");
    put(&mut out);
    out.extend_from_slice(b"K\x00\x85");
    put(&mut out);
    bytes(&mut out, &mut put, b"b");
    out.extend_from_slice(&[0x87]);
    put(&mut out);
    out.push(b'R');
    put(&mut out);
    out.extend_from_slice(b"(K\x01M");
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(b"M\x00\x0c\x86");
    put(&mut out);
    out.extend_from_slice(b"cnumpy\ndtype\n");
    put(&mut out);
    out.extend_from_slice(b"X\x02\x00\x00\x00u1\x89\x88\x87");
    put(&mut out);
    out.push(b'R');
    put(&mut out);
    out.extend_from_slice(b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t");
    put(&mut out);
    out.extend_from_slice(&[b'b', 0x89]);
    bytes(&mut out, &mut put, pixels);
    out.push(b't');
    put(&mut out);
    out.push(b'b');
    bytes(&mut out, &mut put, b"labels");
    out.push(b']');
    put(&mut out);
    out.push(b'(');
    for &l in labels {
        out.extend_from_slice(&[b'K', l]);
    }
    out.push(b'e');
    bytes(&mut out, &mut put, b"batch_label");
    bytes(&mut out, &mut put, b"");
    out.extend_from_slice(b"u.");
    out
}

#[test]
fn python3_pickles_protocols_2_and_4() {
    let dir = tempfile::tempdir().unwrap();
    // Pixels covering every byte value, so the latin-1 round trip of protocol 2 is exercised.
    let pixels: Vec<u8> = (0..2 * IMAGE_BYTES).map(|i| (i * 31 % 256) as u8).collect();
    let labels = [9u8, 0];
    for (name, bytes) in [
        ("p2", py3_protocol2(&pixels, &labels)),
        ("p4", py3_protocol4(&pixels, &labels)),
    ] {
        let path = write_tmp(dir.path(), name, &bytes);
        let (p, l) = cifar::read_python_batch(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(l, labels, "{name}");
        assert!(p == pixels, "{name}: pixels differ");
    }
}

/// Pickles written by real CPython 3 + numpy (`tests/fixtures/make_cifar_py3_pickles.py`, kept
/// beside them, says how): pixel `j` of image `i` is `(i * 3072 + j) * 7 % 256`, labels
/// `[3, 8]`. Protocol 2 holds the official dict's form (bytes keys, one image); protocols 4 and
/// 5 a user's dict (str keys, labels a numpy int64 array, two images).
#[test]
fn real_python3_pickles() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let expected: Vec<u8> = (0..2 * IMAGE_BYTES).map(|k| (k * 7 % 256) as u8).collect();
    for (name, n) in [
        ("cifar_py3_p2.pickle", 1),
        ("cifar_py3_p4.pickle", 2),
        ("cifar_py3_p5.pickle", 2),
    ] {
        let path = fixtures.join(name);
        let (p, l) = cifar::read_python_batch(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l, &[3u8, 8][..n], "{name}");
        assert!(p == expected[..n * IMAGE_BYTES], "{name}: pixels differ");
    }
}

// ---------------------------------------------------------------------------------------------
// Archives: finding, unpacking, downloading
// ---------------------------------------------------------------------------------------------

/// A `.tar.gz` holding `entries` (path, contents) as regular files, plus `extra` raw headers.
fn tar_gz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`; write the name bytes directly to test hostile archives.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// The members of a binary layout made by [`write_binary_layout`], as archive entries.
fn binary_entries() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_binary_layout(dir.path());
    let mut out = vec![(
        format!("{BINARY_FOLDER}/batches.meta.txt"),
        CIFAR10_CLASSES.join("\n").into_bytes(),
    )];
    for m in CIFAR10_BINARY.members {
        out.push((
            format!("{BINARY_FOLDER}/{m}"),
            fs::read(folder.join(m)).unwrap(),
        ));
    }
    out
}

fn archive_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.clone()))
        .collect();
    tar_gz(&refs)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn offline_at(data_dir: &Path) -> Locator {
    Locator {
        data_dir: Some(data_dir.to_path_buf()),
        offline: true,
        ..Locator::default()
    }
}

#[test]
fn official_archive_constants() {
    let bin = &CIFAR10_BINARY.files;
    assert_eq!(bin.name, "cifar-10");
    assert_eq!(bin.mirrors, ["https://www.cs.toronto.edu/~kriz/"]);
    assert_eq!(bin.files[0].name, "cifar-10-binary.tar.gz");
    assert_eq!(
        bin.files[0].sha256,
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    );
    assert_eq!(CIFAR10_BINARY.folder, "cifar-10-batches-bin");
    let py = &CIFAR10_PYTHON.files;
    assert_eq!(py.files[0].name, "cifar-10-python.tar.gz");
    assert_eq!(
        py.files[0].sha256,
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    );
    assert_eq!(CIFAR10_PYTHON.folder, "cifar-10-batches-py");
    assert_eq!(CIFAR10_PYTHON.members.len(), 6);
}

#[test]
fn archive_placed_by_hand_is_unpacked_once_and_loads() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(
        data.join("cifar-10-binary.tar.gz"),
        archive_of(&binary_entries()),
    )
    .unwrap();
    let loc = offline_at(&data);

    let folder = loc.locate_archive(&CIFAR10_BINARY).unwrap();
    assert_eq!(folder, data.join(BINARY_FOLDER));
    let mut expected: Vec<String> = CIFAR10_BINARY
        .members
        .iter()
        .map(|m| m.to_string())
        .collect();
    expected.push("batches.meta.txt".into());
    expected.sort();
    assert_eq!(names_in(&folder), expected);
    // No temporary folder left; the archive kept beside its folder.
    assert_eq!(
        names_in(&data),
        vec![
            BINARY_FOLDER.to_string(),
            "cifar-10-binary.tar.gz".to_string()
        ]
    );

    // Second time: the folder is found (the archive could even be gone).
    fs::remove_file(data.join("cifar-10-binary.tar.gz")).unwrap();
    assert_eq!(loc.locate_archive(&CIFAR10_BINARY).unwrap(), folder);

    // And the whole path through the format enum.
    let test = Cifar10Format::Binary.load(&loc, Split::Test).unwrap();
    assert_eq!(test.labels(), &labels_for(1000, TEST_SIZE)[..]);
    let train = Cifar10Format::Binary.load(&loc, Split::Train).unwrap();
    assert_eq!(train.len(), train_total());

    // --data-dir pointing at the batches folder itself works too.
    assert_eq!(
        offline_at(&folder).locate_archive(&CIFAR10_BINARY).unwrap(),
        folder
    );
}

#[test]
fn archive_unpack_skips_hostile_entries_and_checks_members() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("deep").join("data");
    fs::create_dir_all(&data).unwrap();
    let mut entries = binary_entries();
    entries.push(("../escape.txt".into(), b"x".to_vec()));
    entries.push((format!("{BINARY_FOLDER}/../../escape2.txt"), b"x".to_vec()));
    entries.push(("/tmp/kiln-absolute-escape.txt".into(), b"x".to_vec()));
    entries.push((format!("{BINARY_FOLDER}/sub/deeper.bin"), b"x".to_vec()));
    entries.push(("other-folder/file".into(), b"x".to_vec()));
    let archive = data.join("cifar-10-binary.tar.gz");
    fs::write(&archive, archive_of(&entries)).unwrap();

    let folder = CIFAR10_BINARY.unpack(&archive, &data).unwrap();
    assert!(CIFAR10_BINARY.is_unpacked(&folder));
    assert!(!folder.join("sub").exists());
    assert!(!root.path().join("deep").join("escape.txt").exists());
    assert!(!root.path().join("deep").join("escape2.txt").exists());
    assert!(!Path::new("/tmp/kiln-absolute-escape.txt").exists());
    assert_eq!(
        names_in(&data),
        vec![
            BINARY_FOLDER.to_string(),
            "cifar-10-binary.tar.gz".to_string()
        ]
    );

    // An archive without test_batch.bin: an error naming the archive and the missing member,
    // and nothing left behind.
    let other = root.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let partial: Vec<(String, Vec<u8>)> = binary_entries()
        .into_iter()
        .filter(|(p, _)| !p.ends_with("test_batch.bin"))
        .collect();
    let archive = other.join("cifar-10-binary.tar.gz");
    fs::write(&archive, archive_of(&partial)).unwrap();
    let err = offline_at(&other)
        .locate_archive(&CIFAR10_BINARY)
        .unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(has_path(&err, &archive), "{m}");
    assert!(
        m.contains("lacks cifar-10-batches-bin/test_batch.bin"),
        "{m}"
    );
    assert_eq!(names_in(&other), vec!["cifar-10-binary.tar.gz".to_string()]);

    // A member that is a symbolic or a hard link (here to a file outside the cache) is never
    // unpacked: the archive lacks that member, and no link is made.
    for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
        let linked = root.path().join(format!("linked-{kind:?}"));
        fs::create_dir_all(&linked).unwrap();
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, data) in &partial {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_path(path).unwrap();
            header.set_cksum();
            builder.append(&header, &data[..]).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(0o777);
        header
            .set_path(format!("{BINARY_FOLDER}/test_batch.bin"))
            .unwrap();
        header.set_link_name("/etc/passwd").unwrap();
        header.set_cksum();
        builder.append(&header, &[][..]).unwrap();
        let archive = linked.join("cifar-10-binary.tar.gz");
        fs::write(&archive, builder.into_inner().unwrap().finish().unwrap()).unwrap();
        let err = offline_at(&linked)
            .locate_archive(&CIFAR10_BINARY)
            .unwrap_err();
        assert!(
            msg(&err).contains("lacks cifar-10-batches-bin/test_batch.bin"),
            "{err}"
        );
        assert!(fs::symlink_metadata(linked.join(BINARY_FOLDER).join("test_batch.bin")).is_err());
    }

    // A truncated archive: an error naming it, nothing left behind.
    let bytes = fs::read(data.join("cifar-10-binary.tar.gz")).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let err = CIFAR10_BINARY.unpack(&archive, &other).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(has_path(&err, &archive), "{err}");
    assert_eq!(names_in(&other), vec!["cifar-10-binary.tar.gz".to_string()]);

    // An incomplete folder already there is reported, never deleted.
    let stale = other.join(BINARY_FOLDER);
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("data_batch_1.bin"), b"mine").unwrap();
    let err = CIFAR10_BINARY.unpack(&archive, &other).unwrap_err();
    let m = msg(&err);
    assert!(
        m.contains("incomplete") && m.contains("missing data_batch_2.bin"),
        "{m}"
    );
    assert_eq!(fs::read(stale.join("data_batch_1.bin")).unwrap(), b"mine");
}

#[test]
fn archive_not_found_offline_says_what_to_place_where() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let err = offline_at(&data)
        .locate_archive(&CIFAR10_PYTHON)
        .unwrap_err();
    let DataError::NotFound { dataset, message } = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(dataset, "cifar-10");
    assert!(message.contains("offline mode"), "{message}");
    assert!(
        message.contains("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
        "{message}"
    );
    assert!(
        message.contains(&format!("place them in {}", data.display())),
        "{message}"
    );
    assert!(
        message.contains("its unpacked folder cifar-10-batches-py/ will do")
            && message.contains("data_batch_1, data_batch_2"),
        "{message}"
    );
}

/// Serves `body` at `path` to at most `max` HTTP/1.1 requests (404 otherwise) on 127.0.0.1.
fn serve(path: &'static str, body: Vec<u8>, max: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let asked = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let reply = if asked == path {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = stream.write_all(&reply);
        }
    });
    (base, handle)
}

#[test]
fn archive_is_downloaded_verified_and_unpacked() {
    let archive = archive_of(&binary_entries());
    let sha: String = Sha256::digest(&archive)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ds = ArchiveDataset {
        files: DatasetFiles {
            name: "cifar-10",
            mirrors: &[],
            files: Box::leak(
                vec![RemoteFile {
                    name: "cifar-10-binary.tar.gz",
                    sha256: Box::leak(sha.into_boxed_str()),
                }]
                .into_boxed_slice(),
            ),
            system_dirs: &[],
        },
        ..CIFAR10_BINARY
    };
    let (base, server) = serve("/kriz/cifar-10-binary.tar.gz", archive.clone(), 1);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let loc = Locator {
        cache_root: Some(cache.clone()),
        mirrors_override: Some(vec![format!("{base}/kriz/")]),
        ..Locator::default()
    };
    let folder = loc.locate_archive(&ds).unwrap();
    server.join().unwrap();
    let dest = cache.join("cifar-10");
    assert_eq!(folder, dest.join(BINARY_FOLDER));
    assert_eq!(
        fs::read(dest.join("cifar-10-binary.tar.gz")).unwrap(),
        archive
    );
    assert_eq!(
        names_in(&dest),
        vec![
            BINARY_FOLDER.to_string(),
            "cifar-10-binary.tar.gz".to_string()
        ]
    );
    let set = cifar::load_binary(&folder, Split::Train).unwrap();
    assert_eq!(set.labels(), &labels_for(0, train_total())[..]);
    // Found again without the server (it served its one request).
    assert_eq!(loc.locate_archive(&ds).unwrap(), folder);

    // The official checksum does not match these bytes: refused, nothing kept.
    let (base, server) = serve("/kriz/cifar-10-binary.tar.gz", archive, 1);
    let cache2 = root.path().join("cache2");
    let loc = Locator {
        cache_root: Some(cache2.clone()),
        mirrors_override: Some(vec![format!("{base}/kriz/")]),
        ..Locator::default()
    };
    let err = loc.locate_archive(&CIFAR10_BINARY).unwrap_err();
    server.join().unwrap();
    let m = msg(&err);
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert!(m.contains("checksum mismatch"), "{m}");
    assert!(names_in(&cache2.join("cifar-10")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Image folders
// ---------------------------------------------------------------------------------------------

fn rgb_image(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 16 + seed) as u8,
            (y * 16 + 2 * seed) as u8,
            (x * 3 + y * 5 + 7 * seed) as u8,
        ])
    })
}

/// Channel-first bytes of an RGB image.
fn planar(img: &image::RgbImage) -> Vec<u8> {
    (0..3)
        .flat_map(|c| img.pixels().map(move |p| p[c]))
        .collect()
}

#[test]
fn image_folder_png_and_jpeg() {
    let root = tempfile::tempdir().unwrap();
    let train = root.path().join("train");
    for c in ["dog", "cat", "bird"] {
        fs::create_dir_all(train.join(c)).unwrap();
    }
    // PNGs, named out of order; a JPEG of one flat colour; files that are not images.
    let pngs: HashMap<&str, image::RgbImage> = [
        ("cat/b.png", rgb_image(4, 3, 1)),
        ("cat/a.PNG", rgb_image(4, 3, 2)),
        ("dog/10.png", rgb_image(4, 3, 3)),
        ("dog/02.png", rgb_image(4, 3, 4)),
    ]
    .into_iter()
    .collect();
    for (name, img) in &pngs {
        img.save_with_format(train.join(name), image::ImageFormat::Png)
            .unwrap();
    }
    let flat = image::RgbImage::from_pixel(4, 3, image::Rgb([200, 100, 50]));
    flat.save_with_format(train.join("bird/x.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    fs::write(train.join("cat/notes.txt"), b"not an image").unwrap();
    fs::create_dir_all(train.join(".hidden")).unwrap();
    fs::create_dir_all(train.join("cat/nested")).unwrap();

    let set = load_image_folder(root.path(), "train", None).unwrap();
    assert_eq!(set.classes, vec!["bird", "cat", "dog"]);
    assert_eq!((set.channels, set.height, set.width), (3, 3, 4));
    assert_eq!(set.len(), 5);
    // Classes interleaved (the first file of each class, then the second, ...), the files of a
    // class in sorted (byte) order: "a.PNG" < "b.png", "02" < "10".
    assert_eq!(set.labels(), &[0, 1, 2, 1, 2]);
    assert_eq!(set.image(1), &planar(&pngs["cat/a.PNG"])[..]);
    assert_eq!(set.image(2), &planar(&pngs["dog/02.png"])[..]);
    assert_eq!(set.image(3), &planar(&pngs["cat/b.png"])[..]);
    assert_eq!(set.image(4), &planar(&pngs["dog/10.png"])[..]);
    // So the first N images, which the --limit options keep, cover every class.
    assert_eq!(set.clone().truncated(3).labels(), &[0, 1, 2]);
    // JPEG is lossy: a flat colour comes back within a few levels, in the right channels.
    for (c, want) in [200i32, 100, 50].into_iter().enumerate() {
        for &v in &set.image(0)[c * 12..(c + 1) * 12] {
            assert!(
                (i32::from(v) - want).abs() <= 4,
                "channel {c}: {v} vs {want}"
            );
        }
    }

    // Explicit classes: their order gives the labels; a folder not listed is skipped.
    let set = load_image_folder(root.path(), "train", Some(&["dog", "cat"])).unwrap();
    assert_eq!(set.classes, vec!["dog", "cat"]);
    assert_eq!(set.labels(), &[0, 1, 0, 1]);
    assert_eq!(set.image(0), &planar(&pngs["dog/02.png"])[..]);

    // A listed class without a folder.
    let err = load_image_folder(root.path(), "train", Some(&["dog", "cow"])).unwrap_err();
    let m = msg(&err);
    assert!(has_path(&err, &train.join("cow")), "{m}");
    assert!(
        m.contains("class folder not found") && m.contains("bird, cat, dog"),
        "{m}"
    );

    // A missing split folder.
    let err = load_image_folder(root.path(), "test", None).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(has_path(&err, &root.path().join("test")), "{err}");
}

#[test]
fn image_folder_grayscale_and_mixed() {
    let root = tempfile::tempdir().unwrap();
    let gray = |v: u8| image::GrayImage::from_fn(5, 2, |x, y| image::Luma([v + (x + 5 * y) as u8]));
    for (name, v) in [("a/1.png", 10u8), ("b/1.png", 100)] {
        let path = root.path().join("train").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        gray(v)
            .save_with_format(&path, image::ImageFormat::Png)
            .unwrap();
    }
    let set = load_image_folder(root.path(), "train", None).unwrap();
    assert_eq!((set.channels, set.height, set.width), (1, 2, 5));
    assert_eq!(set.image(1), gray(100).as_raw().as_slice());

    // One colour image among grayscale ones: every image becomes RGB.
    let colour = rgb_image(5, 2, 9);
    colour
        .save_with_format(root.path().join("train/b/2.png"), image::ImageFormat::Png)
        .unwrap();
    let set = load_image_folder(root.path(), "train", None).unwrap();
    assert_eq!(set.channels, 3);
    let g = gray(10);
    let expected: Vec<u8> = [g.as_raw().as_slice(); 3].concat();
    assert_eq!(set.image(0), &expected[..]);
    assert_eq!(set.image(2), &planar(&colour)[..]);
}

#[test]
fn image_folder_size_mismatch_and_corrupt_file_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("train/cls");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..6 {
        rgb_image(8, 8, i)
            .save_with_format(dir.join(format!("{i}.png")), image::ImageFormat::Png)
            .unwrap();
    }
    rgb_image(8, 7, 0)
        .save_with_format(dir.join("4b.png"), image::ImageFormat::Png)
        .unwrap();
    let err = load_image_folder(root.path(), "train", None).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(has_path(&err, &dir.join("4b.png")), "{m}");
    assert!(
        m.contains("image is 8x7 pixels, expected 8x8") && m.contains("0.png"),
        "{m}"
    );

    // A corrupt file (two of them: the first in name order is reported).
    fs::remove_file(dir.join("4b.png")).unwrap();
    fs::write(dir.join("3x.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    fs::write(dir.join("5x.jpg"), b"not a jpeg").unwrap();
    let err = load_image_folder(root.path(), "train", None).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(has_path(&err, &dir.join("3x.png")), "{m}");
    assert!(m.contains("cannot decode the image"), "{m}");

    // A class folder without images, beside one with them.
    let empty = root.path().join("empty/test/a");
    fs::create_dir_all(&empty).unwrap();
    fs::create_dir_all(root.path().join("empty/test/b")).unwrap();
    rgb_image(8, 8, 0)
        .save_with_format(
            root.path().join("empty/test/b/0.png"),
            image::ImageFormat::Png,
        )
        .unwrap();
    let err = load_image_folder(&root.path().join("empty"), "test", None).unwrap_err();
    assert!(has_path(&err, &empty), "{err}");
    assert!(
        msg(&err).contains("class folder 'a' holds no images"),
        "{err}"
    );
}

/// CRC-32 (PNG's), for hand-made chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 60-byte PNG whose header declares `width` x `height` grayscale pixels and holds none.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let body = [kind, data].concat();
        [
            &(data.len() as u32).to_be_bytes()[..],
            &body,
            &crc32(&body).to_be_bytes(),
        ]
        .concat()
    };
    let ihdr = [
        &width.to_be_bytes()[..],
        &height.to_be_bytes(),
        &[8, 0, 0, 0, 0],
    ]
    .concat();
    [
        &b"\x89PNG\r\n\x1a\n"[..],
        &chunk(b"IHDR", &ihdr),
        &chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
        &chunk(b"IEND", &[]),
    ]
    .concat()
}

#[test]
fn image_folder_refuses_bombs_empty_files_and_broken_links_naming_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("train/cls");
    fs::create_dir_all(&dir).unwrap();
    rgb_image(8, 8, 0)
        .save_with_format(dir.join("0.png"), image::ImageFormat::Png)
        .unwrap();

    // A decompression bomb: 60000x60000 declared in 60 bytes, refused from its header.
    fs::write(dir.join("1.png"), png_declaring(60_000, 60_000)).unwrap();
    let err = load_image_folder(root.path(), "train", None).unwrap_err();
    assert!(has_path(&err, &dir.join("1.png")), "{err}");
    assert!(
        msg(&err).contains("declares 60000x60000 pixels")
            && msg(&err).contains("refused before decoding"),
        "{err}"
    );
    let err = kiln_data::folder::read_image(&dir.join("1.png"), [1, 8, 8]).unwrap_err();
    assert!(msg(&err).contains("declares 60000x60000 pixels"), "{err}");
    fs::remove_file(dir.join("1.png")).unwrap();

    // A zero-byte image.
    fs::write(dir.join("2.jpg"), b"").unwrap();
    let err = load_image_folder(root.path(), "train", None).unwrap_err();
    assert!(has_path(&err, &dir.join("2.jpg")), "{err}");
    assert!(msg(&err).contains("empty file (0 bytes)"), "{err}");
    fs::remove_file(dir.join("2.jpg")).unwrap();

    // Links that loop or point nowhere, as a class folder and as an image.
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let train = root.path().join("train");
        symlink(train.join("loop"), train.join("loop")).unwrap();
        let err = load_image_folder(root.path(), "train", None).unwrap_err();
        assert!(has_path(&err, &train.join("loop")), "{err}");
        assert!(
            msg(&err).contains("symbolic link that cannot be followed"),
            "{err}"
        );
        fs::remove_file(train.join("loop")).unwrap();

        symlink(dir.join("gone.png"), dir.join("3.png")).unwrap();
        let err = load_image_folder(root.path(), "train", None).unwrap_err();
        assert!(has_path(&err, &dir.join("3.png")), "{err}");
        assert!(
            msg(&err).contains("symbolic link that cannot be followed"),
            "{err}"
        );
        fs::remove_file(dir.join("3.png")).unwrap();
    }
    assert_eq!(
        load_image_folder(root.path(), "train", None).unwrap().len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Real data
// ---------------------------------------------------------------------------------------------

/// `$KILN_CIFAR10_JPEG`, else `../shared/datasets/cifar10-jpeg.tar.gz` beside the repository.
fn cifar10_jpeg_archive() -> PathBuf {
    match std::env::var_os("KILN_CIFAR10_JPEG").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/datasets/cifar10-jpeg.tar.gz"),
    }
}

/// The first 50 test images of each class of the real CIFAR-10 (JPEG re-encoded), loaded as an
/// image folder, then written in both official layouts and read back identically.
#[test]
fn real_cifar10_jpeg_subset() {
    let archive = cifar10_jpeg_archive();
    assert!(
        archive.is_file(),
        "the real CIFAR-10 images are missing: expected {} (set KILN_CIFAR10_JPEG to the path of \
         cifar10-jpeg.tar.gz, which holds train|test/<class>/NNNN.jpg)",
        archive.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = fs::File::open(&archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut taken = 0;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let [.., split, class, name] = &parts[..] else {
            continue;
        };
        let keep = split == "test"
            && name.ends_with(".jpg")
            && name
                .trim_end_matches(".jpg")
                .parse::<u32>()
                .is_ok_and(|n| n < 50);
        if keep {
            let dir = tmp.path().join("test").join(class);
            fs::create_dir_all(&dir).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            fs::write(dir.join(name), bytes).unwrap();
            taken += 1;
            if taken == 500 {
                break;
            }
        }
    }
    assert_eq!(taken, 500, "expected 50 test images of each of 10 classes");

    let set = load_image_folder(tmp.path(), "test", None).unwrap();
    assert_eq!(set.classes, CIFAR10_CLASSES);
    assert_eq!((set.channels, set.height, set.width), (3, 32, 32));
    assert_eq!(set.len(), 500);
    // Classes interleaved: one image of each class in turn.
    for (i, &l) in set.labels().iter().enumerate() {
        assert_eq!(usize::from(l), i % 10);
    }
    // Per-channel means of CIFAR-10's test set are about 125, 123 and 115 (0.494, 0.485,
    // 0.450 of 255); 500 images land within a few levels, red above blue.
    let mut sum = [0f64; 3];
    for i in 0..set.len() {
        for (c, plane) in set.image(i).chunks_exact(1024).enumerate() {
            sum[c] += plane.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / (500.0 * 1024.0)).collect();
    for m in &mean {
        assert!((105.0..145.0).contains(m), "channel means {mean:?}");
    }
    assert!(mean[0] > mean[2] + 3.0, "channel means {mean:?}");
    // Not all one colour: the images differ.
    assert_ne!(set.image(0), set.image(1));

    // The same images through the official layouts: identical after the round trip.
    let mut pixels = Vec::new();
    for i in 0..set.len() {
        pixels.extend_from_slice(set.image(i));
    }
    let bin_dir = tmp.path().join(BINARY_FOLDER);
    fs::create_dir_all(&bin_dir).unwrap();
    cifar::write_binary_batch(&bin_dir.join("test_batch.bin"), &pixels, set.labels()).unwrap();
    assert_sets_equal(&cifar::load_binary(tmp.path(), Split::Test).unwrap(), &set);
    let py_dir = tmp.path().join(PYTHON_FOLDER);
    fs::create_dir_all(&py_dir).unwrap();
    fs::write(py_dir.join("test_batch"), py2_batch(&pixels, set.labels())).unwrap();
    assert_sets_equal(&cifar::load_python(tmp.path(), Split::Test).unwrap(), &set);
}
