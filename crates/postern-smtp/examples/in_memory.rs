//! Our client session delivering a message to our server session in memory, with STARTTLS (simulated: both
//! sides are told the handshake succeeded) and pipelining. Prints the conversation.
//!
//! Run with `cargo run -p postern-smtp --example in_memory`.

use std::time::Instant;

use postern_smtp::{
    ClientConfig, ClientEvent, ClientSession, Envelope, ForwardPath, ReversePath, ServerConfig,
    ServerEvent, ServerSession,
};

fn show(prefix: &str, bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).split_inclusive("\r\n") {
        println!("{prefix} {}", line.trim_end_matches("\r\n"));
    }
}

fn main() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::new("mx.example.org"), now);
    // The greet pause passes without the client talking: the server greets.
    let now = server.poll_timeout().expect("the greet pause");
    server.handle_timeout(now);
    let mut client = ClientSession::new(ClientConfig::new("client.example.net"), now);
    let from = ReversePath::parse("<alice@example.net>").expect("valid path");
    let to = ForwardPath::parse("<bob@example.org>").expect("valid path");
    let mut outbox = vec![(
        Envelope::new(from, [to]),
        b"Subject: hello\r\n\r\nHi Bob.\r\n.signature\r\n".to_vec(),
    )];
    let mut stored = Vec::new();
    let (mut client_tls, mut server_tls) = (false, false);

    while !(client.is_closed() && server.is_closed()) {
        let mut moved = false;
        while let Some(ev) = client.poll_event(now) {
            moved = true;
            match ev {
                ClientEvent::Ready {
                    capabilities,
                    tls_active,
                    ..
                } => {
                    if capabilities.starttls && !tls_active {
                        client.start_tls().expect("at the decision point");
                    } else if let Some((env, msg)) = outbox.pop() {
                        client.send_mail(env, msg).expect("at the decision point");
                    } else {
                        client.quit().expect("at the decision point");
                    }
                }
                ClientEvent::StartTls { .. } => client_tls = true,
                ClientEvent::TransactionDone(report) => {
                    for r in &report.recipients {
                        println!("-- {}: {:?}", r.recipient, r.status);
                    }
                    client.quit().expect("at the decision point");
                }
                ClientEvent::Closed(reason) => println!("-- client closed: {reason:?}"),
                _ => {}
            }
        }
        while let Some(bytes) = client.poll_transmit() {
            moved = true;
            show("C:", &bytes);
            // A real adapter keeps the bytes not taken; this small conversation always fits the buffer.
            assert_eq!(server.handle_input(&bytes), bytes.len());
        }
        while let Some(ev) = server.poll_event(now) {
            moved = true;
            match ev {
                ServerEvent::Hello { .. } | ServerEvent::Mail { .. } | ServerEvent::Rcpt { .. } => {
                    server.accept().expect("a decision is pending")
                }
                ServerEvent::MessageChunk(chunk) => stored.extend(chunk),
                ServerEvent::MessageEnd { .. } => server.accept().expect("a decision is pending"),
                ServerEvent::StartTls { .. } => server_tls = true,
                ServerEvent::Closing(reason) => println!("-- server closing: {reason:?}"),
                _ => {}
            }
        }
        while let Some(bytes) = server.poll_transmit() {
            moved = true;
            show("S:", &bytes);
            assert_eq!(client.handle_input(&bytes), bytes.len());
        }
        if client_tls && server_tls {
            println!("-- TLS handshake (simulated)");
            server.handle_tls_established().expect("handshake was due");
            client.handle_tls_established().expect("handshake was due");
            (client_tls, server_tls) = (false, false);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    println!("-- stored message:");
    show("   ", &stored);
}
