//! The LiveKit edge: proves a webhook came from LiveKit and turns its body
//! into roomd's own [`Delivery`](crate::event::Delivery). Nothing past
//! this module sees protobuf types.

pub mod body;
pub mod parse;
pub mod room_service;
pub mod sign;
pub mod verify;

pub use parse::{MAX_KEY_BYTES, ParseError, parse};
pub use room_service::{RoomService, ServiceError};
pub use sign::sign_webhook;
pub use verify::{BodyHash, Tokens, VerifyError, WebhookVerifier, bearer};
