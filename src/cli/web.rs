//! `vae web`: serve the latent-space explorer of a checkpoint, or export it as a static site.

use std::path::PathBuf;

use vae_wgpu::web::{self, Server};
use vae_wgpu::{Result, error};

use super::args::GpuArgs;

#[derive(clap::Args)]
pub struct WebArgs {
    /// A checkpoint written by `vae train` (<run>/checkpoint.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory with the IDX files the model was trained on: the test set's latent means are drawn on the pad
    /// (without its test files the page shows none, and says so).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Use only the first N test images for the latent means.
    #[arg(long, value_name = "N")]
    pub test_samples: Option<usize>,
    /// The Train view's training set: the first N training images (served to the page as an IDX file).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub train_samples: usize,
    /// Directory of the Train view's module, built by scripts/build-web [default: target/web of the source
    /// tree].
    #[arg(long, value_name = "DIR")]
    pub trainer: Option<PathBuf>,
    /// Address to listen on: 127.0.0.1 serves this machine only. Browsers offer WebGPU only to secure contexts
    /// (https, or localhost), so another machine reaching this one over plain http gets the page without WebGPU.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Write the site as static files into DIR (new or empty) instead of serving it; any web server can host it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["host", "port"])]
    pub export: Option<PathBuf>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn web(args: WebArgs) -> Result<()> {
    // Listen first, so that a port in use is reported at once, not after the test set is encoded.
    let server = match args.export {
        Some(_) => None,
        None => Some(Server::bind(&args.host, args.port)?),
    };
    let site = web::prepare(&web::Options {
        checkpoint: args.checkpoint.clone(),
        data: args.data.clone(),
        test_samples: args.test_samples,
        train_samples: args.train_samples,
        trainer: Some(
            args.trainer
                .clone()
                .unwrap_or_else(web::default_trainer_dir),
        ),
        gpu: (&args.gpu).into(),
    })?;
    let what = format!("the latent-space explorer of {}", args.checkpoint.display());
    if let Some(server) = server {
        println!("serving {what} at {} (Ctrl-C to stop)", server.url()?);
        if !server.local_addr()?.ip().is_loopback() {
            eprintln!(
                "note: browsers offer WebGPU only to secure contexts (https, or localhost): another machine \
                 opening this address over plain http gets the page without WebGPU; put https in front of it, or \
                 reach it through an SSH tunnel to localhost"
            );
        }
        return server.serve(site);
    }
    if let Some(dir) = &args.export {
        site.export(dir)?;
        println!(
            "wrote {what} to {} ({} files, {}); host it with any static web server, e.g. `python3 -m http.server \
             -d {}`, and open it over http (browsers do not run its modules from file://)",
            dir.display(),
            site.files().count(),
            error::bytes(site.size() as u64),
            dir.display()
        );
    }
    Ok(())
}
