//! IDX reading and writing: round trips in both encodings, and one specific error per kind of
//! damage, each naming the file and the numbers involved.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_data::idx::{self, IdxImages};
use kiln_data::DataError;

const ROWS: usize = 5;
const COLS: usize = 4;
const COUNT: usize = 7;

/// 7 images of 5x4 whose pixels are all distinct (0..140), so any misplaced byte shows.
fn pixels() -> Vec<u8> {
    (0..COUNT * ROWS * COLS).map(|i| i as u8).collect()
}

fn labels() -> Vec<u8> {
    vec![3, 1, 4, 1, 5, 9, 2]
}

fn write_fixture(dir: &Path, gzip: bool) -> (PathBuf, PathBuf) {
    let suffix = if gzip { ".gz" } else { "" };
    let images = dir.join(format!("images-idx3-ubyte{suffix}"));
    let labels_path = dir.join(format!("labels-idx1-ubyte{suffix}"));
    idx::write_images(&images, ROWS, COLS, &pixels(), gzip).unwrap();
    idx::write_labels(&labels_path, &labels(), gzip).unwrap();
    (images, labels_path)
}

/// `err` is [`DataError::Truncated`] with these sizes.
fn assert_truncated(err: &DataError, expected: u64, found: u64) {
    assert!(
        matches!(
            err,
            DataError::Truncated { expected_bytes, found_bytes, .. }
                if (*expected_bytes, *found_bytes) == (expected, found)
        ),
        "expected Truncated ({expected} bytes expected, {found} found), got {err:?}"
    );
}

fn msg(e: &DataError) -> String {
    e.to_string()
}

#[test]
fn round_trip_plain_and_gzip() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (images_path, labels_path) = write_fixture(dir.path(), gzip);

        let head = fs::read(&images_path).unwrap();
        assert_eq!(head.starts_with(&[0x1f, 0x8b]), gzip, "gzip={gzip}");

        let images = idx::read_images(&images_path).unwrap();
        assert_eq!(
            images,
            IdxImages {
                rows: ROWS,
                cols: COLS,
                pixels: pixels()
            }
        );
        assert_eq!(images.len(), COUNT);
        assert!(!images.is_empty());
        assert_eq!(images.image_size(), ROWS * COLS);
        let third: Vec<u8> = (2 * 20..3 * 20).map(|i| i as u8).collect();
        assert_eq!(images.image(2), &third[..]);
        assert_eq!(idx::read_labels(&labels_path, 10).unwrap(), labels());

        let (imgs, labs) = idx::read_pair(&images_path, &labels_path, 10).unwrap();
        assert_eq!(imgs.pixels, pixels());
        assert_eq!(labs, labels());
    }
}

#[test]
fn plain_file_has_the_exact_idx_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, labels_path) = write_fixture(dir.path(), false);
    let bytes = fs::read(&images_path).unwrap();
    assert_eq!(
        &bytes[..16],
        &[0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 4]
    );
    assert_eq!(&bytes[16..], &pixels()[..]);
    let bytes = fs::read(&labels_path).unwrap();
    assert_eq!(&bytes[..8], &[0, 0, 8, 1, 0, 0, 0, 7]);
    assert_eq!(&bytes[8..], &labels()[..]);
}

#[test]
fn compression_is_detected_from_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // A gzip file without .gz, and a plain file named .gz.
    let gz_no_ext = dir.path().join("images");
    let plain_gz_ext = dir.path().join("images.gz");
    idx::write_images(&gz_no_ext, ROWS, COLS, &pixels(), true).unwrap();
    idx::write_images(&plain_gz_ext, ROWS, COLS, &pixels(), false).unwrap();
    assert_eq!(idx::read_images(&gz_no_ext).unwrap().pixels, pixels());
    assert_eq!(idx::read_images(&plain_gz_ext).unwrap().pixels, pixels());
}

#[test]
fn labels_file_given_as_images_is_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    for gzip in [false, true] {
        let (_images, labels_path) = write_fixture(dir.path(), gzip);
        let err = idx::read_images(&labels_path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 0x803,
                    found: 0x801,
                    ..
                }
            ),
            "{err:?}"
        );
        let m = msg(&err);
        assert!(m.contains(&labels_path.display().to_string()), "{m}");
        assert!(m.contains("expected magic number 0x00000803"), "{m}");
        assert!(m.contains("found 0x00000801"), "{m}");
        assert!(m.contains("label file"), "{m}");
    }
    // And the other way round.
    let (images_path, _) = write_fixture(dir.path(), false);
    let err = idx::read_labels(&images_path, 10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                expected: 0x801,
                found: 0x803,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn cut_plain_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, labels_path) = write_fixture(dir.path(), false);
    // Header (16) + 140 pixels = 156 bytes; keep 100.
    let bytes = fs::read(&images_path).unwrap();
    assert_eq!(bytes.len(), 156);
    fs::write(&images_path, &bytes[..100]).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert_truncated(&err, 156, 100);
    let m = msg(&err);
    assert!(m.contains(&images_path.display().to_string()), "{m}");
    assert!(m.contains("156") && m.contains("100"), "{m}");

    // A header cut short: 10 of the 16 header bytes.
    fs::write(&images_path, &bytes[..10]).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert_truncated(&err, 16, 10);

    // Labels: header 8 + 7 labels = 15 bytes; keep 12.
    let bytes = fs::read(&labels_path).unwrap();
    fs::write(&labels_path, &bytes[..12]).unwrap();
    let err = idx::read_labels(&labels_path, 10).unwrap_err();
    assert_truncated(&err, 15, 12);
}

#[test]
fn cut_gzip_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, _) = write_fixture(dir.path(), true);
    let bytes = fs::read(&images_path).unwrap();
    // Every possible cut (past the 2 magic bytes) must give an error, never a panic or a
    // silently short result.
    for cut in 2..bytes.len() {
        fs::write(&images_path, &bytes[..cut]).unwrap();
        let err = idx::read_images(&images_path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated { .. } | DataError::Format { .. } | DataError::Io { .. }
            ),
            "cut at {cut}: {err:?}"
        );
        let m = msg(&err);
        assert!(m.contains(&images_path.display().to_string()), "{m}");
    }
    // Cut in the middle of the compressed data: reported as truncated, with the decompressed
    // sizes (156 promised).
    fs::write(&images_path, &bytes[..bytes.len() / 2]).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    match &err {
        DataError::Truncated {
            expected_bytes,
            found_bytes,
            ..
        } => {
            assert_eq!(*expected_bytes, 156);
            assert!(*found_bytes < 156, "{err}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(msg(&err).contains("156"), "{err}");
}

/// A file cut short and then gzipped whole: the stream is sound, so only the sizes show the
/// loss (the `idx` fuzzer's seed `gzip-short` reaches this; its mutations cannot, as any change
/// breaks the CRC).
#[test]
fn whole_gzip_stream_of_a_cut_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, _) = write_fixture(dir.path(), false);
    let cut = &fs::read(&plain).unwrap()[..100];
    let images_path = dir.path().join("cut-images-idx3-ubyte.gz");
    let mut gz = GzEncoder::new(
        fs::File::create(&images_path).unwrap(),
        Compression::default(),
    );
    gz.write_all(cut).unwrap();
    gz.finish().unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert_truncated(&err, 156, 100);
    assert!(
        msg(&err).contains(&images_path.display().to_string()),
        "{err}"
    );
}

#[test]
fn corrupt_gzip_stream_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, _) = write_fixture(dir.path(), true);
    let good = fs::read(&images_path).unwrap();
    let n = good.len();

    // A wrong CRC in the gzip trailer (the last 8 bytes: CRC32, then the size): every data byte
    // decompresses fine, and only the integrity check can tell.
    let mut bytes = good.clone();
    bytes[n - 8] ^= 0x01;
    fs::write(&images_path, &bytes).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(m.contains(&images_path.display().to_string()), "{m}");
    assert!(m.contains("corrupt gzip stream"), "{m}");

    // Scrambled compressed data (after the 10-byte gzip header): some error naming the file,
    // whichever check trips first.
    let mut bytes = good;
    for b in &mut bytes[12..n - 8] {
        *b ^= 0x5a;
    }
    fs::write(&images_path, &bytes).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Format { .. } | DataError::Truncated { .. } | DataError::BadMagic { .. }
        ),
        "{err:?}"
    );
    assert!(msg(&err).contains(&images_path.display().to_string()));
}

#[test]
fn trailing_bytes_are_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, _) = write_fixture(dir.path(), false);
    let mut bytes = fs::read(&images_path).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&images_path, &bytes).unwrap();
    let err = idx::read_images(&images_path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let m = msg(&err);
    assert!(
        m.contains("trailing") && m.contains("156") && m.contains("159"),
        "{m}"
    );

    // The same inside a gzip stream.
    let gz_path = dir.path().join("trailing.gz");
    let mut enc = GzEncoder::new(fs::File::create(&gz_path).unwrap(), Compression::default());
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap();
    let err = idx::read_images(&gz_path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(msg(&err).contains("trailing"), "{err}");
}

#[test]
fn zero_image_dimension_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero");
    fs::write(&path, [0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 4]).unwrap();
    let err = idx::read_images(&path).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    assert!(msg(&err).contains("0x4"), "{err}");
}

#[test]
fn absurd_header_fails_without_allocating() {
    // 4 billion images of 65536x65536 pixels: must be refused, not attempted.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge");
    let mut bytes = vec![0, 0, 8, 3];
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&65536u32.to_be_bytes());
    bytes.extend_from_slice(&65536u32.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = idx::read_images(&path).unwrap_err();
    assert!(
        matches!(err, DataError::Format { .. } | DataError::Truncated { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_file_is_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope-idx3-ubyte.gz");
    let err = idx::read_images(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(msg(&err).contains(&path.display().to_string()));
}

#[test]
fn count_mismatch_between_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (images_path, _) = write_fixture(dir.path(), true);
    let labels_path = dir.path().join("six-labels.gz");
    idx::write_labels(&labels_path, &labels()[..6], true).unwrap();
    let err = idx::read_pair(&images_path, &labels_path, 10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 7,
                labels: 6,
                ..
            }
        ),
        "{err:?}"
    );
    let m = msg(&err);
    assert!(m.contains(&images_path.display().to_string()), "{m}");
    assert!(m.contains(&labels_path.display().to_string()), "{m}");
    assert!(m.contains("7 images") && m.contains("6 labels"), "{m}");
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels");
    idx::write_labels(&path, &[0, 9, 3, 10, 2], false).unwrap();
    let err = idx::read_labels(&path, 10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 3,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let m = msg(&err);
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains("label 10 at index 3") && m.contains("below 10"),
        "{m}"
    );
    // With 11 classes the same file is fine.
    assert_eq!(idx::read_labels(&path, 11).unwrap(), vec![0, 9, 3, 10, 2]);
}

#[test]
fn writer_rejects_partial_images() {
    let dir = tempfile::tempdir().unwrap();
    let err = idx::write_images(&dir.path().join("x"), 5, 4, &[0; 21], false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// The real files Debian's `dataset-fashion-mnist` installs (re-gzipped, so not the published
/// bytes) read with the published shapes. Skipped where the package is not installed.
#[test]
fn reads_debian_fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let images = dir.join("t10k-images-idx3-ubyte.gz");
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    if !images.is_file() || !labels.is_file() {
        eprintln!("skipped: {} not installed", dir.display());
        return;
    }
    let (imgs, labs) = idx::read_pair(&images, &labels, 10).unwrap();
    assert_eq!((imgs.len(), imgs.rows, imgs.cols), (10_000, 28, 28));
    // The test split is balanced: 1,000 of each class.
    let mut counts = [0usize; 10];
    for &l in &labs {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(counts, [1000; 10]);
}
