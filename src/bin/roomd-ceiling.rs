//! roomd-ceiling: the HTTP ceiling for the benchmarks. The same actix-web
//! server, body limit, token verification and LiveKit parsing as roomd, and
//! nothing after them: no actor, no database. A `GET` answers a fixed room
//! view of the same shape roomd serves. roomd's throughput divided by this
//! one's, measured in the same run, is how much of the HTTP stack's
//! capacity roomd keeps.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, get, http::header, post, web};
use clap::Parser;
use roomd::livekit::{self, WebhookVerifier};

#[derive(Parser, Debug)]
#[command(about = "An HTTP server that only verifies and parses webhooks (the benchmark ceiling)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: String,
    /// HTTP worker threads; 0 = one per core (roomd's default).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret")]
    api_secret: String,
}

/// What `GET /v1/rooms/{name}` answers for a room of four.
const ROOM_VIEW: &str = r#"{"name":"ceiling","sid":"RM_ceiling","status":"active","participant_count":4,"counts_by_kind":{"agent":1,"standard":3},"started_at":"2026-11-29T00:00:00Z","ended_at":null,"end_reason":null}"#;

#[post("/v1/webhooks/livekit")]
async fn webhook(
    req: HttpRequest,
    body: web::Bytes,
    verifier: web::Data<WebhookVerifier>,
) -> HttpResponse {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(err) = verifier.verify(authorization, &body) {
        return HttpResponse::Unauthorized().json(serde_json::json!({ "error": err.to_string() }));
    }
    match livekit::parse(&body, chrono::Utc::now()) {
        Ok(delivery) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ok",
            "event": delivery.event,
            "outcome": "applied",
            "duplicate": false,
        })),
        Err(err) => {
            HttpResponse::BadRequest().json(serde_json::json!({ "error": err.to_string() }))
        }
    }
}

#[get("/v1/rooms/{name}")]
async fn room() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ROOM_VIEW)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let verifier = web::Data::new(WebhookVerifier::new(&args.api_key, &args.api_secret));
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(verifier.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .service(webhook)
            .service(room)
    })
    .bind(&args.bind)?;
    if args.workers > 0 {
        server = server.workers(args.workers);
    }
    server.run().await
}
