//! What an attempt ends with: per-recipient results, one outcome, the TLS summary, and the failure that
//! explains it.

use rustls_pki_types::CertificateDer;
use std::fmt;
use std::net::SocketAddr;

use postern_policy::{
    Action, CertificateCheck, Decision, EnhancedStatus, Failure, ResultType, SessionFacts,
    TlsVersion,
};
use postern_smtp::{
    ClientCloseReason, DeliveryStatus, ForwardPath, RecipientResult, Reply, SendError,
};

/// The TLS of the connection that carried (or refused) the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSummary {
    /// The name sent as SNI and checked.
    pub server_name: String,
    /// The negotiated protocol version.
    pub version: TlsVersion,
    /// The negotiated cipher suite (e.g. `TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// How far the server certificate was trusted, and why not further.
    pub certificate: CertificateCheck,
    /// The server's certificate chain as it was sent, its own certificate
    /// first (for logs, `probe`, and which TLSA record matched).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The policy's explanation of the decision after the handshake (rule, mode, action).
    pub explanation: String,
    /// Octets received after the `220` to STARTTLS and discarded before the handshake (never read as a
    /// reply; anything but 0 means a broken or malicious server or path).
    pub discarded_before_handshake: u64,
}

/// Why delivery to a next hop did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryFailure {
    /// The enhanced status code to record (our own 4.7.x for TLS policy failures).
    pub status: EnhancedStatus,
    /// The RFC 8460 result type, for TLS failures.
    pub result_type: Option<ResultType>,
    /// What happened, in a few words (with the policy rule when the policy decided).
    pub explanation: String,
    /// Whether the message must be returned (REQUIRETLS, message refused by size or extension) rather than
    /// retried.
    pub permanent: bool,
    /// The server's reply, when one decided.
    pub reply: Option<Reply>,
}

impl DeliveryFailure {
    /// A failure found on this side (no reply, no TLS result type).
    pub fn local(status: EnhancedStatus, explanation: &str) -> Self {
        Self {
            status,
            result_type: None,
            explanation: explanation.to_owned(),
            permanent: false,
            reply: None,
        }
    }

    /// A policy `Defer` or `Bounce`, explained by its decision.
    pub(crate) fn policy(f: &Failure, decision: &Decision) -> Self {
        Self {
            status: f.status,
            result_type: Some(f.result_type),
            explanation: decision.to_string(),
            permanent: matches!(decision.action, Action::Bounce(_)),
            reply: None,
        }
    }

    /// A server reply that decided: its enhanced code, else `class.0.0` (`4.0.0` for a 3yz reply,
    /// which has no class of its own).
    pub(crate) fn reply(reply: &Reply, what: &str) -> Self {
        let status = reply
            .enhanced()
            .or_else(|| EnhancedStatus::of_reply_code(reply.code()))
            .unwrap_or(EnhancedStatus::OTHER_TRANSIENT);
        Self {
            status,
            result_type: None,
            explanation: what.to_owned(),
            permanent: false,
            reply: Some(reply.clone()),
        }
    }

    /// A session that ended before any transaction: this host failed for now (RFC 5321 section 4.5.4.1: try
    /// the next address, else retry later).
    pub(crate) fn closed(reason: &ClientCloseReason) -> Self {
        match reason {
            ClientCloseReason::GreetingRefused(r) => Self::reply(r, "greeting refused"),
            ClientCloseReason::HelloRefused(r) => Self::reply(r, "EHLO and HELO refused"),
            ClientCloseReason::ServiceClosing(r) => Self::reply(r, "service closing"),
            ClientCloseReason::Timeout => Self::local(
                EnhancedStatus::BAD_CONNECTION,
                "timeout waiting for a reply",
            ),
            ClientCloseReason::ProtocolError(e) => Self::local(
                EnhancedStatus::BAD_CONNECTION,
                &format!("protocol error: {e}"),
            ),
            ClientCloseReason::UnexpectedReply(r) => Self::reply(r, "unexpected reply"),
            _ => Self::local(EnhancedStatus::BAD_CONNECTION, "connection lost"),
        }
    }

    /// The message could not be handed to the session (size, extension, or TLS required).
    pub(crate) fn not_sent(e: &SendError) -> Self {
        let (status, permanent) = match e {
            SendError::MessageTooLarge => (EnhancedStatus::MESSAGE_TOO_BIG, true),
            SendError::ExtensionNotOffered("SMTPUTF8") => {
                (EnhancedStatus::NON_ASCII_NOT_PERMITTED, true)
            }
            SendError::ExtensionNotOffered("REQUIRETLS") => {
                (EnhancedStatus::REQUIRETLS_REQUIRED, true)
            }
            SendError::ExtensionNotOffered(_) => (EnhancedStatus::INVALID_ARGUMENTS, true),
            SendError::TlsRequired => return Self::tls_required(),
            _ => (EnhancedStatus::SYSTEM_TEMPORARY, false),
        };
        Self {
            status,
            result_type: None,
            explanation: format!("message not sent: {e}"),
            permanent,
            reply: None,
        }
    }

    /// The policy requires TLS and TLS is not active: no mail in plaintext.
    pub(crate) fn tls_required() -> Self {
        Self {
            status: EnhancedStatus::TLS_NOT_AVAILABLE,
            result_type: Some(ResultType::StarttlsNotSupported),
            explanation: "TLS required: no mail in plaintext".into(),
            permanent: false,
            reply: None,
        }
    }

    /// How much a failure tells the operator: a TLS policy failure (it has an RFC 8460 result type) over a
    /// server's refusal, and either over an address that could not be reached.
    fn weight(&self) -> u8 {
        match self {
            f if f.result_type.is_some() => 2,
            f if f.reply.is_some() => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(rt) = self.result_type {
            write!(f, " {rt}")?;
        }
        write!(f, ": {}", self.explanation)?;
        if let Some(r) = &self.reply {
            write!(f, " (server said: {r})")?;
        }
        Ok(())
    }
}

/// The one outcome of an attempt, for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every recipient was accepted by the final reply to the content (a probe: the policy would have sent
    /// the message).
    Delivered,
    /// At least one recipient is to be retried: the message stays queued. Under a policy that requires TLS,
    /// a TLS failure is always this, with our own 4.7.x code.
    Deferred {
        /// The enhanced status code to record.
        status: EnhancedStatus,
        /// The RFC 8460 result type, for TLS failures.
        result_type: Option<ResultType>,
    },
    /// No recipient is left to retry and at least one failed permanently: those bounce.
    Bounced {
        /// The enhanced status code of the bounce.
        status: EnhancedStatus,
        /// The RFC 8460 result type, for TLS failures (a REQUIRETLS message's 5.7.30).
        result_type: Option<ResultType>,
    },
}

/// How one attempt (one next hop, one or two connections) ended: what [`crate::Event::Done`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Done {
    /// Per recipient, in envelope order: delivered, deferred (retry) or failed (bounce), with the deciding
    /// reply.
    pub recipients: Vec<RecipientResult>,
    /// The one outcome.
    pub outcome: Outcome,
    /// TLS of the connection, if TLS was established.
    pub tls: Option<TlsSummary>,
    /// The last policy decision taken (its `Display` names the rule that applied).
    pub decision: Option<Decision>,
    /// Why the message was not handed over, when it was not.
    pub failure: Option<DeliveryFailure>,
    /// The facts the policy saw, for [`postern_policy::ConnectionPolicy::evaluate`] under other policies.
    pub facts: SessionFacts,
    /// The message went over a new plaintext connection after a failed handshake (opportunistic TLS).
    pub plaintext_retry: bool,
    /// The transaction ran (MAIL was sent): the recipients' statuses are the next hop's answers, and a
    /// driver does not try another address of the same next hop.
    pub handed_over: bool,
    /// The connection is still open, idle after this transaction, for another message
    /// ([`crate::Attempt::keep_open`], [`crate::Attempt::next_message`]).
    pub connection_open: bool,
    /// Which message of its connection this was: 1 for the first, 2 for the next on a reused connection
    /// (Postfix's `conn_use`).
    pub connection_use: u32,
}

impl Done {
    /// The outcome of these recipient results: any deferred recipient defers the message, else any failed
    /// one bounces; the failure's code, else the deciding reply's, explains it.
    pub(crate) fn outcome_of(
        recipients: &[RecipientResult],
        failure: Option<&DeliveryFailure>,
    ) -> Outcome {
        let explain = |status: DeliveryStatus| {
            let (code, result_type) = match failure {
                Some(f) => (f.status, f.result_type),
                None => {
                    let reply = recipients
                        .iter()
                        .find(|r| r.status == status)
                        .and_then(|r| r.reply.as_ref());
                    let undefined = if status == DeliveryStatus::Failed {
                        EnhancedStatus::OTHER_PERMANENT
                    } else {
                        EnhancedStatus::OTHER_TRANSIENT
                    };
                    let code = reply.map_or(undefined, |r| DeliveryFailure::reply(r, "").status);
                    (code, None)
                }
            };
            (code, result_type)
        };
        if recipients
            .iter()
            .any(|r| r.status == DeliveryStatus::Deferred)
        {
            let (status, result_type) = explain(DeliveryStatus::Deferred);
            Outcome::Deferred {
                status,
                result_type,
            }
        } else if recipients
            .iter()
            .any(|r| r.status == DeliveryStatus::Failed)
        {
            let (status, result_type) = explain(DeliveryStatus::Failed);
            Outcome::Bounced {
                status,
                result_type,
            }
        } else {
            match failure {
                Some(f) if f.permanent => Outcome::Bounced {
                    status: f.status,
                    result_type: f.result_type,
                },
                Some(f) => Outcome::Deferred {
                    status: f.status,
                    result_type: f.result_type,
                },
                None => Outcome::Delivered,
            }
        }
    }

    /// Every recipient with the same status and the failure's reply.
    pub(crate) fn undelivered(
        recipients: &[ForwardPath],
        failure: DeliveryFailure,
        facts: SessionFacts,
    ) -> Self {
        let status = if failure.permanent {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Deferred
        };
        let recipients: Vec<_> = recipients
            .iter()
            .map(|r| RecipientResult::new(r.clone(), status, failure.reply.clone()))
            .collect();
        Self {
            outcome: Self::outcome_of(&recipients, Some(&failure)),
            recipients,
            tls: None,
            decision: None,
            failure: Some(failure),
            facts,
            plaintext_retry: false,
            handed_over: false,
            connection_open: false,
            connection_use: 1,
        }
    }
}

/// The outcome of delivering one message to one next hop, over its addresses in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryResult {
    /// Per recipient, in envelope order: delivered, deferred (retry) or failed (bounce), with the deciding reply.
    pub recipients: Vec<RecipientResult>,
    /// The address that produced this outcome (the last one tried).
    pub server: Option<SocketAddr>,
    /// TLS of that connection, if TLS was established.
    pub tls: Option<TlsSummary>,
    /// The last policy decision taken on that connection (its `Display` names the rule that applied).
    pub decision: Option<Decision>,
    /// Why the message was not handed over, when it was not.
    pub failure: Option<DeliveryFailure>,
    /// The message went over a new plaintext connection after a failed handshake (opportunistic TLS).
    pub plaintext_retry: bool,
    /// The facts the policy saw on that connection (what a probe reports).
    pub facts: SessionFacts,
    /// Which message of its connection this was: above 1 on a reused connection (Postfix's `conn_use`).
    pub connection_use: u32,
}

impl DeliveryResult {
    /// The result of an attempt's [`Done`] at `server`.
    pub fn from_done(done: Done, server: Option<SocketAddr>) -> Self {
        Self {
            facts: done.facts,
            recipients: done.recipients,
            server,
            tls: done.tls,
            decision: done.decision,
            failure: done.failure,
            plaintext_retry: done.plaintext_retry,
            connection_use: done.connection_use,
        }
    }

    /// Every recipient of `recipients` undelivered for `failure` (deferred, or failed when permanent), e.g.
    /// an address that could not be reached.
    pub fn undelivered(
        recipients: &[ForwardPath],
        failure: DeliveryFailure,
        server: Option<SocketAddr>,
    ) -> Self {
        Self::from_done(
            Done::undelivered(recipients, failure, SessionFacts::default()),
            server,
        )
    }

    /// Whether every recipient was delivered.
    pub fn all_delivered(&self) -> bool {
        !self.recipients.is_empty()
            && self
                .recipients
                .iter()
                .all(|r| r.status == DeliveryStatus::Delivered)
    }

    /// Whether no recipient was delivered and at least one is to be retried.
    pub fn is_deferred(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != DeliveryStatus::Delivered)
            && self
                .recipients
                .iter()
                .any(|r| r.status == DeliveryStatus::Deferred)
    }

    /// Keeps, across the addresses of one next hop, the failure that tells the operator most (see
    /// [`DeliveryFailure`]'s weight: TLS policy, then server reply, then unreachable); a later failure of
    /// equal weight replaces an earlier one.
    pub fn keep_most_telling(last: &mut Option<Self>, next: Self) {
        let weight = |r: &Self| r.failure.as_ref().map_or(0, DeliveryFailure::weight);
        if last.as_ref().is_none_or(|l| weight(&next) >= weight(l)) {
            *last = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_smtp::ForwardPath;

    fn rcpts(n: usize) -> Vec<ForwardPath> {
        (0..n)
            .map(|i| ForwardPath::parse(&format!("<r{i}@example.org>")).unwrap())
            .collect()
    }

    #[test]
    fn failures_from_replies_and_closes() {
        let r = Reply::new(
            554,
            Some(EnhancedStatus::DELIVERY_NOT_AUTHORIZED),
            ["go away"],
        )
        .unwrap();
        let f = DeliveryFailure::closed(&ClientCloseReason::GreetingRefused(r.clone()));
        assert_eq!(f.status, EnhancedStatus::DELIVERY_NOT_AUTHORIZED);
        assert_eq!(f.reply, Some(r));
        // A host that refuses to talk is retried later (next address, next attempt), never bounced.
        assert!(!f.permanent);
        let t = DeliveryFailure::closed(&ClientCloseReason::Timeout);
        assert_eq!(
            (t.status, t.result_type),
            (EnhancedStatus::BAD_CONNECTION, None)
        );
        let plain = Reply::new(421, None, ["bye"]).unwrap();
        assert_eq!(
            DeliveryFailure::closed(&ClientCloseReason::ServiceClosing(plain)).status,
            EnhancedStatus::OTHER_TRANSIENT
        );
    }

    #[test]
    fn result_summaries() {
        let f = DeliveryFailure::local(EnhancedStatus::NO_ANSWER, "no route");
        let deferred = DeliveryResult::undelivered(&rcpts(2), f.clone(), None);
        assert!(deferred.is_deferred() && !deferred.all_delivered());
        assert_eq!(deferred.recipients.len(), 2);
        assert_eq!(f.to_string(), "4.4.1: no route");
        let mut mixed = deferred.clone();
        mixed.recipients[0].status = DeliveryStatus::Delivered;
        assert!(!mixed.is_deferred() && !mixed.all_delivered());
        mixed.recipients[1].status = DeliveryStatus::Delivered;
        assert!(mixed.all_delivered());
        let mut permanent = f;
        permanent.permanent = true;
        let failed = Done::undelivered(&rcpts(1), permanent, SessionFacts::default());
        assert!(matches!(failed.outcome, Outcome::Bounced { .. }));
    }
}
