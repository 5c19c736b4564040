//! Every integration test, in one binary: one link of the crate instead of
//! one per file. Each module is a file of tests; `common` is what they
//! share. `tests/hostile.rs` stays a binary of its own, as it bounds its
//! children's memory and CPU through `getrusage`, which counts every child
//! of the process.

mod common;

mod arazzo;
mod batch;
mod boundary;
mod broken;
mod canary;
mod cli;
mod contract;
mod daemon;
mod diff;
mod docs;
mod durable;
mod each;
mod faults;
mod flows;
mod graph;
mod interrupt;
mod layers;
mod lsp;
mod openapi;
mod otel;
mod page;
mod plan;
mod postgres;
mod real_http;
mod schema;
mod serve;
mod sim;
mod store;
mod test_command;
mod wait;
