//! The ACME client (RFC 8555): the account, orders, DNS-01 challenges, and RFC 9444
//! pre-authorisation of the parent domain where the CA offers it.

pub mod client;
pub mod issue;
pub mod jws;
pub mod preauth;
pub mod problem;
