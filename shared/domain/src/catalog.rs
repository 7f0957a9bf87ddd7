//! The image catalog: for each image and provider, one record of where its latest build
//! stands (status, percent, error, artifact URI), and the history of every version of it.
//! Written only by the event fan-in, from the reports steps print (`::kiln::progress`,
//! `::kiln::result`) and from the build's own start and end. Pure rules here; the fan-in
//! reads the records, [`crate::react::react_catalog`] decides, the store applies.
//!
//! The rules, in one place:
//! - within one build a record follows [`ImageStatus`]: `queued → building → pushing →
//!   complete | failed`; complete and failed are final for that build;
//! - the percent never goes backwards within a build (a lower one is kept at the higher);
//! - a newer build supersedes an older one's record (build ids are UUIDv7: a later id is
//!   a newer build); a late update from an older build is ignored;
//! - so a duplicate or out-of-order report changes nothing that arriving once, in order,
//!   would not have: progress after the result, a second result, a lower percent are
//!   ignored;
//! - when a build starts, its pairs (its images × the providers it was asked for) are
//!   queued; when it ends, each of its pairs still open ends failed, "no result reported";
//! - only an image's `built-by` stage may report it (any stage, without `built-by`);
//!   reports of images or providers the pipeline does not declare are refused.

use crate::ids::BuildId;
use crate::protocol::{ImageOutcome, Phase};
use crate::state::{Build, TransitionError};
use crate::status::ImageStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The variable that tells steps which providers to build, comma-separated.
pub const PROVIDERS_ENV: &str = "KILN_PROVIDERS";
/// The error of a pair a finished build never reported a result for.
pub const NO_RESULT: &str = "no result reported";

/// One image for one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub image: String,
    pub provider: String,
    pub status: ImageStatus,
    /// 0 to 100.
    pub percent: u8,
    /// Why it failed (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The build this record is about.
    pub build: BuildId,
    /// Where the artifact is (complete only, when the step said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// When it last changed (ms since the epoch).
    pub updated_ms: u64,
    /// 1 for the first write, one more for each write after: catalog writes are
    /// conditional on it.
    pub version: u64,
}

/// One version of a record, as written. An image's history is every version of its
/// records (see `StateStore::image_history` for the order).
pub type ImageHistoryEntry = ImageRecord;

/// One conditional catalog write: stored only if the record is still at
/// `expected_version` (0: there is no record yet); otherwise the whole commit is refused
/// as a conflict, like a stale transition. The record is also appended to the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogWrite {
    pub expected_version: u64,
    /// The new record; its version is `expected_version + 1`.
    pub record: ImageRecord,
}

impl CatalogWrite {
    /// Checks the write's condition against the stored record. Every adapter uses this,
    /// so they refuse the same things.
    pub fn check(&self, current: Option<&ImageRecord>) -> Result<(), TransitionError> {
        let actual = current.map_or(0, |r| r.version);
        if actual == self.expected_version {
            Ok(())
        } else {
            Err(TransitionError::StaleImage {
                image: self.record.image.clone(),
                provider: self.record.provider.clone(),
                expected: self.expected_version,
                actual,
            })
        }
    }
}

/// What happened to a pair, as far as the catalog is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUpdate {
    /// The build started and will build this pair.
    Queued,
    /// `::kiln::progress`.
    Progress { percent: u8, phase: Phase },
    /// `::kiln::result`.
    Result(ImageOutcome),
    /// The build ended without a result for this pair.
    NoResult,
}

/// The record after `update` from `build`, or why the update changes nothing (it is then
/// ignored, and logged).
pub fn apply(
    current: Option<&ImageRecord>,
    image: &str,
    provider: &str,
    build: &BuildId,
    update: &ImageUpdate,
    now_ms: u64,
) -> Result<ImageRecord, String> {
    let pair = format!("{image}/{provider}");
    let version = current.map_or(0, |r| r.version) + 1;
    let base = match current {
        Some(r) if r.build > *build => {
            return Err(format!("{pair}: report of build {build} ignored: build {} is newer", r.build));
        }
        Some(r) if r.build == *build => {
            if *update == ImageUpdate::Queued {
                return Err(format!("{pair}: already queued by build {build}"));
            }
            r.clone()
        }
        // No record, or an older build's: this build starts afresh.
        _ => {
            if *update == ImageUpdate::NoResult {
                return Err(format!("{pair}: build {build} never queued it"));
            }
            ImageRecord {
                image: image.to_string(),
                provider: provider.to_string(),
                status: ImageStatus::Queued,
                percent: 0,
                error: None,
                build: build.clone(),
                uri: None,
                updated_ms: now_ms,
                version,
            }
        }
    };
    let (to, percent, error, uri) = match update {
        ImageUpdate::Queued => return Ok(base),
        ImageUpdate::Progress { percent, phase } => {
            let to = match phase {
                Phase::Building => ImageStatus::Building,
                Phase::Pushing => ImageStatus::Pushing,
            };
            (to, base.percent.max((*percent).min(100)), None, None)
        }
        ImageUpdate::Result(ImageOutcome::Ok { uri }) => (ImageStatus::Complete, 100, None, uri.clone()),
        ImageUpdate::Result(ImageOutcome::Error { message }) => {
            (ImageStatus::Failed, base.percent, Some(message.clone()), None)
        }
        ImageUpdate::NoResult => (ImageStatus::Failed, base.percent, Some(NO_RESULT.to_string()), None),
    };
    if !base.status.can_become(to) {
        return Err(format!("{pair}: {} -> {to} refused (build {build})", base.status));
    }
    if to == base.status && percent <= base.percent {
        return Err(format!("{pair}: {to} {percent}% ignored: already at {}% (build {build})", base.percent));
    }
    Ok(ImageRecord { status: to, percent, error, uri, updated_ms: now_ms, version, ..base })
}

/// The providers a build was asked for: its own list, or every provider of its images
/// (each once, in the order the pipeline lists them).
pub fn requested_providers(build: &Build) -> Vec<String> {
    if let Some(p) = &build.providers {
        return p.clone();
    }
    let mut out: Vec<String> = Vec::new();
    for p in build.plan.images.iter().flat_map(|i| &i.providers) {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The (image, provider) pairs a build builds: its images × the providers it was asked for.
pub fn requested_pairs(build: &Build) -> Vec<(String, String)> {
    let wanted = requested_providers(build);
    build
        .plan
        .images
        .iter()
        .flat_map(|i| i.providers.iter().filter(|p| wanted.contains(p)).map(|p| (i.name.clone(), p.clone())))
        .collect()
}

/// Where a build left each of its pairs: the last version of each record it wrote,
/// taken from the images' history (a newer build may have superseded the records since).
pub fn build_results(history: &[ImageHistoryEntry], build: &BuildId) -> Vec<ImageRecord> {
    let mut last: BTreeMap<(&str, &str), &ImageRecord> = BTreeMap::new();
    for h in history.iter().filter(|h| h.build == *build) {
        let key = (h.image.as_str(), h.provider.as_str());
        if last.get(&key).is_none_or(|r| r.version < h.version) {
            last.insert(key, h);
        }
    }
    last.into_values().cloned().collect()
}

/// One image and its records, one per provider: a row of the catalog's matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogImage {
    pub name: String,
    pub providers: Vec<ImageRecord>,
}

/// Records grouped by image (images by name, providers by name): the catalog's matrix.
pub fn by_image(records: Vec<ImageRecord>) -> Vec<CatalogImage> {
    let mut map: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.image.clone()).or_default().push(r);
    }
    map.into_iter()
        .map(|(name, mut providers)| {
            providers.sort_by(|a, b| a.provider.cmp(&b.provider));
            CatalogImage { name, providers }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u32) -> BuildId {
        // UUIDv7-like ids that sort by n.
        BuildId::new(format!("0190{n:04x}-0000-7000-8000-000000000000"))
    }

    fn progress(percent: u8) -> ImageUpdate {
        ImageUpdate::Progress { percent, phase: Phase::Building }
    }

    fn ok(uri: &str) -> ImageUpdate {
        ImageUpdate::Result(ImageOutcome::Ok { uri: Some(uri.into()) })
    }

    fn error(m: &str) -> ImageUpdate {
        ImageUpdate::Result(ImageOutcome::Error { message: m.into() })
    }

    /// Applies updates in order, ignoring the refused ones, like the fan-in.
    fn run(start: Option<ImageRecord>, updates: &[(BuildId, ImageUpdate)]) -> Option<ImageRecord> {
        let mut rec = start;
        for (i, (build, u)) in updates.iter().enumerate() {
            if let Ok(r) = apply(rec.as_ref(), "img", "aws", build, u, 1000 + i as u64) {
                rec = Some(r);
            }
        }
        rec
    }

    #[test]
    fn a_build_goes_queued_building_pushing_complete() {
        let r = run(
            None,
            &[
                (b(1), ImageUpdate::Queued),
                (b(1), progress(10)),
                (b(1), progress(60)),
                (b(1), ImageUpdate::Progress { percent: 80, phase: Phase::Pushing }),
                (b(1), ok("ami-1")),
            ],
        )
        .unwrap();
        assert_eq!(
            (r.status, r.percent, r.uri.as_deref(), r.version),
            (ImageStatus::Complete, 100, Some("ami-1"), 5)
        );
    }

    #[test]
    fn percent_never_goes_backwards_within_a_build() {
        let r = run(None, &[(b(1), progress(70)), (b(1), progress(40))]).unwrap();
        assert_eq!((r.percent, r.version), (70, 1), "the lower percent is ignored");
        // A phase change keeps the higher percent.
        let r = apply(
            Some(&r),
            "img",
            "aws",
            &b(1),
            &ImageUpdate::Progress { percent: 5, phase: Phase::Pushing },
            9,
        )
        .unwrap();
        assert_eq!((r.status, r.percent), (ImageStatus::Pushing, 70));
        let back = apply(Some(&r), "img", "aws", &b(1), &progress(90), 9);
        assert!(back.is_err(), "pushing does not go back to building");
    }

    #[test]
    fn duplicates_and_out_of_order_reports_end_as_if_once_in_order() {
        let in_order =
            [(b(1), ImageUpdate::Queued), (b(1), progress(30)), (b(1), progress(90)), (b(1), ok("u"))];
        let expected = run(None, &in_order).unwrap();
        let shuffled = [
            (b(1), ImageUpdate::Queued),
            (b(1), progress(90)),
            (b(1), progress(30)),
            (b(1), ok("u")),
            (b(1), progress(90)),
            (b(1), ok("u")),
            (b(1), ImageUpdate::Queued),
        ];
        let got = run(None, &shuffled).unwrap();
        assert_eq!(
            (got.status, got.percent, &got.uri, &got.error),
            (expected.status, expected.percent, &expected.uri, &expected.error)
        );
        // A second, different result of the same build changes nothing either.
        let again = apply(Some(&got), "img", "aws", &b(1), &error("late"), 5000);
        assert!(again.is_err());
        let no_result = apply(Some(&got), "img", "aws", &b(1), &ImageUpdate::NoResult, 5000);
        assert!(no_result.is_err(), "a build that ends after the result leaves it complete");
    }

    #[test]
    fn newer_build_supersedes_and_older_build_is_ignored() {
        let done = run(None, &[(b(1), ImageUpdate::Queued), (b(1), ok("old"))]).unwrap();
        let requeued = apply(Some(&done), "img", "aws", &b(2), &ImageUpdate::Queued, 10).unwrap();
        assert_eq!(
            (requeued.status, requeued.percent, requeued.uri.clone(), requeued.build.clone()),
            (ImageStatus::Queued, 0, None, b(2))
        );
        assert_eq!(requeued.version, done.version + 1);
        // The older build's late reports change nothing.
        for u in [progress(99), error("late"), ImageUpdate::NoResult, ImageUpdate::Queued] {
            assert!(apply(Some(&requeued), "img", "aws", &b(1), &u, 11).is_err(), "{u:?}");
        }
        // A newer build that reports without being queued starts afresh too.
        let r = apply(Some(&requeued), "img", "aws", &b(3), &progress(20), 12).unwrap();
        assert_eq!((r.status, r.percent, r.build.clone()), (ImageStatus::Building, 20, b(3)));
    }

    #[test]
    fn a_build_that_ends_without_a_result_fails_its_open_pairs() {
        let r =
            run(None, &[(b(1), ImageUpdate::Queued), (b(1), progress(40)), (b(1), ImageUpdate::NoResult)])
                .unwrap();
        assert_eq!((r.status, r.percent, r.error.as_deref()), (ImageStatus::Failed, 40, Some(NO_RESULT)));
        assert!(apply(None, "img", "aws", &b(1), &ImageUpdate::NoResult, 1).is_err(), "never queued");
    }

    #[test]
    fn writes_are_conditional_on_the_version_read() {
        let r = run(None, &[(b(1), ImageUpdate::Queued)]).unwrap();
        let w = CatalogWrite { expected_version: 0, record: r.clone() };
        assert!(w.check(None).is_ok());
        assert!(matches!(w.check(Some(&r)), Err(TransitionError::StaleImage { expected: 0, actual: 1, .. })));
    }

    #[test]
    fn build_results_take_each_pairs_last_version_of_that_build() {
        let h1 = run(None, &[(b(1), ImageUpdate::Queued)]).unwrap();
        let h2 = apply(Some(&h1), "img", "aws", &b(1), &ok("x"), 2).unwrap();
        let h3 = apply(Some(&h2), "img", "aws", &b(2), &ImageUpdate::Queued, 3).unwrap();
        let history = vec![h2.clone(), h1, h3.clone()];
        assert_eq!(build_results(&history, &b(1)), vec![h2]);
        assert_eq!(build_results(&history, &b(2)), vec![h3]);
    }
}
