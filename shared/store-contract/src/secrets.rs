//! What every secret store must show: values come back only through `reveal`, listings
//! carry names and times, a value may be as large as the domain allows, and a rewrite
//! replaces the whole value (a shorter one leaves nothing of the longer one behind).

use kiln_domain::Repo;
use kiln_domain::secret::{MAX_VALUE_BYTES, SecretName};
use kiln_store::SecretStore;

fn fresh_repo() -> Repo {
    Repo::new("contract", format!("s{}", uuid::Uuid::new_v4().simple()))
}

fn name(s: &str) -> SecretName {
    SecretName::parse(s).expect("valid name")
}

pub async fn secrets_round_trip(s: &dyn SecretStore) {
    let repo = fresh_repo();
    assert!(s.list(&repo).await.expect("list").is_empty());
    s.put(&repo, &name("B_TOKEN"), "bbbb-value").await.expect("put");
    s.put(&repo, &name("A_KEY"), "aaaa-value").await.expect("put");
    let listed = s.list(&repo).await.expect("list");
    let names: Vec<_> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["A_KEY", "B_TOKEN"], "sorted by name");
    assert!(listed.iter().all(|i| i.updated_ms > 0), "{listed:?}");
    let got = s.reveal(&repo, &[name("A_KEY"), name("NOPE")]).await.expect("reveal");
    assert_eq!(got.len(), 1);
    assert_eq!(got[&name("A_KEY")], "aaaa-value");
    // Another repository sees none of them.
    assert!(s.reveal(&fresh_repo(), &[name("A_KEY")]).await.expect("reveal").is_empty());
    assert!(s.delete(&repo, &name("A_KEY")).await.expect("delete"));
    assert!(!s.delete(&repo, &name("A_KEY")).await.expect("delete again"));
    assert!(s.reveal(&repo, &[name("A_KEY")]).await.expect("reveal").is_empty());
}

pub async fn secrets_large_values_and_rewrites(s: &dyn SecretStore) {
    let repo = fresh_repo();
    let big: String = (0..MAX_VALUE_BYTES).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    s.put(&repo, &name("BIG"), &big).await.expect("put 64 KiB");
    assert_eq!(s.reveal(&repo, &[name("BIG")]).await.expect("reveal")[&name("BIG")], big);
    let multi = "line one\nline two é\n";
    s.put(&repo, &name("BIG"), multi).await.expect("rewrite shorter");
    assert_eq!(s.reveal(&repo, &[name("BIG")]).await.expect("reveal")[&name("BIG")], multi);
    let names: Vec<_> = s.list(&repo).await.expect("list").into_iter().map(|i| i.name).collect();
    assert_eq!(names, [name("BIG")], "parts of the old value are not listed");
    assert!(s.delete(&repo, &name("BIG")).await.expect("delete"));
    assert!(s.list(&repo).await.expect("list").is_empty());
}
