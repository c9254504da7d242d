//! Store tests against a real ClickHouse server.

mod managed;
mod migrations;
mod writer;
