//! The environment of steps and services. Event data reaches them only as variables (and
//! a JSON file), never spliced into command text.

use kiln_domain::event::CloudEvent;
use kiln_domain::secret::SecretName;
use serde_json::Value;
use std::collections::BTreeMap;

/// `KILN_EVENT_<FIELD>` for each top-level field of the event's data object: the field
/// uppercased with every other character than ASCII letters and digits turned into `_`;
/// strings raw, other values as compact JSON.
pub(crate) fn event_vars(event: &CloudEvent) -> Vec<(String, String)> {
    let Value::Object(map) = &event.data else { return Vec::new() };
    map.iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            let name: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .collect();
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("KILN_EVENT_{name}"), value)
        })
        .collect()
}

/// Layers of variables, later ones winning. Variables a process cannot receive (a NUL
/// byte, `=` in the name, an empty name) are left out with a warning.
pub(crate) fn layered<'a>(
    layers: impl IntoIterator<Item = &'a [(String, String)]>,
    warnings: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut map = BTreeMap::new();
    for layer in layers {
        for (k, v) in layer {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                warnings
                    .push(format!("environment variable {:?} cannot be passed to a process: left out", k));
                continue;
            }
            map.insert(k.clone(), v.clone());
        }
    }
    map.into_iter().collect()
}

pub(crate) fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The environment layers of a stage; a step's or service's own variables go over the
/// pipeline's and stage's (which go over the policy's neutral ones), under the event's and
/// Kiln's.
pub(crate) struct Env {
    pub base: [Vec<(String, String)>; 3],
    pub event_vars: Vec<(String, String)>,
    pub fixed: Vec<(String, String)>,
    /// The stage's delivered secrets; each process gets those it declares.
    pub secrets: BTreeMap<SecretName, String>,
}

impl Env {
    /// A secret goes over the `env` layers (a declared secret is what the step asked for)
    /// and under Kiln's own variables (secret names cannot start with `KILN_`).
    pub fn layered(
        &self,
        own: &[(String, String)],
        declared: &[SecretName],
        fixed: &[(String, String)],
        warnings: &mut Vec<String>,
    ) -> Vec<(String, String)> {
        let [neutral, pipeline, stage] = &self.base;
        let secrets: Vec<(String, String)> =
            declared.iter().filter_map(|n| self.secrets.get(n).map(|v| (n.to_string(), v.clone()))).collect();
        layered(
            [&neutral[..], &pipeline[..], &stage[..], own, &secrets[..], &self.event_vars[..], fixed],
            warnings,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_domain::BuildId;
    use serde_json::json;

    #[test]
    fn event_fields_become_variables() {
        let e = CloudEvent::new(
            "coin",
            "test",
            &BuildId::new("b"),
            json!({"content": "heads", "n": 5, "a-b.c": {"x": [1]}, "x": "$(id)", "": 1}),
        );
        let mut v = event_vars(&e);
        v.sort();
        assert_eq!(
            v,
            vec![
                ("KILN_EVENT_A_B_C".into(), r#"{"x":[1]}"#.into()),
                ("KILN_EVENT_CONTENT".into(), "heads".into()),
                ("KILN_EVENT_N".into(), "5".into()),
                ("KILN_EVENT_X".into(), "$(id)".into()),
            ]
        );
    }

    #[test]
    fn layers_override_and_skip_bad_names() {
        let a = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "1".to_string())];
        let b = vec![("A".to_string(), "2".to_string()), ("X=Y".to_string(), "1".to_string())];
        let c = vec![("C".to_string(), "nul\0".to_string())];
        let mut w = Vec::new();
        let env = layered([a.as_slice(), b.as_slice(), c.as_slice()], &mut w);
        assert_eq!(env, vec![("A".into(), "2".into()), ("B".into(), "1".into())]);
        assert_eq!(w.len(), 2);
    }
}
