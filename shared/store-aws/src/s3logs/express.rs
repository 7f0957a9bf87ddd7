//! The S3 Express One Zone layout: a stream is its `log` object, appended in place with
//! PutObject's write offset (created with If-None-Match); `complete` only adds the marker,
//! there is nothing to compact or clean up. LocalStack cannot test this mode.

use super::keys::{Paths, Scan, backend, lost_race, sdk};
use super::layout::Layout;
use super::objects::Objects;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use kiln_store::LogError;

#[derive(Debug, Default)]
pub(super) struct Express;

#[async_trait]
impl Layout for Express {
    async fn scan(&self, o: &Objects, p: &Paths) -> Result<Scan, LogError> {
        let (complete_key, log_key) = (p.complete(), p.log());
        let (complete, log) = tokio::join!(o.head(&complete_key), o.head(&log_key));
        let log_size = log?;
        Ok(Scan {
            chunks: log_size.filter(|s| *s > 0).map(|s| vec![(0, s)]).unwrap_or_default(),
            complete: complete?.is_some(),
            log_size,
            open: false,
        })
    }

    fn locate(&self, p: &Paths, _offset: u64, a: u64, b: u64) -> (String, (u64, u64)) {
        (p.log(), (a, b))
    }

    async fn put_open(&self, o: &Objects, p: &Paths) -> Result<(), LogError> {
        o.put(&p.log(), Vec::new(), true).await.map(drop)
    }

    async fn write_at_end(
        &self,
        o: &Objects,
        p: &Paths,
        scan: &Scan,
        end: u64,
        bytes: &[u8],
    ) -> Result<bool, LogError> {
        let key = p.log();
        let req = o.client.put_object().bucket(&o.bucket).key(&key).body(ByteStream::from(bytes.to_vec()));
        // Appending to an existing object at its end; creating it otherwise.
        let req = if scan.log_size.is_some() {
            req.write_offset_bytes(i64::try_from(end).map_err(|e| backend("put", &key, e))?)
        } else {
            req.if_none_match("*")
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(sdk("put", &key, &e)),
        }
    }

    async fn seal(&self, o: &Objects, p: &Paths, scan: &Scan) -> Result<Option<u64>, LogError> {
        if scan.log_size.is_none() {
            self.put_open(o, p).await?;
        }
        Ok(Some(scan.log_size.unwrap_or(0)))
    }

    async fn clean_up(&self, _o: &Objects, _p: &Paths, _scan: &Scan) -> Result<(), LogError> {
        Ok(())
    }

    fn listed_len(&self, _chunks: u64, log: Option<u64>, _complete: bool) -> u64 {
        log.unwrap_or(0)
    }
}
