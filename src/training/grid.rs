//! The grid `vae sweep` trains (issue 25): lists of β, seeds and learning rates, checked, and their cross product
//! in a fixed order, each point named for its output directory. Checked before anything is loaded, like
//! [`super::options::TrainOptions::check`], with the same kind of message: the option, what is wrong, the fix.

use crate::error::{Error, Result};

/// The most models one sweep trains in one batched step; a larger grid is split into several sweeps.
pub const MAX_MODELS: usize = crate::kernels::contract::MAX_MODELS as usize;

/// One model of a sweep: what differs between the models (shapes, data and schedule are shared).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridPoint {
    pub beta: f32,
    pub seed: u64,
    pub lr: f32,
    /// Epochs of the KL weight's linear warm-up.
    pub kl_warmup: f32,
    /// Dynamic binarization of the training images.
    pub binarize: bool,
}

impl GridPoint {
    /// The model's output directory under the sweep's, e.g. `beta0.5-seed2-lr0.001` (Rust's shortest
    /// round-tripping decimal of each value, so two points of one grid never share a name).
    pub fn dir_name(&self) -> String {
        format!("beta{}-seed{}-lr{}", self.beta, self.seed, self.lr)
    }
}

/// The values given for each of the sweep's options, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub betas: Vec<f32>,
    pub seeds: Vec<u64>,
    pub lrs: Vec<f32>,
    pub warmups: Vec<f32>,
    pub binarize: Vec<bool>,
}

impl Grid {
    /// Parses `--beta`, `--seeds` and `--lr` (each a comma-separated list). Refuses an empty list or entry, a
    /// value that is not a number, a negative or non-finite β, a learning rate that is not positive and finite,
    /// a value given twice in one list (as written or as parsed: `1` and `1.0`), and a cross product of more
    /// than [`MAX_MODELS`] models.
    pub fn parse(beta: &str, seeds: &str, lr: &str) -> Result<Grid> {
        Grid::parse_all((beta, seeds, lr), ("0", "no"))
    }

    /// [`Grid::parse`] with the warm-up (`--kl-warmup`, epochs ≥ 0) and the binarization (`--binarize`, `no` and
    /// `yes`) as axes of the grid too.
    pub fn parse_all(
        (beta, seeds, lr): (&str, &str, &str),
        (warmup, binarize): (&str, &str),
    ) -> Result<Grid> {
        let betas = list("--beta", beta, "a number", |b: f32| {
            (b.is_finite() && b >= 0.0)
                .then_some(())
                .ok_or("the KL weight must be a finite number ≥ 0")
        })?;
        let seeds = list("--seeds", seeds, "a whole number ≥ 0", |_: u64| Ok(()))?;
        let lrs = list("--lr", lr, "a number", |l: f32| {
            (l.is_finite() && l > 0.0)
                .then_some(())
                .ok_or("the learning rate must be a positive finite number")
        })?;
        let warmups = list("--kl-warmup", warmup, "a number", |w: f32| {
            (w.is_finite() && w >= 0.0)
                .then_some(())
                .ok_or("give a number of epochs ≥ 0")
        })?;
        let binarize = list("--binarize", binarize, "no or yes", |_: YesNo| Ok(()))?
            .into_iter()
            .map(|b| b.0)
            .collect::<Vec<_>>();
        let models = betas.len() * seeds.len() * lrs.len() * warmups.len() * binarize.len();
        if models > MAX_MODELS {
            let schedules = match warmups.len() * binarize.len() {
                1 => String::new(),
                n => format!(" × {n} warm-up and binarization settings"),
            };
            return Err(Error::Invalid(format!(
                "{} β × {} seeds × {} learning rates{schedules} is {models} models; a sweep trains at most \
                 {MAX_MODELS} in one step: split the grid into several sweeps",
                betas.len(),
                seeds.len(),
                lrs.len()
            )));
        }
        Ok(Grid {
            betas,
            seeds,
            lrs,
            warmups,
            binarize,
        })
    }

    /// Model `p`'s directory: [`GridPoint::dir_name`], with its warm-up and its binarization where the grid has
    /// more than one of them.
    pub fn dir_name(&self, p: &GridPoint) -> String {
        let mut name = p.dir_name();
        if self.warmups.len() > 1 {
            name += &format!("-warmup{}", p.kl_warmup);
        }
        if self.binarize.len() > 1 {
            name += if p.binarize { "-binarized" } else { "-grey" };
        }
        name
    }

    /// Every (β, seed, learning rate), β slowest and the learning rate fastest: model i of the sweep is
    /// `points()[i]`, and a resumed sweep finds its models in the same order.
    pub fn points(&self) -> Vec<GridPoint> {
        let mut out = Vec::with_capacity(self.betas.len() * self.seeds.len() * self.lrs.len());
        for &beta in &self.betas {
            for &seed in &self.seeds {
                for &lr in &self.lrs {
                    for &kl_warmup in &self.warmups {
                        for &binarize in &self.binarize {
                            out.push(GridPoint {
                                beta,
                                seed,
                                lr,
                                kl_warmup,
                                binarize,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// `no` or `yes` (also `false` or `true`), as `--binarize` lists them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct YesNo(bool);

impl std::str::FromStr for YesNo {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "no" | "false" => Ok(YesNo(false)),
            "yes" | "true" => Ok(YesNo(true)),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for YesNo {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if self.0 { "yes" } else { "no" })
    }
}

/// One option's comma-separated values, each parsed (as `kind` says) and checked by `ok`, none twice.
fn list<T: std::str::FromStr + PartialEq + std::fmt::Display + Copy>(
    option: &str,
    text: &str,
    kind: &str,
    ok: impl Fn(T) -> std::result::Result<(), &'static str>,
) -> Result<Vec<T>> {
    let bad = |why: String| Err(Error::Invalid(format!("{option} {text}: {why}")));
    if text.trim().is_empty() {
        return bad("give at least one value, e.g. 0.5,1,2".into());
    }
    let mut values: Vec<T> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            return bad("an empty entry: separate the values by single commas".into());
        }
        let Ok(v) = entry.parse::<T>() else {
            return bad(format!("\"{entry}\" is not {kind}"));
        };
        if let Err(why) = ok(v) {
            return bad(format!("{entry}: {why}"));
        }
        if values.contains(&v) {
            return bad(format!(
                "{v} is given twice: each model of a sweep must differ from the others"
            ));
        }
        values.push(v);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(beta: &str, seeds: &str, lr: &str) -> String {
        match Grid::parse(beta, seeds, lr) {
            Ok(g) => panic!("{beta} / {seeds} / {lr} was accepted: {g:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_cross_product_in_order_with_distinct_names() {
        let g = Grid::parse("0.25, 1,4", "1,2", "1e-3,0.0003").unwrap();
        assert_eq!(g.betas, [0.25, 1.0, 4.0]);
        assert_eq!(g.seeds, [1, 2]);
        let p = g.points();
        assert_eq!(p.len(), 12);
        assert_eq!(
            p[0],
            GridPoint {
                beta: 0.25,
                seed: 1,
                lr: 1e-3,
                kl_warmup: 0.0,
                binarize: false,
            }
        );
        assert_eq!(
            p[3],
            GridPoint {
                beta: 0.25,
                seed: 2,
                lr: 3e-4,
                kl_warmup: 0.0,
                binarize: false,
            }
        );
        assert_eq!(p[11].beta, 4.0);
        assert_eq!(p[0].dir_name(), "beta0.25-seed1-lr0.001");
        let mut names: Vec<String> = p.iter().map(GridPoint::dir_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 12);
    }

    /// Warm-up and binarization as axes: in the cross product after the learning rate, named only where the
    /// grid has several; refused as the others are.
    #[test]
    fn warm_ups_and_binarizations_are_axes_too() {
        let g = Grid::parse_all(("1", "1,2", "1e-3"), ("0,2", "no,yes")).unwrap();
        let p = g.points();
        assert_eq!(p.len(), 8);
        assert_eq!((p[1].kl_warmup, p[1].binarize), (0.0, true));
        assert_eq!((p[2].kl_warmup, p[2].binarize), (2.0, false));
        assert_eq!(g.dir_name(&p[3]), "beta1-seed1-lr0.001-warmup2-binarized");
        let one = Grid::parse_all(("1", "1", "1e-3"), ("1.5", "yes")).unwrap();
        assert_eq!(one.dir_name(&one.points()[0]), "beta1-seed1-lr0.001");
        let e = Grid::parse_all(("1", "1", "1e-3"), ("0", "maybe"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--binarize maybe") && e.contains("no or yes"),
            "{e}"
        );
        let e = Grid::parse_all(("1", "1", "1e-3"), ("-1", "no"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--kl-warmup -1"), "{e}");
        let e = Grid::parse_all(("1", "1", "1e-3"), ("0", "yes,true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn a_single_model_is_a_grid_too() {
        let g = Grid::parse("1", "7", "0.001").unwrap();
        assert_eq!(
            g.points(),
            [GridPoint {
                beta: 1.0,
                seed: 7,
                lr: 1e-3,
                kl_warmup: 0.0,
                binarize: false,
            }]
        );
    }

    #[test]
    fn bad_grids_are_refused_with_the_option_and_the_fix() {
        let e = refused("", "1", "1e-3");
        assert!(
            e.contains("--beta") && e.contains("at least one value"),
            "{e}"
        );
        let e = refused("1,,2", "1", "1e-3");
        assert!(e.contains("empty entry"), "{e}");
        let e = refused("-0.5", "1", "1e-3");
        assert!(e.contains("--beta -0.5") && e.contains("≥ 0"), "{e}");
        let e = refused("nan", "1", "1e-3");
        assert!(e.contains("finite"), "{e}");
        let e = refused("1,1.0", "1", "1e-3");
        assert!(e.contains("given twice"), "{e}");
        let e = refused("1", "1,x", "1e-3");
        assert!(
            e.contains("--seeds") && e.contains("\"x\" is not a whole number"),
            "{e}"
        );
        let e = refused("1", "-1", "1e-3");
        assert!(e.contains("\"-1\" is not a whole number ≥ 0"), "{e}");
        let e = refused("1", "3,3", "1e-3");
        assert!(e.contains("3 is given twice"), "{e}");
        let e = refused("1", "1", "0");
        assert!(e.contains("--lr 0") && e.contains("positive"), "{e}");
    }

    #[test]
    fn more_than_256_models_is_refused_and_256_is_not() {
        let seeds = |n: u64| (1..=n).map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(
            Grid::parse("0.5,1", &seeds(128), "1e-3")
                .unwrap()
                .points()
                .len(),
            256
        );
        let e = refused("0.5,1", &seeds(129), "1e-3");
        assert!(e.contains("258 models") && e.contains("at most 256"), "{e}");
    }
}
