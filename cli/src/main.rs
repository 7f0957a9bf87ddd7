//! `kiln`: run pipelines on this machine, validate them, and read builds and logs.

mod dev;
mod images;
mod lines;
mod local;
mod remote;
mod render;
mod repos;
mod run;
mod secrets;

use clap::{Args, Parser, Subcommand};
use kiln_api::client::ApiClient;
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
        /// Pass this variable of kiln's environment to steps (repeatable; KILN_PASS_ENV
        /// adds comma-separated names). Steps get nothing else of it.
        #[arg(long = "pass-env", value_name = "NAME")]
        pass_env: Vec<String>,
    },
    /// Compile a pipeline without running it: exit 0 with the plan, or 2 with every error.
    Validate {
        file: PathBuf,
        /// Print the compiled plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole system in one process: the HTTP API, fan-in, dispatch and runners.
    Dev {
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// The admin token clients must send (generated and printed when not given).
        /// Prefer KILN_TOKEN or --token-file: a command line is visible to every process.
        #[arg(long, env = "KILN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read the admin token from this file (wins over --token and KILN_TOKEN).
        #[arg(long, env = "KILN_TOKEN_FILE", value_name = "PATH", value_parser = read_token_file, global = true)]
        token_file: Option<String>,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        /// Where state, logs and queues live.
        #[arg(long, value_enum, default_value = "local")]
        backend: dev::Backend,
    },
    /// Submit a pipeline to a Kiln API; prints the build id.
    Submit {
        file: PathBuf,
        #[arg(long, default_value = "local/local")]
        repo: String,
        /// Follow the build's logs until it ends; exit like `kiln run`.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a build (from the API with --api, else from the data dir).
    Status {
        build: String,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a build's logs: all of them, one step's (STAGE/STEP), or the init log.
    Logs {
        build: String,
        /// `stage/step` (or `stage/service`); its latest attempt.
        stream: Option<String>,
        /// The build's init log (setup output).
        #[arg(long, conflicts_with = "stream")]
        init: bool,
        /// Keep printing as new output arrives, until the log (or build) ends. Needs --api.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a build's event history (CloudEvents), in order.
    Events {
        build: String,
        /// One JSON document per line.
        #[arg(long)]
        json: bool,
        /// Keep printing new events until the build ends. Needs --api.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The image catalog: which images are built, for which providers.
    Images {
        #[command(subcommand)]
        action: Option<ImagesAction>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A repository's secrets (given to the steps that declare them, masked in logs):
    /// through the API with --api, else in the data dir (sealed, key kept apart).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
        #[arg(long, default_value = ".kiln", env = "KILN_DATA_DIR", global = true)]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Repositories whose pushes and pull requests start builds (webhooks): register one,
    /// list them. Needs --api.
    Repos {
        #[command(subcommand)]
        action: ReposAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a running build. Needs --api.
    Cancel {
        build: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send a CloudEvent to a build. Needs --api.
    Emit {
        build: String,
        /// The event type, e.g. `coin`.
        #[arg(name = "TYPE")]
        ty: String,
        /// The event data, a JSON object.
        #[arg(long)]
        data: Option<String>,
        #[arg(long, default_value = "kiln://cli")]
        source: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum ReposAction {
    /// Register a repository (or change it). The webhook secret and the host token come
    /// from KILN_WEBHOOK_SECRET and KILN_GIT_TOKEN, or else from stdin: the secret on the
    /// first line, the token on the second.
    Add {
        /// org/repo, as the host names it
        repo: String,
        /// github, or gitea (also Forgejo)
        #[arg(long, default_value = "github")]
        provider: String,
        /// The host's API root (default https://api.github.com for GitHub).
        #[arg(long)]
        api_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The registered repositories: name, provider, API root.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Set a secret: its value is read from stdin, byte for byte (from a terminal, the
    /// newline that ends the typed line is dropped; from a pipe or file nothing is, so use
    /// `printf %s "$VALUE" |`). 4 bytes to 64 KiB of UTF-8 without NUL.
    Set {
        /// org/repo
        repo: String,
        /// An environment variable name, not starting with KILN_.
        name: String,
    },
    /// List a repository's secrets: names and when they were set, never values.
    List {
        repo: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm { repo: String, name: String },
}

#[derive(Subcommand)]
enum ImagesAction {
    /// Build and push an image's providers that are missing or failed (or those named).
    /// Needs --api.
    Build {
        image: String,
        /// Only these providers (repeatable).
        #[arg(long = "provider")]
        providers: Vec<String>,
    },
}

/// Where a Kiln API is, and the token to use.
#[derive(Args, Clone)]
struct ApiArgs {
    /// The API's base URL, e.g. http://127.0.0.1:8080. Without it, commands read the data dir.
    #[arg(long = "api", env = "KILN_API", global = true)]
    url: Option<String>,
    /// The API token. Prefer KILN_TOKEN or --token-file: a command line is visible to
    /// every process of the machine.
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Read the API token from this file (wins over --token and KILN_TOKEN).
    #[arg(long, env = "KILN_TOKEN_FILE", value_name = "PATH", value_parser = read_token_file)]
    token_file: Option<String>,
}

/// A token file's content, without surrounding whitespace.
fn read_token_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    match text.trim() {
        "" => Err(format!("{path} is empty")),
        t => Ok(t.to_string()),
    }
}

impl ApiArgs {
    fn client(&self) -> Option<ApiClient> {
        let token = self.token_file.as_deref().or(self.token.as_deref());
        self.url.as_deref().map(|u| ApiClient::new(u, token.unwrap_or_default()))
    }

    /// The client, or a message that this command needs one.
    fn require(&self, command: &str) -> Result<ApiClient, u8> {
        self.client().ok_or_else(|| {
            eprintln!(
                "kiln: `kiln {command}` talks to a Kiln API: give --api URL (or KILN_API) and KILN_TOKEN"
            );
            2
        })
    }
}

fn main() -> ExitCode {
    // Before anything holds a key: steps of this user cannot read our memory or environ.
    if let Err(e) = kiln_core::runner::protect_process() {
        eprintln!("kiln: warning: cannot make this process non-dumpable: {e}");
    }
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
            Command::Run { file, json, data_dir, repo, pass_env } => {
                run::run(&file, json, &data_dir, &repo, &pass_env).await
            }
            Command::Validate { file, json } => run::validate(&file, json),
            Command::Dev { addr, token, token_file, data_dir, backend } => {
                dev::dev(&addr, token_file.or(token), &data_dir, backend).await
            }
            Command::Submit { file, repo, follow, json, api } => match api.require("submit") {
                Ok(c) => remote::submit(&c, &file, &repo, follow, json).await,
                Err(code) => code,
            },
            Command::Status { build, json, data_dir, api } => match api.client() {
                Some(c) => remote::status_cmd(&c, &build, json).await,
                None => local::status(&data_dir, &build, json).await,
            },
            Command::Logs { build, stream, init, follow, data_dir, api } => match api.client() {
                Some(c) => remote::logs(&c, &build, stream.as_deref(), init, follow).await,
                None if follow => {
                    eprintln!("kiln: --follow needs a running Kiln: give --api URL (kiln dev serves one)");
                    2
                }
                None => local::logs(&data_dir, &build, stream.as_deref(), init).await,
            },
            Command::Events { build, json, follow, data_dir, api } => match api.client() {
                Some(c) => remote::events(&c, &build, json, follow).await,
                None if follow => {
                    eprintln!("kiln: --follow needs a running Kiln: give --api URL (kiln dev serves one)");
                    2
                }
                None => local::events(&data_dir, &build, json).await,
            },
            Command::Images { action: None, json, data_dir, api } => match api.client() {
                Some(c) => images::remote(&c, json).await,
                None => images::images(&data_dir, json).await,
            },
            Command::Images { action: Some(ImagesAction::Build { image, providers }), api, .. } => {
                match api.require("images build") {
                    Ok(c) => images::build(&c, &image, providers).await,
                    Err(code) => code,
                }
            }
            Command::Secrets { action, data_dir, api } => match action {
                SecretsAction::Set { repo, name } => {
                    secrets::set(api.client(), &data_dir, &repo, &name).await
                }
                SecretsAction::List { repo, json } => {
                    secrets::list(api.client(), &data_dir, &repo, json).await
                }
                SecretsAction::Rm { repo, name } => secrets::rm(api.client(), &data_dir, &repo, &name).await,
            },
            Command::Repos { action, api } => match api.require("repos") {
                Ok(c) => match action {
                    ReposAction::Add { repo, provider, api_url, json } => {
                        repos::add(&c, &repo, &provider, api_url, json).await
                    }
                    ReposAction::List { json } => repos::list(&c, json).await,
                },
                Err(code) => code,
            },
            Command::Cancel { build, api } => match api.require("cancel") {
                Ok(c) => remote::cancel(&c, &build).await,
                Err(code) => code,
            },
            Command::Emit { build, ty, data, source, api } => match api.require("emit") {
                Ok(c) => remote::emit(&c, &build, &ty, data.as_deref(), &source).await,
                Err(code) => code,
            },
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
