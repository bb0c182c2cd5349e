//! Image output: grids of grayscale digits as PNG, written atomically (a temporary file renamed into place).

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

/// A grayscale canvas of `cols × rows` tiles of `h × w` pixels with a 1-pixel gap, values in [0, 1].
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
    tile: (usize, usize),
    cols: usize,
}

impl Grid {
    pub fn new(rows: usize, cols: usize, (h, w): (usize, usize)) -> Grid {
        let width = cols * (w + 1) + 1;
        let height = rows * (h + 1) + 1;
        Grid {
            width,
            height,
            pixels: vec![64; width * height],
            tile: (h, w),
            cols,
        }
    }

    /// Draws `image` (h·w values in [0, 1]) in tile `index` (row-major).
    pub fn put(&mut self, index: usize, image: &[f32]) {
        let (h, w) = self.tile;
        let (r, c) = (index / self.cols, index % self.cols);
        for y in 0..h {
            for x in 0..w {
                let v = image[y * w + x].clamp(0.0, 1.0);
                self.pixels[(r * (h + 1) + 1 + y) * self.width + c * (w + 1) + 1 + x] =
                    (v * 255.0).round() as u8;
            }
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_png(
            path,
            self.width as u32,
            self.height as u32,
            png::ColorType::Grayscale,
            &self.pixels,
        )
    }
}

/// Writes an 8-bit PNG to `path` atomically.
pub fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
) -> Result<()> {
    let io = |e: &dyn std::fmt::Display| Error::Io {
        what: format!("writing {}", path.display()),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| io(&e))?;
        w.write_image_data(data).map_err(|e| io(&e))?;
    }
    write_atomic(path, &bytes)
}
