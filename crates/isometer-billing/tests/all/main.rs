//! Billing tests against a real ClickHouse server.

mod golden;
