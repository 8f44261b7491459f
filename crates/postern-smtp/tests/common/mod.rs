//! Shared test drivers: a server harness with a scripted application, and an in-memory client/server pair.
#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use postern_smtp::{
    ClientConfig, ClientEvent, ClientSession, Envelope, ForwardPath, Reply, ServerConfig,
    ServerEvent, ServerSession, TransactionReport,
};

/// A server session driven by a simple application: it accepts everything except recipients listed in
/// `reject_rcpts`, stores message chunks, and records every event.
pub struct Harness {
    pub server: ServerSession,
    pub now: Instant,
    pub events: Vec<ServerEvent>,
    pub current: Vec<u8>,
    pub messages: Vec<Vec<u8>>,
    pub reject_rcpts: Vec<String>,
    pub vrfy_reply: Option<Reply>,
    /// Leave decisions unanswered (the test answers them).
    pub manual: bool,
    pub wire: Vec<u8>,
}

impl Harness {
    /// A session whose greet pause, if any, has passed in silence: the greeting is drained.
    pub fn new(config: ServerConfig) -> Self {
        let mut now = Instant::now();
        let pause = config.greet_pause;
        let mut server = ServerSession::new(config, now);
        if !pause.is_zero() {
            now += pause;
            server.handle_timeout(now);
        }
        let mut h = Self {
            server,
            now,
            events: Vec::new(),
            current: Vec::new(),
            messages: Vec::new(),
            reject_rcpts: Vec::new(),
            vrfy_reply: None,
            manual: false,
            wire: Vec::new(),
        };
        h.pump();
        h
    }

    /// Default server named `mx.example.org`, greeting drained.
    pub fn default_named(name: &str) -> Self {
        Self::new(ServerConfig::new(name))
    }

    /// Feed bytes in one read (offering the remainder again while the session takes less) and return what the
    /// server sent in response.
    pub fn feed(&mut self, mut bytes: &[u8]) -> String {
        let start = self.wire.len();
        loop {
            let n = self.server.handle_input(bytes);
            bytes = &bytes[n..];
            let progressed = self.pump();
            if bytes.is_empty() || (n == 0 && !progressed) {
                break;
            }
        }
        String::from_utf8_lossy(&self.wire[start..]).into_owned()
    }

    pub fn feed_str(&mut self, s: &str) -> String {
        self.feed(s.as_bytes())
    }

    /// Drain events (answering decisions unless `manual`) and output. Returns whether anything happened.
    pub fn pump(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progressed = false;
            while let Some(ev) = self.server.poll_event(self.now) {
                progressed = true;
                self.on_event(ev);
            }
            while let Some(out) = self.server.poll_transmit() {
                progressed = true;
                self.wire.extend(out);
            }
            if !progressed {
                return any;
            }
            any = true;
        }
    }

    /// Everything the server sent since the greeting.
    pub fn wire_str(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }

    fn on_event(&mut self, ev: ServerEvent) {
        self.events.push(ev.clone());
        if self.manual {
            if let ServerEvent::MessageChunk(c) = &ev {
                self.current.extend_from_slice(c);
            }
            return;
        }
        match ev {
            ServerEvent::Rcpt { to, .. } => {
                let name = to.to_string();
                if self.reject_rcpts.iter().any(|r| name.contains(r.as_str())) {
                    let r = Reply::new(
                        550,
                        postern_smtp::EnhancedStatus::new(5, 1, 1).ok(),
                        ["No such user here"],
                    )
                    .unwrap();
                    self.server.reject(r).unwrap();
                } else {
                    self.server.accept().unwrap();
                }
            }
            ServerEvent::Vrfy(_) => match self.vrfy_reply.clone() {
                Some(r) => self.server.accept_with(r).unwrap(),
                None => self.server.accept().unwrap(),
            },
            ServerEvent::Hello { .. } | ServerEvent::Mail { .. } => self.server.accept().unwrap(),
            ServerEvent::MessageStart { .. } => self.current.clear(),
            ServerEvent::MessageChunk(c) => self.current.extend_from_slice(&c),
            ServerEvent::MessageEnd { .. } => {
                self.messages.push(std::mem::take(&mut self.current));
                self.server.accept().unwrap();
            }
            _ => {}
        }
    }

    pub fn count(&self, pred: impl Fn(&ServerEvent) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }
}

/// Parse `C:` / `S:` transcript lines and replay them against a harness whose greeting has been drained;
/// every `S:` group must match the server's output byte for byte. `S:` lines before the first `C:` line are
/// the greeting. A line `-- tls` completes a STARTTLS handshake; a line `-- bytewise` makes the next client
/// group be fed one byte per read.
pub fn replay(h: &mut Harness, script: &str) {
    struct Group {
        client: String,
        expected: String,
        bytewise: bool,
        tls_after: bool,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut cur = Group {
        client: String::new(),
        expected: String::new(),
        bytewise: false,
        tls_after: false,
    };
    let mut bytewise_next = false;
    for line in script.lines() {
        let line = line.trim_start();
        let c = line
            .strip_prefix("C: ")
            .or_else(|| (line == "C:").then_some(""));
        if let Some(c) = c {
            if !cur.expected.is_empty() || cur.tls_after {
                groups.push(std::mem::replace(
                    &mut cur,
                    Group {
                        client: String::new(),
                        expected: String::new(),
                        bytewise: false,
                        tls_after: false,
                    },
                ));
            }
            if cur.client.is_empty() {
                cur.bytewise = std::mem::take(&mut bytewise_next);
            }
            cur.client.push_str(c);
            cur.client.push_str("\r\n");
        } else if let Some(s) = line.strip_prefix("S: ") {
            cur.expected.push_str(s);
            cur.expected.push_str("\r\n");
        } else if line == "-- tls" {
            cur.tls_after = true;
        } else if line == "-- bytewise" {
            bytewise_next = true;
        }
    }
    groups.push(cur);
    for g in groups {
        let got = if g.client.is_empty() {
            // The greeting.
            h.wire_str()
        } else if g.bytewise {
            let start = h.wire.len();
            for b in g.client.as_bytes() {
                h.feed(std::slice::from_ref(b));
            }
            String::from_utf8_lossy(&h.wire[start..]).into_owned()
        } else {
            h.feed_str(&g.client)
        };
        assert_eq!(got, g.expected, "after the client sent {:?}", g.client);
        if g.tls_after {
            h.server
                .handle_tls_established()
                .expect("a handshake was due");
        }
    }
}

/// In-memory connection between our client and our server engines, delivering bytes in pieces that never
/// cross the given cut positions (absolute offsets in each direction's stream).
pub struct Pair {
    pub client: ClientSession,
    pub server: Harness,
    pub now: Instant,
    pub to_server: Vec<u8>,
    pub to_server_pos: usize,
    pub to_client: Vec<u8>,
    pub to_client_pos: usize,
    pub c2s_cuts: Vec<usize>,
    pub s2c_cuts: Vec<usize>,
    pub outbox: Vec<(Envelope, Vec<u8>)>,
    pub reports: Vec<TransactionReport>,
    pub client_events: Vec<ClientEvent>,
    pub use_starttls: bool,
    pub tls_pending: (bool, bool),
}

impl Pair {
    pub fn new(
        server: ServerConfig,
        client: ClientConfig,
        outbox: Vec<(Envelope, Vec<u8>)>,
    ) -> Self {
        let now = Instant::now();
        let mut server = Harness::new(server);
        // The harness drained the greeting into its wire log; move it to the pipe.
        let greeting = std::mem::take(&mut server.wire);
        Self {
            client: ClientSession::new(client, now),
            server,
            now,
            to_server: Vec::new(),
            to_server_pos: 0,
            to_client: greeting,
            to_client_pos: 0,
            c2s_cuts: Vec::new(),
            s2c_cuts: Vec::new(),
            outbox,
            reports: Vec::new(),
            client_events: Vec::new(),
            use_starttls: true,
            tls_pending: (false, false),
        }
    }

    fn next_len(pos: usize, avail: usize, cuts: &[usize]) -> usize {
        let next_cut = cuts.iter().copied().filter(|c| *c > pos).min();
        match next_cut {
            Some(c) => (c - pos).min(avail),
            None => avail,
        }
    }

    /// Run until both sides are closed or nothing moves. Returns the number of steps.
    pub fn run(&mut self) -> usize {
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "no progress");
            let mut moved = false;
            // Client side: events and decisions.
            while let Some(ev) = self.client.poll_event(self.now) {
                moved = true;
                self.client_events.push(ev.clone());
                match ev {
                    ClientEvent::Ready {
                        capabilities,
                        tls_active,
                        ..
                    } => {
                        if self.use_starttls && capabilities.starttls && !tls_active {
                            self.client.start_tls().unwrap();
                        } else {
                            self.next_message();
                        }
                    }
                    ClientEvent::StartTlsRefused(_) => self.next_message(),
                    ClientEvent::TransactionDone(r) => {
                        self.reports.push(r);
                        self.next_message();
                    }
                    ClientEvent::StartTls { .. } => self.tls_pending.0 = true,
                    _ => {}
                }
            }
            while let Some(out) = self.client.poll_transmit() {
                moved = true;
                self.to_server.extend(out);
            }
            // Server side.
            if self.server.pump() {
                moved = true;
            }
            self.to_client.extend(std::mem::take(&mut self.server.wire));
            if self
                .server
                .events
                .iter()
                .any(|e| matches!(e, ServerEvent::StartTls { .. }))
                && !self.tls_pending.1
            {
                self.tls_pending.1 = true;
            }
            // Simulated handshake once both sides asked for it and all plaintext has been delivered.
            if self.tls_pending.0
                && self.tls_pending.1
                && self.to_client_pos == self.to_client.len()
                && self.to_server_pos == self.to_server.len()
            {
                self.client.handle_tls_established().unwrap();
                self.server.server.handle_tls_established().unwrap();
                self.tls_pending = (false, false);
                self.server
                    .events
                    .retain(|e| !matches!(e, ServerEvent::StartTls { .. }));
                continue;
            }
            // Deliver one piece each way.
            if self.to_server_pos < self.to_server.len() && !self.server.server.is_closed() {
                let avail = self.to_server.len() - self.to_server_pos;
                let len = Self::next_len(self.to_server_pos, avail, &self.c2s_cuts);
                let piece = self.to_server[self.to_server_pos..self.to_server_pos + len].to_vec();
                let n = self.server.server.handle_input(&piece);
                self.to_server_pos += n;
                moved |= n > 0;
            }
            if self.to_client_pos < self.to_client.len() && !self.client.is_closed() {
                let avail = self.to_client.len() - self.to_client_pos;
                let len = Self::next_len(self.to_client_pos, avail, &self.s2c_cuts);
                let piece = self.to_client[self.to_client_pos..self.to_client_pos + len].to_vec();
                let n = self.client.handle_input(&piece);
                self.to_client_pos += n;
                moved |= n > 0;
            }
            if self.client.is_closed() && self.server.server.is_closed() {
                // Drain remaining events.
                while let Some(ev) = self.client.poll_event(self.now) {
                    self.client_events.push(ev);
                }
                self.server.pump();
                return steps;
            }
            if !moved {
                if self.server.server.is_closed() && !self.client.is_closed() {
                    self.client.handle_eof();
                    continue;
                }
                if self.client.is_closed() && !self.server.server.is_closed() {
                    self.server.server.handle_eof();
                    continue;
                }
                return steps;
            }
        }
    }

    fn next_message(&mut self) {
        if self.outbox.is_empty() {
            self.client.quit().unwrap();
        } else {
            let (env, msg) = self.outbox.remove(0);
            self.client.send_mail(env, msg).unwrap();
        }
    }
}

pub fn rcpt(s: &str) -> ForwardPath {
    ForwardPath::parse(s).unwrap()
}
