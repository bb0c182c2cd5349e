//! `vae`: the command-line program. Parsing and the commands live in `cli/`; the work is the library's.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
