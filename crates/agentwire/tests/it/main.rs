//! Integration tests: real relays on 127.0.0.1 port 0, real WebSocket
//! clients, and the real `agentwire` binary. One test binary, shared fixtures
//! in `util`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod chaos;
mod cli_agents;
mod cli_bridge;
mod cli_connect;
mod cli_delivery;
mod cli_directory;
mod cli_files;
mod cli_hooks;
mod cli_mcp;
mod cli_pairing;
mod cli_serve;
mod cli_tasks;
mod cluster;
mod faults;
mod hostile_relay;
mod library;
mod local_user;
#[path = "../../../bench/src/pg.rs"]
#[allow(dead_code)]
mod pg_server;
mod readme;
mod relay_auth;
mod relay_client;
mod relay_delivery;
mod relay_directory;
mod relay_garbage;
mod relay_limits;
mod relay_process;
mod util;
