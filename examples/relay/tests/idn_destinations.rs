//! An internationalised destination is one destination to the TLS policy
//! (`policy explain`), the static routes and the accepted domains, whether
//! the tables or the address write it with U-labels or A-labels: all three
//! look it up through the same normalisation and the same table rule.

use postern_policy::{NextHop, PolicySource};
use postern_relay::config::Config;
use postern_relay::inbound::access::AccessPolicy;

/// A configuration whose three tables name `domain` and its subdomains.
fn config(domain: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
        accepted_domains = ["{domain}", ".{domain}"]
        [routes]
        "{domain}" = "[192.0.2.1]:2525"
        ".{domain}" = "[192.0.2.2]:2525"
        [tls.outbound.domains."{domain}"]
        tls = "verify"
        [tls.outbound.domains.".{domain}"]
        tls = "encrypt"
        "#
    ))
    .unwrap()
}

/// The policy's rule, the route's key and the accepted-domain answer for a
/// destination.
fn decisions(config: &Config, destination: &str) -> (Option<String>, Option<String>, bool) {
    let policy = config.policy().unwrap();
    let hop = NextHop::parse(destination).unwrap();
    let policy_rule = match policy.outbound.lookup(&hop).1 {
        PolicySource::Override(key) => Some(key.to_string()),
        _ => None,
    };
    let routes = config.static_routes().unwrap();
    let route_key = routes.lookup(destination).map(|(key, _)| key.to_string());
    let accepted = AccessPolicy::from_config(config).is_accepted_domain(destination);
    (policy_rule, route_key, accepted)
}

#[test]
fn u_label_tables_and_a_label_addresses_agree() {
    let config = config("bücher.example");
    for (destination, rule) in [
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example.", "xn--bcher-kva.example"),
        ("mx.xn--bcher-kva.example", ".xn--bcher-kva.example"),
        ("bücher.example", "xn--bcher-kva.example"),
    ] {
        assert_eq!(
            decisions(&config, destination),
            (Some(rule.to_owned()), Some(rule.to_owned()), true),
            "{destination}"
        );
    }
}

#[test]
fn a_label_tables_and_u_label_addresses_agree() {
    let config = config("xn--bcher-kva.example");
    for (destination, rule) in [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("mx.bücher.example", ".xn--bcher-kva.example"),
    ] {
        assert_eq!(
            decisions(&config, destination),
            (Some(rule.to_owned()), Some(rule.to_owned()), true),
            "{destination}"
        );
    }
}

#[test]
fn other_domains_match_none_of_the_tables() {
    let config = config("bücher.example");
    for destination in ["xn--bcher-kva.example.org", "bucher.example", "example"] {
        assert_eq!(
            decisions(&config, destination),
            (None, None, false),
            "{destination}"
        );
    }
}
