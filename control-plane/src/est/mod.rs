//! EST (RFC 7030) behind the edge filter: the control plane's internal enrolment API.

pub mod api;
