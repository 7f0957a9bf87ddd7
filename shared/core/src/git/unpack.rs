//! Unpacking a commit's tarball into a workspace without a `git` binary (Lambda has none),
//! refusing every entry that would write, or point, outside the workspace.
//!
//! The runner unpacks as root, so a malicious archive must not reach anything outside
//! `dest`: names that are absolute or contain `..` are refused, links whose target leaves
//! the workspace are refused, and nothing is ever written through a symlink (each parent
//! of an entry is checked with `lstat`, files are created with `O_EXCL`, which does not
//! follow a link at the final component).

use super::checkout::CheckoutError;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// Unpacks a gzip'd tar of a commit into `dest` (existing, normally empty), without the
/// archive's single top-level directory (GitHub's `owner-repo-sha7/`, Gitea's `repo/`).
/// Every created entry is owned by `owner` (uid, gid) when given; the archive's own
/// ownership, setuid/setgid and sticky bits are dropped, executable bits kept.
///
/// Returns the number of files (regular files and links) and the bytes of file contents.
/// Synchronous: call it from `spawn_blocking`.
pub fn unpack(
    archive: impl Read,
    dest: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(u64, u64), CheckoutError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut top: Option<OsString> = None;
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in archive.entries().map_err(CheckoutError::Archive)? {
        let mut entry = entry.map_err(CheckoutError::Archive)?;
        let kind = entry.header().entry_type();
        // Pax global headers (GitHub's `pax_global_header` carries the commit id), devices,
        // fifos: nothing a checkout needs.
        if !matches!(
            kind,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link
        ) {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let names = names(&raw_path).map_err(|why| refused(format!("entry `{shown}` {why}")))?;
        let Some(rel) = strip_top(&mut top, names, &shown)? else {
            continue; // the top-level directory itself
        };
        let mode = entry.header().mode().map_err(CheckoutError::Archive)?;
        let path = prepare_parents(dest, &rel, owner, &shown)?;
        match kind {
            EntryType::Directory => make_dir(&path, mode, owner, &shown)?,
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                check_symlink_target(rel.len() - 1, &target, &shown)?;
                clear(&path, &shown)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| io_err("creating the symlink", &path, e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                        .map_err(|e| io_err("changing the owner of", &path, e))?;
                }
                files += 1;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let source = hard_link_source(dest, &top, &target, &shown)?;
                clear(&path, &shown)?;
                fs::hard_link(&source, &path).map_err(|e| io_err("creating the hard link", &path, e))?;
                files += 1;
            }
            _ => {
                clear(&path, &shown)?;
                // O_EXCL: never opens through a link left at this name.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io_err("creating", &path, e))?;
                bytes += io::copy(&mut entry, &mut file).map_err(CheckoutError::Archive)?;
                // On the descriptor, so no link is followed; explicit so the umask does not
                // eat executable bits.
                file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
                    .map_err(|e| io_err("setting the mode of", &path, e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                        .map_err(|e| io_err("changing the owner of", &path, e))?;
                }
                files += 1;
            }
        }
    }
    Ok((files, bytes))
}

fn refused(why: String) -> CheckoutError {
    CheckoutError::Refused(why)
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> CheckoutError {
    CheckoutError::Io { what, path: path.to_path_buf(), source }
}

/// The names of a relative path without `.`; refuses absolute paths and `..`.
fn names(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
            Component::ParentDir => return Err("climbs out of the workspace"),
            Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Ok(out)
}

/// Drops the archive's top-level directory (the same for every entry); `None` for that
/// directory itself.
fn strip_top(
    top: &mut Option<OsString>,
    mut names: Vec<OsString>,
    shown: &str,
) -> Result<Option<Vec<OsString>>, CheckoutError> {
    if names.is_empty() {
        return Err(CheckoutError::Layout(format!("entry `{shown}` has an empty name")));
    }
    let first = names.remove(0);
    match top {
        None => *top = Some(first),
        Some(t) if *t == first => {}
        Some(t) => {
            return Err(CheckoutError::Layout(format!(
                "entry `{shown}` is outside the archive's top-level directory `{}/`",
                t.to_string_lossy()
            )));
        }
    }
    Ok(if names.is_empty() { None } else { Some(names) })
}

/// Creates the missing parent directories of `rel` under `dest` and returns its full path;
/// refuses an entry one of whose existing parents is a symlink (writing through it could
/// land anywhere).
fn prepare_parents(
    dest: &Path,
    rel: &[OsString],
    owner: Option<(u32, u32)>,
    shown: &str,
) -> Result<PathBuf, CheckoutError> {
    let mut path = dest.to_path_buf();
    for (i, name) in rel.iter().enumerate() {
        path.push(name);
        if i + 1 == rel.len() {
            break;
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(format!(
                    "entry `{shown}` goes through the symlink `{}`",
                    display_rel(&rel[..=i])
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CheckoutError::Layout(format!(
                    "entry `{shown}`: `{}` is not a directory",
                    display_rel(&rel[..=i])
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&path, 0o755, owner, shown)?,
            Err(e) => return Err(io_err("inspecting", &path, e)),
        }
    }
    Ok(path)
}

fn display_rel(names: &[OsString]) -> String {
    names.iter().map(|n| n.to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Creates (or, when the archive lists it again, re-moded) a directory; the owner keeps
/// full access so the rest of the archive can be written into it.
fn make_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>, shown: &str) -> Result<(), CheckoutError> {
    let mode = (mode & 0o777) | 0o700;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CheckoutError::Layout(format!(
                "directory entry `{shown}` replaces something that is not a directory"
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // mkdir never follows a link at the final component: EEXIST instead.
            fs::DirBuilder::new().mode(mode).create(path).map_err(|e| io_err("creating", path, e))?;
        }
        Err(e) => return Err(io_err("inspecting", path, e)),
    }
    // Checked above to be a directory, not a link, and nothing else writes here meanwhile.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("setting the mode of", path, e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| io_err("changing the owner of", path, e))?;
    }
    Ok(())
}

/// Removes a file or link an earlier entry left at `path` (removing a link never touches
/// its target); a directory there is an error.
fn clear(path: &Path, shown: &str) -> Result<(), CheckoutError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            Err(CheckoutError::Layout(format!("entry `{shown}` would replace a directory")))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| io_err("removing", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspecting", path, e)),
    }
}

/// A symlink at depth `dir_depth` (names of its directory under the workspace) may point
/// only inside the workspace, resolved lexically from its directory. `..` is allowed only
/// at the start of the target: after a name (`a/../..`) it would climb from wherever `a`
/// leads, which may itself be a link, so lexical resolution could not vouch for it.
fn check_symlink_target(dir_depth: usize, target: &[u8], shown: &str) -> Result<(), CheckoutError> {
    let target_shown = String::from_utf8_lossy(target);
    if target.is_empty() {
        return Err(refused(format!("symlink `{shown}` has an empty target")));
    }
    let mut depth = dir_depth;
    let mut after_name = false;
    for c in Path::new(OsStr::from_bytes(target)).components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(format!(
                    "symlink `{shown}` points at the absolute path `{target_shown}`"
                )));
            }
            Component::CurDir => {}
            Component::ParentDir if after_name => {
                return Err(refused(format!(
                    "symlink `{shown}` -> `{target_shown}` has `..` after a name, \
                     which could climb out of the workspace through another link"
                )));
            }
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    refused(format!("symlink `{shown}` -> `{target_shown}` points outside the workspace"))
                })?;
            }
            Component::Normal(_) => after_name = true,
        }
    }
    Ok(())
}

/// Where a hard link's data is: its target names a regular file earlier in the archive
/// (from the archive's root, so under the same top-level directory), never through a link.
fn hard_link_source(
    dest: &Path,
    top: &Option<OsString>,
    target: &[u8],
    shown: &str,
) -> Result<PathBuf, CheckoutError> {
    let target_shown = String::from_utf8_lossy(target);
    let mut names = names(target).map_err(|why| refused(format!("hard link `{shown}`: its target {why}")))?;
    if names.is_empty() || top.as_ref() != Some(&names[0]) {
        return Err(refused(format!(
            "hard link `{shown}` -> `{target_shown}` points outside the archive's top-level directory"
        )));
    }
    names.remove(0);
    let mut path = dest.to_path_buf();
    for name in &names {
        path.push(name);
        let meta = fs::symlink_metadata(&path).map_err(|_| {
            refused(format!(
                "hard link `{shown}` -> `{target_shown}` points at no earlier file of the archive"
            ))
        })?;
        // A hard link to a link (or through one) would share whatever the link reaches.
        if meta.file_type().is_symlink() {
            return Err(refused(format!(
                "hard link `{shown}` -> `{target_shown}` goes through or points at a symlink"
            )));
        }
    }
    if !fs::symlink_metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
        return Err(refused(format!("hard link `{shown}` -> `{target_shown}` does not point at a file")));
    }
    Ok(path)
}
