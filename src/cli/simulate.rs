//! `carpd simulate <vhid@ifname> <STATE>` and `carpd simulate reboot` (hidden): plays the
//! network for the simulated kernel — an election won or lost — or a reboot (next boot
//! identity, `net.inet.carp.*` back to defaults, demotion 0), so the lab and tests can drive
//! transitions and the demotion ledger's restore through the real binary. Refused on a real
//! kernel: carpd never forces a CARP state there, nor reboots anything.

use std::io::Write;

use crate::carp::{CarpState, GroupId};
use crate::kernel::KernelChoice;
use crate::kernel::sim::{Flavour, SimKernel};

use super::{Context, eprint_error};

pub fn run(ctx: &Context, target: &str, state: Option<&str>, out: &mut dyn Write) -> bool {
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
    let kernel = match SimKernel::open(flavour, ctx.sim_state.clone()) {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    if target == "reboot" {
        if let Some(s) = state {
            eprint_error(format!(
                "simulate reboot takes no state (got {s:?}): carpd simulate reboot"
            ));
            return false;
        }
        return match kernel.reboot() {
            Ok(boot) => {
                let _ = writeln!(
                    out,
                    "simulated kernel rebooted: boot {boot}, net.inet.carp.* back to defaults (demotion 0)"
                );
                true
            }
            Err(e) => {
                eprint_error(e);
                false
            }
        };
    }
    let Some(state) = state else {
        eprint_error(format!(
            "simulate {target}: give a state (carpd simulate 2@vmx1 MASTER), or use carpd simulate reboot"
        ));
        return false;
    };
    let (group, state) = match (target.parse::<GroupId>(), state.parse::<CarpState>()) {
        (Ok(g), Ok(s)) => (g, s),
        (Err(e), _) | (_, Err(e)) => {
            eprint_error(e);
            return false;
        }
    };
    match kernel.set_state(&group.ifname, group.vhid, state) {
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
