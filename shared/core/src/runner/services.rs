//! The stage's services: started before its steps, in the background, each in its own
//! process group with its own log; stopped (SIGTERM, then SIGKILL) after the steps.

use super::batcher::{Directives, StreamTask, start_stream};
use super::env::{self, Env};
use super::process::{GroupGuard, exit_info, spawn_shell, terminate};
use super::{Stage, end_group};
use kiln_domain::StepName;
use kiln_domain::logs::LogStream;
use kiln_domain::plan::ServicePlan;
use std::path::Path;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(super) struct RunningService {
    name: StepName,
    stop: oneshot::Sender<()>,
    watcher: JoinHandle<()>,
    pgid: i32,
    guard: GroupGuard,
    stream: StreamTask,
}

impl Stage<'_> {
    pub(super) fn start_service(
        &self,
        svc: &ServicePlan,
        ws: &Path,
        env: &Env,
    ) -> std::io::Result<RunningService> {
        let sh = &self.sh;
        let stage = &self.job.stage;
        let stream = LogStream::Service {
            stage: stage.clone(),
            service: svc.name.clone(),
            number: svc.number,
            attempt: sh.attempt,
        };
        let mut fixed = env.fixed.clone();
        fixed.push(("KILN_SERVICE".to_string(), svc.name.to_string()));
        let vars = env.layered(&env::pairs(&svc.env), &svc.secrets, &fixed, &mut Vec::new());
        let (reader, writer) = std::io::pipe()?;
        let label = format!("{stage}/{}", svc.name);
        let stream = start_stream(sh.clone(), stream, label, Directives::MaskOnly, reader)?;
        let mut child = match spawn_shell(&svc.commands, ws, &vars, sh.config.step_env.user, writer) {
            Ok(c) => c,
            Err(e) => {
                // The write end is closed: the stream ends and completes by itself.
                tokio::spawn(stream.close());
                return Err(e);
            }
        };
        let pgid = child.id().map_or(0, |id| id as i32);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (sh2, name, grace) = (sh.clone(), svc.name.clone(), sh.config.kill_grace);
        let watcher = tokio::spawn(async move {
            let early = tokio::select! {
                status = child.wait() => Some(status),
                _ = stop_rx => None,
            };
            match early {
                Some(status) => {
                    let how = match status.as_ref().map(exit_info) {
                        Ok((_, Some(sig))) => format!("killed by signal {sig}"),
                        Ok((code, None)) => format!("with code {code}"),
                        Err(e) => format!("({e})"),
                    };
                    sh2.init_line(format!("[{}] service {name} exited early {how}", sh2.stage)).await;
                }
                None => {
                    let _ = terminate(&mut child, pgid, grace).await;
                }
            }
        });
        Ok(RunningService {
            name: svc.name.clone(),
            stop,
            watcher,
            pgid,
            guard: GroupGuard::new(pgid),
            stream,
        })
    }

    pub(super) async fn stop_services(&self, services: Vec<RunningService>) {
        if services.is_empty() {
            return;
        }
        let names: Vec<String> = services.iter().map(|s| s.name.to_string()).collect();
        self.sh.init_line(format!("[{}] stopping services: {}", self.job.stage, names.join(", "))).await;
        let mut waiting = Vec::new();
        for s in services {
            let _ = s.stop.send(()); // all at once: they stop in parallel
            waiting.push((s.watcher, s.pgid, s.guard, s.stream, s.name));
        }
        for (watcher, pgid, guard, mut stream, name) in waiting {
            let _ = watcher.await;
            let label = format!("{}/{name}", self.job.stage);
            end_group(&self.sh, pgid, &mut stream, &label).await;
            stream.close().await;
            guard.disarm();
        }
    }
}
