//! An event as the log stores it: a layout byte, the node that wrote it,
//! then bincode of the fields. Made on the writer thread, where it costs a
//! fraction of JSON (and the values are a third the size, which LMDB copies
//! and pages less); dispatchers turn it into JSON (`json::to_json`).
//!
//! The first byte tells a record's kind and layout. A new layout gets a
//! new byte and its reader is kept: a dispatcher may read a log written by
//! an older server.
//!
//! | first byte | record | after it |
//! |---|---|---|
//! | `1` | request event | bincode of `Stored` |
//! | `2` | request event | bincode of the node id, then of `Stored` |
//! | `0xFF` | gap record | bincode of `Gap` |
//! | `0xFD` | gap record | bincode of the node id, then of `Gap` |
//! | `0xFE` | budget alert | bincode of `BudgetAlert` |
//! | `0xFC` | budget alert | bincode of the node id, then of `BudgetAlert` |

use serde::{Deserialize, Serialize, Serializer};

use super::RequestEvent;
use crate::record::Capture;
use crate::store::Money;

/// The layout of request events written before records named their node.
const VERSION_1: u8 = 1;
/// The layout written now: the node id first.
const VERSION: u8 = 2;

#[derive(Serialize, Deserialize)]
pub struct Stored<'a> {
    /// The server that wrote it (`NODE_ID`); `None` in layout 1. Written
    /// ahead of the other fields, not among them (see `encode`).
    #[serde(skip)]
    pub node: Option<&'a str>,
    pub request_id: &'a str,
    pub end_unix_ns: u64,
    pub duration_ns: u64,
    pub worker: u16,
    pub key_id: Option<[u8; 16]>,
    pub project_id: Option<[u8; 16]>,
    #[serde(borrow)]
    pub user_id: Option<&'a str>,
    #[serde(borrow)]
    pub model: Option<&'a str>,
    pub method: &'a str,
    #[serde(borrow)]
    pub endpoint: Raw<'a>,
    pub status: u16,
    #[serde(borrow)]
    pub error: Option<&'a str>,
    pub upstream_ns: Option<(u64, u64)>,
    pub first_byte_ns: Option<u64>,
    /// Prompt and completion tokens.
    pub usage: Option<(u64, u64)>,
    pub cost_picodollars: u64,
    pub cache: &'a str,
    pub response_complete: bool,
    /// With bodies: the bytes kept and whether the body was longer.
    #[serde(borrow)]
    pub request_body: Option<(Raw<'a>, bool)>,
    #[serde(borrow)]
    pub response_body: Option<(Raw<'a>, bool)>,
}

/// Bytes written as one block (serde writes a `&[u8]` byte by byte).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Raw<'a>(pub &'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The stored form of `event`, which ended at `end_unix_ns` on the node
/// `node`; appended to `out`.
pub fn encode(event: &RequestEvent, end_unix_ns: u64, node: &str, out: &mut Vec<u8>) {
    let bodies = event.bodies.as_deref();
    let stored = Stored {
        node: Some(node),
        request_id: event.request_id.as_str(),
        end_unix_ns,
        duration_ns: event.duration_ns,
        worker: event.worker,
        key_id: event.key.as_ref().map(|k| k.key_id.into_bytes()),
        project_id: event
            .key
            .as_ref()
            .and_then(|k| k.project_id.map(|p| p.into_bytes())),
        user_id: event.key.as_ref().and_then(|k| k.user_id.as_deref()),
        model: event.model.as_deref(),
        method: event.method.as_str(),
        endpoint: Raw(event.path.as_bytes()),
        status: event.status,
        error: event.error,
        upstream_ns: event.upstream_ns,
        first_byte_ns: event.first_byte_ns,
        usage: event.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        cost_picodollars: event.cost.0,
        cache: event.cache.as_str(),
        response_complete: event.response_complete,
        request_body: body(bodies.and_then(|b| b.request.as_ref())),
        response_body: body(bodies.and_then(|b| b.response.as_ref())),
    };
    out.push(VERSION);
    // Writing plain fields into a Vec cannot fail.
    let _ = bincode::serialize_into(&mut *out, &(node, &stored));
}

fn body(capture: Option<&Capture>) -> Option<(Raw<'_>, bool)> {
    capture.map(|c| (Raw(&c.bytes), c.overflowed))
}

/// A gap record or budget alert as read back, and the node that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<'a, T> {
    /// The server that wrote it (`NODE_ID`); `None` in the layouts written
    /// before records named their node.
    pub node: Option<&'a str>,
    pub record: T,
}

/// The record after the first byte of a layout with the node id ahead
/// (`named`) or without it.
fn read<'a, T: Deserialize<'a>>(rest: &'a [u8], named: bool) -> Option<Read<'a, T>> {
    if named {
        let (node, record) = bincode::deserialize::<(&str, T)>(rest).ok()?;
        Some(Read {
            node: Some(node),
            record,
        })
    } else {
        let record = bincode::deserialize(rest).ok()?;
        Some(Read { node: None, record })
    }
}

/// `first`, then bincode of the node id and of `record`.
fn write(first: u8, node: &str, record: &impl Serialize) -> Vec<u8> {
    let mut out = vec![first];
    // Writing plain fields into a Vec cannot fail.
    let _ = bincode::serialize_into(&mut out, &(node, record));
    out
}

/// First byte of a gap record, in place of an event's layout version
/// (`GAP_1`: without the node id, as written before records named it).
const GAP: u8 = 0xFD;
const GAP_1: u8 = 0xFF;

/// A gap record: stands in the log where events should be that the server
/// could not write (a full disk, a writer that could not keep up). It has
/// a sequence number of its own, so the numbers stay contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// How many events were lost.
    pub lost: u64,
    /// Unix ns when the first and the last of them were found lost.
    pub first_unix_ns: u64,
    pub last_unix_ns: u64,
}

/// The stored form of a gap record written on the node `node`.
pub fn encode_gap(gap: &Gap, node: &str) -> Vec<u8> {
    write(GAP, node, gap)
}

/// The gap record in `bytes`, if they hold one.
pub fn decode_gap(bytes: &[u8]) -> Option<Read<'_, Gap>> {
    match bytes.split_first() {
        Some((&GAP, rest)) => read(rest, true),
        Some((&GAP_1, rest)) => read(rest, false),
        _ => None,
    }
}

/// First byte of a budget alert record (`BUDGET_ALERT_1`: without the
/// node id, as written before records named it).
const BUDGET_ALERT: u8 = 0xFC;
const BUDGET_ALERT_1: u8 = 0xFE;

/// A budget alert record: a key's, user's or team's spend went past its
/// soft budget. Made by the worker whose usage report crossed it, written
/// by the writer between the request events, delivered as
/// `{"node": ..., "budget_alert": {...}}` (`json::alert_to_json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetAlert {
    /// `key`, `user` or `team`.
    pub kind: String,
    /// The key's id, the user's or the team's.
    pub id: String,
    /// The spend once past the soft budget, and the soft budget.
    pub spend: Money,
    pub soft_budget: Money,
    /// Unix ns when the crossing was recorded.
    pub at_unix_ns: u64,
}

/// The stored form of a budget alert raised on the node `node`.
pub fn encode_alert(alert: &BudgetAlert, node: &str) -> Vec<u8> {
    write(BUDGET_ALERT, node, alert)
}

/// The budget alert in `bytes`, if they hold one.
pub fn decode_alert(bytes: &[u8]) -> Option<Read<'_, BudgetAlert>> {
    match bytes.split_first() {
        Some((&BUDGET_ALERT, rest)) => read(rest, true),
        Some((&BUDGET_ALERT_1, rest)) => read(rest, false),
        _ => None,
    }
}

/// The fields of a stored event; `None` for bytes of an unknown layout.
pub fn decode(bytes: &[u8]) -> Option<Stored<'_>> {
    let (&first, rest) = bytes.split_first()?;
    let named = match first {
        VERSION => true,
        VERSION_1 => false,
        _ => return None,
    };
    let Read { node, record } = read::<Stored<'_>>(rest, named)?;
    Some(Stored { node, ..record })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::json::logged_to_json;
    use crate::events::{Bodies, InlinePath, KeyIds};
    use crate::http::RequestId;
    use crate::record::CacheStatus;

    fn json_of(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(&logged_to_json(bytes)).unwrap()
    }

    /// `first`, then bincode of `record` alone: a record as servers wrote
    /// it before records named their node.
    fn unnamed(first: u8, record: &impl Serialize) -> Vec<u8> {
        let mut bytes = vec![first];
        bytes.extend(bincode::serialize(record).unwrap());
        bytes
    }

    #[test]
    fn a_gap_record_is_told_from_an_event() {
        let gap = Gap {
            lost: 3,
            first_unix_ns: 1_000_000_000,
            last_unix_ns: 2_500_000_000,
        };
        let bytes = encode_gap(&gap, "edge-7");
        let read = decode_gap(&bytes).unwrap();
        assert_eq!((read.node, read.record), (Some("edge-7"), gap));
        assert!(decode(&bytes).is_none());
        assert!(decode_alert(&bytes).is_none());
        let fields = serde_json::json!({
            "lost_events": 3,
            "first_lost_at": "1970-01-01T00:00:01.000Z",
            "last_lost_at": "1970-01-01T00:00:02.500Z",
        });
        assert_eq!(
            json_of(&bytes),
            serde_json::json!({"node": "edge-7", "gap": fields})
        );
        // As written before records named their node: read all the same.
        let old = unnamed(GAP_1, &gap);
        assert_eq!(
            decode_gap(&old),
            Some(Read {
                node: None,
                record: gap
            })
        );
        assert!(decode(&old).is_none());
        assert_eq!(json_of(&old), serde_json::json!({"gap": fields}));
    }

    #[test]
    fn a_budget_alert_is_told_from_events_and_gaps() {
        let alert = BudgetAlert {
            kind: "team".into(),
            id: "red".into(),
            spend: Money(2_500_000_000_000),
            soft_budget: Money(2_000_000_000_000),
            at_unix_ns: 3_000_000_000,
        };
        let bytes = encode_alert(&alert, "edge-7");
        let read = decode_alert(&bytes).unwrap();
        assert_eq!((read.node, &read.record), (Some("edge-7"), &alert));
        assert!(decode(&bytes).is_none());
        assert!(decode_gap(&bytes).is_none());
        let gap = Gap {
            lost: 1,
            first_unix_ns: 0,
            last_unix_ns: 0,
        };
        assert!(decode_alert(&encode_gap(&gap, "edge-7")).is_none());
        assert!(decode_alert(&unnamed(GAP_1, &gap)).is_none());
        let fields = serde_json::json!({
            "type": "soft_budget_crossed",
            "kind": "team",
            "id": "red",
            "spend": 2.5,
            "soft_budget": 2.0,
            "time": "1970-01-01T00:00:03.000Z",
        });
        assert_eq!(
            json_of(&bytes),
            serde_json::json!({"node": "edge-7", "budget_alert": fields})
        );
        let old = unnamed(BUDGET_ALERT_1, &alert);
        assert_eq!(
            decode_alert(&old),
            Some(Read {
                node: None,
                record: alert
            })
        );
        assert_eq!(json_of(&old), serde_json::json!({"budget_alert": fields}));
    }

    #[test]
    fn an_event_comes_back_as_json() {
        let mut response = Capture::new(8);
        response.feed(b"{\"ok\":true}");
        let event = RequestEvent {
            request_id: RequestId::random(),
            end: std::time::Instant::now(),
            duration_ns: 5_000_000,
            worker: 1,
            key: Some(KeyIds {
                key_id: uuid::Uuid::from_u128(7),
                project_id: None,
                user_id: Some("ada".into()),
            }),
            model: Some("m".into()),
            method: http::Method::POST,
            path: InlinePath::new(b"/v1/chat/completions"),
            status: 200,
            error: None,
            upstream_ns: Some((1_000_000, 2_000_000)),
            first_byte_ns: None,
            usage: None,
            cost: Money(1_500_000_000),
            cache: CacheStatus::Hit,
            response_complete: true,
            bodies: Some(Box::new(Bodies {
                request: None,
                response: Some(response),
            })),
        };
        let mut bytes = Vec::new();
        encode(&event, 10_000_000, "edge-7", &mut bytes);
        assert!(decode_gap(&bytes).is_none());
        assert!(decode_alert(&bytes).is_none());
        let json = json_of(&bytes);
        assert_eq!(json["node"], "edge-7");
        assert_eq!(json["request_id"], event.request_id.as_str());
        assert_eq!(json["key_id"], uuid::Uuid::from_u128(7).to_string());
        assert_eq!(json["user_id"], "ada");
        assert_eq!(json["endpoint"], "/v1/chat/completions");
        assert_eq!(json["cache"], "hit");
        assert_eq!(json["cost_usd"], 0.0015);
        assert_eq!(json["latency"]["total_us"], 5000);
        assert_eq!(json["latency"]["upstream_us"], 9000);
        assert_eq!(json["response_body"], "{\"ok\":tr");
        assert_eq!(json["response_body_truncated"], true);
        assert!(json.get("request_body").is_none());

        // Layout 1 (no node id): the same event, without `node`.
        let stored = decode(&bytes).unwrap();
        assert_eq!(stored.node, Some("edge-7"));
        let old = unnamed(VERSION_1, &stored);
        assert_eq!(decode(&old).unwrap().node, None);
        let mut old_json = json_of(&old);
        assert!(old_json.get("node").is_none(), "{old_json}");
        old_json["node"] = "edge-7".into();
        let sorted =
            |value: serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
                serde_json::from_value(value).unwrap()
            };
        assert_eq!(sorted(old_json), sorted(json));
        // An unknown layout is none of the three.
        let unknown = unnamed(3, &stored);
        assert!(decode(&unknown).is_none());
        assert_eq!(json_of(&unknown), serde_json::json!({"undecodable": true}));
    }
}
