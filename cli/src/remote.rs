//! Client commands against a Kiln API (`--api` / `KILN_API`, with `KILN_TOKEN`).

use crate::lines::{StreamTail, write_labelled};
use crate::render;
use kiln_api::client::{ApiClient, ClientError};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn fail(e: ClientError) -> u8 {
    eprintln!("kiln: {e}");
    if let ClientError::Api { details, .. } = &e {
        for d in details {
            match (d["line"].as_u64(), d["column"].as_u64(), d["message"].as_str()) {
                (Some(l), Some(c), Some(m)) => eprintln!("  {l}:{c}: {m}"),
                _ => eprintln!("  {}", d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string())),
            }
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
                eprintln!(
                    "{}:{}:{}: {}",
                    file.display(),
                    d["line"],
                    d["column"],
                    d["message"].as_str().unwrap_or("")
                );
            }
            eprintln!("kiln: {message}");
            return 2;
        }
        Err(e) => return fail(e),
    };
    let id = created["id"].as_str().unwrap_or_default().to_string();
    if !follow {
        if json {
            println!("{created}");
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

/// Prints a build; returns its JSON view.
async fn status(api: &ApiClient, id: &str, json: bool) -> Option<Value> {
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
    for l in list["logs"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(out, "==> {} <==", l["name"].as_str().unwrap_or_default());
        let mut offset = 0;
        loop {
            let page = api.read_log(l["url"].as_str().unwrap_or_default(), offset, 0).await?;
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
        let stages =
            build["stages"].as_array().map(|st| st.iter().map(status_of).collect::<Option<Vec<_>>>());
        let ended = match (status_of(&build), stages.flatten()) {
            (Some(b), Some(st)) => kiln_domain::state::is_settled(b, st),
            _ => false,
        };
        let list = api.logs(id).await?;
        for l in list["logs"].as_array().cloned().unwrap_or_default() {
            let (Some(name), Some(url)) = (l["name"].as_str(), l["url"].as_str()) else { continue };
            let key = l["key"].as_str().unwrap_or(name).to_string();
            let t = tails.entry(key).or_default();
            let mut emit = |line: &[u8]| write_labelled(out.as_mut(), name, line);
            while !t.done {
                let page = api.read_log(url, t.offset, 0).await?;
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
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            crate::local::print_event(e, json);
        }
        after = page["next_after"].as_u64().unwrap_or(after);
        if events.is_empty() {
            if !follow {
                return 0;
            }
            match api.build(id).await {
                Ok(b) if status_of(&b).is_some_and(kiln_domain::Status::is_terminal) => return 0,
                Ok(_) => {}
                Err(e) => return fail(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub async fn emit(api: &ApiClient, id: &str, ty: &str, data: Option<&str>, source: &str) -> u8 {
    let data: Value = match data.map(serde_json::from_str).transpose() {
        Ok(d) => d.unwrap_or_else(|| json!({})),
        Err(e) => {
            eprintln!("kiln: --data is not JSON: {e}");
            return 2;
        }
    };
    let event = json!({
        "specversion": "1.0",
        "id": kiln_domain::BuildId::generate().as_str(),
        "source": source,
        "type": ty,
        "datacontenttype": "application/json",
        "data": data,
    });
    match api.emit(id, &event).await {
        Ok(v) => {
            println!("{}", v["id"].as_str().unwrap_or_default());
            0
        }
        Err(e) => fail(e),
    }
}

/// The `status` of a build or stage view.
fn status_of(v: &Value) -> Option<kiln_domain::Status> {
    serde_json::from_value(v["status"].clone()).ok()
}
