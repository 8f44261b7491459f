//! Server certificate selection: by SNI, with a fallback, ECDSA before RSA,
//! and an atomically swappable served set.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::SignatureScheme;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certkey::{CertKey, KeyType};

/// One servable certificate with its selection rank (lower is preferred).
#[derive(Clone)]
struct Entry {
    rank: u8,
    key: Arc<CertifiedKey>,
}

fn rank(kind: KeyType) -> u8 {
    match kind {
        KeyType::Ecdsa => 0,
        KeyType::Ed25519 => 1,
        KeyType::Rsa => 2,
        _ => 3,
    }
}

fn insert_sorted(list: &mut Vec<Entry>, entry: Entry) {
    let at = list.partition_point(|e| e.rank <= entry.rank);
    list.insert(at, entry);
}

/// An immutable set of server certificates, indexed by name.
///
/// Selection for a ClientHello:
/// 1. the SNI name, exact match on a subjectAltName;
/// 2. else a wildcard SAN `*.parent` covering exactly one leftmost label
///    (RFC 6125 §6.4.3; RFC 8461 §4.1: "`*.example.com` … would not match
///    `example.com` or `a.b.example.com`" — the same rule clients apply);
/// 3. else the fallback group. RFC 8461 §7.1 (and RFC 6066 §3): servers must not
///    require SNI, so a client that sends none, or an unknown name, still gets a
///    certificate.
///
/// Within the chosen group the first certificate whose key can sign with one of
/// the client's offered signature schemes wins, ECDSA first, then Ed25519, then
/// RSA: a client offering an `ECDSA_*` scheme gets the ECDSA certificate, others
/// get RSA. (For TLS 1.2 rustls has already reduced the offered schemes to those
/// usable with the client's cipher suites.)
///
/// The fallback group is, unless set with [`ServedCertificates::add_fallback`],
/// every certificate that carries the first name of the first certificate added.
#[derive(Clone, Default)]
pub struct ServedCertificates {
    exact: HashMap<String, Vec<Entry>>,
    wildcard: HashMap<String, Vec<Entry>>,
    fallback: Vec<Entry>,
    fallback_name: Option<String>,
    explicit_fallback: bool,
    count: usize,
}

impl fmt::Debug for ServedCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.exact.keys().collect();
        names.sort();
        f.debug_struct("ServedCertificates")
            .field("count", &self.count)
            .field("names", &names)
            .field("fallback_name", &self.fallback_name)
            .finish_non_exhaustive()
    }
}

impl ServedCertificates {
    /// An empty set (every handshake fails for want of a certificate).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from certificates, the first one's name giving the fallback.
    pub fn from_certs<'a>(certs: impl IntoIterator<Item = &'a CertKey>) -> Self {
        let mut set = Self::new();
        for c in certs {
            set.add(c);
        }
        set
    }

    /// Adds a certificate under each of its DNS subjectAltNames.
    pub fn add(&mut self, cert: &CertKey) {
        let entry = Entry {
            rank: rank(cert.key_type()),
            key: Arc::clone(cert.certified_key()),
        };
        self.count += 1;
        for name in cert.names() {
            match name.strip_prefix("*.") {
                Some(parent) => insert_sorted(
                    self.wildcard.entry(parent.to_owned()).or_default(),
                    entry.clone(),
                ),
                None => insert_sorted(self.exact.entry(name.clone()).or_default(), entry.clone()),
            }
        }
        if !self.explicit_fallback {
            let joins = match &self.fallback_name {
                None => {
                    self.fallback_name = cert.names().first().cloned();
                    true
                }
                Some(n) => cert.names().contains(n),
            };
            if joins {
                insert_sorted(&mut self.fallback, entry);
            }
        }
    }

    /// Adds a certificate and makes it part of the fallback group (replacing the
    /// implicit fallback on first use).
    pub fn add_fallback(&mut self, cert: &CertKey) {
        if !self.explicit_fallback {
            self.explicit_fallback = true;
            self.fallback.clear();
            self.fallback_name = cert.names().first().cloned();
        }
        // With `explicit_fallback` set, `add` leaves the fallback group alone.
        self.add(cert);
        insert_sorted(
            &mut self.fallback,
            Entry {
                rank: rank(cert.key_type()),
                key: Arc::clone(cert.certified_key()),
            },
        );
    }

    /// Number of certificates added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no certificate was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Picks a certificate for an SNI name (if any) and the client's signature schemes.
    pub fn select(
        &self,
        sni: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let group = sni
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|name| {
                self.exact.get(&name).or_else(|| {
                    // `*.parent` covers exactly one label: split at the first dot.
                    let (_, parent) = name.split_once('.')?;
                    self.wildcard.get(parent)
                })
            })
            .unwrap_or(&self.fallback);
        group
            .iter()
            .find(|e| e.key.key.choose_scheme(schemes).is_some())
            .map(|e| Arc::clone(&e.key))
    }
}

/// A [`ResolvesServerCert`] over a [`ServedCertificates`] that can be replaced
/// at run time.
///
/// [`CertResolver::swap`] installs a new set atomically (a write lock held only
/// for a pointer swap): a handshake that already resolved its certificate keeps
/// it (it holds an `Arc`), new handshakes see the new set.
pub struct CertResolver {
    current: RwLock<Arc<ServedCertificates>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("current", &self.current())
            .finish()
    }
}

impl CertResolver {
    /// A resolver serving `set`.
    pub fn new(set: ServedCertificates) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// The set served now.
    pub fn current(&self) -> Arc<ServedCertificates> {
        // A poisoned lock still holds a valid `Arc` (the swap cannot half-complete).
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Installs `set` for new handshakes and returns the previous set.
    pub fn swap(&self, set: ServedCertificates) -> Arc<ServedCertificates> {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(set))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        let chosen = set.select(client_hello.server_name(), client_hello.signature_schemes());
        if chosen.is_none() {
            tracing::debug!(
                sni = client_hello.server_name(),
                "no certificate usable with the client's signature schemes"
            );
        }
        chosen
    }
}
