//! Fuzzing in CI's time: property tests that feed the webhook path
//! (verification, parsing, the room state machine; src/harness.rs) with
//! LiveKit-shaped bodies whose fields take odd values, with byte-level
//! mutations of them, and with raw bytes. The harness panics on any broken
//! invariant; these must never panic. Longer runs: `fuzz/` (cargo fuzz).
//! Inputs that once failed are kept in tests/fuzz_regressions/.

use proptest::prelude::*;
use roomd::harness::Harness;
use serde_json::{Value, json};

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = T> + use<T> {
    proptest::sample::select(items.to_vec())
}

/// A JSON value that is sometimes the right type and sometimes not.
fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1_700_000_000i64..1_700_000_010).prop_map(|t| json!(t)),
        (1_700_000_000i64..1_700_000_010).prop_map(|t| json!(t.to_string())),
        pick(&[
            json!(0),
            json!(-1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!("soon"),
            json!(1.5),
            Value::Null
        ]),
    ]
}

fn participant() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(pick(&["PA_1", "PA_2", "PA_3", "PA_4", ""])),
        pick(&["ann", "bob", "cyd", "", "ann\u{0}", "ünï"]),
        pick(&[
            json!("STANDARD"),
            json!("AGENT"),
            json!("SIP"),
            json!("EGRESS"),
            json!("MARTIAN"),
            json!(1),
            json!(99),
            Value::Null,
        ]),
        pick(&[
            json!("ACTIVE"),
            json!("DISCONNECTED"),
            json!("JOINING"),
            json!(3),
            json!("SLEEPY"),
        ]),
        timestamp(),
    )
        .prop_map(|(sid, identity, kind, state, joined)| {
            let mut p =
                json!({ "identity": identity, "kind": kind, "state": state, "joinedAt": joined });
            if let Some(sid) = sid {
                p["sid"] = json!(sid);
            }
            p
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        pick(&[
            "room_started",
            "room_finished",
            "participant_joined",
            "participant_left",
            "participant_connection_aborted",
            "track_published",
            "egress_started",
            "",
            "ROOM_STARTED",
        ]),
        pick(&["room-a", "room-b", "", "room a/b"]),
        proptest::option::of(pick(&["RM_1", "RM_2", ""])),
        proptest::option::of(participant()),
        proptest::option::of(pick(&["EV_1", "EV_2", "EV_3", "EV_4", "EV_5", ""])),
        timestamp(),
    )
        .prop_map(|(event, name, sid, participant, id, created)| {
            let mut room = json!({ "name": name });
            if let Some(sid) = sid {
                room["sid"] = json!(sid);
            }
            let mut body = json!({ "event": event, "room": room, "createdAt": created });
            if let Some(p) = participant {
                body["participant"] = p;
            }
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            serde_json::to_vec(&body).unwrap()
        })
}

/// A body with a few bytes changed, dropped or added.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        body(),
        proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let at = usize::from(at) % bytes.len();
                match how {
                    0 => bytes[at] = byte,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn livekit_shaped_sequences_keep_every_invariant(bodies in proptest::collection::vec(body(), 1..24)) {
        let mut harness = Harness::default();
        for b in &bodies {
            harness.deliver(b);
        }
    }

    #[test]
    fn mutated_bodies_keep_every_invariant(bodies in proptest::collection::vec(prop_oneof![body(), mutated()], 1..16)) {
        let mut harness = Harness::default();
        for b in &bodies {
            harness.deliver(b);
        }
    }

    #[test]
    fn raw_bytes_keep_every_invariant(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        Harness::run(&bytes);
    }
}

/// Inputs the fuzzers found (or that guard a past fix), run on every test.
#[test]
fn kept_fuzz_inputs_still_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz_regressions") {
        let path = entry.unwrap().path();
        Harness::run(&std::fs::read(&path).unwrap());
        ran += 1;
    }
    assert!(ran > 0, "the regression corpus is not empty");
}
