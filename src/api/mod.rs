//! What REST (`crate::http`) and MCP (`crate::mcp`) share: the error type and its codes, the
//! authenticated tenant, JSON body parsing, the `Idempotency-Key`, the NUL check, rate limits and
//! request ids. Neither front door imports the other; both import this.

pub mod error;
pub mod fields;
pub mod idempotency;
pub mod json;
pub mod nul;
pub mod rate_limit;
pub mod request_id;
pub mod schemas;
pub mod tenant;
