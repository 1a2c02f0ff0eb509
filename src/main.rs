//! The carpd binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    carpd::cli::run(carpd::cli::Cli::parse())
}
