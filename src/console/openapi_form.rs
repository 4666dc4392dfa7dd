//! The form an OpenAPI operation is filled in with, read from our published document: one field
//! per parameter (path, query, header) and per top-level property of a JSON request body, each
//! with the kind of input that suits its schema. Bodies that are not one object (a choice of
//! shapes) are typed as JSON, starting from the document's example. Pure: the explorer page
//! renders what this returns and its script turns the fields into a request.

use serde_json::Value;

/// One operation of the document, ready to be shown as a form.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    /// Upper case: `GET`, `POST`…
    pub method: String,
    pub path: String,
    pub summary: String,
    pub tag: String,
    pub fields: Vec<Field>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The operation takes no body.
    None,
    /// A JSON object made of the `body` fields.
    Fields,
    /// JSON typed whole, starting from this example.
    Raw(String),
}

impl Body {
    /// How the page's script sends the body: `none`, `fields` or `raw`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Body::None => "none",
            Body::Fields => "fields",
            Body::Raw(_) => "raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// `path`, `query`, `header` or `body`.
    pub location: &'static str,
    pub name: String,
    /// `text`, `integer`, `number`, `boolean`, `choice` or `json` (arrays, objects, alternatives).
    pub kind: &'static str,
    pub required: bool,
    pub description: String,
    /// The values of a `choice`.
    pub options: Vec<String>,
    /// A value to show as the input's placeholder.
    pub example: String,
}

impl Field {
    /// The input's `id`, unique in the form.
    pub fn input_id(&self) -> String {
        format!("f-{}-{}", self.location, self.name)
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation of the document, by tag, then path, then method.
pub fn operations(doc: &Value) -> Vec<Operation> {
    let mut all: Vec<Operation> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| METHODS.iter().filter_map(move |m| item.get(*m).map(|op| operation(doc, path, m, item, op))))
        .collect();
    all.sort_by(|a, b| (&a.tag, &a.path, &a.method).cmp(&(&b.tag, &b.path, &b.method)));
    all
}

/// The server path the document's paths are relative to (`servers[0].url`).
pub fn base(doc: &Value) -> &str {
    doc["servers"][0]["url"].as_str().unwrap_or("")
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().trim().to_owned()
}

fn operation(doc: &Value, path: &str, method: &str, item: &Value, op: &Value) -> Operation {
    // Parameters of the path item apply to each of its operations (the operation's own win).
    let params = item["parameters"].as_array().into_iter().flatten().chain(op["parameters"].as_array().into_iter().flatten());
    let mut fields: Vec<Field> = Vec::new();
    for param in params {
        let param = resolve_ref(doc, param);
        let location = match param["in"].as_str() {
            Some("path") => "path",
            Some("query") => "query",
            Some("header") => "header",
            _ => continue,
        };
        let name = text(&param["name"]);
        fields.retain(|f| !(f.location == location && f.name == name));
        let (schema, _) = resolve(doc, &param["schema"]);
        fields.push(field(
            location,
            name,
            schema,
            param["required"].as_bool().unwrap_or(location == "path"),
            &param["description"],
            &param["example"],
        ));
    }
    let body = match op["requestBody"]["content"].get("application/json") {
        None => Body::None,
        Some(content) => {
            let (schema, _) = resolve(doc, &content["schema"]);
            match schema["properties"].as_object() {
                Some(properties) => {
                    let required: Vec<&str> =
                        schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    for (name, property) in properties {
                        let (resolved, _) = resolve(doc, property);
                        let described = if property["description"].is_string() { property } else { described_in(property) };
                        fields.push(field(
                            "body",
                            name.clone(),
                            resolved,
                            required.contains(&name.as_str()),
                            &described["description"],
                            &schema["example"][name],
                        ));
                    }
                    Body::Fields
                }
                None => {
                    Body::Raw(serde_json::to_string_pretty(example_of(doc, &content["schema"])).unwrap_or_else(|_| "{}".into()))
                }
            }
        }
    };
    Operation {
        id: text(&op["operationId"]),
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        summary: text(&op["summary"]),
        tag: op["tags"][0].as_str().unwrap_or("other").to_owned(),
        fields,
        body,
    }
}

fn field(location: &'static str, name: String, schema: &Value, required: bool, description: &Value, example: &Value) -> Field {
    let description = description.as_str().or_else(|| schema["description"].as_str()).unwrap_or_default().trim().to_owned();
    let options: Vec<String> =
        schema["enum"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    let kind = if !options.is_empty() {
        "choice"
    } else {
        // `type` is a name, or a list of them with "null" among (an optional value).
        let named = schema["type"]
            .as_str()
            .or_else(|| schema["type"].as_array().into_iter().flatten().filter_map(Value::as_str).find(|t| *t != "null"));
        match named {
            Some("string") => "text",
            Some("integer") => "integer",
            Some("number") => "number",
            Some("boolean") => "boolean",
            _ => "json",
        }
    };
    let example = match example {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Field { location, name, kind, required, description, options, example }
}

/// A `$ref` to a component, followed (once per level); anything else as it is.
fn resolve_ref<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/")) {
        Some(path) => path.split('/').fold(&doc["components"], |at, part| &at[part]),
        None => schema,
    }
}

/// The schema a value must match, with references followed and `null` alternatives taken away
/// (`oneOf: [null, X]`, `type: [T, "null"]`); and whether `null` was one of them.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> (&'a Value, bool) {
    let schema = resolve_ref(doc, schema);
    if let Some(choices) = schema["oneOf"].as_array() {
        let not_null: Vec<&Value> = choices.iter().filter(|c| c["type"] != "null").collect();
        if let [only] = not_null.as_slice() {
            return (resolve(doc, only).0, not_null.len() < choices.len());
        }
    }
    (schema, schema["type"].as_array().is_some_and(|types| types.iter().any(|t| t == "null")))
}

/// Where a property's description is when it is not on the property itself (`oneOf: [null, {$ref, description}]`).
fn described_in(property: &Value) -> &Value {
    property["oneOf"].as_array().into_iter().flatten().find(|c| c["description"].is_string()).unwrap_or(property)
}

/// The example of a body schema: its own, else the first alternative's, else `{}`.
fn example_of<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let schema = resolve_ref(doc, schema);
    if !schema["example"].is_null() {
        return &schema["example"];
    }
    match schema["oneOf"].as_array().and_then(|c| c.iter().find(|c| c["type"] != "null")) {
        Some(first) => example_of(doc, first),
        None => EMPTY.get_or_init(|| Value::Object(Default::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "servers": [{"url": "/api/bridge"}],
            "paths": {
                "/v1/things/{id}": {
                    "post": {
                        "operationId": "makeThing", "summary": "Make a thing", "tags": ["things"],
                        "parameters": [
                            {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                            {"name": "limit", "in": "query", "schema": {"type": "integer"}, "description": "How many"},
                            {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                        ],
                        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}
                    },
                    "get": {"operationId": "getThing", "tags": ["things"]}
                },
                "/v1/shapes": {
                    "post": {
                        "operationId": "makeShape", "tags": ["shapes"],
                        "requestBody": {"content": {"application/json": {"schema": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Shape"}]}}}}
                    }
                }
            },
            "components": {"schemas": {
                "Thing": {
                    "type": "object", "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "description": "Its name"},
                        "color": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Color", "description": "Its color"}]},
                        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                        "urgent": {"type": ["boolean", "null"]}
                    },
                    "example": {"name": "box", "tags": ["a"]}
                },
                "Color": {"type": "string", "enum": ["red", "blue"]},
                "Shape": {"oneOf": [{"$ref": "#/components/schemas/Square"}, {"$ref": "#/components/schemas/Circle"}], "example": {"side": 2}},
                "Square": {"type": "object", "properties": {"side": {"type": "number"}}},
                "Circle": {"type": "object", "properties": {"radius": {"type": "number"}}}
            }}
        })
    }

    #[test]
    fn parameters_and_body_properties_become_fields_of_the_kind_their_schema_asks_for() {
        let doc = doc();
        let ops = operations(&doc);
        assert_eq!(ops.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["makeShape", "getThing", "makeThing"]);
        let make = &ops[2];
        assert_eq!((make.method.as_str(), make.path.as_str(), make.body.as_str()), ("POST", "/v1/things/{id}", "fields"));
        let shown: Vec<(&str, &str, &str, bool)> =
            make.fields.iter().map(|f| (f.location, f.name.as_str(), f.kind, f.required)).collect();
        assert_eq!(
            shown,
            [
                ("path", "id", "text", true),
                ("query", "limit", "integer", false),
                ("header", "Idempotency-Key", "text", false),
                ("body", "name", "text", true),
                ("body", "color", "choice", false),
                ("body", "tags", "json", false),
                ("body", "urgent", "boolean", false),
            ]
        );
        let color = &make.fields[4];
        assert_eq!((color.options.clone(), color.description.as_str()), (vec!["red".to_owned(), "blue".to_owned()], "Its color"));
        assert_eq!((make.fields[3].example.as_str(), make.fields[5].example.as_str()), ("box", r#"["a"]"#));
        assert_eq!(make.fields[1].description, "How many");
        assert_eq!(make.fields[0].input_id(), "f-path-id");
        assert_eq!(base(&doc), "/api/bridge");
    }

    #[test]
    fn a_body_of_alternatives_is_typed_as_json_from_its_example_and_no_body_is_none() {
        let doc = doc();
        let ops = operations(&doc);
        assert_eq!(ops[0].body, Body::Raw("{\n  \"side\": 2\n}".into()));
        assert!(ops[0].fields.is_empty());
        assert_eq!(ops[1].body, Body::None);
    }
}
