//! LiveKit's own signatures: deliveries minted by LiveKit's Python SDK
//! (`tests/fixtures/webhooks/`, a copy of the project's shared fixtures, so
//! a clone tests anywhere) must verify and apply; any changed byte must not.

use crate::common;

use std::path::PathBuf;

use reqwest::StatusCode;
use roomd::livekit::{VerifyError, WebhookVerifier};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    api_key: String,
    api_secret: String,
    authorization: String,
    body: String,
}

fn fixtures() -> Vec<(String, Fixture)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("golden fixtures at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "the eight golden deliveries");
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_golden_delivery_verifies() {
    for (name, f) in fixtures() {
        let verifier = WebhookVerifier::new(&f.api_key, &f.api_secret);
        assert_eq!(
            verifier.verify(Some(&f.authorization), f.body.as_bytes()),
            Ok(()),
            "{name}"
        );
        let bearer = format!("Bearer {}", f.authorization);
        assert_eq!(
            verifier.verify(Some(&bearer), f.body.as_bytes()),
            Ok(()),
            "{name} with Bearer"
        );
    }
}

#[test]
fn any_changed_byte_of_a_golden_body_fails_verification() {
    for (name, f) in fixtures() {
        let verifier = WebhookVerifier::new(&f.api_key, &f.api_secret);
        let body = f.body.as_bytes();
        for i in 0..body.len() {
            let mut tampered = body.to_vec();
            tampered[i] ^= 0x01;
            assert_eq!(
                verifier.verify(Some(&f.authorization), &tampered),
                Err(VerifyError::BodyHashMismatch),
                "{name}: byte {i} changed"
            );
        }
        let mut longer = body.to_vec();
        longer.push(b' ');
        assert!(
            verifier.verify(Some(&f.authorization), &longer).is_err(),
            "{name}: extra byte"
        );
    }
}

#[test]
fn golden_tokens_fail_with_another_key_or_secret() {
    for (name, f) in fixtures() {
        let wrong_secret = WebhookVerifier::new(&f.api_key, "not-the-secret");
        assert!(matches!(
            wrong_secret.verify(Some(&f.authorization), f.body.as_bytes()),
            Err(VerifyError::InvalidToken(_))
        ));
        let wrong_key = WebhookVerifier::new("APIsomeoneElse", &f.api_secret);
        assert!(
            matches!(
                wrong_key.verify(Some(&f.authorization), f.body.as_bytes()),
                Err(VerifyError::InvalidToken(_))
            ),
            "{name}"
        );
    }
}

/// The fixtures' story, over HTTP: the room starts, Alice and an agent join,
/// Alice publishes, leaves, the agent's connection is aborted, an egress
/// starts, the room finishes.
#[actix_web::test]
async fn the_golden_story_applies_over_http() {
    let fixtures = fixtures();
    common::on_every_database(async |db| {
        let mut settings = common::settings_for(db);
        settings.livekit.api_key = fixtures[0].1.api_key.clone();
        settings.livekit.api_secret = fixtures[0].1.api_secret.clone();
        let app = common::spawn_app_with(settings, db.backend).await;

        let expected_counts = [0, 1, 2, 2, 1, 0, 0, 0];
        for ((name, f), expected) in fixtures.iter().zip(expected_counts) {
            let reply = app
                .webhook_raw(f.body.clone(), Some(&f.authorization))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.json);
            assert_eq!(reply.json["status"], "ok");
            assert_eq!(
                app.count("standup-42").await,
                expected,
                "[{}] after {name}",
                db.backend
            );
            if name.starts_with("03") {
                let view = app.room("standup-42").await;
                assert_eq!(view["counts_by_kind"]["standard"], 1);
                assert_eq!(view["counts_by_kind"]["agent"], 1);
            }
            // A retry of the same bytes is acknowledged and changes nothing.
            let again = app
                .webhook_raw(f.body.clone(), Some(&f.authorization))
                .await;
            assert_eq!(again.status, StatusCode::OK);
            assert_eq!(again.json["duplicate"], true, "{name}");
        }
        let view = app.room("standup-42").await;
        assert_eq!(view["status"], "ended");
        assert_eq!(view["sid"], "RM_fx7Qk2hJpLw3");

        // The golden token over a changed body is refused.
        let (_, f) = &fixtures[1];
        let tampered = f.body.replacen("Alice", "Alicf", 1);
        let reply = app.webhook_raw(tampered, Some(&f.authorization)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        app.stop().await;
    })
    .await;
}
