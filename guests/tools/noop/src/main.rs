//! The trivial tool: starts, does nothing, exits 0. Benchmarks use it to measure what an
//! attempt costs before the tool does any work.

fn main() {}
