//! Infrastructure every layer shares, written once: the clock, random tokens, PEM files, the
//! HTTPS client, the bearer-token check, the Redis connection (one node or through Sentinel). Nothing here knows about enrolment.

pub mod clock;
pub mod https;
pub mod pem_file;
pub mod redis_topology;
pub mod secret;
pub mod token;
