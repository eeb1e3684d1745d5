//! DNS-01 records by RFC 2136 UPDATE signed with TSIG.
//!
//! - [`update`] sends one UPDATE and reads its answer.
//! - [`batch`] coalesces the records of concurrent enrolments into fewer UPDATEs.
//! - [`ledger`] notes every record before it is added, so a sweeper removes what a crash left.

pub mod batch;
pub mod ledger;
pub mod update;
