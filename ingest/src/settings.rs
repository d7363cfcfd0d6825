//! Ingest configuration (§2): the shared settings plus the edge's own.

use coachwire_shared::settings::CommonSettings;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Browser origins besides the server's own that may call the API and open Socket.IO
    /// (comma-separated, e.g. `https://app.example.com`); unset: same origin only.
    #[arg(long, env = "COACHWIRE_CORS_ORIGINS")]
    pub cors_origins: Option<CorsOrigins>,
    #[command(flatten)]
    pub jwt: JwtSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub replies: ReplySettings,
    #[command(flatten)]
    pub demo: DemoSettings,
}

/// When abandoned streamed replies end (§14).
#[derive(Clone, Debug, clap::Args)]
pub struct ReplySettings {
    /// A reply without an append for this long ends `interrupted` (milliseconds).
    #[arg(long, env = "COACHWIRE_REPLY_IDLE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub reply_idle_ms: u64,
    /// A stopped reply its author does not end within this long ends `cancelled` (ms).
    #[arg(long, env = "COACHWIRE_REPLY_STOP_GRACE_MS", default_value_t = 5_000)]
    pub reply_stop_grace_ms: u64,
}

impl ReplySettings {
    pub fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reply_idle_ms)
    }

    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reply_stop_grace_ms)
    }
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
    /// Conversations one user may create per window (0 = no limit; role `ai` is exempt).
    #[arg(long, env = "COACHWIRE_CONVERSATION_LIMIT", default_value_t = 30)]
    pub conversation_limit: u32,
    #[arg(
        long,
        env = "COACHWIRE_CONVERSATION_WINDOW_MS",
        default_value_t = 60_000
    )]
    pub conversation_window_ms: u64,
    /// Conversations one socket may have joined at once (0 = no limit; role `ai` is exempt).
    #[arg(long, env = "COACHWIRE_ROOMS_PER_SOCKET", default_value_t = 500)]
    pub rooms_per_socket: usize,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    #[arg(long, env = "COACHWIRE_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,
}

/// Demo mode (`crate::http::demo`): a chat page and tokens for fixed users, for a person
/// trying the stack on their own machine. Never for production.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoSettings {
    /// Serve the demo chat page at `/demo/` and hand out tokens for its fixed users to
    /// anyone who asks (development only).
    #[arg(long, env = "COACHWIRE_DEMO", default_value_t = false, action = clap::ArgAction::Set)]
    pub demo: bool,
    /// Directory of the demo page's files; read only when COACHWIRE_DEMO is on.
    #[arg(long, env = "COACHWIRE_DEMO_DIR", default_value = "clients/web/public")]
    pub demo_dir: PathBuf,
}

/// A web origin as browsers serialize it in the `Origin` header (RFC 6454): lowercase scheme
/// and host, the port only when it is not the scheme's default. Keeping that one form lets
/// an allowed origin be compared with a request's `Origin` byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebOrigin(String);

/// Why a string is not a [`WebOrigin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnOrigin(&'static str);

impl WebOrigin {
    pub fn parse(value: &str) -> Result<Self, NotAnOrigin> {
        let (scheme, authority) = value
            .split_once("://")
            .ok_or(NotAnOrigin("it has no scheme://"))?;
        let scheme = scheme.to_ascii_lowercase();
        let scheme_is_valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_is_valid {
            return Err(NotAnOrigin("the scheme is malformed"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(NotAnOrigin("an origin has no path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(NotAnOrigin("an origin has no user name"));
        }
        let (host, port) = split_port(authority)?;
        let port = match (scheme.as_str(), port) {
            ("http", Some(80)) | ("https", Some(443)) => None,
            (_, port) => port,
        };
        let host = host.to_ascii_lowercase();
        Ok(Self(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map_or("", |(scheme, _)| scheme)
    }
}

/// `host[:port]` or `[ipv6][:port]`, each part checked.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), NotAnOrigin> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or(NotAnOrigin("the IPv6 host has no closing ]"))?;
            if inside.is_empty()
                || !inside
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
            {
                return Err(NotAnOrigin("the IPv6 host is malformed"));
            }
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or(NotAnOrigin("text follows the IPv6 host"))?,
                ),
            };
            (&authority[..inside.len() + 2], port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let host_is_valid = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !host_is_valid {
                return Err(NotAnOrigin(
                    "the host is not a name or an address (no wildcards; IDNs in xn-- form)",
                ));
            }
            (host, port)
        }
    };
    let port = match port {
        None => None,
        // `u16::from_str` takes a leading `+`, which no browser sends.
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(NotAnOrigin("the port is not a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of `COACHWIRE_CORS_ORIGINS`: the exact origins, besides the server's own,
/// that browsers may call from. Empty means same origin only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsOrigins(Vec<WebOrigin>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorsOriginsError {
    /// With `*`, any page a user visits could act with that user's token; `*` is what
    /// CORS allows when nothing is checked, so it is refused rather than read as a list.
    #[error("COACHWIRE_CORS_ORIGINS may not be `*`: list the exact origins allowed")]
    Wildcard,
    #[error("COACHWIRE_CORS_ORIGINS: `{entry}` is not an origin (scheme://host[:port]): {reason}")]
    NotAnOrigin { entry: String, reason: NotAnOrigin },
}

impl CorsOrigins {
    pub fn contains(&self, origin: &WebOrigin) -> bool {
        self.0.contains(origin)
    }

    pub fn iter(&self) -> impl Iterator<Item = &WebOrigin> {
        self.0.iter()
    }
}

impl FromStr for CorsOrigins {
    type Err = CorsOriginsError;

    /// A blank value lists nothing (as when unset), so `COACHWIRE_CORS_ORIGINS=` in a
    /// deployment file does not stop the service; a blank entry inside a list is an error.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.trim().is_empty() {
            return Ok(Self::default());
        }
        value
            .split(',')
            .map(str::trim)
            .map(|entry| {
                if entry.contains('*') {
                    return Err(CorsOriginsError::Wildcard);
                }
                WebOrigin::parse(entry).map_err(|reason| CorsOriginsError::NotAnOrigin {
                    entry: entry.to_string(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Vec<String> {
        match value.parse::<CorsOrigins>() {
            Ok(origins) => origins.iter().map(|o| o.to_string()).collect(),
            Err(e) => panic!("{value:?} refused: {e}"),
        }
    }

    #[test]
    fn origins_are_kept_in_the_form_browsers_send() {
        let cases = [
            ("https://app.example.com", vec!["https://app.example.com"]),
            ("HTTPS://App.Example.COM", vec!["https://app.example.com"]),
            (
                "https://app.example.com:443",
                vec!["https://app.example.com"],
            ),
            ("http://app.example.com:80", vec!["http://app.example.com"]),
            (
                "https://app.example.com:8443",
                vec!["https://app.example.com:8443"],
            ),
            ("http://127.0.0.1:3000", vec!["http://127.0.0.1:3000"]),
            ("http://[::1]:3000", vec!["http://[::1]:3000"]),
            ("capacitor://localhost", vec!["capacitor://localhost"]),
            (
                "https://a.example.com, http://localhost:5173",
                vec!["https://a.example.com", "http://localhost:5173"],
            ),
            ("", vec![]),
            ("  ", vec![]),
        ];
        for (value, expected) in cases {
            assert_eq!(parsed(value), expected, "{value:?}");
        }
    }

    #[test]
    fn a_wildcard_and_anything_that_is_not_an_origin_are_refused() {
        let cases = [
            ("*", "any origin at all"),
            ("https://a.example.com,*", "a wildcard among origins"),
            ("https://*.example.com", "a wildcard subdomain"),
            ("null", "the opaque origin"),
            ("app.example.com", "no scheme"),
            ("https://", "no host"),
            ("https://app.example.com/", "a trailing slash is a path"),
            ("https://app.example.com/chat", "a path"),
            ("https://app.example.com?x=1", "a query"),
            ("https://app.example.com#x", "a fragment"),
            ("https://user@app.example.com", "a user name"),
            ("https://app.example.com:0", "port 0"),
            ("https://app.example.com:65536", "a port past 65535"),
            ("https://app.example.com:+80", "a signed port"),
            ("https://app.example.com:", "an empty port"),
            ("https://app example.com", "a space in the host"),
            ("https://bücher.example", "a non-ASCII host"),
            ("https://[::1", "an unclosed IPv6 host"),
            ("https://[::1]x", "text after the IPv6 host"),
            ("1http://app.example.com", "a scheme starting with a digit"),
            (
                "https://a.example.com,,https://b.example.com",
                "a blank entry",
            ),
            ("https://a.example.com,", "a trailing comma"),
        ];
        for (value, reason) in cases {
            let error = match value.parse::<CorsOrigins>() {
                Ok(origins) => panic!("{reason}: {value:?} accepted as {origins:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                error.starts_with("COACHWIRE_CORS_ORIGINS"),
                "{reason}: {error}"
            );
        }
    }

    #[test]
    fn the_wildcard_gets_its_own_reason() {
        assert_eq!("*".parse::<CorsOrigins>(), Err(CorsOriginsError::Wildcard));
    }
}
