//! Image folders: `root/<split>/<class>/<image>`, one subfolder of PNG or JPEG files per class
//! (the layout of torchvision's `ImageFolder`, and of many data set dumps).
//!
//! Loading is deterministic: classes are the subfolders in sorted order (or the list given), and
//! the files of a class are taken in the sorted order of their names. The set interleaves the
//! classes (the first file of each class, then the second of each, ...), so that the first N
//! images, which `--limit-train`, `--limit-test` and `percent` keep, cover every class as a
//! shuffled binary file would; read class by class, the first 1,000 CIFAR-10 test images
//! would all be aeroplanes. Images are decoded in
//! parallel, one contiguous run of files per thread, so a 60,000-image set of small JPEGs loads
//! in seconds.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet};

/// File extensions read (compared without regard to case); other files are skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads `root/<split_dir>/<class>/*.{png,jpg,jpeg}` as one set.
///
/// - Classes: `classes` in the order given (each must be a subfolder; other subfolders are
///   skipped with a warning), else every subfolder not starting with `.` in sorted order. A
///   label is the index of its class in that list.
/// - Files: those with an [`IMAGE_EXTENSIONS`] extension directly in a class folder, in sorted
///   order of their names within a class, classes interleaved (the i-th file of every class
///   before the (i+1)-th of any); the format is detected from the content, not the name.
/// - Pixels: every image must have the size of the first one. Grayscale images (with or
///   without alpha) give 1 channel when all images are grayscale; otherwise every image is
///   RGB (3 channels, grayscale values repeated). Alpha is dropped; 16-bit images are scaled
///   to 8 bits. The set is channel-first, like every [`ImageSet`].
///
/// Errors name the file or folder: [`DataError::Io`] for a missing or unreadable folder or
/// file, [`DataError::Format`] for an image that cannot be decoded, an image whose size
/// differs from the first one's (both sizes and the first file are named), no class folders,
/// a class folder without images, more than 256 classes, a zero-byte file, an image declaring
/// more than [`MAX_IMAGE_PIXELS`] (refused from its header, before decoding) and a symbolic
/// link that loops or points nowhere.
pub fn load_image_folder(
    root: &Path,
    split_dir: &str,
    classes: Option<&[&str]>,
) -> Result<ImageSet, DataError> {
    load_image_folder_sized(root, split_dir, classes, None)
}

/// [`load_image_folder`], with every image resized (bilinear, as
/// [`crate::transform::resize_bilinear`]) to `size` = `[height, width]` where given, so that
/// images of any size make one set.
pub fn load_image_folder_sized(
    root: &Path,
    split_dir: &str,
    classes: Option<&[&str]>,
    size: Option<[usize; 2]>,
) -> Result<ImageSet, DataError> {
    let split_path = root.join(split_dir);
    let class_names = class_names(&split_path, classes)?;
    if class_names.len() > 256 {
        return Err(DataError::format(
            &split_path,
            format!(
                "{} classes: labels are bytes, so at most 256 classes are supported",
                class_names.len()
            ),
        ));
    }

    let mut per_class = Vec::with_capacity(class_names.len());
    for class in &class_names {
        let dir = split_path.join(class);
        let images = image_files(&dir)?;
        if images.is_empty() {
            // A class the model would learn nothing of, and whose label would still exist.
            return Err(DataError::format(
                &dir,
                format!(
                    "class folder '{class}' holds no images: expected .png, .jpg or .jpeg files \
                     (remove the folder if the class is not wanted)"
                ),
            ));
        }
        per_class.push(images.into_iter());
    }
    let mut files: Vec<(PathBuf, u8)> = Vec::new();
    loop {
        let before = files.len();
        for (label, images) in per_class.iter_mut().enumerate() {
            // `label` < 256: checked above.
            files.extend(images.next().map(|p| (p, label as u8)));
        }
        if files.len() == before {
            break;
        }
    }
    let mut decoded = decode_all(&files)?;
    if let Some([height, width]) = size {
        for d in &mut decoded {
            d.resize(height, width);
        }
    }

    let (width, height) = (decoded[0].width, decoded[0].height);
    for (d, (path, _)) in decoded.iter().zip(&files) {
        if (d.width, d.height) != (width, height) {
            return Err(DataError::format(
                path,
                format!(
                    "image is {}x{} pixels, expected {width}x{height} like {} (all images of a \
                     set must have one size)",
                    d.width,
                    d.height,
                    files[0].0.display()
                ),
            ));
        }
    }
    let gray = decoded.iter().all(|d| d.channels == 1);
    let channels = if gray { 1 } else { 3 };
    let plane = width as usize * height as usize;
    let mut pixels = Vec::with_capacity(decoded.len() * channels * plane);
    for d in &decoded {
        if d.channels == channels {
            pixels.extend_from_slice(&d.pixels);
        } else {
            // A grayscale image among colour ones: the same plane for R, G and B.
            for _ in 0..3 {
                pixels.extend_from_slice(&d.pixels);
            }
        }
    }
    let labels = files.iter().map(|&(_, l)| l).collect();
    tracing::debug!(
        folder = %split_path.display(),
        images = decoded.len(),
        classes = class_names.len(),
        channels,
        width,
        height,
        "loaded image folder"
    );
    Ok(ImageSet::new(
        channels,
        height as usize,
        width as usize,
        pixels,
        labels,
        class_names,
    ))
}

/// The class list: the given one (checked), or the sorted visible subfolders.
fn class_names(split_path: &Path, classes: Option<&[&str]>) -> Result<Vec<String>, DataError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(split_path).map_err(|e| DataError::io(split_path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(split_path, e))?;
        let path = entry.path();
        // Follows symbolic links, as a user linking class folders in would expect; a link that
        // loops or points nowhere is an error, not a class that silently vanishes.
        if !followed(&path)?.is_dir() {
            continue;
        }
        let name = entry.file_name().into_string().map_err(|name| {
            DataError::format(
                &path,
                format!("folder name {name:?} is not UTF-8: expected class names as text"),
            )
        })?;
        if !name.starts_with('.') {
            found.push(name);
        }
    }
    found.sort();

    let Some(classes) = classes else {
        if found.is_empty() {
            return Err(DataError::format(
                split_path,
                "no class folders: expected one subfolder of images per class",
            ));
        }
        return Ok(found);
    };
    if classes.is_empty() {
        return Err(DataError::format(
            split_path,
            "an empty class list was given: expected at least one class",
        ));
    }
    for (i, c) in classes.iter().enumerate() {
        if classes[..i].contains(c) {
            return Err(DataError::format(
                split_path,
                format!("class '{c}' is listed twice"),
            ));
        }
        if !found.iter().any(|f| f == c) {
            return Err(DataError::format(
                split_path.join(c),
                format!(
                    "class folder not found: expected a folder of images for class '{c}'; the \
                     folder has {}",
                    if found.is_empty() {
                        "no class folders".to_string()
                    } else {
                        found.join(", ")
                    }
                ),
            ));
        }
    }
    for extra in found.iter().filter(|f| !classes.contains(&f.as_str())) {
        tracing::warn!(
            folder = %split_path.join(extra).display(),
            "skipped: not one of the classes given"
        );
    }
    Ok(classes.iter().map(|c| c.to_string()).collect())
}

/// The metadata of what `path` leads to, links followed; a broken or looping link is an error
/// naming it.
fn followed(path: &Path) -> Result<fs::Metadata, DataError> {
    fs::metadata(path).map_err(|e| {
        let link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            DataError::format(
                path,
                format!(
                    "a symbolic link that cannot be followed (it loops or points nowhere): {e}"
                ),
            )
        } else {
            DataError::io(path, e)
        }
    })
}

/// The image files directly in `dir`, sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if is_image && followed(&path)?.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Reads one PNG or JPEG file as a `[channels, height, width]` image, channel-first: what a
/// model trained on such images takes. Colour is converted to fit (RGB to luma as
/// [`ImageSet::to_grayscale`] does, grayscale repeated into RGB); a different size is an error
/// naming both sizes, not silently resized.
pub fn read_image(path: &Path, shape: [usize; 3]) -> Result<Vec<u8>, DataError> {
    read_image_as(path, shape, false)
}

/// [`read_image`], but an image of another size is resized to the shape (bilinear, as
/// [`load_image_folder_sized`] does) rather than refused: for a model trained on images
/// resized as they loaded.
pub fn read_image_resized(path: &Path, shape: [usize; 3]) -> Result<Vec<u8>, DataError> {
    read_image_as(path, shape, true)
}

fn read_image_as(path: &Path, shape: [usize; 3], resize: bool) -> Result<Vec<u8>, DataError> {
    let [channels, height, width] = shape;
    let mut decoded = decode(path)?;
    if resize {
        decoded.resize(height, width);
    }
    if (decoded.height as usize, decoded.width as usize) != (height, width) {
        return Err(DataError::format(
            path,
            format!(
                "expected a {width}x{height} image (width x height), found {}x{}",
                decoded.width, decoded.height
            ),
        ));
    }
    Ok(match (decoded.channels, channels) {
        (3, 1) => {
            let one = vec![0];
            let set = ImageSet::new(3, height, width, decoded.pixels, one, vec![String::new()]);
            set.to_grayscale().image(0).to_vec()
        }
        (1, 3) => decoded.pixels.repeat(3),
        _ => decoded.pixels,
    })
}

/// One decoded image, channel-first.
struct Decoded {
    width: u32,
    height: u32,
    /// 1 (grayscale) or 3 (RGB).
    channels: usize,
    pixels: Vec<u8>,
}

impl Decoded {
    /// Resizes the image to `height` x `width` (bilinear, half-pixel centres), in place.
    fn resize(&mut self, height: usize, width: usize) {
        let (h, w) = (self.height as usize, self.width as usize);
        if (h, w) == (height, width) {
            return;
        }
        let image: Vec<f32> = self.pixels.iter().map(|&p| p as f32).collect();
        let resized = crate::transform::resize_bilinear(&image, self.channels, h, w, height, width);
        self.pixels = resized
            .into_iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        // Sizes up to MAX_IMAGE_PIXELS per side fit u32.
        (self.height, self.width) = (height as u32, width as u32);
    }
}

/// The most pixels Kiln decodes from one image (8192 x 8192): a file declaring more is refused
/// from its header, before any decoding, so a small "decompression bomb" cannot take the memory.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

fn decode(path: &Path) -> Result<Decoded, DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() {
        return Err(DataError::format(
            path,
            "empty file (0 bytes): expected a PNG or JPEG image",
        ));
    }
    let not_an_image = |e: image::ImageError| {
        DataError::format(
            path,
            format!("cannot decode the image (expected a PNG or JPEG file): {e}"),
        )
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    let (width, height) = reader.into_dimensions().map_err(not_an_image)?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(DataError::format(
            path,
            format!(
                "the image declares {width}x{height} pixels: expected at most {MAX_IMAGE_PIXELS} \
                 pixels (8192x8192); refused before decoding"
            ),
        ));
    }
    let image = image::load_from_memory(&bytes).map_err(not_an_image)?;
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(DataError::format(
            path,
            format!("image has no pixels ({width}x{height})"),
        ));
    }
    if image.color().has_color() {
        let rgb = image.into_rgb8().into_raw();
        let plane = width as usize * height as usize;
        let mut pixels = vec![0u8; 3 * plane];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            pixels[i] = px[0];
            pixels[plane + i] = px[1];
            pixels[2 * plane + i] = px[2];
        }
        Ok(Decoded {
            width,
            height,
            channels: 3,
            pixels,
        })
    } else {
        Ok(Decoded {
            width,
            height,
            channels: 1,
            pixels: image.into_luma8().into_raw(),
        })
    }
}

/// Decodes every file, in parallel: one contiguous run of files per available core. On
/// failure, returns the error of the first bad file in `files` order (each thread stops at its
/// own first bad file), so the error does not depend on timing.
fn decode_all(files: &[(PathBuf, u8)]) -> Result<Vec<Decoded>, DataError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<Decoded>, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(path, _)| decode(path))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    Err(DataError::format(
                        &part[0].0,
                        "the image decoder panicked on a file of this run (from here on)",
                    ))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(files.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_image_converts_colour_to_fit_and_refuses_other_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let rgb = dir.path().join("rgb.png");
        // 2x1: a pure red and a pure blue pixel.
        image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255])
            .unwrap()
            .save(&rgb)
            .unwrap();
        assert_eq!(
            read_image(&rgb, [3, 1, 2]).unwrap(),
            vec![255, 0, 0, 0, 0, 255]
        );
        // BT.601 luma: 0.299 * 255 = 76.2, 0.114 * 255 = 29.1.
        assert_eq!(read_image(&rgb, [1, 1, 2]).unwrap(), vec![76, 29]);

        let gray = dir.path().join("gray.png");
        image::GrayImage::from_raw(2, 1, vec![10, 200])
            .unwrap()
            .save(&gray)
            .unwrap();
        assert_eq!(
            read_image(&gray, [3, 1, 2]).unwrap(),
            vec![10, 200, 10, 200, 10, 200]
        );

        let err = read_image(&gray, [1, 28, 28]).unwrap_err().to_string();
        assert!(
            err.contains("gray.png: expected a 28x28 image (width x height), found 2x1"),
            "{err}"
        );
        let text = dir.path().join("a.jpg");
        std::fs::write(&text, "hello").unwrap();
        let err = read_image(&text, [1, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("a.jpg: cannot decode the image"), "{err}");
    }
}
