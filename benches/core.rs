//! What the pure core costs in memory and allocations, counted exactly by a
//! counting allocator (no clocks: the figures repeat on any machine).
//!
//!   cargo bench --bench core
//!
//! Prints, for rooms filled by joins through the state machine (what a
//! live room's actor holds in memory):
//! - live heap bytes per open participant and per idle live room;
//! - allocations and bytes allocated per join and per leave, including the
//!   rows handed to the writer.
//!
//! The whole process's RSS per participant (scripts/bench.sh) adds the
//! allocator's own overhead and what the HTTP and database layers keep.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use chrono::{Duration, TimeZone, Utc};
use roomd::event::{LeaveReason, ParticipantKind, ParticipantRef, RoomEvent, RoomRef};
use roomd::room::state::RoomState;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        ALLOCATED.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        ALLOCATED.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const ROOMS: usize = 100;
const PEOPLE: usize = 1000;

/// One live room, as its actor keeps it.
struct Room {
    state: RoomState,
    room: RoomRef,
}

fn room(i: usize) -> RoomRef {
    RoomRef {
        name: format!("bench-room-{i}"),
        sid: Some(format!("RM_bench{i:07}")),
        created_at: Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap()),
    }
}

/// A participant as LiveKit names them: a UUID identity (the seed's
/// convention) and a `PA_` sid of 12 characters.
fn person(room: usize, n: usize) -> ParticipantRef {
    ParticipantRef {
        sid: Some(format!("PA_{room:05}{n:07}").into()),
        identity: format!("{:08x}-0000-4000-8000-{:012x}", room, n).into(),
        kind: ParticipantKind::standard(),
        name: None,
        joined_at: Some(Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap()),
    }
}

impl Room {
    fn apply(&mut self, event: &RoomEvent, at: chrono::DateTime<Utc>) {
        let transition = self.state.apply(&self.room, event, at);
        // The rows the writer gets, then drops once committed.
        drop(transition);
    }
}

struct Count {
    allocs: u64,
    bytes: u64,
}

fn counted(f: impl FnOnce()) -> Count {
    let (a, b) = (ALLOCS.load(Relaxed), ALLOCATED.load(Relaxed));
    f();
    Count {
        allocs: ALLOCS.load(Relaxed) - a,
        bytes: ALLOCATED.load(Relaxed) - b,
    }
}

fn main() {
    let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let base = LIVE.load(Relaxed);
    let mut rooms: Vec<Room> = (0..ROOMS)
        .map(|i| {
            let room = room(i);
            let mut r = Room {
                state: RoomState::new(room.name.clone()),
                room,
            };
            r.apply(&RoomEvent::RoomStarted, t0);
            r
        })
        .collect();
    let idle = (LIVE.load(Relaxed) - base) as f64 / ROOMS as f64;

    // Each event is made, applied and dropped, as a webhook's is: what stays
    // is what the room keeps. Only the apply is counted as the event's cost.
    let before = LIVE.load(Relaxed);
    let mut join_cost = Count {
        allocs: 0,
        bytes: 0,
    };
    for (r, room) in rooms.iter_mut().enumerate() {
        for n in 0..PEOPLE {
            let event = RoomEvent::ParticipantJoined(person(r, n));
            let c = counted(|| room.apply(&event, t0 + Duration::seconds(n as i64)));
            join_cost.allocs += c.allocs;
            join_cost.bytes += c.bytes;
        }
    }
    let open = ROOMS * PEOPLE;
    let per_participant = (LIVE.load(Relaxed) - before) as f64 / open as f64;

    let leaves: Vec<RoomEvent> = (0..PEOPLE)
        .map(|n| RoomEvent::ParticipantLeft(person(0, n), LeaveReason::Left(None)))
        .collect();
    let leave_cost = counted(|| {
        for (n, e) in leaves.iter().enumerate() {
            rooms[0].apply(e, t0 + Duration::seconds((PEOPLE + n) as i64));
        }
    });

    let events = open as f64;
    println!(
        "pure core (the state machine and its index of who is in), {ROOMS} rooms x {PEOPLE} joins"
    );
    println!("live heap per open participant: {per_participant:.0} bytes");
    println!("live heap per idle live room:   {idle:.0} bytes");
    println!(
        "per join:  {:.1} allocations, {:.0} bytes allocated",
        join_cost.allocs as f64 / events,
        join_cost.bytes as f64 / events
    );
    println!(
        "per leave: {:.1} allocations, {:.0} bytes allocated",
        leave_cost.allocs as f64 / PEOPLE as f64,
        leave_cost.bytes as f64 / PEOPLE as f64
    );
    assert_eq!(
        rooms[1].state.current().map(|c| c.participant_count()),
        Some(PEOPLE),
        "the rooms hold what was applied"
    );
}
