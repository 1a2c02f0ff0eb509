//! One router's files for tests that run the `carpd` binary: a temporary directory holding
//! carpd.yaml and whatever else the test writes (`{dir}` in a text becomes the directory's
//! path), the simulated kernel's state file, and the command line every such test starts
//! from. The test adds its subcommand and flags; what it checks stays in the test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use carpd::kernel::sim::{Flavour, SimKernel};

/// A router's directory; removed when dropped.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Host {
    pub fn new() -> Host {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // sun_path is 104 bytes on FreeBSD, 108 on Linux: the control socket lives here.
        assert!(
            dir.path().join("carpd.sock").as_os_str().len() < 100,
            "the temporary directory {} is too long for a unix socket path; set TMPDIR=/tmp",
            dir.path().display()
        );
        Host { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with `mode`, `{dir}` replaced by the directory. Written to a temporary
    /// name and renamed, so a daemon reloading at that moment never reads half a file.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(
            &tmp,
            text.replace("{dir}", &self.dir.path().display().to_string()),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    /// `carpd -c carpd.yaml --kernel <kernel> --sim-state kernel.json`, with none of the
    /// environment variables that would override what the test set (every `CARPD_*` and
    /// `OVH_*` of the test's own environment).
    pub fn command(&self, bin: impl AsRef<Path>, kernel: &str) -> Command {
        let mut c = Command::new(bin.as_ref());
        c.arg("-c")
            .arg(self.path("carpd.yaml"))
            .args(["--kernel", kernel, "--sim-state"])
            .arg(self.path("kernel.json"));
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CARPD_") || n.starts_with("OVH_") {
                c.env_remove(&name);
            }
        }
        c
    }

    /// The simulated kernel the binary uses (FreeBSD 14 flavour), to play the network.
    pub fn kernel(&self) -> SimKernel {
        SimKernel::open(Flavour::FreeBsd14, Some(self.path("kernel.json")))
            .expect("the simulated kernel's state file")
    }
}
