//! The pure domain of WAzion Bridge.
//!
//! Ids, value types, commands, events and aggregates. Nothing here performs I/O: aggregates *decide*
//! which events a command produces from their current state, and *evolve* by folding events. The
//! server loads state, calls `decide`, and appends the resulting events to the log.

pub mod account;
pub mod aggregate;
pub mod api_key;
pub mod billing;
pub mod chat;
pub mod chat_id;
pub mod console_user;
pub mod event;
pub mod ids;
pub mod line;
pub mod message;
pub mod phone;
pub mod plan;
pub mod webhook;
pub mod webhook_delivery;

pub use aggregate::Aggregate;
pub use event::{DomainEvent, EventDecodeError};
