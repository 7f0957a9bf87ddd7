//! Compaction of a chunked stream into its one `log` object: one PutObject below
//! [`PART_SIZE`], else a multipart upload of parts of about that size (one in memory at a
//! time), chunks of [`MIN_PART`] or more copied inside S3 (UploadPartCopy).

use super::keys::{Paths, Scan, escape, not_found, sdk};
use super::layout::{Layout, read_stored};
use super::objects::Objects;
use crate::describe;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use kiln_store::LogError;

/// Multipart parts are built of this size (S3's minimum part is 5 MiB); a stream shorter
/// than this is compacted with one PutObject.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// A chunk at least this big (and starting a part) is copied server-side (UploadPartCopy).
const MIN_PART: u64 = 5 * 1024 * 1024;

/// Writes the chunks of `scan` as the one `log` object. False if a chunk went away
/// (another `complete` finished first).
pub(super) async fn compact(
    layout: &dyn Layout,
    o: &Objects,
    p: &Paths,
    scan: &Scan,
) -> Result<bool, LogError> {
    let total = scan.end();
    let log = p.log();
    if total < PART_SIZE as u64 {
        let Some(bytes) = read_stored(layout, o, p, scan, 0, total).await? else { return Ok(false) };
        o.client
            .put_object()
            .bucket(&o.bucket)
            .key(&log)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk("put", &log, &e))?;
        return Ok(true);
    }
    let upload = o
        .client
        .create_multipart_upload()
        .bucket(&o.bucket)
        .key(&log)
        .send()
        .await
        .map_err(|e| sdk("create multipart upload", &log, &e))?;
    let upload_id = upload.upload_id().unwrap_or_default().to_string();
    let result = upload_parts(o, p, scan, &upload_id).await;
    match result {
        Ok(Some(parts)) => {
            o.client
                .complete_multipart_upload()
                .bucket(&o.bucket)
                .key(&log)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| sdk("complete multipart upload", &log, &e))?;
            Ok(true)
        }
        other => {
            let abort = o.client.abort_multipart_upload().bucket(&o.bucket).key(&log).upload_id(&upload_id);
            if let Err(e) = abort.send().await {
                tracing::warn!(key = %log, error = %describe(&e), "abort multipart upload failed");
            }
            other.map(|_| false)
        }
    }
}

/// Uploads the parts of the compacted object: chunks gathered into parts of about
/// [`PART_SIZE`] (one part in memory at a time); a chunk big enough to be a part on its
/// own is copied inside S3. None if a chunk went away.
async fn upload_parts(
    o: &Objects,
    p: &Paths,
    scan: &Scan,
    upload_id: &str,
) -> Result<Option<Vec<CompletedPart>>, LogError> {
    let log = p.log();
    let mut parts = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(PART_SIZE);
    let count = scan.chunks.len();
    for (i, &(offset, len)) in scan.chunks.iter().enumerate() {
        let key = p.chunk(offset);
        if buf.is_empty() && len >= MIN_PART {
            let number = parts.len() as i32 + 1;
            let out = o
                .client
                .upload_part_copy()
                .bucket(&o.bucket)
                .key(&log)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(format!("{}/{}", o.bucket, escape(&key, true)))
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(sdk("upload part copy", &key, &e)),
            };
            let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default();
            parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
            continue;
        }
        let Some(bytes) = o.get(&key, None).await? else { return Ok(None) };
        buf.extend_from_slice(&bytes);
        if buf.len() >= PART_SIZE || i + 1 == count {
            let number = parts.len() as i32 + 1;
            let body = std::mem::replace(&mut buf, Vec::with_capacity(PART_SIZE));
            let out = o
                .client
                .upload_part()
                .bucket(&o.bucket)
                .key(&log)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| sdk("upload part", &log, &e))?;
            parts.push(
                CompletedPart::builder().part_number(number).e_tag(out.e_tag().unwrap_or_default()).build(),
            );
        }
    }
    Ok(Some(parts))
}
