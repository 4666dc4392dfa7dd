//! The `rmcp` client, as an agent uses it: connect with an API key, call tools, read their bodies.

use super::TestApp;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::{ClientLifecycleMode, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientServiceExt, RoleClient};
use serde_json::Value;

#[derive(Clone, Default)]
pub struct Agent;

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }
}

pub type Client = RunningService<RoleClient, Agent>;

/// An initialized MCP session with the server at `/api/bridge/mcp`, authenticated with `key`.
pub async fn connect(app: &TestApp, key: &str) -> Client {
    // The client's reqwest has no TLS provider of its own (see Cargo.toml); it takes this one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = StreamableHttpClientTransportConfig::with_uri(app.url("/api/bridge/mcp")).auth_header(key.to_owned());
    Agent
        .serve_with_lifecycle(StreamableHttpClientTransport::from_config(config), ClientLifecycleMode::Initialize)
        .await
        .expect("the MCP client initializes")
}

/// Call `tool`; a protocol failure panics (a business error is a result with `isError`).
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone());
    client.call_tool(params).await.unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The JSON body of a result (the same as the REST body).
pub fn body(result: &CallToolResult) -> Value {
    let text = result.content[0].as_text().expect("a text result").text.clone();
    serde_json::from_str(&text).unwrap()
}
