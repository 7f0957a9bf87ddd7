//! The image catalog (`images:`): names, providers, and the stage that builds each.

use super::Checker;
use crate::compile::Pos;
use crate::compile::tree::Node;
use crate::ids::StageName;
use crate::plan::ImageSpec;
use std::collections::HashMap;

const IMAGE_KEYS: &[&str] = &["name", "providers", "built-by"];

/// An image as checked, with where its `built-by` was written.
pub(super) struct ImageDraft {
    pub(super) spec: ImageSpec,
    pub(super) built_by_pos: Option<Pos>,
}

impl Checker {
    pub(super) fn images(&mut self, node: &Node) -> Vec<ImageDraft> {
        let Some(items) = self.seq(node, "\"images\"") else { return Vec::new() };
        let mut images: Vec<ImageDraft> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for item in items {
            let Some(entries) = self.map(item, "image") else { continue };
            let f = self.fields(entries, "image", IMAGE_KEYS);
            let mut name = None;
            match f.value("name") {
                None => self.missing(&f, "name", item.pos, "image is missing \"name\""),
                Some(v) => {
                    if let Some(text) = self.name_text(v, "\"name\"")
                        && self.check_name(v, text, "image")
                    {
                        if let Some(line) = lines.get(text) {
                            self.err(v.pos, format!("duplicate image \"{text}\" (first on line {line})"));
                        } else {
                            lines.insert(text.to_string(), v.pos.line);
                            name = Some(text.to_string());
                        }
                    }
                }
            }
            let who = name.as_ref().map_or_else(|| "image".to_string(), |n| format!("image \"{n}\""));
            let mut providers: Vec<String> = Vec::new();
            match f.value("providers") {
                None => self.missing(&f, "providers", item.pos, format!("{who} is missing \"providers\"")),
                Some(v) => {
                    if let Some(list) = self.seq(v, "\"providers\"") {
                        if list.is_empty() {
                            self.err(v.pos, format!("{who} has no providers: list at least one"));
                        }
                        let mut first: HashMap<&str, usize> = HashMap::new();
                        for p in list {
                            let Some(provider) = self.name_text(p, "a provider") else { continue };
                            if !self.check_name(p, provider, "provider") {
                                continue;
                            }
                            if let Some(line) = first.get(provider) {
                                self.err(
                                    p.pos,
                                    format!(
                                        "duplicate provider \"{provider}\" in {who} (first on line {line})"
                                    ),
                                );
                                continue;
                            }
                            first.insert(provider, p.pos.line);
                            providers.push(provider.to_string());
                        }
                    }
                }
            }
            let mut built_by = None;
            let mut built_by_pos = None;
            if let Some(v) = f.value("built-by")
                && let Some(stage) = self.name_text(v, "\"built-by\"")
            {
                built_by = Some(StageName::new(stage));
                built_by_pos = Some(v.pos);
            }
            if let Some(name) = name {
                images.push(ImageDraft { spec: ImageSpec { name, providers, built_by }, built_by_pos });
            }
        }
        images
    }
}
