//! Scenario tests of the SQL layer, on the in-memory engine.
//!
//! One test binary (so one link), one module per theme. Each scenario
//! starts a fresh store through [`Harness`].

mod ddl;
mod describe;
mod dml;
mod errors;
mod families;
mod fuzz;
mod harness;
mod privileges;
mod select;
mod waits;
