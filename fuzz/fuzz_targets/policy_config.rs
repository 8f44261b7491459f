//! Policy configuration (TOML) parser and validation: never panics; a valid
//! configuration's lookups never panic, and a key that validated resolves to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::{NextHop, PolicyConfig, PolicyKey, PolicySource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = PolicyConfig::from_toml_str(text) else {
        return;
    };
    for (key, settings) in policy.outbound.overrides.iter() {
        let hop = match &key {
            PolicyKey::Exact(name) => NextHop::Domain(name.clone()),
            PolicyKey::HostPort { host, port } => NextHop::HostPort {
                host: host.clone(),
                port: *port,
            },
            PolicyKey::Subdomains(name) => match NextHop::parse(&format!("x.{name}")) {
                Ok(hop) => hop,
                Err(_) => continue,
            },
        };
        let (found, source) = policy.outbound.lookup(&hop);
        if !matches!(key, PolicyKey::Subdomains(_)) {
            assert_eq!(source, PolicySource::Override(key.clone()));
            assert_eq!(found, settings);
        }
        let _ = policy
            .outbound
            .connection(&hop, None)
            .before_connect()
            .to_string();
    }
});
