//! WAzion Bridge: an event-sourced WhatsApp API gateway. The binary is `bridge` (see `cli`).

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod consistency;
pub mod console;
pub mod db;
pub mod dispatch;
pub mod engine;
pub mod http;
pub mod key_use;
pub mod maintenance;
pub mod mcp;
pub mod media;
pub mod net;
pub mod node;
pub mod queries;
pub mod secrets;
pub mod server;
pub mod store;
pub mod usage;
pub mod webhook_delivery;
