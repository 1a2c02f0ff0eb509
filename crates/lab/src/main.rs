//! `carpd-lab [--json] [--keep] [--storm-events N]`: carpd's main job on embedded defaults,
//! with no FreeBSD and no cloud. Runs the two-router drill ([`drill`]) on a runtime of its
//! own; exit 0 when every invariant held, 1 otherwise.

mod drill;
mod election;

use std::process::ExitCode;

use clap::Parser;

/// The two-router drill on simulators (no FreeBSD, no cloud): election, failure, return with
/// preempt, split brain and healing, flap storm; prints a timeline with measured latencies
/// and exits 1 if an invariant is violated.
#[derive(Debug, Parser)]
#[command(name = "carpd-lab", version)]
struct Args {
    /// Print the report as JSON instead of the timeline.
    #[arg(long)]
    json: bool,
    /// Keep the working directory (configurations, kernel state files).
    #[arg(long)]
    keep: bool,
    /// Events per router in the flap storm.
    #[arg(long, default_value_t = 10_000)]
    storm_events: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            carpd::cli::eprint_error(format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let opts = drill::LabOptions {
        json: args.json,
        keep: args.keep,
        storm_events: args.storm_events,
    };
    match rt.block_on(drill::run(&opts, Box::new(std::io::stdout()))) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            carpd::cli::eprint_error(format!("carpd-lab could not run: {e}"));
            ExitCode::FAILURE
        }
    }
}
