//! Repository secrets in the data dir, never as clear text: each value is sealed with
//! AES-256-GCM under a key kept apart from the data dir (a 0600 file of its own), with the
//! repository, the name and the time bound in as associated data, so a sealed file copied
//! under another name does not open.
//!
//! ```text
//! DATA/secrets/<org>/<repo>/<NAME>.secret   "KILNSEC1", updated_ms (u64 BE), nonce (12), sealed value
//! ```

use crate::blocking;
use async_trait::async_trait;
use kiln_domain::Repo;
use kiln_domain::event::now_ms;
use kiln_domain::secret::SecretName;
use kiln_store::{SecretInfo, SecretStore, SecretStoreError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"KILNSEC1";
const KEY_BYTES: usize = 32;
const SUFFIX: &str = ".secret";

/// Where the key lives unless told: `KILN_SECRETS_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/kiln/secrets.key`, else `$HOME/.config/kiln/secrets.key`.
pub fn key_path_from(lookup: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = lookup("KILN_SECRETS_KEY_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = lookup("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| lookup("HOME").filter(|p| !p.is_empty()).map(|h| Path::new(&h).join(".config")))?;
    Some(config.join("kiln").join("secrets.key"))
}

pub struct LocalSecretStore {
    dir: PathBuf,
    key: Arc<LessSafeKey>,
}

fn backend(e: impl std::fmt::Display) -> SecretStoreError {
    SecretStoreError::Backend(e.to_string())
}

impl LocalSecretStore {
    /// Opens the secrets of `data_dir`, sealed with the key at `key_file` (created, 0600,
    /// on first use). The key must not live inside the data dir: whoever copies the data
    /// dir must not get the key with it.
    pub fn open(data_dir: &Path, key_file: &Path) -> Result<Self, SecretStoreError> {
        fs::create_dir_all(data_dir).map_err(backend)?;
        let data = fs::canonicalize(data_dir).map_err(backend)?;
        if let Some(parent) = key_file.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(backend)?;
            if fs::canonicalize(parent).map_err(backend)?.starts_with(&data) {
                return Err(SecretStoreError::Backend(format!(
                    "the secrets key {} is inside the data dir {}: keep it apart (KILN_SECRETS_KEY_FILE)",
                    key_file.display(),
                    data.display()
                )));
            }
        }
        let key = load_or_create_key(key_file)?;
        let key =
            UnboundKey::new(&AES_256_GCM, &key).map_err(|_| SecretStoreError::Corrupt("bad key".into()))?;
        Ok(Self { dir: data.join("secrets"), key: Arc::new(LessSafeKey::new(key)) })
    }

    fn repo_dir(&self, repo: &Repo) -> PathBuf {
        // Org and repo names are plain (letters, digits, `.`, `_`, `-`; never `..` alone
        // as they start with a letter or digit), so they are safe path segments.
        self.dir.join(&repo.org).join(&repo.repo)
    }
}

fn load_or_create_key(path: &Path) -> Result<[u8; KEY_BYTES], SecretStoreError> {
    let mut key = [0u8; KEY_BYTES];
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            SystemRandom::new().fill(&mut key).map_err(|_| backend("no randomness for the secrets key"))?;
            f.write_all(&key).and_then(|()| f.sync_all()).map_err(backend)?;
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(backend(format!("secrets key {}: {e}", path.display()))),
    }
    let meta = fs::metadata(path).map_err(backend)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SecretStoreError::Backend(format!(
            "the secrets key {} is readable by others: chmod 600 it",
            path.display()
        )));
    }
    let bytes = fs::read(path).map_err(backend)?;
    key.copy_from_slice(bytes.get(..KEY_BYTES).filter(|_| bytes.len() == KEY_BYTES).ok_or_else(|| {
        SecretStoreError::Corrupt(format!("the secrets key {} is not {KEY_BYTES} bytes", path.display()))
    })?);
    Ok(key)
}

fn aad(repo: &Repo, name: &SecretName, updated_ms: u64) -> Vec<u8> {
    let mut a = format!("kiln-secret-v1\0{repo}\0{name}\0").into_bytes();
    a.extend_from_slice(&updated_ms.to_be_bytes());
    a
}

fn seal(key: &LessSafeKey, repo: &Repo, name: &SecretName, value: &str) -> Result<Vec<u8>, SecretStoreError> {
    let updated_ms = now_ms();
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| backend("no randomness for a nonce"))?;
    let mut sealed = value.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(repo, name, updated_ms)),
        &mut sealed,
    )
    .map_err(|_| backend("sealing failed"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + NONCE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&updated_ms.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The time a sealed file was written, from its header (no key needed).
fn header(bytes: &[u8]) -> Option<(u64, [u8; NONCE_LEN], &[u8])> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (ms, rest) = rest.split_first_chunk::<8>()?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
    Some((u64::from_be_bytes(*ms), *nonce, sealed))
}

fn open_sealed(
    key: &LessSafeKey,
    repo: &Repo,
    name: &SecretName,
    bytes: &[u8],
) -> Result<String, SecretStoreError> {
    let corrupt =
        || SecretStoreError::Corrupt(format!("secret {name} of {repo} does not open with this key"));
    let (updated_ms, nonce, sealed) = header(bytes).ok_or_else(corrupt)?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(repo, name, updated_ms)), &mut buf)
        .map_err(|_| corrupt())?;
    String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
}

/// Writes `bytes` to `path` atomically and durably, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn put(&self, repo: &Repo, name: &SecretName, value: &str) -> Result<(), SecretStoreError> {
        let sealed = seal(&self.key, repo, name, value)?;
        let path = self.repo_dir(repo).join(format!("{name}{SUFFIX}"));
        blocking(move || write_private(&path, &sealed).map_err(backend), SecretStoreError::Backend).await
    }

    async fn list(&self, repo: &Repo) -> Result<Vec<SecretInfo>, SecretStoreError> {
        let dir = self.repo_dir(repo);
        blocking(
            move || {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(backend(e)),
                };
                let mut out = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(backend)?;
                    let file = entry.file_name();
                    let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SUFFIX)) else { continue };
                    let Ok(name) = SecretName::parse(name) else { continue };
                    let bytes = fs::read(entry.path()).map_err(backend)?;
                    let (updated_ms, ..) = header(&bytes).ok_or_else(|| {
                        SecretStoreError::Corrupt(format!("{} has no header", entry.path().display()))
                    })?;
                    out.push(SecretInfo { name, updated_ms });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            },
            SecretStoreError::Backend,
        )
        .await
    }

    async fn delete(&self, repo: &Repo, name: &SecretName) -> Result<bool, SecretStoreError> {
        let path = self.repo_dir(repo).join(format!("{name}{SUFFIX}"));
        blocking(
            move || match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(backend(e)),
            },
            SecretStoreError::Backend,
        )
        .await
    }

    async fn reveal(
        &self,
        repo: &Repo,
        names: &[SecretName],
    ) -> Result<BTreeMap<SecretName, String>, SecretStoreError> {
        let (dir, key, repo, names) = (self.repo_dir(repo), self.key.clone(), repo.clone(), names.to_vec());
        blocking(
            move || {
                let mut out = BTreeMap::new();
                for name in names {
                    let bytes = match fs::read(dir.join(format!("{name}{SUFFIX}"))) {
                        Ok(b) => b,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(backend(e)),
                    };
                    let value = open_sealed(&key, &repo, &name, &bytes)?;
                    out.insert(name, value);
                }
                Ok(out)
            },
            SecretStoreError::Backend,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn sealed_at_rest_and_bound_to_their_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, key) = (tmp.path().join("data"), tmp.path().join("keys/secrets.key"));
        let store = LocalSecretStore::open(&data, &key).unwrap();
        let repo = Repo::new("acme", "web");
        store.put(&repo, &name("DEPLOY_KEY"), "hunter2-value").await.unwrap();
        store.put(&repo, &name("OTHER"), "other-value").await.unwrap();

        // No clear text anywhere in the data dir; key and files private.
        for entry in walk(&data) {
            let bytes = fs::read(&entry).unwrap();
            assert!(!bytes.windows(13).any(|w| w == b"hunter2-value"), "{}", entry.display());
            assert_eq!(fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

        let got = store.reveal(&repo, &[name("DEPLOY_KEY"), name("MISSING")]).await.unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![(name("DEPLOY_KEY"), "hunter2-value".to_string())]
        );
        let listed: Vec<_> = store.list(&repo).await.unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(listed, vec![name("DEPLOY_KEY"), name("OTHER")]);

        // A sealed file renamed to another secret does not open.
        let dir = data.join("secrets/acme/web");
        fs::copy(dir.join("DEPLOY_KEY.secret"), dir.join("OTHER.secret")).unwrap();
        assert!(matches!(store.reveal(&repo, &[name("OTHER")]).await, Err(SecretStoreError::Corrupt(_))));

        // Reopened with the same key: still readable; with another key: refused, not garbage.
        let again = LocalSecretStore::open(&data, &key).unwrap();
        assert_eq!(again.reveal(&repo, &[name("DEPLOY_KEY")]).await.unwrap().len(), 1);
        let other = LocalSecretStore::open(&data, &tmp.path().join("other.key")).unwrap();
        assert!(matches!(
            other.reveal(&repo, &[name("DEPLOY_KEY")]).await,
            Err(SecretStoreError::Corrupt(_))
        ));

        assert!(store.delete(&repo, &name("DEPLOY_KEY")).await.unwrap());
        assert!(!store.delete(&repo, &name("DEPLOY_KEY")).await.unwrap());
        assert!(store.list(&Repo::new("acme", "none")).await.unwrap().is_empty());
    }

    #[test]
    fn the_key_stays_out_of_the_data_dir_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let err = LocalSecretStore::open(&data, &data.join("k")).err().expect("refused");
        assert!(err.to_string().contains("inside the data dir"), "{err}");
        let key = tmp.path().join("loose.key");
        fs::write(&key, [0u8; KEY_BYTES]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalSecretStore::open(&data, &key).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_path_defaults() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(key_path_from(env(&[("KILN_SECRETS_KEY_FILE", "/k")])), Some(PathBuf::from("/k")));
        assert_eq!(
            key_path_from(env(&[("XDG_CONFIG_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/kiln/secrets.key"))
        );
        assert_eq!(key_path_from(env(&[("HOME", "/h")])), Some(PathBuf::from("/h/.config/kiln/secrets.key")));
        assert_eq!(key_path_from(env(&[])), None);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }
}
