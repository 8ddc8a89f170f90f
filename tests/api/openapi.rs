//! The OpenAPI document matches the routes: every documented route exists,
//! and every route in `src/http` is documented.

use crate::common;

use std::collections::BTreeSet;

use reqwest::StatusCode;

/// `(METHOD, path)` of every route attribute in `src/http`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            for method in ["get", "post", "put", "delete", "patch"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap();
                    routes.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    routes
}

#[actix_web::test]
async fn the_openapi_document_matches_the_routes() {
    let db = common::TestDb::sqlite();
    let app = common::spawn_app(&db).await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.0.3");
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    assert_eq!(
        documented,
        routes_in_source(),
        "documented routes vs routes in src/http"
    );

    // And each documented route is served (not the catch-all 404).
    for (method, path) in &documented {
        let url = format!("{}{}", app.base, path.replace("{name}", "no-such-room"));
        let response = match method.as_str() {
            "GET" => app.client.get(&url).send().await.unwrap(),
            "POST" => app.client.post(&url).body("{}").send().await.unwrap(),
            other => panic!("unexpected method {other}"),
        };
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no route for this request"),
            "{method} {path} is not served: {status} {body}"
        );
    }
    app.stop().await;
}
