//! `carpd lab [--json] [--keep] [--storm-events N]`: runs the two-router drill
//! ([`crate::lab`]) on a runtime of its own; exit 0 when every invariant held.

use super::eprint_error;
use crate::lab::{self, LabOptions};

pub fn run(json: bool, keep: bool, storm_events: u32) -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprint_error(format!("cannot start the async runtime: {e}"));
            return false;
        }
    };
    let opts = LabOptions {
        json,
        keep,
        storm_events,
    };
    match rt.block_on(lab::run(&opts, Box::new(std::io::stdout()))) {
        Ok(ok) => ok,
        Err(e) => {
            eprint_error(format!("carpd lab could not run: {e}"));
            false
        }
    }
}
