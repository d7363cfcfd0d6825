//! Persister configuration (§2).

use coachwire_shared::settings::CommonSettings;
use std::net::SocketAddr;

#[derive(Clone, Debug, clap::Args)]
pub struct PersisterSettings {
    #[command(flatten)]
    pub common: CommonSettings,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "COACHWIRE_ADMIN_LISTEN", default_value = "127.0.0.1:9101")]
    pub admin_listen: SocketAddr,
}
