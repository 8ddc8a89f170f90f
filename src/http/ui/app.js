// roomd's admin page: plain JavaScript, no build step, nothing fetched from
// elsewhere. Every value from roomd goes into the page as text, never HTML:
// room names and identities come from webhooks.
"use strict";

const KEY = "roomd.admin-token";
const $ = (id) => document.getElementById(id);
const state = { after: null, next: null, room: null, feed: null, listDue: null };
const FEED_KEPT = 100;

const token = () => sessionStorage.getItem(KEY) || "";

async function api(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const response = await fetch(path, { headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(body.message || response.statusText), { status: response.status });
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

const kinds = (counts) => Object.entries(counts || {}).map(([k, n]) => `${k} ${n}`).join(", ");
const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
function age(iso) {
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

async function loadRooms() {
  const names = $("search").value.trim();
  const query = names ? `names=${encodeURIComponent(names)}` : `limit=50${state.after ? "&after=" + encodeURIComponent(state.after) : ""}`;
  let list;
  try {
    list = await api(`/v1/rooms?${query}`);
  } catch (e) {
    $("rooms-empty").hidden = false;
    $("rooms-empty").textContent = `Cannot list rooms: ${e.message}`;
    return;
  }
  const body = $("rooms").tBodies[0];
  body.replaceChildren();
  for (const room of list.rooms) {
    const row = body.insertRow();
    row.className = "selectable";
    row.dataset.room = room.name;
    const name = document.createElement("button");
    name.type = "button";
    name.textContent = room.name;
    name.addEventListener("click", () => select(room.name));
    row.insertCell().append(name);
    cell(row, String(room.participant_count), "num count");
    cell(row, kinds(room.counts_by_kind));
    cell(row, when(room.started_at));
  }
  $("rooms-empty").hidden = list.rooms.length > 0;
  $("rooms-empty").textContent = "No live rooms.";
  state.next = list.next || null;
  $("next-page").disabled = !state.next;
}

function showParticipants(participants) {
  const list = $("participants");
  list.replaceChildren(...participants.map((p) => {
    const li = document.createElement("li");
    li.textContent = `${p.identity} (${p.kind})`;
    return li;
  }));
}

function showCount(room) {
  $("detail-count").textContent = room ? `${room.participant_count} in the room (${room.status})` : "Not found";
}

function select(name) {
  state.room = name;
  if (state.feed) state.feed.close();
  $("detail").hidden = false;
  $("detail-title").textContent = `Room ${name}`;
  $("feed").replaceChildren();
  $("participants").replaceChildren();
  if (!token()) {
    $("detail-count").textContent = "Paste an admin token above to see who is in the room and its live feed.";
    return;
  }
  // EventSource cannot send headers: the token goes in the query, which
  // roomd never logs.
  const feed = new EventSource(`/v1/rooms/${encodeURIComponent(name)}/stream?access_token=${encodeURIComponent(token())}`);
  feed.addEventListener("snapshot", (e) => {
    const data = JSON.parse(e.data);
    showCount(data.room);
    showParticipants(data.participants || []);
  });
  feed.addEventListener("update", (e) => {
    const data = JSON.parse(e.data);
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()} ${data.event}${data.identity ? " " + data.identity : ""} → ${data.room.participant_count}`;
    const list = $("feed");
    list.prepend(li);
    while (list.children.length > FEED_KEPT) list.lastElementChild.remove();
    showCount(data.room);
    const cell = document.querySelector(`#rooms tr[data-room="${CSS.escape(name)}"] td.count`);
    if (cell) cell.textContent = String(data.room.participant_count);
    // A busy room sends many updates: the list is fetched again at most
    // once a second, not once per update.
    if (!state.listDue) {
      state.listDue = setTimeout(async () => {
        state.listDue = null;
        const detail = await api(`/v1/rooms/${encodeURIComponent(name)}/participants`).catch(() => null);
        if (detail && state.room === name) showParticipants(detail.participants);
      }, 1000);
    }
  });
  state.feed = feed;
}

async function loadAdmin() {
  $("admin").hidden = !token();
  if (!token()) return;
  let debug;
  try {
    debug = await api("/v1/debug/actors?limit=100");
    $("token-state").textContent = "admin token in use";
  } catch (e) {
    $("token-state").textContent = `token refused: ${e.message}`;
    $("admin").hidden = true;
    return;
  }
  const s = debug.supervisor;
  const last = s.last_reconcile;
  const facts = [
    ["Live actors", s.live_actors], ["Parked", s.parked_actors], ["Restarts", s.restarts], ["Recovered", s.recovered ? "yes" : "no"],
    ["Last reconcile", last ? `${when(last.finished_at)}: ${last.rooms_checked} rooms, ${last.corrections.length} corrections${last.error ? ", error: " + last.error : ""}` : "never"],
  ];
  $("supervisor").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    return [dt, dd];
  }));
  const body = $("actors").tBodies[0];
  body.replaceChildren();
  for (const a of debug.actors) {
    const row = body.insertRow();
    cell(row, a.room);
    cell(row, String(a.participant_count), "num");
    cell(row, String(a.mailbox_depth), "num");
    cell(row, a.last_event ? `${a.last_event.event} ${when(a.last_event.at)}` : "");
    cell(row, a.last_event ? a.last_event.outcome : "");
    cell(row, `${a.counters.applied} / ${a.counters.duplicates} / ${a.counters.stale}`, "num");
    cell(row, age(a.actor_started_at));
  }
  const cluster = await api("/v1/debug/cluster").catch(() => null);
  $("cluster").hidden = !cluster;
  if (cluster) {
    const shards = {};
    for (const row of cluster.map.shards) if (row.owner) shards[row.owner] = (shards[row.owner] || 0) + 1;
    const nodes = $("nodes").tBodies[0];
    nodes.replaceChildren();
    for (const n of cluster.map.nodes) {
      const row = nodes.insertRow();
      cell(row, n.node_id + (n.node_id === cluster.node_id ? " (this node)" : ""));
      cell(row, n.advertise_url);
      cell(row, n.live ? `until ${when(n.lease_until)}` : "expired");
      cell(row, String(shards[n.node_id] || 0), "num");
    }
  }
}

function refresh() {
  loadRooms();
  loadAdmin();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (value) sessionStorage.setItem(KEY, value);
  $("token").value = "";
  refresh();
  if (state.room) select(state.room);
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  $("token-state").textContent = "";
  // Nothing read with the token stays on screen.
  if (state.feed) state.feed.close();
  state.feed = null;
  state.room = null;
  $("detail").hidden = true;
  $("participants").replaceChildren();
  $("feed").replaceChildren();
  $("detail-count").textContent = "";
  refresh();
});
$("search-form").addEventListener("submit", (e) => { e.preventDefault(); state.after = null; loadRooms(); });
$("all-rooms").addEventListener("click", () => { $("search").value = ""; state.after = null; loadRooms(); });
$("next-page").addEventListener("click", () => { state.after = state.next; loadRooms(); });
$("first-page").addEventListener("click", () => { state.after = null; loadRooms(); });

refresh();
setInterval(refresh, 2000);
