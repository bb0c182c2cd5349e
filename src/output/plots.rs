//! Plots with labelled axes and legends (plotters, drawing text with the embedded DejaVu Sans so it works on a
//! machine with no fonts installed), written as PNG through [`crate::output::images::write_png`].

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::output::images::write_png;

pub(crate) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid TrueType; failing to parse it would be a build defect, not a user error.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font does not parse"));
    });
}

pub(crate) fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        what: format!("drawing {}", path.display()),
        message: e.to_string(),
    }
}

/// Renders `draw` on a white RGB canvas of `size` and writes it to `path`.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        DrawingArea<BitMapBackend, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    fonts();
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw(root.clone()).map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_png(path, size.0, size.1, png::ColorType::Rgb, &buf)
}

/// A named line of the curve: label, colour, and the value it takes from a row.
type Series = (&'static str, RGBColor, fn(&CurveRow) -> f64);

/// One epoch's per-sample losses: (epoch, train loss, train BCE, train KL, test loss, test BCE, test KL).
pub type CurveRow = (u32, f64, f64, f64, f64, f64, f64);

/// The training curve: loss and BCE (left) and KL (right) per epoch, train solid and test dashed-by-colour.
pub fn training_curve(path: &Path, rows: &[CurveRow], title: &str) -> Result<()> {
    render(path, (1000, 450), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let root = root.titled(title, ("sans-serif", 20)).map_err(e)?;
        let (left, right) = root.split_horizontally(560);
        let last = rows.iter().map(|r| r.0).max().unwrap_or(1).max(2);
        let first = rows.iter().map(|r| r.0).min().unwrap_or(1);
        let span = |vals: &[f64]| {
            let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let pad = ((hi - lo) * 0.08).max(0.5);
            (lo - pad)..(hi + pad)
        };
        let panels: [(&DrawingArea<_, _>, &str, Vec<Series>); 2] = [
            (
                &left,
                "loss per example (nats)",
                vec![
                    ("train loss", RGBColor(31, 119, 180), |r| r.1),
                    ("test loss", RGBColor(214, 39, 40), |r| r.4),
                    ("train BCE", RGBColor(158, 202, 225), |r| r.2),
                    ("test BCE", RGBColor(252, 146, 114), |r| r.5),
                ],
            ),
            (
                &right,
                "KL per example (nats)",
                vec![
                    ("train KL", RGBColor(31, 119, 180), |r| r.3),
                    ("test KL", RGBColor(214, 39, 40), |r| r.6),
                ],
            ),
        ];
        for (area, ylabel, series) in panels {
            let vals: Vec<f64> = series
                .iter()
                .flat_map(|(_, _, f)| rows.iter().map(f))
                .collect();
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(first..last, span(&vals))
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ylabel)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            for (name, color, f) in series {
                let pts: Vec<(u32, f64)> = rows.iter().map(|r| (r.0, f(r))).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(e)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    })
}

/// Ten distinguishable colours (matplotlib's tab10), one per digit.
pub const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A scatter of 2-D points coloured by label (0..=9) with a legend.
pub fn scatter(
    path: &Path,
    points: &[(f32, f32)],
    labels: &[u8],
    title: &str,
    axes: (&str, &str),
) -> Result<()> {
    render(path, (820, 760), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let lo_hi = |f: fn(&(f32, f32)) -> f32| {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for p in points {
                lo = lo.min(f(p));
                hi = hi.max(f(p));
            }
            let pad = ((hi - lo) * 0.05).max(0.1);
            (lo - pad)..(hi + pad)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo_hi(|p| p.0), lo_hi(|p| p.1))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(e)?;
        for digit in 0..10u8 {
            let color = TAB10[digit as usize];
            let pts: Vec<(f32, f32)> = points
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == digit)
                .map(|(p, _)| *p)
                .collect();
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
                )
                .map_err(e)?
                .label(format!("{digit}"))
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
        }
        upper_right_legend(&mut chart)
    })
}

/// The legend of `chart`'s labelled series, in its upper right corner on a pale background.
pub(crate) fn upper_right_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The plane of the first two principal components of points in d dimensions: their mean, the two unit
/// components (orthogonal) and the share of variance each explains.
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    pub mean: Vec<f64>,
    pub components: [Vec<f64>; 2],
    pub share: [f64; 2],
}

impl Pca {
    /// The first two principal components of `x` (n, d), d ≥ 2: power iteration with deflation on the d×d
    /// covariance, in f64.
    pub fn fit(x: &[f32], d: usize) -> Pca {
        let n = x.len() / d;
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x[i * d + j] as f64).sum::<f64>() / n as f64)
            .collect();
        let mut cov = vec![0f64; d * d];
        for i in 0..n {
            for a in 0..d {
                let xa = x[i * d + a] as f64 - mean[a];
                for b in 0..d {
                    cov[a * d + b] += xa * (x[i * d + b] as f64 - mean[b]) / n as f64;
                }
            }
        }
        let total: f64 = (0..d).map(|j| cov[j * d + j]).sum();
        let mut comps = Vec::new();
        let mut share = [0.0; 2];
        for (c, s) in share.iter_mut().enumerate() {
            let mut v: Vec<f64> = (0..d).map(|j| 1.0 + (j * 7 + c) as f64 % 3.0).collect();
            let mut lambda = 0.0;
            for _ in 0..500 {
                let w: Vec<f64> = (0..d)
                    .map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum())
                    .collect();
                let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
                lambda = norm;
                v = w.iter().map(|x| x / norm).collect();
            }
            for a in 0..d {
                for b in 0..d {
                    cov[a * d + b] -= lambda * v[a] * v[b];
                }
            }
            *s = lambda / total.max(1e-300);
            comps.push(v);
        }
        let [c0, c1]: [Vec<f64>; 2] = comps.try_into().expect("two components");
        Pca {
            mean,
            components: [c0, c1],
            share,
        }
    }

    /// The coordinates of point `p` (d values) in the plane: its offsets from the mean along each component.
    pub fn project(&self, p: &[f32]) -> (f32, f32) {
        let along = |v: &[f64]| {
            (0..v.len())
                .map(|j| (p[j] as f64 - self.mean[j]) * v[j])
                .sum::<f64>() as f32
        };
        (along(&self.components[0]), along(&self.components[1]))
    }
}

/// The first two principal components of `x` (n, d): the projections (n, 2) and the share of variance each
/// explains (see [`Pca`]).
pub fn pca2(x: &[f32], d: usize) -> (Vec<(f32, f32)>, [f64; 2]) {
    let pca = Pca::fit(x, d);
    let proj = x.chunks_exact(d).map(|p| pca.project(p)).collect();
    (proj, pca.share)
}
