//! A UDP relay between a TFTP client and a real server that loses and
//! duplicates datagrams, deterministically seeded.
//!
//! TFTP servers answer from a new port per transfer (the transfer ID), so
//! the relay mirrors that: for every server-side source port it opens a
//! client-facing socket, and the client sees a consistent transfer ID.
//!
//! ```text
//! client ──► front ──► back ──► server:listen
//! client ◄── side[T] ◄── back ◄── server:T      (and client ──► side[T] ──► back ──► server:T)
//! ```

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Rng;

/// Decides which datagrams pass untouched.
pub type Protect = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which datagrams to lose or duplicate.
#[derive(Clone)]
pub struct Loss {
    pub drop_pct: u64,
    pub dup_pct: u64,
    pub seed: u64,
    /// Datagrams for which this is true pass untouched. TFTP cannot recover
    /// a lost final ACK unless the server dallies (RFC 1350 §6), so tests
    /// protect the last block's DATA and ACK.
    pub protect: Protect,
}

#[derive(Default, Debug)]
pub struct Stats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
}

pub struct Relay {
    /// Where the client should send its request.
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct Shared {
    server: SocketAddr,
    back: UdpSocket,
    client: Mutex<Option<SocketAddr>>,
    sides: Mutex<HashMap<u16, Arc<UdpSocket>>>,
    to_server: Mutex<Rng>,
    to_client: Mutex<Rng>,
    loss: Loss,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

const POLL: Duration = Duration::from_millis(20);

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
    s.set_read_timeout(Some(POLL)).expect("relay timeout");
    s
}

impl Relay {
    pub fn start(server: SocketAddr, loss: Loss) -> Relay {
        let front = bind();
        let addr = front.local_addr().expect("relay addr");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            server,
            back: bind(),
            client: Mutex::new(None),
            sides: Mutex::new(HashMap::new()),
            to_server: Mutex::new(Rng::new(loss.seed)),
            to_client: Mutex::new(Rng::new(loss.seed ^ 0x5555_AAAA)),
            loss,
            stats: stats.clone(),
            stop: stop.clone(),
            threads: threads.clone(),
        });

        let s = shared.clone();
        let front_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *s.client.lock().expect("lock") = Some(from);
                    s.deliver(&s.back, &buf[..n], s.server, &s.to_server);
                }
            }
        });
        let s = shared.clone();
        let back_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.back.recv_from(&mut buf) else {
                    continue;
                };
                if from.ip() != s.server.ip() {
                    continue;
                }
                let side = s.side_for(from);
                let client = *s.client.lock().expect("lock");
                if let Some(client) = client {
                    s.deliver(&side, &buf[..n], client, &s.to_client);
                }
            }
        });
        threads
            .lock()
            .expect("lock")
            .extend([front_thread, back_thread]);
        Relay {
            addr,
            stats,
            stop,
            threads,
        }
    }
}

impl Shared {
    /// The client-facing socket standing for server transfer ID `tid`.
    fn side_for(self: &Arc<Self>, tid: SocketAddr) -> Arc<UdpSocket> {
        let mut sides = self.sides.lock().expect("lock");
        if let Some(s) = sides.get(&tid.port()) {
            return s.clone();
        }
        let side = Arc::new(bind());
        sides.insert(tid.port(), side.clone());
        let s = self.clone();
        let sock = side.clone();
        let t = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    s.deliver(&s.back, &buf[..n], tid, &s.to_server);
                }
            }
        });
        self.threads.lock().expect("lock").push(t);
        side
    }

    fn deliver(&self, via: &UdpSocket, pkt: &[u8], to: SocketAddr, rng: &Mutex<Rng>) {
        let (drop, dup) = if (self.loss.protect)(pkt) {
            (false, false)
        } else {
            let mut r = rng.lock().expect("lock");
            (r.chance(self.loss.drop_pct), r.chance(self.loss.dup_pct))
        };
        if std::env::var_os("OFFSITE_RELAY_TRACE").is_some() {
            let op = if pkt.len() >= 2 { pkt[1] } else { 0 };
            let blk = if pkt.len() >= 4 {
                u16::from_be_bytes([pkt[2], pkt[3]])
            } else {
                0
            };
            eprintln!(
                "relay {:?} {:?} -> {to}: op {op} block {blk} len {}{}{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                via.local_addr().ok(),
                pkt.len(),
                if drop { " DROPPED" } else { "" },
                if dup { " DUP" } else { "" }
            );
        }
        if drop {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = via.send_to(pkt, to);
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if dup {
            let _ = via.send_to(pkt, to);
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Side threads may be added while joining; drain until empty.
        loop {
            let t = self.threads.lock().expect("lock").pop();
            match t {
                Some(t) => {
                    let _ = t.join();
                }
                None => break,
            }
        }
    }
}

/// Protects the DATA and ACK of wire block `last` (see [`Loss::protect`]).
pub fn protect_block(last: u16) -> Protect {
    Arc::new(move |p: &[u8]| {
        p.len() >= 4
            && (p[1] == 3 || p[1] == 4)
            && p[0] == 0
            && u16::from_be_bytes([p[2], p[3]]) == last
    })
}
