//! Strongbox server: storage, barrier, domain services and the HTTPS API.
//!
//! Layers, each a module the next one up builds on:
//! [`storage`] (untrusted ordered bytes) → [`barrier`] (the only code touching
//! `aes-gcm`/`hkdf`) → [`service`] (keys, secrets, rotation policies) → [`api`] (axum,
//! the only layer that knows HTTP status codes).

pub mod api;
pub mod backup;
pub mod barrier;
pub mod clock;
mod error;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;

pub use error::{Error, Result};
