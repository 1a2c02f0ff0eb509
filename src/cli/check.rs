//! `carpd check [--online]`: validate the configuration, the permissions of every file holding
//! a secret (password files, the secretsmith file), and (when a kernel is reachable) the
//! interfaces and unicast capability. `--online` also logs in to Vault and reads every secret
//! (see `secrets.rs`) and checks the OVH credential's access rules against every call of a
//! claim, printing the rules or IAM actions to grant (`failover_ip::check_rights`). Prints every problem, then "configuration OK" or the count; exit 1 on
//! any problem.

use std::io::Write;

use crate::carp::Sysctl;
use crate::config::PasswordSource;
use crate::config::validate::kernel_problems;
use crate::kernel::{CARP_NOT_LOADED_HINT, KernelChoice, KernelError};
use crate::secrets::{check_private_file, resolve_password};

use super::Context;

pub fn run(ctx: &Context, online: bool, out: &mut dyn Write) -> bool {
    let config = match ctx.load_config() {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                let _ = writeln!(out, "{p}");
            }
            let _ = writeln!(out, "{} problem(s) found", e.problems.len());
            return false;
        }
    };
    let mut problems: Vec<String> = Vec::new();
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }

    problems.extend(crate::secrets::inline_password_problem(&config, ctx.policy));
    for g in &config.groups {
        if let Some(src @ PasswordSource::File(path)) = &g.password {
            if let Err(e) = check_private_file(
                path,
                &format!("password file of group {}", g.id),
                ctx.policy,
            ) {
                problems.push(format!(
                    "{}: {}.password: {e}",
                    config.file.display(),
                    g.key
                ));
            } else if let Err(e) = resolve_password(&g.id, src, ctx.policy) {
                problems.push(format!(
                    "{}: {}.password: {e}",
                    config.file.display(),
                    g.key
                ));
            }
        }
    }
    if let Some(v) = &config.vault
        && let Some(f) = &v.secretsmith
        && let Err(e) = check_private_file(
            f,
            "secretsmith file (it holds Vault credentials)",
            ctx.policy,
        )
    {
        problems.push(format!("{}: vault.secretsmith: {e}", config.file.display()));
    }
    if online {
        // Log in and read every Vault secret (groups' passwords: present and a valid key).
        problems.extend(super::secrets::check_vault(ctx, &config, out));
        // The OVH credential's rights against every call of a claim.
        problems.extend(super::failover_ip::check_rights(ctx, &config, out));
    }

    if let Some(crate::config::ovh::OvhConfig {
        credentials: crate::config::ovh::OvhCredentialSource::File(path),
        ..
    }) = &config.ovh
        && let Err(e) = check_private_file(path, "OVH credentials file", ctx.policy)
    {
        problems.push(format!("{}: ovh.credentials: {e}", config.file.display()));
    }

    // Kernel checks: always on FreeBSD and with an explicit backend; offline elsewhere.
    match ctx.open_kernel() {
        Ok(k) => {
            match k.interfaces() {
                Ok(ifs) => {
                    for p in kernel_problems(&config, &k.info(), &ifs) {
                        problems.push(p.to_string());
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
            // Interfaces are listed without CARP; `net.inet.carp` exists only with it.
            if let Err(e) = k.sysctl_get(Sysctl::Allow) {
                problems.push(carp_problem(&e));
            }
        }
        Err(e)
            if ctx.kernel_choice == KernelChoice::Auto
                && !cfg!(target_os = "freebsd")
                && !online =>
        {
            let _ = writeln!(out, "note: kernel checks skipped: {e}");
        }
        Err(e) => problems.push(e.to_string()),
    }

    for p in &problems {
        let _ = writeln!(out, "{p}");
    }
    if problems.is_empty() {
        let _ = writeln!(
            out,
            "configuration OK: {} (node {}, {} group(s))",
            config.file.display(),
            config.node,
            config.groups.len()
        );
        true
    } else {
        let _ = writeln!(out, "{} problem(s) found", problems.len());
        false
    }
}

/// A failed read of `net.inet.carp.allow`: "carp.ko not loaded" with the fix when that is
/// why (the sysctl tree is missing), else the error as it is.
fn carp_problem(e: &KernelError) -> String {
    if e.hint.as_deref() == Some(CARP_NOT_LOADED_HINT) {
        format!(
            "carp.ko not loaded ({}: {}): run `kldload carp`, and add carp_load=\"YES\" to /boot/loader.conf so it loads at boot (the rc.d script loads it before it starts carpd)",
            e.op, e.detail
        )
    } else {
        e.to_string()
    }
}
