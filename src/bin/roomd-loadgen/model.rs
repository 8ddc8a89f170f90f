//! The ground truth: what LiveKit would send for each room, and what the room
//! must look like once every one of those events has been delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use roomd::livekit::body::{BodyParticipant, webhook_body};
use roomd::livekit::sign_webhook;

/// splitmix64: small, seedable, good enough to pick events.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What the rooms do once everyone is in.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// People in each room at once.
    pub participants: usize,
    /// Of the churn steps, the share that are reconnects (a new sid joins for
    /// an identity that is in, then the old sid leaves).
    pub reconnects: f64,
    /// Of the leaves, the share sent as `participant_connection_aborted`.
    pub aborts: f64,
}

/// One signed delivery.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub body: String,
    pub token: String,
}

/// One room as LiveKit sees it.
pub struct RoomModel {
    pub name: String,
    sid: String,
    run: String,
    index: usize,
    rng: Rng,
    events: u64,
    people: u64,
    sessions: u64,
    started: bool,
    /// Rounds of churn sent so far.
    pub rounds: usize,
    /// Whether the room finishes after its rounds (`room_finished`).
    finishes: bool,
    finished: bool,
    /// identity -> its open sids, oldest first.
    open: BTreeMap<String, Vec<String>>,
}

/// Tokens outlive any run, as LiveKit's do (they are checked on arrival).
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

pub struct Signer {
    pub api_key: String,
    pub api_secret: String,
}

impl RoomModel {
    pub fn new(run: &str, index: usize, seed: u64) -> Self {
        Self {
            name: format!("lg-{run}-{index}"),
            // Separated, so that runs "a" and "a1" never share a room sid.
            sid: format!("RM_{run}_{index}"),
            run: run.to_owned(),
            index,
            rng: Rng::new(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            events: 0,
            people: 0,
            sessions: 0,
            started: false,
            rounds: 0,
            finishes: false,
            finished: false,
            open: BTreeMap::new(),
        }
    }

    /// This room finishes after its rounds, as a meeting does.
    pub fn finishing(mut self) -> Self {
        self.finishes = true;
        self
    }

    /// The `room_finished` LiveKit sends when the room is due to finish and
    /// has not yet; everyone in it is then gone.
    pub fn finish_events(&mut self, signer: &Signer) -> Vec<Event> {
        if !self.finishes || self.finished {
            return Vec::new();
        }
        self.finished = true;
        self.open.clear();
        let mut out = Vec::new();
        self.push(&mut out, signer, "room_finished", None);
        out
    }

    /// Whether the start and the first joins have been sent.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Distinct identities with an open session: the count roomd must serve.
    pub fn expected_count(&self) -> usize {
        self.open.len()
    }

    pub fn open_sids(&self) -> impl Iterator<Item = &str> {
        self.open.values().flatten().map(String::as_str)
    }

    /// The next events LiveKit would send for this room, in LiveKit's order:
    /// the start and everyone joining on the first call, then `steps` churn
    /// steps. The truth moves as if all of them were delivered.
    pub fn next_events(&mut self, mix: &Mix, steps: usize, signer: &Signer) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.push(&mut out, signer, "room_started", None);
            while self.open.len() < mix.participants {
                self.join_new(&mut out, signer);
            }
            return out;
        }
        self.rounds += 1;
        for _ in 0..steps {
            if self.open.len() < mix.participants || self.open.is_empty() {
                self.join_new(&mut out, signer);
                continue;
            }
            let identity = self
                .open
                .keys()
                .nth(self.rng.below(self.open.len()))
                .cloned()
                .expect("the room has people");
            if self.rng.chance(mix.reconnects) {
                let sid = self.new_sid();
                self.open.get_mut(&identity).unwrap().push(sid.clone());
                self.push_person(&mut out, signer, "participant_joined", &identity, &sid);
                let old = self.open.get_mut(&identity).unwrap().remove(0);
                self.push_person(&mut out, signer, "participant_left", &identity, &old);
            } else {
                let sids = self.open.remove(&identity).unwrap();
                let event = if self.rng.chance(mix.aborts) {
                    "participant_connection_aborted"
                } else {
                    "participant_left"
                };
                for sid in sids {
                    self.push_person(&mut out, signer, event, &identity, &sid);
                }
            }
        }
        out
    }

    fn new_sid(&mut self) -> String {
        self.sessions += 1;
        format!("PA_{}_{}_{}", self.run, self.index, self.sessions)
    }

    fn join_new(&mut self, out: &mut Vec<Event>, signer: &Signer) {
        self.people += 1;
        let identity = format!("user-{}", self.people);
        let sid = self.new_sid();
        self.open.insert(identity.clone(), vec![sid.clone()]);
        self.push_person(out, signer, "participant_joined", &identity, &sid);
    }

    fn push_person(
        &mut self,
        out: &mut Vec<Event>,
        signer: &Signer,
        event: &str,
        identity: &str,
        sid: &str,
    ) {
        // Every tenth person is an agent, so kinds are exercised too.
        let agent = identity.ends_with('0');
        let p = BodyParticipant {
            sid: sid.to_owned(),
            identity: identity.to_owned(),
            kind: if agent { "AGENT".into() } else { String::new() },
        };
        self.push(out, signer, event, Some(&p));
    }

    fn push(
        &mut self,
        out: &mut Vec<Event>,
        signer: &Signer,
        event: &str,
        p: Option<&BodyParticipant>,
    ) {
        self.events += 1;
        let id = format!("EV_{}_{}_{}", self.run, self.index, self.events);
        let now = chrono::Utc::now().timestamp();
        let body = webhook_body(event, &id, now, &self.name, &self.sid, p);
        let token = sign_webhook(
            &signer.api_key,
            &signer.api_secret,
            body.as_bytes(),
            TOKEN_TTL,
        )
        .expect("HS256 signing cannot fail with a non-empty secret");
        out.push(Event { id, body, token });
    }

    /// LiveKit's delivery of `events`: each may arrive up to `window - 1`
    /// places late, and some twice (a retry after a lost answer).
    pub fn arrange(&mut self, events: Vec<Event>, window: usize, duplicates: f64) -> Vec<Event> {
        let mut events = events;
        let n = events.len();
        if window > 1 {
            for i in 0..n {
                let j = i + self.rng.below(window.min(n - i));
                events.swap(i, j);
            }
        }
        let mut out = Vec::with_capacity(n + n / 4);
        let mut later: Vec<(usize, Event)> = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            if self.rng.chance(duplicates) {
                later.push((i + 1 + self.rng.below(window.max(1)), event.clone()));
            }
            out.push(event);
            let (due, rest): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, _)| *at <= i + 1);
            later = rest;
            out.extend(due.into_iter().map(|(_, e)| e));
        }
        out.extend(later.into_iter().map(|(_, e)| e));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer {
            api_key: "devkey".into(),
            api_secret: "secret".into(),
        }
    }

    #[test]
    fn churn_keeps_the_room_at_its_size_and_ids_unique() {
        let mix = Mix {
            participants: 5,
            reconnects: 0.3,
            aborts: 0.2,
        };
        let mut room = RoomModel::new("t", 0, 7);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..50 {
            for e in room.next_events(&mix, 3, &signer()) {
                assert!(ids.insert(e.id));
            }
            assert!(room.expected_count() >= 4 && room.expected_count() <= 5);
        }
        assert_eq!(room.open_sids().count(), room.expected_count());
    }

    #[test]
    fn arranging_keeps_every_event_and_adds_only_copies() {
        let mut room = RoomModel::new("t", 1, 9);
        let mix = Mix {
            participants: 20,
            reconnects: 0.0,
            aborts: 0.0,
        };
        let events = room.next_events(&mix, 0, &signer());
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let arranged = room.arrange(events, 4, 0.5);
        let mut seen: Vec<String> = arranged.iter().map(|e| e.id.clone()).collect();
        assert!(
            seen.len() > ids.len(),
            "some copies at a 50% duplicate rate"
        );
        assert_ne!(
            seen.iter().take(ids.len()).collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        seen.sort();
        seen.dedup();
        let mut expected = ids;
        expected.sort();
        assert_eq!(seen, expected);
    }
}
