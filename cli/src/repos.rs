//! `kiln repos add|list`: repositories registered for builds from git (over the API).

use kiln_api::client::ApiClient;
use kiln_api::views::{RepoRequest, RepoView};
use kiln_domain::Repo;
use kiln_domain::git::Provider;
use std::io::{BufRead, IsTerminal};

/// The webhook secret and the host token: `KILN_WEBHOOK_SECRET` and `KILN_GIT_TOKEN`, or,
/// for what those do not give, lines of stdin (the secret first, then the token).
fn credentials() -> Result<(String, Option<String>), String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (mut secret, mut token) = (env("KILN_WEBHOOK_SECRET"), env("KILN_GIT_TOKEN"));
    if secret.is_none() || token.is_none() {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("kiln: type the webhook secret, Enter, then the token (empty for none), Enter");
        }
        let mut lines = stdin.lock().lines();
        let mut next = || lines.next().transpose().map(|l| l.map(|l| l.trim_end_matches('\r').to_string()));
        if secret.is_none() {
            secret = next().map_err(|e| format!("cannot read the webhook secret from stdin: {e}"))?;
        }
        if token.is_none() {
            token = next()
                .map_err(|e| format!("cannot read the token from stdin: {e}"))?
                .filter(|t| !t.is_empty());
        }
    }
    let secret = secret.filter(|s| !s.is_empty()).ok_or(
        "no webhook secret: set KILN_WEBHOOK_SECRET or give it as the first line of stdin".to_string(),
    )?;
    Ok((secret, token))
}

pub async fn add(c: &ApiClient, repo: &str, provider: &str, api_url: Option<String>, json: bool) -> u8 {
    let Some(repo) = Repo::parse(repo) else {
        eprintln!("kiln: the repository must look like org/repo");
        return 2;
    };
    let provider: Provider = match provider.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 2;
        }
    };
    let (webhook_secret, token) = match credentials() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 2;
        }
    };
    let req = RepoRequest { provider, api_url, webhook_secret, token };
    match c.put_repo(&repo.org, &repo.repo, &req).await {
        Ok(view) if json => print_json(&view),
        Ok(view) => {
            println!("{}", line(&view));
            println!(
                "point the host's webhook at {}{} (content type application/json)",
                c.base(),
                view.hook_path
            );
            0
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            1
        }
    }
}

pub async fn list(c: &ApiClient, json: bool) -> u8 {
    match c.repos().await {
        Ok(list) if json => print_json(&list),
        Ok(list) => {
            for r in &list.repos {
                println!("{}", line(r));
            }
            0
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            1
        }
    }
}

fn line(r: &RepoView) -> String {
    format!("{}  {}  {}", r.repo, r.provider, r.api_url)
}

fn print_json(v: &impl serde::Serialize) -> u8 {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            1
        }
    }
}
