//! LiveKit-format webhook bodies (protobuf JSON: camelCase, 64-bit integers
//! as strings), built in one line per event.

use serde_json::{Value, json};

#[derive(Clone)]
pub struct Event {
    body: Value,
}

pub fn event(name: &str) -> Event {
    Event {
        body: json!({ "event": name }),
    }
}

pub fn room_started(room: &str, sid: &str) -> Event {
    event("room_started").room(room, sid)
}

pub fn room_finished(room: &str, sid: &str) -> Event {
    event("room_finished").room(room, sid)
}

pub fn joined(room: &str, room_sid: &str, sid: &str, identity: &str) -> Event {
    event("participant_joined")
        .room(room, room_sid)
        .participant(sid, identity)
}

pub fn left(room: &str, room_sid: &str, sid: &str, identity: &str) -> Event {
    event("participant_left")
        .room(room, room_sid)
        .participant(sid, identity)
}

pub fn aborted(room: &str, room_sid: &str, sid: &str, identity: &str) -> Event {
    event("participant_connection_aborted")
        .room(room, room_sid)
        .participant(sid, identity)
}

impl Event {
    pub fn room(mut self, name: &str, sid: &str) -> Self {
        let mut room = json!({ "name": name, "emptyTimeout": 300 });
        if !sid.is_empty() {
            room["sid"] = json!(sid);
        }
        self.body["room"] = room;
        self
    }

    pub fn participant(mut self, sid: &str, identity: &str) -> Self {
        let mut p = json!({ "identity": identity, "state": "ACTIVE" });
        if !sid.is_empty() {
            p["sid"] = json!(sid);
        }
        self.body["participant"] = p;
        self
    }

    pub fn kind(mut self, kind: &str) -> Self {
        self.body["participant"]["kind"] = json!(kind);
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.body["id"] = json!(id);
        self
    }

    /// LiveKit's `createdAt` (seconds, as a string like protobuf JSON sends it).
    pub fn at(mut self, secs: i64) -> Self {
        self.body["createdAt"] = json!(secs.to_string());
        self
    }

    pub fn set(mut self, pointer_parent: &str, key: &str, value: Value) -> Self {
        let target = if pointer_parent.is_empty() {
            &mut self.body
        } else {
            self.body.pointer_mut(pointer_parent).expect("path exists")
        };
        target[key] = value;
        self
    }

    pub fn body(&self) -> String {
        self.body.to_string()
    }
}
