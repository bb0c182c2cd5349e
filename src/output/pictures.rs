//! The pictures drawn from a trained model: `vae sample`, `reconstruct`, `interpolate` and `latent`, and the
//! pictures written at the end of training.

use std::path::Path;

use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::kernels::gather::ByteMatrix;
use crate::kernels::philox::{Philox, stream};
use crate::model::inference::Inference;
use crate::output::images::Grid;
use crate::output::plots;

fn tile(split: &Split) -> (usize, usize) {
    (split.rows, split.cols)
}

/// Decodes `side`² latent codes and saves them as a `side`×`side` grid.
fn decoded_grid(
    inf: &Inference,
    z: &[f32],
    side: usize,
    tile: (usize, usize),
    path: &Path,
) -> Result<()> {
    let images = inf.decode(z)?;
    let px = tile.0 * tile.1;
    let mut grid = Grid::new(side, side, tile);
    for i in 0..side * side {
        grid.put(i, &images[i * px..(i + 1) * px]);
    }
    grid.save(path)
}

/// `vae sample`: an `side`×`side` grid of images decoded from z ~ N(0, I) drawn from Philox under `seed`.
pub fn sample_grid(
    inf: &Inference,
    side: usize,
    seed: u64,
    tile: (usize, usize),
    path: &Path,
) -> Result<()> {
    let l = inf.net.config.latent as usize;
    let mut rng = Philox::new(seed, stream::SAMPLE);
    let z: Vec<f32> = (0..side * side * l).map(|_| rng.normal()).collect();
    decoded_grid(inf, &z, side, tile, path)
}

/// `vae reconstruct`: the first `n` test images (top row) over their reconstructions (bottom row).
pub fn reconstruct(
    inf: &Inference,
    data: &ByteMatrix,
    split: &Split,
    n: usize,
    path: &Path,
) -> Result<()> {
    let n = n.min(split.n);
    let idx: Vec<u32> = (0..n as u32).collect();
    let recon = inf.encode(data, &idx)?.recon;
    let px = split.pixels();
    let mut grid = Grid::new(2, n, tile(split));
    for i in 0..n {
        let x: Vec<f32> = split.image(i).iter().map(|&b| b as f32 / 255.0).collect();
        grid.put(i, &x);
        grid.put(n + i, &recon[i * px..(i + 1) * px]);
    }
    grid.save(path)
}

/// `vae interpolate`: `pairs` rows, each test image a, the decoded straight line from μ(a) to μ(b) in `steps`
/// points, then test image b.
pub fn interpolate(
    inf: &Inference,
    data: &ByteMatrix,
    split: &Split,
    pairs: usize,
    steps: usize,
    path: &Path,
) -> Result<()> {
    let l = inf.net.config.latent as usize;
    let pairs = pairs.min(split.n / 2).max(1);
    let idx: Vec<u32> = (0..2 * pairs as u32).collect();
    let mu = inf.encode(data, &idx)?.mu;
    let mut z = Vec::new();
    for p in 0..pairs {
        let (a, b) = (
            &mu[2 * p * l..(2 * p + 1) * l],
            &mu[(2 * p + 1) * l..(2 * p + 2) * l],
        );
        for s in 0..steps {
            let t = s as f32 / (steps - 1).max(1) as f32;
            z.extend((0..l).map(|j| a[j] + t * (b[j] - a[j])));
        }
    }
    let images = inf.decode(&z)?;
    let px = split.pixels();
    let mut grid = Grid::new(pairs, steps + 2, tile(split));
    for p in 0..pairs {
        let grey = |i: usize| {
            split
                .image(i)
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect::<Vec<_>>()
        };
        grid.put(p * (steps + 2), &grey(2 * p));
        for s in 0..steps {
            let k = p * steps + s;
            grid.put(p * (steps + 2) + 1 + s, &images[k * px..(k + 1) * px]);
        }
        grid.put(p * (steps + 2) + steps + 1, &grey(2 * p + 1));
    }
    grid.save(path)
}

/// The manifold of the paper's Figure 4: a `side`×`side` grid on the unit square, mapped through the inverse
/// normal CDF to z and decoded (2-D latent spaces only).
pub fn manifold(inf: &Inference, side: usize, tile: (usize, usize), path: &Path) -> Result<()> {
    if inf.net.config.latent != 2 {
        return Err(Error::Invalid(format!(
            "the manifold is drawn for 2-D latent spaces; this model has {}",
            inf.net.config.latent
        )));
    }
    let mut z = Vec::with_capacity(side * side * 2);
    for row in 0..side {
        for col in 0..side {
            // Rows go down the image, so the second coordinate decreases with the row.
            let u = (col as f64 + 0.5) / side as f64;
            let v = 1.0 - (row as f64 + 0.5) / side as f64;
            z.push(plots::normal_quantile(u) as f32);
            z.push(plots::normal_quantile(v) as f32);
        }
    }
    decoded_grid(inf, &z, side, tile, path)
}

/// The test set's latent means coloured by digit; for more than 2 dimensions, their first two principal
/// components (and the plot says so).
pub fn latent_scatter(
    inf: &Inference,
    data: &ByteMatrix,
    split: &Split,
    path: &Path,
) -> Result<()> {
    let l = inf.net.config.latent as usize;
    let idx: Vec<u32> = (0..split.n as u32).collect();
    let mu = inf.encode(data, &idx)?.mu;
    let (points, title, axes) = if l == 2 {
        (
            mu.chunks(2).map(|c| (c[0], c[1])).collect::<Vec<_>>(),
            "latent means μ(x) of the test set".to_string(),
            ("z₁".to_string(), "z₂".to_string()),
        )
    } else if l == 1 {
        (
            mu.iter()
                .zip(&split.labels)
                .map(|(&m, &d)| (m, d as f32))
                .collect(),
            "latent means μ(x) of the test set (1-D, by digit)".to_string(),
            ("z".to_string(), "digit".to_string()),
        )
    } else {
        let (p, share) = plots::pca2(&mu, l);
        (
            p,
            format!("first two principal components of the {l}-D latent means"),
            (
                format!("PC1 ({:.0}% of variance)", 100.0 * share[0]),
                format!("PC2 ({:.0}% of variance)", 100.0 * share[1]),
            ),
        )
    };
    plots::scatter(path, &points, &split.labels, &title, (&axes.0, &axes.1))
}

/// The training curve from metrics.csv's text.
pub fn curve_from_metrics(csv: &str, path: &Path, title: &str) -> Result<()> {
    let rows: Vec<plots::CurveRow> = csv
        .lines()
        .skip(1)
        .filter_map(|line| {
            let v: Vec<f64> = line.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() >= 7).then(|| (v[0] as u32, v[1], v[2], v[3], v[4], v[5], v[6]))
        })
        .collect();
    plots::training_curve(path, &rows, title)
}

/// Everything drawn at the end of a run: the curve, the scatter and (2-D) the manifold.
pub fn end_of_training(inf: &Inference, test: &Split, csv: &str, out: &Path) -> Result<()> {
    let model = inf.net.config;
    let data = ByteMatrix::upload(inf.gpu, "test.images", &test.images, model.pixels)?;
    curve_from_metrics(
        csv,
        &out.join("training_curve.png"),
        &format!("{}-{}-{} VAE", model.pixels, model.hidden, model.latent),
    )?;
    latent_scatter(inf, &data, test, &out.join("latent_scatter.png"))?;
    if model.latent == 2 {
        manifold(inf, 20, tile(test), &out.join("manifold.png"))?;
    }
    Ok(())
}
