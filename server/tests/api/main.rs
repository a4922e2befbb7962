//! Integration tests over real HTTPS on port 0, in one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod access;
mod audit;
mod backup;
mod cli;
mod common;
mod dbs;
mod delegation;
mod durability;
mod edge;
mod errors;
mod gateway;
mod keys;
mod kms_crypto;
mod pg_cluster;
mod policies;
mod process;
mod rotation;
mod rotation_access_key;
mod rotation_db;
mod rotation_ssh;
mod rotation_webhook;
mod route_table;
mod sdk_cache;
mod secrets;
