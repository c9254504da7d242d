//! Store tests against a real ClickHouse server.

mod faults;
mod managed;
mod migrations;
mod writer;
