//! Live updates for frontends: what each room's actor committed, fanned out
//! to Server-Sent-Events subscribers.
//!
//! The actor only pushes into a `broadcast` channel, which never waits: a
//! subscriber that does not keep up lags and is sent a fresh snapshot, it
//! never slows the room down. The last `RING` updates are kept, so a client
//! that reconnects with `Last-Event-ID` gets exactly what it missed, or a
//! fresh snapshot when that is no longer possible (too old, or an id of
//! another feed). Each feed has an id of its own that its event ids carry,
//! so an id is never reused for a room: not after its actor retires and a
//! new feed starts counting again, nor after a restart.
//!
//! A feed lives while its room has an actor or a subscriber: the actor's
//! retirement closes it, the last subscriber of a room without an actor
//! removes it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

use super::snapshot::RoomView;

/// Updates kept per room for resuming clients.
const RING: usize = 128;

/// One committed change, as subscribers see it.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    #[serde(skip)]
    pub id: String,
    /// Its place in the feed: a stream that sent a snapshot standing for
    /// `seq` skips updates up to it.
    #[serde(skip)]
    pub seq: u64,
    /// What happened: the webhook's event name, or `reconcile`.
    pub event: Arc<str>,
    pub identity: Option<String>,
    pub room: RoomView,
}

/// The sequence number of the last update and the last `RING` updates.
#[derive(Default)]
struct Ring {
    last: u64,
    kept: VecDeque<(u64, Arc<Update>)>,
}

struct Feed {
    /// What this feed's event ids start with.
    uid: String,
    /// One lock for both publishing and subscribing, so nobody sees a gap.
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Update>>,
}

impl Feed {
    fn new() -> Self {
        Self {
            uid: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            ring: Mutex::new(Ring::default()),
            tx: broadcast::channel(RING).0,
        }
    }

    fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.uid)
    }
}

/// What a new subscriber starts from.
pub struct Subscription {
    /// Updates missed since `Last-Event-ID`, or `None`: start from a snapshot.
    pub replay: Option<Vec<Arc<Update>>>,
    /// The id a snapshot sent now stands for.
    pub snapshot_id: String,
    /// What comes after the replay or the snapshot.
    pub cursor: Cursor,
}

/// Where one subscriber is in its room's feed.
pub struct Cursor {
    updates: broadcast::Receiver<Arc<Update>>,
    /// Updates up to this one are in what the subscriber was already sent.
    seen_through: u64,
}

/// What a subscriber is sent next.
pub enum Next {
    Update(Arc<Update>),
    /// It fell behind: send the room as it is now, standing for `id`; the
    /// older updates still buffered for it are skipped, so it never sees
    /// the room go backwards.
    Resync {
        id: String,
    },
    /// The feed ended (the room's actor retired).
    Closed,
}

impl Cursor {
    pub async fn next(&mut self, feeds: &Feeds, name: &str) -> Next {
        loop {
            match self.updates.recv().await {
                Ok(update) if update.seq <= self.seen_through => continue,
                Ok(update) => return Next::Update(update),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let Some((id, seq)) = feeds.position(name) else {
                        return Next::Closed;
                    };
                    self.seen_through = seq;
                    return Next::Resync { id };
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

#[derive(Default)]
pub struct Feeds {
    rooms: DashMap<String, Arc<Feed>>,
}

impl Feeds {
    /// Records a committed change; a no-op for rooms nobody subscribed to
    /// (`room` is only built when someone listens).
    pub fn publish(
        &self,
        name: &str,
        event: &str,
        identity: Option<String>,
        room: impl FnOnce() -> RoomView,
    ) {
        let Some(feed) = self.rooms.get(name).map(|f| f.clone()) else {
            return;
        };
        let mut ring = feed.ring.lock().expect("feed lock");
        ring.last += 1;
        let seq = ring.last;
        let update = Arc::new(Update {
            id: feed.id(seq),
            seq,
            event: event.into(),
            identity,
            room: room(),
        });
        if ring.kept.len() == RING {
            ring.kept.pop_front();
        }
        ring.kept.push_back((seq, update.clone()));
        // Never waits: a receiver that falls behind lags instead.
        let _ = feed.tx.send(update);
    }

    pub fn subscribe(&self, name: &str, last_event_id: Option<&str>) -> Subscription {
        // The receiver is taken inside the map's entry lock, so `release`
        // never removes a feed between its lookup and the subscription.
        let entry = self
            .rooms
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Feed::new()));
        let feed = entry.value();
        let ring = feed.ring.lock().expect("feed lock");
        let Ring { last, kept } = &*ring;
        let resume_after = last_event_id
            .and_then(|id| id.split_once('-'))
            .filter(|(uid, _)| *uid == feed.uid)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|seq| seq <= last);
        let replay = resume_after.and_then(|after| {
            let oldest = kept.front().map_or(last + 1, |(seq, _)| *seq);
            (after + 1 >= oldest).then(|| {
                kept.iter()
                    .filter(|(seq, _)| *seq > after)
                    .map(|(_, u)| u.clone())
                    .collect()
            })
        });
        Subscription {
            replay,
            snapshot_id: feed.id(*last),
            cursor: Cursor {
                updates: feed.tx.subscribe(),
                seen_through: *last,
            },
        }
    }

    /// The id and place a snapshot taken now stands for, for a subscriber
    /// that fell behind. The actor publishes its snapshot before the
    /// update, so a snapshot read after this holds at least this update.
    fn position(&self, name: &str) -> Option<(String, u64)> {
        let feed = self.rooms.get(name)?;
        let last = feed.ring.lock().expect("feed lock").last;
        Some((feed.id(last), last))
    }

    /// A subscriber of `name` left: the feed goes when nobody listens and
    /// `keep` (the room has an actor, whose feed lets clients resume) is false.
    pub fn release(&self, name: &str, keep: bool) {
        if !keep {
            self.rooms
                .remove_if(name, |_, feed| feed.tx.receiver_count() == 0);
        }
    }

    /// Rooms with a feed.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Ends a room's feed (its actor retired): subscribers' streams close and
    /// they reconnect to a snapshot.
    pub fn close(&self, name: &str) {
        self.rooms.remove(name);
    }

    /// Ends every live-update stream (at shutdown: a stream never finishes
    /// on its own, and graceful shutdown waits for every connection).
    pub fn close_all(&self) {
        self.rooms.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{RoomRecord, RoomStatus};

    fn view(count: i32) -> RoomView {
        RoomView::of_record(&RoomRecord {
            id: uuid::Uuid::nil(),
            name: "r".into(),
            sid: None,
            status: RoomStatus::Active,
            current_participants: count,
            started_at: chrono::Utc::now(),
            ended_at: None,
            end_reason: None,
            changed_at: None,
        })
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_resyncs_and_never_goes_backwards() {
        let feeds = Feeds::default();
        let mut sub = feeds.subscribe("r", None);
        // The publisher never waits for it.
        let last = RING as i32 + 1;
        for i in 1..=last {
            feeds.publish("r", "participant_joined", None, || view(i));
        }
        let Next::Resync { id } = sub.cursor.next(&feeds, "r").await else {
            panic!("a lagging subscriber resyncs");
        };
        assert!(id.ends_with(&format!("-{last}")), "{id}");
        // What is still buffered is older than that snapshot: never sent.
        let older = tokio::time::timeout(Duration::from_millis(50), sub.cursor.next(&feeds, "r"));
        assert!(
            older.await.is_err(),
            "an update older than the snapshot was sent"
        );
        feeds.publish("r", "participant_joined", None, || view(1000));
        let Next::Update(next) = sub.cursor.next(&feeds, "r").await else {
            panic!("an update");
        };
        assert_eq!(next.room.participant_count, 1000);
        assert_eq!(next.seq, last as u64 + 1);
    }

    #[tokio::test]
    async fn ids_are_never_reused_for_a_room_after_its_feed_closes() {
        let feeds = Feeds::default();
        let mut first = feeds.subscribe("r", None);
        feeds.publish("r", "participant_joined", None, || view(1));
        let Next::Update(old) = first.cursor.next(&feeds, "r").await else {
            panic!("an update");
        };
        // The actor retires; a new one publishes under the same name.
        feeds.close("r");
        assert!(matches!(first.cursor.next(&feeds, "r").await, Next::Closed));
        let mut second = feeds.subscribe("r", None);
        feeds.publish("r", "participant_joined", None, || view(2));
        let Next::Update(new) = second.cursor.next(&feeds, "r").await else {
            panic!("an update");
        };
        assert_ne!(old.id, new.id);
        // Resuming from the old feed's id cannot skip anything: a snapshot.
        assert!(feeds.subscribe("r", Some(&old.id)).replay.is_none());
    }

    #[test]
    fn resuming_replays_what_was_missed_or_asks_for_a_snapshot() {
        let feeds = Feeds::default();
        let first = feeds.subscribe("r", None);
        assert!(first.replay.is_none());
        for i in 1..=3 {
            feeds.publish("r", "participant_joined", None, || view(i));
        }
        let after_one = first.snapshot_id.replace("-0", "-1");
        let replay = feeds
            .subscribe("r", Some(&after_one))
            .replay
            .expect("resumable");
        assert_eq!(
            replay
                .iter()
                .map(|u| u.room.participant_count)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        // Too old to replay: the ring has moved past it.
        for i in 4..(RING as i32 + 10) {
            feeds.publish("r", "participant_joined", None, || view(i));
        }
        assert!(feeds.subscribe("r", Some(&after_one)).replay.is_none());
        // From the future, or another process: a snapshot.
        assert!(
            feeds
                .subscribe("r", Some(&first.snapshot_id.replace("-0", "-99999")))
                .replay
                .is_none()
        );
        assert!(feeds.subscribe("r", Some("other-1")).replay.is_none());
    }
}
