//! `kiln dev`: the whole system in one process behind the HTTP API.

use kiln_api::auth::Auth;
use kiln_api::client::HttpSinks;
use kiln_api::{AppState, router};
use kiln_core::runner::StepEnvPolicy;
use kiln_core::system::{GitPorts, Ports, System, SystemConfig};
use kiln_core::tokens::TokenSigner;
use kiln_store::Queue;
use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;

/// Where `kiln dev` keeps state, logs and queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The embedded backend in the data dir.
    Local,
    /// DynamoDB, S3 and SQS, configured the usual AWS way (AWS_ENDPOINT_URL, AWS_REGION,
    /// credentials) plus KILN_TABLE, KILN_BUCKET and the KILN_*_QUEUE names.
    Aws,
}

/// The ports, and the jobs dead-letter queue when there is one to watch.
async fn ports(backend: Backend, data_dir: &Path) -> Result<(Ports, Option<Arc<dyn Queue>>), String> {
    let (ports, dlq) = match backend {
        Backend::Local => {
            let local = crate::local::open_local(data_dir)
                .map_err(|e| format!("cannot use data dir {}: {e}", data_dir.display()))?;
            (local.ports, Some(local.dead_jobs))
        }
        Backend::Aws => {
            let config = kiln_store_aws::AwsConfig::from_env();
            let aws = kiln_store_aws::connect(&config).await.map_err(|e| format!("AWS backend: {e}"))?;
            let dlq: Option<Arc<dyn Queue>> = match std::env::var("KILN_JOBS_DLQ") {
                Ok(name) if !name.is_empty() => Some(Arc::new(
                    kiln_store_aws::SqsQueue::connect(aws.clients.sqs.clone(), name)
                        .await
                        .map_err(|e| format!("jobs dead-letter queue: {e}"))?,
                )),
                _ => None,
            };
            let ports = Ports {
                state: aws.state,
                logs: aws.logs,
                events: aws.events,
                dispatch: aws.dispatch,
                jobs: aws.jobs,
                secrets: Some(aws.secrets),
                // With KILN_NOTIFY_QUEUE: repositories, webhooks and commit statuses.
                git: aws.notify.map(|notify| GitPorts {
                    repos: aws.repos,
                    notify,
                    public_url: String::new(),
                }),
            };
            (ports, dlq)
        }
    };
    // A test switch: every message is delivered twice (on SQS too), to show that each
    // handler is idempotent.
    if std::env::var("KILN_TEST_REDELIVER").is_ok_and(|v| v == "1") {
        use kiln_store_local::redeliver::redeliver_once;
        // Events are grouped by build; the other queues are not FIFO.
        fn build_of(body: &str) -> Option<String> {
            serde_json::from_str::<serde_json::Value>(body).ok()?["kilnbuild"].as_str().map(str::to_string)
        }
        // Commit-status requests are grouped by build too.
        fn notified(body: &str) -> Option<String> {
            serde_json::from_str::<kiln_core::notify::NotifyRequest>(body).ok().map(|r| r.build.to_string())
        }
        let git = ports.git.clone().map(|g| GitPorts { notify: redeliver_once(g.notify, notified), ..g });
        let ports = Ports {
            events: redeliver_once(ports.events, build_of),
            dispatch: redeliver_once(ports.dispatch, |_| None),
            jobs: redeliver_once(ports.jobs, |_| None),
            git,
            ..ports
        };
        return Ok((ports, dlq));
    }
    Ok((ports, dlq))
}

async fn prune_hourly(data_dir: std::path::PathBuf) {
    loop {
        match crate::local::prune(&data_dir).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => eprintln!("kiln dev: {} build(s) past their retention removed", gone.len()),
            Err(e) => tracing::warn!(error = %e, "pruning old builds failed"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// Every few seconds, reports the jobs that were dead-lettered (a job that keeps killing
/// its runner ends there after the queue's maxReceiveCount) as failed.
async fn watch_dead_jobs(dlq: Arc<dyn Queue>, events: Arc<dyn Queue>) {
    loop {
        match kiln_core::watchdog::drain(dlq.as_ref(), events.as_ref()).await {
            Ok(0) => {}
            Ok(n) => eprintln!("kiln dev: {n} dead-lettered job(s) reported as failed"),
            Err(e) => tracing::warn!(error = %e, "watchdog failed"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

pub async fn dev(addr: &str, token: Option<String>, data_dir: &Path, backend: Backend) -> u8 {
    let (ports, dlq) = match ports(backend, data_dir).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 1;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kiln: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 1;
        }
    };
    let token = token.filter(|t| !t.is_empty()).unwrap_or_else(|| {
        let t = format!("kiln-{}", uuid_like());
        eprintln!("kiln: no --token or KILN_TOKEN given; generated admin token: {t}");
        t
    });
    // Runner tokens are signed with KILN_SIGNING_KEY when set (several processes that
    // must accept each other's tokens share it), else with a key that dies with us.
    // Without it, the local backend keeps a key in the data dir: jobs queued before a
    // restart carry tokens the restarted process must still accept.
    let signer = match std::env::var("KILN_SIGNING_KEY") {
        Ok(k) if !k.is_empty() => TokenSigner::new(k.into_bytes()),
        _ if backend == Backend::Local => match data_dir_key(data_dir) {
            Ok(k) => TokenSigner::new(k),
            Err(e) => {
                eprintln!("kiln: signing key in {}: {e}", data_dir.display());
                return 1;
            }
        },
        _ => TokenSigner::random(),
    };
    let base = format!("http://{local}");
    // Commit statuses link to the build's page: KILN_PUBLIC_URL when the API is reached
    // by another name (a proxy, a tunnel), else this address.
    let public_url = std::env::var("KILN_PUBLIC_URL").ok().filter(|u| !u.is_empty()).unwrap_or(base.clone());
    let mut ports = ports;
    if let Some(git) = ports.git.as_mut() {
        git.public_url = public_url;
    }
    let mut config = SystemConfig::new(data_dir.join("workspaces"));
    config.signer = Some(signer.clone());
    // Steps get an empty environment plus what KILN_PASS_ENV names; as "nobody" when root.
    config.step_env = match StepEnvPolicy::from_env(&[]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 2;
        }
    };
    // 0: this process runs no jobs (runners elsewhere poll the jobs queue: `runner --poll`).
    if let Some(n) = std::env::var("KILN_RUNNER_SLOTS").ok().and_then(|v| v.trim().parse().ok()) {
        config.runner_slots = n;
    }
    // How long a runner's hold on a job lasts without renewal: after a crash, the job runs
    // again as the next attempt once both this and the message's visibility have passed.
    if let Some(secs) = std::env::var("KILN_LEASE_SECS").ok().and_then(|v| v.parse::<u64>().ok()) {
        config.lease = std::time::Duration::from_secs(secs.max(1));
    }
    // Runners reach log ingest and the events route over HTTP, as they do on AWS.
    let system = System::start_with(ports.clone(), config, Arc::new(HttpSinks { base: base.clone() }));
    let watchdog = dlq.map(|dlq| tokio::spawn(watch_dead_jobs(dlq, ports.events.clone())));
    // The embedded default forgets builds past their retention (DynamoDB's TTL does it on
    // AWS): at start, then hourly.
    let pruner = (backend == Backend::Local).then(|| tokio::spawn(prune_hourly(data_dir.to_path_buf())));
    let app = router(AppState::new(ports, Auth::new(vec![token], signer)));
    println!("kiln dev: listening on {base} (data in {})", data_dir.display());
    // The server outlives the system: runners send their logs and reports over HTTP, so
    // it stops only once the jobs in hand have finished.
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .into_future(),
    );
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = shutdown_signal() => None,
    };
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(p) = pruner {
        p.abort();
    }
    let served = match served {
        // The server failed on its own: nothing can report any more.
        Some(r) => {
            drop(system);
            r
        }
        None => {
            // A clean stop: take no more work, let the running jobs finish (their steps
            // run to the end and report). A second signal leaves at once: those jobs run
            // again, as their next attempt, on the next start once their lease ran out.
            eprintln!("kiln dev: finishing the running jobs (interrupt again to leave now)");
            tokio::select! {
                _ = system.stop() => {}
                _ = shutdown_signal() => {
                    eprintln!("kiln dev: left with jobs running; they run again on the next start");
                }
            }
            let _ = stop_server.send(());
            server.await
        }
    };
    match served {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("kiln: server failed: {e}");
            1
        }
        Err(e) => {
            eprintln!("kiln: server failed: {e}");
            1
        }
    }
}

/// The runner-token key kept in `DATA/signing.key` (created on first use, owner-only).
fn data_dir_key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("signing.key");
    let read_back = |path: &Path| -> std::io::Result<Vec<u8>> {
        let k = std::fs::read(path)?;
        if k.len() < 32 {
            return Err(std::io::Error::other(format!(
                "{} holds {} bytes, not a key of 32: remove it (runner tokens of queued jobs then need a restart of their jobs)",
                path.display(),
                k.len()
            )));
        }
        Ok(k)
    };
    match read_back(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    // Written whole aside, then linked into place, which fails if the name exists: of two
    // processes starting at once, one key wins and both read it back.
    let tmp = data_dir.join(format!(".signing.key.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    read_back(&path)
}

fn uuid_like() -> String {
    kiln_domain::BuildId::generate().as_str().replace('-', "")
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("kiln dev: shutting down");
}
