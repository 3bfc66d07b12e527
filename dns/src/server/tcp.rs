//! TCP (RFC 7766): length-prefixed messages, several per connection and pipelined (each is
//! answered as it arrives, forwarded ones whenever their answer comes), an idle timeout, and a
//! cap on connections so a flood of idle clients cannot exhaust the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::debug;

use super::{Forward, ServerMetrics, SharedSnapshot};
use crate::answer::{Outcome, Transport, answer};

/// Most TCP connections served at once.
const MAX_CONNECTIONS: usize = 1024;

/// Accepts connections until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(peer = %peer, "too many TCP connections; closing a new one");
            continue;
        };
        let (snapshot, forward, metrics) = (snapshot.clone(), forward.clone(), metrics.clone());
        tokio::spawn(async move {
            connection(stream, peer, snapshot, forward, metrics, idle).await;
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    idle: Duration,
) {
    let (mut reader, mut writer) = stream.into_split();
    // Answers, ours and forwarded, are written in the order they become ready.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, reader.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break, // idle, closed, or broken
        }
        let len = usize::from(u16::from_be_bytes(len));
        buf.resize(len, 0);
        match tokio::time::timeout(idle, reader.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        metrics.queries_tcp.inc();
        let current = snapshot.load();
        match answer(&current, &buf, Transport::Tcp) {
            Outcome::Reply(bytes) => {
                if tx.send(bytes).is_err() {
                    break;
                }
            }
            Outcome::NotOurs(query) => match &forward {
                Some(forward) => {
                    let tx = tx.clone();
                    forward.forward(
                        *query,
                        peer,
                        Transport::Tcp,
                        Box::new(move |bytes| {
                            let _ = tx.send(bytes);
                        }),
                    );
                }
                None => {
                    if let Some(bytes) = super::refused(&query) {
                        let _ = tx.send(bytes);
                    }
                }
            },
            Outcome::Drop => {
                metrics.dropped.inc();
                break; // a client sending garbage over TCP gets closed
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
}
