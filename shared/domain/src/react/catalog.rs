//! The image catalog's side of a reaction: which records the fan-in reads, and the
//! conditional writes for a build's start, its image reports and its end.

use super::Reaction;
use crate::catalog::{self, CatalogWrite, ImageRecord, ImageUpdate};
use crate::event::CloudEvent;
use crate::report::Report;
use crate::state::{Build, Target};
use crate::status::Status;
use std::collections::BTreeMap;

/// An image report, typed: the pair it is about, the stage that sent it, and the update.
struct ImageReport<'a> {
    image: &'a str,
    provider: &'a str,
    stage: &'a crate::ids::StageName,
    update: ImageUpdate,
}

/// The image report in `event`, if it is one (malformed ones are refused by `react`).
fn image_report(report: &Report) -> Option<ImageReport<'_>> {
    match report {
        Report::ImageProgress(p) => Some(ImageReport {
            image: &p.image,
            provider: &p.provider,
            stage: &p.stage,
            update: ImageUpdate::Progress { percent: p.percent, phase: p.phase },
        }),
        Report::ImageResult(r) => Some(ImageReport {
            image: &r.image,
            provider: &r.provider,
            stage: &r.stage,
            update: ImageUpdate::Result(r.outcome()),
        }),
        _ => None,
    }
}

/// The images whose catalog records the fan-in reads before [`react_catalog`]: every
/// image of the plan when the reaction starts or ends the build, else the image an image
/// report is about (if the pipeline has it).
pub fn catalog_reads(build: &Build, event: &CloudEvent, reaction: &Reaction) -> Vec<String> {
    let after = reaction.after.as_ref().unwrap_or(build);
    if starts(reaction) || ends(build, after) {
        return build.plan.images.iter().map(|i| i.name.clone()).collect();
    }
    let report = Report::from_event(event).ok().flatten();
    match report.as_ref().and_then(image_report) {
        Some(r) if build.plan.images.iter().any(|i| i.name == r.image) => vec![r.image.to_string()],
        _ => Vec::new(),
    }
}

/// Adds to `reaction` the catalog writes for `event` on `build`, given the current
/// records of the images [`catalog_reads`] named: the build's pairs are queued when it
/// starts, an image report updates its pair, and when the build ends its pairs still
/// open fail with "no result reported". One write per pair, conditional on the version
/// read; updates the rules ignore go to `refused`.
pub fn react_catalog(
    build: &Build,
    event: &CloudEvent,
    reaction: &mut Reaction,
    records: &[ImageRecord],
    now_ms: u64,
) {
    let after = reaction.after.as_ref().unwrap_or(build);
    let (starting, ending) = (starts(reaction), ends(build, after));
    let mut c =
        CatalogChanges { build, read: records, changed: BTreeMap::new(), now_ms, refused: Vec::new() };
    if starting {
        for (image, provider) in catalog::requested_pairs(build) {
            c.update(&image, &provider, &ImageUpdate::Queued);
        }
    }
    // A malformed report was refused by `react` already, with its reason.
    let report = Report::from_event(event).ok().flatten();
    if let Some(r) = report.as_ref().and_then(image_report) {
        match check(build, &r) {
            Ok(()) => c.update(r.image, r.provider, &r.update),
            Err(why) => c.refused.push(why),
        }
    }
    if ending {
        let open: Vec<(String, String)> = c
            .current_all()
            .filter(|r| r.build == build.id && !r.status.is_terminal())
            .map(|r| (r.image.clone(), r.provider.clone()))
            .collect();
        for (image, provider) in open {
            c.update(&image, &provider, &ImageUpdate::NoResult);
        }
    }
    let CatalogChanges { read, changed, refused, .. } = c;
    reaction.refused.extend(refused);
    reaction.catalog.extend(changed.into_values().map(|record| {
        let expected_version = read
            .iter()
            .find(|r| r.image == record.image && r.provider == record.provider)
            .map_or(0, |r| r.version);
        CatalogWrite { expected_version, record }
    }));
}

/// The reaction starts the build (it may end it too, when nothing can run).
fn starts(reaction: &Reaction) -> bool {
    reaction.transitions.iter().any(|t| t.target == Target::Build && t.to == Status::Running)
}

fn ends(before: &Build, after: &Build) -> bool {
    !before.status.is_terminal() && after.status.is_terminal()
}

/// Checks an image report against the pipeline's `images:`.
fn check(build: &Build, r: &ImageReport<'_>) -> Result<(), String> {
    let (image, provider) = (r.image, r.provider);
    let Some(spec) = build.plan.images.iter().find(|i| i.name == image) else {
        return Err(format!("image {image} is not in the pipeline's images"));
    };
    if !spec.providers.iter().any(|p| p == provider) {
        return Err(format!("image {image} has no provider {provider} in the pipeline"));
    }
    if let Some(by) = &spec.built_by
        && r.stage.template() != by.as_str()
    {
        return Err(format!("image {image} is built by stage {by}: stage {} may not report it", r.stage));
    }
    Ok(())
}

/// The catalog as one reaction changes it: what was read, and the new records.
struct CatalogChanges<'a> {
    build: &'a Build,
    read: &'a [ImageRecord],
    changed: BTreeMap<(String, String), ImageRecord>,
    now_ms: u64,
    refused: Vec<String>,
}

impl CatalogChanges<'_> {
    fn current(&self, image: &str, provider: &str) -> Option<&ImageRecord> {
        self.changed
            .get(&(image.to_string(), provider.to_string()))
            .or_else(|| self.read.iter().find(|r| r.image == image && r.provider == provider))
    }

    fn current_all(&self) -> impl Iterator<Item = &ImageRecord> {
        let unchanged =
            self.read.iter().filter(|r| !self.changed.contains_key(&(r.image.clone(), r.provider.clone())));
        self.changed.values().chain(unchanged)
    }

    fn update(&mut self, image: &str, provider: &str, update: &ImageUpdate) {
        let current = self.current(image, provider);
        match catalog::apply(current, image, provider, &self.build.id, update, self.now_ms) {
            Ok(mut record) => {
                // Several changes of one pair in one reaction make one write.
                record.version = self
                    .read
                    .iter()
                    .find(|r| r.image == image && r.provider == provider)
                    .map_or(0, |r| r.version)
                    + 1;
                self.changed.insert((image.to_string(), provider.to_string()), record);
            }
            Err(why) => self.refused.push(why),
        }
    }
}
