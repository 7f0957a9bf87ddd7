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

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::os::unix::fs::MetadataExt;

    /// One archive entry; names are written raw into the header, so malicious ones
    /// (`..`, absolute) get in although `Header::set_path` refuses them.
    enum E<'a> {
        PaxGlobal(&'a str),
        Dir(&'a str),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let slot = &mut h.as_old_mut().name;
        assert!(name.len() < slot.len(), "test names fit the ustar name field");
        slot[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn archive(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for e in entries {
            let (mut h, data): (_, Vec<u8>) = match *e {
                E::PaxGlobal(commit) => {
                    // A pax record counts its own length: "<len> comment=<sha>\n".
                    let body = format!(" comment={commit}\n");
                    let mut len = body.len() + 2;
                    if format!("{len}{body}").len() != len {
                        len += 1;
                    }
                    let rec = format!("{len}{body}").into_bytes();
                    (header("pax_global_header", EntryType::XGlobalHeader, 0o666, rec.len() as u64), rec)
                }
                E::Dir(n) => (header(n, EntryType::Directory, 0o775, 0), vec![]),
                E::File(n, data, mode) => {
                    (header(n, EntryType::Regular, mode, data.len() as u64), data.to_vec())
                }
                E::Symlink(n, t) => {
                    let mut h = header(n, EntryType::Symlink, 0o777, 0);
                    h.set_link_name_literal(t).unwrap();
                    (h, vec![])
                }
                E::Hardlink(n, t) => {
                    let mut h = header(n, EntryType::Link, 0o644, 0);
                    h.set_link_name_literal(t).unwrap();
                    (h, vec![])
                }
                E::Fifo(n) => (header(n, EntryType::Fifo, 0o644, 0), vec![]),
            };
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    /// A workspace `ws` with a sibling `outside` in a temporary directory.
    struct Sandbox {
        root: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir(root.path().join("ws")).unwrap();
            fs::create_dir(root.path().join("outside")).unwrap();
            fs::write(root.path().join("outside/keep"), b"untouched").unwrap();
            Sandbox { root }
        }
        fn ws(&self) -> PathBuf {
            self.root.path().join("ws")
        }
        fn outside(&self) -> PathBuf {
            self.root.path().join("outside")
        }
        /// Nothing appeared next to the workspace, nothing changed in `outside`.
        fn assert_nothing_outside(&self) {
            let mut top: Vec<_> =
                fs::read_dir(self.root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            top.sort();
            assert_eq!(top, ["outside", "ws"]);
            let inside: Vec<_> =
                fs::read_dir(self.outside()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(inside, ["keep"]);
            assert_eq!(fs::read(self.outside().join("keep")).unwrap(), b"untouched");
        }
        fn unpack(&self, entries: &[E]) -> Result<(u64, u64), CheckoutError> {
            unpack(archive(entries).as_slice(), &self.ws(), None)
        }
    }

    fn assert_refused(result: Result<(u64, u64), CheckoutError>, says: &str) {
        match result {
            Err(e @ CheckoutError::Refused(_)) => {
                let msg = e.to_string();
                assert!(msg.starts_with("refused: ") && msg.contains(says), "{msg}");
            }
            other => panic!("expected a refusal saying {says:?}, got {other:?}"),
        }
    }

    #[test]
    fn unpacks_a_commit_tarball_without_its_top_directory() {
        let sb = Sandbox::new();
        // Running as root (the runner), chown to nobody; otherwise to ourselves.
        let owner = if unsafe { libc::geteuid() } == 0 {
            (65534, 65534)
        } else {
            unsafe { (libc::geteuid(), libc::getegid()) }
        };
        let bytes = archive(&[
            E::PaxGlobal("1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5"),
            E::Dir("acme-web-1a2b3c4/"),
            E::File("acme-web-1a2b3c4/README.md", b"# web\n", 0o644),
            E::File("acme-web-1a2b3c4/build.sh", b"#!/bin/sh\necho hi\n", 0o4755),
            E::Dir("acme-web-1a2b3c4/src/"),
            E::File("acme-web-1a2b3c4/src/deep/main.rs", b"fn main() {}\n", 0o644),
            E::Symlink("acme-web-1a2b3c4/src/readme", "../README.md"),
            E::Symlink("acme-web-1a2b3c4/docs", "src/deep"),
            E::Hardlink("acme-web-1a2b3c4/README.copy", "acme-web-1a2b3c4/README.md"),
            E::Fifo("acme-web-1a2b3c4/pipe"),
        ]);
        let (files, bytes) = unpack(bytes.as_slice(), &sb.ws(), Some(owner)).unwrap();
        let ws = sb.ws();
        assert_eq!(files, 6);
        assert_eq!(bytes, (6 + 18 + 13) as u64);
        let mut names: Vec<_> = fs::read_dir(&ws).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["README.copy", "README.md", "build.sh", "docs", "src"]);
        assert_eq!(fs::read(ws.join("README.md")).unwrap(), b"# web\n");
        assert_eq!(fs::read(ws.join("src/deep/main.rs")).unwrap(), b"fn main() {}\n");
        // Executable kept, setuid dropped.
        assert_eq!(fs::metadata(ws.join("build.sh")).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(fs::metadata(ws.join("README.md")).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(fs::read_link(ws.join("src/readme")).unwrap(), Path::new("../README.md"));
        assert_eq!(fs::read(ws.join("src/readme")).unwrap(), b"# web\n");
        assert_eq!(fs::read(ws.join("docs/main.rs")).unwrap(), b"fn main() {}\n");
        assert_eq!(
            fs::metadata(ws.join("README.copy")).unwrap().ino(),
            fs::metadata(ws.join("README.md")).unwrap().ino()
        );
        for p in ["README.md", "build.sh", "src", "src/deep", "src/deep/main.rs", "src/readme", "docs"] {
            let m = fs::symlink_metadata(ws.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), owner, "{p}");
        }
        sb.assert_nothing_outside();
    }

    #[test]
    fn a_gitea_archive_has_the_repository_name_as_top_directory() {
        let sb = Sandbox::new();
        let (files, _) = sb.unpack(&[E::Dir("web/"), E::File("web/a.txt", b"a", 0o644)]).unwrap();
        assert_eq!(files, 1);
        assert_eq!(fs::read(sb.ws().join("a.txt")).unwrap(), b"a");
    }

    #[test]
    fn entries_that_climb_out_or_are_absolute_are_refused() {
        for name in ["../evil", "top/../evil", "top/../../evil", "a/../../evil", "top/a/../../evil"] {
            let sb = Sandbox::new();
            let result = sb.unpack(&[E::Dir("top/"), E::File(name, b"pwned", 0o644)]);
            assert_refused(result, &format!("entry `{name}` climbs out of the workspace"));
            sb.assert_nothing_outside();
        }
        let sb = Sandbox::new();
        let abs = format!("{}/evil", sb.outside().display());
        assert_refused(sb.unpack(&[E::File(&abs, b"pwned", 0o644)]), "is an absolute path");
        sb.assert_nothing_outside();
        // Absolute after the top directory was seen, too.
        let sb = Sandbox::new();
        let abs = format!("{}/evil", sb.outside().display());
        assert_refused(sb.unpack(&[E::Dir("top/"), E::File(&abs, b"pwned", 0o644)]), "is an absolute path");
        sb.assert_nothing_outside();
    }

    #[test]
    fn links_pointing_out_are_refused() {
        let sb = Sandbox::new();
        assert_refused(sb.unpack(&[E::Dir("top/"), E::Symlink("top/etc", "/etc")]), "absolute path `/etc`");
        sb.assert_nothing_outside();
        assert!(fs::symlink_metadata(sb.ws().join("etc")).is_err());

        let sb = Sandbox::new();
        let out = sb.outside().display().to_string();
        let result =
            sb.unpack(&[E::Dir("top/"), E::Symlink("top/l", &out), E::File("top/l/evil", b"pwned", 0o644)]);
        assert_refused(result, "points at the absolute path");
        sb.assert_nothing_outside();

        // `l -> ../..` then a file through it.
        let sb = Sandbox::new();
        let result = sb.unpack(&[
            E::Dir("top/"),
            E::Symlink("top/l", "../.."),
            E::File("top/l/evil", b"pwned", 0o644),
        ]);
        assert_refused(result, "symlink `top/l` -> `../..` points outside the workspace");
        sb.assert_nothing_outside();

        // One level down, `..` reaches the workspace root (allowed), `../..` does not.
        let sb = Sandbox::new();
        sb.unpack(&[E::Dir("top/"), E::Dir("top/d/"), E::Symlink("top/d/root", "..")]).unwrap();
        assert_refused(
            sb.unpack(&[E::Dir("top/"), E::Dir("top/d/"), E::Symlink("top/d/up", "../../outside")]),
            "points outside the workspace",
        );
        sb.assert_nothing_outside();

        // Lexically inside, but `d/up` is itself a link to the root: `d/up/..` would be the
        // workspace's parent.
        let sb = Sandbox::new();
        let result = sb.unpack(&[
            E::Dir("top/"),
            E::Dir("top/d/"),
            E::Symlink("top/d/up", ".."),
            E::Symlink("top/esc", "d/up/.."),
        ]);
        assert_refused(result, "has `..` after a name");
        sb.assert_nothing_outside();

        let sb = Sandbox::new();
        assert_refused(
            sb.unpack(&[E::Dir("top/"), E::Hardlink("top/h", "../outside/keep")]),
            "hard link `top/h`: its target climbs out of the workspace",
        );
        sb.assert_nothing_outside();
        let sb = Sandbox::new();
        assert_refused(sb.unpack(&[E::Dir("top/"), E::Hardlink("top/h", "top/../x")]), "climbs out");
        let sb = Sandbox::new();
        let abs = format!("{}/keep", sb.outside().display());
        assert_refused(sb.unpack(&[E::Dir("top/"), E::Hardlink("top/h", &abs)]), "is an absolute path");
        assert_eq!(fs::metadata(sb.outside().join("keep")).unwrap().nlink(), 1);
        sb.assert_nothing_outside();
    }

    #[test]
    fn nothing_is_written_through_a_symlink_already_in_the_workspace() {
        let sb = Sandbox::new();
        std::os::unix::fs::symlink(sb.outside(), sb.ws().join("l")).unwrap();
        let result = sb.unpack(&[E::Dir("top/"), E::File("top/l/evil", b"pwned", 0o644)]);
        assert_refused(result, "entry `top/l/evil` goes through the symlink `l`");
        sb.assert_nothing_outside();

        // A file entry at a link's name replaces the link, never writes to its target.
        std::os::unix::fs::symlink(sb.outside().join("keep"), sb.ws().join("f")).unwrap();
        sb.unpack(&[E::Dir("top/"), E::File("top/f", b"new", 0o644)]).unwrap();
        assert_eq!(fs::read(sb.ws().join("f")).unwrap(), b"new");
        assert!(!fs::symlink_metadata(sb.ws().join("f")).unwrap().file_type().is_symlink());
        sb.assert_nothing_outside();

        // A hard link through a link in the workspace is refused too.
        let sb = Sandbox::new();
        std::os::unix::fs::symlink(sb.outside(), sb.ws().join("l")).unwrap();
        assert_refused(sb.unpack(&[E::Dir("top/"), E::Hardlink("top/h", "top/l/keep")]), "symlink");
        assert_eq!(fs::metadata(sb.outside().join("keep")).unwrap().nlink(), 1);
        sb.assert_nothing_outside();
    }

    #[test]
    fn an_archive_without_a_single_top_directory_is_not_a_commit_tarball() {
        let sb = Sandbox::new();
        let err = sb.unpack(&[E::File("a/x", b"x", 0o644), E::File("b/y", b"y", 0o644)]).unwrap_err();
        assert!(matches!(err, CheckoutError::Layout(_)), "{err:?}");
        assert!(err.to_string().contains("outside the archive's top-level directory `a/`"), "{err}");
    }

    #[test]
    fn a_corrupt_archive_is_an_error() {
        let sb = Sandbox::new();
        let err = unpack(&b"not gzip at all"[..], &sb.ws(), None).unwrap_err();
        assert!(matches!(err, CheckoutError::Archive(_)), "{err:?}");
    }
}
