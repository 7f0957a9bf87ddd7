//! `kiln`: run pipelines on this machine, validate them, and read builds and logs.

mod local;
mod render;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "A serverless build system for AWS", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline on this machine with the embedded backend (no AWS needed).
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Print the finished build as one JSON document instead of the summary
        /// (step output then goes to stderr).
        #[arg(long)]
        json: bool,
        /// Where builds and logs are kept.
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        /// The repository the build is recorded under.
        #[arg(long, default_value = "local/local")]
        repo: String,
    },
    /// Compile a pipeline without running it: exit 0 with the plan, or 2 with every error.
    Validate {
        file: PathBuf,
        /// Print the compiled plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a build from the data dir.
    Status {
        build: String,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print a build's logs: all of them, one step's (STAGE/STEP), or the init log.
    Logs {
        build: String,
        /// `stage/step` (or `stage/service`); its latest attempt.
        stream: Option<String>,
        /// The build's init log (setup output).
        #[arg(long, conflicts_with = "stream")]
        init: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Run { file, json, data_dir, repo } => run::run(&file, json, &data_dir, &repo).await,
            Command::Validate { file, json } => run::validate(&file, json),
            Command::Status { build, json, data_dir } => local::status(&data_dir, &build, json).await,
            Command::Logs { build, stream, init, data_dir } => {
                local::logs(&data_dir, &build, stream.as_deref(), init).await
            }
        }
    });
    // Runner tasks may still be winding down; do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}

/// Diagnostics go to stderr; `KILN_LOG` sets the level (default: warn).
fn init_tracing() {
    let level = std::env::var("KILN_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).init();
}
