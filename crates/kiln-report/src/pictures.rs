//! Pictures of a run: curves, a confusion matrix and grids of small images, each drawn once
//! (a [`Picture`]) and saved twice, as PNG for viewing and SVG for papers.
//!
//! Nothing here knows about Burn: pictures are made from plain numbers and `u8` pixels, so
//! they can be redrawn from a run folder's files on any machine.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use kiln_experiments::run_dir::write_atomic;

/// The one font family of every picture: DejaVu Sans, compiled in, so a PNG renders the same
/// on a machine without fonts. (SVG names the family and lets the viewer choose.)
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .and_then(|()| {
                plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            })
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something drawn on any plotters backend.
pub trait Picture {
    /// Width and height in pixels (SVG: user units).
    fn size(&self) -> (u32, u32);
    /// Draws the picture on `root`, which is [`Picture::size`] large.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Writes `stem.png` and `stem.svg` (each atomically) and returns their paths.
pub fn save(picture: &impl Picture, stem: &Path) -> Result<[PathBuf; 2], std::io::Error> {
    register_font();
    let (w, h) = picture.size();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let failed = |path: &Path, e: String| {
        std::io::Error::other(format!("{}: drawing failed: {e}", path.display()))
    };

    let mut rgb = vec![0u8; 3 * w as usize * h as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        picture
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| failed(&png, e.to_string()))?;
    }
    write_atomic(&png, &encode_png(w, h, &rgb).map_err(|e| failed(&png, e))?)?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        picture
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| failed(&svg, e.to_string()))?;
    }
    // plotters-svg 0.3.7 labels embedded images `data:png`, a media type browsers do not know.
    let text = text.replace("href=\"data:png;base64,", "href=\"data:image/png;base64,");
    write_atomic(&svg, text.as_bytes())?;
    Ok([png, svg])
}

fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    // Best compression: charts are mostly flat colour, and run folders get many of them.
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Colours of the series of a chart, in order: distinguishable, and readable in grayscale
/// print by their order of darkness.
const SERIES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A line chart: several named series over a shared x axis.
#[derive(Debug, Clone)]
pub struct Curves {
    /// Above the chart.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The lines, each in its own colour with its name in the legend.
    pub series: Vec<Series>,
    /// Curves that rise (accuracy) keep their legend at the bottom, out of their way.
    pub rising: bool,
}

/// One named line of a [`Curves`] chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Curves {
    fn bounds(&self) -> Option<((f64, f64), (f64, f64))> {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let finite: Vec<&(f64, f64)> = points()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if finite.is_empty() {
            return None;
        }
        let fold = |f: fn(&(f64, f64)) -> f64| {
            finite
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(f(p)), hi.max(f(p)))
                })
        };
        let widen = |(lo, hi): (f64, f64), pad: f64| {
            if hi - lo < 1e-12 {
                (lo - 0.5, hi + 0.5)
            } else {
                (lo - pad * (hi - lo), hi + pad * (hi - lo))
            }
        };
        Some((widen(fold(|p| p.0), 0.02), widen(fold(|p| p.1), 0.06)))
    }
}

impl Picture for Curves {
    fn size(&self) -> (u32, u32) {
        (800, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let Some(((x0, x1), (y0, y1))) = self.bounds() else {
            return centred_text(root, &format!("{}: no data", self.title));
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 13))
            .light_line_style(RGBColor(242, 242, 242))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()?;
        for (i, series) in self.series.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(series.points.iter().copied(), style))?
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            // Markers too, where there are few points, so a one-epoch run still shows a value.
            if series.points.len() <= 40 {
                chart.draw_series(
                    series
                        .points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(if self.rising {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()?;
        Ok(())
    }
}

/// An axis value without float noise: `5000` rather than `5000.0`, `0.3` rather than
/// `0.30000000000000004`.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

fn centred_text<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, text: &str) -> DrawResult<DB> {
    let (w, h) = root.dim_in_pixel();
    let style = TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))
}

/// `counts[true][predicted]` as a heat map with the count in every cell, shaded by the share
/// of the true class (so rare classes show their mistakes as clearly as common ones).
#[derive(Debug, Clone)]
pub struct Confusion {
    /// Above the matrix.
    pub title: String,
    /// Class names, in label order: the rows' and the columns' labels.
    pub classes: Vec<String>,
    /// `counts[true][predicted]`: how many test images of class `true` were predicted as `predicted`.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// Tallies (true, predicted) pairs.
    pub fn from_pairs(
        title: String,
        classes: Vec<String>,
        pairs: impl Iterator<Item = (usize, usize)>,
    ) -> Self {
        let n = classes.len();
        let mut counts = vec![vec![0u64; n]; n];
        for (t, p) in pairs {
            counts[t][p] += 1;
        }
        Confusion {
            title,
            classes,
            counts,
        }
    }

    fn cell(&self) -> u32 {
        (640 / self.classes.len().max(1) as u32).clamp(16, 72)
    }
}

const LABEL_W: u32 = 120;
const TOP: u32 = 60;

impl Picture for Confusion {
    fn size(&self) -> (u32, u32) {
        let n = self.classes.len() as u32 * self.cell();
        (LABEL_W + n + 30, TOP + n + 70)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (w, h) = self.size();
        let cell = self.cell() as i32;
        let n = self.classes.len() as i32;
        let (left, top) = (LABEL_W as i32, TOP as i32);
        let centre = |hp| Pos::new(hp, VPos::Center);
        let title = TextStyle::from((FONT, 20).into_font()).pos(centre(HPos::Center));
        root.draw(&Text::new(self.title.clone(), (w as i32 / 2, 18), title))?;
        let axis = TextStyle::from((FONT, 15).into_font()).pos(centre(HPos::Center));
        root.draw(&Text::new(
            "predicted class".to_string(),
            (left + n * cell / 2, h as i32 - 16),
            axis.clone(),
        ))?;
        root.draw(&Text::new(
            "true class ↓".to_string(),
            (left / 2, top - 14),
            axis,
        ))?;

        let font_size = (cell as f64 * 0.32).clamp(8.0, 14.0);
        for (t, row) in self.counts.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            for (p, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                let fill = if t == p {
                    blend(RGBColor(255, 255, 255), RGBColor(31, 119, 180), share)
                } else {
                    blend(RGBColor(255, 255, 255), RGBColor(214, 39, 40), share.sqrt())
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))?;
                if count > 0 && cell >= 24 {
                    let ink = if share > 0.55 { WHITE } else { BLACK };
                    let style = TextStyle::from((FONT, font_size).into_font())
                        .color(&ink)
                        .pos(centre(HPos::Center));
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + cell / 2, y + cell / 2),
                        style,
                    ))?;
                }
            }
        }
        let label = |hp| TextStyle::from((FONT, 12).into_font()).pos(centre(hp));
        for (i, name) in self.classes.iter().enumerate() {
            let mid = i as i32 * cell + cell / 2;
            let short = fit_label(name, (cell as usize / 7).max(3));
            root.draw(&Text::new(
                fit_label(name, 18),
                (left - 6, top + mid),
                label(HPos::Right),
            ))?;
            root.draw(&Text::new(
                short,
                (left + mid, top + n * cell + 12),
                label(HPos::Center),
            ))?;
        }
        Ok(())
    }
}

fn blend(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// `name`, cut to `max` characters with an ellipsis when longer.
fn fit_label(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let cut: String = name.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// One small image of a grid, as RGB pixels (`3 * width * height`, row-major, interleaved).
#[derive(Debug, Clone)]
pub struct Tile {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `3 * width * height` bytes, row-major, red, green and blue interleaved.
    pub rgb: Vec<u8>,
    /// Up to two lines under the image.
    pub caption: Vec<String>,
    /// Drawn with a red frame and red caption: a wrong prediction.
    pub marked: bool,
}

impl Tile {
    /// From interleaved RGB bytes, `height * width * 3` of them; no caption.
    fn from_rgb(height: usize, width: usize, rgb: Vec<u8>) -> Tile {
        Tile {
            width,
            height,
            rgb,
            caption: Vec::new(),
            marked: false,
        }
    }

    /// From a channel-first `u8` image of 1 or 3 channels.
    pub fn from_pixels(channels: usize, height: usize, width: usize, pixels: &[u8]) -> Tile {
        let plane = height * width;
        let rgb = (0..plane)
            .flat_map(|i| {
                if channels == 3 {
                    [pixels[i], pixels[plane + i], pixels[2 * plane + i]]
                } else {
                    [pixels[i]; 3]
                }
            })
            .collect();
        Tile::from_rgb(height, width, rgb)
    }

    /// One channel of real values, stretched from its own minimum to maximum onto the viridis
    /// colour map (dark blue low, yellow high), as matplotlib's `imshow` shows feature maps.
    pub fn from_map(height: usize, width: usize, values: &[f32]) -> Tile {
        let (lo, hi) = min_max(values);
        let rgb = values
            .iter()
            .flat_map(|&v| {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let RGBColor(r, g, b) = ViridisRGB.get_color(t);
                [r, g, b]
            })
            .collect();
        Tile::from_rgb(height, width, rgb)
    }

    /// A convolution kernel `[in, kh, kw]`: RGB when it has 3 input channels (each stretched
    /// over the kernel's common range, so relative strengths stay), else its first channel on
    /// the colour map.
    pub fn from_kernel(channels: usize, height: usize, width: usize, values: &[f32]) -> Tile {
        if channels != 3 {
            return Tile::from_map(height, width, &values[..height * width]);
        }
        let (lo, hi) = min_max(values);
        let scale = |v: f32| {
            if hi > lo {
                ((v - lo) / (hi - lo) * 255.0).round() as u8
            } else {
                128
            }
        };
        let plane = height * width;
        let rgb = (0..plane)
            .flat_map(|i| {
                [
                    scale(values[i]),
                    scale(values[plane + i]),
                    scale(values[2 * plane + i]),
                ]
            })
            .collect();
        Tile::from_rgb(height, width, rgb)
    }

    /// Puts up to two `lines` under the image; `marked` draws them in red (a wrong prediction).
    pub fn with_caption(mut self, lines: Vec<String>, marked: bool) -> Tile {
        self.caption = lines;
        self.marked = marked;
        self
    }

    /// Nearest-neighbour enlargement by an integer factor: small images stay crisp.
    fn scaled(&self, factor: usize) -> Vec<u8> {
        let (w, h) = (self.width * factor, self.height * factor);
        let mut out = Vec::with_capacity(3 * w * h);
        for y in 0..h {
            for x in 0..w {
                let i = 3 * ((y / factor) * self.width + x / factor);
                out.extend_from_slice(&self.rgb[i..i + 3]);
            }
        }
        out
    }
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Images in rows and columns under a title, each enlarged to about `tile_px` pixels.
#[derive(Debug, Clone)]
pub struct ImageGrid {
    /// Above the grid.
    pub title: String,
    /// The images, row after row.
    pub tiles: Vec<Tile>,
    /// Images per row.
    pub columns: usize,
    /// About how many pixels each image is enlarged to.
    pub tile_px: usize,
}

impl ImageGrid {
    fn factor(&self) -> usize {
        let largest = self
            .tiles
            .iter()
            .map(|t| t.width.max(t.height))
            .max()
            .unwrap_or(1);
        (self.tile_px / largest.max(1)).max(1)
    }

    fn caption_lines(&self) -> usize {
        self.tiles
            .iter()
            .map(|t| t.caption.len())
            .max()
            .unwrap_or(0)
    }

    /// Width and height of one cell: the enlarged image, its caption and a gap.
    fn cell(&self) -> (i32, i32) {
        let f = self.factor();
        let w = self.tiles.iter().map(|t| t.width).max().unwrap_or(1) * f;
        let h = self.tiles.iter().map(|t| t.height).max().unwrap_or(1) * f;
        let w = w.max(if self.caption_lines() > 0 { 96 } else { 0 });
        (w as i32 + 10, (h + 16 * self.caption_lines()) as i32 + 10)
    }
}

const TITLE_H: i32 = 44;

impl ImageGrid {
    /// Where the first column starts: the tiles are centred under the title.
    fn left(&self) -> i32 {
        let columns = self.columns.clamp(1, self.tiles.len().max(1)) as i32;
        let (w, _) = self.size();
        (w as i32 - columns * self.cell().0 + 10) / 2
    }
}

impl Picture for ImageGrid {
    fn size(&self) -> (u32, u32) {
        let columns = self.columns.clamp(1, self.tiles.len().max(1));
        let rows = self.tiles.len().div_ceil(columns).max(1);
        let (cw, ch) = self.cell();
        // Wide enough for the title too (DejaVu Sans at 18 px: under 11 px a character).
        let title_w = 11 * self.title.chars().count() as i32 + 20;
        let w = (columns as i32 * cw + 10).max(title_w).max(360);
        (w as u32, (TITLE_H + rows as i32 * ch + 6) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (w, _) = self.size();
        let title =
            TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            self.title.clone(),
            (w as i32 / 2, TITLE_H / 2),
            title,
        ))?;
        let columns = self.columns.clamp(1, self.tiles.len().max(1));
        let (cw, ch) = self.cell();
        let f = self.factor();
        let left = self.left();
        for (i, tile) in self.tiles.iter().enumerate() {
            let (col, row) = ((i % columns) as i32, (i / columns) as i32);
            let (tw, th) = ((tile.width * f) as i32, (tile.height * f) as i32);
            let x = left + col * cw + (cw - 10 - tw) / 2;
            let y = TITLE_H + row * ch;
            let bitmap =
                BitMapElement::with_owned_buffer((x, y), (tw as u32, th as u32), tile.scaled(f))
                    .expect("the buffer has 3 bytes per pixel");
            root.draw(&bitmap)?;
            let ink = if tile.marked {
                RGBColor(214, 39, 40)
            } else {
                BLACK
            };
            if tile.marked {
                root.draw(&Rectangle::new(
                    [(x - 3, y - 3), (x + tw + 2, y + th + 2)],
                    ink.stroke_width(3),
                ))?;
            }
            let style = TextStyle::from((FONT, 12).into_font())
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Top));
            for (l, line) in tile.caption.iter().enumerate() {
                let at = (x + tw / 2, y + th + 6 + 16 * l as i32);
                root.draw(&Text::new(fit_label(line, 20), at, style.clone()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a saved PNG: its size, and how many distinct colours it has.
    fn decoded(path: &Path) -> ((u32, u32), usize) {
        let img = image::open(path).unwrap().to_rgb8();
        let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        colours.sort_unstable();
        colours.dedup();
        (img.dimensions(), colours.len())
    }

    #[test]
    fn curves_confusion_and_grids_save_as_real_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let curves = Curves {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
                },
                Series {
                    name: "test".into(),
                    points: vec![(1.0, 2.2), (2.0, 1.3), (3.0, 0.9)],
                },
            ],
            rising: false,
        };
        let [png, svg] = save(&curves, &dir.path().join("loss")).unwrap();
        let (size, colours) = decoded(&png);
        assert_eq!(size, (800, 500));
        // White, black text, grid lines, two series colours and anti-aliased text in between.
        assert!(colours > 20, "{colours} colours: looks blank");
        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(
            svg.starts_with("<svg")
                && svg.contains("\ntrain\n")
                && svg.contains("\ncross-entropy\n")
        );

        let confusion = Confusion::from_pairs(
            "confusion".into(),
            vec!["cat".into(), "dog".into()],
            [(0, 0), (0, 0), (0, 1), (1, 1)].into_iter(),
        );
        assert_eq!(confusion.counts, vec![vec![2, 1], vec![0, 1]]);
        let [png, _] = save(&confusion, &dir.path().join("confusion")).unwrap();
        let ((w, h), colours) = decoded(&png);
        assert_eq!((w, h), confusion.size());
        assert!(colours > 10, "{colours} colours");

        let tiles = (0..5u8)
            .map(|k| {
                Tile::from_pixels(1, 4, 4, &[k * 50; 16])
                    .with_caption(vec![format!("true {k}")], k % 2 == 0)
            })
            .collect();
        let grid = ImageGrid {
            title: "grid".into(),
            tiles,
            columns: 3,
            tile_px: 64,
        };
        let [png, svg] = save(&grid, &dir.path().join("grid")).unwrap();
        let ((w, h), _) = decoded(&png);
        assert_eq!((w, h), grid.size());
        let img = image::open(&png).unwrap().to_rgb8();
        // The second tile (value 50) is enlarged 16x: a pixel in its middle has its grey.
        let (cw, _) = grid.cell();
        let x = (grid.left() + cw + (cw - 10 - 64) / 2 + 32) as u32;
        assert_eq!(img.get_pixel(x, (TITLE_H + 32) as u32).0, [50, 50, 50]);
        // The SVG embeds the tiles as PNG images.
        assert!(std::fs::read_to_string(svg)
            .unwrap()
            .contains("data:image/png;base64,"));
    }

    #[test]
    fn empty_curves_say_so_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let curves = Curves {
            title: "error".into(),
            x_label: "step".into(),
            y_label: "%".into(),
            series: vec![],
            rising: false,
        };
        let [png, svg] = save(&curves, &dir.path().join("empty")).unwrap();
        assert!(decoded(&png).1 > 2);
        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(svg.contains("error: no data"), "{svg}");
    }

    #[test]
    fn maps_and_kernels_are_stretched_to_their_range() {
        let t = Tile::from_map(1, 3, &[-1.0, 0.0, 1.0]);
        let RGBColor(r, g, b) = ViridisRGB.get_color(0.0f32);
        assert_eq!(&t.rgb[..3], &[r, g, b]);
        let RGBColor(r, g, b) = ViridisRGB.get_color(1.0f32);
        assert_eq!(&t.rgb[6..], &[r, g, b]);
        let k = Tile::from_kernel(3, 1, 1, &[-1.0, 0.0, 1.0]);
        assert_eq!(k.rgb, vec![0, 128, 255]);
        assert_eq!(fit_label("automobile", 5), "auto…");
        assert_eq!(
            (tick(5000.0), tick(0.1 + 0.2), tick(-2.0)),
            ("5000".into(), "0.3".into(), "-2".into())
        );
    }
}
