//! The carpd binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = carpd::cli::Cli::parse();
    carpd::observe::logging::init_stderr(&cli.log_level);
    carpd::cli::run(cli)
}
