//! Ctrl-C. The first interrupt asks the run to stop at the next step boundary (the trainer checks between
//! submissions and writes a checkpoint at that exact step); a second one exits at once (checkpoints are renamed
//! into place whole, so the last complete one stays intact). The binary installs the handler; the library only
//! reads the flag, so tests of the library never see an interrupt they did not ask for.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNT: AtomicU32 = AtomicU32::new(0);

/// Whether the user asked the run to stop.
pub fn requested() -> bool {
    count() > 0
}

/// How many times Ctrl-C was pressed.
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

#[cfg(not(target_arch = "wasm32"))]
/// Installs the Ctrl-C handler (SIGINT, and the console's Ctrl-C on Windows). The ctrlc crate does this
/// portably, on a thread of its own, which is what a handler that prints and exits needs.
pub fn install() -> Result<(), String> {
    ctrlc::set_handler(|| {
        if COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!(
                "\ninterrupted: stopping at the next step boundary and writing a checkpoint there (Ctrl-C again to exit at once)"
            );
        } else {
            eprintln!("\ninterrupted again: exiting now; the last complete checkpoint is intact");
            std::process::exit(130);
        }
    })
    .map_err(|e| e.to_string())
}
