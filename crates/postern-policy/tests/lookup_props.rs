//! Properties of the per-destination lookup: the most specific entry wins; case
//! and a trailing dot never matter; no override means the default.

use postern_policy::{
    ClientTlsMode, DestinationPolicy, DomainName, NextHop, OutboundPolicy, PolicyKey, PolicySource,
};
use proptest::prelude::*;

/// Domains over a tiny alphabet, so that tables and queries share names.
fn domain() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("mx"), Just("com")],
        1..5,
    )
    .prop_map(|labels| labels.into_iter().map(str::to_owned).collect())
}

/// Table keys: a domain and whether it is a `.parent` entry.
fn table() -> impl Strategy<Value = Vec<(bool, Vec<String>)>> {
    prop::collection::vec((any::<bool>(), domain()), 0..12)
}

fn key_text(dot: bool, labels: &[String]) -> String {
    format!("{}{}", if dot { "." } else { "" }, labels.join("."))
}

const MODES: [ClientTlsMode; 4] = [
    ClientTlsMode::Encrypt,
    ClientTlsMode::Verify,
    ClientTlsMode::Secure,
    ClientTlsMode::DaneOnly,
];

/// Builds a policy whose entries are told apart by their index (mode cycles, and
/// the key is returned by the lookup source anyway).
fn build(entries: &[(bool, Vec<String>)]) -> (OutboundPolicy, Vec<String>) {
    let mut policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Opportunistic));
    let mut keys = Vec::new();
    for (i, (dot, labels)) in entries.iter().enumerate() {
        let text = key_text(*dot, labels);
        let key = PolicyKey::parse(&text).unwrap();
        if policy
            .overrides
            .insert(key, DestinationPolicy::new(MODES[i % MODES.len()]))
            .is_ok()
        {
            keys.push(text);
        }
    }
    (policy, keys)
}

/// The reference answer: exact key, else the longest `.parent` that is a proper
/// suffix (the nearest parent).
fn reference(keys: &[String], query: &[String]) -> Option<String> {
    let name = query.join(".");
    if keys.contains(&name) {
        return Some(name);
    }
    (1..query.len())
        .map(|skip| format!(".{}", query[skip..].join(".")))
        .find(|candidate| keys.contains(candidate))
}

fn source_key(source: &PolicySource) -> Option<String> {
    match source {
        PolicySource::Default => None,
        PolicySource::Override(key) => Some(key.to_string()),
        other => panic!("a source this test does not know: {other:?}"),
    }
}

fn mangle(text: &str, upper: &[bool], dot: bool) -> String {
    let mut out: String = text
        .chars()
        .zip(upper.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect();
    if dot {
        out.push('.');
    }
    out
}

proptest! {
    #[test]
    fn most_specific_entry_wins(entries in table(), query in domain()) {
        let (policy, keys) = build(&entries);
        let hop = NextHop::parse(&query.join(".")).unwrap();
        let (settings, source) = policy.lookup(&hop);
        prop_assert_eq!(source_key(&source), reference(&keys, &query));
        if source == PolicySource::Default {
            prop_assert_eq!(settings, &policy.default);
        }
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter(
        entries in table(),
        query in domain(),
        upper in prop::collection::vec(any::<bool>(), 1..8),
        dot in any::<bool>(),
    ) {
        let (policy, _) = build(&entries);
        let plain = NextHop::parse(&query.join(".")).unwrap();
        let mangled = NextHop::parse(&mangle(&query.join("."), &upper, dot)).unwrap();
        prop_assert_eq!(&plain, &mangled);
        prop_assert_eq!(policy.lookup(&plain), policy.lookup(&mangled));

        // Keys written in another case, with a trailing dot, behave the same.
        let mut shouted = OutboundPolicy::new(policy.default.clone());
        for (key, value) in policy.overrides.iter() {
            let text = mangle(&key.to_string(), &upper, dot);
            shouted.overrides.insert(PolicyKey::parse(&text).unwrap(), value.clone()).unwrap();
        }
        prop_assert_eq!(policy.lookup(&plain), shouted.lookup(&plain));
    }

    #[test]
    fn no_override_means_the_default(query in domain(), port in 1u16..) {
        let policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Verify));
        let hop = NextHop::parse(&query.join(".")).unwrap();
        let (settings, source) = policy.lookup(&hop);
        prop_assert_eq!(source, PolicySource::Default);
        prop_assert_eq!(settings.tls, ClientTlsMode::Verify);
        let host_port = NextHop::parse(&format!("[{}]:{port}", query.join("."))).unwrap();
        prop_assert_eq!(policy.lookup(&host_port).1, PolicySource::Default);
    }

    #[test]
    fn parents_are_suffixes_nearest_first(query in domain()) {
        let name = DomainName::parse(&query.join(".")).unwrap();
        let parents: Vec<&str> = name.parents().collect();
        prop_assert_eq!(parents.len(), query.len() - 1);
        for (i, parent) in parents.iter().enumerate() {
            prop_assert_eq!(*parent, query[i + 1..].join("."));
        }
    }
}
