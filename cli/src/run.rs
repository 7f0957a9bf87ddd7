//! `kiln run` and `kiln validate`.

use crate::lines::write_labelled;
use crate::local::{self, Tail};
use crate::render;
use kiln_core::runner::StepEnvPolicy;
use kiln_core::submit::SubmitError;
use kiln_core::system::{System, SystemConfig};
use kiln_domain::compile::{CompileError, compile};
use kiln_domain::{Repo, Status};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Reads a pipeline file, or prints why not (exit 2: the pipeline is unusable).
fn read_pipeline(file: &Path) -> Result<Vec<u8>, u8> {
    std::fs::read(file).map_err(|e| {
        eprintln!("{}: cannot read: {e}", file.display());
        2
    })
}

fn print_errors(file: &Path, errors: &[CompileError]) {
    for e in errors {
        eprintln!("{}:{}:{}: {}", file.display(), e.line, e.column, e.message);
    }
    eprintln!("{} error(s)", errors.len());
}

pub fn validate(file: &Path, json: bool) -> u8 {
    let source = match read_pipeline(file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match compile(&source) {
        Ok(plan) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
                return 0;
            }
            let steps: usize = plan.stages.iter().map(|s| s.steps.len()).sum();
            println!("{}: ok, {} stage(s), {} step(s)", file.display(), plan.stages.len(), steps);
            for s in &plan.stages {
                let mut line = format!("  {} ({} step(s)", s.name, s.steps.len());
                if !s.services.is_empty() {
                    line.push_str(&format!(", {} service(s)", s.services.len()));
                }
                line.push(')');
                if !s.needs.is_empty() {
                    let needs: Vec<&str> = s.needs.iter().map(|n| n.as_str()).collect();
                    line.push_str(&format!(" needs {}", needs.join(", ")));
                }
                if !s.triggers.is_empty() {
                    let on: Vec<String> = s.triggers.iter().map(|t| t.events.join("+")).collect();
                    line.push_str(&format!(" on {}", on.join(", ")));
                }
                println!("{line}");
            }
            0
        }
        Err(errors) => {
            print_errors(file, &errors);
            2
        }
    }
}

pub async fn run(file: &Path, json: bool, data_dir: &Path, repo: &str, pass_env: &[String]) -> u8 {
    let source = match read_pipeline(file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(repo) = Repo::parse(repo) else {
        eprintln!("kiln: --repo must look like org/repo");
        return 2;
    };
    let tag = format!("run-{}", kiln_domain::BuildId::generate().as_str());
    let ports = match local::open_private(data_dir, &tag) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: cannot use data dir {}: {e}", data_dir.display());
            return 1;
        }
    };
    let mut config = SystemConfig::new(data_dir.join("workspaces"));
    config.step_env = match StepEnvPolicy::from_env(pass_env) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 2;
        }
    };
    let system = System::start(ports.clone(), config);
    let build = match system.submit(repo, &source).await {
        Ok(b) => b,
        Err(SubmitError::Invalid(errors)) => {
            print_errors(file, &errors);
            return 2;
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            return 1;
        }
    };
    let id = build.id.clone();
    eprintln!("kiln: build {id} ({} stage(s)); data in {}", build.plan.stages.len(), data_dir.display());

    // Step output goes to stdout, unless stdout is for the JSON document.
    let mut out: Box<dyn Write + Send> = if json {
        Box::new(BufWriter::new(std::io::stderr()))
    } else {
        Box::new(BufWriter::new(std::io::stdout()))
    };
    let spinner = std::io::stderr().is_terminal() && !json;
    let mut tail = Tail::default();
    let mut frame = 0usize;
    let mut cancel_sent = false;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let finished = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut ctrl_c, if !cancel_sent => {
                cancel_sent = true;
                eprintln!("\nkiln: canceling build {id} (steps get SIGTERM, then SIGKILL)");
                if let Err(e) = system.cancel(&id, "canceled from the terminal").await {
                    eprintln!("kiln: cancel failed: {e}");
                }
            }
        }
        let b = match ports.state.get_build(&id).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                eprintln!("kiln: build {id} vanished from the store");
                return 1;
            }
            Err(e) => {
                eprintln!("kiln: {e}");
                return 1;
            }
        };
        let done = b.is_settled();
        let mut cleared = !spinner;
        tail.poll(ports.logs.as_ref(), &id, done, |label, line| {
            if !cleared {
                eprint!("\r\x1b[2K");
                cleared = true;
            }
            write_labelled(out.as_mut(), label, line);
        })
        .await;
        let _ = out.flush();
        if done && tail.drained() {
            break b;
        }
        if spinner {
            let running: Vec<&str> =
                b.stages.iter().filter(|s| s.status == Status::Running).map(|s| s.name.as_str()).collect();
            let ended = b.stages.iter().filter(|s| s.status.is_terminal()).count();
            frame += 1;
            eprint!(
                "\r\x1b[2K{} {}/{} stages done; running: {}",
                SPINNER[frame % SPINNER.len()],
                ended,
                b.stages.len(),
                if running.is_empty() { "-".to_string() } else { running.join(", ") }
            );
        }
    };
    if spinner {
        eprint!("\r\x1b[2K");
    }
    system.stop().await;
    let mut doc = kiln_api::views::BuildView::from(&finished);
    doc.attach_images(
        kiln_core::images::build_images(ports.state.as_ref(), &finished).await.into_iter().map(Into::into),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("\n{}", render::summary(&doc));
    }
    render::exit_code(&doc)
}
