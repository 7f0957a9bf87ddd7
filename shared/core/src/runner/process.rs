//! Spawning `/bin/sh -e -c` in its own process group with stdout and stderr on one pipe,
//! and ending process groups: SIGTERM, then SIGKILL after a grace period.

use super::sandbox::StepUser;
use std::io::PipeWriter;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Spawns the commands (joined by newlines) as one `/bin/sh -e -c` script in a new
/// process group, stdin from /dev/null, stdout and stderr both to `out`, with exactly the
/// environment `env` (nothing of the runner's own) and as `user` when given.
pub(crate) fn spawn_shell(
    commands: &[String],
    cwd: &Path,
    env: &[(String, String)],
    user: Option<StepUser>,
    out: PipeWriter,
) -> std::io::Result<Child> {
    let err = out.try_clone()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-e")
        .arg("-c")
        .arg(commands.join("\n"))
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true);
    if let Some(u) = user {
        // The child sets its group, then its user, before exec; std drops the
        // supplementary groups (setgroups(0)) on the way when we are root.
        cmd.gid(u.gid).uid(u.uid);
    }
    cmd.spawn()
    // `cmd` is dropped here, closing our copies of the pipe's write end: the reader sees
    // end-of-file once every process of the group has closed it.
}

/// Sends `sig` to every process of the group (no-op for an empty group).
pub(crate) fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// SIGTERM to the group; SIGKILL if the leader has not exited after `grace`.
pub(crate) async fn terminate(child: &mut Child, pgid: i32, grace: Duration) -> std::io::Result<ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

/// The exit code a shell would show (`128 + N` when killed by signal N), and the signal.
pub(crate) fn exit_info(status: &ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}

/// Kills the process group when dropped while armed: a job future dropped half-way (a
/// Lambda deadline, a panic) leaves no processes behind.
pub(crate) struct GroupGuard {
    pgid: i32,
}

impl GroupGuard {
    pub fn new(pgid: i32) -> Self {
        Self { pgid }
    }

    /// The group has been dealt with.
    pub fn disarm(mut self) {
        self.pgid = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
    }
}
