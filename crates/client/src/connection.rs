//! One authenticated WebSocket connection to a relay, without reconnects.
//!
//! [`crate::RelayClient`] builds on this; tests and tools that need to see
//! every frame can use it directly.

use std::sync::Arc;

use agentwire_wire::{Body, Frame, PublicKey, RelayId};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{ClientConfig, ClientError, Signer};

/// Largest message the client reads: the largest frame limit a relay can be
/// configured with (16 MiB), so that no envelope a relay accepted is
/// undeliverable.
const MAX_INBOUND_MESSAGE: usize = 16 * 1024 * 1024 + 1024;

/// What the relay said when it accepted the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The relay's stable id.
    pub relay_id: RelayId,
    /// The largest frame the relay accepts.
    pub max_frame_bytes: u32,
    /// How long the relay keeps undelivered envelopes, in seconds.
    pub envelope_ttl_secs: u64,
    /// Envelopes queued for this key at connect time.
    pub queued: u32,
}

/// An authenticated connection: frames in, frames out.
pub struct Connection {
    ws: Ws,
    public_key: PublicKey,
}

impl Connection {
    /// Connects, answers the relay's challenge, and waits for its welcome.
    /// When the configuration names several URLs (the nodes of one relay
    /// cluster), tries them in order until one welcomes this client.
    pub async fn open(
        config: &ClientConfig,
        signer: &dyn Signer,
    ) -> Result<(Connection, Welcome), ClientError> {
        Self::open_from(config, signer, 0)
            .await
            .map(|(connection, welcome, _)| (connection, welcome))
    }

    /// [`Connection::open`], trying the URLs in order from the one at
    /// `start` (the one that worked last) and round to the others; also
    /// returns the index of the URL that answered.
    pub(crate) async fn open_from(
        config: &ClientConfig,
        signer: &dyn Signer,
        start: usize,
    ) -> Result<(Connection, Welcome, usize), ClientError> {
        let urls = relay_urls(&config.url)?;
        let mut failures = Vec::new();
        for step in 0..urls.len() {
            let index = (start + step) % urls.len();
            let url = &urls[index];
            let opened = tokio::time::timeout(
                config.connect_timeout,
                Self::open_inner(config, url, signer),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Unreachable {
                    url: url.clone(),
                    reason: format!("no welcome within {:?}", config.connect_timeout),
                })
            });
            match opened {
                Ok((connection, welcome)) => return Ok((connection, welcome, index)),
                // A refusal every node of a relay would repeat (a wrong
                // token, a revoked key) ends the attempt.
                Err(error) if error.is_permanent() || urls.len() == 1 => return Err(error),
                Err(error) => failures.push(error),
            }
        }
        Err(ClientError::Unreachable {
            url: config.url.clone(),
            reason: failures
                .iter()
                .map(|failure| match failure {
                    ClientError::Unreachable { url, reason } => format!("{url}: {reason}"),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    async fn open_inner(
        config: &ClientConfig,
        url: &str,
        signer: &dyn Signer,
    ) -> Result<(Connection, Welcome), ClientError> {
        let url = normalize_url(url)?;
        if let Some(token) = &config.access_token
            && (token.is_empty() || token.len() > agentwire_wire::MAX_ACCESS_TOKEN_LEN)
        {
            return Err(ClientError::InvalidConfig(format!(
                "the access token must be 1 to {} bytes (it is {})",
                agentwire_wire::MAX_ACCESS_TOKEN_LEN,
                token.len()
            )));
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INBOUND_MESSAGE))
            .max_frame_size(Some(MAX_INBOUND_MESSAGE));
        let connector = if url.starts_with("wss://") {
            Some(Connector::Rustls(tls_config(config)?))
        } else {
            None
        };
        let unreachable = |error: &dyn std::fmt::Display| ClientError::Unreachable {
            url: url.clone(),
            reason: explain(&url, &error.to_string()),
        };
        let (ws, _response) = match config.local_address {
            None => tokio_tungstenite::connect_async_tls_with_config(
                &url,
                Some(ws_config),
                true,
                connector,
            )
            .await
            .map_err(|error| unreachable(&error))?,
            Some(local) => {
                let stream = connect_from(local, &url)
                    .await
                    .map_err(|error| unreachable(&error))?;
                tokio_tungstenite::client_async_tls_with_config(
                    &url,
                    stream,
                    Some(ws_config),
                    connector,
                )
                .await
                .map_err(|error| unreachable(&error))?
            }
        };
        let mut connection = Connection {
            ws,
            public_key: signer.public_key(),
        };
        let challenge = connection.recv().await?;
        let Body::Challenge {
            relay_id,
            nonce,
            issued_at_ms,
        } = challenge.body
        else {
            return Err(rejection_or(challenge.body, "expected a challenge"));
        };
        let public_key = signer.public_key();
        let message = agentwire_wire::auth_message(&relay_id, &nonce, issued_at_ms, &public_key);
        let hello = Body::Hello {
            nonce,
            public_key,
            signature: signer.sign(&message),
            access_token: config.access_token.clone().unwrap_or_default(),
        };
        connection.send(Frame::new(1, hello)).await?;
        let answer = connection.recv().await?;
        match answer.body {
            Body::Welcome {
                relay_id,
                max_frame_bytes,
                envelope_ttl_secs,
                queued,
            } => Ok((
                connection,
                Welcome {
                    relay_id,
                    max_frame_bytes,
                    envelope_ttl_secs,
                    queued,
                },
            )),
            other => Err(rejection_or(other, "expected a welcome")),
        }
    }

    /// The key this connection authenticated as.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.ws
            .send(Message::Binary(frame.encode().into()))
            .await
            .map_err(|_| ClientError::Disconnected)
    }

    /// The next frame from the relay (control messages are handled here).
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        next_frame(&mut self.ws).await
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Splits into a sending and a receiving half, so that one task can write
    /// while another reads.
    pub fn into_parts(self) -> (FrameSink, FrameStream) {
        let (sink, stream) = self.ws.split();
        (FrameSink(sink), FrameStream(stream))
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a [`Connection`].
pub struct FrameSink(futures_util::stream::SplitSink<Ws, Message>);

impl FrameSink {
    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.0
            .send(Message::Binary(frame.encode().into()))
            .await
            .map_err(|_| ClientError::Disconnected)
    }

    /// Queues one frame without writing it out yet: frames fed together go
    /// out in one write at the next [`FrameSink::flush`] (or once they fill
    /// the WebSocket layer's buffer).
    pub async fn feed(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.0
            .feed(Message::Binary(frame.encode().into()))
            .await
            .map_err(|_| ClientError::Disconnected)
    }

    /// Writes out the frames fed so far.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.0.flush().await.map_err(|_| ClientError::Disconnected)
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.0.close().await;
    }
}

/// The receiving half of a [`Connection`].
pub struct FrameStream(futures_util::stream::SplitStream<Ws>);

impl FrameStream {
    /// The next frame from the relay (control messages are handled by the
    /// WebSocket layer).
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        next_frame(&mut self.0).await
    }
}

async fn next_frame<S>(stream: &mut S) -> Result<Frame, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {
                return Err(ClientError::Disconnected);
            }
            Some(Ok(Message::Binary(bytes))) => {
                return Frame::decode(&bytes).map_err(|error| {
                    ClientError::Protocol(format!("undecodable frame from the relay: {error}"))
                });
            }
            Some(Ok(Message::Text(_))) => {
                return Err(ClientError::Protocol(
                    "the relay sent a text message".into(),
                ));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Most URLs one relay may be given by.
pub const MAX_RELAY_URLS: usize = 8;

/// The URLs of a relay: one `ws://` or `wss://` URL, or several separated by
/// commas (the nodes of one relay cluster, tried in order). Each is checked;
/// spaces around them are ignored.
pub fn relay_urls(list: &str) -> Result<Vec<String>, ClientError> {
    let urls: Vec<String> = list.split(',').map(|url| url.trim().to_owned()).collect();
    if urls.len() > MAX_RELAY_URLS {
        return Err(ClientError::InvalidUrl {
            url: list.to_owned(),
            reason: format!(
                "it names {} URLs; a relay has at most {MAX_RELAY_URLS}",
                urls.len()
            ),
        });
    }
    for url in &urls {
        normalize_url(url)?;
    }
    Ok(urls)
}

/// Accepts `ws://host:port` and appends the endpoint path when none is given.
fn normalize_url(url: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| invalid("it must start with ws:// or wss://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("it has no host"));
    }
    match rest.find('/') {
        None => Ok(format!("{url}/v1/ws")),
        Some(slash) if rest.len() == slash + 1 => Ok(format!("{url}v1/ws")),
        Some(_) => Ok(url.to_owned()),
    }
}

fn tls_config(config: &ClientConfig) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in &config.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|error| ClientError::InvalidUrl {
                url: config.url.clone(),
                reason: format!("an extra root certificate is invalid: {error}"),
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Protocol(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

fn rejection_or(body: Body, what: &str) -> ClientError {
    match body {
        Body::Error {
            code,
            limit,
            message,
        } => ClientError::Rejected {
            code,
            limit,
            message: crate::untrusted_text(&message),
        },
        other => ClientError::Protocol(format!("{what}, got {}", other.frame_type().name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_endpoint_path_when_they_have_none() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(normalize_url(input).ok().as_deref(), expected, "{input}");
        };
        check("ws://127.0.0.1:7878", Some("ws://127.0.0.1:7878/v1/ws"));
        check("ws://127.0.0.1:7878/", Some("ws://127.0.0.1:7878/v1/ws"));
        check(
            "wss://relay.example/custom",
            Some("wss://relay.example/custom"),
        );
        check("http://relay.example", None);
        check("ws://", None);
    }

    #[test]
    fn a_relay_may_be_a_list_of_nodes() {
        assert_eq!(
            relay_urls("ws://a:1, wss://b:2/").unwrap(),
            ["ws://a:1", "wss://b:2/"]
        );
        assert_eq!(relay_urls("ws://a").unwrap(), ["ws://a"]);
        for bad in ["", "ws://a,", "ws://a,,ws://b", "ws://a,http://b", ","] {
            assert!(relay_urls(bad).is_err(), "{bad:?}");
        }
        let nine = ["ws://a"; MAX_RELAY_URLS + 1].join(",");
        assert!(relay_urls(&nine).is_err());
    }
}

/// A connection failure in words that say what to change; the library's own
/// text stays in parentheses.
/// A TCP connection to the host and port of `url`, from `local`.
async fn connect_from(local: std::net::IpAddr, url: &str) -> std::io::Result<TcpStream> {
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid("no scheme"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else if url.starts_with("wss://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let mut last = invalid("the host name does not resolve");
    for remote in tokio::net::lookup_host(authority.as_str()).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if remote.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        socket.set_nodelay(true)?;
        match socket.connect(remote).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn explain(url: &str, reason: &str) -> String {
    let tls = url.starts_with("wss://");
    if tls && (reason.contains("InvalidContentType") || reason.contains("corrupt message")) {
        format!(
            "it does not answer with TLS; if the relay serves plain WebSocket, use ws:// instead of wss:// ({reason})"
        )
    } else if tls
        && (reason.contains("certificate")
            || reason.contains("CaUsedAsEndEntity")
            || reason.contains("UnknownIssuer"))
    {
        format!(
            "its TLS certificate is not trusted: it must be valid for the host and signed by a public CA (a self-signed or private-CA certificate is not accepted) ({reason})"
        )
    } else if reason.contains("Connection refused") {
        format!(
            "nothing listens there; is the relay running, and are the host and port right? ({reason})"
        )
    } else if reason.contains("failed to lookup address")
        || reason.contains("Name or service not known")
    {
        format!("the host name does not resolve; check the URL ({reason})")
    } else {
        reason.to_owned()
    }
}

#[cfg(test)]
mod explain_tests {
    use super::explain;

    #[test]
    fn tls_and_connection_failures_say_what_to_change() {
        let plain = explain(
            "wss://relay:7878",
            "IO error: received corrupt message of type InvalidContentType",
        );
        assert!(plain.contains("use ws:// instead of wss://"), "{plain}");
        let untrusted = explain(
            "wss://relay:7878",
            "IO error: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
        );
        assert!(untrusted.contains("not trusted"), "{untrusted}");
        let refused = explain(
            "ws://127.0.0.1:9",
            "IO error: Connection refused (os error 111)",
        );
        assert!(refused.contains("nothing listens there"), "{refused}");
        assert_eq!(explain("ws://x", "something else"), "something else");
    }
}
