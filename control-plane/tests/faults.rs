//! Faults of the parts around the RA: an unreachable ACME CA answers "retry later".
mod common;

use common::*;

/// CA unreachable → 503 with Retry-After (RFC 7030 §4.2.3 lets the client retry), no crash,
/// and no DNS traffic.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ca_means_retry_later() {
    let stack = stack();
    let closed = estuary_tests::util::free_port().expect("port");
    let mut cp = ControlPlane::start(
        &stack,
        &CpOptions {
            extra_env: vec![(
                "ESTUARY_ACME__DIRECTORY_URL".into(),
                format!("https://127.0.0.1:{closed}/dir"),
            )],
            ..CpOptions::default()
        },
    );
    let sn = "sn-fault-1";
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp.enroll(sn, &csr).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.header("retry-after"),
        Some("2"),
        "unavailable_retry_after_s"
    );
    assert!(r.text().contains("ACME CA unavailable"), "{}", r.text());
    assert!(cp.is_running());
    assert_eq!(cp.metric("estuary_dns_updates_total").await, 0.0);
    assert_eq!(
        cp.metric("estuary_enrollments_total{protocol=\"est\",result=\"failed\"}")
            .await,
        1.0
    );
    // Nothing was remembered as a failure: the retry tries the CA again (and fails again).
    let again = cp.enroll(sn, &csr).await;
    assert_eq!(again.status, 503, "{}", again.text());
}
