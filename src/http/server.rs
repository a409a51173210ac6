//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 on them (over TLS when
//! configured), bounds how long a client may take to finish the TLS handshake and to send its
//! headers, and shuts down gracefully (in-flight requests finish).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connections served at once; the next waits in the kernel's backlog until one closes.
const CONNECTIONS_MAX: usize = 4096;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` (HTTPS when `tls` is given) until `stop` completes, then
/// waits up to `finish_within` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    request_timeout: Duration,
    finish_within: Duration,
    stop: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(request_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (socket, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = socket.set_nodelay(true);
        let (builder, router, watcher, acceptor) =
            (builder.clone(), router.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(&builder, watcher, socket, router).await,
                Some(acceptor) => {
                    match tokio::time::timeout(request_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => serve_connection(&builder, watcher, stream, router).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake took longer than the request timeout"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(finish_within, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the shutdown timeout were cut off");
    }
}

async fn serve_connection(
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    router: Router,
) {
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
