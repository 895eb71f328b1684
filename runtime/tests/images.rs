//! Folders of calibration images (PNG and PGM) and their errors.

use fhec_runtime::dataset::{DatasetError, load_image_dir};

fn write_png(path: &std::path::Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

#[test]
fn png_and_pgm_images_load_as_grayscale() {
    let dir = std::env::temp_dir().join(format!("fhec-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gray: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
    write_png(&dir.join("a.png"), 28, 28, png::ColorType::Grayscale, &gray);
    let rgb: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g]).collect();
    write_png(&dir.join("b.png"), 28, 28, png::ColorType::Rgb, &rgb);
    let mut pgm = b"P5\n# a comment\n28 28\n255\n".to_vec();
    pgm.extend_from_slice(&gray);
    std::fs::write(dir.join("c.pgm"), &pgm).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let ds = load_image_dir(&dir, 28, 28).unwrap();
    assert_eq!(ds.len(), 3);
    for i in 0..3 {
        assert_eq!(ds.pixels(i), &gray[..], "image {i}");
    }
    // A wrong size names the file.
    write_png(&dir.join("d.png"), 32, 32, png::ColorType::Grayscale, &vec![0; 32 * 32]);
    let e = load_image_dir(&dir, 28, 28).unwrap_err().to_string();
    assert!(e.contains("d.png") && e.contains("is 32x32"), "{e}");
    std::fs::write(dir.join("d.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = load_image_dir(&dir, 28, 28).unwrap_err().to_string();
    assert!(e.contains("d.png") && e.contains("not a readable PNG"), "{e}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(load_image_dir(&empty, 28, 28), Err(DatasetError::NoImages { .. })));
}
