//! `policy explain DOMAIN --dns`: what delivery would find in DNS for a
//! destination and decide before connecting, host by host — the route and
//! the DNSSEC status of its MX RRset, each host's addresses with their
//! status, the TLSA records with theirs, DANE's verdict and the connection
//! requirement. It runs the same code as delivery ([`Router::route`],
//! [`next_hop::look_up`], the connection policy), so it cannot disagree.

use std::fmt::Write as _;
use std::time::SystemTime;

use postern_dns::HostTlsa;
use postern_policy::dane::{DaneOutcome, TlsaLookup};
use postern_policy::{
    Authentication, MessageTls, NamePattern, NextHop as PolicyHop, OutboundPolicy, TlsRequirement,
};

use crate::config::Config;
use crate::net::dns::{Resolver, SystemResolver};
use crate::outbound::next_hop::{self, DaneUse};
use crate::outbound::routing::{RouteSource, Router};

/// The DNS part of `policy explain`, as text (one line per fact).
pub async fn dns_report(
    config: &Config,
    outbound: &OutboundPolicy,
    router: &Router<SystemResolver>,
    destination: &str,
) -> String {
    let mut out = String::new();
    let now = SystemTime::now();
    let route = match router.route(destination, now).await {
        Ok(route) => route,
        Err(failure) => {
            let _ = writeln!(
                out,
                "  route:              none: {} ({})",
                failure.text, failure.code
            );
            return out;
        }
    };
    let how = match &route.source {
        RouteSource::Static(key) => format!("static route {key:?}"),
        RouteSource::Mx => "MX".to_owned(),
        RouteSource::ImplicitMx => "implicit MX (the domain itself)".to_owned(),
    };
    let status = route
        .mx_dnssec
        .map_or_else(|| "not looked up with DNSSEC".to_owned(), |s| s.to_string());
    let _ = writeln!(out, "  route:              {how}, DNSSEC {status}");
    let Ok(hop) = PolicyHop::parse(&route.domain) else {
        return out;
    };
    let mode = outbound.connection(&hop, None).settings().tls;
    let dnssec_on = router.resolver().dnssec().is_some();
    let wanted = DaneUse::wanted(
        mode,
        MessageTls::Default,
        false,
        config.dns.opportunistic_dane,
    );
    let dane = DaneUse::choose(router.resolver(), &route, wanted);
    for host in &route.hosts {
        let _ = writeln!(out, "  host {host}:");
        let found = match next_hop::look_up(router.resolver(), host, dane, now).await {
            Ok(found) => found,
            Err(failure) => {
                let _ = writeln!(out, "    not usable:       {}", failure.text);
                continue;
            }
        };
        let addresses: Vec<String> = found.addresses.iter().map(ToString::to_string).collect();
        let status = found
            .address_status
            .map_or_else(String::new, |s| format!(" (DNSSEC {s})"));
        let _ = writeln!(
            out,
            "    addresses:        {}{status}",
            addresses.join(", ")
        );
        match &found.tlsa {
            Some(tlsa) => {
                for line in tlsa_lines(tlsa) {
                    let _ = writeln!(out, "    {line}");
                }
            }
            None if dnssec_on => {
                let _ = writeln!(
                    out,
                    "    TLSA:             not looked up (mode {})",
                    mode.as_str()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "    TLSA:             not looked up (dns.dnssec = \"off\")"
                );
            }
        }
        let mut policy = outbound
            .connection(&hop, found.server_name.as_ref())
            .with_secure_mx(route.hosts_found_securely());
        if let Some(outcome) = found.dane.clone() {
            let _ = writeln!(out, "    DANE:             {}", dane_verdict(&outcome));
            policy = policy.with_dane(outcome);
        }
        let _ = writeln!(
            out,
            "    connection:       {}",
            requirement(&policy.requirement())
        );
    }
    out
}

/// The TLSA facts of one host, one line each: where, the status, the records.
pub fn tlsa_lines(tlsa: &HostTlsa) -> Vec<String> {
    let name = &tlsa.base_domain;
    let mut lines = vec![match &tlsa.lookup {
        TlsaLookup::Secure(records) => format!(
            "TLSA:             {} record(s) at base domain {name}, DNSSEC secure",
            records.len()
        ),
        TlsaLookup::SecureNoRecords => {
            format!("TLSA:             none at {name} (proved absent, DNSSEC secure)")
        }
        TlsaLookup::Insecure => {
            format!("TLSA:             not used for {name}: DNSSEC insecure")
        }
        TlsaLookup::Failed(failure) => {
            format!("TLSA:             lookup for {name} failed: {failure:?}")
        }
        // A lookup state added to the policy crate later.
        other => format!("TLSA:             {other:?}"),
    }];
    if let TlsaLookup::Secure(records) = &tlsa.lookup {
        for record in records {
            let usable = if record.is_usable() {
                ""
            } else {
                " (unusable)"
            };
            lines.push(format!("  {record}{usable}"));
        }
    }
    lines
}

/// DANE's verdict for one host, in words.
pub fn dane_verdict(outcome: &DaneOutcome) -> String {
    match outcome {
        DaneOutcome::Authenticate(records) => format!(
            "TLS required, the certificate must match one of {} usable TLSA record(s)",
            records.len()
        ),
        DaneOutcome::EncryptOnly => {
            "TLS required, not authenticated (no usable TLSA record, RFC 7672 §2.2)".to_owned()
        }
        DaneOutcome::Opportunistic => {
            "does not apply (no secure TLSA records): the destination's other policy".to_owned()
        }
        DaneOutcome::HostUnusable(failure) => {
            format!("host unusable now (TLSA or address lookup {failure:?}): deferred")
        }
        other => format!("{other:?}"),
    }
}

/// What the connection needs, in words.
pub fn requirement(requirement: &TlsRequirement) -> String {
    match requirement {
        TlsRequirement::Plaintext => "plaintext (TLS disabled)".to_owned(),
        TlsRequirement::Opportunistic => "STARTTLS when offered, else plaintext".to_owned(),
        TlsRequirement::Encrypt => "TLS required, certificate not checked".to_owned(),
        TlsRequirement::Authenticated(Authentication::Dane(records)) => format!(
            "TLS required, authenticated by DANE ({} TLSA record(s))",
            records.len()
        ),
        TlsRequirement::Authenticated(Authentication::Pkix { names }) => {
            let names: Vec<String> = names
                .iter()
                .map(|n| match n {
                    NamePattern::Exact(name) => name.to_string(),
                    NamePattern::Subdomains(name) => format!(".{name}"),
                })
                .collect();
            format!(
                "TLS required, certificate verified for {}",
                names.join(", ")
            )
        }
        TlsRequirement::Authenticated(Authentication::Pins(pins)) => {
            format!("TLS required, certificate pinned ({} pin(s))", pins.len())
        }
        TlsRequirement::Unusable(failure) => format!(
            "not contacted: {} ({}, {})",
            failure.reason, failure.status, failure.result_type
        ),
        other => format!("{other:?}"),
    }
}
