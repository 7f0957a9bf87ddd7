//! A git host's webhook → the builds it starts: the one flow behind `POST /v1/hooks/github`
//! and `POST /v1/hooks/gitea`, in `kiln dev` and the API function alike.
//!
//! In order: find the repository (`repository.full_name`), check the signature with its
//! webhook secret, read the event; claim the delivery id (a redelivered hook starts
//! nothing); fetch the commit's `.kiln.yml` with the repository's token; compile it and
//! check its top-level `on:`; store the build with its git event, record the webhook as the
//! build's first CloudEvent, and start it; cancel the builds it supersedes. A pipeline
//! that does not compile still makes a build, which fails at once with every error, so
//! the commit shows why.

use crate::queues::send_event;
use crate::submit::{SubmitError, start_build};
use crate::system::Ports;
use kiln_domain::compile::compile;
use kiln_domain::event::{CloudEvent, RESERVED_PREFIX, now_ms};
use kiln_domain::git::hook::{self, Hook};
use kiln_domain::git::{GitInfo, Provider, credentials_repo, should_build, token_name, webhook_secret_name};
use kiln_domain::plan::Plan;
use kiln_domain::report::{CancelRequested, Report};
use kiln_domain::state::Build;
use kiln_domain::{BuildId, Repo};
use std::collections::BTreeMap;

use crate::git::provider::GitHost;

/// A webhook as received.
pub struct HookRequest<'a> {
    pub provider: Provider,
    /// The event header (`X-GitHub-Event`, `X-Gitea-Event`).
    pub event: Option<&'a str>,
    pub delivery: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// What a hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Started(BuildId),
    /// Nothing started, and why (a ping, a filtered branch, a redelivery, ...).
    Nothing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 401: no signature, or not the repository's.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: the repository is not registered.
    #[error("{0}")]
    UnknownRepo(String),
    /// 400: not a webhook Kiln can read.
    #[error("{0}")]
    BadRequest(String),
    /// 502: the host did not answer for the pipeline file (the host redelivers).
    #[error("{0}")]
    Host(String),
    /// 503: Kiln's own stores failed.
    #[error("{0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Unavailable(e.to_string())
}

/// The CloudEvent type that records the webhook in a build's history.
pub fn hook_event_type(info: &GitInfo) -> String {
    format!("{RESERVED_PREFIX}git.{}", info.event.as_str())
}

pub async fn handle(ports: &Ports, req: HookRequest<'_>) -> Result<HookOutcome, WebhookError> {
    let names = hook::headers(req.provider);
    let Some(signature) = req.signature.filter(|s| !s.is_empty()) else {
        return Err(WebhookError::Unauthorized(format!("missing {} header", names.signature)));
    };
    let (Some(git), Some(secrets)) = (&ports.git, &ports.secrets) else {
        return Err(WebhookError::Unavailable("builds from git are not set up here".into()));
    };
    let full_name =
        hook::repository_full_name(req.body).map_err(|e| WebhookError::BadRequest(e.to_string()))?;
    let unknown = || WebhookError::UnknownRepo(format!("repository {full_name} is not registered with Kiln"));
    let repo = Repo::parse(&full_name).ok_or_else(unknown)?;
    let settings = git.repos.get_repo(&repo).await.map_err(unavailable)?.ok_or_else(unknown)?;
    if settings.provider != req.provider {
        return Err(WebhookError::BadRequest(format!(
            "repository {repo} is registered for {}, not {}",
            settings.provider, req.provider
        )));
    }
    let (secret_name, token_name) = (webhook_secret_name(), token_name());
    let mut creds = secrets
        .reveal(&credentials_repo(&repo), &[secret_name.clone(), token_name.clone()])
        .await
        .map_err(unavailable)?;
    let Some(secret) = creds.remove(&secret_name) else {
        return Err(WebhookError::Unauthorized(format!("repository {repo} has no webhook secret")));
    };
    if !hook::verify_signature(req.provider, secret.as_bytes(), req.body, signature) {
        return Err(WebhookError::Unauthorized(format!(
            "the {} header does not match the body signed with {repo}'s webhook secret",
            names.signature
        )));
    }
    let event =
        req.event.ok_or_else(|| WebhookError::BadRequest(format!("missing {} header", names.event)))?;
    let delivery = req
        .delivery
        .filter(|d| !d.is_empty())
        .ok_or_else(|| WebhookError::BadRequest(format!("missing {} header", names.delivery)))?;
    let info = match hook::parse(req.provider, &settings.api_url, event, delivery, req.body)
        .map_err(|e| WebhookError::BadRequest(e.to_string()))?
    {
        Hook::Ping => return Ok(HookOutcome::Nothing("pong: the webhook reaches Kiln".into())),
        Hook::Skip(why) => return Ok(HookOutcome::Nothing(why)),
        Hook::Build(info) => info,
    };

    // One build per delivery: the claim names the build before it exists, so a redelivery
    // after a crash between the two makes that same build, not a second one.
    let key = format!("hook/{}/{delivery}", req.provider);
    let fresh = BuildId::generate();
    let id = match git.repos.claim(&key, fresh.as_str()).await.map_err(unavailable)? {
        None => fresh,
        Some(taken) => {
            let taken = BuildId::new(taken);
            if let Some(b) = ports.state.get_build(&taken).await.map_err(unavailable)? {
                // Stored but maybe never started (a crash before its report was queued):
                // the fan-in takes a second `build-created` as a no-op.
                if b.status == kiln_domain::Status::Pending {
                    let created = Report::from(kiln_domain::report::BuildCreated {
                        repo: b.repo.to_string(),
                        stages: b.plan.stages.len(),
                    })
                    .to_event(&b.id, "kiln://compile");
                    send_event(ports.events.as_ref(), &created).await.map_err(unavailable)?;
                }
                return Ok(HookOutcome::Nothing(format!(
                    "delivery {delivery} was already handled: build {taken}"
                )));
            }
            taken
        }
    };

    let host = GitHost::new(req.provider, &settings.api_url, creds.remove(&token_name));
    let source = match host.pipeline_file(&info.repo, &info.commit).await {
        Ok(Some(source)) => source,
        Ok(None) => return Ok(HookOutcome::Nothing(format!("no .kiln.yml at {}", info.commit))),
        Err(e) => {
            // Given back: the host shows the delivery failed, and a redelivery tries again.
            let _ = git.repos.release(&key).await;
            return Err(WebhookError::Host(format!("cannot fetch .kiln.yml of {}: {e}", info.repo)));
        }
    };
    let mut build = match compile(&source) {
        Ok(plan) => {
            if let Err(why) = should_build(plan.git.as_ref(), &info) {
                return Ok(HookOutcome::Nothing(why));
            }
            Build::new(id.clone(), repo.clone(), plan, now_ms())
        }
        Err(errors) => {
            let mut b = Build::new(id.clone(), repo.clone(), empty_plan(), now_ms());
            let lines: Vec<String> = errors.iter().map(|e| format!(".kiln.yml:{e}")).collect();
            b.reason = Some(format!("the pipeline has {} error(s):\n{}", errors.len(), lines.join("\n")));
            b.compile_failed = true;
            b
        }
    };
    build.secrets_allowed = !info.fork;
    build.git = Some(info.clone());
    let cancel_superseded = build.plan.cancel_superseded;
    let first = CloudEvent::new(
        hook_event_type(&info),
        format!("kiln://hooks/{}", req.provider),
        &id,
        serde_json::to_value(&info).map_err(unavailable)?,
    );
    match start_build(ports.state.as_ref(), ports.events.as_ref(), &build, Some(&first)).await {
        Ok(()) => {}
        Err(SubmitError::Store(kiln_store::StoreError::AlreadyExists(_))) => {
            return Ok(HookOutcome::Nothing(format!("delivery {delivery} was already handled: build {id}")));
        }
        Err(e) => return Err(unavailable(e)),
    }
    if cancel_superseded {
        supersede(ports, &build, &info).await;
    }
    Ok(HookOutcome::Started(id))
}

/// The plan of a build whose pipeline did not compile: nothing to run.
fn empty_plan() -> Plan {
    Plan {
        version: "1".into(),
        env: BTreeMap::new(),
        stages: Vec::new(),
        images: Vec::new(),
        timeout_ms: kiln_domain::plan::DEFAULT_BUILD_TIMEOUT_MS,
        git: None,
        cancel_superseded: false,
    }
}

/// How many of a repository's newest builds are looked at for superseding.
const SUPERSEDE_WINDOW: usize = 50;

/// Cancels the running builds of the same branch or pull request that are older than
/// `newer`. Best effort: a failure is logged, the new build stands.
async fn supersede(ports: &Ports, newer: &Build, info: &GitInfo) {
    let Some(key) = info.supersede_key() else { return };
    let summaries = match ports.state.list_builds(&newer.repo, SUPERSEDE_WINDOW).await {
        Ok(s) => s,
        Err(e) => return tracing::warn!(build = %newer.id, error = %e, "cannot list builds to supersede"),
    };
    for s in summaries.iter().filter(|s| s.id != newer.id && !s.status.is_terminal()) {
        let older = match ports.state.get_build(&s.id).await {
            Ok(Some(b)) => b,
            _ => continue,
        };
        let same = older.git.as_ref().and_then(GitInfo::supersede_key).is_some_and(|k| k == key);
        if !same || older.created_ms > newer.created_ms {
            continue;
        }
        let e = Report::from(CancelRequested { reason: Some(format!("superseded by {}", newer.id)) })
            .to_event(&older.id, "kiln://hooks");
        match send_event(ports.events.as_ref(), &e).await {
            Ok(()) => tracing::info!(build = %older.id, by = %newer.id, "superseded"),
            Err(e) => tracing::warn!(build = %older.id, error = %e, "cannot cancel a superseded build"),
        }
    }
}
