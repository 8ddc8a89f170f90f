//! Who is in a room instance now: the count, the count per kind and the
//! ordered participant list, kept by the state machine as sessions open and
//! close instead of rebuilt from every session after every event.
//!
//! An actor publishes a snapshot after every commit. Rebuilding the list
//! meant copying and sorting every open session: under LiveKit's serial
//! delivery a 2,000-person room paid that on each of its joins. The list is
//! a persistent ordered set instead: the snapshot shares it, and an event
//! touches only the sessions it changed, O(log n) each.
//!
//! It holds the state's own session rows (shared, not copied). Most people
//! are standard participants, so only the other kinds get a tally of their
//! own: an open participant costs one slot in `people` and one pointer in
//! the list.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashTable;
use imbl::OrdSet;
use serde::{Serialize, Serializer};

use super::snapshot::ParticipantView;
use crate::event::ParticipantKind;
use crate::record::SessionRecord;

/// One open session in the list's order: by join time, then identity, then sid.
#[derive(Debug, Clone)]
struct Ranked(Arc<SessionRecord>);

impl Ranked {
    fn key(&self) -> (Option<chrono::DateTime<chrono::Utc>>, &str, Option<&str>) {
        (self.0.joined_at(), &self.0.identity, self.0.sid.as_deref())
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantList(OrdSet<Ranked>);

impl ParticipantList {
    pub fn iter(&self) -> impl Iterator<Item = ParticipantView<'_>> {
        self.0.iter().map(|r| ParticipantView::from(r.0.as_ref()))
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

/// Who is in one room instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Present {
    /// Identities with an open session, and how many each has open: the
    /// room's count is its length.
    people: Tally,
    /// Open sessions of kinds other than standard, per identity, sorted
    /// by kind. Not a map: a room has one or two such kinds, and a
    /// `BTreeMap`'s first node cost each room that had any 808 bytes
    /// (heaptrack).
    others: Vec<(ParticipantKind, Tally)>,
    /// Identities whose open sessions are all of other kinds: everyone
    /// else has a standard session.
    only_others: usize,
    list: ParticipantList,
}

/// Identities and how many open sessions each has. An entry keeps one of
/// the identity's session rows for its key, so a slot is 16 bytes where a
/// map keyed by a shared copy of the identity took 24. The row it keeps
/// may have closed since (another of the identity's sessions is still
/// open): at most one such row per open identity stays allocated.
#[derive(Debug, Clone, Default)]
struct Tally(HashTable<(Arc<SessionRecord>, u32)>);

impl Tally {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, identity: &str) -> Option<u32> {
        self.0
            .find(hash(identity), |(row, _)| *row.identity == *identity)
            .map(|&(_, open)| open)
    }

    fn add(&mut self, session: &Arc<SessionRecord>) {
        let identity: &str = &session.identity;
        let entry = self.0.entry(
            hash(identity),
            |(row, _)| *row.identity == *identity,
            |(row, _)| hash(&row.identity),
        );
        entry.or_insert_with(|| (session.clone(), 0)).get_mut().1 += 1;
    }

    fn remove(&mut self, identity: &str) {
        if let Ok(mut found) = self
            .0
            .find_entry(hash(identity), |(row, _)| *row.identity == *identity)
        {
            found.get_mut().1 -= 1;
            if found.get().1 == 0 {
                found.remove();
            }
        }
    }
}

fn hash(identity: &str) -> u64 {
    crate::seed::hash(identity)
}

/// The same identities with the same counts, whatever rows key them.
impl PartialEq for Tally {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .0
                .iter()
                .all(|(row, open)| other.get(&row.identity) == Some(*open))
    }
}

impl Eq for Tally {}

impl Present {
    /// From scratch, from every open session.
    pub fn of<'a>(open: impl IntoIterator<Item = &'a Arc<SessionRecord>>) -> Self {
        let mut present = Self::default();
        for session in open {
            present.open(session);
        }
        present
    }

    /// Distinct identities with an open session.
    pub fn count(&self) -> usize {
        self.people.len()
    }

    pub fn list(&self) -> &ParticipantList {
        &self.list
    }

    /// Distinct identities with an open session, per participant kind.
    pub fn counts_by_kind(&self) -> BTreeMap<ParticipantKind, usize> {
        let standard = self.people.len() - self.only_others;
        let mut counts: BTreeMap<ParticipantKind, usize> = self
            .others
            .iter()
            .map(|(kind, people)| (kind.clone(), people.len()))
            .collect();
        if standard > 0 {
            counts.insert(ParticipantKind::standard(), standard);
        }
        counts
    }

    /// `session` opened.
    pub fn open(&mut self, session: &Arc<SessionRecord>) {
        let was = self.only_others_of(&session.identity);
        self.people.add(session);
        if !session.kind.is_standard() {
            let i = self.kind_at(&session.kind).unwrap_or_else(|i| {
                // Room for this kind only: a vector's first growth makes four.
                self.others.reserve_exact(1);
                self.others
                    .insert(i, (session.kind.clone(), Tally::default()));
                i
            });
            self.others[i].1.add(session);
        }
        self.moved(was, &session.identity);
        self.list.0.insert(Ranked(session.clone()));
    }

    /// `session` (as it was while open) closed.
    pub fn close(&mut self, session: &Arc<SessionRecord>) {
        if self.list.0.remove(&Ranked(session.clone())).is_none() {
            return;
        }
        let was = self.only_others_of(&session.identity);
        let identity: &str = &session.identity;
        self.people.remove(identity);
        if let Ok(i) = self.kind_at(&session.kind) {
            self.others[i].1.remove(identity);
            if self.others[i].1.is_empty() {
                self.others.remove(i);
            }
        }
        self.moved(was, identity);
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether every open session of `identity` is of another kind than
    /// standard (false when it has none open).
    fn only_others_of(&self, identity: &str) -> bool {
        self.people.get(identity).is_some_and(|open| {
            let others: u32 = self
                .others
                .iter()
                .filter_map(|(_, people)| people.get(identity))
                .sum();
            others == open
        })
    }

    /// Where `kind` is in `others`, or where it would go.
    fn kind_at(&self, kind: &ParticipantKind) -> Result<usize, usize> {
        self.others.binary_search_by(|(k, _)| k.cmp(kind))
    }

    fn moved(&mut self, was: bool, identity: &str) {
        match (was, self.only_others_of(identity)) {
            (false, true) => self.only_others += 1,
            (true, false) => self.only_others -= 1,
            _ => {}
        }
    }
}
