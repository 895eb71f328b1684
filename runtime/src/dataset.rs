//! Reading labelled grayscale image sets in the IDX format (MNIST, Fashion-MNIST).
//!
//! Files may be gzip-compressed (as distributed) or raw. A dataset directory holds
//! `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`, either directly or
//! in a sub-directory named after the dataset (`mnist/`, `fashion-mnist/`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use fhec_ir::Preprocess;
use ndarray::{Array2, ArrayD, IxDyn};

/// Largest image set we accept (guards against corrupt headers).
const MAX_IMAGES: usize = 1_000_000;
/// Largest image side we accept.
const MAX_SIDE: usize = 4096;

/// A failure to read a dataset, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid IDX file of the expected kind.
    #[error("{path} is not a valid IDX {what} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// `images` or `labels`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No dataset files were found.
    #[error("no {name} test set in {dir}: expected {file}[.gz] there or in {dir}/{name}/")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// Dataset name.
        name: String,
        /// The file looked for.
        file: String,
    },
    /// Images and labels disagree.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    Mismatch {
        /// Image file.
        images: PathBuf,
        /// Label file.
        labels: PathBuf,
        /// Image count.
        n_images: usize,
        /// Label count.
        n_labels: usize,
    },
}

/// Which image set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// MNIST handwritten digits.
    Mnist,
    /// Fashion-MNIST article images.
    FashionMnist,
}

impl DatasetKind {
    /// Directory name used in `../shared/data` and in the bundled samples.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashion" => Ok(DatasetKind::FashionMnist),
            _ => Err(format!("unknown dataset '{s}' (expected mnist or fashion-mnist)")),
        }
    }
}

/// A labelled set of 8-bit grayscale images.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[count, rows * cols]` pixels, row-major.
    pub pixels: Array2<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Loads the test split of `kind` from `dir` (see the module doc for the layout).
    pub fn load_test(dir: &Path, kind: DatasetKind) -> Result<Dataset, DatasetError> {
        let images = find(dir, kind, "t10k-images-idx3-ubyte")?;
        let labels = find(dir, kind, "t10k-labels-idx1-ubyte")?;
        Self::load_files(&images, &labels)
    }

    /// Loads an image file and a label file.
    pub fn load_files(images: &Path, labels: &Path) -> Result<Dataset, DatasetError> {
        Self::from_idx_bytes(&read_all(images)?, images, &read_all(labels)?, labels)
    }

    /// Parses IDX image and label bytes (gzip-compressed or raw); the paths only name them
    /// in errors.
    pub fn from_idx_bytes(
        images_bytes: &[u8],
        images: &Path,
        labels_bytes: &[u8],
        labels: &Path,
    ) -> Result<Dataset, DatasetError> {
        let gunzip = |b: &[u8], p: &Path| -> Result<Vec<u8>, DatasetError> {
            if b.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(b)
                    .read_to_end(&mut out)
                    .map_err(|source| DatasetError::Io { path: p.into(), source })?;
                Ok(out)
            } else {
                Ok(b.to_vec())
            }
        };
        let (pixels, rows, cols) = read_images(images, &gunzip(images_bytes, images)?)?;
        let l = read_labels(labels, &gunzip(labels_bytes, labels)?)?;
        if l.len() != pixels.nrows() {
            return Err(DatasetError::Mismatch {
                images: images.into(),
                labels: labels.into(),
                n_images: pixels.nrows(),
                n_labels: l.len(),
            });
        }
        Ok(Dataset { pixels, rows, cols, labels: l })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.pixels = self.pixels.slice(ndarray::s![..n, ..]).to_owned();
            self.labels.truncate(n);
        }
    }

    /// The pixels of image `i`.
    pub fn pixels(&self, i: usize) -> &[u8] {
        self.pixels.row(i).to_slice().expect("standard layout")
    }

    /// Image `i` preprocessed into a tensor of `shape` (whose element count must be
    /// `rows * cols`; the caller checks it against the model).
    pub fn input(&self, i: usize, pre: Preprocess, shape: &[usize]) -> ArrayD<f32> {
        let v: Vec<f32> = self.pixels.row(i).iter().map(|&p| pre.apply(p)).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).expect("caller checked the element count")
    }
}

fn find(dir: &Path, kind: DatasetKind, stem: &str) -> Result<PathBuf, DatasetError> {
    for base in [dir.to_path_buf(), dir.join(kind.dir_name())] {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let p = base.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(DatasetError::NotFound { dir: dir.into(), name: kind.dir_name().into(), file: stem.into() })
}

fn read_all(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let io = |source| DatasetError::Io { path: path.into(), source };
    let mut f = BufReader::new(File::open(path).map_err(io)?);
    let mut raw = Vec::new();
    f.read_to_end(&mut raw).map_err(io)?;
    Ok(raw)
}

fn header(path: &Path, bytes: &[u8], what: &'static str, magic: u32, dims: usize) -> Result<Vec<usize>, DatasetError> {
    let bad = |reason: String| DatasetError::Format { path: path.into(), what, reason };
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        return Err(bad(format!("{} bytes is shorter than the {need}-byte header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if word(0) != magic {
        return Err(bad(format!("magic number {:#010x}, expected {magic:#010x}", word(0))));
    }
    let d: Vec<usize> = (0..dims).map(|k| word(4 + 4 * k) as usize).collect();
    let total: usize = d.iter().product();
    if bytes.len() - need != total {
        return Err(bad(format!(
            "header says {d:?} ({total} bytes of data) but the file holds {}",
            bytes.len() - need
        )));
    }
    Ok(d)
}

fn read_images(path: &Path, bytes: &[u8]) -> Result<(Array2<u8>, usize, usize), DatasetError> {
    let d = header(path, bytes, "images", 0x0000_0803, 3)?;
    if d[0] > MAX_IMAGES || d[1] > MAX_SIDE || d[2] > MAX_SIDE || d[1] == 0 || d[2] == 0 {
        return Err(DatasetError::Format {
            path: path.into(),
            what: "images",
            reason: format!("implausible size {d:?}"),
        });
    }
    let px = Array2::from_shape_vec((d[0], d[1] * d[2]), bytes[16..].to_vec()).expect("size checked");
    Ok((px, d[1], d[2]))
}

fn read_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DatasetError> {
    header(path, bytes, "labels", 0x0000_0801, 1)?;
    Ok(bytes[8..].to_vec())
}

/// Loads every `.png` and binary `.pgm` (P5) image of a directory, sorted by file name, as
/// 8-bit grayscale images of `rows x cols` (colour PNGs are converted to luma; 16-bit
/// samples keep their high byte). Labels are unknown (255): such a set serves calibration.
pub fn load_image_dir(dir: &Path, rows: usize, cols: usize) -> Result<Dataset, DatasetError> {
    let io = |path: &Path, source| DatasetError::Io { path: path.into(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png") || x.eq_ignore_ascii_case("pgm")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::NotFound { dir: dir.into(), name: "image".into(), file: "*.png or *.pgm".into() });
    }
    let mut pixels = Vec::with_capacity(files.len() * rows * cols);
    for f in &files {
        pixels.extend_from_slice(&load_image(f, rows, cols)?);
    }
    let n = files.len();
    Ok(Dataset {
        pixels: Array2::from_shape_vec((n, rows * cols), pixels).expect("sizes checked"),
        rows,
        cols,
        labels: vec![255; n],
    })
}

/// Loads one `.png` or binary `.pgm` image as 8-bit grayscale pixels (row-major), checking
/// that it is `rows x cols`.
pub fn load_image(path: &Path, rows: usize, cols: usize) -> Result<Vec<u8>, DatasetError> {
    let bad = |reason: String| DatasetError::Format { path: path.into(), what: "image", reason };
    let bytes = std::fs::read(path).map_err(|e| DatasetError::Io { path: path.into(), source: e })?;
    let (w, h, gray) =
        if bytes.starts_with(b"P5") { read_pgm(&bytes).map_err(bad)? } else { read_png(&bytes).map_err(bad)? };
    if (h, w) != (rows, cols) {
        return Err(bad(format!("is {w}x{h}, the model takes {cols}x{rows} images")));
    }
    Ok(gray)
}

fn read_pgm(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    // Header: "P5" whitespace width whitespace height whitespace maxval single-whitespace data
    let mut fields = vec![];
    let mut i = 2;
    while fields.len() < 3 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let v: usize =
            std::str::from_utf8(&b[start..i]).ok().and_then(|s| s.parse().ok()).ok_or("malformed PGM header")?;
        fields.push(v);
    }
    let (w, h, max) = (fields[0], fields[1], fields[2]);
    if max == 0 || max > 255 || w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("unsupported PGM ({w}x{h}, maxval {max}; 8-bit only)"));
    }
    let data = b.get(i + 1..i + 1 + w * h).ok_or("truncated PGM data")?;
    Ok((w, h, data.iter().map(|&p| ((p as usize * 255) / max) as u8).collect()))
}

fn read_png(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(b));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| format!("not a readable PNG: {e}"))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("implausible PNG size {w}x{h}"));
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("not a readable PNG: {e}"))?;
    let ch = info.color_type.samples();
    let luma = |px: &[u8]| -> u8 {
        match ch {
            1 | 2 => px[0],
            _ => ((299 * px[0] as u32 + 587 * px[1] as u32 + 114 * px[2] as u32) / 1000) as u8,
        }
    };
    Ok((w, h, buf[..w * h * ch].chunks_exact(ch).map(luma).collect()))
}

/// Writes an IDX image file and label file, gzip-compressed (used to make samples).
pub fn write_idx_gz(images: &Path, labels: &Path, ds: &Dataset) -> std::io::Result<()> {
    use std::io::Write;
    let gz = |p: &Path, body: Vec<u8>| -> std::io::Result<()> {
        let mut e = flate2::write::GzEncoder::new(File::create(p)?, flate2::Compression::best());
        e.write_all(&body)?;
        e.finish()?;
        Ok(())
    };
    let mut im = Vec::new();
    for w in [0x0000_0803u32, ds.len() as u32, ds.rows as u32, ds.cols as u32] {
        im.extend_from_slice(&w.to_be_bytes());
    }
    im.extend(ds.pixels.iter());
    gz(images, im)?;
    let mut lb = Vec::new();
    for w in [0x0000_0801u32, ds.len() as u32] {
        lb.extend_from_slice(&w.to_be_bytes());
    }
    lb.extend_from_slice(&ds.labels);
    gz(labels, lb)
}

/// The bundled samples (first 200 test images of each set), compiled into the binary so
/// that calibration and the quick start work anywhere.
pub fn bundled_sample(kind: DatasetKind) -> Dataset {
    let (im, lb): (&[u8], &[u8]) = match kind {
        DatasetKind::Mnist => (
            include_bytes!("../../examples/data/mnist/t10k-images-idx3-ubyte.gz"),
            include_bytes!("../../examples/data/mnist/t10k-labels-idx1-ubyte.gz"),
        ),
        DatasetKind::FashionMnist => (
            include_bytes!("../../examples/data/fashion-mnist/t10k-images-idx3-ubyte.gz"),
            include_bytes!("../../examples/data/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        ),
    };
    let name = Path::new(kind.dir_name());
    Dataset::from_idx_bytes(im, &name.join("images"), lb, &name.join("labels")).expect("bundled sample is valid")
}
