//! `kiln secrets set|list|rm`: a repository's secrets, over the API (`--api`) or in the
//! data dir's sealed store. No command prints a value.

use kiln_api::client::ApiClient;
use kiln_api::views::SecretList;
use kiln_domain::Repo;
use kiln_domain::secret::{SecretName, check_value};
use kiln_store::SecretStore;
use std::io::{IsTerminal, Read};
use std::path::Path;

fn parse(repo: &str, name: Option<&str>) -> Result<(Repo, Option<SecretName>), u8> {
    let Some(repo) = Repo::parse(repo) else {
        eprintln!("kiln: the repository must look like org/repo");
        return Err(2);
    };
    let name = match name.map(SecretName::parse).transpose() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("kiln: {e}");
            return Err(2);
        }
    };
    Ok((repo, name))
}

fn local_store(data_dir: &Path) -> Result<crate::local::LazySecrets, u8> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        eprintln!("kiln: cannot use data dir {}: {e}", data_dir.display());
        1
    })?;
    Ok(crate::local::LazySecrets::new(data_dir))
}

/// The value as given on stdin. From a terminal, the newline that ends the typed line is
/// not part of it; from a pipe or file, every byte is (use `printf %s` for no newline).
fn read_value() -> Result<Vec<u8>, u8> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprintln!("kiln: type the value, then Enter and Ctrl-D");
    }
    let mut value = Vec::new();
    if let Err(e) = stdin.lock().read_to_end(&mut value) {
        eprintln!("kiln: cannot read the value from stdin: {e}");
        return Err(1);
    }
    if terminal && value.last() == Some(&b'\n') {
        value.pop();
    }
    Ok(value)
}

pub async fn set(api: Option<ApiClient>, data_dir: &Path, repo: &str, name: &str) -> u8 {
    let (repo, name) = match parse(repo, Some(name)) {
        Ok((r, Some(n))) => (r, n),
        Ok(_) => return 2,
        Err(code) => return code,
    };
    let value = match read_value() {
        Ok(v) => v,
        Err(code) => return code,
    };
    let text = match check_value(&value) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 2;
        }
    };
    let done = match api {
        Some(c) => {
            c.put_secret(&repo.org, &repo.repo, name.as_str(), value.clone()).await.map_err(|e| e.to_string())
        }
        None => match local_store(data_dir) {
            Ok(store) => store.put(&repo, &name, text).await.map_err(|e| e.to_string()),
            Err(code) => return code,
        },
    };
    match done {
        Ok(()) => {
            eprintln!("kiln: secret {name} set for {repo} ({} bytes)", value.len());
            0
        }
        Err(e) => {
            eprintln!("kiln: cannot set {name}: {e}");
            1
        }
    }
}

pub async fn list(api: Option<ApiClient>, data_dir: &Path, repo: &str, json: bool) -> u8 {
    let repo = match parse(repo, None) {
        Ok((r, _)) => r,
        Err(code) => return code,
    };
    let listed = match api {
        Some(c) => c.secrets(&repo.org, &repo.repo).await.map_err(|e| e.to_string()),
        None => match local_store(data_dir) {
            Ok(store) => store.list(&repo).await.map(SecretList::from).map_err(|e| e.to_string()),
            Err(code) => return code,
        },
    };
    let list = match listed {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kiln: cannot list the secrets of {repo}: {e}");
            return 1;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        return 0;
    }
    if list.secrets.is_empty() {
        eprintln!("kiln: {repo} has no secrets");
    }
    for s in &list.secrets {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.updated_ms),
        );
        println!("{:<32} updated {when}", s.name);
    }
    0
}

pub async fn rm(api: Option<ApiClient>, data_dir: &Path, repo: &str, name: &str) -> u8 {
    let (repo, name) = match parse(repo, Some(name)) {
        Ok((r, Some(n))) => (r, n),
        Ok(_) => return 2,
        Err(code) => return code,
    };
    let removed = match api {
        Some(c) => match c.delete_secret(&repo.org, &repo.repo, name.as_str()).await {
            Ok(()) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e.to_string()),
        },
        None => match local_store(data_dir) {
            Ok(store) => store.delete(&repo, &name).await.map_err(|e| e.to_string()),
            Err(code) => return code,
        },
    };
    match removed {
        Ok(true) => {
            eprintln!("kiln: secret {name} removed from {repo}");
            0
        }
        Ok(false) => {
            eprintln!("kiln: {repo} has no secret {name}");
            1
        }
        Err(e) => {
            eprintln!("kiln: cannot remove {name}: {e}");
            1
        }
    }
}
