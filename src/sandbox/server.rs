//! The connection layer: a hand-written accept loop serving each connection with
//! hyper's HTTP/1.1 connection builder and the axum `Router` as the service.
//!
//! Why not `axum::serve`: its service is infallible, so every request gets *some*
//! response. The reset and commit-drop faults need a connection closed with no
//! response at all, which is what hyper does when the service returns an error.
//! The router tags such responses with [`DropConnection`]; the service below turns
//! the tag into [`ConnectionDropped`].
//!
//! Shutdown: the `graceful` token stops the accept loop and asks every connection
//! to finish its in-flight request and close; the `hard` token (fired by
//! `Sandbox::shutdown` after a grace period) drops whatever is still open.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::routes::DropConnection;

/// The service error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by sandbox fault injection")]
struct ConnectionDropped;

/// Accepts connections until `graceful` fires; each runs as a tracked task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    graceful: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            biased;
            () = graceful.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Typically EMFILE under load: back off briefly instead of
                    // spinning, and keep serving the connections we have.
                    tracing::warn!(error = %e, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Small request/response pairs on keep-alive connections: Nagle would
        // add delayed-ACK stalls to every exchange.
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(
            stream,
            router.clone(),
            graceful.clone(),
            hard.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    graceful: CancellationToken,
    hard: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move {
            let resp: Response<Body> = match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if resp.extensions().get::<DropConnection>().is_some() {
                Err(ConnectionDropped)
            } else {
                Ok::<_, ConnectionDropped>(resp)
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper's default, spelled out because it doubles as an idle keep-alive
        // timeout: like real servers, the sandbox closes a connection idle for
        // 30 s, so clients meet "connection closed before message completed"
        // on a stale pooled connection here too.
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                () = hard.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        // Includes our own ConnectionDropped and clients hanging up mid-request.
        tracing::debug!(error = %e, "sandbox: connection ended with an error");
    }
}
