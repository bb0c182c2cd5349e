//! A sweep's own pictures (`vae sweep`, issue 25): sweep.png, one row per β (its first model in grid order)
//! with the model's reconstructions, samples and latent scatter side by side, stitched from the pictures the
//! model's run wrote; and rate_distortion.png, each model's test KL (rate) against its test BCE (distortion),
//! coloured by β, with each β's mean and spread over its models.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::images::write_png;
use super::plots::{TAB10, fonts, plot_err, render, upper_right_legend};
use crate::error::{Error, Result};

/// One model of a sweep as its pictures need it: β, its directory (holding its run's pictures) and its last
/// epoch's test (BCE, KL) per example.
pub struct SweepModel {
    pub beta: f32,
    pub dir: PathBuf,
    pub epoch: u32,
    pub test_bce: f64,
    pub test_kl: f64,
}

/// An RGB image.
struct Rgb {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

fn read_png(path: &Path) -> Result<Rgb> {
    let io = |e: &dyn std::fmt::Display| Error::Io {
        what: format!("reading {}", path.display()),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| io(&e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| io(&e))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf).map_err(|e| io(&e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let px = buf[..w * h * channels]
        .chunks_exact(channels)
        .flat_map(|c| match channels {
            1 | 2 => [c[0], c[0], c[0]],
            _ => [c[0], c[1], c[2]],
        })
        .collect();
    Ok(Rgb { w, h, px })
}

impl Rgb {
    /// Nearest-neighbour scaled to height `h`, keeping the aspect ratio.
    fn to_height(&self, h: usize) -> Rgb {
        let w = (self.w * h).div_ceil(self.h).max(1);
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let sy = y * self.h / h;
            for x in 0..w {
                let sx = (x * self.w / w).min(self.w - 1);
                let at = (sy * self.w + sx) * 3;
                px.extend_from_slice(&self.px[at..at + 3]);
            }
        }
        Rgb { w, h, px }
    }
}

/// Height of one row of sweep.png, the width of its label and the gaps.
const ROW: usize = 240;
const LABEL: usize = 130;
const GAP: usize = 16;
const TITLE: usize = 40;

/// sweep.png in `out`: for each β in grid order, the first model's reconstruction, sample and latent-scatter
/// pictures of epoch `epoch` from its directory.
pub fn sweep_png(models: &[SweepModel], out: &Path) -> Result<()> {
    let mut rows: Vec<(String, Vec<Rgb>)> = Vec::new();
    for m in models {
        if rows.iter().any(|(b, _)| *b == format!("β = {}", m.beta)) {
            continue;
        }
        let e = m.epoch;
        let parts = [
            format!("reconstruction_{e}.png"),
            format!("sample_{e}.png"),
            "latent_scatter.png".to_string(),
        ]
        .iter()
        .map(|f| read_png(&m.dir.join(f)).map(|p| p.to_height(ROW)))
        .collect::<Result<Vec<_>>>()?;
        rows.push((format!("β = {}", m.beta), parts));
    }
    let width = LABEL
        + rows
            .iter()
            .map(|(_, p)| p.iter().map(|i| i.w + GAP).sum::<usize>())
            .max()
            .unwrap_or(0);
    let height = TITLE + rows.len() * (ROW + GAP);
    let mut buf = vec![255u8; width * height * 3];
    for (r, (_, parts)) in rows.iter().enumerate() {
        let (mut x0, y0) = (LABEL, TITLE + r * (ROW + GAP));
        for img in parts {
            for y in 0..img.h {
                let to = ((y0 + y) * width + x0) * 3;
                buf[to..to + img.w * 3]
                    .copy_from_slice(&img.px[y * img.w * 3..(y + 1) * img.w * 3]);
            }
            x0 += img.w + GAP;
        }
    }
    let path = out.join("sweep.png");
    fonts();
    {
        let root =
            BitMapBackend::with_buffer(&mut buf, (width as u32, height as u32)).into_drawing_area();
        let style = ("sans-serif", 22).into_font().color(&BLACK);
        let title = "each β's first model: test images over their reconstructions, prior samples, test latents";
        root.draw_text(
            title,
            &("sans-serif", 18).into_font().color(&BLACK),
            (10, 10),
        )
        .map_err(|e| plot_err(&path, e))?;
        for (r, (label, _)) in rows.iter().enumerate() {
            let y = (TITLE + r * (ROW + GAP) + ROW / 2) as i32 - 11;
            root.draw_text(label, &style, (12, y))
                .map_err(|e| plot_err(&path, e))?;
        }
        root.present().map_err(|e| plot_err(&path, e))?;
    }
    write_png(
        &path,
        width as u32,
        height as u32,
        png::ColorType::Rgb,
        &buf,
    )
}

/// One β's models as (KL, BCE) points, their mean and their spread.
type BetaGroup = (f32, Vec<(f64, f64)>, (f64, f64), (f64, f64));

/// rate_distortion.png in `out`: each model's test KL against its test BCE (per example), coloured by β, and each
/// β's mean with its spread (± one standard deviation over its models, where it has several).
pub fn rate_distortion_png(models: &[SweepModel], out: &Path) -> Result<()> {
    let path = out.join("rate_distortion.png");
    let mut betas: Vec<f32> = Vec::new();
    for m in models {
        if !betas.contains(&m.beta) {
            betas.push(m.beta);
        }
    }
    // Each β's models, mean and spread (± one standard deviation, where it has several models).
    let groups: Vec<BetaGroup> = betas
        .iter()
        .map(|&beta| {
            let pts: Vec<(f64, f64)> = models
                .iter()
                .filter(|m| m.beta == beta)
                .map(|m| (m.test_kl, m.test_bce))
                .collect();
            let n = pts.len() as f64;
            let mean = |f: fn(&(f64, f64)) -> f64| pts.iter().map(f).sum::<f64>() / n;
            let mu = (mean(|p| p.0), mean(|p| p.1));
            let sd = |f: fn(&(f64, f64)) -> f64, m: f64| {
                (pts.iter().map(|p| (f(p) - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
            };
            let spread = (sd(|p| p.0, mu.0), sd(|p| p.1, mu.1));
            (beta, pts, mu, spread)
        })
        .collect();
    // The axes hold every model and every bar.
    let range = |pick: fn((f64, f64)) -> f64| {
        let mut vals: Vec<f64> = Vec::new();
        for (_, pts, mu, sd) in &groups {
            vals.extend(pts.iter().map(|&p| pick(p)));
            vals.extend([pick(*mu) - pick(*sd), pick(*mu) + pick(*sd)]);
        }
        let (lo, hi) = vals
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.08).max(0.5);
        (lo - pad)..(hi + pad)
    };
    render(&path, (900, 700), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "rate against distortion on the test set (per example, last epoch)",
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(range(|p| p.0), range(|p| p.1))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("rate: KL(q(z|x) ‖ p(z)), nats")
            .y_desc("distortion: BCE, nats")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(e)?;
        for (i, (beta, pts, (mx, my), (sx, sy))) in groups.iter().enumerate() {
            let color = TAB10[i % TAB10.len()];
            let (mx, my, sx, sy) = (*mx, *my, *sx, *sy);
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 4, color.mix(0.6).filled())),
                )
                .map_err(e)?
                .label(format!("β = {beta} ({} models)", pts.len()))
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
            chart
                .draw_series([
                    PathElement::new(vec![(mx - sx, my), (mx + sx, my)], color.stroke_width(2)),
                    PathElement::new(vec![(mx, my - sy), (mx, my + sy)], color.stroke_width(2)),
                ])
                .map_err(e)?;
            chart
                .draw_series([Cross::new((mx, my), 7, color.stroke_width(3))])
                .map_err(e)?;
        }
        upper_right_legend(&mut chart)
    })
}
