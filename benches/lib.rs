//! Shared helpers for the benchmarks (machine peak, FLOP counts).
