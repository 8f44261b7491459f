//! Outbound: a message leaves. Routing (static routes, MX), the destination's
//! MTA-STS policy, and delivery: postern-attempt's sans-IO attempt under the
//! per-destination TLS policy, driven by postern-tokio, with per-recipient
//! outcomes handed back to the queue, and connections kept for the next
//! message to the same next hop ([`connection_cache`]). [`probe`] drives the same attempt up to
//! TLS and stops, so it can never disagree with delivery.

pub mod connection_cache;
pub mod delivery;
pub mod explain;
pub mod mta_sts;
pub mod next_hop;
pub mod probe;
pub mod routing;
