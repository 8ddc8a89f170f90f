//! The webhook path without the network, for the fuzzers and the property
//! tests: verify, parse, apply to the room, and check what must hold for any
//! input. Compiled only with the `fuzzing` feature.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::Action;
use crate::livekit::{self, WebhookVerifier, sign_webhook};
use crate::room::state::{Outcome, RoomState};

const KEY: &str = "APIfuzz";
const SECRET: &str = "fuzz-secret-0123456789abcdef";

/// Rooms built up over one input's bodies.
pub struct Harness {
    verifier: WebhookVerifier,
    rooms: HashMap<String, RoomState>,
}

impl Default for Harness {
    fn default() -> Self {
        Self {
            verifier: WebhookVerifier::new(KEY, SECRET),
            rooms: HashMap::new(),
        }
    }
}

impl Harness {
    /// Runs every body in `input` (split at `\0`) through the path.
    pub fn run(input: &[u8]) {
        let mut harness = Self::default();
        for body in input.split(|b| *b == 0) {
            harness.deliver(body);
        }
    }

    /// One body. Panics when an invariant breaks.
    pub fn deliver(&mut self, body: &[u8]) {
        // Whatever the body, a token is only as good as its key, secret and
        // body hash.
        let token = sign_webhook(KEY, SECRET, body, Duration::from_secs(60)).expect("signing");
        assert!(self.verifier.verify(Some(&token), body).is_ok());
        let mut other = body.to_vec();
        other.push(b' ');
        assert!(self.verifier.verify(Some(&token), &other).is_err());
        let as_token = String::from_utf8_lossy(body);
        assert!(self.verifier.verify(Some(&as_token), body).is_err());
        let forged =
            sign_webhook(KEY, "not-the-secret", body, Duration::from_secs(60)).expect("signing");
        assert!(self.verifier.verify(Some(&forged), body).is_err());

        let Ok(delivery) = livekit::parse(body, crate::event::now()) else {
            return;
        };
        let Action::Apply { room, event } = &delivery.action else {
            return;
        };
        let state = self
            .rooms
            .entry(room.name.clone())
            .or_insert_with(|| RoomState::new(room.name.clone()));
        let transition = state.apply(room, event, delivery.at());
        check(state);
        if let (Some(current), Some(changed)) = (state.current(), transition.changes.rooms.last()) {
            assert_eq!(changed, current.record(), "the stored room row is the room");
        }
        // At least once delivery: the same event again changes nothing.
        let mut again = state.clone();
        let repeat = again.apply(room, event, delivery.at());
        assert_ne!(
            repeat.outcome,
            Outcome::Applied,
            "a repeat applied: {event:?}"
        );
        assert!(repeat.changes.rooms.is_empty() && repeat.changes.sessions.is_empty());
        assert_eq!(&again, state);
    }
}

fn check(state: &RoomState) {
    let Some(instance) = state.current() else {
        return;
    };
    let open: std::collections::HashSet<&str> =
        instance.open_sessions().map(|s| &*s.identity).collect();
    assert_eq!(instance.participant_count(), open.len());
    assert_eq!(
        instance.record().current_participants as usize,
        open.len(),
        "the stored count is the count"
    );
    if !instance.is_active() {
        assert!(open.is_empty(), "nobody is in a finished room");
    }
}
