//! BRSKI (RFC 8995): the registrar's voucher exchange with the MASA, the status reports, and the
//! cloud registrar (draft-ietf-anima-brski-cloud) that redirects a pledge to its owner.

pub mod answer;
pub mod cloud;
pub mod error;
pub mod masa_client;
pub mod registrar;
pub mod routes;
pub mod status;
