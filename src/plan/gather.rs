//! The edges of planning: the desired state from the configuration (reading password sources)
//! and the observed state from the kernel. Everything else in `plan` is pure.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::config::validate::kernel_problems;
use crate::kernel::{Kernel, KernelError};
use crate::secrets::copy::LocalCopies;
use crate::secrets::{Resolver, SecretPolicy};

use super::{Desired, DesiredGroup, Observed};

/// Why a configuration cannot be applied to this kernel.
#[derive(Debug)]
pub enum NotApplicable {
    /// Listing the interfaces failed.
    Kernel(KernelError),
    /// The configuration does not fit this kernel (missing interfaces, unicast on 13.x).
    Fit(Vec<String>),
    /// Passwords that cannot be read.
    Secrets(Vec<String>),
}

/// What `carpd apply` and the daemon check before changing anything: the configuration fits
/// this kernel, and every password can be read. Returns the desired state.
pub fn desired_for(
    config: &Config,
    k: &dyn Kernel,
    policy: SecretPolicy,
) -> Result<Desired, NotApplicable> {
    let interfaces = k.interfaces().map_err(NotApplicable::Kernel)?;
    let problems = kernel_problems(config, &k.info(), &interfaces);
    if !problems.is_empty() {
        return Err(NotApplicable::Fit(
            problems.iter().map(ToString::to_string).collect(),
        ));
    }
    desired(config, policy).map_err(NotApplicable::Secrets)
}

/// Builds the desired state; every password that cannot be read is reported, none is shown.
pub fn desired(config: &Config, policy: SecretPolicy) -> Result<Desired, Vec<String>> {
    if let Some(p) = crate::secrets::inline_password_problem(config, policy) {
        return Err(vec![p]);
    }
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut resolver = Resolver::new(policy, config.vault.as_ref())
        .with_copies(LocalCopies::new(&config.maintenance.state_dir));
    for g in &config.groups {
        let key = match &g.password {
            None => None,
            Some(src) => match resolver.password(&g.id, src) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(format!("{}: {}: {e}", config.file.display(), g.key));
                    continue;
                }
            },
        };
        groups.push(DesiredGroup {
            id: g.id.clone(),
            advbase: g.advbase,
            advskew: g.advskew,
            key,
            peer: g.peer,
            peer6: g.peer6,
            addresses: g.addresses.clone(),
        });
    }
    if errors.is_empty() {
        Ok(Desired {
            sysctls: config.sysctls.clone(),
            groups,
            from_local_copy: resolver.from_copy,
        })
    } else {
        Err(errors)
    }
}

/// Reads the sysctls the configuration sets and every vhid of every configured interface.
pub fn observe(k: &dyn Kernel, desired: &Desired) -> Result<Observed, KernelError> {
    let mut obs = Observed::default();
    for (knob, _) in &desired.sysctls {
        obs.sysctls.insert(*knob, k.sysctl_get(*knob)?);
    }
    let interfaces: BTreeSet<&str> = desired
        .groups
        .iter()
        .map(|g| g.id.ifname.as_str())
        .collect();
    for ifname in interfaces {
        for g in k.groups(ifname)? {
            obs.groups.insert(g.id(), g);
        }
    }
    Ok(obs)
}
