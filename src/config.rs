//! Typed settings: built-in defaults, then `config.toml`, then LiveKit's
//! conventional environment variables, then `ROOMD__SECTION__KEY` variables.
//! Validated once at start; nothing else in roomd reads the environment.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The defaults of `livekit-server --dev`.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub livekit: LivekitSettings,
    pub rooms: RoomSettings,
    pub writer: WriterSettings,
    pub api: ApiSettings,
    pub audit: AuditSettings,
    pub log: LogSettings,
    pub cluster: ClusterSettings,
}

/// Several nodes on one PostgreSQL: `off` (one node, the default) or
/// `postgres` (rooms sharded across nodes, leases and fences in the database).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    Off,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub mode: ClusterMode,
    /// Where the other nodes reach this one (forwarded webhooks and reads).
    pub advertise_url: String,
    /// Unique per node; empty: the host name and a random suffix.
    pub node_id: String,
    /// Virtual shards; fixed for the database by the first node.
    pub shards: u32,
    pub lease_ttl_ms: u64,
    pub heartbeat_ms: u64,
    pub forward_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `webhook_events` rows older than this are deleted; 0 keeps them all.
    pub retention_days: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub public_counts: bool,
    pub cors_origins: Vec<String>,
    pub stream_keepalive_secs: u64,
    pub max_streams: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    /// A webhook body must arrive within this many seconds of its headers.
    pub body_timeout_secs: u64,
    /// Webhook bodies read at once (each up to `max_body_bytes`).
    pub max_body_reads: usize,
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
    pub acquire_timeout_secs: u64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LivekitSettings {
    pub api_key: String,
    pub api_secret: String,
    pub url: String,
    pub reconcile_interval_secs: u64,
    pub request_timeout_secs: u64,
}

impl std::fmt::Debug for LivekitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivekitSettings")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("url", &self.url)
            .field("reconcile_interval_secs", &self.reconcile_interval_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    pub mailbox_capacity: usize,
    pub max_in_flight: usize,
    pub commit_timeout_ms: u64,
    pub retire_after_finish_secs: u64,
    pub idle_timeout_secs: u64,
    pub history_horizon_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriterSettings {
    pub max_batch: usize,
    pub queue_capacity: usize,
    pub transactions: usize,
    pub transaction_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                bind: String::new(),
                workers: 0,
                max_body_bytes: 1024 * 1024,
                body_timeout_secs: 10,
                max_body_reads: 256,
                shutdown_timeout_secs: 30,
            },
            database: DatabaseSettings {
                url: "sqlite://roomd.db?mode=rwc".into(),
                max_connections: 8,
                connect_timeout_secs: 5,
                acquire_timeout_secs: 5,
            },
            livekit: LivekitSettings {
                api_key: DEV_API_KEY.into(),
                api_secret: DEV_API_SECRET.into(),
                url: String::new(),
                reconcile_interval_secs: 60,
                request_timeout_secs: 10,
            },
            rooms: RoomSettings {
                mailbox_capacity: 256,
                max_in_flight: 4096,
                commit_timeout_ms: 10_000,
                retire_after_finish_secs: 60,
                idle_timeout_secs: 600,
                history_horizon_secs: 3600,
            },
            writer: WriterSettings {
                max_batch: 512,
                queue_capacity: 8192,
                transactions: 0,
                transaction_timeout_ms: 5000,
            },
            api: ApiSettings {
                public_counts: true,
                cors_origins: Vec::new(),
                stream_keepalive_secs: 15,
                max_streams: 4096,
            },
            audit: AuditSettings { retention_days: 30 },
            cluster: ClusterSettings {
                mode: ClusterMode::Off,
                advertise_url: String::new(),
                node_id: String::new(),
                shards: 256,
                lease_ttl_ms: 5000,
                heartbeat_ms: 1000,
                forward_timeout_ms: 3000,
            },
            log: LogSettings {
                level: "info".into(),
                format: LogFormat::Text,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("setting `{setting}` is invalid: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// LiveKit's conventional names, mapped onto settings. `LIVEKIT_WEBHOOK_SECRET`
/// is the seed's name for the secret; `LIVEKIT_API_SECRET` wins when both are set.
const CONVENTIONAL: [(&str, &str); 5] = [
    ("DATABASE_URL", "database.url"),
    ("LIVEKIT_API_KEY", "livekit.api_key"),
    ("LIVEKIT_WEBHOOK_SECRET", "livekit.api_secret"),
    ("LIVEKIT_API_SECRET", "livekit.api_secret"),
    ("LIVEKIT_URL", "livekit.url"),
];

impl Settings {
    /// Loads `path` (a missing file is fine: the defaults are complete), then the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::file(path));
        for (var, key) in CONVENTIONAL {
            figment = figment.merge(Env::raw().only(&[var]).map(move |_| key.into()));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("ROOMD__").split("__"))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| ConfigError::Invalid {
            setting,
            reason: reason.to_owned(),
        };
        // Anyone who knows the dev key (everyone) could forge webhooks and
        // admin tokens on an address others can reach.
        if self.uses_dev_key() && !self.bind_addr()?.ip().is_loopback() {
            return Err(invalid(
                "server.bind",
                "livekit-server --dev's key and secret (devkey/secret) are public: set \
                 LIVEKIT_API_KEY and LIVEKIT_API_SECRET to your own, or bind to a loopback \
                 address (e.g. 127.0.0.1:8080)",
            ));
        }
        let url = url::Url::parse(&self.database.url)
            .map_err(|e| invalid("database.url", &e.to_string()))?;
        if !matches!(url.scheme(), "sqlite" | "postgres" | "postgresql") {
            return Err(invalid(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.livekit.api_key.trim().is_empty() {
            return Err(invalid("livekit.api_key", "must not be empty"));
        }
        if self.livekit.api_secret.trim().is_empty() {
            return Err(invalid("livekit.api_secret", "must not be empty"));
        }
        if !self.livekit.url.is_empty() {
            url::Url::parse(&self.livekit.url)
                .map_err(|e| invalid("livekit.url", &e.to_string()))?;
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be positive"));
        }
        if !(1..=10).contains(&self.server.body_timeout_secs) {
            return Err(invalid(
                "server.body_timeout_secs",
                "must be 1..=10 (LiveKit sends a small body at once; a slow one only holds memory)",
            ));
        }
        if self.server.max_body_reads == 0 {
            return Err(invalid("server.max_body_reads", "must be positive"));
        }
        if self.livekit.reconcile_interval_secs == 0 {
            return Err(invalid(
                "livekit.reconcile_interval_secs",
                "must be positive",
            ));
        }
        if self.api.stream_keepalive_secs == 0 {
            return Err(invalid("api.stream_keepalive_secs", "must be positive"));
        }
        if self.writer.transaction_timeout_ms == 0 {
            return Err(invalid("writer.transaction_timeout_ms", "must be positive"));
        }
        // A horizon inside LiveKit's redelivery window (retries over ~15 s,
        // 30 s in its queue) would let a late join reopen a closed session.
        if self.rooms.history_horizon_secs < 300 {
            return Err(invalid(
                "rooms.history_horizon_secs",
                "must be at least 300 (well past LiveKit's redelivery window)",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be positive"));
        }
        self.validate_cluster(url.scheme())
    }

    fn validate_cluster(&self, database_scheme: &str) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| ConfigError::Invalid {
            setting,
            reason: reason.to_owned(),
        };
        let cluster = &self.cluster;
        if cluster.mode == ClusterMode::Off {
            return Ok(());
        }
        if database_scheme == "sqlite" {
            return Err(invalid(
                "cluster.mode",
                "\"postgres\" needs database.url to be a PostgreSQL URL: nodes share their rooms through it",
            ));
        }
        let advertised = url::Url::parse(&cluster.advertise_url).map_err(|e| {
            invalid(
                "cluster.advertise_url",
                &format!("must be this node's URL as the other nodes reach it ({e})"),
            )
        })?;
        if !matches!(advertised.scheme(), "http" | "https") {
            return Err(invalid("cluster.advertise_url", "must be an http(s) URL"));
        }
        if !(1..=65_536).contains(&cluster.shards) {
            return Err(invalid("cluster.shards", "must be 1..=65536"));
        }
        if cluster.heartbeat_ms == 0 || cluster.lease_ttl_ms < 2 * cluster.heartbeat_ms {
            return Err(invalid(
                "cluster.lease_ttl_ms",
                "must be at least twice cluster.heartbeat_ms (a lease must survive a late renewal)",
            ));
        }
        if cluster.forward_timeout_ms == 0 {
            return Err(invalid("cluster.forward_timeout_ms", "must be positive"));
        }
        Ok(())
    }

    /// Where to listen. Unset, it follows `livekit-server --dev`: loopback
    /// with the dev key, every interface with real credentials.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        let bind = match self.server.bind.as_str() {
            "" if self.uses_dev_key() => "127.0.0.1:8080",
            "" => "0.0.0.0:8080",
            bind => bind,
        };
        bind.parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                setting: "server.bind",
                reason: e.to_string(),
            })
    }

    /// True when roomd runs with `livekit-server --dev`'s well-known key.
    pub fn uses_dev_key(&self) -> bool {
        self.livekit.api_key == DEV_API_KEY || self.livekit.api_secret == DEV_API_SECRET
    }
}
