//! The OpenAPI 3.0 document, generated from [`ROUTES`](crate::routes::ROUTES).

use crate::routes::{Access, Content, ParamIn, ROUTES};
use serde_json::{Map, Value, json};

fn content(c: Content) -> Option<Value> {
    match c {
        Content::None => None,
        Content::Json => Some(json!({ "application/json": { "schema": { "type": "object" } } })),
        Content::Yaml => Some(json!({ "application/yaml": { "schema": { "type": "string" } } })),
        Content::Bytes => Some(
            json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }),
        ),
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(&part.replace(['{', '}'], "").replace(['.', '-'], "_"));
    }
    id
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut responses = Map::new();
        let (status, body, description) = r.ok;
        let mut ok = json!({ "description": description });
        if let Some(c) = content(body) {
            ok["content"] = c;
        }
        responses.insert(status.to_string(), ok);
        for (status, description) in r.errors {
            responses.insert(status.to_string(), error_response(description));
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": operation_id(r.method.as_str(), r.path),
            "parameters": r.params.iter().map(|p| json!({
                "name": p.name,
                "in": if p.at == ParamIn::Path { "path" } else { "query" },
                "required": p.at == ParamIn::Path,
                "description": p.description,
                "schema": { "type": if p.integer { "integer" } else { "string" } },
            })).collect::<Vec<_>>(),
        });
        if r.access == Access::Open {
            op["security"] = json!([]);
        } else {
            responses.insert("401".into(), error_response("no token, or not a valid one"));
            responses.insert("403".into(), error_response("the token may not use this route or build"));
        }
        if let Some(c) = content(r.body) {
            op["requestBody"] = json!({ "required": true, "content": c });
        }
        op["responses"] = Value::Object(responses);
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Kiln API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Kiln, a serverless build system: builds, logs, events and the image catalog.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["message", "details"],
                    "properties": {
                        "message": { "type": "string" },
                        "details": { "type": "array", "items": {} },
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_path_params() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = r
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{}", r.path);
        }
        let mut ids: Vec<String> = ROUTES.iter().map(|r| operation_id(r.method.as_str(), r.path)).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }
}
