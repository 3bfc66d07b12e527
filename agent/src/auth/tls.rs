//! A TLS listener for axum: TCP connections are accepted and their handshakes run
//! concurrently (each with a deadline), so a client that stalls in its handshake holds up
//! nobody else. Accepting never waits: past [`MAX_HANDSHAKES`] handshakes in progress, or
//! [`MAX_HANDSHAKES_PER_CLIENT`] from one address, a new connection is closed at once, and
//! while more than half the handshake slots are taken the deadline is cut to
//! [`PRESSED_DEADLINE`]. Finished connections reach [`crate::serve`] through a channel, with
//! the peer's address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// Handshakes in progress at once; further connections are closed.
const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one client address.
const MAX_HANDSHAKES_PER_CLIENT: usize = 32;
/// How long a client has to finish its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// The deadline while more than half the handshake slots are taken.
const PRESSED_DEADLINE: Duration = Duration::from_secs(1);

/// A listener of finished TLS connections.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let handshakes: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and the like: wait rather than spin.
                        debug!(error = %e, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let deadline = {
                    let mut open = handshakes.lock().unwrap_or_else(|p| p.into_inner());
                    let total: usize = open.values().sum();
                    let mine = open.entry(peer.ip()).or_insert(0);
                    if total >= MAX_HANDSHAKES || *mine >= MAX_HANDSHAKES_PER_CLIENT {
                        debug!(%peer, "too many TLS handshakes in progress; closing a new connection");
                        continue;
                    }
                    *mine += 1;
                    if total * 2 > MAX_HANDSHAKES {
                        PRESSED_DEADLINE
                    } else {
                        HANDSHAKE_DEADLINE
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx, handshakes) = (acceptor.clone(), tx.clone(), handshakes.clone());
                tokio::spawn(async move {
                    let outcome = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
                    {
                        let mut open = handshakes.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(n) = open.get_mut(&peer.ip()) {
                            *n -= 1;
                            if *n == 0 {
                                open.remove(&peer.ip());
                            }
                        }
                    }
                    match outcome {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            rx,
            local,
            acceptor: task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The acceptor only ends when aborted: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
