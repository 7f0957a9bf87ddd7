//! Repository secrets in SSM Parameter Store, as SecureString parameters (encrypted with
//! KMS: the account's `alias/aws/ssm`, or the key named by `KILN_SECRETS_KMS_KEY`) under
//! `<prefix>/<org>/<repo>/<NAME>` — the path the template lets only the functions that
//! deliver secrets read.
//!
//! Standard-tier parameters hold 4 KB and cost nothing at rest; a value of up to 64 KiB is
//! split into parts: `<NAME>` and `<NAME>.1`, `<NAME>.2`, ... (secret names have no `.`,
//! so parts never clash with a secret). Each part starts with `kiln1;<i>/<n>;<version>;`.
//! A write puts the other parts first and part 0 last (the commit point), then removes parts
//! the new value no longer has; a read that finds parts of two versions reads again.

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType};
use kiln_domain::Repo;
use kiln_domain::secret::{MAX_VALUE_BYTES, SecretName};
use kiln_store::{SecretInfo, SecretStore, SecretStoreError};
use std::collections::BTreeMap;

/// Bytes of a value per parameter (standard tier: 4096, less the part header).
const PART_BYTES: usize = 4000;
/// The most parts a value can have.
const MAX_PARTS: usize = MAX_VALUE_BYTES.div_ceil(PART_BYTES) + 1;
/// GetParameters and DeleteParameters take at most 10 names.
const NAMES_PER_CALL: usize = 10;
const READ_TRIES: usize = 3;

pub struct SsmSecretStore {
    client: Client,
    prefix: String,
    kms_key_id: Option<String>,
}

fn backend(e: impl std::fmt::Display) -> SecretStoreError {
    SecretStoreError::Backend(e.to_string())
}

/// One stored part: which of how many, of which version, and its text.
#[derive(Debug, PartialEq, Eq)]
struct Part<'a> {
    index: usize,
    count: usize,
    version: &'a str,
    text: &'a str,
}

fn parse_part(raw: &str) -> Option<Part<'_>> {
    let rest = raw.strip_prefix("kiln1;")?;
    let (pos, rest) = rest.split_once(';')?;
    let (version, text) = rest.split_once(';')?;
    let (i, n) = pos.split_once('/')?;
    let (index, count) = (i.parse().ok()?, n.parse().ok()?);
    (index < count && count <= MAX_PARTS).then_some(Part { index, count, version, text })
}

/// Splits `value` into part texts of at most `PART_BYTES` bytes, on character boundaries.
fn split(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = value;
    while !rest.is_empty() || parts.is_empty() {
        let mut cut = rest.len().min(PART_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts
}

impl SsmSecretStore {
    /// `prefix` is the path all of Kiln's secrets live under (`/kiln`).
    pub fn new(client: Client, prefix: impl Into<String>, kms_key_id: Option<String>) -> Self {
        let prefix = prefix.into().trim_end_matches('/').to_string();
        Self { client, prefix, kms_key_id }
    }

    fn repo_path(&self, repo: &Repo) -> String {
        format!("{}/{}/{}", self.prefix, repo.org, repo.repo)
    }

    fn part_name(&self, repo: &Repo, name: &SecretName, index: usize) -> String {
        match index {
            0 => format!("{}/{name}", self.repo_path(repo)),
            i => format!("{}/{name}.{i}", self.repo_path(repo)),
        }
    }

    /// Decrypted values of the given parameters that exist, by parameter name.
    async fn get_many(&self, names: &[String]) -> Result<BTreeMap<String, String>, SecretStoreError> {
        let mut out = BTreeMap::new();
        for batch in names.chunks(NAMES_PER_CALL) {
            let got = self
                .client
                .get_parameters()
                .set_names(Some(batch.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| backend(aws_sdk_ssm::error::DisplayErrorContext(e)))?;
            for p in got.parameters.unwrap_or_default() {
                if let (Some(n), Some(v)) = (p.name, p.value) {
                    out.insert(n, v);
                }
            }
        }
        Ok(out)
    }

    async fn put_part(&self, name: String, value: String) -> Result<(), SecretStoreError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .tier(ParameterTier::Standard)
            .overwrite(true)
            .set_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| backend(aws_sdk_ssm::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Deletes the named parameters; returns the ones that existed.
    async fn delete_many(&self, names: Vec<String>) -> Result<Vec<String>, SecretStoreError> {
        let mut deleted = Vec::new();
        for batch in names.chunks(NAMES_PER_CALL) {
            let r = self
                .client
                .delete_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| backend(aws_sdk_ssm::error::DisplayErrorContext(e)))?;
            deleted.extend(r.deleted_parameters.unwrap_or_default());
        }
        Ok(deleted)
    }

    /// One consistent read of some secrets: `Ok(None)` for a name whose parts disagree
    /// (a write was under way).
    async fn read_once(
        &self,
        repo: &Repo,
        names: &[SecretName],
    ) -> Result<BTreeMap<SecretName, Option<String>>, SecretStoreError> {
        let heads: Vec<String> = names.iter().map(|n| self.part_name(repo, n, 0)).collect();
        let got = self.get_many(&heads).await?;
        let mut rest_names = Vec::new();
        for n in names {
            if let Some(p) = got.get(&self.part_name(repo, n, 0)).and_then(|raw| parse_part(raw)) {
                rest_names.extend((1..p.count).map(|i| self.part_name(repo, n, i)));
            }
        }
        let rest = self.get_many(&rest_names).await?;
        let mut out = BTreeMap::new();
        for n in names {
            let Some(raw) = got.get(&self.part_name(repo, n, 0)) else { continue };
            let head = parse_part(raw).filter(|p| p.index == 0).ok_or_else(|| {
                SecretStoreError::Corrupt(format!("secret {n} of {repo}: not a Kiln value"))
            })?;
            let mut value = head.text.to_string();
            let mut whole = true;
            for i in 1..head.count {
                match rest.get(&self.part_name(repo, n, i)).and_then(|raw| parse_part(raw)) {
                    Some(p) if p.version == head.version && p.index == i && p.count == head.count => {
                        value.push_str(p.text)
                    }
                    _ => whole = false,
                }
            }
            out.insert(n.clone(), whole.then_some(value));
        }
        Ok(out)
    }
}

#[async_trait]
impl SecretStore for SsmSecretStore {
    async fn put(&self, repo: &Repo, name: &SecretName, value: &str) -> Result<(), SecretStoreError> {
        let texts = split(value);
        let count = texts.len();
        let version = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let part = |i: usize| format!("kiln1;{i}/{count};{version};{}", texts[i]);
        for i in (1..count).rev() {
            self.put_part(self.part_name(repo, name, i), part(i)).await?;
        }
        self.put_part(self.part_name(repo, name, 0), part(0)).await?;
        let stale: Vec<String> = (count..MAX_PARTS).map(|i| self.part_name(repo, name, i)).collect();
        self.delete_many(stale).await?;
        Ok(())
    }

    async fn list(&self, repo: &Repo) -> Result<Vec<SecretInfo>, SecretStoreError> {
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("OneLevel")
            .values(self.repo_path(repo))
            .build()
            .map_err(backend)?;
        let mut pages = self.client.describe_parameters().parameter_filters(filter).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend(aws_sdk_ssm::error::DisplayErrorContext(e)))?;
            for p in page.parameters.unwrap_or_default() {
                let Some(last) = p.name.as_deref().and_then(|n| n.rsplit('/').next()) else { continue };
                // Parts (`NAME.1`) are not names of their own.
                let Ok(name) = SecretName::parse(last) else { continue };
                let updated_ms = p.last_modified_date.map_or(0, |d| d.to_millis().unwrap_or(0).max(0) as u64);
                out.push(SecretInfo { name, updated_ms });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete(&self, repo: &Repo, name: &SecretName) -> Result<bool, SecretStoreError> {
        // Part 0 first: once it is gone the secret is gone, whatever happens to the rest.
        let head = self.part_name(repo, name, 0);
        let existed = self.delete_many(vec![head.clone()]).await?.contains(&head);
        self.delete_many((1..MAX_PARTS).map(|i| self.part_name(repo, name, i)).collect()).await?;
        Ok(existed)
    }

    async fn reveal(
        &self,
        repo: &Repo,
        names: &[SecretName],
    ) -> Result<BTreeMap<SecretName, String>, SecretStoreError> {
        for _ in 0..READ_TRIES {
            let read = self.read_once(repo, names).await?;
            if read.values().all(Option::is_some) {
                return Ok(read.into_iter().filter_map(|(k, v)| Some((k, v?))).collect());
            }
        }
        Err(SecretStoreError::Corrupt(format!(
            "a secret of {repo} kept changing while it was read ({READ_TRIES} tries)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_on_char_boundaries_and_parts_parse_back() {
        assert_eq!(split("abcd"), vec!["abcd"]);
        let long = "é".repeat(PART_BYTES); // 2 bytes each
        let parts = split(&long);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= PART_BYTES));
        assert_eq!(parts.concat(), long);
        assert_eq!(split(&"a".repeat(MAX_VALUE_BYTES)).len(), MAX_VALUE_BYTES.div_ceil(PART_BYTES));
        assert!(split(&"a".repeat(MAX_VALUE_BYTES)).len() <= MAX_PARTS);

        assert_eq!(
            parse_part("kiln1;1/3;v1;te;xt"),
            Some(Part { index: 1, count: 3, version: "v1", text: "te;xt" })
        );
        assert_eq!(parse_part("kiln1;3/3;v1;x"), None);
        assert_eq!(parse_part("plain value"), None);
    }
}
