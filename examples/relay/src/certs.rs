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
//! ```
//!
//! An import is validated first ([`CertKey::from_pem`]: the key matches the
//! leaf, RSA at least 2048 bits), written into a temporary directory with the
//! key file mode 0600, fsynced, then renamed into place, so a running relay
//! never sees half a pair. The rename changes the `imported` directory's
//! modification time, which the relay polls ([`CertDir::stamp`]) to reload
//! without restart.
//!
//! ```
//! use postern_relay::certs::CertDir;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let certs = CertDir::new(dir.path());
//! // A P-256 certificate generated here stands for one from a CA.
//! let pem = postern_certs::generate_self_signed(
//!     &postern_certs::DefaultCertOptions::new("mx.example.org"),
//!     postern_certs::GeneratedKind::EcdsaP256,
//!     rustls::pki_types::UnixTime::now(),
//! )?;
//! certs.import("mx", pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?;
//! let imported = certs.imported()?;
//! assert_eq!(imported[0].0, "mx");
//! assert!(postern_relay::certs::check_name("../etc").is_err());
//! # Ok(()) }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use postern_certs::{
    CertKey, CertificateStore, DEFAULT_CERT_NAME, DefaultCertError, DefaultCertOptions,
    DefaultCertificate, ImportError, RsaBits, StoreError,
};
use rustls::pki_types::UnixTime;

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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertDirError + '_ {
    move |source| CertDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks that `name` can name an imported certificate: 1–64 characters of
/// letters, digits, `.`, `_`, `-` and space, not starting with `.` or a
/// space, and not the reserved "Default Cert".
pub fn check_name(name: &str) -> Result<(), CertDirError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', ' '])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '))
        && name != DEFAULT_CERT_NAME;
    if ok {
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
    /// ECDSA P-256 companion) for `hostname` if the directory has none.
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
    pub fn import(
        &self,
        name: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<CertKey, CertDirError> {
        check_name(name)?;
        let cert = CertKey::from_pem(chain_pem, key_pem)?;
        let imported = self.imported_dir();
        fs::create_dir_all(&imported).map_err(io_err(&imported))?;
        let unique = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let tmp = imported.join(format!(".tmp-{unique}"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        write_synced(&tmp.join("chain.pem"), chain_pem, false)?;
        write_synced(&tmp.join("key.pem"), key_pem, true)?;
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

    /// The modification stamp of the imported certificates: changes when a
    /// certificate is imported or replaced.
    pub fn stamp(&self) -> Option<SystemTime> {
        fs::metadata(self.imported_dir())
            .and_then(|m| m.modified())
            .ok()
    }

    /// The certificate store: the Default Cert (the fallback for clients
    /// without SNI or with an unknown name) and every imported certificate.
    ///
    /// Serve it with [`CertificateStore::served`]: an imported certificate
    /// for one of the Default Cert's names (the host name) is served in its
    /// place, fallback included; the Default Cert stays in the table.
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
        Ok(store)
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

fn write_synced(path: &Path, bytes: &[u8], private: bool) -> Result<(), CertDirError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), CertDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_certs::{Fingerprint, GeneratedKind, generate_self_signed};

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
        assert!(certs.stamp().is_none());
        let a = pem("a.example");
        let b = pem("b.example");
        // A key that does not match the certificate is refused, nothing written.
        assert!(matches!(
            certs.import("mx", a.cert_pem.as_bytes(), b.key_pem.as_bytes()),
            Err(CertDirError::Import(_))
        ));
        assert!(certs.imported().unwrap().is_empty());
        certs
            .import("mx", a.cert_pem.as_bytes(), a.key_pem.as_bytes())
            .unwrap();
        assert_eq!(certs.get("mx").unwrap().names(), ["a.example"]);
        certs
            .import("mx", b.cert_pem.as_bytes(), b.key_pem.as_bytes())
            .unwrap();
        let all = certs.imported().unwrap();
        assert_eq!(all.len(), 1, "replaced, no leftovers");
        assert_eq!(all[0].1.names(), ["b.example"]);
        assert!(certs.stamp().is_some());
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
            let key = store.served().select(sni, &schemes).unwrap();
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
            .import("other", other.cert_pem.as_bytes(), other.key_pem.as_bytes())
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
            .import("own", own.cert_pem.as_bytes(), own.key_pem.as_bytes())
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
