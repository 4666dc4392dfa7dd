//! The integration tests, one binary: the real server on a real PostgreSQL, over real HTTP.
//! One module a subject; `common` is the harness (a fresh database per test, the server on port 0,
//! the `bridge` binary as a process, a webhook receiver, a headless browser).

mod common;

mod api_auth;
mod audit;
mod billing;
mod browser_harness;
mod cli;
mod cluster;
mod console_activity;
mod console_auth;
mod console_browser;
mod console_explorer;
mod console_journey;
mod console_keys;
mod console_lines;
mod console_usage;
mod console_webhooks;
mod conversation_commands;
mod deploy;
mod dispatch_recovery;
mod event_log;
mod faults;
mod hostile_input;
mod isolation;
mod limits;
mod lines;
mod mcp;
mod media;
mod messaging;
mod node_safety;
mod openapi;
mod projection_runtime;
mod reading;
mod rebuild;
mod replica;
mod schema_evolution;
mod serve;
mod webhook_delivery;
mod webhooks;
mod whatsapp_engine;
mod whatsapp_store;
