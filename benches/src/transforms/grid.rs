//! The picture of a benchmark: a grid of small grayscale images, each upscaled (nearest
//! neighbour) and separated by light lines, written as a PNG with the runtime's writer.

use std::path::Path;

use anyhow::{Context, Result};
use fhec_runtime::image::{Depth, GrayImage, ImageFormat, encode};

/// Pixels between cells (and around the grid).
pub const SEPARATOR: usize = 2;
/// Value of the separators.
const LINE: u8 = 200;

/// A grid of `rows x columns` cells, each an `h x w` image shown `scale` times larger.
pub fn grid(cells: &[Vec<Vec<u8>>], h: usize, w: usize, scale: usize) -> GrayImage {
    let rows = cells.len();
    let cols = cells.iter().map(Vec::len).max().unwrap_or(0);
    let (ch, cw) = (h * scale, w * scale);
    let height = rows * (ch + SEPARATOR) + SEPARATOR;
    let width = cols * (cw + SEPARATOR) + SEPARATOR;
    let mut pixels = vec![LINE; height * width];
    for (r, row) in cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            assert_eq!(cell.len(), h * w, "cell {r},{c} of another size");
            let (top, left) = (SEPARATOR + r * (ch + SEPARATOR), SEPARATOR + c * (cw + SEPARATOR));
            for y in 0..ch {
                for x in 0..cw {
                    pixels[(top + y) * width + left + x] = cell[(y / scale) * w + x / scale];
                }
            }
        }
    }
    GrayImage { rows: height, cols: width, pixels }
}

/// Writes [`grid`] as an 8-bit PNG.
pub fn write_grid(path: &Path, cells: &[Vec<Vec<u8>>], h: usize, w: usize, scale: usize) -> Result<()> {
    let bytes = encode(&grid(cells, h, w, scale), ImageFormat::Png, Depth::Eight)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_upscaled_between_separators() {
        let cells = vec![vec![vec![0u8, 1, 2, 3], vec![9u8; 4]], vec![vec![5u8; 4]]];
        let g = grid(&cells, 2, 2, 3);
        assert_eq!((g.rows, g.cols), (2 * 8 + 2, 2 * 8 + 2));
        let at = |y: usize, x: usize| g.pixels[y * g.cols + x];
        assert_eq!(at(0, 0), LINE);
        assert_eq!(at(2, 2), 0);
        assert_eq!(at(4, 4), 0);
        assert_eq!(at(2, 5), 1);
        assert_eq!(at(5, 2), 2);
        assert_eq!(at(7, 7), 3);
        assert_eq!(at(8, 8), LINE);
        assert_eq!(at(2, 10), 9);
        assert_eq!(at(10, 2), 5);
        // The missing cell of the second row stays background.
        assert_eq!(at(10, 10), LINE);
        let dir = std::env::temp_dir().join(format!("fhec-grid-test-{}", std::process::id()));
        let path = dir.join("g.png");
        write_grid(&path, &cells, 2, 2, 3).unwrap();
        let back = fhec_runtime::image::read(&path).unwrap();
        assert_eq!(back, g);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
