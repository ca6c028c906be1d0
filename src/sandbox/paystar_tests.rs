//! Tests of the Paystar simulator's validation and bookkeeping.

use super::*;

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-paystar-api-key", HeaderValue::from_static("k"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

#[test]
fn the_simulator_counts_every_accepted_event_and_keeps_the_latest() {
    let sim = PaystarSim::keeping(3);
    for i in 0..10 {
        sim.record(Accepted {
            event_type: "Accounts.ManageCustomer".into(),
            business_unit_slug: "w".into(),
            payload: format!("{{\"accountNumber\":\"{i}\"}}"),
            received_ms: i,
        });
    }
    assert_eq!(sim.accepted_total(), 10);
    let kept: Vec<i64> = sim.accepted().iter().map(|a| a.received_ms).collect();
    assert_eq!(kept, [7, 8, 9]);
}

#[test]
fn the_vendor_example_is_accepted() {
    let body = br#"{"eventType":"Accounts.UnenrollAutopay","businessUnitSlug":"water-bill-pay","payload":"{\"accountNumber\":\"12345\",\"subAccountNumber\":\"\"}"}"#;
    assert!(validate(&headers(), body).is_ok());
}

#[test]
fn a_raw_object_payload_is_rejected_with_a_clear_400() {
    let body = br#"{"eventType":"Accounts.UnenrollAutopay","businessUnitSlug":"w","payload":{"accountNumber":"1","subAccountNumber":""}}"#;
    let (status, message) = validate(&headers(), body).unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("not a raw JSON object"));
}

#[test]
fn missing_key_missing_fields_and_unknown_types_are_rejected() {
    let ok = br#"{"eventType":"Accounts.ManageCustomer","businessUnitSlug":"w","payload":"{\"accountNumber\":\"1\",\"subAccountNumber\":\"\",\"firstName\":\"A\",\"lastName\":\"B\",\"emailAddress\":\"a@example.com\"}"}"#;
    assert!(validate(&headers(), ok).is_ok());
    assert_eq!(
        validate(&HeaderMap::new(), ok).unwrap_err().0,
        StatusCode::UNAUTHORIZED
    );
    let no_sub = br#"{"eventType":"Accounts.UnenrollAutopay","businessUnitSlug":"w","payload":"{\"accountNumber\":\"1\"}"}"#;
    assert!(
        validate(&headers(), no_sub)
            .unwrap_err()
            .1
            .contains("subAccountNumber is required")
    );
    let unknown = br#"{"eventType":"Accounts.Delete","businessUnitSlug":"w","payload":"{}"}"#;
    assert!(
        validate(&headers(), unknown)
            .unwrap_err()
            .1
            .contains("unknown eventType")
    );
}
