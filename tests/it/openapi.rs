//! The OpenAPI document: it describes exactly the routes the server serves, validates as OpenAPI
//! 3.1, and holds against the live server under schemathesis (every check, 0 failures).

use crate::common::TestApp;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// The Python venv `ops/test` makes with schemathesis and openapi-spec-validator.
pub fn venv_bin(tool: &str) -> String {
    let dir = std::env::var("BRIDGE_TEST_SCHEMATHESIS_VENV")
        .unwrap_or_else(|_| format!("{}/target/schemathesis-venv", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/bin/{tool}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} does not exist: run ops/test (it creates the venv from tests/schemathesis/requirements.txt)"
    );
    path
}

async fn document(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/api/bridge/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_served() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");

    let served: BTreeSet<(String, String)> =
        wazion_bridge::http::v1::routes().iter().map(|r| (r.method.as_str().to_lowercase(), format!("/v1{}", r.path))).collect();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (method.clone(), path.clone())))
        .collect();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the document does not describe"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented operations the server does not serve"
    );

    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} repeats");
            assert!(id.chars().next().unwrap().is_ascii_lowercase() && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
            // Every `{name}` of the path is a declared, required path parameter.
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path" && p["required"] == true)
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: BTreeSet<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
            let responses = operation["responses"].as_object().unwrap();
            if id != "getOpenApiDocument" {
                let security = operation["security"].as_array().unwrap();
                assert!(security.contains(&serde_json::json!({"bearer": []})), "{id}");
                assert!(security.contains(&serde_json::json!({"bridge_key": []})), "{id}");
                for status in ["401", "429", "500"] {
                    assert!(responses.contains_key(status), "{id} does not document {status}");
                }
            }
            if operation.get("requestBody").is_some() {
                assert!(responses.contains_key("400") && responses.contains_key("413"), "{id}: body errors");
            }
        }
    }
    // Request bodies say which fields are required: the published contract of sending.
    let send = &doc["components"]["schemas"]["SendRequest"];
    assert_eq!(send["required"], serde_json::json!(["line_id", "to", "message"]));
    assert_eq!(send["additionalProperties"], false);
    assert_eq!(
        doc["components"]["schemas"]["ArchivePolicy"]["enum"],
        serde_json::json!(["never", "always", "preserve_if_previously_archived"])
    );
    assert_eq!(doc["components"]["schemas"]["MessageText"]["maxLength"], 4096);
    assert_eq!(doc["components"]["securitySchemes"]["bridge_key"]["name"], "X-Bridge-Key");

    // The document is valid OpenAPI 3.1, by the reference validator.
    let path = app.db.scratch_file("openapi.json", &serde_json::to_vec_pretty(&doc).unwrap());
    let out = tokio::process::Command::new(venv_bin("openapi-spec-validator")).arg(&path).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "not valid OpenAPI 3.1: {}", said.split(" within {").next().unwrap_or_default());

    crate::common::redactions().bind(|| insta::assert_json_snapshot!("document", doc));
    app.shutdown().await;
}

/// schemathesis, as a new user would run it: the live server, a real key of an account with a
/// connected sim line, every check and every phase. It must find nothing.
#[tokio::test]
async fn schemathesis_finds_nothing_against_the_live_server() {
    let app = TestApp::spawn_with(|c| {
        // Webhook URLs of generated hosts are taken without resolving them, and no request of
        // the fuzzer is turned away by a rate limit meant for tenants.
        c.allow_private_urls = true;
        c.rate_limits.api_key.per_second = 100_000.0;
        c.rate_limits.api_key.burst = 100_000;
        c.rate_limits.sandbox_inbound.per_second = 100_000.0;
        c.rate_limits.sandbox_inbound.burst = 100_000;
        c.rate_limits.webhook_test.per_second = 100_000.0;
        c.rate_limits.webhook_test.burst = 100_000;
        c.webhooks.timeout_ms = 500;
    })
    .await;
    let (_, _, key) = app.account("business").await;
    let line = app.connected_line(&key, "+34600000801").await;
    // Logout, disconnect and fault act on a line of their own, so the other operations keep a
    // connected line to work on.
    let spare = app.connected_line(&key, "+34600000802").await;
    let (_, chat) = app
        .post(&key, &format!("/v1/sandbox/lines/{line}/inbound"), serde_json::json!({"from": "+34600000803", "message": "hola"}))
        .await;
    let message = chat["message_id"].as_str().unwrap().to_owned();
    let config = format!(
        r#"
# Generated by tests/it/openapi.rs for one run.
base-url = "{base}/api/bridge"
headers = {{ Authorization = "Bearer {key}" }}
max-failures = 50
[generation]
max-examples = {examples}
[parameters]
"line_id" = "{line}"
"body.line_id" = "{line}"
"query.line_id" = "{line}"
"query.phone" = "+34600000803"

# Bodies that name a message of a chat (to quote, react to, mark read or receive a reaction):
# whether a message with that id exists is not something a schema can say, so a well-formed body
# naming none is a validation_error (400), as the published API answers it.
[[operations]]
include-operation-id = ["replyMessage", "reactMessage", "markRead", "sandboxInbound"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "429"]
parameters = {{ "body.quoted_message_id" = "{message}", "body.message_id" = "{message}" }}

[[operations]]
include-operation-id = ["logoutLine", "sandboxDisconnect", "sandboxScan", "sandboxFault"]
parameters = {{ "line_id" = "{spare}" }}
"#,
        base = app.base,
        examples = std::env::var("BRIDGE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into()),
    );
    let config = app.db.scratch_file("schemathesis.toml", config.as_bytes());
    let out = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::process::Command::new(venv_bin("st"))
            // Its cache of crashes goes in this test's scratch directory, not the work tree.
            .current_dir(std::path::Path::new(&config).parent().unwrap())
            .args(["--config-file", &config, "run", &app.url("/api/bridge/v1/openapi.json"), "--checks", "all"])
            .args(["--phases", "examples,coverage,fuzzing,stateful", "--no-color", "--seed", "1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finishes within 15 minutes")
    .unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    assert!(report.contains("No issues found") || report.contains("passed"), "{report}");
    app.shutdown().await;
}
