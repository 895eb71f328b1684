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

use crate::image::MAX_SIDE;

/// Largest image set we accept (guards against corrupt headers).
const MAX_IMAGES: usize = 1_000_000;
/// Largest decompressed IDX file we accept (1 GiB; the full MNIST training set is 47 MB):
/// a small gzip file can expand a thousandfold.
const MAX_IDX_BYTES: u64 = 1 << 30;

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
    /// The file is not a valid file of the expected kind (IDX images or labels, PNG, PGM, npy).
    #[error("{path} is not a valid {what} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The expected kind: `IDX images`, `IDX labels`, `PNG image`, `PGM image`, `NumPy .npy`.
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
    /// A directory holds neither an IDX set nor PNG / PGM images.
    #[error(
        "no images in {dir}: expected an IDX set (t10k-images-idx3-ubyte[.gz] and its labels) or *.png / *.pgm files"
    )]
    NoImages {
        /// The directory.
        dir: PathBuf,
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

/// A dataset name that is not one of [`DatasetKind`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataset '{0}' (expected mnist or fashion-mnist)")]
pub struct UnknownDataset(pub String);

impl std::str::FromStr for DatasetKind {
    type Err = UnknownDataset;
    fn from_str(s: &str) -> Result<Self, UnknownDataset> {
        match s {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashion" => Ok(DatasetKind::FashionMnist),
            _ => Err(UnknownDataset(s.to_string())),
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
        let (pixels, rows, cols) = read_images(images, &gunzip(images_bytes, images, "IDX images")?)?;
        let l = read_labels(labels, &gunzip(labels_bytes, labels, "IDX labels")?)?;
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
    let Some(total) = d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)) else {
        return Err(bad(format!("header dimensions {d:?} overflow")));
    };
    if bytes.len() - need != total {
        return Err(bad(format!(
            "header says {d:?} ({total} bytes of data) but the file holds {}",
            bytes.len() - need
        )));
    }
    Ok(d)
}

fn read_images(path: &Path, bytes: &[u8]) -> Result<(Array2<u8>, usize, usize), DatasetError> {
    let d = header(path, bytes, "IDX images", 0x0000_0803, 3)?;
    if d[0] > MAX_IMAGES || d[1] > MAX_SIDE || d[2] > MAX_SIDE || d[1] == 0 || d[2] == 0 {
        return Err(DatasetError::Format {
            path: path.into(),
            what: "IDX images",
            reason: format!("implausible size {d:?}"),
        });
    }
    let px = Array2::from_shape_vec((d[0], d[1] * d[2]), bytes[16..].to_vec()).expect("size checked");
    Ok((px, d[1], d[2]))
}

fn read_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DatasetError> {
    header(path, bytes, "IDX labels", 0x0000_0801, 1)?;
    Ok(bytes[8..].to_vec())
}

/// Loads every `.png` and binary `.pgm` (P5) image of a directory, sorted by file name, as
/// 8-bit grayscale images of `rows x cols` (colour PNGs are converted to luma; 16-bit
/// samples keep their high byte). Labels are unknown ([`UNLABELLED`]).
pub fn load_image_dir(dir: &Path, rows: usize, cols: usize) -> Result<Dataset, DatasetError> {
    let io = |path: &Path, source| DatasetError::Io { path: path.into(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png") || x.eq_ignore_ascii_case("pgm")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::NoImages { dir: dir.into() });
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
        labels: vec![UNLABELLED; n],
    })
}

/// Loads one `.png` or binary `.pgm` image as 8-bit grayscale pixels (row-major), checking
/// that it is `rows x cols`.
pub fn load_image(path: &Path, rows: usize, cols: usize) -> Result<Vec<u8>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::Io { path: path.into(), source: e })?;
    decode_image(&bytes, path, rows, cols)
}

/// Decodes the bytes of a `.png` or binary `.pgm` image (`path` only names it in errors) as
/// [`load_image`] does.
pub fn decode_image(bytes: &[u8], path: &Path, rows: usize, cols: usize) -> Result<Vec<u8>, DatasetError> {
    let img = crate::image::decode(bytes, path)?;
    if (img.rows, img.cols) != (rows, cols) {
        return Err(DatasetError::Format {
            path: path.into(),
            what: crate::image::kind_of(bytes, path),
            reason: format!("is {}x{}, the model takes {cols}x{rows} images", img.cols, img.rows),
        });
    }
    Ok(img.pixels)
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

/// The bundled training samples (first 1500 training images of each set), compiled into
/// the binary: `fhec build` calibrates on the first [`BUNDLED_CALIBRATION`] and validates
/// its width choices on the rest, so neither touches the test images that accuracy is
/// reported on.
pub fn bundled_train_sample(kind: DatasetKind) -> Dataset {
    let (im, lb): (&[u8], &[u8]) = match kind {
        DatasetKind::Mnist => (
            include_bytes!("../../examples/data/mnist/train-images-idx3-ubyte.gz"),
            include_bytes!("../../examples/data/mnist/train-labels-idx1-ubyte.gz"),
        ),
        DatasetKind::FashionMnist => (
            include_bytes!("../../examples/data/fashion-mnist/train-images-idx3-ubyte.gz"),
            include_bytes!("../../examples/data/fashion-mnist/train-labels-idx1-ubyte.gz"),
        ),
    };
    let name = Path::new(kind.dir_name());
    Dataset::from_idx_bytes(im, &name.join("train images"), lb, &name.join("train labels"))
        .expect("bundled sample is valid")
}

/// Images of [`bundled_train_sample`] used for calibration (the rest validate).
pub const BUNDLED_CALIBRATION: usize = 500;

impl Dataset {
    /// Whether every image has a label (image folders and `.npy` arrays have none).
    pub fn has_labels(&self) -> bool {
        !self.labels.contains(&UNLABELLED)
    }

    /// Keeps the images whose label is one of `classes` and relabels each with its index in
    /// `classes` (the output index of a model trained on those classes only). Unlabelled
    /// images are kept as they are.
    pub fn keep_classes(&mut self, classes: &[u8]) {
        let keep: Vec<usize> =
            (0..self.len()).filter(|&i| self.labels[i] == UNLABELLED || classes.contains(&self.labels[i])).collect();
        self.pixels = self.pixels.select(ndarray::Axis(0), &keep);
        self.labels = keep
            .iter()
            .map(|&i| {
                let l = self.labels[i];
                classes.iter().position(|&c| c == l).map_or(UNLABELLED, |p| p as u8)
            })
            .collect();
    }

    /// Splits off the images from `at` on (the first `at` stay).
    pub fn split_off(&mut self, at: usize) -> Dataset {
        let at = at.min(self.len());
        let rest = Dataset {
            pixels: self.pixels.slice(ndarray::s![at.., ..]).to_owned(),
            rows: self.rows,
            cols: self.cols,
            labels: self.labels[at..].to_vec(),
        };
        self.truncate(at);
        rest
    }
}

/// The label of an image whose class is unknown.
pub const UNLABELLED: u8 = 255;

/// Loads images of `rows x cols` from any of the forms a user has them in:
/// * a directory with an IDX set of `kind` (the training split `train-*`, else the test
///   split `t10k-*`, directly or in `mnist/` / `fashion-mnist/`), or a folder of PNG / PGM
///   images (sorted by name; no labels);
/// * an IDX images file (`*-images-idx3-ubyte[.gz]`; its labels are read from the file of
///   the same name with `labels-idx1` when it exists);
/// * one `.png` or `.pgm` image (no label);
/// * a NumPy `.npy` array of 8-bit or float images, `[N, H, W]`, `[N, 1, H, W]`,
///   `[N, H, W, 1]` or `[N, H*W]` (floats in `[0, 1]` are scaled by 255; no labels).
///
/// Images of another size are an error naming both sizes.
pub fn load_images(path: &Path, rows: usize, cols: usize, kind: DatasetKind) -> Result<Dataset, DatasetError> {
    let ds = if path.is_dir() {
        match (find(path, kind, "train-images-idx3-ubyte"), find(path, kind, "train-labels-idx1-ubyte")) {
            (Ok(im), Ok(lb)) => Dataset::load_files(&im, &lb)?,
            _ => match Dataset::load_test(path, kind) {
                Ok(ds) => ds,
                Err(DatasetError::NotFound { .. }) => load_image_dir(path, rows, cols)?,
                Err(e) => return Err(e),
            },
        }
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        load_npy(path)?
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("pgm")) {
        let pixels = Array2::from_shape_vec((1, rows * cols), load_image(path, rows, cols)?).expect("size checked");
        Dataset { pixels, rows, cols, labels: vec![UNLABELLED] }
    } else {
        let bytes = read_all(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let labels = path.with_file_name(name.replace("images-idx3", "labels-idx1"));
        if name.contains("images-idx3") && labels.is_file() {
            Dataset::from_idx_bytes(&bytes, path, &read_all(&labels)?, &labels)?
        } else {
            let raw = gunzip(&bytes, path, "IDX images")?;
            let (pixels, r, c) = read_images(path, &raw)?;
            let n = pixels.nrows();
            Dataset { pixels, rows: r, cols: c, labels: vec![UNLABELLED; n] }
        }
    };
    if (ds.rows, ds.cols) != (rows, cols) {
        return Err(DatasetError::Format {
            path: path.into(),
            what: "IDX images",
            reason: format!("holds {}x{} images, the model takes {rows}x{cols}", ds.rows, ds.cols),
        });
    }
    Ok(ds)
}

fn gunzip(b: &[u8], p: &Path, what: &'static str) -> Result<Vec<u8>, DatasetError> {
    if b.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|source| DatasetError::Io { path: p.into(), source })?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(DatasetError::Format {
                path: p.into(),
                what,
                reason: format!("decompresses to more than {MAX_IDX_BYTES} bytes"),
            });
        }
        Ok(out)
    } else {
        Ok(b.to_vec())
    }
}

/// Reads a NumPy `.npy` array of images (see [`load_images`]).
pub fn load_npy(path: &Path) -> Result<Dataset, DatasetError> {
    npy_from_bytes(&read_all(path)?, path)
}

/// Parses the bytes of a NumPy `.npy` array of images (`path` only names it in errors), as
/// [`load_npy`] does.
pub fn npy_from_bytes(b: &[u8], path: &Path) -> Result<Dataset, DatasetError> {
    let bad = |reason: String| DatasetError::Format { path: path.into(), what: "NumPy .npy", reason };
    if !b.starts_with(b"\x93NUMPY") || b.len() < 10 {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let header = b.get(start..start.saturating_add(hlen)).ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text".into()))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad("no descr".into()))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(bad("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)".into()));
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape".into()))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(format!("shape ({shape_text})"))))
        .collect::<Result<_, _>>()?;
    let (n, rows, cols) = match shape.as_slice() {
        [n, h, w] | [n, 1, h, w] | [n, h, w, 1] => (*n, *h, *w),
        [n, hw] => {
            let s = (*hw as f64).sqrt() as usize;
            if s.checked_mul(s) != Some(*hw) {
                return Err(bad(format!("shape {shape:?}: {hw} values per image is not a square image")));
            }
            (*n, s, s)
        }
        _ => return Err(bad(format!("shape {shape:?}: expected [N, H, W], [N, 1, H, W], [N, H, W, 1] or [N, H*W]"))),
    };
    if n == 0 || n > MAX_IMAGES || rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(bad(format!("implausible shape {shape:?}")));
    }
    let count = n * rows * cols;
    let data = &b[start + hlen..];
    let (size, conv): (usize, fn(&[u8]) -> f64) = match descr {
        "|u1" | "<u1" | "u1" => (1, |x| x[0] as f64),
        "<f4" => (4, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64),
        "<f8" => (8, |x| f64::from_le_bytes(x.try_into().expect("8 bytes"))),
        d => return Err(bad(format!("element type {d}: expected uint8, float32 or float64"))),
    };
    if data.len() != count * size {
        return Err(bad(format!(
            "{} bytes of data for shape {shape:?} of {descr} ({} expected)",
            data.len(),
            count * size
        )));
    }
    let vals: Vec<f64> = data.chunks_exact(size).map(conv).collect();
    let unit = size > 1 && vals.iter().all(|&v| (0.0..=1.0).contains(&v));
    let mut pixels = Vec::with_capacity(count);
    for &v in &vals {
        let p = if unit { v * 255.0 } else { v };
        if !(0.0..=255.0).contains(&p) || p.is_nan() {
            return Err(bad(format!("value {v} is not a pixel (expected 0..255, or 0..1 for floats)")));
        }
        pixels.push(p.round() as u8);
    }
    Ok(Dataset {
        pixels: Array2::from_shape_vec((n, rows * cols), pixels).expect("size checked"),
        rows,
        cols,
        labels: vec![UNLABELLED; n],
    })
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
