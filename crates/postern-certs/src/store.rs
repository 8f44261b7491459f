//! The certificate table: named certificates, and the set they serve.

use rustls::pki_types::UnixTime;

use crate::certkey::CertKey;
use crate::default_cert::DefaultCertificate;
use crate::error::StoreError;
use crate::inspect::{CertificateRow, inspect};
use crate::resolver::{CertOrigin, CertResolver, ServedCertificates};

/// The default certificate's table name (the seed's "Default Cert").
pub const DEFAULT_CERT_NAME: &str = "Default Cert";

/// Named certificates in insertion order (the certificate table).
///
/// Several certificates may share a table name (an RSA certificate and its
/// ECDSA companion): [`CertificateStore::add`] refuses only the same name *and*
/// the same key type. The entry set as fallback (by default the first added)
/// is served to clients whose SNI matches nothing.
///
/// # Precedence
///
/// Certificates under [`DEFAULT_CERT_NAME`] are the generated Default Cert
/// ([`CertOrigin::Generated`]); every other entry is operator-imported
/// ([`CertOrigin::Imported`]). When several certificates carry the name a
/// client asks for, [`CertificateStore::served`] picks:
/// 1. the entries set with [`CertificateStore::set_preferred`]
///    ([`CertOrigin::Preferred`]), whatever the key types, in the fallback
///    group too: the operator's choice among several certificates for the
///    same name (the Default Cert included);
/// 2. an imported certificate before the Default Cert (and its ECDSA
///    companion), whatever the key types, in the fallback group too;
/// 3. within the same origin, ECDSA for a client that offers an ECDSA
///    signature scheme, RSA otherwise.
///
/// The Default Cert stays in the table, and still answers a client that can
/// use none of the imported certificates (rather than failing its handshake).
#[derive(Debug, Clone, Default)]
pub struct CertificateStore {
    entries: Vec<(String, CertKey)>,
    fallback: Option<String>,
    preferred: Option<String>,
}

impl CertificateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a certificate under a table name.
    pub fn add(&mut self, name: impl Into<String>, cert: CertKey) -> Result<(), StoreError> {
        let name = name.into();
        if self
            .entries
            .iter()
            .any(|(n, c)| *n == name && c.key_type() == cert.key_type())
        {
            return Err(StoreError::Duplicate(name));
        }
        self.entries.push((name, cert));
        Ok(())
    }

    /// Adds the default certificate (RSA and its ECDSA companion) under
    /// [`DEFAULT_CERT_NAME`].
    pub fn add_default(&mut self, default: &DefaultCertificate) -> Result<(), StoreError> {
        for cert in default.certs() {
            self.add(DEFAULT_CERT_NAME, cert.clone())?;
        }
        Ok(())
    }

    /// Removes every certificate under `name`; returns them.
    pub fn remove(&mut self, name: &str) -> Vec<CertKey> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.entries = kept;
        if self.fallback.as_deref() == Some(name) {
            self.fallback = None;
        }
        gone.into_iter().map(|(_, c)| c).collect()
    }

    /// Replaces every certificate under `name` with `certs` (renewal).
    pub fn replace(&mut self, name: &str, certs: impl IntoIterator<Item = CertKey>) {
        let fallback = self.fallback.clone();
        self.remove(name);
        self.fallback = fallback;
        self.entries
            .extend(certs.into_iter().map(|c| (name.to_owned(), c)));
    }

    /// Makes the entries named `name` the fallback for unmatched or absent SNI.
    pub fn set_fallback(&mut self, name: impl Into<String>) {
        self.fallback = Some(name.into());
    }

    /// Serves the entries named `name` before every other certificate for
    /// their names ([`CertOrigin::Preferred`]); `None`: the default
    /// precedence.
    pub fn set_preferred(&mut self, name: Option<String>) {
        self.preferred = name;
    }

    /// The name set with [`CertificateStore::set_preferred`].
    pub fn preferred(&self) -> Option<&str> {
        self.preferred.as_deref()
    }

    /// The certificates under `name`.
    pub fn get(&self, name: &str) -> impl Iterator<Item = &CertKey> {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// Table name and certificate, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CertKey)> {
        self.entries.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The certificate table at time `now`.
    pub fn list(&self, now: UnixTime) -> Vec<CertificateRow> {
        self.entries
            .iter()
            .filter_map(|(name, c)| match inspect(name, c.leaf(), now) {
                Ok(row) => Some(row),
                Err(e) => {
                    // Unreachable in practice: `CertKey` parsed the leaf on import.
                    tracing::warn!(name, error = %e, "certificate no longer parses");
                    None
                }
            })
            .collect()
    }

    /// The served set for these certificates, with the precedence described
    /// on [`CertificateStore`].
    ///
    /// The fallback group is the entries under the fallback name; when that is
    /// the Default Cert, the imported certificates carrying one of its names
    /// (the host name) join the group, and outrank it there as everywhere.
    pub fn served(&self) -> ServedCertificates {
        let origin = |name: &str| {
            if self.preferred.as_deref() == Some(name) {
                CertOrigin::Preferred
            } else if name == DEFAULT_CERT_NAME {
                CertOrigin::Generated
            } else {
                CertOrigin::Imported
            }
        };
        let fallback = self
            .fallback
            .as_deref()
            .filter(|f| self.entries.iter().any(|(n, _)| n == f))
            .or_else(|| self.entries.first().map(|(n, _)| n.as_str()));
        let generated_fallback_names: Vec<&String> = self
            .entries
            .iter()
            .filter(|(n, _)| Some(n.as_str()) == fallback && n == DEFAULT_CERT_NAME)
            .flat_map(|(_, c)| c.names())
            .collect();
        let mut set = ServedCertificates::new();
        for (name, cert) in &self.entries {
            let origin = origin(name);
            let joins_fallback = Some(name.as_str()) == fallback
                || (name != DEFAULT_CERT_NAME
                    && cert
                        .names()
                        .iter()
                        .any(|n| generated_fallback_names.contains(&n)));
            if joins_fallback {
                set.add_fallback_from(cert, origin);
            } else {
                set.add_from(cert, origin);
            }
        }
        set
    }

    /// Installs this store's served set into `resolver` (hot reload).
    pub fn publish(&self, resolver: &CertResolver) {
        resolver.swap(self.served());
    }
}
