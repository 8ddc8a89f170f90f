//! Settings: the documented defaults are the real ones, environment
//! variables override them as README says, and a wrong setting stops
//! start-up with a message that names it.

#![allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error

use std::path::{Path, PathBuf};

use figment::Jail;
use roomd::config::{ConfigError, Settings};

fn repo_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

fn invalid_setting(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { setting, .. }) => setting.to_owned(),
        other => panic!("expected an invalid setting, got {other:?}"),
    }
}

#[test]
fn config_toml_documents_exactly_the_defaults() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let from_file = Settings::load(&repo_config()).expect("config.toml loads");
        assert_eq!(from_file, Settings::default());
        let without_file = Settings::load(Path::new("missing.toml")).expect("defaults load");
        assert_eq!(without_file, Settings::default());
        assert_eq!(without_file.server.bind, "");
        // Nothing configured: livekit-server --dev's key, on loopback only.
        assert_eq!(
            without_file.bind_addr().unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert!(without_file.database.url.starts_with("sqlite://"));
        assert!(without_file.uses_dev_key());
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "roomd.toml",
            "[server]\nbind = \"127.0.0.1:7000\"\n[log]\nlevel = \"debug\"\n",
        )?;
        let settings = Settings::load(Path::new("roomd.toml")).unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:7000");
        assert_eq!(settings.log.level, "debug");

        jail.set_env("ROOMD__SERVER__BIND", "127.0.0.1:9000");
        jail.set_env("ROOMD__ROOMS__MAILBOX_CAPACITY", "7");
        jail.set_env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
        jail.set_env("LIVEKIT_API_KEY", "APIprod");
        jail.set_env("LIVEKIT_WEBHOOK_SECRET", "from-the-seed");
        jail.set_env("LIVEKIT_URL", "https://lk.example.com");
        let settings = Settings::load(Path::new("roomd.toml")).unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:9000");
        assert_eq!(settings.rooms.mailbox_capacity, 7);
        assert_eq!(
            settings.database.url,
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(settings.livekit.api_key, "APIprod");
        assert_eq!(
            settings.livekit.api_secret, "from-the-seed",
            "the seed's name is an alias"
        );
        assert_eq!(settings.livekit.url, "https://lk.example.com");
        assert!(!settings.uses_dev_key());

        jail.set_env("LIVEKIT_API_SECRET", "the-real-one");
        let settings = Settings::load(Path::new("roomd.toml")).unwrap();
        assert_eq!(
            settings.livekit.api_secret, "the-real-one",
            "LIVEKIT_API_SECRET wins over the alias"
        );

        jail.set_env("ROOMD__DATABASE__URL", "sqlite://other.db?mode=rwc");
        let settings = Settings::load(Path::new("roomd.toml")).unwrap();
        assert_eq!(
            settings.database.url, "sqlite://other.db?mode=rwc",
            "ROOMD__ names win"
        );
        Ok(())
    });
}

#[test]
fn a_wrong_setting_stops_start_up_and_is_named() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LIVEKIT_API_SECRET", "");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "livekit.api_secret"
        );

        jail.clear_env();
        jail.set_env("DATABASE_URL", "not a url");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "database.url"
        );

        jail.clear_env();
        jail.set_env("DATABASE_URL", "mysql://root@localhost/db");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "database.url"
        );

        jail.clear_env();
        jail.set_env("ROOMD__SERVER__BIND", "localhost");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "server.bind"
        );

        jail.clear_env();
        jail.set_env("ROOMD__SERVER__MAX_BODY_BYTES", "lots");
        let err = Settings::load(Path::new("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("max_body_bytes"), "{err}");

        // A cluster shares its rooms through PostgreSQL, and each node must
        // say where the others reach it.
        jail.clear_env();
        jail.set_env("ROOMD__CLUSTER__MODE", "postgres");
        jail.set_env("ROOMD__CLUSTER__ADVERTISE_URL", "http://10.0.0.5:8080");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "cluster.mode",
            "cluster mode on SQLite"
        );
        jail.set_env("DATABASE_URL", "postgres://postgres@127.0.0.1/roomd");
        assert!(Settings::load(Path::new("none.toml")).is_ok());
        jail.set_env("ROOMD__CLUSTER__ADVERTISE_URL", "");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "cluster.advertise_url"
        );
        jail.set_env("ROOMD__CLUSTER__ADVERTISE_URL", "http://10.0.0.5:8080");
        jail.set_env("ROOMD__CLUSTER__LEASE_TTL_MS", "1000");
        assert_eq!(
            invalid_setting(Settings::load(Path::new("none.toml"))),
            "cluster.lease_ttl_ms",
            "a lease shorter than two heartbeats"
        );

        jail.clear_env();
        jail.create_file("typo.toml", "[server]\nbnd = \"127.0.0.1:1\"\n")?;
        let err = Settings::load(Path::new("typo.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnd"), "{err}");
        Ok(())
    });
}

#[test]
fn the_dev_key_never_listens_beyond_loopback() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("ROOMD__SERVER__BIND", "0.0.0.0:8080");
        let refused = Settings::load(Path::new("none.toml"));
        let message = format!("{:?}", refused.as_ref().err());
        assert_eq!(invalid_setting(refused), "server.bind");
        assert!(message.contains("LIVEKIT_API_SECRET"), "{message}");

        // Real credentials: any address, and every interface by default.
        jail.set_env("LIVEKIT_API_KEY", "APIprod");
        jail.set_env(
            "LIVEKIT_API_SECRET",
            "a-production-secret-of-32-bytes-or-more",
        );
        let settings = Settings::load(Path::new("none.toml")).unwrap();
        assert_eq!(settings.bind_addr().unwrap().to_string(), "0.0.0.0:8080");
        jail.set_env("ROOMD__SERVER__BIND", "");
        let settings = Settings::load(Path::new("none.toml")).unwrap();
        assert_eq!(settings.bind_addr().unwrap().to_string(), "0.0.0.0:8080");
        Ok(())
    });
}
