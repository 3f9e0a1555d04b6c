//! The JSON body: one object with every field of the contract's `event`
//! record (schema in the crate documentation).

use offsite_sdk::Event;
use serde_json::{Value, json};

pub fn to_json(e: &Event) -> Value {
    json!({
        "kind": e.kind.as_str(),
        "job": e.job,
        "host": e.host,
        "time": e.time,
        "summary": e.summary,
        "detail": e.detail,
        "generation": e.generation,
        "size": e.size,
        "duration_ms": e.duration_ms,
        "destination": e.destination,
    })
}

pub fn body(e: &Event) -> Vec<u8> {
    // Serializing a `Value` built from strings and integers cannot fail.
    serde_json::to_vec(&to_json(e)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use offsite_sdk::EventKind;

    use super::*;

    #[test]
    fn every_field_is_in_the_body_and_absent_ones_are_null() {
        let mut e = Event {
            kind: EventKind::VerifyFailed,
            job: "calls".into(),
            host: "db1".into(),
            time: "2026-11-22T04:30:00Z".into(),
            summary: "verification of calls failed".into(),
            detail: "sha256 mismatch\n\"quoted\"".into(),
            generation: Some("calls-20261122T043000Z.sql.zst".into()),
            size: Some(123),
            duration_ms: Some(4567),
            destination: Some("nas".into()),
        };
        let v: Value = serde_json::from_slice(&body(&e)).unwrap();
        assert_eq!(v["kind"], "verify-failed");
        assert_eq!(v["job"], "calls");
        assert_eq!(v["host"], "db1");
        assert_eq!(v["time"], "2026-11-22T04:30:00Z");
        assert_eq!(v["summary"], "verification of calls failed");
        assert_eq!(v["detail"], "sha256 mismatch\n\"quoted\"");
        assert_eq!(v["generation"], "calls-20261122T043000Z.sql.zst");
        assert_eq!(v["size"], 123);
        assert_eq!(v["duration_ms"], 4567);
        assert_eq!(v["destination"], "nas");
        assert_eq!(v.as_object().unwrap().len(), 10);

        e.generation = None;
        e.size = None;
        e.duration_ms = None;
        e.destination = None;
        let v: Value = serde_json::from_slice(&body(&e)).unwrap();
        for k in ["generation", "size", "duration_ms", "destination"] {
            assert!(v[k].is_null(), "{k}");
        }
        assert_eq!(v.as_object().unwrap().len(), 10);
    }
}
