//! rustls configuration builders from the policy vocabulary.
//!
//! rustls has no anonymous (aNULL) cipher suites: every suite it offers
//! authenticates the server with a certificate. What the seed calls
//! "anonymous ciphers" (encryption for a client that has no certificate) is
//! what the server modes `offer` and `require` with client certificates `none`
//! or `ask` give: the client presents nothing and the session is encrypted.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use postern_policy::{
    CertificateCheck, ClientCertMode, ClientCertificate, ClientTlsMode, Fingerprint, ServerTlsMode,
    TlsVersion,
};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ServerSessionMemoryCache;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::certkey::CertKey;
use crate::error::{ConfigError, ImportError};
use crate::resolver::CertResolver;
use crate::verify::{CertificateHook, ClientCertPolicy, PeerCertVerifier, ServerCheckConfig};

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&TLS13];
static TLS12_AND_13: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// The protocol versions allowed for a minimum version: TLS 1.2 and 1.3 only
/// (rustls implements nothing older).
pub fn protocol_versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => TLS12_AND_13,
        // TLS 1.3, and any later minimum, allows only TLS 1.3.
        _ => TLS13_ONLY,
    }
}

/// The crypto provider used where none is passed, explicitly (no
/// process-wide default needed): aws-lc-rs with feature `aws-lc-rs` (the
/// default), else ring with feature `ring`.
///
/// With neither feature, the process-level default installed with
/// [`CryptoProvider::install_default`].
///
/// # Panics
///
/// With neither feature, if no process-level default is installed (as
/// rustls' own `ClientConfig::builder()`).
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    let provider = Arc::clone(CryptoProvider::get_default().expect(
        "no crypto provider: enable feature aws-lc-rs or ring of postern-certs, \
         or call CryptoProvider::install_default",
    ));
    provider
}

/// A session ticketer from the built-in provider (`aws-lc-rs`, else `ring`).
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, ConfigError> {
    #[cfg(feature = "aws-lc-rs")]
    let ticketer = Ok(rustls::crypto::aws_lc_rs::Ticketer::new()?);
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let ticketer = Ok(rustls::crypto::ring::Ticketer::new()?);
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    let ticketer = Err(ConfigError::NoTicketer);
    ticketer
}

/// Trust anchors: the compiled-in Mozilla bundle (feature `webpki-roots`), the
/// system store (feature `native-roots`), or PEM bundles.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    store: RootCertStore,
}

impl Default for TrustRoots {
    /// No anchors.
    fn default() -> Self {
        Self::empty()
    }
}

impl TrustRoots {
    /// No anchors.
    pub fn empty() -> Self {
        Self {
            store: RootCertStore::empty(),
        }
    }

    /// The Mozilla roots compiled in by `webpki-roots` (deterministic; stale
    /// unless rebuilt). Feature `webpki-roots`.
    #[cfg(feature = "webpki-roots")]
    pub fn webpki() -> Self {
        Self {
            store: RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        }
    }

    /// The operating system's store (`rustls-native-certs`; honours `SSL_CERT_FILE`).
    /// Certificates that fail to load are skipped and logged. Feature `native-roots`.
    #[cfg(feature = "native-roots")]
    pub fn native() -> Self {
        let result = rustls_native_certs::load_native_certs();
        for e in &result.errors {
            tracing::warn!(error = %e, "system root certificate not loaded");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(result.certs);
        tracing::debug!(added, ignored, "system roots loaded");
        Self { store }
    }

    /// Adds every certificate of a PEM bundle (a configured CA file).
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<usize, ImportError> {
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ImportError::MalformedPem(e.to_string()))?;
        if certs.is_empty() {
            return Err(ImportError::EmptyChain);
        }
        let n = certs.len();
        for c in certs {
            self.store
                .add(c)
                .map_err(|e| ImportError::InvalidCertificate(e.to_string()))?;
        }
        Ok(n)
    }

    /// Adds one DER certificate as an anchor.
    pub fn add_der(&mut self, der: CertificateDer<'_>) -> Result<(), ImportError> {
        self.store
            .add(der)
            .map_err(|e| ImportError::InvalidCertificate(e.to_string()))
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are no anchors.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The rustls root store.
    pub fn into_store(self) -> Arc<RootCertStore> {
        Arc::new(self.store)
    }
}

/// Inbound TLS settings.
///
/// Default: mode `offer`, client certificates `none`, no client CA roots,
/// TLS 1.2 minimum, session tickets on, a 256-entry session cache.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerTlsSpec {
    /// The server TLS mode.
    pub mode: ServerTlsMode,
    /// Whether a client certificate is requested.
    pub client_cert: ClientCertMode,
    /// CA roots for client certificates (required for `require`; for `ask`
    /// they decide whether a certificate is recorded as verified).
    pub client_roots: Option<Arc<RootCertStore>>,
    /// Lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Issue session tickets (RFC 8446 §4.6.1 / RFC 5077). Needs feature
    /// `aws-lc-rs` or `ring` ([`ConfigError::NoTicketer`] otherwise).
    pub tickets: bool,
    /// Entries in the server-side session cache (0 disables it).
    pub session_cache_size: usize,
}

impl Default for ServerTlsSpec {
    fn default() -> Self {
        Self {
            mode: ServerTlsMode::Offer,
            client_cert: ClientCertMode::None,
            client_roots: None,
            min_version: TlsVersion::Tls12,
            tickets: true,
            session_cache_size: 256,
        }
    }
}

/// A built inbound TLS configuration: the rustls `ServerConfig` plus what is
/// needed to read the client certificate's check after the handshake.
#[derive(Debug, Clone)]
pub struct ServerTlsContext {
    config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
    client_policy: Option<Arc<ClientCertPolicy>>,
    client_cert_mode: ClientCertMode,
    min_version: TlsVersion,
}

impl ServerTlsContext {
    /// Builds the configuration for `spec`, serving certificates from `resolver`.
    ///
    /// Errors: mode `none` (no TLS), client certificates `require` without mode
    /// `require` or without roots.
    pub fn new(spec: &ServerTlsSpec, resolver: Arc<CertResolver>) -> Result<Self, ConfigError> {
        Self::with_provider(spec, resolver, provider())
    }

    /// As [`ServerTlsContext::new`], with a given crypto provider.
    pub fn with_provider(
        spec: &ServerTlsSpec,
        resolver: Arc<CertResolver>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        match spec.mode {
            ServerTlsMode::None => return Err(ConfigError::TlsDisabled),
            ServerTlsMode::Require => {}
            _ if spec.client_cert == ClientCertMode::Require => {
                return Err(ConfigError::ClientCertNeedsRequire);
            }
            _ => {}
        }
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(protocol_versions(spec.min_version))?;
        let (builder, client_policy) = match spec.client_cert {
            ClientCertMode::None => (builder.with_no_client_auth(), None),
            mode => {
                let policy = Arc::new(ClientCertPolicy::new(
                    mode,
                    spec.client_roots.clone(),
                    Arc::clone(&provider),
                )?);
                (
                    builder.with_client_cert_verifier(Arc::clone(&policy) as _),
                    Some(policy),
                )
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as _);
        // The server's cipher-suite order (strongest first) decides, not the
        // client's: a peer cannot steer the session to its weakest offer.
        config.ignore_client_order = true;
        config.session_storage = if spec.session_cache_size == 0 {
            Arc::new(rustls::server::NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(spec.session_cache_size)
        };
        if spec.tickets {
            config.ticketer = ticketer()?;
        }
        Ok(Self {
            config: Arc::new(config),
            resolver,
            client_policy,
            client_cert_mode: spec.client_cert,
            min_version: spec.min_version,
        })
    }

    /// Whether the handshake requests a client certificate (`ask`), demands
    /// one (`require`) or neither (`none`): [`ServerTlsSpec::client_cert`] as
    /// built. A server should check that it agrees with its policy's
    /// [`ClientCertMode`] (a policy that requires certificates over a context
    /// that never requests one would refuse every client after the handshake).
    pub fn client_cert_mode(&self) -> ClientCertMode {
        self.client_cert_mode
    }

    /// The lowest protocol version accepted: [`ServerTlsSpec::min_version`] as built.
    pub fn min_version(&self) -> TlsVersion {
        self.min_version
    }

    /// The rustls configuration, shared by all connections.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The certificate resolver (swap its set to reload certificates).
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// The client certificate, from `ServerConnection::peer_certificates()`
    /// after the handshake: its fingerprint, subject, issuer and check against
    /// the client CA roots, ready for [`postern_policy::ServerPolicy::may_relay`].
    /// `None` when none was sent or none was requested (the check is then
    /// [`CertificateCheck::anonymous`]).
    pub fn client_certificate(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> Option<ClientCertificate> {
        self.client_policy
            .as_ref()
            .and_then(|p| p.client_certificate(peer_certificates, now))
    }
}

/// Outbound TLS settings for one connection.
///
/// Default: mode `opportunistic`, no server name (set one:
/// [`ClientTlsSpec::new`]), match names empty (meaning the server name), no
/// pins, the context's roots, TLS 1.2 minimum, SNI sent, no hook, enforcing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientTlsSpec {
    /// The client TLS mode.
    pub mode: ClientTlsMode,
    /// The host connected to (the MX host): sent as SNI (RFC 8461 §7.1,
    /// RFC 7672 §8.1 want it) and the default match name.
    pub server_name: String,
    /// Names the certificate must match (`secure`: the next-hop domain and,
    /// as Postfix's `dot-nexthop`, `.domain` for any subdomain). Empty: the
    /// server name (`verify`: the MX host).
    pub match_names: Vec<String>,
    /// SHA-256 pins of the leaf (`fingerprint` mode).
    pub pins: Vec<Fingerprint>,
    /// Trust anchors; `None` uses the context's.
    pub roots: Option<Arc<RootCertStore>>,
    /// Lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Do not send SNI. Off by default: mail servers with several
    /// certificates need it.
    pub no_sni: bool,
    /// DANE / MTA-STS hook.
    pub hook: Option<Arc<dyn CertificateHook>>,
    /// Record the check but never refuse the handshake over it (MTA-STS
    /// `testing` mode). Dangerous: the modes that verify no longer protect.
    pub dangerous_report_only: bool,
}

impl ClientTlsSpec {
    /// A spec for `mode` towards `server_name`, otherwise default.
    pub fn new(mode: ClientTlsMode, server_name: impl Into<String>) -> Self {
        Self {
            mode,
            server_name: server_name.into(),
            ..Self::default()
        }
    }
}

/// A per-connection outbound TLS configuration, from [`ClientTlsContext::connection`].
///
/// After a successful handshake, [`ClientTlsConnection::certificate_check`]
/// gives the check (also for a resumed session, from the certificates it
/// carries); after a failed one, [`crate::refused_check`] on the error gives
/// the check that made the verifier refuse.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientTlsConnection {
    /// The rustls configuration (shared by all connections under the same policy).
    pub config: Arc<ClientConfig>,
    /// The name to pass to `ClientConnection::new` / `TlsConnector::connect`.
    pub server_name: ServerName<'static>,
    verifier: Arc<PeerCertVerifier>,
}

impl ClientTlsConnection {
    /// The server certificate's check after the handshake, from
    /// `ClientConnection::peer_certificates()`, at `now`. `Anonymous` if no
    /// certificate is known.
    pub fn certificate_check(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> CertificateCheck {
        match peer_certificates.and_then(<[_]>::split_first) {
            Some((leaf, rest)) => self.verifier.evaluate(leaf, rest, &self.server_name, now),
            None => crate::verify::check(postern_policy::PeerTrust::Anonymous, None),
        }
    }

    /// Whether the mode refuses a handshake that does not verify.
    pub fn enforces(&self) -> bool {
        self.verifier.enforces()
    }
}

/// Shared outbound TLS state: the crypto provider, default roots, an optional
/// client certificate, and one rustls configuration (verifier and session
/// cache) per verification policy.
///
/// rustls resumes a session only with the verifier that established it, and a
/// resumed handshake skips certificate verification: keeping one verifier per
/// policy (mode, match names, pins, roots, hook, minimum version, SNI) makes
/// resumption work across connections while a session established under
/// `encrypt` is never resumed under `verify`.
pub struct ClientTlsContext {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    client_cert: Option<CertKey>,
    session_cache_size: usize,
    policies: Mutex<HashMap<String, PolicyConfig>>,
}

/// The configuration and verifier kept for one verification policy.
type PolicyConfig = (Arc<ClientConfig>, Arc<PeerCertVerifier>);

impl fmt::Debug for ClientTlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsContext")
            .field("roots", &self.roots.len())
            .field("client_cert", &self.client_cert)
            .field("session_cache_size", &self.session_cache_size)
            .finish_non_exhaustive()
    }
}

/// Most distinct policies kept; past it the cache is emptied (sessions are
/// then renegotiated in full, nothing else is lost).
const MAX_POLICIES: usize = 4096;

impl ClientTlsContext {
    /// A context with default trust anchors `roots` (e.g. [`TrustRoots::webpki`]),
    /// no client certificate, 256 cached sessions per policy.
    pub fn new(roots: Arc<RootCertStore>) -> Self {
        Self {
            provider: provider(),
            roots,
            client_cert: None,
            session_cache_size: 256,
            policies: Mutex::new(HashMap::new()),
        }
    }

    /// Presents `cert` to servers that ask for one.
    pub fn with_client_certificate(mut self, cert: CertKey) -> Self {
        self.client_cert = Some(cert);
        self
    }

    /// Uses `provider` instead of [`provider()`]'s.
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// Sets the number of sessions cached per policy (0 disables resumption).
    pub fn with_session_cache_size(mut self, size: usize) -> Self {
        self.session_cache_size = size;
        self
    }

    /// Builds (or reuses) the configuration for one connection per `spec`.
    pub fn connection(&self, spec: &ClientTlsSpec) -> Result<ClientTlsConnection, ConfigError> {
        match spec.mode {
            ClientTlsMode::None => return Err(ConfigError::TlsDisabled),
            ClientTlsMode::Fingerprint if spec.pins.is_empty() => {
                return Err(ConfigError::MissingPins);
            }
            ClientTlsMode::Dane | ClientTlsMode::DaneOnly if spec.hook.is_none() => {
                return Err(ConfigError::MissingHook(spec.mode));
            }
            ClientTlsMode::Opportunistic
            | ClientTlsMode::Encrypt
            | ClientTlsMode::Verify
            | ClientTlsMode::Secure
            | ClientTlsMode::Fingerprint
            | ClientTlsMode::Dane
            | ClientTlsMode::DaneOnly
            | ClientTlsMode::MtaSts => {}
            other => return Err(ConfigError::UnsupportedMode(other)),
        }
        let server_name = ServerName::try_from(spec.server_name.trim_end_matches('.'))
            .map_err(|_| ConfigError::InvalidServerName(spec.server_name.clone()))?
            .to_owned();
        let roots = spec
            .roots
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.roots));
        let key = format!(
            "{:?}|{:?}|{:?}|{:p}|{:?}|{}|{:?}|{}",
            spec.mode,
            spec.match_names,
            spec.pins,
            Arc::as_ptr(&roots),
            spec.hook.as_ref().map(|h| h
                .cache_key()
                .unwrap_or_else(|| format!("{:p}", Arc::as_ptr(h).cast::<()>()))),
            spec.dangerous_report_only,
            spec.min_version,
            spec.no_sni,
        );
        let mut policies = self.policies.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((config, verifier)) = policies.get(&key) {
            return Ok(ClientTlsConnection {
                config: Arc::clone(config),
                server_name,
                verifier: Arc::clone(verifier),
            });
        }
        let verifier = Arc::new(PeerCertVerifier::new(
            ServerCheckConfig {
                mode: spec.mode,
                roots,
                match_names: spec.match_names.clone(),
                pins: spec.pins.clone(),
                hook: spec.hook.clone(),
                report_only: spec.dangerous_report_only,
            },
            Arc::clone(&self.provider),
        ));
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(protocol_versions(spec.min_version))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as _);
        let mut config = match &self.client_cert {
            Some(c) => builder.with_client_cert_resolver(Arc::new(
                rustls::sign::SingleCertAndKey::from(Arc::clone(c.certified_key())),
            )),
            None => builder.with_no_client_auth(),
        };
        // RFC 8461 §7.1 and RFC 7672 §8.1: the client sends SNI (the MX host,
        // or the TLSA base domain).
        config.enable_sni = !spec.no_sni;
        config.resumption = if self.session_cache_size == 0 {
            Resumption::disabled()
        } else {
            Resumption::in_memory_sessions(self.session_cache_size)
        };
        let config = Arc::new(config);
        if policies.len() >= MAX_POLICIES {
            policies.clear();
        }
        policies.insert(key, (Arc::clone(&config), Arc::clone(&verifier)));
        Ok(ClientTlsConnection {
            config,
            server_name,
            verifier,
        })
    }
}
