//! Outgoing `wasi:http` requests: where a function may send them, and
//! sending them only there.
//!
//! Invariant: a request leaves the node only toward a destination an
//! operator approved, and only to an address that was checked. Three
//! decisions stand between a guest and the network:
//!
//! 1. **The host.** The request carries one of its own injected tokens,
//!    each allowed toward that host by its grant's egress list, or the
//!    host is on the function's outbound list: what its manifest asks for
//!    (`[outbound] allow`) and an operator approved (`keyhole approve`).
//!    Everything else is refused before a byte is sent: deny by default.
//! 2. **The address.** The host is resolved here, once; loopback,
//!    private, link-local, unique-local, CGNAT, multicast and other
//!    non-global addresses are refused unless the operator allowed them
//!    (`keyhole serve --outbound-allow-ip`), and the node's own listeners
//!    are refused always. The connection goes to the address that passed
//!    the check — never to a second resolution of the name, which a
//!    rebinding DNS server could point elsewhere.
//! 3. **The depth.** Every request the node sends carries
//!    [`HOPS_HEADER`], one more than the request that caused it; the node
//!    answers a request arriving with [`MAX_HOPS`] or more with 508, so a
//!    function that reaches the node again (through an allowed address, a
//!    public one, or a proxy that keeps headers) cannot recurse for ever.

use crate::outbound::egress::EgressList;
use bytes::Bytes;
use http_body::Body;
use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The header that counts how many times a request passed through a
/// Keyhole node on its way here.
pub const HOPS_HEADER: &str = "keyhole-hops";
/// A request that already passed through this many nodes is refused (508).
pub const MAX_HOPS: u8 = 4;
/// How long resolving, connecting and the TLS and HTTP handshakes may take
/// when the guest sets no connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest may wait for a response's first byte, and between
/// its later bytes, when it sets no timeout of its own.
const DEFAULT_BYTE_TIMEOUT: Duration = Duration::from_secs(300);

/// An IPv4 or IPv6 network, such as `127.0.0.0/8` or `fd00::/8`; a bare
/// address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8, fd00::/8)"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { address, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl IpNet {
    /// Whether `ip` lies in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    a[..full] == b[..full] && (rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0)
}

/// `ip` with an IPv4 address embedded in IPv6 (mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`, or the deprecated compatible `::a.b.c.d`)
/// taken out, so the IPv4 rules apply to it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let embedded =
                Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            if nat64 || compatible {
                IpAddr::V4(embedded)
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// Why an address is not a public one, or `None` when it is.
pub fn non_global_reason(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata lives there)")
            } else if a == 0 || v4.is_broadcast() {
                Some("unspecified or broadcast")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if a == 198 && (b == 18 || b == 19) {
                Some("benchmarking")
            } else if v4.is_multicast() || a >= 240 {
                Some("multicast or reserved")
            } else if a == 192 && b == 0 && v4.octets()[2] == 0 {
                Some("IETF protocol assignments")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x2002 || (first == 0x2001 && v6.segments()[1] < 0x200) {
                Some("6to4 or IETF special-purpose")
            } else if (first == 0x2001 && v6.segments()[1] == 0x0db8) || first & 0xfff0 == 0x3ff0 {
                Some("documentation (special-purpose)")
            } else if first & 0xe000 != 0x2000 {
                // Only 2000::/3 is global unicast: the rest is reserved,
                // local-use NAT64, SIIT, discard and the like.
                Some("non-global (outside 2000::/3)")
            } else {
                None
            }
        }
    }
}

/// The node-wide rules for the addresses outgoing requests may reach.
#[derive(Debug, Default)]
pub struct AddressPolicy {
    /// Non-global networks an operator allowed (`--outbound-allow-ip`).
    allowed: Vec<IpNet>,
    /// The node's own listeners, refused whatever is allowed.
    own: RwLock<Vec<SocketAddr>>,
}

impl AddressPolicy {
    /// Public addresses only, plus the non-global networks in `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed,
            own: RwLock::default(),
        }
    }

    /// Records one of the node's own listening addresses: requests to it
    /// are refused.
    pub fn add_own_listener(&self, addr: SocketAddr) {
        self.own
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr);
    }

    /// The operator-allowed networks.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Why `addr` may not be reached, or `None` when it may.
    pub fn refusal(&self, addr: SocketAddr) -> Option<String> {
        let ip = canonical(addr.ip());
        let own = self.own.read().unwrap_or_else(|p| p.into_inner());
        let is_own = own.iter().any(|listener| {
            listener.port() == addr.port()
                && (canonical(listener.ip()) == ip
                    || (listener.ip().is_unspecified() && non_global_reason(ip).is_some()))
        });
        if is_own {
            return Some(format!("{addr} is this node's own listener"));
        }
        let reason = non_global_reason(ip)?;
        if self.allowed.iter().any(|net| net.contains(ip)) {
            return None;
        }
        Some(format!(
            "{ip} is a {reason} address; an operator allows such addresses with `keyhole serve --outbound-allow-ip`"
        ))
    }
}

/// What one function's outgoing requests may reach.
pub struct OutboundRules {
    /// Hosts its manifest asks for and an operator approved.
    pub allowed: EgressList,
    /// The node's address rules.
    pub addresses: Arc<AddressPolicy>,
    /// How host names become addresses.
    pub resolver: Arc<dyn Resolver>,
}

impl Default for OutboundRules {
    /// No hosts, public addresses only, the system's resolver.
    fn default() -> Self {
        Self {
            allowed: EgressList::default(),
            addresses: Arc::default(),
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl std::fmt::Debug for OutboundRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRules")
            .field("allowed", &self.allowed)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Finds the addresses of a host, for [`send`]; the node's is the system
/// resolver, tests give their own to prove which address is connected to.
pub trait Resolver: Send + Sync {
    /// The addresses `host` (a name or an IP literal) has for `port`.
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The operating system's resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            Ok(tokio::net::lookup_host((bare, port)).await?.collect())
        })
    }
}

/// The first of `addresses` the policy allows, or why none is allowed.
pub fn choose_address(
    policy: &AddressPolicy,
    addresses: &[SocketAddr],
) -> Result<SocketAddr, String> {
    let mut refusals = Vec::new();
    for addr in addresses {
        match policy.refusal(*addr) {
            None => return Ok(*addr),
            Some(why) => refusals.push(why),
        }
    }
    refusals.dedup();
    Err(if refusals.is_empty() {
        "the host has no address".to_owned()
    } else {
        refusals.join("; ")
    })
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// The TLS settings outgoing https requests use: the web's public roots.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }))
}

/// Where a checked request goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Whether it is plain http (otherwise https).
    pub plain_http: bool,
    /// The host as the request names it.
    pub host: String,
    /// The port (the scheme's default when the request names none).
    pub port: u16,
}

impl Destination {
    /// `host:port` (with `http://` for plain http), for messages.
    pub fn shown(&self) -> String {
        format!(
            "{}{}:{}",
            if self.plain_http { "http://" } else { "" },
            self.host,
            self.port
        )
    }

    /// The destination of `uri`, or `None` when it has no host, or a scheme
    /// other than http and https.
    pub fn of(uri: &hyper::Uri) -> Option<Self> {
        let plain_http = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => false,
            Some(s) if s.eq_ignore_ascii_case("http") => true,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority.host();
        if host.is_empty() {
            return None;
        }
        Some(Self {
            plain_http,
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if plain_http { 80 } else { 443 }),
        })
    }
}

/// Resolves `destination` with `resolver`, connects to the first address
/// `policy` allows — that address and no other — and sends `request` there
/// (over TLS for https, checked against the request's host name). Returns
/// the response and a future that finishes the connection's I/O, as
/// `wasmtime_wasi_http::default_send_request` does.
pub async fn send(
    mut request: hyper::Request<WasiBody>,
    options: Option<RequestOptions>,
    destination: Destination,
    policy: Arc<AddressPolicy>,
    resolver: Arc<dyn Resolver>,
) -> Result<
    (
        hyper::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    use http_body_util::BodyExt as _;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_BYTE_TIMEOUT);
    let between_bytes_timeout = options
        .and_then(|o| o.between_bytes_timeout)
        .unwrap_or(DEFAULT_BYTE_TIMEOUT)
        .max(Duration::from_nanos(1));

    let connect = async {
        let addresses = resolver
            .resolve(destination.host.clone(), destination.port)
            .await
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?;
        let addr = choose_address(&policy, &addresses).map_err(|why| {
            tracing::warn!(
                host = %destination.host.escape_debug(),
                port = destination.port,
                "outgoing request refused: {why}"
            );
            Error::InternalError(Some(format!(
                "keyhole: `{}` may not be reached: {why}; nothing was sent",
                destination.host.escape_debug()
            )))
        })?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if destination.plain_http {
            Box::new(tcp)
        } else {
            let bare = destination
                .host
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = match bare.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(bare.to_owned())?,
            };
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            Box::new(connector.connect(name, tcp).await.map_err(Error::Tls)?)
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await?;
        Ok::<_, Error>((sender, conn))
    };
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries only the path: scheme and authority go to
    // proxies, and hyper leaves that to the caller.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = hyper::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let send = async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, Error>(response.map(|incoming| {
            TimedBody { incoming, timeout }
                .map_err(|e| e)
                .boxed_unsync()
        }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // The response arrives while the connection's I/O is driven.
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(fut) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(fut).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let io = async move {
        match conn {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|e| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                }
            }),
        }
    };
    Ok((response, Box::new(io)))
}

/// A response body that fails when no byte arrives for too long.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_global_addresses_are_named_and_public_ones_pass() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "CGNAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b:1::a9fe:a9fe", "non-global"),
            ("::ffff:0:7f00:1", "non-global"),
            ("100::1", "non-global"),
            ("5f00::1", "non-global"),
            ("2001:db8::1", "special-purpose"),
        ] {
            let why = non_global_reason(ip.parse().unwrap());
            assert!(why.is_some_and(|w| w.contains(kind)), "{ip}: {why:?}");
        }
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "172.32.0.1",
        ] {
            assert_eq!(non_global_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        assert!(net("127.0.0.0/8").contains("127.9.9.9".parse().unwrap()));
        assert!(!net("127.0.0.0/8").contains("128.0.0.1".parse().unwrap()));
        assert!(net("10.0.0.0/9").contains("10.127.0.1".parse().unwrap()));
        assert!(!net("10.0.0.0/9").contains("10.128.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        for bad in ["127.0.0.1/33", "localhost", "::1/129", "10.0.0.0/x"] {
            let err = bad.parse::<IpNet>().unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn the_policy_allows_what_the_operator_named_but_never_the_node_itself() {
        let policy = AddressPolicy::new(vec![net("127.0.0.1")]);
        policy.add_own_listener(addr("127.0.0.1:8080"));
        policy.add_own_listener(addr("0.0.0.0:8081"));
        assert_eq!(policy.refusal(addr("127.0.0.1:9000")), None);
        assert_eq!(policy.refusal(addr("93.184.215.14:443")), None);
        for (to, why) in [
            ("127.0.0.1:8080", "own listener"),
            ("127.0.0.1:8081", "own listener"),
            ("[::ffff:127.0.0.1]:8080", "own listener"),
            ("127.0.0.2:9000", "loopback"),
            ("169.254.169.254:80", "link-local"),
            ("10.0.0.1:443", "--outbound-allow-ip"),
        ] {
            let refusal = policy.refusal(addr(to));
            assert!(
                refusal.as_deref().is_some_and(|r| r.contains(why)),
                "{to}: {refusal:?}"
            );
        }
    }

    /// A resolver whose first answer is public and every later one is
    /// loopback: a rebinding DNS server.
    struct Rebinding {
        calls: std::sync::atomic::AtomicUsize,
        public: SocketAddr,
    }

    impl Resolver for Rebinding {
        fn resolve(
            &self,
            _host: String,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
            let first = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let answer = if first {
                self.public
            } else {
                SocketAddr::from(([127, 0, 0, 1], port))
            };
            Box::pin(async move { Ok(vec![answer]) })
        }
    }

    fn empty_request(uri: &str) -> hyper::Request<WasiBody> {
        use http_body_util::BodyExt as _;
        hyper::Request::get(uri)
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    #[test]
    fn a_rebinding_name_is_connected_to_the_address_that_was_checked() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // "Public" here is a loopback listener the policy was told to
            // allow: the point is which address the connection goes to.
            let checked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let checked_addr = checked.local_addr().unwrap();
            let policy = Arc::new(AddressPolicy::new(vec![net(&checked_addr
                .ip()
                .to_string())]));
            let resolver = Arc::new(Rebinding {
                calls: Default::default(),
                public: checked_addr,
            });
            let served = tokio::spawn(async move {
                let (mut socket, _) = checked.accept().await.unwrap();
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut head = vec![0u8; 1024];
                let n = socket.read(&mut head).await.unwrap();
                socket
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
                String::from_utf8_lossy(&head[..n]).into_owned()
            });
            let destination = Destination::of(&"http://rebind.test/x".parse().unwrap()).unwrap();
            let (response, io) = send(
                empty_request("http://rebind.test/x"),
                None,
                destination,
                Arc::clone(&policy),
                Arc::clone(&resolver) as Arc<dyn Resolver>,
            )
            .await
            .unwrap();
            assert_eq!(response.status(), 204);
            drop(response);
            let _ = Box::into_pin(io).await;
            assert!(served.await.unwrap().starts_with("GET /x HTTP/1.1"));
            assert_eq!(
                resolver.calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "resolved once"
            );

            // The rebound answer (loopback, not allowed) is refused, and
            // nothing connects.
            let destination = Destination::of(&"http://rebind.test/y".parse().unwrap()).unwrap();
            let strict = Arc::new(AddressPolicy::new(vec![]));
            let err = send(
                empty_request("http://rebind.test/y"),
                None,
                destination,
                strict,
                resolver as Arc<dyn Resolver>,
            )
            .await
            .err()
            .expect("refused");
            assert!(format!("{err:?}").contains("loopback"), "{err:?}");
        });
    }
}
