//! Prometheus metrics (text exposition at `/metrics`).
//!
//! Names other programs rely on (../shared/design.md): `estuary_enrollments_total{protocol,result}`
//! (also by EST operation in `estuary_enrollment_operations_total{protocol,operation,result}`),
//! `estuary_acme_orders_total{result}`, `estuary_dns_updates_total`, `estuary_cache_hits_total`,
//! `estuary_cache_misses_total`; plus the histogram `estuary_issuance_duration_seconds`.
//! `estuary_cache_rejected_total` counts cached chains that did not fit their CSR (key, name or
//! expiry; Redis is not trusted) and were dropped; each such look-up also counts as a miss.
//! `estuary_device_limited_total` counts new orders refused because the device had used up its
//! `enroll.max_orders_per_device` for the window (seed §8.1). The other limits (issue 13):
//! `estuary_ca_backoffs_total` counts back-offs started because the ACME CA answered
//! `rateLimited`, `estuary_ca_backoff_refused_total` the issuances refused while one held;
//! `estuary_fleet_limited_total` the issuances refused because `enroll.max_inflight_orders` ran
//! and `enroll.max_queued_orders` waited in the replica (or a wait outlasted
//! `acme.order_timeout_s`); `estuary_dns_queue_full_total` the DNS-01 requests refused because
//! `acme.dns_batch_max_queue` already waited for the DNS primary. `estuary_dns_swept_total`
//! counts leftover DNS-01 records the ledger sweeper removed, `estuary_dns_sweep_failures_total`
//! its removals that failed (each retried later, [`crate::ra::dns::ledger`]).
//!
//! For dashboards and alerts (deploy/grafana, deploy/prometheus): `estuary_issuance_failures_total{cause}`
//! counts failed issuances by what failed ([`IssuanceFailure`]); `estuary_acme_problems_total{type}`
//! the ACME problem documents the CA answered an order with, by RFC 8555 §6.7 type;
//! `estuary_dns_update_failures_total` the UPDATE messages the DNS primary refused or did not
//! answer; `estuary_redis_up` is 1 when Redis answered a PING at the last scrape (within a
//! deadline) and 0 otherwise; `estuary_cache_hit_remaining_seconds` is the lifetime a certificate
//! served from the cache had left. Label sets that a dashboard divides by are created at zero at
//! start, so every series exists before the first enrolment.
//! `estuary_ca_chain_refused_total` counts issued chains whose certificates after the end-entity
//! one were not its chain, so nothing was learned for `/cacerts` ([`crate::ra::chains`]).
//! `estuary_redis_unreplicated_total` counts certificates answered although fewer Redis replicas
//! than `redis.replica_acks` confirmed having them in time (the replica is down or lagging).
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Outcome of one enrolment request, as counted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EnrollResult {
    /// A new certificate was issued within the request.
    issued,
    /// The certificate came from the cache.
    cached,
    /// The request was answered 202.
    pending,
    /// The request was refused (4xx).
    rejected,
    /// Issuance failed or a dependency was down (5xx).
    failed,
}

/// Enrolment protocol label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    /// RFC 7030 EST.
    est,
    /// RFC 9930 TEAP over RADIUS.
    teap,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnrollLabels {
    protocol: Protocol,
    result: EnrollResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    protocol: Protocol,
    /// The EST operation (RFC 7030 §3.2.2 path segment).
    operation: String,
    result: EnrollResult,
}

/// Outcome of one ACME order.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OrderResult {
    /// The order produced a certificate.
    valid,
    /// The order failed.
    failed,
}

/// Why device orders use per-name DNS-01 instead of a pre-authorised parent (RFC 9444).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FallbackReason {
    /// The directory has no `newAuthz` (RFC 8555 §7.4.1), e.g. Pebble, Boulder.
    no_new_authz,
    /// The directory does not announce `meta.subdomainAuthAllowed` (RFC 9444 §4.4).
    no_subdomain_auth,
    /// newAuthz refused or ignored `subdomainAuthAllowed`.
    subdomain_refused,
    /// newOrder refused `ancestorDomain`.
    ancestor_refused,
    /// Pre-authorisation is switched off (`acme.preauthorize = false`).
    disabled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    reason: FallbackReason,
}

/// What made one issuance fail, as counted in `estuary_issuance_failures_total{cause}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum IssuanceFailure {
    /// The CA did not answer, answered 5xx, or its answer was not ACME.
    ca_unavailable,
    /// The CA answered `rateLimited`, or a back-off after one held.
    ca_rate_limited,
    /// The CA refused the order with a problem document (`estuary_acme_problems_total` has its type).
    ca_rejected,
    /// The CA could not validate the DNS-01 record.
    challenge_failed,
    /// The order or the whole issuance outlasted its deadline.
    deadline,
    /// The DNS primary refused or did not answer an UPDATE.
    dns,
    /// Redis failed during the issuance.
    redis,
    /// The CA's certificate or challenges were unusable.
    bad_answer,
    /// The configuration asks for what the CA does not offer (an ACME profile it does not
    /// advertise).
    config,
}

impl IssuanceFailure {
    /// Every value, to create the series at zero.
    pub const ALL: [IssuanceFailure; 9] = [
        Self::ca_unavailable,
        Self::ca_rate_limited,
        Self::ca_rejected,
        Self::challenge_failed,
        Self::deadline,
        Self::dns,
        Self::redis,
        Self::bad_answer,
        Self::config,
    ];
}

/// The ACME problem types (RFC 8555 §6.7) the RA tells apart, created at zero at start.
pub const ACME_PROBLEM_TYPES: [&str; 13] = [
    "badNonce",
    "rateLimited",
    "badCSR",
    "rejectedIdentifier",
    "unauthorized",
    "caa",
    "dns",
    "incorrectResponse",
    "serverInternal",
    "orderNotReady",
    "connection",
    "accountDoesNotExist",
    // draft-ietf-acme-profiles.
    "invalidProfile",
];

fn problem_labels(short_name: &str) -> Vec<(String, String)> {
    vec![("type".to_string(), short_name.to_string())]
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    cause: IssuanceFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrderLabels {
    result: OrderResult,
}

/// All of the control plane's metrics.
pub struct Metrics {
    registry: Registry,
    enrollments: Family<EnrollLabels, Counter>,
    enrollment_operations: Family<OperationLabels, Counter>,
    orders: Family<OrderLabels, Counter>,
    /// One per RFC 2136 UPDATE message sent.
    pub dns_updates: Counter,
    /// Certificate cache hits.
    pub cache_hits: Counter,
    /// Certificate cache misses.
    pub cache_misses: Counter,
    /// Cached chains dropped because they did not fit the CSR.
    pub cache_rejected: Counter,
    /// Issued chains not learned for `/cacerts`: not the end-entity certificate's chain.
    pub ca_chain_refused: Counter,
    /// Certificates answered that fewer replicas than `redis.replica_acks` confirmed in time.
    pub redis_unreplicated: Counter,
    /// New orders refused by the per-device limit.
    pub device_limited: Counter,
    /// Back-offs started because the CA answered `rateLimited`.
    pub ca_backoffs: Counter,
    /// Issuances refused while a CA back-off held.
    pub ca_backoff_refused: Counter,
    /// Issuances refused by the replica's cap and queue.
    pub fleet_limited: Counter,
    /// DNS-01 requests refused because the batch queue was full.
    pub dns_queue_full: Counter,
    /// Leftover DNS-01 records removed by the ledger sweeper.
    pub dns_swept: Counter,
    /// Ledger sweeper removals that failed (retried with back-off).
    pub dns_sweep_failures: Counter,
    /// Seconds from the start of an issuance to the certificate in hand.
    pub issuance_seconds: Histogram,
    preauth_fallbacks: Family<FallbackLabels, Counter>,
    preauths: Family<OrderLabels, Counter>,
    /// TEAP conversations held now.
    pub teap_sessions: Gauge,
    /// BRSKI registrar requests by `op` and `result` (`brski.rs` names the values).
    pub brski: Family<Vec<(String, String)>, Counter>,
    failures: Family<FailureLabels, Counter>,
    problems: Family<Vec<(String, String)>, Counter>,
    /// UPDATE messages the DNS primary refused or did not answer.
    pub dns_update_failures: Counter,
    /// 1 when Redis answered the last scrape's PING, else 0.
    pub redis_up: Gauge,
    /// Seconds a certificate served from the cache had left until notAfter.
    pub cache_hit_remaining_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers everything.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let enrollments = Family::<EnrollLabels, Counter>::default();
        let enrollment_operations = Family::<OperationLabels, Counter>::default();
        let orders = Family::<OrderLabels, Counter>::default();
        let dns_updates = Counter::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_rejected = Counter::default();
        let ca_chain_refused = Counter::default();
        let redis_unreplicated = Counter::default();
        let device_limited = Counter::default();
        let ca_backoffs = Counter::default();
        let ca_backoff_refused = Counter::default();
        let fleet_limited = Counter::default();
        let dns_queue_full = Counter::default();
        let dns_swept = Counter::default();
        let dns_sweep_failures = Counter::default();
        let issuance_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        let preauth_fallbacks = Family::<FallbackLabels, Counter>::default();
        let preauths = Family::<OrderLabels, Counter>::default();
        registry.register(
            "estuary_acme_preauth_fallbacks",
            "Times the RA fell back from a pre-authorised parent (RFC 9444) to per-name DNS-01, by reason",
            preauth_fallbacks.clone(),
        );
        registry.register(
            "estuary_acme_preauthorizations",
            "Parent-domain pre-authorisations (newAuthz + DNS-01), by result",
            preauths.clone(),
        );
        let teap_sessions = Gauge::default();
        registry.register(
            "estuary_teap_sessions",
            "TEAP conversations in progress",
            teap_sessions.clone(),
        );
        let brski = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "estuary_brski_requests",
            "BRSKI registrar requests (RFC 8995), by operation and result",
            brski.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "estuary_enrollments",
            "Enrolment requests by protocol and result",
            enrollments.clone(),
        );
        registry.register(
            "estuary_enrollment_operations",
            "Enrolment requests by protocol, EST operation (simpleenroll, simplereenroll, serverkeygen) and result",
            enrollment_operations.clone(),
        );
        registry.register(
            "estuary_acme_orders",
            "ACME orders placed, by result",
            orders.clone(),
        );
        registry.register(
            "estuary_dns_updates",
            "RFC 2136 UPDATE messages sent",
            dns_updates.clone(),
        );
        registry.register(
            "estuary_cache_hits",
            "Certificate cache hits (identical CSR)",
            cache_hits.clone(),
        );
        registry.register(
            "estuary_cache_misses",
            "Certificate cache misses",
            cache_misses.clone(),
        );
        registry.register(
            "estuary_cache_rejected",
            "Cached chains dropped because the leaf did not hold the CSR's key and the device's name, or had expired",
            cache_rejected.clone(),
        );
        registry.register(
            "estuary_ca_chain_refused",
            "Issued chains whose intermediates were not the certificate's chain (not learned for /cacerts)",
            ca_chain_refused.clone(),
        );
        registry.register(
            "estuary_redis_unreplicated",
            "Issued certificates answered although fewer Redis replicas than redis.replica_acks confirmed storing them in time",
            redis_unreplicated.clone(),
        );
        registry.register(
            "estuary_device_limited",
            "New ACME orders refused because the device used up enroll.max_orders_per_device in the window",
            device_limited.clone(),
        );
        registry.register(
            "estuary_ca_backoffs",
            "Back-offs started because the ACME CA answered rateLimited (RFC 8555 §6.7)",
            ca_backoffs.clone(),
        );
        registry.register(
            "estuary_ca_backoff_refused",
            "New issuances refused with 503 while a back-off after rateLimited held",
            ca_backoff_refused.clone(),
        );
        registry.register(
            "estuary_fleet_limited",
            "New issuances refused with 503 because enroll.max_inflight_orders ran and enroll.max_queued_orders waited in this replica",
            fleet_limited.clone(),
        );
        registry.register(
            "estuary_dns_queue_full",
            "DNS-01 requests refused because acme.dns_batch_max_queue requests waited for the DNS primary",
            dns_queue_full.clone(),
        );
        registry.register(
            "estuary_dns_swept",
            "Leftover DNS-01 records removed by the ledger sweeper",
            dns_swept.clone(),
        );
        registry.register(
            "estuary_dns_sweep_failures",
            "Ledger sweeper removals of DNS-01 records that failed (retried with back-off)",
            dns_sweep_failures.clone(),
        );
        registry.register(
            "estuary_issuance_duration_seconds",
            "Time to issue one certificate through ACME",
            issuance_seconds.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        for cause in IssuanceFailure::ALL {
            failures.get_or_create(&FailureLabels { cause }).inc_by(0);
        }
        registry.register(
            "estuary_issuance_failures",
            "Issuances that failed, by what failed",
            failures.clone(),
        );
        let problems = Family::<Vec<(String, String)>, Counter>::default();
        for t in ACME_PROBLEM_TYPES.into_iter().chain(["other"]) {
            problems.get_or_create(&problem_labels(t)).inc_by(0);
        }
        registry.register(
            "estuary_acme_problems",
            "ACME problem documents the CA answered an order with, by type (RFC 8555 §6.7)",
            problems.clone(),
        );
        let dns_update_failures = Counter::default();
        registry.register(
            "estuary_dns_update_failures",
            "RFC 2136 UPDATE messages the DNS primary refused or did not answer in time",
            dns_update_failures.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "estuary_redis_up",
            "1 when Redis answered a PING at the last scrape, else 0",
            redis_up.clone(),
        );
        // One hour to a year: near the low end is what an operator must act on.
        let cache_hit_remaining_seconds = Histogram::new([
            3600.0, 21600.0, 86400.0, 259200.0, 604800.0, 2592000.0, 7776000.0, 31536000.0,
        ]);
        registry.register(
            "estuary_cache_hit_remaining_seconds",
            "Lifetime left until notAfter of the certificates served from the cache",
            cache_hit_remaining_seconds.clone(),
        );
        for protocol in [Protocol::est, Protocol::teap] {
            for result in [
                EnrollResult::issued,
                EnrollResult::cached,
                EnrollResult::pending,
                EnrollResult::rejected,
                EnrollResult::failed,
            ] {
                enrollments
                    .get_or_create(&EnrollLabels { protocol, result })
                    .inc_by(0);
            }
        }
        for result in [OrderResult::valid, OrderResult::failed] {
            orders.get_or_create(&OrderLabels { result }).inc_by(0);
        }
        Self {
            registry,
            enrollments,
            enrollment_operations,
            orders,
            dns_updates,
            cache_hits,
            cache_misses,
            cache_rejected,
            ca_chain_refused,
            redis_unreplicated,
            device_limited,
            ca_backoffs,
            ca_backoff_refused,
            fleet_limited,
            dns_queue_full,
            dns_swept,
            dns_sweep_failures,
            issuance_seconds,
            preauth_fallbacks,
            preauths,
            teap_sessions,
            brski,
            failures,
            problems,
            dns_update_failures,
            redis_up,
            cache_hit_remaining_seconds,
        }
    }

    /// Counts one failed issuance.
    pub fn issuance_failure(&self, cause: IssuanceFailure) {
        self.failures.get_or_create(&FailureLabels { cause }).inc();
    }

    /// Counts one ACME problem document, by its type's short name (`badCSR`, …). A type the RA
    /// does not know is counted as `other`, so a CA cannot grow the label set without bound.
    pub fn acme_problem(&self, short_name: &str) {
        let t = if ACME_PROBLEM_TYPES.contains(&short_name) {
            short_name
        } else {
            "other"
        };
        self.problems.get_or_create(&problem_labels(t)).inc();
    }

    /// Counts one enrolment request.
    pub fn enrollment(&self, protocol: Protocol, result: EnrollResult) {
        self.enrollments
            .get_or_create(&EnrollLabels { protocol, result })
            .inc();
    }

    /// Counts one enrolment request by its EST operation too
    /// (`estuary_enrollment_operations_total{protocol,operation,result}`).
    pub fn enrollment_operation(
        &self,
        protocol: Protocol,
        operation: estuary_proto::est::EstOperation,
        result: EnrollResult,
    ) {
        self.enrollment_operations
            .get_or_create(&OperationLabels {
                protocol,
                operation: operation.as_str().to_string(),
                result,
            })
            .inc();
    }

    /// Counts one ACME order.
    pub fn order(&self, result: OrderResult) {
        self.orders.get_or_create(&OrderLabels { result }).inc();
    }

    /// Counts a fall-back to per-name DNS-01.
    pub fn preauth_fallback(&self, reason: FallbackReason) {
        self.preauth_fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }

    /// Counts one pre-authorisation of a parent domain.
    pub fn preauthorization(&self, result: OrderResult) {
        self.preauths.get_or_create(&OrderLabels { result }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_design_md_promises() {
        let m = Metrics::new();
        m.enrollment(Protocol::est, EnrollResult::issued);
        m.order(OrderResult::valid);
        m.dns_updates.inc();
        m.cache_hits.inc();
        m.cache_misses.inc();
        m.cache_rejected.inc();
        m.ca_chain_refused.inc();
        m.redis_unreplicated.inc();
        m.ca_backoffs.inc();
        m.ca_backoff_refused.inc();
        m.fleet_limited.inc();
        m.dns_queue_full.inc();
        m.dns_swept.inc();
        m.dns_sweep_failures.inc();
        m.issuance_seconds.observe(0.3);
        let text = m.render();
        for line in [
            "estuary_enrollments_total{protocol=\"est\",result=\"issued\"} 1",
            "estuary_acme_orders_total{result=\"valid\"} 1",
            "estuary_dns_updates_total 1",
            "estuary_cache_hits_total 1",
            "estuary_cache_misses_total 1",
            "estuary_cache_rejected_total 1",
            "estuary_ca_chain_refused_total 1",
            "estuary_redis_unreplicated_total 1",
            "estuary_ca_backoffs_total 1",
            "estuary_ca_backoff_refused_total 1",
            "estuary_fleet_limited_total 1",
            "estuary_dns_queue_full_total 1",
            "estuary_dns_swept_total 1",
            "estuary_dns_sweep_failures_total 1",
            "estuary_issuance_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn dashboard_series_exist_at_zero_before_anything_happens() {
        let text = Metrics::new().render();
        for line in [
            "estuary_enrollments_total{protocol=\"teap\",result=\"failed\"} 0",
            "estuary_acme_orders_total{result=\"failed\"} 0",
            "estuary_issuance_failures_total{cause=\"ca_unavailable\"} 0",
            "estuary_acme_problems_total{type=\"badCSR\"} 0",
            "estuary_acme_problems_total{type=\"other\"} 0",
            "estuary_dns_update_failures_total 0",
            "estuary_redis_up 0",
            "estuary_cache_hit_remaining_seconds_count 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_problem_type_the_ra_does_not_know_is_counted_as_other() {
        let m = Metrics::new();
        m.acme_problem("badCSR");
        m.acme_problem("someNewThing");
        m.issuance_failure(IssuanceFailure::dns);
        let text = m.render();
        for line in [
            "estuary_acme_problems_total{type=\"badCSR\"} 1",
            "estuary_acme_problems_total{type=\"other\"} 1",
            "estuary_issuance_failures_total{cause=\"dns\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("someNewThing"), "{text}");
    }
}
