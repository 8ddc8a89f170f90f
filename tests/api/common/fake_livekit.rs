//! A stand-in for LiveKit's server, which cannot run here: a small HTTP
//! server speaking RoomService's real wire format (Twirp: POST
//! /twirp/livekit.RoomService/<Method>, protobuf or JSON bodies as the
//! official clients send them, `Authorization: Bearer <token>` checked for the
//! grants LiveKit requires). It plays "LiveKit's truth" for reconciliation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol as proto;
use prost::Message;

#[derive(Default)]
struct Truth {
    unreachable: bool,
    /// Rooms ListRooms lists whose ListParticipants answers `not_found`, as
    /// LiveKit does for a room gone since it listed it.
    vanishing: std::collections::BTreeSet<String>,
    rooms: BTreeMap<String, (proto::Room, Vec<proto::ParticipantInfo>)>,
}

pub struct FakeLiveKit {
    pub url: String,
    truth: Arc<Mutex<Truth>>,
    held: tokio::sync::watch::Sender<Hold>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    handle: ServerHandle,
}

/// Which answers are computed when asked but sent only on `release`: a list
/// fetched at one moment that arrives later.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    Nothing,
    Everything,
    Participants,
}

impl Hold {
    fn holds(self, method: &str) -> bool {
        match self {
            Hold::Nothing => false,
            Hold::Everything => true,
            Hold::Participants => method == "ListParticipants",
        }
    }
}

/// A participant as ListParticipants returns it.
pub fn participant(
    sid: &str,
    identity: &str,
    state: proto::participant_info::State,
) -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: sid.into(),
        identity: identity.into(),
        state: state.into(),
        joined_at: chrono::Utc::now().timestamp(),
        ..Default::default()
    }
}

pub fn active(sid: &str, identity: &str) -> proto::ParticipantInfo {
    participant(sid, identity, proto::participant_info::State::Active)
}

struct Shared {
    truth: Arc<Mutex<Truth>>,
    verifier: TokenVerifier,
    held: tokio::sync::watch::Receiver<Hold>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

fn twirp_error(status: actix_web::http::StatusCode, code: &str, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "code": code, "msg": msg }))
}

/// Decodes a request the way the Twirp server does: by its content type.
fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Option<(T, bool)> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        serde_json::from_slice(body).ok().map(|m| (m, true))
    } else {
        T::decode(body).ok().map(|m| (m, false))
    }
}

fn encode<T: Message + serde::Serialize>(message: &T, json: bool) -> HttpResponse {
    if json {
        HttpResponse::Ok()
            .content_type("application/json")
            .json(message)
    } else {
        HttpResponse::Ok()
            .content_type("application/protobuf")
            .body(message.encode_to_vec())
    }
}

async fn twirp(
    req: HttpRequest,
    method: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let answer = answer(&req, &method, &body, &shared);
    shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut held = shared.held.clone();
    let _ = held.wait_for(|held| !held.holds(&method)).await;
    answer
}

fn answer(req: &HttpRequest, method: &str, body: &[u8], shared: &Shared) -> HttpResponse {
    use actix_web::http::StatusCode;
    if shared.truth.lock().unwrap().unreachable {
        return twirp_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "LiveKit is down",
        );
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(claims) = token.and_then(|t| shared.verifier.verify(t).ok()) else {
        return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "invalid token");
    };
    let truth = shared.truth.lock().unwrap();
    match method {
        "ListRooms" => {
            let Some((request, json)) = decode::<proto::ListRoomsRequest>(req, body) else {
                return twirp_error(StatusCode::BAD_REQUEST, "malformed", "bad body");
            };
            if !claims.video.room_list {
                return twirp_error(StatusCode::FORBIDDEN, "permission_denied", "needs roomList");
            }
            let rooms = truth
                .rooms
                .values()
                .filter(|(r, _)| request.names.is_empty() || request.names.contains(&r.name))
                .map(|(r, ps)| proto::Room {
                    num_participants: ps.len() as u32,
                    ..r.clone()
                })
                .collect();
            encode(&proto::ListRoomsResponse { rooms }, json)
        }
        "ListParticipants" => {
            let Some((request, json)) = decode::<proto::ListParticipantsRequest>(req, body) else {
                return twirp_error(StatusCode::BAD_REQUEST, "malformed", "bad body");
            };
            if !(claims.video.room_admin && claims.video.room == request.room) {
                return twirp_error(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    "needs roomAdmin for the room",
                );
            }
            match truth
                .rooms
                .get(&request.room)
                .filter(|_| !truth.vanishing.contains(&request.room))
            {
                Some((_, participants)) => encode(
                    &proto::ListParticipantsResponse {
                        participants: participants.clone(),
                    },
                    json,
                ),
                None => twirp_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "requested room does not exist",
                ),
            }
        }
        _ => twirp_error(StatusCode::NOT_FOUND, "bad_route", "no such method"),
    }
}

impl FakeLiveKit {
    pub async fn start(api_key: &str, api_secret: &str) -> Self {
        let truth = Arc::new(Mutex::new(Truth::default()));
        let (held, held_rx) = tokio::sync::watch::channel(Hold::Nothing);
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shared = web::Data::new(Shared {
            truth: truth.clone(),
            verifier: TokenVerifier::with_api_key(api_key, api_secret),
            held: held_rx,
            requests: requests.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/twirp/livekit.RoomService/{method}", web::post().to(twirp))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            truth,
            held,
            requests,
            handle,
        }
    }

    /// From now on answers are computed when asked and sent on `release`.
    pub fn hold(&self) {
        self.held.send_replace(Hold::Everything);
    }

    /// Like `hold`, for ListParticipants only: ListRooms answers at once.
    pub fn hold_participants(&self) {
        self.held.send_replace(Hold::Participants);
    }

    pub fn release(&self) {
        self.held.send_replace(Hold::Nothing);
    }

    /// RoomService calls answered (or being held) so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_room(&self, name: &str, sid: &str, participants: Vec<proto::ParticipantInfo>) {
        let room = proto::Room {
            name: name.into(),
            sid: sid.into(),
            creation_time: chrono::Utc::now().timestamp(),
            ..Default::default()
        };
        self.truth
            .lock()
            .unwrap()
            .rooms
            .insert(name.into(), (room, participants));
    }

    /// `name` stays in ListRooms, but ListParticipants no longer finds it.
    pub fn vanish(&self, name: &str) {
        self.truth.lock().unwrap().vanishing.insert(name.into());
    }

    pub fn remove_room(&self, name: &str) {
        self.truth.lock().unwrap().rooms.remove(name);
    }

    pub fn set_reachable(&self, reachable: bool) {
        self.truth.lock().unwrap().unreachable = !reachable;
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
