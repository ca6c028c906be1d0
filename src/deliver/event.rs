//! The Paystar Events API request, exactly as the vendor page shows it: an
//! envelope whose `payload` is a *string* holding the serialised JSON payload.

use crate::customer::{Fields, KeyRef};
use crate::reconcile::Manage;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "Accounts.ManageCustomer")]
    ManageCustomer,
    #[serde(rename = "Accounts.UnenrollAutopay")]
    UnenrollAutopay,
}

impl EventType {
    pub fn from_name(name: &str) -> Option<Self> {
        [EventType::ManageCustomer, EventType::UnenrollAutopay]
            .into_iter()
            .find(|t| t.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ManageCustomer => "Accounts.ManageCustomer",
            EventType::UnenrollAutopay => "Accounts.UnenrollAutopay",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManagePayload<'a> {
    account_number: &'a str,
    sub_account_number: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    email_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_email_address: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UnenrollPayload<'a> {
    account_number: &'a str,
    sub_account_number: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    event_type: EventType,
    business_unit_slug: &'a str,
    payload: &'a str,
}

/// One event, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaystarEvent {
    pub event_type: EventType,
    /// The request body.
    pub body: String,
    /// The payload string inside it: with the event type and business unit, all
    /// that is needed to build the body again, byte for byte ([`PaystarEvent::rebuilt`]).
    pub payload: String,
}

/// The body Paystar answers an accepted event with (the simulator sends these bytes):
/// history stores a response with exactly this body as its status alone.
pub const ACCEPTED_BODY: &str = r#"{"data":null,"errors":[],"hasErrors":false}"#;

fn envelope(event_type: EventType, business_unit: &str, payload: String) -> PaystarEvent {
    let body = serde_json::to_string(&Envelope {
        event_type,
        business_unit_slug: business_unit,
        payload: &payload,
    })
    .expect("strings always serialise");
    PaystarEvent {
        event_type,
        body,
        payload,
    }
}

impl PaystarEvent {
    /// The event whose payload string was `payload`, as it was sent.
    pub fn rebuilt(event_type: EventType, business_unit: &str, payload: &str) -> Self {
        envelope(event_type, business_unit, payload.to_owned())
    }

    pub fn manage(key: KeyRef<'_>, manage: &Manage<'_>) -> Self {
        Self::manage_fields(key, manage.fields, manage.original_email)
    }

    /// A ManageCustomer of `fields`, naming the acknowledged email when it changes.
    pub fn manage_fields(
        key: KeyRef<'_>,
        fields: Fields<'_>,
        original_email: Option<&str>,
    ) -> Self {
        let payload = serde_json::to_string(&ManagePayload {
            account_number: key.account,
            sub_account_number: key.sub_account,
            first_name: fields.first_name,
            last_name: fields.last_name,
            email_address: fields.email,
            original_email_address: original_email,
        })
        .expect("strings always serialise");
        envelope(EventType::ManageCustomer, key.business_unit, payload)
    }

    pub fn unenroll(key: KeyRef<'_>) -> Self {
        let payload = serde_json::to_string(&UnenrollPayload {
            account_number: key.account,
            sub_account_number: key.sub_account,
        })
        .expect("strings always serialise");
        envelope(EventType::UnenrollAutopay, key.business_unit, payload)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::customer::Fields;
    use crate::reconcile::Change;

    /// The key of the vendor page's examples.
    pub(crate) const KEY: KeyRef<'static> = KeyRef {
        business_unit: "water-bill-pay",
        account: "12345",
        sub_account: "",
    };

    #[test]
    fn the_unenroll_request_is_byte_for_byte_the_vendor_example() {
        assert_eq!(
            PaystarEvent::unenroll(KEY).body,
            r#"{"eventType":"Accounts.UnenrollAutopay","businessUnitSlug":"water-bill-pay","payload":"{\"accountNumber\":\"12345\",\"subAccountNumber\":\"\"}"}"#
        );
    }

    #[test]
    fn the_manage_payload_is_a_string_and_original_email_only_appears_on_an_email_change() {
        let fields = Fields {
            first_name: "John",
            last_name: "Smith",
            email: "john.smith@example.com",
        };
        let create = Manage {
            fields,
            original_email: None,
            change: Change::Create,
        };
        let body: serde_json::Value =
            serde_json::from_str(&PaystarEvent::manage(KEY, &create).body).unwrap();
        let payload = body["payload"].as_str().expect("payload is a string");
        assert_eq!(
            payload,
            r#"{"accountNumber":"12345","subAccountNumber":"","firstName":"John","lastName":"Smith","emailAddress":"john.smith@example.com"}"#
        );
        let moved = Manage {
            original_email: Some("old@example.com"),
            ..create
        };
        let body: serde_json::Value =
            serde_json::from_str(&PaystarEvent::manage(KEY, &moved).body).unwrap();
        let payload: serde_json::Value =
            serde_json::from_str(body["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["originalEmailAddress"], "old@example.com");
    }
}
