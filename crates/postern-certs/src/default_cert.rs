//! The seed's "Default Cert": a self-signed RSA-4096 / SHA-256 certificate for
//! the host name (plus an ECDSA P-256 companion), generated once and persisted.
//!
//! Generating keys needs a built-in crypto provider (feature `aws-lc-rs` or
//! `ring`), and RSA keys need `aws-lc-rs` (rcgen generates RSA keys with
//! aws-lc-rs only); loading existing files ([`load_existing`]) needs neither.

use std::fs;
use std::io;
use std::path::Path;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use std::time::Duration;

#[cfg(feature = "aws-lc-rs")]
use rcgen::RsaKeySize;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use rustls::pki_types::UnixTime;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use time::OffsetDateTime;

use crate::certkey::CertKey;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use crate::durable;
use crate::error::DefaultCertError;

/// RSA modulus size of the generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RsaBits {
    /// 2048 bits.
    B2048,
    /// 3072 bits.
    B3072,
    /// 4096 bits (the seed's choice). The default.
    #[default]
    B4096,
}

/// Settings for the default certificate.
///
/// Default: no host name (set one: [`DefaultCertOptions::new`]), common name
/// "Default Cert", RSA 4096 bits, 825 days of validity in total, starting one
/// hour before generation, ECDSA P-256 companion on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DefaultCertOptions {
    /// DNS names (or IP addresses) put in the subjectAltName; the first is the host name.
    pub host_names: Vec<String>,
    /// Subject common name.
    pub common_name: String,
    /// Days of validity in total, the one-hour backdate included: the
    /// certificate is valid from one hour before generation to
    /// `validity_days` days later, minus one second (RFC 5280 §4.1.2.5 counts
    /// both ends; the CA/Browser Forum's 825-day limit, which testssl.sh
    /// checks, applies to that whole period).
    pub validity_days: u32,
    /// RSA key size.
    pub rsa_bits: RsaBits,
    /// Also generate an ECDSA P-256 certificate for the same names.
    pub ecdsa_companion: bool,
}

impl Default for DefaultCertOptions {
    fn default() -> Self {
        Self {
            host_names: Vec::new(),
            common_name: crate::store::DEFAULT_CERT_NAME.to_owned(),
            validity_days: 825,
            rsa_bits: RsaBits::B4096,
            ecdsa_companion: true,
        }
    }
}

impl DefaultCertOptions {
    /// Defaults for `host_name`.
    pub fn new(host_name: impl Into<String>) -> Self {
        Self {
            host_names: vec![host_name.into()],
            ..Self::default()
        }
    }
}

/// A generated certificate and key, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GeneratedPem {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl GeneratedPem {
    /// A certificate and its PKCS#8 private key, PEM.
    pub fn new(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }
}

impl std::fmt::Debug for GeneratedPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Which key a generated certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GeneratedKind {
    /// RSA with a SHA-256 signature.
    Rsa(RsaBits),
    /// ECDSA P-256 with a SHA-256 signature.
    EcdsaP256,
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
fn to_offset(t: UnixTime) -> OffsetDateTime {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// How long before `now` a generated certificate's validity starts, so that
/// a peer whose clock is a little behind still accepts it.
const BACKDATE: Duration = Duration::from_secs(3600);

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// Generates a self-signed certificate per `opts` at time `now`, valid from
/// `now − 1 h` for `validity_days` days in total (to `now − 1 h +
/// validity_days` days − 1 s: both ends count, RFC 5280 §4.1.2.5).
///
/// Needs feature `aws-lc-rs` or `ring`; [`GeneratedKind::Rsa`] needs
/// `aws-lc-rs` and fails with [`rcgen::Error::KeyGenerationUnavailable`]
/// under `ring` alone.
pub fn generate_self_signed(
    opts: &DefaultCertOptions,
    kind: GeneratedKind,
    now: UnixTime,
) -> Result<GeneratedPem, DefaultCertError> {
    if opts.host_names.is_empty() {
        return Err(DefaultCertError::NoHostName);
    }
    let key = match kind {
        GeneratedKind::Rsa(bits) => rsa_key(bits)?,
        GeneratedKind::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
    };
    Ok(GeneratedPem {
        cert_pem: issue(opts, &key, kind, now)?,
        key_pem: key.serialize_pem(),
    })
}

/// A new RSA key of `bits` with a SHA-256 signature algorithm.
#[cfg(feature = "aws-lc-rs")]
fn rsa_key(bits: RsaBits) -> Result<KeyPair, rcgen::Error> {
    let size = match bits {
        RsaBits::B2048 => RsaKeySize::_2048,
        RsaBits::B3072 => RsaKeySize::_3072,
        RsaBits::B4096 => RsaKeySize::_4096,
    };
    KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, size)
}

/// rcgen generates RSA keys with aws-lc-rs only: with ring alone, RSA key
/// generation is unavailable (loading an existing RSA key still works).
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn rsa_key(_bits: RsaBits) -> Result<KeyPair, rcgen::Error> {
    Err(rcgen::Error::KeyGenerationUnavailable)
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// The self-signed certificate for `key` per `opts` at time `now`, PEM.
fn issue(
    opts: &DefaultCertOptions,
    key: &KeyPair,
    kind: GeneratedKind,
    now: UnixTime,
) -> Result<String, DefaultCertError> {
    if opts.host_names.is_empty() {
        return Err(DefaultCertError::NoHostName);
    }
    let mut params = CertificateParams::new(opts.host_names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, opts.common_name.as_str());
    params.distinguished_name = dn;
    params.not_before = to_offset(now) - BACKDATE;
    params.not_after = params.not_before
        + Duration::from_secs(u64::from(opts.validity_days) * 86_400)
            .saturating_sub(Duration::from_secs(1));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if matches!(kind, GeneratedKind::Rsa(_)) {
        // RSA key exchange does not exist in TLS 1.2/1.3 as rustls speaks them,
        // but peers' X.509 checks commonly expect keyEncipherment on RSA certs.
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params.self_signed(key)?.pem())
}

/// The default certificates, as loaded or created by [`load_or_create`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DefaultCertificate {
    /// The RSA certificate.
    pub rsa: CertKey,
    /// The ECDSA P-256 companion, when enabled.
    pub ecdsa: Option<CertKey>,
    /// Whether anything was generated by this call (false: all reused).
    pub created: bool,
}

impl DefaultCertificate {
    /// The certificates, RSA first.
    pub fn certs(&self) -> impl Iterator<Item = &CertKey> {
        std::iter::once(&self.rsa).chain(self.ecdsa.as_ref())
    }
}

/// File names used in the directory given to [`load_or_create`].
pub const RSA_CERT_FILE: &str = "default-rsa.crt.pem";
/// RSA private key file (mode 0600).
pub const RSA_KEY_FILE: &str = "default-rsa.key.pem";
/// ECDSA certificate file.
pub const ECDSA_CERT_FILE: &str = "default-ecdsa.crt.pem";
/// ECDSA private key file (mode 0600).
pub const ECDSA_KEY_FILE: &str = "default-ecdsa.key.pem";

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DefaultCertError + '_ {
    move |source| DefaultCertError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// Writes `data` to `path` atomically and durably ([`durable::replace_file`]),
/// through a temporary file in the same directory created with `mode`.
fn write_atomic(dir: &Path, path: &Path, data: &[u8], mode: u32) -> Result<(), DefaultCertError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    durable::replace_file(&tmp, path, data, mode).map_err(io_err(path))
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// How one pair of files was found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairOrigin {
    /// Both files existed.
    Loaded,
    /// Neither existed: key and certificate were generated.
    Generated,
    /// The key existed alone (a crash between the two writes of a first
    /// start): its certificate was issued again.
    Reissued,
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// Loads one pair; generates it if neither file exists; issues the
/// certificate again for a key found alone.
///
/// The key is written before the certificate, each atomically, so a crash
/// leaves either nothing, a lone complete key, or the complete pair. A lone
/// key is the generated key whose certificate was never written: the
/// certificate is issued for it again (the same names and validity as a new
/// one). A lone certificate cannot be completed (its key is lost) and is an
/// error, never silently replaced.
fn load_or_create_pair(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    kind: GeneratedKind,
    opts: &DefaultCertOptions,
    now: UnixTime,
) -> Result<(CertKey, PairOrigin), DefaultCertError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let (cert_pem, key_pem, origin) = match (cert_path.exists(), key_path.exists()) {
        (true, true) => (
            fs::read(&cert_path).map_err(io_err(&cert_path))?,
            fs::read(&key_path).map_err(io_err(&key_path))?,
            PairOrigin::Loaded,
        ),
        (false, false) => {
            let pem = generate_self_signed(opts, kind, now)?;
            write_atomic(dir, &key_path, pem.key_pem.as_bytes(), 0o600)?;
            write_atomic(dir, &cert_path, pem.cert_pem.as_bytes(), 0o644)?;
            tracing::info!(cert = %cert_path.display(), "generated default certificate");
            (
                pem.cert_pem.into_bytes(),
                pem.key_pem.into_bytes(),
                PairOrigin::Generated,
            )
        }
        (false, true) => {
            let key_pem = fs::read(&key_path).map_err(io_err(&key_path))?;
            let alg = match kind {
                GeneratedKind::Rsa(_) => &PKCS_RSA_SHA256,
                GeneratedKind::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            };
            let key = std::str::from_utf8(&key_pem)
                .ok()
                .and_then(|pem| KeyPair::from_pem_and_sign_algo(pem, alg).ok())
                .ok_or_else(|| DefaultCertError::LoneKeyUnusable {
                    key: key_path.clone(),
                })?;
            let cert_pem = issue(opts, &key, kind, now)?;
            write_atomic(dir, &cert_path, cert_pem.as_bytes(), 0o644)?;
            tracing::warn!(key = %key_path.display(), cert = %cert_path.display(),
                "default certificate key found without its certificate (an interrupted first start); certificate issued again");
            (cert_pem.into_bytes(), key_pem, PairOrigin::Reissued)
        }
        (true, false) => {
            return Err(DefaultCertError::Incomplete {
                present: cert_path,
                missing: key_path,
            });
        }
    };
    let cert =
        CertKey::from_pem(&cert_pem, &key_pem).map_err(|source| DefaultCertError::Unusable {
            cert: cert_path.clone(),
            source,
        })?;
    Ok((cert, origin))
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
/// Loads the default certificate(s) from `dir`, generating what is missing.
///
/// - Neither file of a pair exists: the pair is generated and written
///   atomically (key file mode 0600), key first.
/// - Both exist: they are loaded and checked to match; they are never
///   regenerated, whatever `opts` says (names or sizes differing from `opts`
///   are kept: the operator replaces the files to change them).
/// - Only the key exists (a first start killed between the two writes): its
///   certificate is issued again from it, per `opts`.
/// - Only the certificate exists, or the pair does not match: an error,
///   never a silent regeneration.
///
/// With `ecdsa_companion` on and an existing RSA pair but no ECDSA pair, the
/// companion is generated (this creates, it does not replace).
///
/// Needs feature `aws-lc-rs` or `ring`; generating the RSA pair needs
/// `aws-lc-rs` (under `ring` alone only an existing RSA pair can be used).
pub fn load_or_create(
    dir: &Path,
    opts: &DefaultCertOptions,
    now: UnixTime,
) -> Result<DefaultCertificate, DefaultCertError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let (rsa, rsa_origin) = load_or_create_pair(
        dir,
        RSA_CERT_FILE,
        RSA_KEY_FILE,
        GeneratedKind::Rsa(opts.rsa_bits),
        opts,
        now,
    )?;
    let (ecdsa, ecdsa_origin) = if opts.ecdsa_companion {
        let (c, origin) = load_or_create_pair(
            dir,
            ECDSA_CERT_FILE,
            ECDSA_KEY_FILE,
            GeneratedKind::EcdsaP256,
            opts,
            now,
        )?;
        (Some(c), origin)
    } else {
        (None, PairOrigin::Loaded)
    };
    Ok(DefaultCertificate {
        rsa,
        ecdsa,
        created: rsa_origin != PairOrigin::Loaded || ecdsa_origin != PairOrigin::Loaded,
    })
}

/// Loads the default certificate(s) from `dir` without writing anything
/// (for read-only commands such as a certificate listing).
///
/// `Ok(None)` when the RSA pair does not exist yet, or exists only in part
/// (a lone key, which [`load_or_create`] completes): nothing was created, and
/// the first [`load_or_create`] will. The ECDSA companion is loaded when
/// both of its files exist. A pair that exists but does not load is an error,
/// as in [`load_or_create`].
pub fn load_existing(dir: &Path) -> Result<Option<DefaultCertificate>, DefaultCertError> {
    let load = |cert_file: &str, key_file: &str| -> Result<Option<CertKey>, DefaultCertError> {
        let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
        if !(cert_path.exists() && key_path.exists()) {
            return Ok(None);
        }
        let cert_pem = fs::read(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = fs::read(&key_path).map_err(io_err(&key_path))?;
        CertKey::from_pem(&cert_pem, &key_pem)
            .map(Some)
            .map_err(|source| DefaultCertError::Unusable {
                cert: cert_path,
                source,
            })
    };
    let Some(rsa) = load(RSA_CERT_FILE, RSA_KEY_FILE)? else {
        return Ok(None);
    };
    Ok(Some(DefaultCertificate {
        rsa,
        ecdsa: load(ECDSA_CERT_FILE, ECDSA_KEY_FILE)?,
        created: false,
    }))
}
