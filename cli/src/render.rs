//! How builds look on a terminal: the summary table, drawn from the build's view
//! ([`BuildView`], what the API answers), so local and remote builds print the same.

use kiln_api::views::{BuildView, ImageRecordView};
use kiln_domain::Status;
use kiln_domain::status::ImageStatus;

pub fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

fn or_dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

/// The summary table printed after a run and by `kiln status`.
pub fn summary(b: &BuildView) -> String {
    let mut rows: Vec<[String; 5]> = vec![["STAGE", "STEP", "STATUS", "EXIT", "DURATION"].map(String::from)];
    for s in &b.stages {
        rows.push([
            s.name.clone(),
            String::new(),
            s.status.to_string(),
            String::new(),
            or_dash(s.duration_ms, secs),
        ]);
        for t in &s.steps {
            rows.push([
                String::new(),
                t.name.clone(),
                t.status.to_string(),
                or_dash(t.exit_code, |c| c.to_string()),
                or_dash(t.duration_ms, secs),
            ]);
        }
    }
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let took = b.duration_ms.map(|ms| format!(" in {}", secs(ms))).unwrap_or_default();
    let mut out = format!("build {} {}{took}\n", b.id, b.status);
    if b.status != Status::Succeeded
        && let Some(reason) = &b.reason
    {
        out.push_str(&format!("reason: {reason}\n"));
    }
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for s in b.stages.iter().filter(|s| s.status != Status::Succeeded) {
        if let Some(reason) = &s.reason {
            out.push_str(&format!("  {}: {reason}\n", s.name));
        }
    }
    if !b.images.is_empty() {
        out.push_str("images:\n");
        for i in &b.images {
            // With the build's catalog results (`BuildView::attach_images`): a line per provider.
            let results = i.results.as_deref().unwrap_or_default();
            if results.is_empty() {
                out.push_str(&format!("  {} [{}]\n", i.name, i.providers.join(", ")));
                continue;
            }
            let lines: Vec<[String; 3]> = i
                .providers
                .iter()
                .map(|p| match results.iter().find(|r| r.provider == *p) {
                    Some(r) => [
                        format!("{}/{p}", i.name),
                        image_cell(r),
                        r.error.clone().or_else(|| r.uri.clone()).unwrap_or_default(),
                    ],
                    None => [format!("{}/{p}", i.name), "-".into(), "not built by this build".into()],
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
pub fn exit_code(b: &BuildView) -> u8 {
    if b.status == Status::Succeeded { 0 } else { 1 }
}

/// A catalog record as a cell: `complete 100%`, `building 40%`, `queued`, `failed`.
pub fn image_cell(r: &ImageRecordView) -> String {
    match r.status {
        ImageStatus::Building | ImageStatus::Pushing | ImageStatus::Complete => {
            format!("{} {}%", r.status, r.percent)
        }
        ImageStatus::Queued | ImageStatus::Failed => r.status.to_string(),
    }
}
