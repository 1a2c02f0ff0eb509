//! `carpd simulate <vhid@ifname> <STATE>` (hidden): plays the network for the simulated
//! kernel — an election won or lost — so the lab and tests can drive transitions through the
//! real binary. Refused on a real kernel: carpd never forces a CARP state there.

use std::io::Write;

use crate::carp::{CarpState, GroupId};
use crate::kernel::KernelChoice;
use crate::kernel::sim::{Flavour, SimKernel};

use super::{Context, eprint_error};

pub fn run(ctx: &Context, group: &str, state: &str, out: &mut dyn Write) -> bool {
    let flavour = match ctx.kernel_choice {
        KernelChoice::Sim => Flavour::FreeBsd14,
        KernelChoice::Sim13 => Flavour::FreeBsd13,
        _ => {
            eprint_error(
                "simulate only drives the simulated kernel: add --kernel sim and --sim-state FILE",
            );
            return false;
        }
    };
    let (group, state) = match (group.parse::<GroupId>(), state.parse::<CarpState>()) {
        (Ok(g), Ok(s)) => (g, s),
        (Err(e), _) | (_, Err(e)) => {
            eprint_error(e);
            return false;
        }
    };
    let result = SimKernel::open(flavour, ctx.sim_state.clone())
        .and_then(|k| k.set_state(&group.ifname, group.vhid, state));
    match result {
        Ok(()) => {
            let _ = writeln!(out, "simulated kernel: {group} is now {state}");
            true
        }
        Err(e) => {
            eprint_error(e);
            false
        }
    }
}
