//! What a run leaves for people to look at: PNG grids of images, plots, and the pictures drawn from a model.

pub mod images;
pub mod pictures;
pub mod plots;
pub mod sweep;
