//! How builds look on a terminal: the summary table, drawn from the build's JSON view
//! (`kiln_api::views::build_json`), so local and remote builds print the same.

use kiln_domain::catalog::ImageRecord;
use kiln_domain::status::ImageStatus;
use serde_json::Value;

pub fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_dash(v: &Value, f: impl Fn(&Value) -> String) -> String {
    if v.is_null() { "-".to_string() } else { f(v) }
}

fn duration(v: &Value) -> String {
    or_dash(v, |v| secs(v.as_u64().unwrap_or(0)))
}

/// The summary table printed after a run and by `kiln status`.
pub fn summary(b: &Value) -> String {
    let empty = Vec::new();
    let stages = b["stages"].as_array().unwrap_or(&empty);
    let mut rows: Vec<[String; 5]> = vec![["STAGE", "STEP", "STATUS", "EXIT", "DURATION"].map(String::from)];
    for s in stages {
        rows.push([
            text(&s["name"]),
            String::new(),
            text(&s["status"]),
            String::new(),
            duration(&s["duration_ms"]),
        ]);
        for t in s["steps"].as_array().unwrap_or(&empty) {
            rows.push([
                String::new(),
                text(&t["name"]),
                text(&t["status"]),
                or_dash(&t["exit_code"], text),
                duration(&t["duration_ms"]),
            ]);
        }
    }
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let status = text(&b["status"]);
    let took = b["duration_ms"].as_u64().map(|ms| format!(" in {}", secs(ms))).unwrap_or_default();
    let mut out = format!("build {} {status}{took}\n", text(&b["id"]));
    if status != "succeeded" && !b["reason"].is_null() {
        out.push_str(&format!("reason: {}\n", text(&b["reason"])));
    }
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for s in stages.iter().filter(|s| !s["reason"].is_null() && s["status"] != "succeeded") {
        out.push_str(&format!("  {}: {}\n", text(&s["name"]), text(&s["reason"])));
    }
    let images = b["images"].as_array().unwrap_or(&empty);
    if !images.is_empty() {
        out.push_str("images:\n");
        for i in images {
            let providers: Vec<String> =
                i["providers"].as_array().unwrap_or(&empty).iter().map(text).collect();
            // With the build's catalog results (`attach_images`): a line per provider.
            let results: Vec<ImageRecord> = serde_json::from_value(i["results"].clone()).unwrap_or_default();
            if results.is_empty() {
                out.push_str(&format!("  {} [{}]\n", text(&i["name"]), providers.join(", ")));
                continue;
            }
            let lines: Vec<[String; 3]> = providers
                .iter()
                .map(|p| match results.iter().find(|r| r.provider == *p) {
                    Some(r) => [
                        format!("{}/{p}", text(&i["name"])),
                        image_cell(r),
                        r.error.clone().or_else(|| r.uri.clone()).unwrap_or_default(),
                    ],
                    None => {
                        [format!("{}/{p}", text(&i["name"])), "-".into(), "not built by this build".into()]
                    }
                })
                .collect();
            let w: Vec<usize> =
                (0..2).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
            for [pair, cell, note] in &lines {
                let line = format!("  {pair:<w0$}  {cell:<w1$}  {note}", w0 = w[0], w1 = w[1]);
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// The exit code for a finished build: 0 if it succeeded, else 1.
pub fn exit_code(b: &Value) -> u8 {
    if b["status"] == "succeeded" { 0 } else { 1 }
}

/// A catalog record as a cell: `complete 100%`, `building 40%`, `queued`, `failed`.
pub fn image_cell(r: &ImageRecord) -> String {
    match r.status {
        ImageStatus::Building | ImageStatus::Pushing | ImageStatus::Complete => {
            format!("{} {}%", r.status, r.percent)
        }
        ImageStatus::Queued | ImageStatus::Failed => r.status.to_string(),
    }
}

/// Adds to each image of a build's JSON view (`"images": [{"name", "providers"}]`) its
/// `"results"`: the build's catalog record per provider (`kiln_core::images::build_images`).
pub fn attach_images(doc: &mut Value, records: &[ImageRecord]) {
    let Some(images) = doc.get_mut("images").and_then(Value::as_array_mut) else { return };
    for image in images {
        let name = image["name"].as_str().unwrap_or_default().to_string();
        let results: Vec<&ImageRecord> = records.iter().filter(|r| r.image == name).collect();
        image["results"] = serde_json::json!(results);
    }
}
