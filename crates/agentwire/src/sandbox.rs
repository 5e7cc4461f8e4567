//! The work directory of `serve --workdir`, made a real boundary: each
//! command runs in its own mount namespace where every file system is
//! read-only except the caller's directory (and the paths given with
//! `--allow-write`), with its own process namespace and `/proc`, so that
//! neither `../escape`, nor a link out of the directory, nor `/proc/PID/root`
//! of another process reaches anything else.
//!
//! It is built from util-linux's `unshare(1)` in two steps, the way
//! unprivileged sandboxes do it, with no unsafe code here:
//!
//! 1. `unshare --user --map-root-user --mount --pid --fork --mount-proc`
//!    runs `agentwire sandbox-exec` as root of a new user namespace. It binds
//!    the writable directories onto themselves and remounts every other
//!    mount read-only (`mount -o remount,bind,ro`), failing closed if one
//!    cannot be.
//! 2. It then execs `unshare --user --map-user=UID --map-group=GID --mount`
//!    and the command: a second user namespace, less privileged than the
//!    first, which locks the mounts it inherits (they can no longer be made
//!    writable or unmounted), and in which the command runs as the user who
//!    started serve, with no capabilities.
//!
//! Reading the rest of the file system is left as it was (agents read their
//! tools and libraries); the network is left as it was.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, anyhow};

use crate::exit::{Failure, WithCode};

/// Exit code of `sandbox-exec` when it cannot set up the sandbox (as a
/// shell's "cannot execute").
const SETUP_FAILED: u8 = 126;

/// How commands of one serve are confined.
#[derive(Clone, Debug)]
pub(crate) struct Sandbox {
    /// This program, to run `sandbox-exec`.
    exe: PathBuf,
    /// Extra writable paths (canonical).
    writable: Vec<PathBuf>,
    uid: u32,
    gid: u32,
}

impl Sandbox {
    /// The sandbox of this process's user, with `writable` paths besides
    /// each command's own directory.
    pub(crate) fn new(writable: &[PathBuf]) -> anyhow::Result<Sandbox> {
        let me = std::fs::metadata("/proc/self").context("cannot read /proc/self")?;
        let writable = writable
            .iter()
            .map(|path| {
                std::fs::canonicalize(path)
                    .with_context(|| format!("--allow-write {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Sandbox {
            exe: std::env::current_exe().context("cannot find this program")?,
            writable,
            uid: me.uid(),
            gid: me.gid(),
        })
    }

    /// The command that runs `sh -c SHELL_COMMAND` confined to `dir` (which
    /// exists and is canonical), in `dir`.
    pub(crate) fn command(&self, dir: &Path, shell_command: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("unshare");
        command
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
            ])
            .arg(&self.exe)
            .arg("sandbox-exec")
            .arg("--dir")
            .arg(dir);
        for path in &self.writable {
            command.arg("--allow-write").arg(path);
        }
        command
            .args([
                "--uid",
                &self.uid.to_string(),
                "--gid",
                &self.gid.to_string(),
            ])
            .args(["--", "sh", "-c", shell_command])
            .current_dir(dir)
            .env("TMPDIR", dir);
        command
    }

    /// Checks that a command can be confined here (user namespaces allowed,
    /// `unshare` and `mount` present) by running `true` in `dir`; the
    /// reason if not.
    pub(crate) async fn probe(&self, dir: &Path) -> Result<(), String> {
        let output = self
            .command(dir, "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run unshare(1) (util-linux): {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("it failed")
                .to_owned())
        }
    }
}

/// `agentwire sandbox-exec` (run by [`Sandbox::command`] inside the first
/// namespace): makes everything but `dir` and `writable` read-only, then
/// runs `command` in the second namespace as `uid`:`gid`. Returns only on
/// failure.
pub(crate) fn setup_and_exec(
    dir: &Path,
    writable: &[PathBuf],
    uid: u32,
    gid: u32,
    command: &[String],
) -> Failure {
    let failed = |error: anyhow::Error| Failure::new(SETUP_FAILED, error);
    let keep: Vec<&Path> = std::iter::once(dir)
        .chain(writable.iter().map(PathBuf::as_path))
        .collect();
    for path in &keep {
        if let Err(error) = mount(&[OsString::from("--bind"), path.into(), path.into()]) {
            return failed(error.context(format!("cannot keep {} writable", path.display())));
        }
    }
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(error) => return failed(anyhow!("cannot read /proc/self/mountinfo: {error}")),
    };
    for (target, fs_type) in mount_points(&mountinfo) {
        // Its own /proc stays as it is (the process namespace's own, made
        // by unshare); what is kept writable, too.
        if fs_type == "proc" || keep.iter().any(|k| *k == target) {
            continue;
        }
        let args = [
            OsString::from("-o"),
            OsString::from("remount,bind,ro"),
            target.clone().into_os_string(),
        ];
        if let Err(error) = mount(&args) {
            return failed(error.context(format!(
                "cannot make {} read-only for the command",
                target.display()
            )));
        }
    }
    let (program, args) = match command.split_first() {
        Some(split) => split,
        None => return failed(anyhow!("no command to run")),
    };
    let error = std::process::Command::new("unshare")
        .args([
            "--user",
            &format!("--map-user={uid}"),
            &format!("--map-group={gid}"),
            "--mount",
            "--",
        ])
        .arg(program)
        .args(args)
        .current_dir(dir)
        .exec();
    failed(anyhow!("cannot run the command in its sandbox: {error}"))
}

/// Runs `mount ARGS`; its complaint if it fails.
fn mount(args: &[OsString]) -> anyhow::Result<()> {
    let output = std::process::Command::new("mount")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run mount(8)")?;
    if output.status.success() {
        Ok(())
    } else {
        Err(anyhow!(
            "{}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The mount points of a `/proc/self/mountinfo` text, with their file
/// system types, in order (parents first).
fn mount_points(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, rest) = line.split_once(" - ")?;
            let target = mount.split(' ').nth(4)?;
            let fs_type = rest.split(' ').next()?;
            Some((PathBuf::from(unescape(target)), fs_type.to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && let Ok(text) = std::str::from_utf8(octal)
            && let Ok(byte) = u8::from_str_radix(text, 8)
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sandbox of `serve --workdir`, or the error that stops serve from
/// starting when it cannot confine commands here.
pub(crate) fn for_serve(writable: &[PathBuf]) -> Result<Sandbox, Failure> {
    Sandbox::new(writable).code(crate::exit::CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    40 27 0:40 / /mnt/with\\040space rw shared:5 - tmpfs tmpfs rw\n\
                    garbage\n";
        assert_eq!(
            mount_points(info),
            [
                (PathBuf::from("/proc"), "proc".to_owned()),
                (PathBuf::from("/"), "ext4".to_owned()),
                (PathBuf::from("/mnt/with space"), "tmpfs".to_owned()),
            ]
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\"), "trailing\\");
    }
}
