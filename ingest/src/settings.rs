//! Ingest configuration (§2): the shared settings plus the edge's own.

use coachwire_shared::settings::CommonSettings;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct IngestSettings {
    #[command(flatten)]
    pub common: CommonSettings,
    /// Address of the Socket.IO + HTTP listener.
    #[arg(long, env = "COACHWIRE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address of `/metrics` (and the probes) for operators, apart from the public port.
    #[arg(long, env = "COACHWIRE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,
    #[command(flatten)]
    pub jwt: JwtSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
}

#[derive(Clone, Debug, clap::Args)]
pub struct JwtSettings {
    /// HS256 secret.
    #[arg(long, env = "COACHWIRE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Path of a PEM public key (RS256, ES256 or EdDSA).
    #[arg(long, env = "COACHWIRE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss`, if set.
    #[arg(long, env = "COACHWIRE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud`, if set.
    #[arg(long, env = "COACHWIRE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Leeway for `exp` and `nbf`, in seconds.
    #[arg(long, env = "COACHWIRE_JWT_LEEWAY_SECS", default_value_t = 0)]
    pub jwt_leeway_secs: u64,
}

#[derive(Clone, Debug, clap::Args)]
pub struct LimitSettings {
    /// Messages per user per window (0 = no limit).
    #[arg(long, env = "COACHWIRE_MESSAGE_LIMIT", default_value_t = 30)]
    pub message_limit: u32,
    #[arg(long, env = "COACHWIRE_MESSAGE_WINDOW_MS", default_value_t = 60_000)]
    pub message_window_ms: u64,
    /// Handshakes per client IP per window (0 = no limit).
    #[arg(long, env = "COACHWIRE_CONNECTION_LIMIT", default_value_t = 5)]
    pub connection_limit: u32,
    #[arg(
        long,
        env = "COACHWIRE_CONNECTION_WINDOW_MS",
        default_value_t = 300_000
    )]
    pub connection_window_ms: u64,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    #[arg(long, env = "COACHWIRE_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,
}
