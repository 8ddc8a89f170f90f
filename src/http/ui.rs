//! The admin page: three files built into the binary, served under a strict
//! Content-Security-Policy (nothing inline, nothing from elsewhere), so it
//! works offline and behind any proxy. It reads the same API as everyone:
//! counts without a token, the rest with an admin token the user pastes.

use actix_web::http::header;
use actix_web::{HttpResponse, get};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

#[get("/")]
pub async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui"))
        .finish()
}

#[get("/ui")]
pub async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

#[get("/ui/app.js")]
pub async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

#[get("/ui/app.css")]
pub async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}
