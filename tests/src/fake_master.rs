//! A stand-in for a Mesos master's `/master/state`, served by axum inside a test namespace.
//! Tests change the body it serves (another state, or garbage) and count the requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use dcnet_overlay::Netns;

#[derive(Default)]
struct Shared {
    /// Shared with the responses in flight: a large state is not copied per request.
    body: Mutex<Bytes>,
    requests: AtomicUsize,
    last_request: Mutex<Option<Instant>>,
}

/// A running fake master; stops when dropped.
pub struct FakeMaster {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeMaster {
    /// Serves `body` at `http://<addr>/master/state` inside `netns`.
    pub fn start(netns: &Netns, addr: SocketAddr, body: String) -> Result<Self> {
        let listener = netns
            .run(|| std::net::TcpListener::bind(addr))?
            .with_context(|| format!("binding the fake master on {addr}"))?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            body: Mutex::new(Bytes::from(body)),
            requests: AtomicUsize::new(0),
            last_request: Mutex::new(None),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new()
                    .route("/master/state", get(serve))
                    .with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Serves `body` from now on.
    pub fn set_body(&self, body: String) {
        *self.shared.body.lock().expect("not poisoned") = Bytes::from(body);
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// When the latest request arrived, if any has.
    pub fn last_request_at(&self) -> Option<Instant> {
        *self.shared.last_request.lock().expect("not poisoned")
    }
}

async fn serve(State(shared): State<Arc<Shared>>) -> ([(&'static str, &'static str); 1], Bytes) {
    // The time first, so a reader that sees the new count sees this request's time.
    *shared.last_request.lock().expect("not poisoned") = Some(Instant::now());
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let body = shared.body.lock().expect("not poisoned").clone();
    ([("content-type", "application/json")], body)
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
