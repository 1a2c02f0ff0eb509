//! The command line: one clap definition for every subcommand and global option, and the
//! dispatch to one module per subcommand.
//!
//! Exit codes (documented in the README and carpd(8)): 0 success; 1 the command ran and found
//! problems or failed (invalid configuration, kernel error); 2 usage error (clap's default).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError};
use crate::control;
use crate::kernel::{self, Kernel, KernelChoice};
use crate::observe::logging::{self, LogTarget};
use crate::secrets::SecretPolicy;

mod check;
pub mod failover_ip;
mod hook;
mod maintenance;
mod plan;
mod reconcile;
mod reload;
mod run;
mod secrets;
mod simulate;
mod status;

/// Exit code when the command ran and found problems or failed.
pub const EXIT_FAILURE: u8 = 1;

/// Exit code for a usage error (clap's, and malformed `hook` arguments).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "carpd",
    version,
    about = "Controller for FreeBSD kernel CARP: configure groups, watch state, move failover IPs",
    after_help = "Exit status: 0 success, 1 problems found or an operation failed, 2 usage error."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", env = "CARPD_CONFIG", global = true,
          default_value = config::DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,

    /// Kernel backend: auto (netlink on FreeBSD 14+, else ioctl), netlink, ioctl, or a
    /// simulated kernel (sim: FreeBSD 14+, sim13: FreeBSD 13 without unicast).
    #[arg(
        long,
        value_enum,
        env = "CARPD_KERNEL",
        global = true,
        default_value = "auto"
    )]
    pub kernel: KernelChoice,

    /// State file of the simulated kernel, shared between invocations (--kernel sim/sim13).
    #[arg(long, env = "CARPD_SIM_STATE", global = true, value_name = "FILE")]
    pub sim_state: Option<PathBuf>,

    /// Accept secret files (passwords, a configuration with inline passwords) that are not
    /// root-only. For tests and labs only.
    #[arg(long, global = true)]
    pub allow_insecure_files: bool,

    /// Log level: error, warn, info, debug or trace [default: info for run, hook and
    /// reconcile, warn for the others].
    #[arg(long, env = "CARPD_LOG", global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Where log lines go: syslog (facility daemon, ident carpd), stderr, or auto (syslog
    /// when stderr is not a terminal, as for the service and the devd hook).
    #[arg(
        long,
        value_enum,
        env = "CARPD_LOG_TARGET",
        global = true,
        default_value = "auto"
    )]
    pub log_target: LogTarget,

    /// The local syslog socket (default /var/run/log on FreeBSD, /dev/log elsewhere).
    #[arg(long, global = true, hide = true, value_name = "PATH")]
    pub syslog_socket: Option<PathBuf>,

    /// The daemon's control socket, used by run, status, reload, hook and reconcile.
    #[arg(long, env = "CARPD_CONTROL_SOCKET", global = true,
          default_value = control::DEFAULT_SOCKET, value_name = "PATH")]
    pub control_socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and permissions; print every problem.
    Check {
        /// Also read every secret from its source (logging in to Vault) and query the kernel.
        #[arg(long)]
        online: bool,
    },
    /// Secrets carpd reads from Vault/OpenBao.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Show every vhid on every interface, the sysctls, demotion and CARP statistics.
    Status {
        /// Machine-readable output (schema carpd.status.v1).
        #[arg(long)]
        json: bool,
    },
    /// Show the minimal changes that would make the kernel match the configuration.
    Plan,
    /// Make the kernel match the configuration with the minimal changes.
    Apply {
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the controller: apply the configuration, then follow devd events and the kernel
    /// until SIGTERM; SIGHUP reloads the configuration.
    Run {
        /// Only watch and report: change neither the kernel (not even at start-up) nor OVH
        /// (failover IPs are located and shown, never claimed).
        #[arg(long)]
        no_apply: bool,
        /// devd's SOCK_SEQPACKET socket.
        #[arg(long, env = "CARPD_DEVD_SOCKET", default_value = crate::devd::DEFAULT_SOCKET,
              value_name = "PATH")]
        devd_socket: PathBuf,
    },
    /// Ask the running daemon to reload its configuration; prints whether it was accepted.
    Reload,
    /// The devd action: `carpd hook <vhid@ifname> <MASTER|BACKUP|INIT>`. Nudges the daemon,
    /// or, without one, starts a one-shot reconcile of the group in the background.
    Hook {
        /// devd's $subsystem, e.g. 2@vmx1.
        group: String,
        /// devd's $type: MASTER, BACKUP or INIT.
        state: String,
    },
    /// Reconcile these groups once, now (what the hook runs when no daemon does). With a
    /// running daemon, nudges it instead.
    Reconcile {
        /// Groups as vhid@ifname, e.g. 2@vmx1.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Simulated kernel only: set a vhid's state as an election would (`simulate 2@vmx1
    /// MASTER`), or reboot it (`simulate reboot`: next boot identity, sysctls and demotion
    /// back to their defaults). For the lab and tests.
    #[command(hide = true)]
    Simulate {
        /// vhid@ifname, or `reboot`.
        target: String,
        /// MASTER, BACKUP or INIT (not with `reboot`).
        state: Option<String>,
    },
    /// Demote this node on purpose so the peer takes over (a ledger in maintenance.state_dir
    /// records it; it survives reboots), and undo exactly that.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// OVH failover IPs: where they are, and claiming them now.
    #[command(name = "failover-ip", subcommand)]
    FailoverIp(FailoverIpCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Log in to Vault as the daemon would and read every configured secret; report field
    /// names present or missing and the token's TTL and policies, never a value.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Add maintenance.demotion (default 240) to net.inet.carp.demotion, recorded in the
    /// ledger first. Does nothing if already in maintenance.
    Enter {
        /// Then wait until every managed group is BACKUP here and every failover IP is bound
        /// to another node.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits before failing (exit 1) with what did not happen.
        #[arg(long, default_value = "60s", value_name = "DURATION",
              value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Remove exactly the demotion `enter` added (never the kernel's or pfsync's part).
    Leave,
    /// The ledger's entries, carpd's part of the demotion, the kernel's level and the rest.
    Status {
        /// Machine-readable output (schema carpd.maintenance-status.v1).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FailoverIpCommand {
    /// Each failover IP: where OVH has it, where it should be given the local CARP state.
    Status {
        /// Machine-readable output (schema carpd.failover-ip-status.v1).
        #[arg(long)]
        json: bool,
    },
    /// Move a failover IP to this node now (the group must be MASTER here).
    Claim {
        /// The failover IP, as in failover_ips.
        ip: String,
        /// Show what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow removing the last IP of the other virtual MAC (OVH then deletes that vMAC).
        #[arg(long)]
        force: bool,
    },
}

/// Everything a subcommand needs from the global options.
pub struct Context {
    pub config_path: PathBuf,
    pub kernel_choice: KernelChoice,
    pub sim_state: Option<PathBuf>,
    pub policy: SecretPolicy,
    pub control_socket: PathBuf,
    pub log_level: String,
    pub log_target: LogTarget,
    pub syslog_socket: Option<PathBuf>,
    /// Log lines go to syslog, not to this terminal: errors meant for the operator must be
    /// printed as well.
    pub syslog: bool,
}

impl Context {
    pub fn open_kernel(&self) -> Result<Box<dyn Kernel>, kernel::KernelError> {
        kernel::open(self.kernel_choice, self.sim_state.clone())
    }

    pub fn load_config(&self) -> Result<Config, ConfigError> {
        config::load(&self.config_path)
    }
}

/// Sets up logging and runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let log_level = cli.log_level.unwrap_or_else(|| {
        match cli.command {
            Command::Run { .. } | Command::Hook { .. } | Command::Reconcile { .. } => "info",
            _ => "warn",
        }
        .to_string()
    });
    let syslog = logging::init(&log_level, cli.log_target, cli.syslog_socket.as_deref());
    let ctx = Context {
        config_path: cli.config,
        kernel_choice: cli.kernel,
        sim_state: cli.sim_state,
        policy: SecretPolicy {
            allow_insecure_files: cli.allow_insecure_files,
        },
        control_socket: cli.control_socket,
        log_level,
        log_target: cli.log_target,
        syslog_socket: cli.syslog_socket,
        syslog,
    };
    // Every command may read a secret (a password file, the secretsmith file, a Vault answer,
    // ovh.conf) or talk to a daemon that holds them: no core file, no same-user debugger,
    // from the start (src/secrets.rs).
    if let Err(e) = crate::secrets::forbid_core_dumps() {
        tracing::warn!(
            "cannot keep this process out of core dumps (setrlimit RLIMIT_CORE, non-dumpable): {e}; a crash may write its memory, secrets included, to disk"
        );
    }
    let mut out = std::io::stdout().lock();
    let ok = match cli.command {
        Command::Check { online } => check::run(&ctx, online, &mut out),
        Command::Secrets {
            command: SecretsCommand::Check,
        } => secrets::run(&ctx, &mut out),
        Command::Status { json } => status::run(&ctx, json, &mut out),
        Command::Plan => plan::run(&ctx, plan::Mode::Plan, &mut out),
        Command::Apply { dry_run } => plan::run(
            &ctx,
            if dry_run {
                plan::Mode::DryRun
            } else {
                plan::Mode::Apply
            },
            &mut out,
        ),
        Command::Run {
            no_apply,
            devd_socket,
        } => run::run(&ctx, !no_apply, devd_socket),
        Command::Reload => reload::run(&ctx, &mut out),
        Command::Hook { group, state } => return hook::run(&ctx, &group, &state),
        Command::Reconcile { groups } => reconcile::run(&ctx, &groups, &mut out),
        Command::Simulate { target, state } => {
            simulate::run(&ctx, &target, state.as_deref(), &mut out)
        }
        Command::Maintenance(MaintenanceCommand::Enter { wait, timeout }) => {
            maintenance::enter(&ctx, wait, timeout, &mut out)
        }
        Command::Maintenance(MaintenanceCommand::Leave) => maintenance::leave(&ctx, &mut out),
        Command::Maintenance(MaintenanceCommand::Status { json }) => {
            maintenance::status(&ctx, json, &mut out)
        }
        Command::FailoverIp(FailoverIpCommand::Status { json }) => {
            failover_ip::status(&ctx, json, &mut out)
        }
        Command::FailoverIp(FailoverIpCommand::Claim { ip, dry_run, force }) => {
            failover_ip::claim(&ctx, &ip, dry_run, force, &mut out)
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// Prints an error paragraph to stderr, prefixed like every carpd error.
pub fn eprint_error(msg: impl std::fmt::Display) {
    eprintln!("carpd: error: {msg}");
}
