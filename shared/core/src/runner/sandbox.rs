//! What steps and services start from, in every mode (`kiln run`, `kiln dev`, the runner
//! function, `runner --poll`): an empty environment plus neutral variables the runner
//! chooses, only the runner variables an operator names, and — when the runner is root —
//! an unprivileged user, with a job area (workspace, home, temp dir) that user owns.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names of runner variables passed to steps, comma-separated (all modes).
pub const PASS_ENV: &str = "KILN_PASS_ENV";
/// The user steps run as when the runner is root: `UID` or `UID:GID` (default 65534,
/// "nobody"); `root` (or `0`) runs them as the runner itself, which under a root runner
/// gives them the runner's keys.
pub const STEP_USER: &str = "KILN_STEP_USER";
/// `PATH` of steps unless the pipeline sets one or the operator passes the runner's.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Kiln's own keys, its AWS credentials among them: never passed to a step, even when
/// named. A pipeline that needs AWS access declares its own credentials as secrets.
pub const NEVER_PASSED: &[&str] = &[
    "KILN_TOKEN",
    "KILN_TOKEN_FILE",
    "KILN_ADMIN_TOKENS",
    "KILN_SIGNING_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// An unprivileged user (and group) for steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUser {
    pub uid: u32,
    pub gid: u32,
}

impl StepUser {
    /// "nobody" on most Linux systems.
    pub const NOBODY: StepUser = StepUser { uid: 65534, gid: 65534 };

    /// `UID` or `UID:GID` (the gid defaults to the uid).
    pub fn parse(s: &str) -> Option<StepUser> {
        let (u, g) = match s.trim().split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s.trim(), None),
        };
        let uid = u.parse().ok()?;
        let gid = match g {
            Some(g) => g.parse().ok()?,
            None => uid,
        };
        Some(StepUser { uid, gid })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{STEP_USER} must be UID, UID:GID or root, not {0:?}")]
    BadUser(String),
    #[error("{STEP_USER}={0} needs a runner running as root (this one runs as uid {1})")]
    NotRoot(String, u32),
    #[error("{0} is one of Kiln's own keys: it is never passed to steps")]
    Forbidden(String),
    #[error("{0:?} is not a variable name")]
    BadName(String),
}

/// The one policy for the environment and user of steps and services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEnvPolicy {
    /// `PATH` (a pipeline's `env` or a passed `PATH` wins over it).
    pub path: String,
    /// Runner variables passed through by name, with their values when the runner started.
    pub passed: Vec<(String, String)>,
    /// Steps run as this user; `None`: as the runner's own user.
    pub user: Option<StepUser>,
    /// `USER` and `LOGNAME` of steps, when the user has a name.
    pub user_name: Option<String>,
}

impl Default for StepEnvPolicy {
    /// Nothing passed; steps as "nobody" when this process is root.
    fn default() -> Self {
        // SAFETY: geteuid(2) cannot fail and has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Self::for_euid(euid)
    }
}

impl StepEnvPolicy {
    /// Nothing passed; steps as "nobody" when `euid` is root, else as the runner.
    pub fn for_euid(euid: u32) -> Self {
        let user = (euid == 0).then_some(StepUser::NOBODY);
        let uid = user.map_or(euid, |u| u.uid);
        Self { path: DEFAULT_PATH.to_string(), passed: Vec::new(), user, user_name: user_name(uid) }
    }

    /// From this process's environment: [`PASS_ENV`] plus `names`, and [`STEP_USER`].
    pub fn from_env(names: &[String]) -> Result<Self, PolicyError> {
        // SAFETY: as above.
        let euid = unsafe { libc::geteuid() };
        Self::from_lookup(euid, names, |k| std::env::var(k).ok())
    }

    /// Like [`StepEnvPolicy::from_env`], for a runner with effective uid `euid` reading
    /// variables through `var`. A named variable that is not set is left out.
    pub fn from_lookup(
        euid: u32,
        names: &[String],
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, PolicyError> {
        let mut policy = Self::for_euid(euid);
        match var(STEP_USER).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
            None => {}
            Some(v) if v == "root" || v == "0" || v == "0:0" => policy.user = None,
            Some(v) => {
                let user = StepUser::parse(&v).ok_or_else(|| PolicyError::BadUser(v.clone()))?;
                if euid != 0 && user.uid != euid {
                    return Err(PolicyError::NotRoot(v, euid));
                }
                // Steps as the runner's own non-root user: nothing to switch.
                policy.user = (euid == 0).then_some(user);
            }
        }
        policy.user_name = user_name(policy.user.map_or(euid, |u| u.uid));
        let listed = var(PASS_ENV).unwrap_or_default();
        let mut wanted: Vec<String> = listed.split(',').map(str::trim).map(str::to_string).collect();
        wanted.extend(names.iter().map(|n| n.trim().to_string()));
        wanted.retain(|n| !n.is_empty());
        wanted.sort();
        wanted.dedup();
        for name in wanted {
            if name.contains(['=', '\0']) {
                return Err(PolicyError::BadName(name));
            }
            if NEVER_PASSED.contains(&name.as_str()) {
                return Err(PolicyError::Forbidden(name));
            }
            if let Some(value) = var(&name) {
                policy.passed.push((name, value));
            }
        }
        Ok(policy)
    }

    /// The first layer of every step's environment: the neutral variables (home and
    /// temp dir of the job), then the passed ones over them.
    pub(crate) fn base_env(&self, home: &Path, tmp: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), self.path.clone()),
            ("HOME".to_string(), home.display().to_string()),
            ("TMPDIR".to_string(), tmp.display().to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
            ("SHELL".to_string(), "/bin/sh".to_string()),
        ];
        if let Some(name) = &self.user_name {
            env.push(("USER".to_string(), name.clone()));
            env.push(("LOGNAME".to_string(), name.clone()));
        }
        env.extend(self.passed.iter().cloned());
        env
    }
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Ends this process's dumpability: its `/proc/<pid>/environ`, `mem` and the like become
/// root's, and no process of another user (nor of the same user, without
/// CAP_SYS_PTRACE) may read them or ptrace it. `kiln` and the runner function (the
/// processes on a machine that runs steps) call it first, before they hold any key. (It
/// does not stop root: steps of a root runner run as another user, see [`StepEnvPolicy`].)
pub fn protect_process() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes a flag of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The directories of one attempt of a stage: the workspace, and beside it (not in it: a
/// workspace starts empty, so that `git clone URL .` works) the job's home, temp dir and
/// event file, all owned by the step user.
pub(crate) struct JobArea {
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub event_file: PathBuf,
    /// The runner's own scratch space (a checkout's download): not the step user's.
    pub scratch: PathBuf,
    pub user: Option<StepUser>,
    /// A private root made because the configured one is not reachable by the step user.
    own_root: Option<PathBuf>,
}

impl JobArea {
    /// Makes the area under `root` (`workspace` is where it would be). When the step user
    /// cannot reach `root` (a 0700 temp dir, a home directory), the area goes in a fresh
    /// 0711 directory of the system temp dir instead, removed with the area.
    pub fn create(root: &Path, workspace: &Path, user: Option<StepUser>) -> io::Result<JobArea> {
        let rel = workspace.strip_prefix(root).unwrap_or(workspace);
        let build_dir = workspace.parent().unwrap_or(root).to_path_buf();
        std::fs::create_dir_all(&build_dir)?;
        let (workspace, own_root) = match user {
            Some(u) => {
                // Kiln's own directory: traversable, not listable.
                std::fs::set_permissions(&build_dir, std::fs::Permissions::from_mode(0o711))?;
                if reachable(&std::fs::canonicalize(&build_dir)?, u) {
                    (workspace.to_path_buf(), None)
                } else {
                    let own = private_root()?;
                    let ws = own.join(rel);
                    let parent = ws.parent().unwrap_or(&own);
                    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(parent)?;
                    (ws, Some(own))
                }
            }
            None => (workspace.to_path_buf(), None),
        };
        let beside = |suffix: &str| {
            let mut name = workspace.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            workspace.with_file_name(name)
        };
        let area = JobArea {
            home: beside(".home"),
            tmp: beside(".tmp"),
            event_file: beside(".event.json"),
            scratch: beside(".scratch"),
            workspace,
            user,
            own_root,
        };
        for dir in [&area.workspace, &area.home, &area.tmp] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::DirBuilder::new().mode(0o700).create(dir)?;
            area.give(dir)?;
        }
        match std::fs::remove_dir_all(&area.scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::DirBuilder::new().mode(0o700).create(&area.scratch)?;
        Ok(area)
    }

    /// Hands a file or directory of the area to the step user.
    pub fn give(&self, path: &Path) -> io::Result<()> {
        match self.user {
            Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)),
            None => Ok(()),
        }
    }

    /// Removes the area (the build's directory too once no other stage uses it).
    pub fn remove(&self) {
        for dir in [&self.workspace, &self.home, &self.tmp, &self.scratch] {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a job directory");
            }
        }
        let _ = std::fs::remove_file(&self.event_file);
        if let Some(parent) = self.workspace.parent() {
            let _ = std::fs::remove_dir(parent); // only when empty: other stages may run
        }
        if let Some(own) = &self.own_root {
            let _ = std::fs::remove_dir_all(own);
        }
    }
}

/// A new directory in the system temp dir, 0711: only its owner lists it, anyone may
/// pass through to what it holds. `mkdir` fails on an existing name, so nobody can plant
/// it (or a symlink) in advance.
fn private_root() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for _ in 0..8 {
        let dir = base.join(format!("kiln-job-{}", uuid::Uuid::new_v4().simple()));
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                // The mode was filtered by the umask.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "cannot make a private job directory"))
}

/// Whether `user` (its primary group only: steps have no supplementary groups) may
/// traverse every directory down to and including `dir`.
fn reachable(dir: &Path, user: StepUser) -> bool {
    dir.ancestors().all(|d| match std::fs::metadata(d) {
        Ok(m) => {
            let mode = m.mode();
            if m.uid() == user.uid {
                mode & 0o100 != 0
            } else if m.gid() == user.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        Err(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_root_runner_runs_steps_as_nobody_and_others_as_themselves() {
        assert_eq!(StepEnvPolicy::for_euid(0).user, Some(StepUser::NOBODY));
        assert_eq!(StepEnvPolicy::for_euid(1000).user, None);
        let p = StepEnvPolicy::from_lookup(0, &[], lookup(&[(STEP_USER, "1234:99")])).unwrap();
        assert_eq!(p.user, Some(StepUser { uid: 1234, gid: 99 }));
        let p = StepEnvPolicy::from_lookup(0, &[], lookup(&[(STEP_USER, "root")])).unwrap();
        assert_eq!(p.user, None);
    }

    #[test]
    fn a_non_root_runner_cannot_switch_users() {
        let e = StepEnvPolicy::from_lookup(1000, &[], lookup(&[(STEP_USER, "65534")])).unwrap_err();
        assert_eq!(e, PolicyError::NotRoot("65534".into(), 1000));
        // its own uid, or "as the runner": nothing to switch
        for same in ["1000", "root"] {
            let p = StepEnvPolicy::from_lookup(1000, &[], lookup(&[(STEP_USER, same)])).unwrap();
            assert_eq!(p.user, None);
        }
        let e = StepEnvPolicy::from_lookup(0, &[], lookup(&[(STEP_USER, "x:1")])).unwrap_err();
        assert_eq!(e, PolicyError::BadUser("x:1".into()));
    }

    #[test]
    fn only_named_variables_pass_and_never_kilns_keys() {
        let vars = [(PASS_ENV, " A, ,B"), ("A", "a"), ("B", "b"), ("C", "c"), ("KILN_SIGNING_KEY", "k")];
        let p = StepEnvPolicy::from_lookup(1000, &["D".into(), "A".into()], lookup(&vars)).unwrap();
        assert_eq!(p.passed, [("A".to_string(), "a".to_string()), ("B".to_string(), "b".to_string())]);
        let e = StepEnvPolicy::from_lookup(1000, &["KILN_SIGNING_KEY".into()], lookup(&vars)).unwrap_err();
        assert_eq!(e, PolicyError::Forbidden("KILN_SIGNING_KEY".into()));
        let e = StepEnvPolicy::from_lookup(1000, &["X=Y".into()], lookup(&vars)).unwrap_err();
        assert_eq!(e, PolicyError::BadName("X=Y".into()));
    }

    #[test]
    fn the_base_environment_is_neutral_with_passed_variables_over_it() {
        let mut p = StepEnvPolicy::for_euid(1000);
        p.user_name = Some("u".into());
        p.passed = vec![("PATH".into(), "/opt/bin".into()), ("X".into(), "1".into())];
        let env = p.base_env(Path::new("/j/home"), Path::new("/j/tmp"));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "TMPDIR", "LANG", "TZ", "SHELL", "USER", "LOGNAME", "PATH", "X"]);
        assert_eq!(env[1].1, "/j/home");
        assert_eq!(env[8].1, "/opt/bin", "a passed PATH comes later, so it wins");
    }

    #[test]
    fn user_ids_parse() {
        assert_eq!(StepUser::parse("7"), Some(StepUser { uid: 7, gid: 7 }));
        assert_eq!(StepUser::parse("7:8"), Some(StepUser { uid: 7, gid: 8 }));
        assert_eq!(StepUser::parse("7:"), None);
        assert_eq!(StepUser::parse("nobody"), None);
    }

    #[test]
    fn an_unreachable_root_moves_the_area_to_a_private_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = dir.path().join("ws");
        let ws = root.join("b1").join("s-1");
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        // A user that is not the directory's owner: only "others" bits count for it.
        let other = StepUser { uid: me.wrapping_add(4242), gid: 4242 };
        assert!(!reachable(dir.path(), other));
        assert!(reachable(dir.path().parent().unwrap(), other), "the system temp dir is");
        if me != 0 {
            return; // chown to another user needs root: the rest is for root runners
        }
        let area = JobArea::create(&root, &ws, Some(other)).unwrap();
        assert_ne!(area.workspace, ws);
        assert!(area.workspace.ends_with("b1/s-1"), "{}", area.workspace.display());
        assert!(reachable(area.workspace.parent().unwrap(), other));
        for d in [&area.workspace, &area.home, &area.tmp] {
            let m = std::fs::metadata(d).unwrap();
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o777),
                (other.uid, other.gid, 0o700),
                "{}",
                d.display()
            );
        }
        let own = area.own_root.clone().unwrap();
        area.remove();
        assert!(!own.exists());
    }

    #[test]
    fn a_reachable_root_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("ws");
        let ws = root.join("b1").join("s-1");
        let area = JobArea::create(&root, &ws, None).unwrap();
        assert_eq!(area.workspace, ws);
        assert!(area.home.ends_with("b1/s-1.home") && area.tmp.ends_with("b1/s-1.tmp"));
        area.remove();
        assert!(!ws.exists() && !root.join("b1").exists());
    }
}
