//! Who is in a room now, kept up to date from each commit's changed rows
//! instead of rebuilt from every session after every event.
//!
//! An actor publishes a snapshot after every commit. Rebuilding the list
//! meant copying and sorting every open session: under LiveKit's serial
//! delivery a 2,000-person room paid that on each of its joins. The list is
//! a persistent ordered set instead: the snapshot shares it, and a commit
//! touches only the sessions it changed, O(log n) each.
//!
//! It follows the state machine rather than being part of it: every session
//! the machine changes is among the commit's rows (that is how it is
//! persisted), so those rows say everything that moved. A new room
//! instance, a reconcile or a reload rebuilds it from the state. Debug
//! builds check it against a rebuild after every commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use imbl::OrdSet;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use super::snapshot::ParticipantView;
use super::state::RoomState;
use crate::record::SessionRecord;

/// One open session in the list's order: by join time, then identity, then sid.
#[derive(Debug, Clone)]
struct Ranked(Arc<ParticipantView>);

impl Ranked {
    fn key(&self) -> (Option<chrono::DateTime<chrono::Utc>>, &str, Option<&str>) {
        (self.0.joined_at, &self.0.identity, self.0.sid.as_deref())
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The open sessions of a room, oldest first. Cloning it is O(1).
#[derive(Debug, Clone, Default)]
pub struct ParticipantList(OrdSet<Ranked>);

impl ParticipantList {
    pub fn iter(&self) -> impl Iterator<Item = &ParticipantView> {
        self.0.iter().map(|r| r.0.as_ref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ParticipantList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// An actor's index of its room's current instance.
#[derive(Debug, Default)]
pub struct Presence {
    /// The instance (`rooms.id`) the index describes.
    instance: Option<Uuid>,
    list: ParticipantList,
    /// Session id to its entry in `list`.
    entries: HashMap<Uuid, Ranked>,
    /// Per kind, open sessions per identity.
    kinds: BTreeMap<String, HashMap<String, u32>>,
}

impl Presence {
    /// The index of `state`'s current instance, built from scratch.
    pub fn of(state: &RoomState) -> Self {
        let mut presence = Self::default();
        if let Some(instance) = state.current() {
            presence.instance = Some(instance.record().id);
            for session in instance.open_sessions() {
                presence.open(session);
            }
        }
        presence
    }

    /// Follows a commit: `changed` are the session rows it wrote.
    pub fn update<'a>(
        &mut self,
        state: &RoomState,
        changed: impl IntoIterator<Item = &'a SessionRecord>,
    ) {
        let current = state.current().map(|c| c.record().id);
        if current != self.instance {
            *self = Self::of(state);
            return;
        }
        for session in changed {
            if let Some(old) = self.entries.remove(&session.id) {
                self.list.0.remove(&old);
                self.forget(&old.0);
            }
            if session.is_open() && Some(session.room_id) == current {
                self.open(session);
            }
        }
        #[cfg(debug_assertions)]
        self.check(state);
    }

    pub fn list(&self) -> &ParticipantList {
        &self.list
    }

    /// Distinct identities with an open session, per participant kind.
    pub fn counts_by_kind(&self) -> BTreeMap<String, usize> {
        self.kinds
            .iter()
            .map(|(kind, people)| (kind.clone(), people.len()))
            .collect()
    }

    fn open(&mut self, session: &SessionRecord) {
        let entry = Ranked(Arc::new(ParticipantView::from(session)));
        *self
            .kinds
            .entry(session.kind.as_str().to_owned())
            .or_default()
            .entry(session.identity.clone())
            .or_default() += 1;
        self.list.0.insert(entry.clone());
        self.entries.insert(session.id, entry);
    }

    fn forget(&mut self, view: &ParticipantView) {
        let kind = view.kind.as_str();
        if let Some(people) = self.kinds.get_mut(kind) {
            if let Some(n) = people.get_mut(&view.identity) {
                *n -= 1;
                if *n == 0 {
                    people.remove(&view.identity);
                }
            }
            if people.is_empty() {
                self.kinds.remove(kind);
            }
        }
    }

    /// The index must equal one built from scratch, and agree with the
    /// state machine's count.
    #[cfg(debug_assertions)]
    fn check(&self, state: &RoomState) {
        let fresh = Self::of(state);
        let ours: Vec<_> = self.list.iter().collect();
        let theirs: Vec<_> = fresh.list.iter().collect();
        assert_eq!(
            format!("{ours:?}"),
            format!("{theirs:?}"),
            "presence list drifted"
        );
        assert_eq!(self.kinds, fresh.kinds, "presence counts drifted");
        if let Some(instance) = state.current() {
            check_count(self, instance);
        }
    }
}

#[cfg(debug_assertions)]
fn check_count(presence: &Presence, instance: &super::state::Instance) {
    let people: std::collections::HashSet<&str> =
        presence.list.iter().map(|v| v.identity.as_str()).collect();
    assert_eq!(
        people.len(),
        instance.participant_count(),
        "presence disagrees with the room's count"
    );
}
