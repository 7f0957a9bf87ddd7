//! What every repository store must show: settings round-trip, are replaced in place and
//! list sorted by `org/repo`; a claim is taken once, atomically (of concurrent claims of
//! one key exactly one wins, and the others see the winner's value), until released.
//!
//! Every check uses fresh organisations and claim keys, so checks share one store.

use kiln_domain::Repo;
use kiln_domain::git::Provider;
use kiln_store::{RepoSettings, RepoStore};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Every repository check, one after the other.
pub async fn repos_suite(s: &dyn RepoStore) {
    repos_round_trip(s).await;
    repos_replace_keeps_one(s).await;
    repos_unknown_is_none(s).await;
    repos_list_sorted(s).await;
    repos_claim_once(s).await;
    repos_release_then_claim(s).await;
    repos_concurrent_claims_one_winner(s).await;
    repos_claim_keys_any_shape(s).await;
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn settings(repo: Repo, provider: Provider, api_url: &str, updated_ms: u64) -> RepoSettings {
    RepoSettings { repo, provider, api_url: api_url.to_string(), updated_ms }
}

/// The listed settings of the organisations whose name starts with `prefix` (other checks
/// may be listing their own at the same time).
async fn listed(s: &dyn RepoStore, prefix: &str) -> Vec<RepoSettings> {
    let all = s.list_repos().await.expect("list repos");
    all.into_iter().filter(|r| r.repo.org.starts_with(prefix)).collect()
}

pub async fn repos_round_trip(s: &dyn RepoStore) {
    let repo = Repo::new(fresh("c"), "app");
    let want = settings(repo.clone(), Provider::Gitea, "https://git.example.com/api/v1", 1_700_000_000_123);
    s.put_repo(&want).await.expect("put");
    assert_eq!(s.get_repo(&repo).await.expect("get"), Some(want.clone()));
    // Another repository of the same organisation is not it.
    assert_eq!(s.get_repo(&Repo::new(repo.org.clone(), "app2")).await.expect("get other"), None);
    assert_eq!(listed(s, &repo.org).await, vec![want]);
}

pub async fn repos_replace_keeps_one(s: &dyn RepoStore) {
    let repo = Repo::new(fresh("c"), "app");
    s.put_repo(&settings(repo.clone(), Provider::Github, "https://api.github.com", 1)).await.expect("put");
    let newer = settings(repo.clone(), Provider::Gitea, "https://gitea.example.com/api/v1", 2);
    s.put_repo(&newer).await.expect("replace");
    assert_eq!(s.get_repo(&repo).await.expect("get"), Some(newer.clone()));
    assert_eq!(listed(s, &repo.org).await, vec![newer], "a replace leaves one entry");
}

pub async fn repos_unknown_is_none(s: &dyn RepoStore) {
    assert_eq!(s.get_repo(&Repo::new(fresh("c"), "nope")).await.expect("get"), None);
}

pub async fn repos_list_sorted(s: &dyn RepoStore) {
    let org = fresh("c");
    // `org-x/…` sorts before `org/…` as a string (`-` < `/`), though `org` < `org-x` as a
    // name: the order is the string `org/repo`'s.
    let names = [
        Repo::new(org.clone(), "b"),
        Repo::new(format!("{org}-x"), "a"),
        Repo::new(org.clone(), "a.z"),
        Repo::new(org.clone(), "a"),
        Repo::new(org.clone(), "B"),
    ];
    for (i, repo) in names.iter().enumerate() {
        s.put_repo(&settings(repo.clone(), Provider::Github, "https://api.github.com", i as u64 + 1))
            .await
            .expect("put");
    }
    let got: Vec<String> = listed(s, &org).await.iter().map(|r| r.repo.to_string()).collect();
    let mut want: Vec<String> = names.iter().map(Repo::to_string).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.first().map(String::as_str), Some(format!("{org}-x/a").as_str()));
}

pub async fn repos_claim_once(s: &dyn RepoStore) {
    let key = fresh("delivery/");
    assert_eq!(s.claim(&key, "build-1").await.expect("claim"), None, "the first claim takes the key");
    assert_eq!(s.claim(&key, "build-2").await.expect("claim again"), Some("build-1".to_string()));
    // The losing claim did not overwrite.
    assert_eq!(s.claim(&key, "build-3").await.expect("claim a third time"), Some("build-1".to_string()));
    // Another key is free.
    assert_eq!(s.claim(&format!("{key}x"), "other").await.expect("claim other"), None);
}

pub async fn repos_release_then_claim(s: &dyn RepoStore) {
    let key = fresh("status/");
    assert_eq!(s.claim(&key, "first").await.expect("claim"), None);
    s.release(&key).await.expect("release");
    assert_eq!(s.claim(&key, "second").await.expect("claim after release"), None);
    assert_eq!(s.claim(&key, "third").await.expect("claim"), Some("second".to_string()));
    // Releasing what is not claimed is no error.
    s.release(&fresh("never/")).await.expect("release unclaimed");
}

/// Runs the futures concurrently (on this task) and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub async fn repos_concurrent_claims_one_winner(s: &dyn RepoStore) {
    const CLAIMERS: usize = 16;
    let key = fresh("race/");
    let values: Vec<String> = (0..CLAIMERS).map(|i| format!("claimer-{i}")).collect();
    let results = join_all(values.iter().map(|v| s.claim(&key, v)).collect()).await;
    let results: Vec<Option<String>> = results.into_iter().map(|r| r.expect("claim")).collect();
    let winners: Vec<&String> =
        values.iter().zip(&results).filter(|(_, r)| r.is_none()).map(|(v, _)| v).collect();
    assert_eq!(winners.len(), 1, "exactly one claim wins: {results:?}");
    let winner = winners[0];
    for r in results.iter().flatten() {
        assert_eq!(r, winner, "every loser sees the winner's value: {results:?}");
    }
    assert_eq!(s.claim(&key, "late").await.expect("claim"), Some(winner.clone()));
}

pub async fn repos_claim_keys_any_shape(s: &dyn RepoStore) {
    let id = fresh("");
    let long = format!("{id}/{}", "k".repeat(300));
    let keys = [
        format!("hook/github/acme/app/{id}"),
        format!("status#acme/app#{id}#kiln/build#pending"),
        long.clone(),
        format!("{long}#2"),
        format!("é ü/{id} with spaces"),
    ];
    for k in &keys {
        assert_eq!(s.claim(k, &format!("v:{k}")).await.expect("claim"), None, "{k}");
    }
    // Each key holds its own value: no two shapes collapse into one.
    for k in &keys {
        assert_eq!(s.claim(k, "again").await.expect("claim again"), Some(format!("v:{k}")), "{k}");
    }
    for k in &keys {
        s.release(k).await.expect("release");
    }
    for k in &keys {
        assert_eq!(s.claim(k, "after").await.expect("claim after release"), None, "{k}");
    }
}
