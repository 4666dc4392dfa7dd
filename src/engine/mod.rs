//! Session engines: the seam to WhatsApp. `sim` is the simulated network built into the server.

pub mod sim;
