//! The two rules every state store applies, written once so the adapters cannot drift
//! apart: applying a [`Commit`] to a build ([`Build::apply_commit`], [`apply_catalog`])
//! and deciding a runner's claim on a stage's job ([`StageState::decide_claim`]). Pure:
//! the stores read, call these, and write what they return.

use crate::catalog::{CatalogWrite, ImageRecord};
use crate::event::CloudEvent;
use crate::ids::{StageName, is_valid_name};
use crate::state::{Arrivals, Build, Lease, StageState, Target, Transition, TransitionError};
use crate::status::Status;
use std::collections::{BTreeMap, BTreeSet};

/// A set of changes to one build, applied atomically and at most once per `event_id`.
/// (The storage port `kiln_store::Commit` is this type.)
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The id of the event being applied: recorded with its effect, so applying the same
    /// event again is a no-op. An empty id is not recorded (not deduplicated).
    pub event_id: String,
    /// Conditional transitions: all apply, or none.
    pub transitions: Vec<Transition>,
    /// New stage instances (event-triggered stages), added before the transitions apply.
    pub new_stages: Vec<StageState>,
    /// When set, replaces the build's record of events waiting for fan-in triggers
    /// (`Build::arrivals`).
    pub arrivals: Option<Arrivals>,
    /// Appended to the build's history, numbered in order.
    pub events: Vec<CloudEvent>,
    /// Image catalog writes, at most one per (image, provider), each conditional on the
    /// record's version (`CatalogWrite::check`): all apply with the rest of the commit, or
    /// the commit is refused as a conflict. Each written record is also appended to its
    /// image's history.
    pub images: Vec<CatalogWrite>,
}

impl Commit {
    /// Whether the event id is recorded (an empty one is not).
    pub fn dedupes(&self) -> bool {
        !self.event_id.is_empty()
    }

    /// The stages a store must read to apply this commit with [`Build::apply_commit`]: the
    /// ones its transitions move (or whose steps they move) and its new instances (to
    /// refuse one that exists). A store reads these and the build's header, never the
    /// rest, so a commit costs the same in a build of 10 stages or 1,000.
    pub fn stages_touched(&self) -> BTreeSet<StageName> {
        let moved = self.transitions.iter().filter_map(|t| match &t.target {
            Target::Stage { stage } | Target::Step { stage, .. } => Some(stage.clone()),
            Target::Build => None,
        });
        moved.chain(self.new_stages.iter().map(|s| s.name.clone())).collect()
    }
}

/// Why a commit cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommitError {
    /// A new stage instance has the name of one the build already has.
    #[error("stage {0} already exists")]
    StageExists(StageName),
    /// A transition or a catalog write is stale or illegal.
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    #[error("invalid image or provider name {image:?}/{provider:?}")]
    InvalidImage { image: String, provider: String },
}

/// What [`Build::apply_commit`] changed, for stores that write a build per stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new stage instances are `build.stages[first_new..]`.
    pub first_new: usize,
    /// Stages the build had before the commit that a transition touched (the stage itself
    /// or one of its steps).
    pub changed: BTreeSet<StageName>,
}

impl Build {
    /// Applies a commit's build changes in memory: its new stage instances first (the same
    /// commit may already move them on), then every transition with [`Build::apply`], then
    /// the arrivals. On error `self` may be half-changed: apply to a copy. `self` may hold
    /// only [`Commit::stages_touched`] of the build's stages: nothing else is looked at.
    pub fn apply_commit(&mut self, c: &Commit) -> Result<Applied, CommitError> {
        let first_new = self.stages.len();
        for st in &c.new_stages {
            if self.stage(st.name.as_str()).is_some() {
                return Err(CommitError::StageExists(st.name.clone()));
            }
            self.stages.push(st.clone());
        }
        let mut changed = BTreeSet::new();
        for t in &c.transitions {
            self.apply(t)?;
            if let Target::Stage { stage } | Target::Step { stage, .. } = &t.target
                && self.stages[..first_new].iter().any(|s| s.name == *stage)
            {
                changed.insert(stage.clone());
            }
        }
        if let Some(arrivals) = &c.arrivals {
            self.arrivals.clone_from(arrivals);
        }
        Ok(Applied { first_new, changed })
    }
}

/// Catalog documents: image name → its records, one per provider.
pub type CatalogDocs = BTreeMap<String, Vec<ImageRecord>>;

/// The images a commit's catalog writes touch, which the store reads before
/// [`apply_catalog`]. Refuses names that are not plain (they become keys and file names).
pub fn images_written(writes: &[CatalogWrite]) -> Result<BTreeSet<String>, CommitError> {
    writes
        .iter()
        .map(|w| {
            let (image, provider) = (&w.record.image, &w.record.provider);
            if is_valid_name(image) && is_valid_name(provider) {
                Ok(image.clone())
            } else {
                Err(CommitError::InvalidImage { image: image.clone(), provider: provider.clone() })
            }
        })
        .collect()
}

/// Checks every catalog write against the records read (`docs`, for every image of
/// [`images_written`]; a missing one counts as no records) and returns the documents of
/// the written images as they are after the writes.
pub fn apply_catalog(writes: &[CatalogWrite], mut docs: CatalogDocs) -> Result<CatalogDocs, CommitError> {
    let mut out = CatalogDocs::new();
    for w in writes {
        let image = &w.record.image;
        let doc = out.entry(image.clone()).or_insert_with(|| docs.remove(image).unwrap_or_default());
        let at = doc.iter().position(|r| r.provider == w.record.provider);
        w.check(at.map(|i| &doc[i]))?;
        match at {
            Some(i) => doc[i] = w.record.clone(),
            None => doc.push(w.record.clone()),
        }
    }
    Ok(out)
}

/// What a runner's claim on a stage's job comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// The stage has ended, or the build has: nothing to run.
    Finished,
    /// Another runner holds a live lease: this delivery is a duplicate.
    Busy,
    /// The holder renews its live lease: same attempt, a later end. Touches the lease only.
    Renew(Lease),
    /// No live lease: the runner takes the job as the next attempt. Must be written
    /// atomically with the stage's state (an ended stage cannot be taken).
    Take(Lease),
}

impl ClaimDecision {
    /// The attempt the runner holds, if it holds one.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            Self::Renew(l) | Self::Take(l) => Some(l.attempt),
            Self::Finished | Self::Busy => None,
        }
    }
}

impl StageState {
    /// Decides `runner`'s claim on this stage's job at `now_ms`, for a lease of
    /// `lease_ms`. A lease is live up to and including its `until_ms`; once it has run
    /// out anyone (its old holder too) takes the next attempt, numbered past both the
    /// lease's and the stage's.
    pub fn decide_claim(&self, build: Status, runner: &str, now_ms: u64, lease_ms: u64) -> ClaimDecision {
        if build.is_terminal() || self.status.is_terminal() {
            return ClaimDecision::Finished;
        }
        let lease = |attempt| Lease {
            runner: runner.to_string(),
            attempt,
            until_ms: now_ms.saturating_add(lease_ms),
        };
        match &self.lease {
            Some(l) if l.until_ms >= now_ms && l.runner != runner => ClaimDecision::Busy,
            Some(l) if l.until_ms >= now_ms => ClaimDecision::Renew(lease(l.attempt)),
            Some(l) => ClaimDecision::Take(lease(l.attempt.max(self.attempt) + 1)),
            None => ClaimDecision::Take(lease(self.attempt + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ImageRecord;
    use crate::ids::{BuildId, Repo};
    use crate::plan::{
        DEFAULT_BUILD_TIMEOUT_MS, DEFAULT_STAGE_TIMEOUT_MS, Plan, RunsOn, StagePlan, StepPlan,
    };
    use crate::state::Patch;
    use crate::status::ImageStatus;

    fn build() -> Build {
        let stage = |name: &str, step: &str, number| StagePlan {
            name: name.into(),
            needs: Vec::new(),
            runs_on: RunsOn::Lambda,
            timeout_ms: DEFAULT_STAGE_TIMEOUT_MS,
            env: Default::default(),
            steps: vec![StepPlan {
                name: step.into(),
                number,
                commands: vec!["true".into()],
                env: Default::default(),
                timeout_ms: None,
                secrets: Vec::new(),
            }],
            services: Vec::new(),
            triggers: Vec::new(),
            checkout: true,
        };
        let plan = Plan {
            version: "1".into(),
            env: Default::default(),
            stages: vec![stage("a", "one", 1), stage("b", "two", 2)],
            images: Vec::new(),
            timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
            git: None,
            cancel_superseded: false,
        };
        Build::new(BuildId::generate(), Repo::new("o", "r"), plan, 1)
    }

    fn tr(target: Target, from: Status, to: Status) -> Transition {
        Transition { target, from, to, patch: Patch { at_ms: 5, ..Patch::default() } }
    }

    #[test]
    fn a_commit_adds_instances_applies_transitions_and_names_the_changed_stages() {
        let mut b = build();
        let mut extra = b.stages[1].clone();
        extra.name = "b#1".into();
        let c = Commit {
            event_id: "e".into(),
            new_stages: vec![extra],
            transitions: vec![
                tr(Target::Build, Status::Pending, Status::Running),
                tr(Target::Step { stage: "a".into(), step: "one".into() }, Status::Pending, Status::Running),
                tr(Target::Stage { stage: "b#1".into() }, Status::Pending, Status::Running),
            ],
            arrivals: Some(Arrivals::from([("b/0".into(), Default::default())])),
            ..Commit::default()
        };
        let applied = b.apply_commit(&c).expect("applies");
        assert_eq!(applied.first_new, 2);
        assert_eq!(applied.changed, BTreeSet::from([StageName::new("a")]));
        assert_eq!(b.status, Status::Running);
        assert_eq!(b.stage("b#1").map(|s| s.status), Some(Status::Running));
        assert_eq!(b.stage("a").map(|s| s.steps[0].status), Some(Status::Running));
        assert!(b.arrivals.contains_key("b/0"));
    }

    #[test]
    fn a_commit_refuses_a_known_stage_and_a_stale_transition() {
        let mut b = build();
        let c = Commit { new_stages: vec![b.stages[0].clone()], ..Commit::default() };
        assert_eq!(b.clone().apply_commit(&c), Err(CommitError::StageExists("a".into())));
        let c = Commit {
            transitions: vec![tr(Target::Build, Status::Running, Status::Succeeded)],
            ..Commit::default()
        };
        assert!(matches!(b.apply_commit(&c), Err(CommitError::Conflict(TransitionError::Stale { .. }))));
    }

    fn record(image: &str, provider: &str, version: u64) -> ImageRecord {
        ImageRecord {
            image: image.into(),
            provider: provider.into(),
            status: ImageStatus::Queued,
            percent: 0,
            error: None,
            build: BuildId::new("b"),
            uri: None,
            updated_ms: 1,
            version,
        }
    }

    #[test]
    fn catalog_writes_are_checked_against_the_records_read() {
        let writes = vec![
            CatalogWrite { expected_version: 1, record: record("img", "aws", 2) },
            CatalogWrite { expected_version: 0, record: record("img", "gcp", 1) },
        ];
        assert_eq!(images_written(&writes), Ok(BTreeSet::from(["img".to_string()])));
        let docs = CatalogDocs::from([("img".to_string(), vec![record("img", "aws", 1)])]);
        let after = apply_catalog(&writes, docs).expect("applies");
        assert_eq!(after["img"], vec![record("img", "aws", 2), record("img", "gcp", 1)]);
        // Nothing stored yet: the write expecting version 1 is stale.
        let err = apply_catalog(&writes, CatalogDocs::new());
        assert!(matches!(err, Err(CommitError::Conflict(TransitionError::StaleImage { actual: 0, .. }))));
        let bad = [CatalogWrite { expected_version: 0, record: record("../x", "aws", 1) }];
        assert!(matches!(images_written(&bad), Err(CommitError::InvalidImage { .. })));
    }

    #[test]
    fn claims_take_renew_wait_and_follow_the_stage() {
        let mut st = build().stages[0].clone();
        let take = st.decide_claim(Status::Running, "r1", 100, 50);
        assert_eq!(take, ClaimDecision::Take(Lease { runner: "r1".into(), attempt: 1, until_ms: 150 }));
        st.lease = Some(Lease { runner: "r1".into(), attempt: 1, until_ms: 150 });
        assert_eq!(st.decide_claim(Status::Running, "r2", 150, 50), ClaimDecision::Busy);
        let renew = st.decide_claim(Status::Running, "r1", 120, 50);
        assert_eq!(renew, ClaimDecision::Renew(Lease { runner: "r1".into(), attempt: 1, until_ms: 170 }));
        // Run out: the next attempt, for anyone, past the stage's own attempt too.
        st.attempt = 3;
        assert_eq!(st.decide_claim(Status::Running, "r1", 151, 50).attempt(), Some(4));
        st.status = Status::Succeeded;
        assert_eq!(st.decide_claim(Status::Running, "r2", 151, 50), ClaimDecision::Finished);
        st.status = Status::Pending;
        assert_eq!(st.decide_claim(Status::Canceled, "r2", 151, 50), ClaimDecision::Finished);
    }
}
