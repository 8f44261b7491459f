//! The certificate directory: the Default Cert and imported certificates,
//! persisted in the state directory, loaded into a
//! [`CertificateStore`] for serving and for the `cert list` table.
//!
//! Layout (inside `state_dir/certs`):
//!
//! ```text
//! default-rsa.crt.pem  default-rsa.key.pem       the Default Cert (RSA, generated once)
//! default-ecdsa.crt.pem default-ecdsa.key.pem    its ECDSA P-256 companion
//! imported/NAME/chain.pem imported/NAME/key.pem  `cert import --name NAME`
//! preferred                                      `cert use NAME`: the name served first
//! ```
//!
//! An import is validated first ([`CertKey::from_pem`]: the key matches the
//! leaf, RSA at least 2048 bits; the certificate is within its validity
//! period unless forced), written into a temporary directory with the
//! key file mode 0600, fsynced, then renamed into place, so a running relay
//! never sees half a pair. The rename changes the `imported` directory's
//! modification time, which the relay polls ([`CertDir::stamp`]) to reload
//! without restart. `cert remove` renames the directory away before deleting
//! it; `cert regenerate-default` and `cert use` replace their files by
//! rename; the stamp sees each.
//!
//! When several certificates carry the same name (the host name, most
//! often), the store serves imported ones before the Default Cert, then
//! ECDSA before RSA, then by table name. `cert use NAME` records NAME in
//! `preferred`: its certificates are then served first for their names (and
//! to clients without SNI when they carry the host name), whatever their key
//! types; `cert use --clear` returns to the default order.
//!
//! ```
//! use postern_relay::tls::certs::CertDir;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let certs = CertDir::new(dir.path());
//! // A P-256 certificate generated here stands for one from a CA.
//! let pem = postern_certs::generate_self_signed(
//!     &postern_certs::DefaultCertOptions::new("mx.example.org"),
//!     postern_certs::GeneratedKind::EcdsaP256,
//!     rustls::pki_types::UnixTime::now(),
//! )?;
//! let now = rustls::pki_types::UnixTime::now();
//! certs.import("mx", pem.cert_pem.as_bytes(), pem.key_pem.as_bytes(), now, false)?;
//! let imported = certs.imported()?;
//! assert_eq!(imported[0].0, "mx");
//! assert!(postern_relay::tls::certs::check_name("../etc").is_err());
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::is_certificate_name;
use postern_certs::{
    CertKey, CertificateStore, DEFAULT_CERT_NAME, DefaultCertError, DefaultCertOptions,
    DefaultCertificate, EXPIRY_WARNING_DAYS, Fingerprint, GeneratedKind, ImportError, RsaBits,
    StoreError, durable,
};
use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An error of the certificate directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertDirError {
    /// The certificate name is not usable.
    #[error(
        "invalid certificate name {0:?} (letters, digits, '.', '_', '-' and spaces; not \"Default Cert\")"
    )]
    Name(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The certificate or key does not import.
    #[error("{0}")]
    Import(#[from] ImportError),
    /// The Default Cert could not be loaded or generated.
    #[error("default certificate: {0}")]
    Default(#[from] DefaultCertError),
    /// The store refused a certificate.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No certificate with this name was imported.
    #[error("no certificate named {0:?}")]
    Unknown(String),
    /// The Default Cert is not removed: it answers clients that no other
    /// certificate can.
    #[error(
        "the Default Cert cannot be removed (it answers the clients no other certificate can); \
         replace it with `cert regenerate-default`"
    )]
    DefaultCert,
    /// The certificate has expired: refused unless forced.
    #[error("the certificate expired at {} (not after); import it anyway with --force", rfc3339(*.not_after))]
    Expired {
        /// The end of its validity.
        not_after: OffsetDateTime,
    },
    /// The certificate is not valid yet: refused unless forced.
    #[error("the certificate is not valid before {} (not before); import it anyway with --force", rfc3339(*.not_before))]
    NotYetValid {
        /// The start of its validity.
        not_before: OffsetDateTime,
    },
}

/// A time as RFC 3339 text (`2026-12-05T09:00:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The file naming the preferred certificate (`cert use`).
pub const PREFERRED_FILE: &str = "preferred";

/// What [`CertDir::stamp`] compares: the imported directory's modification
/// time, and for each file of the Default Cert and the preference its inode
/// and modification time (a rename always changes the inode, even within the
/// file system's timestamp granularity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<(u64, SystemTime)>>);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertDirError + '_ {
    move |source| CertDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks that `name` can name an imported certificate (the rule is
/// [`is_certificate_name`]'s).
pub fn check_name(name: &str) -> Result<(), CertDirError> {
    if is_certificate_name(name) {
        Ok(())
    } else {
        Err(CertDirError::Name(name.to_owned()))
    }
}

/// The RSA size for a configured number of bits (validated by the config).
pub fn rsa_bits(bits: u32) -> RsaBits {
    match bits {
        2048 => RsaBits::B2048,
        3072 => RsaBits::B3072,
        _ => RsaBits::B4096,
    }
}

/// The certificate directory of a relay.
#[derive(Debug, Clone)]
pub struct CertDir {
    root: PathBuf,
}

impl CertDir {
    /// The directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn imported_dir(&self) -> PathBuf {
        self.root.join("imported")
    }

    /// Loads the Default Cert, generating it (RSA of `bits`, SHA-256, with an
    /// ECDSA P-256 companion) for `hostname` if the directory has none (or
    /// issuing the certificate again for a key found alone).
    pub fn default_cert(
        &self,
        hostname: &str,
        bits: RsaBits,
        now: UnixTime,
    ) -> Result<DefaultCertificate, CertDirError> {
        let mut opts = DefaultCertOptions::new(hostname);
        opts.rsa_bits = bits;
        Ok(postern_certs::load_or_create(&self.root, &opts, now)?)
    }

    /// The imported certificates, by name (sorted).
    pub fn imported(&self) -> Result<Vec<(String, CertKey)>, CertDirError> {
        let dir = self.imported_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporary and replaced directories start with a dot.
            if check_name(&name).is_err() {
                continue;
            }
            out.push((name.clone(), self.load_imported(&name)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn load_imported(&self, name: &str) -> Result<CertKey, CertDirError> {
        let dir = self.imported_dir().join(name);
        let chain_path = dir.join("chain.pem");
        let key_path = dir.join("key.pem");
        let chain = fs::read(&chain_path).map_err(io_err(&chain_path))?;
        let key = fs::read(&key_path).map_err(io_err(&key_path))?;
        Ok(CertKey::from_pem(&chain, &key)?)
    }

    /// Validates a certificate chain and key and persists them under `name`
    /// (replacing a certificate of that name). Returns the parsed pair.
    ///
    /// A leaf that has expired or is not yet valid at `now` is refused
    /// ([`CertDirError::Expired`], [`CertDirError::NotYetValid`]) unless
    /// `force` (the command's `--force`): it would be served only to clients
    /// that no valid certificate can answer.
    pub fn import(
        &self,
        name: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        now: UnixTime,
        force: bool,
    ) -> Result<CertKey, CertDirError> {
        check_name(name)?;
        let cert = CertKey::from_pem(chain_pem, key_pem)?;
        if !force && !cert.valid_at(now) {
            let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            return Err(if secs < cert.not_before().unix_timestamp() {
                CertDirError::NotYetValid {
                    not_before: cert.not_before(),
                }
            } else {
                CertDirError::Expired {
                    not_after: cert.not_after(),
                }
            });
        }
        let imported = self.imported_dir();
        fs::create_dir_all(&imported).map_err(io_err(&imported))?;
        let unique = unique();
        let tmp = imported.join(format!(".tmp-{unique}"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        for (file, pem, mode) in [("chain.pem", chain_pem, 0o644), ("key.pem", key_pem, 0o600)] {
            let path = tmp.join(file);
            durable::write_new_file(&path, pem, mode).map_err(io_err(&path))?;
        }
        sync_dir(&tmp)?;
        let target = imported.join(name);
        let old = imported.join(format!(".old-{unique}"));
        let replaced = match fs::rename(&target, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(&target)(e)),
        };
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        sync_dir(&imported)?;
        if replaced {
            fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        Ok(cert)
    }

    /// The modification stamp of the directory: changes when a certificate
    /// is imported, replaced or removed, the Default Cert regenerated, or the
    /// preference changed.
    pub fn stamp(&self) -> Stamp {
        #[cfg(unix)]
        let ino = |m: &fs::Metadata| std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = |_: &fs::Metadata| 0;
        let watched = [
            self.imported_dir(),
            self.root.join(postern_certs::RSA_CERT_FILE),
            self.root.join(postern_certs::RSA_KEY_FILE),
            self.root.join(postern_certs::ECDSA_CERT_FILE),
            self.root.join(postern_certs::ECDSA_KEY_FILE),
            self.root.join(PREFERRED_FILE),
        ];
        Stamp(
            watched
                .iter()
                .map(|p| {
                    let m = fs::metadata(p).ok()?;
                    Some((ino(&m), m.modified().ok()?))
                })
                .collect(),
        )
    }

    /// Removes the imported certificate `name` (and the preference for it);
    /// a running relay stops serving it at its next certificate check.
    pub fn remove(&self, name: &str) -> Result<(), CertDirError> {
        if name == DEFAULT_CERT_NAME {
            return Err(CertDirError::DefaultCert);
        }
        check_name(name)?;
        let imported = self.imported_dir();
        let target = imported.join(name);
        if !target.is_dir() {
            return Err(CertDirError::Unknown(name.to_owned()));
        }
        if self.preferred()?.as_deref() == Some(name) {
            self.set_preferred(None)?;
        }
        let old = imported.join(format!(".old-{}", unique()));
        fs::rename(&target, &old).map_err(io_err(&target))?;
        sync_dir(&imported)?;
        fs::remove_dir_all(&old).map_err(io_err(&old))
    }

    /// Replaces the Default Cert with a new one (RSA of `bits`, SHA-256,
    /// self-signed for `hostname`, and its ECDSA P-256 companion). Each file
    /// is replaced by rename, key before certificate: a relay that reads the
    /// directory meanwhile finds a key that does not match its certificate,
    /// keeps the certificates it serves, and loads the new ones at its next
    /// check. Returns the new certificates, RSA first.
    pub fn regenerate_default(
        &self,
        hostname: &str,
        bits: RsaBits,
        now: UnixTime,
    ) -> Result<Vec<CertKey>, CertDirError> {
        let mut opts = DefaultCertOptions::new(hostname);
        opts.rsa_bits = bits;
        let pairs = [
            (
                GeneratedKind::Rsa(bits),
                postern_certs::RSA_CERT_FILE,
                postern_certs::RSA_KEY_FILE,
            ),
            (
                GeneratedKind::EcdsaP256,
                postern_certs::ECDSA_CERT_FILE,
                postern_certs::ECDSA_KEY_FILE,
            ),
        ];
        // Everything generated and checked before anything is replaced.
        let mut generated = Vec::new();
        for (kind, cert_file, key_file) in pairs {
            let pem = postern_certs::generate_self_signed(&opts, kind, now)?;
            let cert = CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?;
            generated.push((pem, cert, cert_file, key_file));
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let mut certs = Vec::new();
        for (pem, cert, cert_file, key_file) in generated {
            for (file, bytes, mode) in [
                (key_file, pem.key_pem.as_bytes(), 0o600),
                (cert_file, pem.cert_pem.as_bytes(), 0o644),
            ] {
                let path = self.root.join(file);
                let tmp = self.root.join(format!(".{file}.tmp-{}", unique()));
                durable::replace_file(&tmp, &path, bytes, mode).map_err(io_err(&path))?;
            }
            certs.push(cert);
        }
        Ok(certs)
    }

    /// The certificate served first for its names (`cert use`), if set.
    pub fn preferred(&self) -> Result<Option<String>, CertDirError> {
        let path = self.root.join(PREFERRED_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let name = text.trim_end_matches('\n');
        if name != DEFAULT_CERT_NAME {
            check_name(name)?;
        }
        Ok(Some(name.to_owned()))
    }

    /// Records `name` (an imported certificate or the Default Cert) as the
    /// certificate served first for its names; `None` removes the
    /// preference.
    pub fn set_preferred(&self, name: Option<&str>) -> Result<(), CertDirError> {
        let path = self.root.join(PREFERRED_FILE);
        let Some(name) = name else {
            return match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.root),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&path)(e)),
            };
        };
        if name == DEFAULT_CERT_NAME {
            if postern_certs::load_existing(&self.root)?.is_none() {
                return Err(CertDirError::Unknown(name.to_owned()));
            }
        } else {
            self.get(name)?;
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let tmp = self
            .root
            .join(format!(".{PREFERRED_FILE}.tmp-{}", unique()));
        durable::replace_file(&tmp, &path, format!("{name}\n").as_bytes(), 0o644)
            .map_err(io_err(&path))
    }

    /// The certificate store: the Default Cert (the fallback for clients
    /// without SNI or with an unknown name) and every imported certificate.
    ///
    /// Serve it with [`CertificateStore::served`]: an imported certificate
    /// for one of the Default Cert's names (the host name) is served in its
    /// place, fallback included; the Default Cert stays in the table. The
    /// preferred certificate ([`CertDir::set_preferred`]) comes before all
    /// others for its names.
    pub fn store(
        &self,
        hostname: &str,
        bits: RsaBits,
        now: UnixTime,
    ) -> Result<CertificateStore, CertDirError> {
        let default = self.default_cert(hostname, bits, now)?;
        let mut store = CertificateStore::new();
        store.add_default(&default)?;
        store.set_fallback(DEFAULT_CERT_NAME);
        for (name, cert) in self.imported()? {
            store.add(name, cert)?;
        }
        store.set_preferred(self.preferred()?);
        Ok(store)
    }

    /// The certificate store as it stands, without writing anything (for
    /// `cert list`): the Default Cert when it exists, and every imported
    /// certificate. The flag says whether the Default Cert exists.
    pub fn existing_store(&self) -> Result<(CertificateStore, bool), CertDirError> {
        let mut store = CertificateStore::new();
        let default = postern_certs::load_existing(&self.root)?;
        if let Some(default) = &default {
            store.add_default(default)?;
            store.set_fallback(DEFAULT_CERT_NAME);
        }
        for (name, cert) in self.imported()? {
            store.add(name, cert)?;
        }
        store.set_preferred(self.preferred()?);
        Ok((store, default.is_some()))
    }

    /// The imported certificate named `name`.
    pub fn get(&self, name: &str) -> Result<CertKey, CertDirError> {
        check_name(name)?;
        if !self.imported_dir().join(name).is_dir() {
            return Err(CertDirError::Unknown(name.to_owned()));
        }
        self.load_imported(name)
    }
}

/// A certificate that expires within [`EXPIRY_WARNING_DAYS`] days, or has
/// expired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiryNotice {
    /// The table name.
    pub name: String,
    /// The leaf's SHA-256 fingerprint.
    pub fingerprint: Fingerprint,
    /// The end of its validity.
    pub not_after: OffsetDateTime,
    /// Whether it has expired (else it expires within the warning period).
    pub expired: bool,
}

/// The certificates of `store` that expire within [`EXPIRY_WARNING_DAYS`]
/// days of `now`, or have expired, in table order.
pub fn expiry_notices(store: &CertificateStore, now: UnixTime) -> Vec<ExpiryNotice> {
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    store
        .iter()
        .filter_map(|(name, cert)| {
            let left = cert.not_after().unix_timestamp().saturating_sub(secs);
            (left <= EXPIRY_WARNING_DAYS * 86_400).then(|| ExpiryNotice {
                name: name.to_owned(),
                fingerprint: cert.fingerprint(),
                not_after: cert.not_after(),
                expired: left < 0,
            })
        })
        .collect()
}

/// Logs [`expiry_notices`]: a warning for each certificate that expires
/// within 30 days, an error for each expired one. The relay calls it at
/// start and once a day. Returns the notices logged.
pub fn log_expiry(store: &CertificateStore, now: UnixTime) -> Vec<ExpiryNotice> {
    let notices = expiry_notices(store, now);
    for n in &notices {
        let not_after = rfc3339(n.not_after);
        if n.expired {
            tracing::error!(name = %n.name, fingerprint = %n.fingerprint, not_after = %not_after,
                "certificate has expired: served only to clients that no valid certificate can answer; import a renewed one (postern-relay cert import)");
        } else {
            tracing::warn!(name = %n.name, fingerprint = %n.fingerprint, not_after = %not_after,
                "certificate expires within {EXPIRY_WARNING_DAYS} days; import a renewed one (postern-relay cert import)");
        }
    }
    notices
}

/// A suffix for temporary names: the process ID and the time.
fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

fn sync_dir(dir: &Path) -> Result<(), CertDirError> {
    durable::sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_certs::{Fingerprint, generate_self_signed};

    fn pem(host: &str) -> postern_certs::GeneratedPem {
        generate_self_signed(
            &DefaultCertOptions::new(host),
            GeneratedKind::EcdsaP256,
            UnixTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn import_validates_persists_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        let empty = certs.stamp();
        let a = pem("a.example");
        let b = pem("b.example");
        // A key that does not match the certificate is refused, nothing written.
        assert!(matches!(
            certs.import(
                "mx",
                a.cert_pem.as_bytes(),
                b.key_pem.as_bytes(),
                UnixTime::now(),
                false
            ),
            Err(CertDirError::Import(_))
        ));
        assert!(certs.imported().unwrap().is_empty());
        certs
            .import(
                "mx",
                a.cert_pem.as_bytes(),
                a.key_pem.as_bytes(),
                UnixTime::now(),
                false,
            )
            .unwrap();
        assert_eq!(certs.get("mx").unwrap().names(), ["a.example"]);
        certs
            .import(
                "mx",
                b.cert_pem.as_bytes(),
                b.key_pem.as_bytes(),
                UnixTime::now(),
                false,
            )
            .unwrap();
        let all = certs.imported().unwrap();
        assert_eq!(all.len(), 1, "replaced, no leftovers");
        assert_eq!(all[0].1.names(), ["b.example"]);
        assert_ne!(certs.stamp(), empty);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("imported/mx/key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key not readable by others");
        }
        assert!(matches!(certs.get("nope"), Err(CertDirError::Unknown(_))));
    }

    #[test]
    fn an_import_for_the_host_name_replaces_the_default_cert_in_service() {
        use rustls::SignatureScheme;
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        let now = UnixTime::now();
        let schemes = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let served_leaf = |store: &CertificateStore, sni: Option<&str>| {
            let key = store.served().select(sni, &schemes, now).unwrap();
            Fingerprint::of(&key.cert[0])
        };
        let store = certs.store("relay.test", RsaBits::B2048, now).unwrap();
        let default_ecdsa = store
            .get(DEFAULT_CERT_NAME)
            .find(|c| c.key_type() == postern_certs::KeyType::Ecdsa)
            .unwrap()
            .fingerprint();
        assert_eq!(served_leaf(&store, Some("relay.test")), default_ecdsa);
        assert_eq!(served_leaf(&store, None), default_ecdsa);

        // Another name: served by SNI, the Default Cert stays the fallback.
        let other = pem("other.test");
        certs
            .import(
                "other",
                other.cert_pem.as_bytes(),
                other.key_pem.as_bytes(),
                UnixTime::now(),
                false,
            )
            .unwrap();
        let store = certs.store("relay.test", RsaBits::B2048, now).unwrap();
        assert_ne!(served_leaf(&store, Some("other.test")), default_ecdsa);
        assert_eq!(served_leaf(&store, Some("relay.test")), default_ecdsa);

        // The host name: it takes the Default Cert's place, fallback included.
        let own = pem("relay.test");
        let own_fp = CertKey::from_pem(own.cert_pem.as_bytes(), own.key_pem.as_bytes())
            .unwrap()
            .fingerprint();
        certs
            .import(
                "own",
                own.cert_pem.as_bytes(),
                own.key_pem.as_bytes(),
                UnixTime::now(),
                false,
            )
            .unwrap();
        let store = certs.store("relay.test", RsaBits::B2048, now).unwrap();
        assert_eq!(served_leaf(&store, Some("relay.test")), own_fp);
        assert_eq!(served_leaf(&store, None), own_fp);
        assert_eq!(
            store.list(now).len(),
            4,
            "the Default Cert stays in the table"
        );
    }

    #[test]
    fn the_preferred_certificate_is_served_first_for_its_names() {
        use rustls::SignatureScheme;
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        let now = UnixTime::now();
        let both = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let served = |sni: Option<&str>| {
            let store = certs.store("relay.test", RsaBits::B2048, now).unwrap();
            Fingerprint::of(&store.served().select(sni, &both, now).unwrap().cert[0])
        };
        let fingerprint = |p: &postern_certs::GeneratedPem| {
            CertKey::from_pem(p.cert_pem.as_bytes(), p.key_pem.as_bytes())
                .unwrap()
                .fingerprint()
        };
        let import = |name: &str, p: &postern_certs::GeneratedPem| {
            certs
                .import(
                    name,
                    p.cert_pem.as_bytes(),
                    p.key_pem.as_bytes(),
                    now,
                    false,
                )
                .unwrap();
        };
        // Two ECDSA certificates and an RSA one for the host name.
        let (a, b) = (pem("relay.test"), pem("relay.test"));
        let rsa = generate_self_signed(
            &DefaultCertOptions::new("relay.test"),
            GeneratedKind::Rsa(RsaBits::B2048),
            now,
        )
        .unwrap();
        import("a", &a);
        import("b", &b);
        import("r", &rsa);
        // By default: imported, ECDSA first, then by name.
        assert_eq!(certs.preferred().unwrap(), None);
        assert_eq!(served(Some("relay.test")), fingerprint(&a));
        assert_eq!(served(None), fingerprint(&a));

        certs.set_preferred(Some("b")).unwrap();
        assert_eq!(certs.preferred().unwrap().as_deref(), Some("b"));
        assert_eq!(served(Some("relay.test")), fingerprint(&b));
        assert_eq!(served(None), fingerprint(&b), "without SNI too");
        // Whatever the key types.
        certs.set_preferred(Some("r")).unwrap();
        assert_eq!(served(Some("relay.test")), fingerprint(&rsa));
        assert_eq!(served(None), fingerprint(&rsa));
        // The Default Cert can be put back in service.
        certs.set_preferred(Some(DEFAULT_CERT_NAME)).unwrap();
        let store = certs.store("relay.test", RsaBits::B2048, now).unwrap();
        let default: Vec<Fingerprint> = store
            .get(DEFAULT_CERT_NAME)
            .map(CertKey::fingerprint)
            .collect();
        assert!(default.contains(&served(Some("relay.test"))));
        assert!(default.contains(&served(None)));

        // Removing the preferred certificate removes the preference.
        certs.set_preferred(Some("b")).unwrap();
        certs.remove("b").unwrap();
        assert_eq!(certs.preferred().unwrap(), None);
        assert_eq!(served(None), fingerprint(&a));
        certs.set_preferred(None).unwrap();
        certs.set_preferred(None).unwrap();
        assert!(matches!(
            certs.set_preferred(Some("b")),
            Err(CertDirError::Unknown(_))
        ));
    }

    #[test]
    fn names_never_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path().join("certs"));
        for bad in ["../x", "a/b", ".old-1", ""] {
            assert!(
                matches!(certs.set_preferred(Some(bad)), Err(CertDirError::Name(_))),
                "{bad:?}"
            );
            assert!(
                matches!(certs.remove(bad), Err(CertDirError::Name(_))),
                "{bad:?}"
            );
        }
        // A preference file edited by hand is checked as well.
        fs::create_dir_all(certs.root()).unwrap();
        fs::write(certs.root().join(PREFERRED_FILE), "../../etc\n").unwrap();
        assert!(matches!(certs.preferred(), Err(CertDirError::Name(_))));
        assert!(matches!(
            certs.remove(DEFAULT_CERT_NAME),
            Err(CertDirError::DefaultCert)
        ));
        assert!(
            CertDirError::DefaultCert
                .to_string()
                .contains("regenerate-default")
        );
    }

    #[test]
    fn regenerate_default_replaces_both_pairs_and_the_stamp_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        let now = UnixTime::now();
        let before: Vec<Fingerprint> = certs
            .default_cert("relay.test", RsaBits::B2048, now)
            .unwrap()
            .certs()
            .map(CertKey::fingerprint)
            .collect();
        let stamp = certs.stamp();
        let new = certs
            .regenerate_default("relay.test", RsaBits::B2048, now)
            .unwrap();
        assert_ne!(certs.stamp(), stamp);
        let after = certs
            .default_cert("relay.test", RsaBits::B2048, now)
            .unwrap();
        assert!(!after.created, "loaded, not generated");
        let after: Vec<Fingerprint> = after.certs().map(CertKey::fingerprint).collect();
        assert_eq!(
            after,
            new.iter().map(CertKey::fingerprint).collect::<Vec<_>>()
        );
        assert_eq!(after.len(), 2, "RSA and its ECDSA companion");
        assert!(after.iter().all(|f| !before.contains(f)), "both replaced");
        assert_eq!(new[0].key_type(), postern_certs::KeyType::Rsa);
        assert_eq!(new[0].key_bits(), 2048);
        assert_eq!(new[0].names(), ["relay.test"]);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "no temporary file left: {names:?}"
        );
    }

    /// A P-256 certificate for `host`, valid from `from` to `to` seconds
    /// around `now`.
    fn pem_valid(host: &str, now: UnixTime, from: i64, to: i64) -> postern_certs::GeneratedPem {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let at = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64).unwrap();
        params.not_before = at + time::Duration::seconds(from);
        params.not_after = at + time::Duration::seconds(to);
        postern_certs::GeneratedPem::new(
            params.self_signed(&key).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    #[test]
    fn import_refuses_expired_and_not_yet_valid_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        let now = UnixTime::now();
        let day = 86_400;
        let expired = pem_valid("old.example", now, -400 * day, -day);
        let future = pem_valid("new.example", now, day, 90 * day);
        let import = |name: &str, p: &postern_certs::GeneratedPem, force: bool| {
            certs.import(
                name,
                p.cert_pem.as_bytes(),
                p.key_pem.as_bytes(),
                now,
                force,
            )
        };
        let err = import("old", &expired, false).unwrap_err();
        assert!(matches!(err, CertDirError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        let err = import("new", &future, false).unwrap_err();
        assert!(matches!(err, CertDirError::NotYetValid { .. }), "{err}");
        assert!(certs.imported().unwrap().is_empty(), "nothing written");
        import("old", &expired, true).unwrap();
        import("new", &future, true).unwrap();
        assert_eq!(certs.imported().unwrap().len(), 2);
    }

    #[test]
    fn expiry_notices_warn_within_30_days_and_report_expired() {
        let now = UnixTime::now();
        let day = 86_400;
        let mut store = CertificateStore::new();
        for (name, to) in [
            ("fine", 31 * day),
            ("soon", 30 * day),
            ("tomorrow", day),
            ("gone", -1),
        ] {
            let p = pem_valid(&format!("{name}.example"), now, -day, to);
            store
                .add(
                    name,
                    CertKey::from_pem(p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap(),
                )
                .unwrap();
        }
        let notices = log_expiry(&store, now);
        let seen: Vec<(&str, bool)> = notices
            .iter()
            .map(|n| (n.name.as_str(), n.expired))
            .collect();
        assert_eq!(seen, [("soon", false), ("tomorrow", false), ("gone", true)]);
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "Default Cert",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["mx", "mx.example.org 2026", "corp_ca-1"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
