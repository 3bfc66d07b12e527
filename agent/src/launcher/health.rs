//! Health checks, run by the agent that runs the task: TCP (connect), HTTP (`GET`, 2xx or 3xx
//! is healthy) and COMMAND (exit status 0, in the task's network namespace). Each check of
//! each task is a loop that reports every result to the launcher, which keeps the counts and
//! decides (see [`Tracker`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::app::{CheckKind, HealthCheck};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub task_id: String,
    pub check: usize,
    /// `Err` says why it failed.
    pub result: Result<(), String>,
}

/// Where a task's checks reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub task_id: String,
    pub ip: IpAddr,
    /// The task's ports, by index (host ports on the host network).
    pub ports: Vec<u16>,
    pub env: BTreeMap<String, String>,
    /// How COMMAND checks are confined: as the task itself (`None` only in unit tests).
    pub confined: Option<Confined>,
}

/// What a COMMAND check needs to run as its task runs: the task's record, the tasks' root
/// and its user.
#[derive(Debug, Clone)]
pub struct Confined {
    pub record: super::process::Record,
    pub root: std::path::PathBuf,
    pub run_as: super::confine::RunAs,
    /// A container task's checks run inside its container (`runc exec`): the runtime and
    /// runc's state directory.
    pub container: Option<(super::container::Runtime, std::path::PathBuf)>,
}

/// Runs `check` against `target` every interval, sending each outcome, until the receiver is
/// gone or the task is aborted.
pub async fn run(index: usize, check: HealthCheck, target: Target, out: mpsc::Sender<Outcome>) {
    let interval = Duration::from_secs(u64::from(check.interval_secs));
    let timeout = Duration::from_secs(u64::from(check.timeout_secs));
    loop {
        let result = match tokio::time::timeout(timeout, once(&check.kind, &target)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Failed::Task(why))) => Err(why),
            // This node, not the task, is short of something: no verdict this round.
            Ok(Err(Failed::Local(why))) => {
                tracing::warn!(task = %target.task_id, check = index, reason = %why,
                               "health check could not run; not counted against the task");
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(_) => Err(format!("no answer within {}s", check.timeout_secs)),
        };
        let outcome = Outcome {
            task_id: target.task_id.clone(),
            check: index,
            result,
        };
        if out.send(outcome).await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs a readiness check until the task answers one of its ready codes; returns then.
pub async fn until_ready(check: crate::app::ReadinessCheck, target: Target) {
    let interval = Duration::from_secs(u64::from(check.interval_secs));
    let timeout = Duration::from_secs(u64::from(check.timeout_secs));
    loop {
        if let Some(port) = target.ports.get(check.port_index) {
            let addr = SocketAddr::new(target.ip, *port);
            match tokio::time::timeout(timeout, http_status(addr, &check.path, check.tls)).await {
                Ok(Ok(code)) if check.ready_codes.contains(&code) => return,
                Ok(Ok(code)) => tracing::debug!(task = %target.task_id, code, "not ready yet"),
                Ok(Err(why)) => tracing::debug!(task = %target.task_id, %why, "not ready yet"),
                Err(_) => tracing::debug!(task = %target.task_id, "readiness check timed out"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Why a check did not pass.
#[derive(Debug, PartialEq, Eq)]
enum Failed {
    /// The task failed it.
    Task(String),
    /// This node could not run it (out of file descriptors, memory, buffers).
    Local(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Task(why) | Failed::Local(why) => f.write_str(why),
        }
    }
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Failed::Task(why)
    }
}

/// Classifies an I/O error of the check itself: the node's own shortage, or the task's.
fn failed(e: &std::io::Error, what: String) -> Failed {
    let local = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    let why = format!("{what}: {e}");
    if local {
        Failed::Local(why)
    } else {
        Failed::Task(why)
    }
}

async fn once(kind: &CheckKind, t: &Target) -> Result<(), Failed> {
    let port = |i: usize, fixed: Option<u16>| match fixed {
        Some(p) => Ok(SocketAddr::new(t.ip, p)),
        None => t
            .ports
            .get(i)
            .map(|p| SocketAddr::new(t.ip, *p))
            .ok_or_else(|| Failed::Task(format!("the task has no port {i}"))),
    };
    match kind {
        CheckKind::Tcp {
            port_index,
            port: fixed,
        } => {
            let addr = port(*port_index, *fixed)?;
            TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| failed(&e, format!("connect to {addr}")))
        }
        CheckKind::Http {
            port_index,
            port: fixed,
            path,
            tls,
        } => http_get(port(*port_index, *fixed)?, path, *tls).await,
        CheckKind::Command { command } => {
            let argv = super::process::argv(&crate::app::Command::Shell(command.clone()));
            let mut cmd = match t.confined.as_ref().and_then(|c| c.container.as_ref()) {
                // The container's own environment and user, in its namespaces.
                Some((runtime, state)) => runtime.exec_command(state, &t.task_id, &argv),
                None => {
                    let mut cmd = tokio::process::Command::new(&argv[0]);
                    if let Some(c) = &t.confined {
                        super::process::confine(&mut cmd, &c.record, &c.root, c.run_as.clone())
                            .map_err(|e| format!("confining the command: {e}"))?;
                    }
                    cmd.args(&argv[1..]).env_clear().envs(&t.env);
                    cmd
                }
            };
            let status = cmd
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| failed(&e, "running the command".into()))?;
            if status.success() {
                Ok(())
            } else {
                Err(Failed::Task(format!("the command ended with {status}")))
            }
        }
    }
}

/// A minimal HTTP/1.0 GET: only the status line matters.
async fn http_get(addr: SocketAddr, path: &str, tls: bool) -> Result<(), Failed> {
    match http_status(addr, path, tls).await? {
        c if (200..400).contains(&c) => Ok(()),
        c => Err(format!("GET {path} on {addr} answered {c}").into()),
    }
}

/// The status code of `GET path` on `addr`.
async fn http_status(addr: SocketAddr, path: &str, tls: bool) -> Result<u16, Failed> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| failed(&e, format!("connect to {addr}")))?;
    if !tls {
        return http_exchange(stream, addr, path).await;
    }
    let connector = tokio_rustls::TlsConnector::from(unverified_tls());
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    http_exchange(stream, addr, path).await
}

async fn http_exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, Failed> {
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: dcnet-health\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut head[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(failed(&e, format!("reading from {addr}"))),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let code: Option<u16> = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    code.ok_or_else(|| format!("{addr} did not answer HTTP: {:?}", line.trim()).into())
}

/// TLS for HTTPS health checks as Marathon does them: the task's certificate is not
/// verified (a task's own, often self-signed, certificate; the check asks whether it
/// answers, and runs on the task's node), but the handshake's signatures are.
fn unverified_tls() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(
                            provider,
                        )))
                        .with_no_client_auth()
                });
            // The ring provider supports the default versions; should it not, checks fail
            // with a handshake error rather than the agent stopping.
            std::sync::Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }))
        })
        .clone()
}

/// Accepts any server certificate; verifies the handshake's signatures with the provider.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the checks of one task add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    checks: Vec<HealthCheck>,
    /// Per check: last result (None before the first), consecutive failures.
    state: Vec<(Option<bool>, u32)>,
    started_ms: u64,
}

/// What the launcher does after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Too many consecutive failures: kill the task, with this message.
    Kill(String),
}

impl Tracker {
    pub fn new(checks: Vec<HealthCheck>, started_ms: u64) -> Self {
        let state = vec![(None, 0); checks.len()];
        Self {
            checks,
            state,
            started_ms,
        }
    }

    /// `None` without checks; otherwise healthy only when every check's last result passed.
    pub fn healthy(&self) -> Option<bool> {
        (!self.checks.is_empty()).then(|| self.state.iter().all(|(last, _)| *last == Some(true)))
    }

    /// Whether some check has no result yet (before its first pass, failures inside the
    /// grace period leave none).
    pub fn pending(&self) -> bool {
        self.state.iter().any(|(last, _)| last.is_none())
    }

    /// Takes one outcome at `now_ms`. Failures in the grace period before a first success
    /// do not count, as in Marathon.
    pub fn record(&mut self, check: usize, result: &Result<(), String>, now_ms: u64) -> Verdict {
        let (Some(spec), Some(state)) = (self.checks.get(check), self.state.get_mut(check)) else {
            return Verdict::Keep;
        };
        match result {
            Ok(()) => *state = (Some(true), 0),
            Err(why) => {
                let in_grace = state.0.is_none()
                    && now_ms.saturating_sub(self.started_ms)
                        < u64::from(spec.grace_period_secs) * 1000;
                if in_grace {
                    return Verdict::Keep;
                }
                state.0 = Some(false);
                state.1 += 1;
                if spec.max_consecutive_failures > 0 && state.1 >= spec.max_consecutive_failures {
                    return Verdict::Kill(format!(
                        "health check {check} failed {} times in a row: {why}",
                        state.1
                    ));
                }
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(grace: u32, max: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp {
                port_index: 0,
                port: None,
            },
            grace_period_secs: grace,
            interval_secs: 1,
            timeout_secs: 1,
            max_consecutive_failures: max,
        }
    }

    #[test]
    fn grace_then_failures_then_kill() {
        let mut t = Tracker::new(vec![check(10, 3)], 0);
        let bad = Err("refused".to_owned());
        assert_eq!(t.healthy(), Some(false), "unhealthy until a first pass");
        assert!(t.pending(), "no result yet");
        assert_eq!(t.record(0, &bad, 5_000), Verdict::Keep);
        assert_eq!(
            t.state[0],
            (None, 0),
            "failures in the grace period do not count"
        );
        assert_eq!(t.record(0, &Ok(()), 6_000), Verdict::Keep);
        assert_eq!(t.healthy(), Some(true));
        // After a first success the grace period is over.
        assert_eq!(t.record(0, &bad, 7_000), Verdict::Keep);
        assert_eq!(t.healthy(), Some(false));
        assert_eq!(t.record(0, &bad, 8_000), Verdict::Keep);
        match t.record(0, &bad, 9_000) {
            Verdict::Kill(m) => assert!(m.contains("3 times") && m.contains("refused"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(Tracker::new(vec![], 0).healthy(), None);
    }

    #[test]
    fn zero_max_failures_never_kills() {
        let mut t = Tracker::new(vec![check(0, 0)], 0);
        for i in 0..10 {
            assert_eq!(t.record(0, &Err("x".into()), i), Verdict::Keep);
        }
    }

    #[tokio::test]
    async fn https_checks_take_any_certificate_and_read_the_status() {
        // A task's own certificate, from a CA the checker has never heard of.
        let dir = tempfile::tempdir().unwrap();
        let pki = dcnet_auth::PkiDir::new(dir.path());
        pki.init("elsewhere").unwrap();
        let cert = pki.issue_server(&["task".into()], &[]).unwrap();
        let config = dcnet_auth::tls::server_config(&cert.chain_pem, &cert.key_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let status = if buf[..n].starts_with(b"GET /bad") {
                    500
                } else {
                    204
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status} X\r\n\r\n").as_bytes())
                    .await;
                let _ = s.shutdown().await;
            }
        });
        assert_eq!(http_get(addr, "/ok", true).await, Ok(()));
        let err = http_get(addr, "/bad", true).await.unwrap_err();
        assert!(format!("{err:?}").contains("answered 500"), "{err:?}");
        // Plain HTTP to a TLS port is not healthy.
        assert!(http_get(addr, "/ok", false).await.is_err());
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let status = if buf[..n].starts_with(b"GET /bad") {
                    503
                } else {
                    200
                };
                let _ = s
                    .write_all(format!("HTTP/1.0 {status} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let target = Target {
            task_id: "t".into(),
            ip: "127.0.0.1".parse().unwrap(),
            ports: vec![port],
            env: BTreeMap::new(),
            confined: None,
        };
        assert_eq!(
            once(
                &CheckKind::Tcp {
                    port_index: 0,
                    port: None
                },
                &target
            )
            .await,
            Ok(())
        );
        // A fixed port is checked whatever the task's ports are.
        let no_ports = Target {
            ports: vec![],
            ..target.clone()
        };
        assert_eq!(
            once(
                &CheckKind::Tcp {
                    port_index: 0,
                    port: Some(port)
                },
                &no_ports
            )
            .await,
            Ok(())
        );
        let http = |path: &str| CheckKind::Http {
            port_index: 0,
            port: None,
            tls: false,
            path: path.into(),
        };
        assert_eq!(once(&http("/"), &target).await, Ok(()));
        let err = once(&http("/bad"), &target).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        let err = once(
            &CheckKind::Tcp {
                port_index: 1,
                port: None,
            },
            &target,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no port 1"), "{err}");
        let cmd = |c: &str| CheckKind::Command { command: c.into() };
        let mut env_target = target.clone();
        env_target.env.insert("PATH".into(), "/usr/bin:/bin".into());
        assert_eq!(once(&cmd("true"), &env_target).await, Ok(()));
        assert!(
            once(&cmd("exit 3"), &env_target)
                .await
                .unwrap_err()
                .to_string()
                .contains("3")
        );
    }

    #[test]
    fn a_node_short_of_descriptors_is_not_the_tasks_failure() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(matches!(
            failed(&emfile, "connect".into()),
            Failed::Local(_)
        ));
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(matches!(
            failed(&refused, "connect".into()),
            Failed::Task(_)
        ));
    }
}
