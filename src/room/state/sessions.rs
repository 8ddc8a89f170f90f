//! Every session a room instance has seen, found by its key: the
//! participant sid, or the identity for bodies without one.
//!
//! The key is read from the row itself, so the table holds one pointer per
//! session. An ordered map kept a copy of the key beside each row, in
//! B-tree nodes about two thirds full: 52 bytes per open participant by
//! heaptrack (1,000 rooms x 100); the table saved 59 of them in RSS.

use std::sync::Arc;

use hashbrown::HashTable;

use crate::record::SessionRecord;

/// How a session is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionKey<'a> {
    Sid(&'a str),
    /// For bodies without a participant sid.
    Identity(&'a str),
}

impl<'a> SessionKey<'a> {
    pub fn of(identity: &'a str, sid: Option<&'a str>) -> Self {
        match sid {
            Some(sid) => Self::Sid(sid),
            None => Self::Identity(identity),
        }
    }

    pub fn of_row(row: &'a SessionRecord) -> Self {
        Self::of(&row.identity, row.sid.as_deref())
    }
}

fn hash(key: SessionKey<'_>) -> u64 {
    crate::seed::hash(key)
}

#[derive(Debug, Clone, Default)]
pub struct Sessions {
    rows: HashTable<Arc<SessionRecord>>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn get(&self, key: SessionKey<'_>) -> Option<&Arc<SessionRecord>> {
        self.rows
            .find(hash(key), |row| SessionKey::of_row(row) == key)
    }

    /// The row under `key`. A caller may change the row, but not its key
    /// (its sid and identity): the table would no longer find it.
    pub fn get_mut(&mut self, key: SessionKey<'_>) -> Option<&mut Arc<SessionRecord>> {
        self.rows
            .find_mut(hash(key), |row| SessionKey::of_row(row) == key)
    }

    pub fn contains(&self, key: SessionKey<'_>) -> bool {
        self.get(key).is_some()
    }

    /// Puts `row` under its key, in place of any row there.
    pub fn insert(&mut self, row: Arc<SessionRecord>) {
        let entry = self.rows.entry(
            hash(SessionKey::of_row(&row)),
            |old| SessionKey::of_row(old) == SessionKey::of_row(&row),
            |old| hash(SessionKey::of_row(old)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut found) => *found.get_mut() = row,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(row);
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<SessionRecord>> {
        self.rows.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Arc<SessionRecord>> {
        self.rows.iter_mut()
    }

    /// The rows in key order, for changes whose order should not depend on
    /// the table's hashing (a room's end, a reconciliation).
    pub fn sorted_mut(&mut self) -> Vec<&mut Arc<SessionRecord>> {
        let mut rows: Vec<_> = self.rows.iter_mut().collect();
        rows.sort_unstable_by(|a, b| SessionKey::of_row(a).cmp(&SessionKey::of_row(b)));
        rows
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&SessionRecord) -> bool) {
        self.rows.retain(|row| keep(row));
    }
}

/// The same rows under the same keys, whatever the table's layout.
impl PartialEq for Sessions {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .values()
                .all(|row| other.get(SessionKey::of_row(row)) == Some(row))
    }
}

impl Eq for Sessions {}
