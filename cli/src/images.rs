//! `kiln images`: the image catalog as a matrix (images × providers), from the data dir.

use crate::render::image_cell;
use kiln_api::views::{CatalogImageView, ImageList};
use std::path::Path;

/// `kiln images [--json]` on the data dir: exit 0, or 1 if it cannot be read.
pub async fn images(data_dir: &Path, json: bool) -> u8 {
    if !data_dir.is_dir() {
        eprintln!("kiln: no data dir at {} (run a pipeline with `kiln run` first)", data_dir.display());
        return 1;
    }
    let ports = match crate::local::open(data_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln: cannot read {}: {e}", data_dir.display());
            return 1;
        }
    };
    let catalog = match kiln_core::images::list_images(ports.state.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return 1;
        }
    };
    print_list(&ImageList::new(catalog), json);
    0
}

/// The catalog as JSON (the API's body, locally too) or as the matrix.
fn print_list(list: &ImageList, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
    } else {
        print!("{}", table(&list.images));
    }
}

/// The matrix: one row per image, one column per provider (`-`: no record), then the
/// errors of the failed cells.
pub fn table(catalog: &[CatalogImageView]) -> String {
    if catalog.is_empty() {
        return "no images in the catalog\n".to_string();
    }
    let mut providers: Vec<&str> =
        catalog.iter().flat_map(|i| i.providers.iter().map(|r| r.provider.as_str())).collect();
    providers.sort_unstable();
    providers.dedup();
    let mut rows: Vec<Vec<String>> =
        vec![std::iter::once("IMAGE").chain(providers.iter().copied()).map(String::from).collect()];
    let mut errors = Vec::new();
    for image in catalog {
        let mut row = vec![image.name.clone()];
        for p in &providers {
            match image.providers.iter().find(|r| r.provider == *p) {
                Some(r) => {
                    row.push(image_cell(r));
                    if let Some(e) = &r.error {
                        errors.push(format!("  {}/{}: {e} (build {})", image.name, p, r.build));
                    }
                }
                None => row.push("-".to_string()),
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if !errors.is_empty() {
        out.push_str("errors:\n");
        for e in errors {
            out.push_str(&e);
            out.push('\n');
        }
    }
    out
}

/// `kiln images --api`: the catalog from a Kiln API.
pub async fn remote(api: &kiln_api::client::ApiClient, json: bool) -> u8 {
    match api.images().await {
        Ok(list) => {
            print_list(&list, json);
            0
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            1
        }
    }
}

/// `kiln images build IMAGE`: build and push the providers that are missing or failed.
pub async fn build(api: &kiln_api::client::ApiClient, image: &str, providers: Vec<String>) -> u8 {
    let providers = (!providers.is_empty()).then_some(providers);
    match api.build_missing(image, providers).await {
        Ok(v) => {
            eprintln!("kiln: building {image} for {}", v.providers.join(", "));
            println!("{}", v.id);
            0
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_domain::BuildId;
    use kiln_domain::catalog::{ImageRecord, by_image};
    use kiln_domain::status::ImageStatus;

    fn rec(
        image: &str,
        provider: &str,
        status: ImageStatus,
        percent: u8,
        error: Option<&str>,
    ) -> ImageRecord {
        ImageRecord {
            image: image.into(),
            provider: provider.into(),
            status,
            percent,
            error: error.map(str::to_string),
            build: BuildId::new("b1"),
            uri: None,
            updated_ms: 0,
            version: 1,
        }
    }

    #[test]
    fn the_matrix_has_images_as_rows_and_providers_as_columns() {
        let catalog = ImageList::new(by_image(vec![
            rec("base-os", "gcp", ImageStatus::Building, 40, None),
            rec("base-os", "aws", ImageStatus::Complete, 100, None),
            rec("base-os", "azure", ImageStatus::Failed, 30, Some("quota exceeded")),
            rec("tools", "aws", ImageStatus::Queued, 0, None),
        ]))
        .images;
        assert_eq!(
            table(&catalog),
            "IMAGE    aws            azure   gcp\n\
             base-os  complete 100%  failed  building 40%\n\
             tools    queued         -       -\n\
             errors:\n  base-os/azure: quota exceeded (build b1)\n"
        );
        assert_eq!(table(&[]), "no images in the catalog\n");
    }
}
