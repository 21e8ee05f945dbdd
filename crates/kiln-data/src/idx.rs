//! Reading (and, for test fixtures, writing) the IDX files of MNIST and Fashion-MNIST.
//!
//! The format: a big-endian `u32` magic number `0x000008NN` (`08` = unsigned bytes, `NN` = the
//! number of dimensions), one big-endian `u32` per dimension, then the data, row-major.
//! Images files are 3-dimensional (`count, rows, cols`, magic `0x00000803`), labels files
//! 1-dimensional (`count`, magic `0x00000801`).
//!
//! Files may be gzip-compressed (as downloaded) or plain (as unpacked by a user); compression is
//! detected from the gzip magic bytes `1f 8b`, never from the file name. Every structural
//! problem (wrong magic, short header or data, data after the declared end, a corrupt gzip
//! stream) is a [`DataError`] naming the file; nothing here panics on a bad file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::DataError;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Grayscale images read from an IDX3 file: `len()` images of `rows x cols` bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Height of each image in pixels.
    pub rows: usize,
    /// Width of each image in pixels.
    pub cols: usize,
    /// All pixels, row-major, image after image (`len() * rows * cols` bytes).
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        // rows and cols are never 0 for images read from a file (see `read_images`).
        self.pixels
            .len()
            .checked_div(self.image_size())
            .unwrap_or(0)
    }

    /// Whether the file held no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image (`rows * cols`).
    pub fn image_size(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, row-major. Panics if `i >= self.len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.image_size();
        &self.pixels[i * size..(i + 1) * size]
    }
}

/// Reads an IDX3 images file (magic `0x00000803`), gzip-compressed or plain.
///
/// Errors: [`DataError::BadMagic`] for another kind of file (e.g. a labels file),
/// [`DataError::Truncated`] when the header or the data is shorter than declared,
/// [`DataError::Format`] for a zero `rows`/`cols`, bytes after the declared data or a corrupt
/// gzip stream, [`DataError::Io`] for operating-system errors. A count of 0 images is accepted.
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_idx(path, IMAGES_MAGIC, |dims| {
        let [_count, rows, cols] = [dims[0], dims[1], dims[2]];
        if rows == 0 || cols == 0 {
            return Err(format!(
                "invalid IDX image header: expected non-zero image dimensions, found {rows}x{cols}"
            ));
        }
        Ok(())
    })?;
    Ok(IdxImages {
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX1 labels file (magic `0x00000801`), gzip-compressed or plain, and checks that
/// every label is below `num_classes` ([`DataError::LabelOutOfRange`] names the first that is
/// not). Other errors as for [`read_images`].
pub fn read_labels(path: &Path, num_classes: usize) -> Result<Vec<u8>, DataError> {
    let (_dims, labels) = read_idx(path, LABELS_MAGIC, |_| Ok(()))?;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| usize::from(label) >= num_classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            num_classes,
        });
    }
    Ok(labels)
}

/// Reads an images file and its labels file and checks that they hold the same number of
/// examples ([`DataError::CountMismatch`] otherwise).
pub fn read_pair(
    images: &Path,
    labels: &Path,
    num_classes: usize,
) -> Result<(IdxImages, Vec<u8>), DataError> {
    let imgs = read_images(images)?;
    let labs = read_labels(labels, num_classes)?;
    if imgs.len() != labs.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            labels_path: labels.to_path_buf(),
            images: imgs.len(),
            labels: labs.len(),
        });
    }
    Ok((imgs, labs))
}

/// Writes an IDX3 images file (`pixels.len() / (rows * cols)` images), gzip-compressed if
/// `gzip`. Meant for test fixtures: it writes exactly the real format, but not atomically.
pub fn write_images(
    path: &Path,
    rows: usize,
    cols: usize,
    pixels: &[u8],
    gzip: bool,
) -> io::Result<()> {
    let size = rows * cols;
    if size == 0 || !pixels.len().is_multiple_of(size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} pixels do not make whole {rows}x{cols} images",
                pixels.len()
            ),
        ));
    }
    let count = pixels.len() / size;
    write_idx(path, IMAGES_MAGIC, &[count, rows, cols], pixels, gzip)
}

/// Writes an IDX1 labels file, gzip-compressed if `gzip`. Meant for test fixtures (see
/// [`write_images`]).
pub fn write_labels(path: &Path, labels: &[u8], gzip: bool) -> io::Result<()> {
    write_idx(path, LABELS_MAGIC, &[labels.len()], labels, gzip)
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8], gzip: bool) -> io::Result<()> {
    let mut header = Vec::with_capacity(4 + 4 * dims.len());
    header.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "IDX dimension exceeds u32")
        })?;
        header.extend_from_slice(&d.to_be_bytes());
    }
    let file = BufWriter::new(File::create(path)?);
    if gzip {
        let mut enc = GzEncoder::new(file, Compression::default());
        enc.write_all(&header)?;
        enc.write_all(data)?;
        enc.finish()?.flush()
    } else {
        let mut file = file;
        file.write_all(&header)?;
        file.write_all(data)?;
        file.flush()
    }
}

/// An opened IDX file: a reader over its (decompressed) bytes.
struct Source {
    reader: Box<dyn Read>,
    gzip: bool,
    /// The file's size on disk, when that is also the size of its content (plain files).
    plain_len: Option<u64>,
}

fn open(path: &Path) -> Result<Source, DataError> {
    let io_err = |e| DataError::io(path, e);
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    if magic == GZIP_MAGIC {
        Ok(Source {
            // Multi-member aware: some tools write concatenated gzip members.
            reader: Box::new(MultiGzDecoder::new(BufReader::new(file))),
            gzip: true,
            plain_len: None,
        })
    } else {
        let len = file.metadata().map_err(io_err)?.len();
        Ok(Source {
            reader: Box::new(BufReader::new(file)),
            gzip: false,
            plain_len: Some(len),
        })
    }
}

/// Maps an error met while reading after `found` (decompressed) bytes of a file that should
/// have `expected` bytes.
fn read_error(path: &Path, src: &Source, e: io::Error, expected: u64, found: u64) -> DataError {
    match e.kind() {
        // A gzip stream cut short ends with UnexpectedEof from flate2.
        io::ErrorKind::UnexpectedEof => DataError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: expected,
            found_bytes: found,
        },
        // flate2 reports corrupt deflate data and CRC/size mismatches as InvalidInput/InvalidData.
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData if src.gzip => DataError::format(
            path,
            format!("corrupt gzip stream after {found} decompressed bytes: {e}"),
        ),
        _ => DataError::io(path, e),
    }
}

/// Reads up to `n` bytes; fewer only at the end of the stream.
fn read_up_to(
    path: &Path,
    src: &mut Source,
    n: u64,
    buf: &mut Vec<u8>,
    expected_total: u64,
    already: u64,
) -> Result<(), DataError> {
    let res = (&mut src.reader).take(n).read_to_end(buf);
    // On error, `buf` still holds what was read before it.
    res.map(|_| ())
        .map_err(|e| read_error(path, src, e, expected_total, already + buf.len() as u64))
}

/// Reads a whole IDX file of unsigned bytes with `magic` and returns its dimensions and data.
/// `check_dims` may reject a header (its message becomes a [`DataError::Format`]).
fn read_idx(
    path: &Path,
    magic: u32,
    check_dims: impl FnOnce(&[usize]) -> Result<(), String>,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims as u64;
    let mut src = open(path)?;

    let mut header = Vec::with_capacity(header_len as usize);
    read_up_to(path, &mut src, header_len, &mut header, header_len, 0)?;
    // Check the magic before the length, so that a short file of the wrong kind reports the
    // more useful error.
    if header.len() >= 4 {
        let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if found != magic {
            return Err(DataError::BadMagic {
                path: path.to_path_buf(),
                expected: magic,
                expected_kind: magic_kind(magic),
                found,
                found_kind: found_hint(found),
            });
        }
    }
    if (header.len() as u64) < header_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: header_len,
            found_bytes: header.len() as u64,
        });
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    check_dims(&dims).map_err(|m| DataError::format(path, m))?;

    let data_len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n.checked_add(header_len).is_some() && usize::try_from(n).is_ok())
        .ok_or_else(|| {
            DataError::format(
                path,
                format!("IDX header declares dimensions {dims:?}, too large to load"),
            )
        })?;
    let expected_total = header_len + data_len;

    // Plain files: compare sizes before reading, so a bogus header cannot make us allocate
    // gigabytes and a truncated file fails fast.
    if let Some(len) = src.plain_len {
        if len < expected_total {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                expected_bytes: expected_total,
                found_bytes: len,
            });
        }
        if len > expected_total {
            return Err(trailing_error(path, expected_total, Some(len)));
        }
    }

    // For gzip the real size is unknown until read: cap the initial allocation and let the
    // vector grow with the data actually there.
    let mut data = Vec::with_capacity(data_len.min(64 << 20) as usize);
    read_up_to(
        path,
        &mut src,
        data_len,
        &mut data,
        expected_total,
        header_len,
    )?;
    let found_total = header_len + data.len() as u64;
    if found_total < expected_total {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: expected_total,
            found_bytes: found_total,
        });
    }

    // Reading on to the end also makes flate2 verify the gzip CRC and length trailer.
    let mut extra = [0u8; 1];
    loop {
        match src.reader.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Err(trailing_error(path, expected_total, None)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && src.gzip => {
                return Err(DataError::format(
                    path,
                    format!(
                        "gzip stream ends without its trailer (cut off after all {expected_total} \
                         data bytes): {e}"
                    ),
                ));
            }
            Err(e) => return Err(read_error(path, &src, e, expected_total, found_total)),
        }
    }
    Ok((dims, data))
}

fn trailing_error(path: &Path, expected_total: u64, found: Option<u64>) -> DataError {
    let found = match found {
        Some(n) => format!("{n} bytes"),
        None => "more (decompressed) bytes".to_string(),
    };
    DataError::format(
        path,
        format!(
            "trailing data: the IDX header declares {expected_total} bytes in all, the file has \
             {found}"
        ),
    )
}

/// The file kind a magic number stands for, for [`DataError::BadMagic`].
fn magic_kind(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "an IDX image",
        LABELS_MAGIC => "an IDX label",
        _ => "the expected kind of",
    }
}

/// A hint naming what the found magic number is, when it is a known one: the usual mistake is
/// swapping an images file and a labels file.
fn found_hint(found: u32) -> &'static str {
    match found {
        IMAGES_MAGIC => " (an IDX image file)",
        LABELS_MAGIC => " (an IDX label file)",
        // The gzip magic bytes: only seen if something reads a gzip file without inflating it.
        f if f >> 16 == 0x1f8b => " (a gzip stream)",
        _ => "",
    }
}
