//! The HTTP serving loop shared by every listener (OTLP gRPC and HTTP, health, metrics):
//! accept until told to stop, then let open connections finish gracefully.

use std::future::Future;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Signals shutdown to every listener and task: `true` once stopping.
pub type ShutdownRx = watch::Receiver<bool>;

/// Resolves when shutdown has been signalled (or the sender is gone).
pub async fn stopped(rx: &mut ShutdownRx) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Binds a listener with a message that names the component and the address.
pub async fn bind(addr: &str, component: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{component}: cannot listen on {addr}: {e}"))
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC uses) on `listener` until shutdown.
pub fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    mut shutdown: ShutdownRx,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let mut conn_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let fut = handler(req, peer);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stopped(&mut conn_shutdown) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    })
}
