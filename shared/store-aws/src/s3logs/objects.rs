//! The S3 requests the log store makes, whatever its layout: head, get (ranged), small
//! conditional puts, deletes and listings (with the SDK's paginator).

use super::keys::{backend, lost_race, not_found, sdk};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use kiln_store::LogError;
use std::time::{Duration, SystemTime};

/// The marker body of a batch id claimed by a writer that has not recorded its offset.
pub(super) const PENDING: &str = "pending";

/// The bucket and the client that reaches it.
#[derive(Debug, Clone)]
pub(super) struct Objects {
    pub(super) client: Client,
    pub(super) bucket: String,
}

impl Objects {
    /// The object's size, or None if there is none.
    pub(super) async fn head(&self, key: &str) -> Result<Option<u64>, LogError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(sdk("head", key, &e)),
        }
    }

    /// The object's bytes (`range`: a byte range `start..end`), or None if it is gone.
    pub(super) async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<Vec<u8>>, LogError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((start, end)) = range {
            if end <= start {
                return Ok(Some(Vec::new()));
            }
            req = req.range(format!("bytes={start}-{}", end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(sdk("get", key, &e)),
        };
        let body = out.body.collect().await.map_err(|e| backend("read", key, e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// Puts `body` at `key`; with `if_none_match` only if the key does not exist yet
    /// (false: it did, or another such put is in flight).
    pub(super) async fn put(&self, key: &str, body: Vec<u8>, if_none_match: bool) -> Result<bool, LogError> {
        let mut req = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body));
        if if_none_match {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if if_none_match && lost_race(&e) => Ok(false),
            Err(e) => Err(sdk("put", key, &e)),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), LogError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(sdk("delete", key, &e)),
        }
    }

    /// Deletes `keys`, a thousand per DeleteObjects.
    pub(super) async fn delete_many(&self, keys: Vec<String>) -> Result<(), LogError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build().map_err(|e| backend("delete", k, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend("delete", &batch[0], e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk("delete", &batch[0], &e))?;
            if let Some(err) = out.errors().first() {
                return Err(backend(
                    "delete",
                    err.key().unwrap_or_default(),
                    err.message().or(err.code()).unwrap_or("failed"),
                ));
            }
        }
        Ok(())
    }

    /// Every object under `prefix` (after `start_after`, if given) as (key, size), in key
    /// order: ListObjectsV2 through the SDK's paginator.
    pub(super) async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<(String, u64)>, LogError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk("list", prefix, &e))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0).max(0) as u64))),
            );
        }
        Ok(out)
    }

    /// A batch's marker: Some(Some(offset)) once recorded, Some(None) while claimed (with
    /// its age), None if there is none.
    pub(super) async fn batch_marker(&self, key: &str) -> Result<Option<(Option<u64>, Duration)>, LogError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(sdk("get", key, &e)),
        };
        let age = out
            .last_modified()
            .and_then(|t| {
                let secs = u64::try_from(t.secs()).ok()?;
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?;
                Some(now.saturating_sub(Duration::from_secs(secs)))
            })
            .unwrap_or_default();
        let body = out.body.collect().await.map_err(|e| backend("read", key, e))?.into_bytes();
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if text == PENDING {
            return Ok(Some((None, age)));
        }
        let offset = text.parse().map_err(|e| backend("parse", key, format!("{text:?}: {e}")))?;
        Ok(Some((Some(offset), age)))
    }
}
