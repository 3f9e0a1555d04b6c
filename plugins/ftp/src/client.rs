//! The FTP client: login, data connections, and the four operations the
//! `destination` world needs (upload, fetch, remove, list).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::conn::{Conn, TlsSetup, connect, dial, set_timeouts};
use crate::control::{Control, Trace};
use crate::error::{Error, ErrorKind, FtpError};
use crate::reply::{Reply, clean_text, parse_epsv, parse_pasv, parse_size, parse_time_val};
use crate::settings::Settings;

/// Bytes moved per read/write on a data connection. The only buffer a
/// transfer uses, so memory stays flat whatever the file size.
const COPY_BUF: usize = 128 * 1024;

// `fetch_range`: REST + RETR, leaving the transfer at the range's end.
mod range;
use range::DataEnd;
/// Longest listing line kept (longer ones are cut).
const MAX_LIST_LINE: usize = 4096;

/// One file in the remote directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Bytes, when the server tells (MLSD `size` fact, else SIZE).
    pub size: Option<u64>,
    /// Last modification, seconds since the Unix epoch (UTC), when the
    /// server tells (MLSD `modify` fact, else MDTM).
    pub modified: Option<u64>,
}

/// The name an upload is written under until it is complete:
/// `NAME` is uploaded as `.NAME.part` (hidden from most listings), then
/// renamed.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.part")
}

/// The temporary name on a server that refuses names starting with a dot
/// (553 to STOR): `NAME.offsite-part`.
pub fn visible_temp_name(name: &str) -> String {
    format!("{name}{VISIBLE_TEMP_SUFFIX}")
}

const VISIBLE_TEMP_SUFFIX: &str = ".offsite-part";

/// The final name inside one of our temporary names, by either scheme.
pub fn temp_target(name: &str) -> Option<&str> {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".part"))
        .or_else(|| name.strip_suffix(VISIBLE_TEMP_SUFFIX))
        .filter(|n| !n.is_empty())
}

fn is_temp_name(name: &str) -> bool {
    temp_target(name).is_some()
}

/// A logged-in FTP session in the remote directory.
pub struct Client {
    ctl: Control,
    user: String,
    /// Present when the data connections are protected (PROT P).
    tls: Option<TlsSetup>,
    passive: bool,
    timeout: Duration,
    peer: SocketAddr,
    local: SocketAddr,
    // What this server turned out not to support; each is asked once.
    epsv: bool,
    eprt: bool,
    mlsd: bool,
    /// Names starting with a dot are accepted (until a 553 says not).
    dot_names: bool,
    size_cmd: bool,
    mdtm_cmd: bool,
}

/// The outcome of a transfer command: a data connection, or the server's no.
enum Started {
    Data(Conn),
    Refused(Reply),
}

/// Why a STOR did not go through.
enum Refusal {
    /// 553 to a temporary name with a leading dot: try one without.
    Name(Reply),
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Failed(e)
    }
}

impl Refusal {
    fn into_error(self) -> Error {
        match self {
            Refusal::Name(r) => Error::from_reply("uploading", &r),
            Refusal::Failed(e) => e,
        }
    }
}

/// A data connection that is not ready yet.
enum Pending {
    /// Passive: already connected to the server.
    Connected(TcpStream),
    /// Active: waiting for the server to connect.
    Listening(TcpListener),
}

/// The server's answer to SIZE.
enum Size {
    Known(u64),
    Missing(Reply),
    Unknown,
}

impl Client {
    /// Connects, logs in (over TLS when `settings.tls`), switches to binary
    /// and changes to `remote_dir`, creating the levels that are missing.
    pub fn connect(settings: &Settings) -> Result<Client, Error> {
        Client::connect_traced(settings, None)
    }

    /// `connect`, with a hook that sees each command and reply (for a debug
    /// log; the password is shown as `****`).
    pub fn connect_traced(settings: &Settings, trace: Option<Trace>) -> Result<Client, Error> {
        settings.validate()?;
        let tls = match settings.tls {
            true => Some(crate::conn::tls_setup(settings)?),
            false => None,
        };
        let endpoint = settings.endpoint();
        let timeout = settings.timeout;
        let what = format!("connecting to {endpoint}");
        let tcp = dial(&settings.host, settings.port, timeout)
            .map_err(|e| Error::from_io(&what, &e, timeout))?;
        let (peer, local) = match (tcp.peer_addr(), tcp.local_addr()) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => return Err(Error::from_io(&what, &e, timeout)),
        };
        let ctl = Control::new(
            Conn::Plain(tcp),
            endpoint,
            settings.password.clone(),
            timeout,
            trace,
        );
        let mut client = Client {
            ctl,
            user: settings.user.clone(),
            tls: None,
            passive: settings.passive,
            timeout,
            peer,
            local,
            epsv: true,
            eprt: true,
            mlsd: true,
            dot_names: true,
            size_cmd: true,
            mdtm_cmd: true,
        };
        client.greet()?;
        if let Some(tls) = tls {
            client.auth_tls(&tls)?;
            client.tls = Some(tls);
        }
        client.login(&settings.password)?;
        if client.tls.is_some() {
            client.protect_data()?;
        }
        // RFC 959 §3.1.1.3: TYPE I (image) moves the bytes unchanged.
        client.expect_completion("TYPE I", "switching to binary mode (TYPE I)")?;
        client.enter_dir(&settings.remote_dir)?;
        Ok(client)
    }

    /// `host:port` of the server.
    pub fn endpoint(&self) -> &str {
        &self.ctl.endpoint
    }

    /// Whether the control and data connections are TLS-protected.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends QUIT and closes the connection (dropping the client does too).
    pub fn quit(mut self) {
        self.ctl.close();
    }

    // ---- session set-up -------------------------------------------------

    /// RFC 959 §5.4: the greeting is 220, possibly after a 120 "ready in
    /// nnn minutes"; 421 means the server will not serve us now.
    fn greet(&mut self) -> Result<(), Error> {
        let mut r = self.ctl.read_reply()?;
        if r.code == 120 {
            r = self.ctl.read_reply()?;
        }
        if r.code != 220 {
            let what = format!("connecting to {}", self.ctl.endpoint);
            return Err(Error::from_reply(&what, &r));
        }
        Ok(())
    }

    /// Explicit FTPS, RFC 4217 §4.1: "AUTH TLS", 234, then the TLS handshake
    /// on the control connection. A server that refuses is a config problem:
    /// falling back to plain FTP would send the password in clear.
    fn auth_tls(&mut self, tls: &TlsSetup) -> Result<(), Error> {
        let r = self.ctl.cmd("AUTH TLS")?;
        if r.code != 234 {
            if (400..500).contains(&r.code) {
                let what = format!("starting TLS with {} (AUTH TLS)", self.ctl.endpoint);
                return Err(Error::from_reply(&what, &r));
            }
            return Err(Error::config(format!(
                "{} does not offer explicit FTPS: AUTH TLS was answered \"{r}\". \
                 Not falling back to plain FTP, which would send the password in clear; \
                 set tls = false only if that is acceptable",
                self.ctl.endpoint
            )));
        }
        self.ctl.start_tls(tls)
    }

    /// RFC 959 §4.1.1 / §5.4: USER, then PASS if the server answers 331.
    fn login(&mut self, password: &str) -> Result<(), Error> {
        let user = self.user.clone();
        let mut r = self.ctl.cmd(&format!("USER {user}"))?;
        if r.code == 331 {
            r = self.ctl.cmd(&format!("PASS {password}"))?;
        }
        match r.code {
            230 | 202 => Ok(()),
            332 => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} wants an account (ACCT) for user \"{user}\"; accounts are not supported",
                    self.ctl.endpoint
                ),
            )),
            530 => Err(Error::config(format!(
                "login to {} as user \"{user}\" was refused: the server replied \"{r}\"; \
                 check the user and password settings",
                self.ctl.endpoint
            ))),
            _ => {
                let what = format!("logging in to {} as user \"{user}\"", self.ctl.endpoint);
                Err(Error::from_reply(&what, &r))
            }
        }
    }

    /// RFC 4217 §9 (after RFC 2228): PBSZ 0, then PROT P, so every data
    /// connection is TLS-protected too.
    fn protect_data(&mut self) -> Result<(), Error> {
        for (cmd, what) in [
            ("PBSZ 0", "setting the protection buffer size (PBSZ 0)"),
            ("PROT P", "asking for protected data connections (PROT P)"),
        ] {
            let r = self.ctl.cmd(cmd)?;
            if !r.is_completion() {
                let mut e = Error::from_reply(&format!("{what} on {}", self.ctl.endpoint), &r);
                if e.kind != ErrorKind::Transient {
                    e.kind = ErrorKind::Config;
                    e.message += "; the data would travel in clear, so the client stops here";
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Changes to `dir`, creating each missing level (RFC 959 §4.1.1 CWD,
    /// §4.1.3 MKD). An absolute `dir` starts from `/`.
    fn enter_dir(&mut self, dir: &str) -> Result<(), Error> {
        let dir = dir.trim();
        if dir.is_empty() {
            return Ok(());
        }
        let r = self.ctl.cmd(&format!("CWD {dir}"))?;
        if r.is_completion() {
            return Ok(());
        }
        if (400..500).contains(&r.code) {
            let what = format!("changing to remote_dir {dir} on {}", self.ctl.endpoint);
            return Err(Error::from_reply(&what, &r));
        }
        if dir.starts_with('/') {
            self.expect_completion("CWD /", "changing to / to create remote_dir")?;
        }
        for part in dir.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let r = self.ctl.cmd(&format!("CWD {part}"))?;
            if r.is_completion() {
                continue;
            }
            // 257 "created" (RFC 959 Appendix II); anything else is a no,
            // unless another client created it meanwhile (the CWD tells).
            let made = self.ctl.cmd(&format!("MKD {part}"))?;
            let r = self.ctl.cmd(&format!("CWD {part}"))?;
            if !r.is_completion() {
                let what = format!(
                    "creating directory {part} of remote_dir {dir} on {}",
                    self.ctl.endpoint
                );
                let reply = if made.code == 257 { &r } else { &made };
                return Err(Error::from_reply(&what, reply));
            }
        }
        Ok(())
    }

    fn expect_completion(&mut self, cmd: &str, what: &str) -> Result<Reply, Error> {
        let r = self.ctl.cmd(cmd)?;
        if r.is_completion() {
            Ok(r)
        } else {
            Err(Error::from_reply(
                &format!("{what} on {}", self.ctl.endpoint),
                &r,
            ))
        }
    }

    // ---- data connections -------------------------------------------------

    fn open_data(&mut self) -> Result<Pending, Error> {
        if self.passive {
            self.open_passive().map(Pending::Connected)
        } else {
            self.open_active().map(Pending::Listening)
        }
    }

    /// Passive mode: EPSV (RFC 2428 §3), falling back to PASV (RFC 959
    /// §4.1.2) once the server shows it does not know EPSV.
    fn open_passive(&mut self) -> Result<TcpStream, Error> {
        let ep = self.ctl.endpoint.clone();
        let port = loop {
            if self.epsv {
                let r = self.ctl.cmd("EPSV")?;
                if r.code == 229 {
                    break parse_epsv(&r.text).ok_or_else(|| {
                        Error::other(format!("{ep} sent an EPSV reply without a port: \"{r}\""))
                    })?;
                }
                // 500/502/504: unknown; 501/522: not for this network protocol.
                if r.is_not_implemented() || r.code == 501 || r.code == 522 {
                    self.epsv = false;
                    self.ctl.trace("(EPSV not supported; using PASV)");
                    continue;
                }
                let what = format!("asking {ep} for a data port (EPSV)");
                return Err(Error::from_reply(&what, &r));
            }
            if self.peer.is_ipv6() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{ep} refused EPSV, and PASV cannot work over IPv6"),
                ));
            }
            let r = self.ctl.cmd("PASV")?;
            if r.code != 227 {
                let what = format!("asking {ep} for a data port (PASV)");
                return Err(Error::from_reply(&what, &r));
            }
            let (_, port) = parse_pasv(&r.text).ok_or_else(|| {
                Error::other(format!(
                    "{ep} sent a PASV reply without an address: \"{r}\""
                ))
            })?;
            break port;
        };
        // Connect to the address the control connection already uses, not to
        // the one a PASV reply names: a server behind NAT names an internal
        // address, following the reply would let a server aim us at a third
        // host, and the plugin sandbox allows the configured host only.
        let addr = SocketAddr::new(self.peer.ip(), port);
        let what = format!("opening the data connection to {addr}");
        connect(addr, self.timeout).map_err(|e| Error::from_io(&what, &e, self.timeout))
    }

    /// Active mode: listen on the address the control connection leaves
    /// from and tell the server with EPRT (RFC 2428 §2), falling back to
    /// PORT (RFC 959 §4.1.2) for IPv4.
    fn open_active(&mut self) -> Result<TcpListener, Error> {
        let ep = self.ctl.endpoint.clone();
        let what = "listening for the server's data connection (active mode)";
        let listener = TcpListener::bind(SocketAddr::new(self.local.ip(), 0))
            .map_err(|e| Error::from_io(what, &e, self.timeout))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::from_io(what, &e, self.timeout))?;
        if self.eprt {
            let family = if addr.is_ipv4() { 1 } else { 2 };
            let r = self
                .ctl
                .cmd(&format!("EPRT |{family}|{}|{}|", addr.ip(), addr.port()))?;
            if r.is_completion() {
                return Ok(listener);
            }
            if !(r.is_not_implemented() || r.code == 522) {
                return Err(Error::from_reply(&format!("EPRT to {ep}"), &r));
            }
            self.eprt = false;
            self.ctl.trace("(EPRT not supported; using PORT)");
        }
        let IpAddr::V4(ip) = addr.ip() else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{ep} refused EPRT, and PORT cannot work over IPv6"),
            ));
        };
        let [a, b, c, d] = ip.octets();
        let (p1, p2) = (addr.port() >> 8, addr.port() & 0xff);
        self.expect_completion(&format!("PORT {a},{b},{c},{d},{p1},{p2}"), "PORT")?;
        Ok(listener)
    }

    /// Active mode: waits for the server to connect, accepting only the
    /// server's own address (anyone else could be stealing the port).
    fn accept(&self, listener: TcpListener) -> Result<TcpStream, Error> {
        let what = "waiting for the server's data connection (active mode)";
        let io = |e: io::Error| Error::from_io(what, &e, self.timeout);
        listener.set_nonblocking(true).map_err(io)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match listener.accept() {
                Ok((s, from)) if from.ip() == self.peer.ip() => {
                    s.set_nonblocking(false).map_err(io)?;
                    set_timeouts(&s, self.timeout).map_err(io)?;
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(Error::transient(format!(
                            "{what}: {} did not connect within {}s; a firewall or NAT \
                             in between? passive = true avoids this",
                            self.ctl.endpoint,
                            self.timeout.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Opens a data connection and sends a transfer command (STOR, RETR,
    /// MLSD, NLST). On 1yz (RFC 959 §5.4) returns the data connection, with
    /// the TLS handshake done when data is protected: the client is the TLS
    /// client on every data connection, whichever side opened it (RFC 4217).
    fn start_transfer(&mut self, cmd: &str) -> Result<Started, Error> {
        self.start_transfer_at(cmd, None)
    }

    /// `start_transfer` from byte `restart` on: `REST restart` (RFC 3659
    /// §5.3, a byte count in stream mode) goes after the data connection is
    /// set up and right before `cmd`, which must follow it immediately. A
    /// server without REST (500/502/504) is `Unsupported`.
    fn start_transfer_at(&mut self, cmd: &str, restart: Option<u64>) -> Result<Started, Error> {
        let pending = self.open_data()?;
        if let Some(at) = restart {
            let r = self.ctl.cmd(&format!("REST {at}"))?;
            if r.code != 350 {
                let what = format!("REST {at} before {cmd} on {}", self.ctl.endpoint);
                return Err(Error::from_reply(&what, &r));
            }
        }
        let r = self.ctl.cmd(cmd)?;
        if !r.is_preliminary() {
            return Ok(Started::Refused(r));
        }
        let tcp = match pending {
            Pending::Connected(s) => Ok(s),
            Pending::Listening(l) => self.accept(l),
        };
        let conn = tcp.and_then(|tcp| match &self.tls {
            Some(tls) => Conn::Plain(tcp).into_tls(tls).map_err(|e| {
                let what = format!("TLS handshake on the data connection to {}", self.peer.ip());
                Error::from_io(&what, &e, self.timeout)
            }),
            None => Ok(Conn::Plain(tcp)),
        });
        match conn {
            Ok(c) => Ok(Started::Data(c)),
            Err(e) => {
                self.after_abort();
                Err(e)
            }
        }
    }

    /// After a data connection was cut short the server still answers the
    /// transfer command (426/451, or 226 if it saw a clean end); read that
    /// answer so later replies stay in step.
    fn after_abort(&mut self) -> Option<Reply> {
        self.ctl.read_reply().ok()
    }

    /// The error for a data connection that failed mid-transfer, with the
    /// server's view added when it has one.
    fn transfer_failed(&mut self, what: &str, err: &io::Error) -> Error {
        let mut e = Error::from_io(what, err, self.timeout);
        if let Some(r) = self.after_abort() {
            e.message += &format!(" (the server said \"{r}\")");
        }
        e
    }

    /// The completion reply after a transfer: 226 or 250 (RFC 959 §4.2).
    fn transfer_done(&mut self, what: &str) -> Result<(), Error> {
        let r = self.ctl.read_reply()?;
        if r.is_completion() {
            Ok(())
        } else {
            Err(Error::from_reply(what, &r))
        }
    }

    // ---- the operations ---------------------------------------------------

    /// Uploads `data` (exactly `size` bytes) as `name` in the remote
    /// directory. The bytes go to `.NAME.part` first; only after the server
    /// confirmed the transfer and SIZE matches is it renamed to `name`
    /// (RNFR/RNTO), so `name` never holds a partial file. On failure the
    /// temporary file is deleted when the connection still allows it.
    ///
    /// A server that refuses names starting with a dot (553 to STOR, as
    /// some hardened servers do) gets `NAME.offsite-part` instead, for the
    /// rest of the session; the final name still appears only by rename.
    pub fn upload(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<(), Error> {
        check_name(name)?;
        let mut temp = if self.dot_names {
            temp_name(name)
        } else {
            visible_temp_name(name)
        };
        let mut result = self.store(name, &temp, data, size);
        if let Err(Refusal::Name(r)) = &result {
            self.ctl.trace(&format!(
                "(the server refused the name {temp}: \"{r}\"; using {} from now on)",
                visible_temp_name(name)
            ));
            self.dot_names = false;
            temp = visible_temp_name(name);
            result = self.store(name, &temp, data, size);
        }
        let result = result
            .map_err(Refusal::into_error)
            .and_then(|()| self.rename(&temp, name));
        if let Err(mut e) = result {
            if self.discard(&temp) {
                e.message += &format!("; removed {temp}");
            } else {
                e.message += &format!("; {temp} may remain on the server");
            }
            return Err(e);
        }
        Ok(())
    }

    /// STOR to `temp`. A 553 ("file name not allowed", RFC 959 §4.2) to a
    /// dot name comes back as [`Refusal::Name`] before any byte was read.
    fn store(
        &mut self,
        name: &str,
        temp: &str,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), Refusal> {
        let what = format!("uploading {name} to {}", self.ctl.endpoint);
        let conn = match self.start_transfer(&format!("STOR {temp}"))? {
            Started::Data(c) => c,
            Started::Refused(r) if r.code == 553 && temp.starts_with('.') => {
                return Err(Refusal::Name(r));
            }
            Started::Refused(r) => return Err(Error::from_reply(&what, &r).into()),
        };
        Ok(self.send(&what, conn, temp, data, size)?)
    }

    /// The bytes of a STOR, then the checks that they all arrived.
    fn send(
        &mut self,
        what: &str,
        mut conn: Conn,
        temp: &str,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), Error> {
        let mut buf = vec![0u8; COPY_BUF];
        let mut sent: u64 = 0;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    drop(conn);
                    self.after_abort();
                    return Err(Error::other(format!(
                        "{what}: reading the data to upload failed after {sent} bytes: {e}"
                    )));
                }
            };
            if let Err(e) = conn.write_all(&buf[..n]) {
                abandon(conn);
                let what = format!("{what}: the data connection failed after {sent} bytes");
                return Err(self.transfer_failed(&what, &e));
            }
            sent += n as u64;
        }
        if let Err(e) = conn.finish() {
            abandon(conn);
            let what = format!("{what}: closing the data connection after {sent} bytes");
            return Err(self.transfer_failed(&what, &e));
        }
        drop(conn);
        self.transfer_done(what)?;
        if sent != size {
            return Err(Error::other(format!(
                "{what}: the input held {sent} bytes but {size} were announced"
            )));
        }
        // RFC 3659 §4: in TYPE I, SIZE is the exact number of octets stored.
        match self.size(temp)? {
            Size::Known(stored) if stored != size => Err(Error::transient(format!(
                "{what}: the server stored {stored} bytes, {size} were sent"
            ))),
            Size::Missing(r) => Err(Error::other(format!(
                "{what}: the server confirmed the transfer but then has no {temp} (\"{r}\")"
            ))),
            _ => Ok(()),
        }
    }

    /// RFC 959 §4.1.3: RNFR answered 350 (pending), then RNTO at once.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let what = format!("renaming {from} to {to} on {}", self.ctl.endpoint);
        let first = self.rename_once(from, to, &what)?;
        if first.is_completion() {
            return Ok(());
        }
        // RFC 959 leaves renaming onto an existing file to the server, and
        // some refuse; if `to` exists, delete it and try once more.
        if (500..600).contains(&first.code) && matches!(self.size(to)?, Size::Known(_)) {
            let d = self.ctl.cmd(&format!("DELE {to}"))?;
            if d.is_completion() {
                let again = self.rename_once(from, to, &what)?;
                if again.is_completion() {
                    return Ok(());
                }
                return Err(Error::from_reply(&what, &again));
            }
        }
        Err(Error::from_reply(&what, &first))
    }

    fn rename_once(&mut self, from: &str, to: &str, what: &str) -> Result<Reply, Error> {
        let r = self.ctl.cmd(&format!("RNFR {from}"))?;
        if r.code != 350 {
            return Err(Error::from_reply(what, &r));
        }
        self.ctl.cmd(&format!("RNTO {to}"))
    }

    /// Deletes a temporary upload, if the control connection still works.
    fn discard(&mut self, temp: &str) -> bool {
        if self.ctl.is_broken() {
            return false;
        }
        matches!(self.ctl.cmd(&format!("DELE {temp}")), Ok(r) if r.is_completion())
    }

    /// Writes the remote file `name` to `out` (RETR, RFC 959 §4.1.3) and
    /// returns the number of bytes. The count is checked against SIZE when
    /// the server has it, so a cut connection is an error, not a short file.
    pub fn fetch(&mut self, name: &str, out: &mut dyn Write) -> Result<u64, Error> {
        check_name(name)?;
        let what = format!("fetching {name} from {}", self.ctl.endpoint);
        let expected = match self.size(name)? {
            Size::Known(n) => Some(n),
            Size::Missing(r) => return Err(not_found(&what, &r)),
            Size::Unknown => None,
        };
        let conn = match self.start_transfer(&format!("RETR {name}"))? {
            Started::Data(c) => c,
            Started::Refused(r) if r.code == 550 => return Err(not_found(&what, &r)),
            Started::Refused(r) => return Err(Error::from_reply(&what, &r)),
        };
        let (mut conn, got, end) = self.copy_data(conn, out, u64::MAX, &what)?;
        let unclean = end == DataEnd::Unclean;
        let _ = conn.finish();
        drop(conn);
        self.transfer_done(&what)?;
        match expected {
            Some(n) if n != got => {
                return Err(Error::transient(format!(
                    "{what}: received {got} bytes but the file has {n}"
                )));
            }
            None if unclean => {
                return Err(Error::transient(format!(
                    "{what}: the TLS data connection ended without close_notify after {got} \
                     bytes and the server has no SIZE to check that against"
                )));
            }
            _ => {}
        }
        out.flush()
            .map_err(|e| Error::other(format!("{what}: writing the fetched data failed: {e}")))?;
        Ok(got)
    }

    /// Deletes the remote file `name` (DELE, RFC 959 §4.1.3). A 550 is
    /// `NotFound` unless its text is about permission.
    pub fn remove(&mut self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let what = format!("removing {name} from {}", self.ctl.endpoint);
        let r = self.ctl.cmd(&format!("DELE {name}"))?;
        if r.is_completion() {
            Ok(())
        } else if r.code == 550 && !mentions_permission(&r.text) {
            Err(not_found(&what, &r))
        } else {
            Err(Error::from_reply(&what, &r))
        }
    }

    /// The plain files in the remote directory whose names start with
    /// `prefix`, sorted by name; temporary `.NAME.part` uploads are left
    /// out. MLSD (RFC 3659 §7) when the server has it, else NLST (RFC 959
    /// §4.1.3) with SIZE and MDTM per file.
    pub fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, Error> {
        if self.mlsd {
            if let Some(entries) = self.list_mlsd(prefix)? {
                return Ok(entries);
            }
            self.mlsd = false;
            self.ctl.trace("(MLSD not supported; using NLST)");
        }
        self.list_nlst(prefix)
    }

    /// `None` when the server does not implement MLSD.
    fn list_mlsd(&mut self, prefix: &str) -> Result<Option<Vec<Entry>>, Error> {
        let what = format!("listing the files on {} (MLSD)", self.ctl.endpoint);
        let mut conn = match self.start_transfer("MLSD")? {
            Started::Data(c) => c,
            Started::Refused(r) if r.is_not_implemented() => return Ok(None),
            Started::Refused(r) if r.is_completion() => return Ok(Some(Vec::new())),
            Started::Refused(r) => return Err(Error::from_reply(&what, &r)),
        };
        let mut entries = Vec::new();
        let res = read_lines(&mut conn, |line| {
            if let Some(e) = parse_mlsd_line(line)
                && keep(&e.name, prefix)
            {
                entries.push(e);
            }
        });
        drop(conn);
        if let Err(e) = res {
            return Err(self.transfer_failed(&what, &e));
        }
        self.transfer_done(&what)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(entries))
    }

    /// Deletes the temporaries an interrupted upload left (ours only: by
    /// both temporary-name schemes, around a final name `owned` accepts,
    /// e.g. a generation of the job being shipped). Returns what it removed.
    pub fn remove_temporaries(
        &mut self,
        owned: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, Error> {
        let names = self.nlst(&|n| temp_target(n).is_some_and(owned))?;
        let mut removed = vec![];
        for n in names {
            if self.ctl.cmd(&format!("DELE {n}"))?.is_completion() {
                removed.push(n);
            }
        }
        Ok(removed)
    }

    fn list_nlst(&mut self, prefix: &str) -> Result<Vec<Entry>, Error> {
        let names = self.nlst(&|n| keep(n, prefix))?;
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            // RFC 3659 §4 SIZE and §3 MDTM fill in what NLST leaves out;
            // SIZE's 550 marks something that is not a plain file.
            let size = match self.size(&name)? {
                Size::Known(n) => Some(n),
                Size::Missing(_) => continue,
                Size::Unknown => None,
            };
            let modified = self.mdtm(&name)?;
            entries.push(Entry {
                name,
                size,
                modified,
            });
        }
        Ok(entries)
    }

    /// The names NLST gives that `wanted` accepts, sorted.
    fn nlst(&mut self, wanted: &dyn Fn(&str) -> bool) -> Result<Vec<String>, Error> {
        let what = format!("listing the files on {} (NLST)", self.ctl.endpoint);
        let mut conn = match self.start_transfer("NLST")? {
            Started::Data(c) => c,
            // An empty directory: servers answer 450/550 "no files", or 226 at once.
            Started::Refused(r) if matches!(r.code, 450 | 550) || r.is_completion() => {
                return Ok(Vec::new());
            }
            Started::Refused(r) => return Err(Error::from_reply(&what, &r)),
        };
        let mut names = Vec::new();
        let res = read_lines(&mut conn, |line| {
            // Some servers list paths; the name is the last part.
            let name = line.rsplit('/').next().unwrap_or(line);
            if !name.is_empty() && wanted(name) {
                names.push(name.to_string());
            }
        });
        drop(conn);
        if let Err(e) = res {
            return Err(self.transfer_failed(&what, &e));
        }
        self.transfer_done(&what)?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// SIZE (RFC 3659 §4); `Unknown` once the server showed it lacks it.
    fn size(&mut self, name: &str) -> Result<Size, Error> {
        if !self.size_cmd {
            return Ok(Size::Unknown);
        }
        let r = self.ctl.cmd(&format!("SIZE {name}"))?;
        match r.code {
            213 => parse_size(&r.text).map(Size::Known).ok_or_else(|| {
                Error::other(format!(
                    "{} sent a SIZE reply without a number: \"{r}\"",
                    self.ctl.endpoint
                ))
            }),
            550 => Ok(Size::Missing(r)),
            400..=499 => {
                let what = format!("asking {} for the size of {name}", self.ctl.endpoint);
                Err(Error::from_reply(&what, &r))
            }
            _ if r.is_not_implemented() => {
                self.size_cmd = false;
                Ok(Size::Unknown)
            }
            _ => Ok(Size::Unknown),
        }
    }

    /// MDTM (RFC 3659 §3): "213 YYYYMMDDHHMMSS" in UTC.
    fn mdtm(&mut self, name: &str) -> Result<Option<u64>, Error> {
        if !self.mdtm_cmd {
            return Ok(None);
        }
        let r = self.ctl.cmd(&format!("MDTM {name}"))?;
        match r.code {
            213 => Ok(parse_time_val(&r.text)),
            400..=499 => {
                let what = format!("asking {} for the time of {name}", self.ctl.endpoint);
                Err(Error::from_reply(&what, &r))
            }
            _ => {
                if r.is_not_implemented() {
                    self.mdtm_cmd = false;
                }
                Ok(None)
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.ctl.close();
    }
}

/// Names are plain file names in the remote directory: no path separators
/// and nothing that would end the FTP command line (RFC 959 §4.1).
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\r', '\n', '\0'])
    {
        return Err(Error::other(format!(
            "\"{}\" is not a plain file name (no slashes, line breaks or NUL)",
            clean_text(name)
        )));
    }
    Ok(())
}

fn keep(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && !is_temp_name(name) && name != "." && name != ".."
}

fn not_found(what: &str, r: &Reply) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{what}: no such file (the server replied \"{r}\")"),
    )
}

fn mentions_permission(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "permission",
        "denied",
        "privilege",
        "not allowed",
        "forbidden",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Reads a listing line by line (CRLF or LF), in constant memory.
fn read_lines(conn: &mut Conn, mut f: impl FnMut(&str)) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A listing has no SIZE to check; take what came (the final
            // reply still has to be 226).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && conn.is_tls() => break,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let raw = line.strip_suffix(b"\r").unwrap_or(&line);
                f(&String::from_utf8_lossy(raw));
                line.clear();
            } else if line.len() < MAX_LIST_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        f(&String::from_utf8_lossy(&line));
    }
    let _ = conn.finish();
    Ok(())
}

/// One MLSD line (RFC 3659 §7.2): `fact=value;fact=value; name`. Only
/// `type=file` entries are kept (§7.5.1: cdir, pdir and dir are not files).
fn parse_mlsd_line(line: &str) -> Option<Entry> {
    let (facts, name) = line.split_once(' ')?;
    if name.is_empty() {
        return None;
    }
    let (mut size, mut modified) = (None, None);
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let Some((key, value)) = fact.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "type" if !value.eq_ignore_ascii_case("file") => return None,
            "size" => size = value.parse().ok(),
            "modify" => modified = parse_time_val(value),
            _ => {}
        }
    }
    Some(Entry {
        name: name.to_string(),
        size,
        modified,
    })
}

/// Give up a data connection whose write stalled without closing it: in a
/// wasm32-wasip2 guest, closing waits for the pending write to drain
/// (wasmtime-wasi 48's TcpWriter::cancel), which a server that stopped
/// reading never lets happen. The socket goes with the plugin instance.
fn abandon<T>(conn: T) {
    if cfg!(target_arch = "wasm32") {
        std::mem::forget(conn);
    } else {
        drop(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlsd_lines() {
        let e =
            parse_mlsd_line("type=file;size=1024;modify=20240229123456;perm=r; a b.sql").unwrap();
        assert_eq!(e.name, "a b.sql");
        assert_eq!(e.size, Some(1024));
        assert_eq!(e.modified, Some(1_709_210_096));
        assert!(parse_mlsd_line("type=dir;modify=20240229123456; sub").is_none());
        assert!(parse_mlsd_line("type=cdir; .").is_none());
        let bare = parse_mlsd_line(" plain").unwrap();
        assert_eq!((bare.name.as_str(), bare.size), ("plain", None));
    }

    #[test]
    fn names() {
        assert_eq!(temp_name("x.sql.zst"), ".x.sql.zst.part");
        assert!(is_temp_name(".x.part"));
        assert!(!is_temp_name(".part"));
        assert!(!is_temp_name("x.part"));
        assert!(check_name("calls-20240101T000000Z.sql.zst").is_ok());
        for bad in ["", ".", "..", "a/b", "a\r\nDELE b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(keep("calls-1", "calls-"));
        assert!(!keep(".calls-1.part", ""));
        // The scheme for servers that refuse dot names.
        assert_eq!(visible_temp_name("x.sql"), "x.sql.offsite-part");
        assert_eq!(temp_target("x.sql.offsite-part"), Some("x.sql"));
        assert_eq!(temp_target(".x.sql.part"), Some("x.sql"));
        assert_eq!(temp_target("x.sql"), None);
        assert!(!keep("calls-1.offsite-part", "calls-"));
    }

    #[test]
    fn permission_words() {
        assert!(mentions_permission("Permission denied."));
        assert!(mentions_permission("Not enough privileges."));
        assert!(!mentions_permission("No such file or directory."));
    }
}
