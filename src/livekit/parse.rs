//! Turns a verified webhook body into a [`Delivery`].
//!
//! First with `livekit-protocol`'s `WebhookEvent` (protobuf JSON via pbjson).
//! pbjson refuses whole bodies for things a newer LiveKit server may send (an
//! enum name it does not know, `"id": null`), and a refused event is one
//! LiveKit redelivers until it drops it. So when pbjson fails, the body is
//! read again as plain JSON, taking only the fields roomd uses, each checked
//! for its type: a body is refused (400) only when it is not JSON or a field
//! roomd needs is missing or of the wrong type.

use chrono::{DateTime, Utc};
use livekit_protocol as proto;
use serde_json::{Map, Value};

use crate::event::{
    Action, Delivery, LeaveReason, ParticipantKind, ParticipantRef, RoomEvent, RoomRef, label,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{0}` is required")]
    Missing(&'static str),
    #[error("field `{0}` holds a NUL character, which no database can store")]
    Nul(&'static str),
    #[error("field `{field}` is {len} bytes; roomd keys rooms and events by at most {limit}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
}

/// The longest room name, room sid or event id roomd accepts, in bytes.
/// PostgreSQL indexes them, and a B-tree entry holds at most 2,704 bytes:
/// a longer key fails every commit of its event, so LiveKit would retry it
/// for ever and each retry would fail the batch it rode in (SQLite took the
/// same event). Refused on every backend, so both agree.
pub const MAX_KEY_BYTES: usize = 2048;

/// The fields roomd reads, from either parser.
#[derive(Debug, Default)]
struct Fields {
    event: String,
    id: String,
    created_at: i64,
    room_name: String,
    room_sid: String,
    room_created: Option<DateTime<Utc>>,
    participant: Option<ParticipantFields>,
}

#[derive(Debug, Default)]
struct ParticipantFields {
    sid: String,
    identity: String,
    name: String,
    kind: Option<ParticipantKind>,
    joined_at: Option<DateTime<Utc>>,
    disconnect_reason: Option<String>,
}

pub fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let fields = match serde_json::from_slice::<proto::WebhookEvent>(body) {
        Ok(event) => from_proto(event),
        Err(strict) => {
            let value = known_fields(body)?;
            let fields = from_json(&value)?;
            tracing::debug!(error = %strict, "livekit-protocol refused the body; applied from its known fields");
            fields
        }
    };
    into_delivery(fields, received_at)
}

/// The keys [`from_json`] reads: at the top, and inside the objects it
/// reads (an empty list: a string, a number or `null`, kept as it is).
const KNOWN: &[(&str, &[&str])] = &[
    ("event", &[]),
    ("id", &[]),
    ("createdAt", &[]),
    ("room", &["name", "sid", "creationTime", "creationTimeMs"]),
    (
        "participant",
        &[
            "sid",
            "identity",
            "name",
            "kind",
            "joinedAt",
            "joinedAtMs",
            "disconnectReason",
        ],
    ),
    ("egressInfo", &["roomName", "roomId"]),
    ("ingressInfo", &["roomName"]),
];

/// protobuf JSON's other spelling of the [`KNOWN`] keys: pbjson takes a
/// field by its proto name too, so the fallback must (found by the
/// adversary: `egress_info` applied through pbjson and was refused here).
const PROTO_NAMES: &[(&str, &str)] = &[
    ("created_at", "createdAt"),
    ("creation_time", "creationTime"),
    ("creation_time_ms", "creationTimeMs"),
    ("joined_at", "joinedAt"),
    ("joined_at_ms", "joinedAtMs"),
    ("disconnect_reason", "disconnectReason"),
    ("egress_info", "egressInfo"),
    ("ingress_info", "ingressInfo"),
    ("room_name", "roomName"),
    ("room_id", "roomId"),
];

/// The body as JSON with only the [`KNOWN`] keys built; everything else is
/// skipped as pbjson skips it. serde_json skips without recursing but
/// builds a `Value` only 128 levels deep, so building the whole body
/// refused a body pbjson took but for an enum name it did not know, when
/// a field roomd never reads nested deeper (found by the adversary).
fn known_fields(body: &[u8]) -> Result<Value, ParseError> {
    use serde::de::DeserializeSeed;
    let not_json = |e: serde_json::Error| ParseError::NotJson(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Known::Top.deserialize(&mut de).map_err(not_json)?;
    de.end().map_err(not_json)?;
    Ok(value)
}

/// Where [`known_fields`] is: the body itself, or one of its objects with
/// the keys read in it.
#[derive(Clone, Copy)]
enum Known {
    Top,
    Inside(&'static [&'static str]),
}

impl<'de> serde::de::DeserializeSeed<'de> for Known {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Known {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let key = PROTO_NAMES
                .iter()
                .find(|(proto, _)| *proto == key)
                .map_or(key, |(_, json)| (*json).to_owned());
            let inner = match self {
                Self::Top => KNOWN
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, inner)| *inner),
                Self::Inside(keys) => keys.contains(&key.as_str()).then_some(&[][..]),
            };
            match inner {
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                // A value roomd reads whole is a string, a number or null:
                // built as a `Value`, a deep array there was refused as
                // "not JSON: recursion limit exceeded". Skipped, it gets its
                // placeholder and `from_json` names the field and its type.
                Some(keys) => {
                    let value = map.next_value_seed(Self::Inside(keys))?;
                    object.insert(key, value);
                }
            }
        }
        Ok(Value::Object(object))
    }

    // Anything but an object where `from_json` wants one, or an object or
    // an array where it wants a string or a number, is refused there by its
    // type: a placeholder of that type says so, and `null` stays `null`
    // (an absent field).
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
}

fn seconds(s: i64) -> Option<DateTime<Utc>> {
    (s > 0).then(|| DateTime::from_timestamp(s, 0)).flatten()
}

pub(crate) fn millis_or_seconds(ms: i64, s: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
        .or_else(|| seconds(s))
}

pub(crate) fn participant_kind(kind: i32) -> ParticipantKind {
    ParticipantKind::from_number(kind.into())
}

fn disconnect_reason_name(n: i32) -> Option<String> {
    match proto::DisconnectReason::try_from(n) {
        Ok(proto::DisconnectReason::UnknownReason) => None,
        Ok(reason) => Some(reason.as_str_name().to_owned()),
        Err(_) => Some(format!("reason_{n}")),
    }
}

fn from_proto(e: proto::WebhookEvent) -> Fields {
    let (room_name, room_sid, room_created) = match (&e.room, &e.egress_info, &e.ingress_info) {
        (Some(room), _, _) if !room.name.is_empty() => (
            room.name.clone(),
            room.sid.clone(),
            millis_or_seconds(room.creation_time_ms, room.creation_time),
        ),
        (_, Some(egress), _) => (egress.room_name.clone(), egress.room_id.clone(), None),
        (_, _, Some(ingress)) => (ingress.room_name.clone(), String::new(), None),
        _ => Default::default(),
    };
    Fields {
        event: e.event,
        id: e.id,
        created_at: e.created_at,
        room_name,
        room_sid,
        room_created,
        participant: e.participant.map(|p| ParticipantFields {
            kind: Some(participant_kind(p.kind)),
            joined_at: millis_or_seconds(p.joined_at_ms, p.joined_at),
            disconnect_reason: disconnect_reason_name(p.disconnect_reason),
            sid: p.sid,
            identity: p.identity,
            name: p.name,
        }),
    }
}

/// The key `path` ends with. Every read of `from_json` goes through here,
/// so a field read there but not kept by [`known_fields`] (missing from
/// [`KNOWN`]) fails the first test that reads it, instead of being dropped
/// without a word on the fallback path.
fn key_of(path: &'static str) -> &'static str {
    debug_assert!(
        match path.split_once('.') {
            None => KNOWN.iter().any(|(key, _)| *key == path),
            Some((outer, inner)) => KNOWN
                .iter()
                .any(|(key, keys)| *key == outer && keys.contains(&inner)),
        },
        "`{path}` is read by from_json but not in KNOWN"
    );
    path.rsplit('.').next().unwrap_or(path)
}

/// Reads one field of an object: absent and `null` are `None`.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string(obj: &Map<String, Value>, path: &'static str) -> Result<String, ParseError> {
    match field(obj, key_of(path)) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ParseError::WrongType {
            field: path,
            expected: "a string",
        }),
    }
}

/// protobuf JSON sends 64-bit integers as strings; hand-written bodies (the
/// seed's curl test) as numbers. Both are fine.
fn int64(obj: &Map<String, Value>, path: &'static str) -> Result<i64, ParseError> {
    let wrong = || ParseError::WrongType {
        field: path,
        expected: "an integer or a string of digits",
    };
    match field(obj, key_of(path)) {
        None => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(wrong),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| wrong()),
        Some(_) => Err(wrong()),
    }
}

fn object<'a>(
    obj: &'a Map<String, Value>,
    path: &'static str,
) -> Result<Option<&'a Map<String, Value>>, ParseError> {
    match field(obj, key_of(path)) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ParseError::WrongType {
            field: path,
            expected: "an object",
        }),
    }
}

/// An enum sent by name (protobuf JSON) or by number.
fn enum_name(obj: &Map<String, Value>, path: &'static str) -> Result<Option<Value>, ParseError> {
    match field(obj, key_of(path)) {
        None => Ok(None),
        Some(v @ (Value::String(_) | Value::Number(_))) => Ok(Some(v.clone())),
        Some(_) => Err(ParseError::WrongType {
            field: path,
            expected: "an enum name or number",
        }),
    }
}

fn from_json(value: &Value) -> Result<Fields, ParseError> {
    let obj = value.as_object().ok_or(ParseError::NotAnObject)?;
    let mut fields = Fields {
        event: string(obj, "event")?,
        id: string(obj, "id")?,
        created_at: int64(obj, "createdAt")?,
        ..Default::default()
    };
    if let Some(room) = object(obj, "room")? {
        fields.room_name = string(room, "room.name")?;
        fields.room_sid = string(room, "room.sid")?;
        fields.room_created = millis_or_seconds(
            int64(room, "room.creationTimeMs")?,
            int64(room, "room.creationTime")?,
        );
    }
    // As `from_proto` chooses: a named room, else egress's room (with its
    // id as the sid), else ingress's.
    if fields.room_name.is_empty() {
        if let Some(egress) = object(obj, "egressInfo")? {
            fields.room_name = string(egress, "egressInfo.roomName")?;
            fields.room_sid = string(egress, "egressInfo.roomId")?;
            fields.room_created = None;
        } else if let Some(ingress) = object(obj, "ingressInfo")? {
            fields.room_name = string(ingress, "ingressInfo.roomName")?;
            fields.room_sid = String::new();
            fields.room_created = None;
        }
    }
    if let Some(p) = object(obj, "participant")? {
        let kind = enum_name(p, "participant.kind")?.map(|v| match v {
            Value::Number(n) => ParticipantKind::from_number(n.as_i64().unwrap_or(-1)),
            Value::String(s) => ParticipantKind::from_name(&s),
            _ => ParticipantKind::standard(),
        });
        let disconnect_reason =
            enum_name(p, "participant.disconnectReason")?.and_then(|v| match v {
                Value::Number(n) => disconnect_reason_name(n.as_i64().unwrap_or(0) as i32),
                // An empty name is no reason, as LiveKit's 0 is (`participant_left`).
                Value::String(s) if !s.is_empty() && s != "UNKNOWN_REASON" => Some(s),
                _ => None,
            });
        fields.participant = Some(ParticipantFields {
            sid: string(p, "participant.sid")?,
            identity: string(p, "participant.identity")?,
            name: string(p, "participant.name")?,
            kind,
            joined_at: millis_or_seconds(
                int64(p, "participant.joinedAtMs")?,
                int64(p, "participant.joinedAt")?,
            ),
            disconnect_reason,
        });
    }
    Ok(fields)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Refuses a string PostgreSQL cannot store (`\0` is not valid in its
/// text) or index (a key over [`MAX_KEY_BYTES`]): committing it would fail
/// on every redelivery, and LiveKit would retry it for ever. A 400 is the
/// one answer that ends that.
fn storable(f: &Fields) -> Result<(), ParseError> {
    let keys = [
        ("id", f.id.len()),
        ("room.name", f.room_name.len()),
        ("room.sid", f.room_sid.len()),
    ];
    if let Some((field, len)) = keys.into_iter().find(|(_, len)| *len > MAX_KEY_BYTES) {
        return Err(ParseError::TooLong {
            field,
            len,
            limit: MAX_KEY_BYTES,
        });
    }
    let mut fields = vec![
        ("event", f.event.as_str()),
        ("id", f.id.as_str()),
        ("room.name", f.room_name.as_str()),
        ("room.sid", f.room_sid.as_str()),
    ];
    if let Some(p) = &f.participant {
        fields.extend([
            ("participant.sid", p.sid.as_str()),
            ("participant.identity", p.identity.as_str()),
            ("participant.name", p.name.as_str()),
            (
                "participant.disconnectReason",
                p.disconnect_reason.as_deref().unwrap_or_default(),
            ),
        ]);
        if let Some(kind) = &p.kind {
            fields.push(("participant.kind", kind.as_str()));
        }
    }
    match fields.into_iter().find(|(_, value)| value.contains('\0')) {
        Some((field, _)) => Err(ParseError::Nul(field)),
        None => Ok(()),
    }
}

fn into_delivery(f: Fields, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    if f.event.is_empty() {
        return Err(ParseError::Missing("event"));
    }
    storable(&f)?;
    let room = non_empty(f.room_name).map(|name| RoomRef {
        name,
        sid: non_empty(f.room_sid),
        created_at: f.room_created,
    });
    let (participant, disconnect_reason) = match f.participant {
        Some(p) if !p.identity.is_empty() => (
            Some(ParticipantRef {
                sid: non_empty(p.sid).map(Into::into),
                identity: p.identity.into(),
                kind: p.kind.unwrap_or_else(ParticipantKind::standard),
                name: non_empty(p.name).map(Into::into),
                joined_at: p.joined_at,
            }),
            p.disconnect_reason,
        ),
        _ => (None, None),
    };
    let required =
        |p: &Option<ParticipantRef>| p.clone().ok_or(ParseError::Missing("participant.identity"));
    let room_event = match f.event.as_str() {
        "room_started" => Some(RoomEvent::RoomStarted),
        "room_finished" => Some(RoomEvent::RoomFinished),
        "participant_joined" => Some(RoomEvent::ParticipantJoined(required(&participant)?)),
        "participant_left" => Some(RoomEvent::ParticipantLeft(
            required(&participant)?,
            LeaveReason::Left(disconnect_reason),
        )),
        "participant_connection_aborted" => Some(RoomEvent::ParticipantLeft(
            required(&participant)?,
            LeaveReason::ConnectionAborted,
        )),
        _ => None,
    };
    let action = match (room_event, room) {
        (Some(event), Some(room)) => Action::Apply { room, event },
        (Some(_), None) => return Err(ParseError::Missing("room.name")),
        (None, room) => Action::Record { room, participant },
    };
    Ok(Delivery {
        id: non_empty(f.id),
        event: label(&f.event),
        created_at: seconds(f.created_at),
        received_at,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_100, 0).unwrap()
    }

    fn joined(kind: &str) -> String {
        format!(
            r#"{{"event":"participant_joined","id":"EV_1","createdAt":"1700000000",
                "room":{{"name":"demo","sid":"RM_1","creationTime":"1699999990"}},
                "participant":{{"sid":"PA_1","identity":"alice","name":"Alice","kind":{kind},
                                "state":"ACTIVE","joinedAtMs":"1700000000250"}}}}"#
        )
    }

    #[test]
    fn livekits_own_json_is_read_with_its_times_and_kind() {
        let delivery = parse(joined(r#""AGENT""#).as_bytes(), now()).unwrap();
        assert_eq!(delivery.id.as_deref(), Some("EV_1"));
        assert_eq!(
            delivery.created_at,
            DateTime::from_timestamp(1_700_000_000, 0)
        );
        let room = delivery.room().unwrap();
        assert_eq!(
            (room.name.as_str(), room.sid.as_deref()),
            ("demo", Some("RM_1"))
        );
        assert_eq!(room.created_at, DateTime::from_timestamp(1_699_999_990, 0));
        let Action::Apply {
            event: RoomEvent::ParticipantJoined(p),
            ..
        } = &delivery.action
        else {
            panic!("{:?}", delivery.action);
        };
        assert_eq!(&*p.identity, "alice");
        assert_eq!(p.kind, ParticipantKind::agent());
        assert_eq!(
            p.joined_at,
            DateTime::from_timestamp_millis(1_700_000_000_250)
        );
    }

    // A newer LiveKit's enum name makes pbjson refuse the whole body; the
    // fields roomd needs are read anyway, and the kind is kept by its (lowercased) name.
    #[test]
    fn an_unknown_enum_name_is_read_from_the_fields_roomd_needs() {
        let delivery = parse(joined(r#""HOLOGRAM""#).as_bytes(), now()).unwrap();
        let Action::Apply {
            event: RoomEvent::ParticipantJoined(p),
            ..
        } = &delivery.action
        else {
            panic!("{:?}", delivery.action);
        };
        assert_eq!(p.kind.as_str(), "hologram");
        assert!(!p.kind.is_standard());
        assert_eq!(
            p.joined_at,
            DateTime::from_timestamp_millis(1_700_000_000_250)
        );
    }

    #[test]
    fn an_empty_disconnect_reason_is_no_reason() {
        for reason in [r#""""#, r#""UNKNOWN_REASON""#, "0"] {
            let body = format!(
                r#"{{"event":"participant_left","id":"EV_3","room":{{"name":"demo","sid":"RM_1"}},
                    "participant":{{"sid":"PA_1","identity":"alice","disconnectReason":{reason}}}}}"#
            );
            let delivery = parse(body.as_bytes(), now()).unwrap();
            let Action::Apply {
                event: RoomEvent::ParticipantLeft(_, why),
                ..
            } = &delivery.action
            else {
                panic!("{:?}", delivery.action);
            };
            assert_eq!(why, &LeaveReason::Left(None), "disconnectReason {reason}");
        }
    }

    #[test]
    fn events_roomd_does_not_apply_are_recorded() {
        let body = br#"{"event":"track_published","id":"EV_2","room":{"name":"demo"},
                        "participant":{"identity":"alice"}}"#;
        let delivery = parse(body, now()).unwrap();
        assert!(matches!(
            delivery.action,
            Action::Record {
                participant: Some(_),
                ..
            }
        ));
        // Without a creation time, the event happened when it arrived.
        assert_eq!(delivery.created_at, None);
    }

    /// The fallback reads a body as pbjson does: `STATE` in `body` becomes
    /// a state pbjson knows, then one it does not (roomd never reads it).
    #[test]
    fn the_fallback_reads_what_pbjson_reads() {
        let bodies = [
            r#"{"event":"room_started","egress_info":{"room_name":"eg","room_id":"RM_eg"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"room_started","ingress_info":{"room_name":"in"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"room_started","egressInfo":{"roomName":"eg","roomId":"RM_eg"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"room_started","room":{"sid":"RM_a"},"egressInfo":{"roomName":"eg","roomId":"RM_b"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"room_started","egressInfo":{"roomName":"eg"},"ingressInfo":{"roomName":"in"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"room_started","egressInfo":{},"ingressInfo":{"roomName":"in"},"participant":{"state":"STATE"}}"#,
            r#"{"event":"participant_left","id":"EV_1","created_at":"1700000000","room":{"name":"r","sid":"RM_r","creation_time":"1699999000","creation_time_ms":"1699999000123"},"participant":{"sid":"PA_1","identity":"i","state":"STATE","joined_at":"1699999500","joined_at_ms":"1699999500456","disconnect_reason":"CLIENT_INITIATED"}}"#,
        ];
        for body in bodies {
            let known = parse(body.replace("STATE", "ACTIVE").as_bytes(), now());
            let unknown = parse(body.replace("STATE", "SOMETHING_NEW").as_bytes(), now());
            assert_eq!(known, unknown, "{body}");
            // Only an empty egress room names no room, through both.
            assert_eq!(
                known.is_ok(),
                !body.contains(r#""egressInfo":{}"#),
                "{body}"
            );
        }
    }

    #[test]
    fn a_field_roomd_does_not_read_may_nest_deep_when_pbjson_refuses_the_body() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        // `HOLOGRAM` is no kind pbjson knows, so the body goes to the
        // reader of known fields.
        let body = format!(
            r#"{{"event":"participant_joined","id":"EV_deep","extra":{deep},
                "room":{{"name":"demo","sid":"RM_d","more":{deep}}},
                "participant":{{"sid":"PA_d","identity":"dee","kind":"HOLOGRAM","more":{deep}}}}}"#
        );
        let delivery = parse(body.as_bytes(), now()).expect("applied from the known fields");
        let Action::Apply { room, event } = delivery.action else {
            panic!("a join is applied")
        };
        assert_eq!(
            (room.name.as_str(), room.sid.as_deref()),
            ("demo", Some("RM_d"))
        );
        let RoomEvent::ParticipantJoined(p) = event else {
            panic!("a join")
        };
        assert_eq!(&*p.identity, "dee");
        assert_eq!(p.kind, ParticipantKind::from_name("HOLOGRAM"));
        // A field roomd reads is still checked for its type.
        let wrong =
            br#"{"event":"room_started","room":[{"name":"x"}],"participant":{"kind":"HOLOGRAM"}}"#;
        assert_eq!(
            parse(wrong, now()).unwrap_err(),
            ParseError::WrongType {
                field: "room",
                expected: "an object"
            }
        );
    }

    /// Deep nesting where roomd reads a string is the wrong type, and the
    /// answer says which field (it said "not JSON: recursion limit").
    #[test]
    fn a_deep_value_where_roomd_reads_a_string_is_refused_by_its_field() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let deep_object = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        for (body, field) in [
            (
                format!(r#"{{"event":"room_started","room":{{"name":{deep}}}}}"#),
                "room.name",
            ),
            (
                format!(
                    r#"{{"event":"participant_joined","room":{{"name":"r"}},"participant":{{"identity":{deep_object},"kind":"HOLOGRAM"}}}}"#
                ),
                "participant.identity",
            ),
            (format!(r#"{{"event":{deep}}}"#), "event"),
        ] {
            assert_eq!(
                parse(body.as_bytes(), now()).unwrap_err(),
                ParseError::WrongType {
                    field,
                    expected: "a string"
                },
                "{body}"
            );
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not in KNOWN")]
    fn a_field_read_but_not_kept_by_the_fallback_fails_loudly() {
        key_of("room.metadata");
    }

    #[test]
    fn what_roomd_cannot_apply_or_store_is_refused_with_its_field() {
        let long_name = format!(
            r#"{{"event":"room_started","room":{{"name":"{}"}}}}"#,
            "n".repeat(MAX_KEY_BYTES + 1)
        );
        let cases: [(&[u8], ParseError); 7] = [
            (b"not json", ParseError::NotJson(String::new())),
            (b"[1]", ParseError::NotAnObject),
            (br#"{"id":"EV_3"}"#, ParseError::Missing("event")),
            (
                br#"{"event":"participant_joined","room":{"name":"demo"}}"#,
                ParseError::Missing("participant.identity"),
            ),
            (
                br#"{"event":"room_started","room":{"name":7}}"#,
                ParseError::WrongType {
                    field: "room.name",
                    expected: "a string",
                },
            ),
            (
                br#"{"event":"room_started","room":{"name":"a\u0000b"}}"#,
                ParseError::Nul("room.name"),
            ),
            (
                long_name.as_bytes(),
                ParseError::TooLong {
                    field: "room.name",
                    len: MAX_KEY_BYTES + 1,
                    limit: MAX_KEY_BYTES,
                },
            ),
        ];
        for (body, expected) in cases {
            let error = parse(body, now()).unwrap_err();
            match expected {
                // serde_json's words are its own.
                ParseError::NotJson(_) => assert!(matches!(error, ParseError::NotJson(_))),
                _ => assert_eq!(error, expected, "{}", String::from_utf8_lossy(body)),
            }
        }
    }
}
