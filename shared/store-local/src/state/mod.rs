//! [`LocalStateStore`]: builds in memory, mirrored to `DATA/builds/`; the image catalog
//! in `DATA/images/`.

mod catalog;
mod commit;
mod files;

use crate::{blocking, is_safe_id};
use async_trait::async_trait;
use files::Inner;
use kiln_domain::catalog::{ImageHistoryEntry, ImageRecord};
use kiln_domain::commit::ClaimDecision;
use kiln_domain::event::{StoredEvent, now_ms};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo, StageName};
use kiln_store::{BuildSummary, Claim, Commit, CommitOutcome, StateStore, StoreError};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The state store of the embedded default: every build is kept in memory once read, and
/// every change is written to the data dir before it is acknowledged, so another process
/// opening the same dir (`kiln status`, `kiln logs`) sees it.
///
/// Builds are loaded lazily. Before each operation the build's file is checked (one
/// `stat`): if another process replaced it, it is read again, so a reader in one process
/// follows a build written by another. Writes are serialized per build within a process;
/// two processes writing the same build at once are not supported. Image records are read
/// from their files every time; catalog writes are serialized within the process (two
/// processes writing the same image at once are not supported either).
#[derive(Clone)]
pub struct LocalStateStore {
    inner: Arc<Inner>,
    clock: Clock,
}

/// The clock leases are measured by: the wall clock when the store was opened, moved on by
/// tokio's clock, so that tests on paused time (`tokio::time::advance`) run leases out
/// without waiting, as they do the local queues' visibility timeouts.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ms: u64,
    at: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self { wall_ms: now_ms(), at: tokio::time::Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

impl std::fmt::Debug for LocalStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStateStore").field("dir", &self.inner.dir).finish()
    }
}

impl LocalStateStore {
    /// Opens (creating it if needed) the state kept under `data_dir/builds/` and
    /// `data_dir/images/`.
    pub fn open(data_dir: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self { inner: Arc::new(Inner::open(data_dir.as_ref())?), clock: Clock::new() })
    }

    /// `data_dir/builds`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || f(&inner), StoreError::Backend).await
    }
}

#[async_trait]
impl StateStore for LocalStateStore {
    async fn create_build(&self, build: &Build) -> Result<(), StoreError> {
        let build = build.clone();
        self.run(move |s| s.create_build(build)).await
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let id = id.clone();
        self.run(move |s| {
            if !is_safe_id(id.as_str()) {
                return Ok(None);
            }
            s.with(&id, |e| Ok(e.map(|e| e.build.clone())))
        })
        .await
    }

    async fn build_seq(&self, id: &BuildId) -> Result<Option<u64>, StoreError> {
        Ok(self.get_build_seq(id).await?.map(|(_, seq)| seq))
    }

    async fn get_build_seq(&self, id: &BuildId) -> Result<Option<(Build, u64)>, StoreError> {
        let id = id.clone();
        self.run(move |s| {
            if !is_safe_id(id.as_str()) {
                return Ok(None);
            }
            s.with(&id, |e| Ok(e.map(|e| (e.build.clone(), e.meta.last_seq))))
        })
        .await
    }

    /// This store keeps whole builds in memory (the test double and `kiln run`'s store):
    /// the part is cut from the whole.
    async fn get_build_part(&self, id: &BuildId, stages: &[StageName]) -> Result<Option<Build>, StoreError> {
        Ok(self.get_build(id).await?.map(|mut b| {
            b.stages.retain(|s| stages.contains(&s.name));
            b
        }))
    }

    async fn list_builds(&self, repo: &Repo, limit: usize) -> Result<Vec<BuildSummary>, StoreError> {
        let repo = repo.clone();
        self.run(move |s| s.list_builds(&repo, limit)).await
    }

    async fn commit(&self, build: &BuildId, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        let (id, commit) = (build.clone(), commit.clone());
        self.run(move |s| s.commit(&id, &commit)).await
    }

    async fn events(
        &self,
        build: &BuildId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let id = build.clone();
        self.run(move |s| {
            s.with_existing(&id, |s, e| {
                let events = s.events_of(&id, e, false)?;
                let start = usize::try_from(after_seq).unwrap_or(usize::MAX).min(events.len());
                Ok(events[start..].iter().take(limit).cloned().collect())
            })
        })
        .await
    }

    async fn mark_dispatched(&self, build: &BuildId, stage: &StageName) -> Result<bool, StoreError> {
        let (id, stage) = (build.clone(), stage.clone());
        self.run(move |s| {
            s.update(&id.clone(), |b| {
                let st = b
                    .stages
                    .iter_mut()
                    .find(|s| s.name == stage)
                    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                if st.dispatched {
                    return Ok((false, false));
                }
                st.dispatched = true;
                Ok((true, true))
            })
        })
        .await
    }

    async fn claim_job(
        &self,
        build: &BuildId,
        stage: &StageName,
        runner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let (id, stage, runner) = (build.clone(), stage.clone(), runner.to_string());
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let now = self.clock.now_ms();
        self.run(move |s| {
            s.update(&id.clone(), |b| {
                let build_status = b.status;
                let st = b
                    .stages
                    .iter_mut()
                    .find(|s| s.name == stage)
                    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                let decision = st.decide_claim(build_status, &runner, now, lease_ms);
                let claim = Claim::from(&decision);
                match decision {
                    ClaimDecision::Renew(l) | ClaimDecision::Take(l) => {
                        st.lease = Some(l);
                        Ok((claim, true))
                    }
                    ClaimDecision::Busy | ClaimDecision::Finished => Ok((claim, false)),
                }
            })
        })
        .await
    }

    async fn get_image(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let image = image.to_string();
        self.run(move |s| s.read_image(&image)).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.run(|s| s.list_images()).await
    }

    async fn image_history(&self, image: &str) -> Result<Vec<ImageHistoryEntry>, StoreError> {
        let image = image.to_string();
        self.run(move |s| s.image_history(&image)).await
    }
}
