//! The runner: takes a job and runs its stage.
//!
//! In order: report `stage-started`; write setup lines (attempt, workspace, environment
//! variable names, services) to the build's one init log; create a fresh workspace; start
//! the services in the background; run the steps in order, each `/bin/sh -e -c` in its own
//! process group with stdout and stderr on one pipe, its output batched to the log sink
//! every flush interval; stop at the first failing step, on cancel, or at the stage's
//! deadline; stop the services; report `stage-finished`. The runner never writes status:
//! it reports events and the fan-in applies them.
//!
//! Image results are per artifact: a step reports each (image, provider) it built with
//! `::kiln::result`. When a step fails, each pair it reported progress for but no result
//! gets an error result ("step S failed ... without a result"), so one failure does not
//! fail the rest; a step that succeeds leaves such pairs open for a later step, and the
//! fan-in fails whatever a build leaves open when it ends ("no result reported").

mod batcher;
mod env;
use env::Env;
mod process;
mod sandbox;
mod services;
mod shared;

pub use sandbox::{PolicyError, StepEnvPolicy, StepUser, protect_process};
/// The runner's retry of transient sink errors, for other sources (secrets over HTTP).
pub use shared::retry as retry_transient;

use crate::job::Job;
use crate::secrets::{Delivered, SecretSource};
use crate::sinks::{EventSink, LogSink, SinkError};
use batcher::{Directives, StreamTask, start_stream};
use kiln_domain::catalog::PROVIDERS_ENV;
use kiln_domain::event::{now_ms, types};
use kiln_domain::logs::{DEFAULT_FLUSH_INTERVAL_MS, LogStream, MAX_BATCH_BYTES};
use kiln_domain::plan::{DEFAULT_STAGE_TIMEOUT_MS, StepPlan};
use kiln_domain::report::{ImageResult, StageFinished, StageStarted, StepFinished, StepStarted};
use kiln_domain::secret::{SecretName, mask_strings};
use kiln_domain::{StageName, StepName};
use process::{GroupGuard, exit_info, signal_group, spawn_shell, terminate};
use shared::Shared;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long to wait for a pipe's end of file after SIGKILL before giving up on it (a
/// process that left its group still holds it).
const AFTER_KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Names this runner in event sources (`kiln://runner/{runner_id}`) and the init log.
    pub runner_id: String,
    /// Workspaces are created under `{workspace_root}/{build}/`.
    pub workspace_root: PathBuf,
    /// Each log stream is flushed at this interval (default 1 s) ...
    pub flush_interval: Duration,
    /// ... or sooner when this many bytes wait; no batch is larger (default 256 KiB).
    pub max_batch_bytes: usize,
    /// Between SIGTERM and SIGKILL when a process group is stopped (default 5 s).
    pub kill_grace: Duration,
    /// The environment and user of steps and services.
    pub step_env: StepEnvPolicy,
}

impl RunnerConfig {
    pub fn new(runner_id: impl Into<String>, workspace_root: impl Into<PathBuf>) -> Self {
        Self {
            runner_id: runner_id.into(),
            workspace_root: workspace_root.into(),
            flush_interval: Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS),
            max_batch_bytes: MAX_BATCH_BYTES,
            kill_grace: Duration::from_secs(5),
            step_env: StepEnvPolicy::default(),
        }
    }

    fn sanitized(mut self) -> Self {
        self.flush_interval = self.flush_interval.max(Duration::from_millis(1));
        self.max_batch_bytes = self.max_batch_bytes.max(1024);
        self
    }
}

/// What a job runs with.
#[derive(Clone)]
pub struct RunnerCtx {
    pub config: RunnerConfig,
    pub logs: Arc<dyn LogSink>,
    pub events: Arc<dyn EventSink>,
    /// Becomes `true` to cancel the job (log ingest replies can cancel it too).
    pub cancel: watch::Receiver<bool>,
    /// Becomes `true` when another attempt took the job's lease: the steps are stopped as
    /// for a cancel, and nothing more is reported for this attempt ([`RunnerError::LeaseLost`]).
    pub lease_lost: watch::Receiver<bool>,
    /// Where the stage's declared secrets come from (fetched once, when the job starts).
    pub secrets: Arc<dyn SecretSource>,
}

/// How the runner ended a stage and why it stopped a step: the report types.
pub use kiln_domain::report::{StageOutcome, StepReason};

/// One step that ran (as reported in `step-finished`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub step: StepName,
    pub number: u32,
    /// The exit code, or 128 + N when killed by signal N; never 0 for a step that was
    /// stopped for a timeout or a cancel.
    pub exit_code: i32,
    pub duration_ms: u64,
    pub reason: Option<StepReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub stage: StageName,
    pub attempt: u32,
    pub outcome: StageOutcome,
    pub reason: Option<String>,
    /// The steps that ran, in order (steps after a failing one are not run).
    pub steps: Vec<StepReport>,
    pub steps_planned: usize,
    pub duration_ms: u64,
}

impl JobOutcome {
    /// Every planned step ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.outcome == StageOutcome::Completed
            && self.steps.len() == self.steps_planned
            && self.steps.iter().all(|s| s.exit_code == 0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A lifecycle event could not be sent: the fan-in would never learn how the stage
    /// went, so the job should be retried (not acknowledged).
    #[error("cannot emit {ty}: {source}")]
    Emit {
        ty: &'static str,
        #[source]
        source: SinkError,
    },
    /// Another attempt took the job's lease (this runner's heartbeat found it busy, or the
    /// stage ended): the steps were stopped and nothing more was reported.
    #[error("the lease was lost to another attempt")]
    LeaseLost,
}

/// The peak resident set size of this process (VmHWM), in KiB, on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The workspace of one attempt of a stage: `{root}/{build}/{stage}-{attempt}` (`#` of
/// stage instances, and anything else unusual, replaced by `_`).
pub fn workspace_path(root: &Path, job: &Job, attempt: u32) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect()
    };
    let build = clean(job.build.as_str()).replace("..", "__");
    let stage = clean(job.stage.as_str()).replace("..", "__");
    root.join(build).join(format!("{stage}-{attempt}"))
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one attempt of a job's stage. `Err` only when a lifecycle event could not be
/// emitted; everything else (failing steps, timeouts, setup failures) is an outcome.
pub async fn run_job(job: &Job, attempt: u32, ctx: &RunnerCtx) -> Result<JobOutcome, RunnerError> {
    let shared = Arc::new(Shared::new(
        ctx.config.clone().sanitized(),
        job.build.clone(),
        job.stage.clone(),
        attempt,
        ctx.logs.clone(),
        ctx.events.clone(),
    ));
    let _forward = {
        let (sh, mut rx) = (shared.clone(), ctx.cancel.clone());
        AbortOnDrop(tokio::spawn(async move {
            if rx.wait_for(|c| *c).await.is_ok() {
                sh.cancel.send_replace(true);
            }
        }))
    };
    let _lost = {
        let (sh, mut rx) = (shared.clone(), ctx.lease_lost.clone());
        AbortOnDrop(tokio::spawn(async move {
            if rx.wait_for(|c| *c).await.is_ok() {
                sh.lose_lease();
            }
        }))
    };
    Stage { job, sh: shared, started: Instant::now(), secrets: ctx.secrets.clone() }.run().await
}

struct Stage<'a> {
    job: &'a Job,
    sh: Arc<Shared>,
    started: Instant,
    secrets: Arc<dyn SecretSource>,
}

/// Why a process was stopped by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    StepTimeout,
    StageTimeout,
    Canceled,
}

impl Stage<'_> {
    fn emit_err(ty: &'static str) -> impl FnOnce(SinkError) -> RunnerError {
        move |source| RunnerError::Emit { ty, source }
    }

    fn outcome(&self, outcome: StageOutcome, reason: Option<String>, steps: Vec<StepReport>) -> JobOutcome {
        JobOutcome {
            stage: self.job.stage.clone(),
            attempt: self.sh.attempt,
            outcome,
            reason,
            steps,
            steps_planned: self.job.plan.steps.len(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    async fn finish_stage(&self, outcome: StageOutcome, reason: Option<String>) -> Result<(), RunnerError> {
        if self.sh.is_lost() {
            return Err(RunnerError::LeaseLost);
        }
        let report =
            StageFinished { stage: self.job.stage.clone(), attempt: self.sh.attempt, outcome, reason };
        self.sh.report(report).await.map_err(Self::emit_err(types::STAGE_FINISHED))
    }

    async fn run(self) -> Result<JobOutcome, RunnerError> {
        let (job, sh) = (self.job, &self.sh);
        let stage = &job.stage;
        let attempt = sh.attempt;
        let started =
            StageStarted { stage: stage.clone(), attempt, runner: Some(sh.config.runner_id.clone()) };
        sh.report(started).await.map_err(Self::emit_err(types::STAGE_STARTED))?;

        let mut init = vec![format!("[{stage}] attempt {attempt} on runner {}", sh.config.runner_id)];
        // Secrets first: every value is in the masker before any process starts, and a
        // declared secret that is not set fails the stage before anything runs.
        let (secrets, checkout_token) = match self.fetch_secrets(&mut init).await {
            Ok(got) => got,
            Err(reason) => {
                init.push(format!("[{stage}] {reason}"));
                sh.init_lines(&init).await;
                self.finish_stage(StageOutcome::Failed, Some(reason.clone())).await?;
                return Ok(self.outcome(StageOutcome::Failed, Some(reason), Vec::new()));
            }
        };
        let planned = workspace_path(&sh.config.workspace_root, job, attempt);
        let (root, user) = (sh.config.workspace_root.clone(), sh.config.step_env.user);
        let made = {
            let planned = planned.clone();
            tokio::task::spawn_blocking(move || sandbox::JobArea::create(&root, &planned, user)).await
        };
        let area = match made.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
            Ok(area) => area,
            Err(e) => {
                let reason = format!("cannot create the workspace {}: {e}", planned.display());
                init.push(format!("[{stage}] {reason}"));
                sh.init_lines(&init).await;
                self.finish_stage(StageOutcome::Failed, Some(reason.clone())).await?;
                return Ok(self.outcome(StageOutcome::Failed, Some(reason), Vec::new()));
            }
        };
        let ws = area.workspace.clone();
        init.push(format!("[{stage}] workspace {}", ws.display()));
        if let Some(u) = user {
            init.push(format!("[{stage}] steps run as uid {} gid {}", u.uid, u.gid));
        }
        if let Some(git) = job.git.as_ref().filter(|_| job.wants_checkout()) {
            sh.init_lines(&std::mem::take(&mut init)).await;
            match self.checkout(git, checkout_token.as_deref(), &area).await {
                Ok(line) => init.push(format!("[{stage}] {line}")),
                Err(reason) => {
                    init.push(format!("[{stage}] {reason}"));
                    sh.init_lines(&init).await;
                    let _ = tokio::task::spawn_blocking(move || area.remove()).await;
                    self.finish_stage(StageOutcome::Failed, Some(reason.clone())).await?;
                    return Ok(self.outcome(StageOutcome::Failed, Some(reason), Vec::new()));
                }
            }
        }

        // The variables every process of the stage gets.
        let mut fixed = vec![
            ("KILN_BUILD_ID".to_string(), job.build.to_string()),
            ("KILN_REPO".to_string(), job.repo.to_string()),
            ("KILN_STAGE".to_string(), stage.to_string()),
            ("KILN_WORKSPACE".to_string(), ws.display().to_string()),
            ("KILN_ATTEMPT".to_string(), attempt.to_string()),
        ];
        if let Some(git) = &job.git {
            fixed.extend(git.step_vars());
        }
        // The providers this build builds its images for (set at submit).
        if let Some(p) = job.env.get(PROVIDERS_ENV) {
            fixed.push((PROVIDERS_ENV.to_string(), p.clone()));
        }
        let mut event_vars = Vec::new();
        let event_file = area.event_file.clone();
        if let Some(event) = &job.trigger_event {
            event_vars = env::event_vars(event);
            let text = serde_json::to_vec_pretty(event).unwrap_or_default();
            match tokio::fs::write(&event_file, text).await.and_then(|()| area.give(&event_file)) {
                Ok(()) => fixed.push(("KILN_EVENT_PATH".to_string(), event_file.display().to_string())),
                Err(e) => {
                    init.push(format!("[{stage}] cannot write the event file {}: {e}", event_file.display()))
                }
            }
        }
        // Nothing of the runner's own environment but what the policy names.
        let base = [
            sh.config.step_env.base_env(&area.home, &area.tmp),
            env::pairs(&job.env),
            env::pairs(&job.plan.env),
        ];
        let mut warnings = Vec::new();
        let stage_env = env::layered(
            [&base[0][..], &base[1][..], &base[2][..], &event_vars[..], &fixed[..]],
            &mut warnings,
        );
        let names: Vec<&str> = stage_env.iter().map(|(k, _)| k.as_str()).collect();
        init.push(format!("[{stage}] environment: {}", names.join(", ")));
        for step in job.plan.steps.iter().filter(|s| !s.env.is_empty()) {
            let names: Vec<&str> = step.env.keys().map(String::as_str).collect();
            init.push(format!("[{stage}/{}] step environment: {}", step.name, names.join(", ")));
        }
        // Names only: which step gets which secret.
        let jobs = job.plan.steps.iter().map(|s| (&s.name, &s.secrets));
        for (name, declared) in jobs.chain(job.plan.services.iter().map(|s| (&s.name, &s.secrets))) {
            if !declared.is_empty() {
                let names: Vec<&str> = declared.iter().map(SecretName::as_str).collect();
                init.push(format!("[{stage}/{name}] secrets: {}", names.join(", ")));
            }
        }
        init.extend(warnings.into_iter().map(|w| format!("[{stage}] {w}")));
        sh.init_lines(&init).await;

        let env = Env { base, event_vars, fixed, secrets };
        let mut services = Vec::new();
        for svc in &job.plan.services {
            sh.init_line(format!("[{stage}] starting service {}", svc.name)).await;
            match self.start_service(svc, &ws, &env) {
                Ok(s) => services.push(s),
                Err(e) => sh.init_line(format!("[{stage}] service {} could not start: {e}", svc.name)).await,
            }
        }

        let result = self.run_steps(&ws, &env).await;

        self.stop_services(services).await;
        let _ = tokio::task::spawn_blocking(move || area.remove()).await;

        let (steps, outcome) = result?;
        self.finish_stage(outcome, None).await?;
        Ok(self.outcome(outcome, None, steps))
    }

    /// Puts the build's commit into the workspace: the init log line that says what was
    /// checked out, or the reason the stage fails.
    async fn checkout(
        &self,
        git: &kiln_domain::git::GitInfo,
        token: Option<&str>,
        area: &sandbox::JobArea,
    ) -> Result<String, String> {
        use crate::git::checkout::{CheckoutSource, checkout, client};
        let src = CheckoutSource {
            provider: git.provider,
            api_url: &git.api_url,
            repo: &git.repo,
            commit: &git.commit,
            token,
        };
        let owner = area.user.map(|u| (u.uid, u.gid));
        let client = client();
        let work = checkout(&client, &src, &area.workspace, &area.scratch, owner);
        // The checkout counts against the stage's deadline like a step.
        match tokio::time::timeout_at(self.deadline(), work).await {
            Ok(Ok(done)) => Ok(done.to_string()),
            Ok(Err(e)) => Err(format!("checkout of {} at {} failed: {e}", git.repo, git.commit)),
            Err(_) => {
                Err(format!("checkout of {} at {} ran past the stage's deadline", git.repo, git.commit))
            }
        }
    }

    /// The stage's deadline: its own timeout, or the build's, whichever comes first.
    fn deadline(&self) -> Instant {
        let ms = match self.job.plan.timeout_ms {
            0 => DEFAULT_STAGE_TIMEOUT_MS,
            ms => ms,
        };
        let own = self.started + Duration::from_millis(ms);
        match self.job.deadline_ms {
            Some(at) => own.min(Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))),
            None => own,
        }
    }

    /// The values of the stage's declared secrets, each added to the masker (with the
    /// lines of a multi-line value); `Err` with the reason the stage fails.
    async fn fetch_secrets(
        &self,
        init: &mut Vec<String>,
    ) -> Result<(BTreeMap<SecretName, String>, Option<String>), String> {
        let job = self.job;
        let declared = job.plan.secret_names();
        if declared.is_empty() && !job.wants_checkout() {
            return Ok((BTreeMap::new(), None));
        }
        let Delivered { values, missing, checkout_token } = self.secrets.fetch(job).await.map_err(|e| {
            let names: Vec<&str> = declared.iter().map(SecretName::as_str).collect();
            format!("cannot get the secrets {} of repository {}: {e}", names.join(", "), job.repo)
        })?;
        {
            let mut masker = self.sh.masker.write().unwrap_or_else(|e| e.into_inner());
            for value in values.values().chain(&checkout_token) {
                for s in mask_strings(value) {
                    masker.add(s);
                }
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(SecretName::as_str).collect();
            let (what, verb) = if names.len() == 1 { ("secret", "is") } else { ("secrets", "are") };
            return Err(format!(
                "{what} {} {verb} not set in repository {} (set with `kiln secrets set {} NAME`)",
                names.join(", "),
                job.repo,
                job.repo
            ));
        }
        // Only what was declared: a source that sent more is not trusted with the rest.
        let values: BTreeMap<SecretName, String> =
            values.into_iter().filter(|(k, _)| declared.contains(k)).collect();
        if !values.is_empty() {
            let names: Vec<&str> = values.keys().map(SecretName::as_str).collect();
            init.push(format!("[{}] secrets delivered: {}", job.stage, names.join(", ")));
        }
        Ok((values, checkout_token))
    }

    async fn run_steps(&self, ws: &Path, env: &Env) -> Result<(Vec<StepReport>, StageOutcome), RunnerError> {
        let mut reports = Vec::new();
        for step in &self.job.plan.steps {
            if self.sh.is_canceled() {
                return Ok((reports, StageOutcome::Canceled));
            }
            if Instant::now() >= self.deadline() {
                return Ok((reports, StageOutcome::Timeout));
            }
            let (report, stop) = self.run_step(step, ws, env).await?;
            let failed = report.exit_code != 0;
            reports.push(report);
            match stop {
                Some(Stop::Canceled) => return Ok((reports, StageOutcome::Canceled)),
                Some(Stop::StageTimeout) => return Ok((reports, StageOutcome::Timeout)),
                Some(Stop::StepTimeout) | None if failed => break,
                _ => {}
            }
        }
        Ok((reports, StageOutcome::Completed))
    }

    async fn run_step(
        &self,
        step: &StepPlan,
        ws: &Path,
        env: &Env,
    ) -> Result<(StepReport, Option<Stop>), RunnerError> {
        let sh = &self.sh;
        let (stage, attempt) = (&self.job.stage, sh.attempt);
        let started =
            StepStarted { stage: stage.clone(), step: step.name.clone(), number: step.number, attempt };
        sh.report(started).await.map_err(Self::emit_err(types::STEP_STARTED))?;

        let stream =
            LogStream::Step { stage: stage.clone(), step: step.name.clone(), number: step.number, attempt };
        let label = format!("{stage}/{}", step.name);
        let mut fixed = env.fixed.clone();
        fixed.push(("KILN_STEP".to_string(), step.name.to_string()));
        let mut warnings = Vec::new();
        let vars = env.layered(&env::pairs(&step.env), &step.secrets, &fixed, &mut warnings);
        if !warnings.is_empty() {
            sh.init_lines(&warnings.into_iter().map(|w| format!("[{label}] {w}")).collect::<Vec<_>>()).await;
        }

        sh.open_images.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let started = Instant::now();
        let deadline = self.deadline();
        let step_deadline = match step.timeout_ms {
            Some(ms) if ms > 0 => deadline.min(started + Duration::from_millis(ms)),
            _ => deadline,
        };
        let spawned = std::io::pipe().and_then(|(reader, writer)| {
            let task =
                start_stream(sh.clone(), stream, label.clone(), Directives::Step(step.name.clone()), reader)?;
            Ok((task, spawn_shell(&step.commands, ws, &vars, sh.config.step_env.user, writer)))
        });
        let (exit_code, reason, stop) = match spawned {
            Ok((mut task, Ok(mut child))) => {
                let pgid = child.id().map_or(0, |id| id as i32);
                let guard = GroupGuard::new(pgid);
                let mut cancel = sh.cancel.subscribe();
                let stop = tokio::select! {
                    status = child.wait() => Err(status),
                    _ = tokio::time::sleep_until(step_deadline) => {
                        Ok(if step_deadline >= deadline { Stop::StageTimeout } else { Stop::StepTimeout })
                    }
                    _ = cancel.wait_for(|c| *c) => Ok(Stop::Canceled),
                };
                let (status, stop) = match stop {
                    Err(status) => (status, None),
                    Ok(stop) => (terminate(&mut child, pgid, sh.config.kill_grace).await, Some(stop)),
                };
                end_group(sh, pgid, &mut task, &label).await;
                task.close().await;
                guard.disarm();
                let (mut code, signal) = match &status {
                    Ok(s) => exit_info(s),
                    Err(e) => {
                        tracing::error!(error = %e, "waiting for a step failed");
                        (255, None)
                    }
                };
                let reason = match stop {
                    Some(Stop::Canceled) => Some(StepReason::Canceled),
                    Some(_) => Some(StepReason::Timeout),
                    None => signal.map(StepReason::Signal),
                };
                if stop.is_some() && code == 0 {
                    code = 128 + libc::SIGTERM;
                }
                (code, reason, stop)
            }
            Ok((task, Err(e))) => {
                sh.init_line(format!("[{label}] cannot start the step: {e}")).await;
                task.close().await;
                (127, Some(StepReason::SpawnFailed(e.to_string())), None)
            }
            Err(e) => {
                sh.init_line(format!("[{label}] cannot start the step: {e}")).await;
                sh.complete(&LogStream::Step {
                    stage: stage.clone(),
                    step: step.name.clone(),
                    number: step.number,
                    attempt,
                })
                .await;
                (127, Some(StepReason::SpawnFailed(e.to_string())), None)
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        if exit_code != 0 {
            self.fail_open_images(step, exit_code, reason.as_ref()).await;
        }

        let finished = StepFinished {
            stage: stage.clone(),
            step: step.name.clone(),
            number: step.number,
            attempt,
            exit_code,
            duration_ms,
            reason: reason.clone(),
        };
        sh.report(finished).await.map_err(Self::emit_err(types::STEP_FINISHED))?;
        let report =
            StepReport { step: step.name.clone(), number: step.number, exit_code, duration_ms, reason };
        Ok((report, stop))
    }

    /// After a failed step: an error result for each pair it reported progress for but
    /// no result (its output is read to the end by now, so its own results came first).
    async fn fail_open_images(&self, step: &StepPlan, exit_code: i32, reason: Option<&StepReason>) {
        let sh = &self.sh;
        let open = std::mem::take(&mut *sh.open_images.lock().unwrap_or_else(|e| e.into_inner()));
        let how = reason.map_or_else(|| format!("exit code {exit_code}"), StepReason::to_string);
        for (image, provider) in open {
            let message = format!("step {} failed ({how}) without a result", step.name);
            let outcome = kiln_domain::protocol::ImageOutcome::Error { message };
            let result = ImageResult::new(
                image.clone(),
                provider.clone(),
                outcome,
                self.job.stage.clone(),
                step.name.clone(),
            );
            if let Err(e) = sh.report(result).await {
                tracing::warn!(build = %sh.build, image, provider, error = %e, "cannot report the image result");
            }
        }
    }
}

/// After a group's leader exited: what is left of the group is stopped (SIGTERM, SIGKILL
/// after the grace period) and the output pipe read to its end.
async fn end_group(sh: &Shared, pgid: i32, stream: &mut StreamTask, label: &str) {
    signal_group(pgid, libc::SIGTERM);
    if stream.wait_eof(sh.config.kill_grace).await {
        return;
    }
    signal_group(pgid, libc::SIGKILL);
    if !stream.wait_eof(AFTER_KILL_WAIT).await {
        sh.init_line(format!(
            "[{label}] output still open after the process group was killed; stopped reading"
        ))
        .await;
    }
}
