//! Properties: fingerprint text round-trips; selection never panics on any SNI.

use std::sync::OnceLock;

use postern_certs::{
    CertKey, DefaultCertOptions, Fingerprint, GeneratedKind, ServedCertificates,
    generate_self_signed,
};
use proptest::prelude::*;
use rustls::SignatureScheme;
use rustls::pki_types::UnixTime;

fn set() -> &'static ServedCertificates {
    static S: OnceLock<ServedCertificates> = OnceLock::new();
    S.get_or_init(|| {
        let mut opts = DefaultCertOptions::new("mx.example.org");
        opts.host_names.push("*.example.net".into());
        let pem = generate_self_signed(&opts, GeneratedKind::EcdsaP256, UnixTime::now()).unwrap();
        let cert = CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes()).unwrap();
        ServedCertificates::from_certs([&cert])
    })
}

proptest! {
    #[test]
    fn fingerprint_display_parses_back(bytes in any::<[u8; 32]>()) {
        let f = Fingerprint(bytes);
        prop_assert_eq!(f.to_string().parse::<Fingerprint>(), Ok(f));
        prop_assert_eq!(f.to_string().replace(':', "").to_lowercase().parse::<Fingerprint>(), Ok(f));
    }

    #[test]
    fn fingerprint_parse_never_panics(s in ".{0,120}") {
        let _ = s.parse::<Fingerprint>();
    }

    #[test]
    fn any_sni_gets_the_fallback_or_a_match(sni in proptest::option::of("[a-zA-Z0-9.*-]{0,80}")) {
        let ecdsa = [SignatureScheme::ECDSA_NISTP256_SHA256];
        // One certificate: every name (matching or not) is served it.
        prop_assert!(set().select(sni.as_deref(), &ecdsa, UnixTime::now()).is_some());
        // No usable scheme: nothing, whatever the name.
        prop_assert!(set().select(sni.as_deref(), &[SignatureScheme::ED448], UnixTime::now()).is_none());
    }
}
