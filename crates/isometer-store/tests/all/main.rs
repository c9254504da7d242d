//! Store tests against a real ClickHouse server.

mod cluster;
mod faults;
mod kpi;
mod managed;
mod migrations;
mod writer;
