//! One delivery: the SMTP dialogue (RFC 5321 §3, §4.1), step by step, so
//! each failure names the setting that fixes it.
//!
//! greeting (220) → EHLO → STARTTLS (RFC 3207) and EHLO again → AUTH PLAIN
//! or LOGIN (RFC 4954, RFC 4616) → MAIL FROM → RCPT TO for each recipient →
//! DATA, the dot-stuffed content, `.` → QUIT.
//!
//! lettre formats the commands, parses replies and EHLO keywords and encodes
//! AUTH; the socket is ours: lettre's `SmtpConnection` connects through
//! socket2, whose non-blocking connect fails inside wasm32-wasip2 (wasi-libc
//! refuses `fcntl(F_SETFL, O_NONBLOCK)` on sockets, WebAssembly/wasi-libc#536),
//! leaving it no connect or greeting timeout there, and it takes no rustls
//! verifier of ours for `tls_ca`.

use std::io::{self, BufRead, BufReader, Read, Write};

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::commands::{Auth, Data, Ehlo, Mail, Quit, Rcpt, Starttls};
use lettre::transport::smtp::extension::{ClientId, Extension, MailParameter, ServerInfo};
use lettre::transport::smtp::response::Response;
use offsite_sdk::Error;

use crate::config::{Config, StartTls};
use crate::conn::{self, Conn};
use crate::tls::{self, TlsSetup};

/// Why a delivery did not happen.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt (network, timeout, 4yz reply).
    Retry(String),
    /// No retry helps: the contract's error for the runner.
    Final(Error),
}

/// AUTH mechanisms in order of preference: PLAIN needs one round trip.
const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; lettre and
/// Postfix accept up to 1000 per line and 100 000 per reply.
const MAX_REPLY_LINE: u64 = 1000;
const MAX_REPLY: usize = 100_000;

/// The step being done, for messages and for what a refusal means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    Content,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Connect => "connecting",
            Step::Greeting => "waiting for the greeting",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::Content => "sending the mail content",
        }
    }
}

/// Everything a delivery needs besides the mail, made once in `configure`.
pub struct Mailer {
    pub config: Config,
    tls: TlsSetup,
}

impl Mailer {
    pub fn new(config: Config) -> Result<Mailer, Error> {
        let tls = tls::setup(&config.host, config.tls_ca.as_deref(), config.tls_insecure)?;
        Ok(Mailer { config, tls })
    }

    /// Deliver `mail` once. `hello` is the name sent with EHLO.
    pub fn deliver(&self, mail: &Message, hello: &ClientId) -> Result<(), Failure> {
        let c = &self.config;
        let tcp = conn::dial(&c.host, c.port, c.timeout)
            .map_err(|e| self.io_failure(Step::Connect, &e))?;
        let mut s = Session {
            io: Some(BufReader::new(Conn::Plain(tcp))),
            mailer: self,
        };
        let result = s.dialogue(mail, hello);
        // RFC 5321 §4.1.1.10: end with QUIT, after a refusal too. Once
        // the content got its 250 the mail is accepted; QUIT's answer
        // changes nothing.
        s.quit();
        result
    }

    /// `smtp HOST:PORT: STEP: what`.
    fn text(&self, step: Step, what: &str) -> String {
        format!("smtp {}: {}: {what}", self.config.server(), step.doing())
    }

    /// Text the server sent, for a message: a server that echoes what it got
    /// must not put the password into the runner's log.
    fn server_said(&self, said: &str) -> String {
        match &self.config.login {
            Some((_, password)) => said.replace(password.as_str(), "********"),
            None => said.to_string(),
        }
    }

    /// What a socket or TLS error at `step` means.
    fn io_failure(&self, step: Step, e: &io::Error) -> Failure {
        let text = self.text(step, &e.to_string());
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::InvalidCertificate(_) => Failure::Final(Error::Config(format!(
                    "{text}: the server's certificate is not trusted; give the CA that signed it, \
                     or the certificate itself, as `tls_ca` (PEM), or set `tls_insecure` = true"
                ))),
                rustls::Error::PeerIncompatible(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(_) => Failure::Final(Error::Config(format!(
                    "{text}: the TLS handshake failed; `starttls` = never sends without TLS"
                ))),
                _ => Failure::Retry(text),
            };
        }
        match e.kind() {
            // The sandbox refuses addresses that `host` does not name.
            io::ErrorKind::PermissionDenied => Failure::Final(Error::Config(format!(
                "{text}: the sandbox refused the connection; the plugin may only reach the \
                 addresses of its `host` setting"
            ))),
            // Read timeouts surface as WouldBlock on Unix, TimedOut elsewhere.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Retry(format!(
                "{text} (nothing within the `timeout` setting, {}s)",
                self.config.timeout.as_secs()
            )),
            _ => Failure::Retry(text),
        }
    }

    /// What a negative reply at `step` means (RFC 5321 §4.2.1: 4yz is
    /// transient, 5yz permanent).
    fn refusal(&self, step: Step, r: &Response) -> Failure {
        let code = u16::from(r.code());
        let said = self.server_said(&r.message().collect::<Vec<_>>().join(" "));
        let text = self.text(step, &format!("the server replied \"{code} {said}\""));
        match (step, code) {
            (_, 400..=499) => Failure::Retry(text),
            // 535 credentials invalid, 534 mechanism too weak, 538 encryption
            // required, 530 authentication required (RFC 4954 §6).
            (Step::Auth, _) => Failure::Final(Error::Config(format!(
                "{text}; check `user` and `password`"
            ))),
            (_, 530) => Failure::Final(Error::Config(format!(
                "{text}; the server wants AUTH first (set `user` and `password`) or STARTTLS \
                 (set `starttls` = auto)"
            ))),
            (Step::MailFrom, _) => Failure::Final(Error::Rejected(format!("{text}; check `from`"))),
            (Step::RcptTo, _) => Failure::Final(Error::Rejected(format!("{text}; check `to`"))),
            (_, 500..=599) => Failure::Final(Error::Rejected(text)),
            _ => Failure::Final(Error::Other(format!(
                "{text}, which SMTP does not allow here"
            ))),
        }
    }
}

struct Session<'a> {
    /// `None` only after a failed TLS upgrade, when nothing is left to talk to.
    io: Option<BufReader<Conn>>,
    mailer: &'a Mailer,
}

impl Session<'_> {
    fn dialogue(&mut self, mail: &Message, hello: &ClientId) -> Result<(), Failure> {
        let mailer = self.mailer;
        let c = &mailer.config;
        self.expect(Step::Greeting, 220)?;
        let mut info = self.ehlo(hello)?;
        match (c.starttls, info.supports_feature(Extension::StartTls)) {
            (StartTls::Never, _) => {}
            (_, true) => {
                self.starttls()?;
                // RFC 3207 §4.2: forget what was learnt before TLS, ask again.
                info = self.ehlo(hello)?;
            }
            (StartTls::Always, false) => {
                return Err(Failure::Final(Error::Config(self.mailer.text(
                    Step::Ehlo,
                    "the server does not offer STARTTLS and `starttls` = always; set \
                     `starttls` = auto to send to it without TLS",
                ))));
            }
            (StartTls::Auto, false) => {
                if c.login.is_some() {
                    offsite_sdk::warn(&self.mailer.text(
                        Step::Auth,
                        "the server offers no STARTTLS: the password goes in clear text; \
                         set `starttls` = always to refuse that",
                    ));
                }
            }
        }
        if let Some((user, password)) = &c.login {
            self.auth(&info, user, password)?;
        }
        self.send(&info, mail)
    }

    fn ehlo(&mut self, hello: &ClientId) -> Result<ServerInfo, Failure> {
        let r = self.command(Step::Ehlo, &Ehlo::new(hello.clone()).to_string(), 250)?;
        ServerInfo::from_response(&r).map_err(|e| {
            Failure::Final(Error::Other(
                self.mailer
                    .text(Step::Ehlo, &format!("unreadable answer: {e}")),
            ))
        })
    }

    fn starttls(&mut self) -> Result<(), Failure> {
        self.command(Step::StartTls, &Starttls.to_string(), 220)?;
        let Some(io) = self.io.take() else {
            return Err(self.closed(Step::StartTls));
        };
        // Bytes that came after the 220 were sent in clear text and must not
        // be read as if they came through TLS: STARTTLS response injection
        // (Poddebniak et al., "Why TLS is better without STARTTLS", USENIX
        // Security 2021; CVE-2011-0411 is the server-side twin).
        if !io.buffer().is_empty() {
            return Err(Failure::Final(Error::Rejected(self.mailer.text(
                Step::StartTls,
                "the server sent more after its STARTTLS answer; refusing to go on (a \
                 man in the middle injecting commands?)",
            ))));
        }
        let tls = io
            .into_inner()
            .into_tls(&self.mailer.tls)
            .map_err(|e| self.mailer.io_failure(Step::StartTls, &e))?;
        self.io = Some(BufReader::new(tls));
        Ok(())
    }

    fn auth(&mut self, info: &ServerInfo, user: &str, password: &str) -> Result<(), Failure> {
        let tls = self.io.as_ref().is_some_and(|io| io.get_ref().is_tls());
        let Some(mechanism) = info.get_auth_mechanism(&MECHANISMS) else {
            let hint = if tls {
                ""
            } else {
                "; many servers offer AUTH only after STARTTLS: set `starttls` = auto or always"
            };
            return Err(Failure::Final(Error::Config(self.mailer.text(
                Step::Auth,
                &format!(
                    "the server offers neither AUTH PLAIN nor AUTH LOGIN{} ({info}), so `user` \
                     and `password` cannot be used{hint}",
                    if tls { "" } else { " before TLS" }
                ),
            ))));
        };
        let creds = Credentials::new(user.to_string(), password.to_string());
        let bad_challenge = |e: lettre::transport::smtp::Error| {
            Failure::Final(Error::Other(
                self.mailer
                    .text(Step::Auth, &format!("unexpected challenge: {e}")),
            ))
        };
        let first = Auth::new(mechanism, creds.clone(), None).map_err(bad_challenge)?;
        let mut reply = self.send_command(Step::Auth, &first.to_string())?;
        // LOGIN asks for the user name, then the password (two 334s).
        let mut rounds = 0;
        while reply.has_code(334) && rounds < 2 {
            let next =
                Auth::new_from_response(mechanism, creds.clone(), &reply).map_err(bad_challenge)?;
            reply = self.send_command(Step::Auth, &next.to_string())?;
            rounds += 1;
        }
        if reply.has_code(235) {
            Ok(())
        } else {
            Err(self.mailer.refusal(Step::Auth, &reply))
        }
    }

    fn send(&mut self, info: &ServerInfo, mail: &Message) -> Result<(), Failure> {
        let envelope = mail.envelope();
        let mut params = vec![];
        // RFC 6531: an address beyond ASCII needs the server's SMTPUTF8.
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Failure::Final(Error::Config(self.mailer.text(
                    Step::MailFrom,
                    "`from` or `to` holds a non-ASCII address and the server does not offer \
                     SMTPUTF8; use ASCII addresses",
                ))));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        let mail_from = Mail::new(envelope.from().cloned(), params).to_string();
        self.command(Step::MailFrom, &mail_from, 250)?;
        for to in envelope.to() {
            self.command(
                Step::RcptTo,
                &Rcpt::new(to.clone(), vec![]).to_string(),
                250,
            )?;
        }
        self.command(Step::Data, &Data.to_string(), 354)?;
        let mut content = dot_stuff(&mail.formatted());
        // The content ends with CRLF; then the terminating `.` line.
        if !content.ends_with(b"\r\n") {
            content.extend_from_slice(b"\r\n");
        }
        content.extend_from_slice(b".\r\n");
        self.write(Step::Content, &content)?;
        self.expect(Step::Content, 250).map(|_| ())
    }

    fn quit(&mut self) {
        if self
            .write(Step::Content, Quit.to_string().as_bytes())
            .is_ok()
        {
            let _ = self.read_reply(Step::Content);
        }
    }

    /// Send `line` and require the reply `ok`.
    fn command(&mut self, step: Step, line: &str, ok: u16) -> Result<Response, Failure> {
        self.write(step, line.as_bytes())?;
        self.expect(step, ok)
    }

    /// Send `line`, return whatever the server replied.
    fn send_command(&mut self, step: Step, line: &str) -> Result<Response, Failure> {
        self.write(step, line.as_bytes())?;
        self.read_reply(step)
    }

    fn expect(&mut self, step: Step, ok: u16) -> Result<Response, Failure> {
        let r = self.read_reply(step)?;
        if r.has_code(ok) {
            Ok(r)
        } else {
            Err(self.mailer.refusal(step, &r))
        }
    }

    /// A failed write or read leaves the connection in an unknown state: it
    /// is dropped, so QUIT is not tried on it (and does not wait out another
    /// timeout).
    fn write(&mut self, step: Step, bytes: &[u8]) -> Result<(), Failure> {
        let Some(io) = self.io.as_mut() else {
            return Err(self.closed(step));
        };
        let conn = io.get_mut();
        let r = conn.write_all(bytes).and_then(|()| conn.flush());
        r.map_err(|e| {
            self.io = None;
            self.mailer.io_failure(step, &e)
        })
    }

    fn read_reply(&mut self, step: Step) -> Result<Response, Failure> {
        let Some(io) = self.io.as_mut() else {
            return Err(self.closed(step));
        };
        let r = read_reply(io, self.mailer, step);
        if r.is_err() {
            self.io = None;
        }
        r
    }

    fn closed(&self, step: Step) -> Failure {
        Failure::Retry(self.mailer.text(step, "the connection is gone"))
    }
}

/// One reply: lines `CODE-text` until `CODE text` (RFC 5321 §4.2.1).
fn read_reply(io: &mut BufReader<Conn>, mailer: &Mailer, step: Step) -> Result<Response, Failure> {
    let mut text = String::new();
    loop {
        let mut line = Vec::new();
        let n = io
            .by_ref()
            .take(MAX_REPLY_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| mailer.io_failure(step, &e))?;
        if n == 0 {
            return Err(Failure::Retry(
                mailer.text(step, "the server closed the connection"),
            ));
        }
        let line = String::from_utf8_lossy(&line);
        text.push_str(&line);
        if text.len() > MAX_REPLY {
            return Err(Failure::Final(Error::Other(
                mailer.text(step, "the reply is too long"),
            )));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    text.parse::<Response>().map_err(|_| {
        Failure::Final(Error::Other(mailer.text(
            step,
            &format!("unreadable reply {:?}", mailer.server_said(text.trim_end())),
        )))
    })
}

/// RFC 5321 §4.5.2 transparency: a line of the content that starts with `.`
/// gets one more `.`, so no line of the mail reads as the end-of-data `.`.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 16);
    let mut line_start = true;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_starting_with_a_dot_get_another() {
        assert_eq!(
            dot_stuff(b".\r\nok\r\n..x\r\nmid.dle\r\n."),
            b"..\r\nok\r\n...x\r\nmid.dle\r\n..".to_vec()
        );
        assert_eq!(dot_stuff(b"plain\r\n"), b"plain\r\n".to_vec());
    }
}
