//! Client commands against a Kiln API (`--api` / `KILN_API`, with `KILN_TOKEN`).

use crate::lines::{StreamTail, write_labelled};
use crate::render;
use kiln_api::client::{ApiClient, ClientError};
use kiln_api::views::{BuildView, CloudEventView, ErrorDetail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn fail(e: ClientError) -> u8 {
    eprintln!("kiln: {e}");
    if let ClientError::Api { details, .. } = &e {
        for d in details {
            eprintln!("  {d}");
        }
    }
    1
}

pub async fn submit(api: &ApiClient, file: &Path, repo: &str, follow: bool, json: bool) -> u8 {
    let source = match std::fs::read(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return 2;
        }
    };
    let Some((org, name)) = repo.split_once('/') else {
        eprintln!("kiln: --repo must look like org/repo");
        return 2;
    };
    let created = match api.submit(org, name, source).await {
        Ok(v) => v,
        Err(ClientError::Api { status: 400, details, message }) if !details.is_empty() => {
            for d in &details {
                match d {
                    ErrorDetail::Position { .. } => eprintln!("{}:{d}", file.display()),
                    ErrorDetail::Problem(p) => eprintln!("{}: {p}", file.display()),
                }
            }
            eprintln!("kiln: {message}");
            return 2;
        }
        Err(e) => return fail(e),
    };
    let id = created.id.to_string();
    if !follow {
        if json {
            println!("{}", serde_json::to_string(&created).unwrap_or_default());
        } else {
            println!("{id}");
        }
        return 0;
    }
    eprintln!("kiln: build {id}");
    if let Err(e) = follow_all(api, &id, json).await {
        return fail(e);
    }
    status(api, &id, json).await.map(|doc| render::exit_code(&doc)).unwrap_or(1)
}

/// Prints a build; returns its view.
async fn status(api: &ApiClient, id: &str, json: bool) -> Option<BuildView> {
    match api.build(id).await {
        Ok(doc) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", render::summary(&doc));
            }
            Some(doc)
        }
        Err(e) => {
            fail(e);
            None
        }
    }
}

pub async fn status_cmd(api: &ApiClient, id: &str, json: bool) -> u8 {
    if status(api, id, json).await.is_some() { 0 } else { 1 }
}

pub async fn cancel(api: &ApiClient, id: &str) -> u8 {
    match api.cancel(id).await {
        Ok(_) => {
            eprintln!("kiln: cancel requested for build {id}");
            0
        }
        Err(e) => fail(e),
    }
}

fn log_path(id: &str, stream: Option<&str>, init: bool) -> Result<String, u8> {
    match (stream, init) {
        (_, true) => Ok(format!("/v1/builds/{id}/logs/init")),
        (Some(s), false) => match s.split_once('/') {
            Some((stage, step)) => {
                Ok(format!("/v1/builds/{id}/logs/{}/{step}", kiln_api::views::encode(stage)))
            }
            None => {
                eprintln!("kiln: name a log as STAGE/STEP");
                Err(2)
            }
        },
        (None, false) => Err(0),
    }
}

/// `kiln logs` over the API: one stream's bytes exactly (following it to its end with
/// `--follow`), or every stream.
pub async fn logs(api: &ApiClient, id: &str, stream: Option<&str>, init: bool, follow: bool) -> u8 {
    let path = match log_path(id, stream, init) {
        Ok(p) => p,
        Err(0) => {
            let r = if follow { follow_all(api, id, false).await } else { dump_all(api, id).await };
            return r.map(|_| 0).unwrap_or_else(fail);
        }
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    let mut offset = 0;
    loop {
        let page = match api.read_log(&path, offset, if follow { 20 } else { 0 }).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        if out.write_all(&page.bytes).and_then(|_| out.flush()).is_err() {
            return 0; // the reader went away (e.g. `| head`)
        }
        offset = page.next_offset;
        if page.complete || (!follow && page.bytes.is_empty()) {
            return 0;
        }
    }
}

async fn dump_all(api: &ApiClient, id: &str) -> Result<(), ClientError> {
    let list = api.logs(id).await?;
    let mut out = std::io::stdout().lock();
    for l in list.logs {
        let _ = writeln!(out, "==> {} <==", l.name);
        let mut offset = 0;
        loop {
            let page = api.read_log(&l.url, offset, 0).await?;
            let _ = out.write_all(&page.bytes);
            offset = page.next_offset;
            if page.bytes.is_empty() || page.complete {
                break;
            }
        }
    }
    Ok(())
}

/// Follows every log of a build until the build has ended, printing whole lines
/// prefixed with `stage/step` (to stderr when stdout is for JSON).
async fn follow_all(api: &ApiClient, id: &str, to_stderr: bool) -> Result<(), ClientError> {
    let mut tails: BTreeMap<String, StreamTail> = BTreeMap::new();
    let mut out: Box<dyn Write> =
        if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout().lock()) };
    loop {
        let build = api.build(id).await?;
        let ended = build.has_ended();
        let list = api.logs(id).await?;
        for l in list.logs {
            let t = tails.entry(l.key).or_default();
            let mut emit = |line: &[u8]| write_labelled(out.as_mut(), &l.name, line);
            while !t.done {
                let page = api.read_log(&l.url, t.offset, 0).await?;
                t.feed(&page.bytes, page.next_offset, &mut emit);
                if page.complete || (ended && page.bytes.is_empty()) {
                    t.finish(&mut emit);
                }
                if page.bytes.is_empty() {
                    break;
                }
            }
        }
        let _ = out.flush();
        if ended && tails.values().all(|t| t.done) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn events(api: &ApiClient, id: &str, json: bool, follow: bool) -> u8 {
    let mut after = 0;
    loop {
        let page = match api.events(id, after, 500).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        for e in &page.events {
            crate::local::print_event(e, json);
        }
        after = page.next_after;
        if page.events.is_empty() {
            if !follow {
                return 0;
            }
            match api.build(id).await {
                Ok(b) if b.status.is_terminal() => return 0,
                Ok(_) => {}
                Err(e) => return fail(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub async fn emit(api: &ApiClient, id: &str, ty: &str, data: Option<&str>, source: &str) -> u8 {
    let data: Value = match data.map(serde_json::from_str).transpose() {
        Ok(d) => d.unwrap_or_else(|| Value::Object(Default::default())),
        Err(e) => {
            eprintln!("kiln: --data is not JSON: {e}");
            return 2;
        }
    };
    let event = CloudEventView {
        specversion: kiln_domain::event::SPEC_VERSION.to_string(),
        id: kiln_domain::BuildId::generate().to_string(),
        source: source.to_string(),
        ty: ty.to_string(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".to_string()),
        kilnbuild: None,
        data,
    };
    match api.emit(id, &event).await {
        Ok(v) => {
            println!("{}", v.id);
            0
        }
        Err(e) => fail(e),
    }
}
