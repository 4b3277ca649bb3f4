//! The daemons' control socket: a Unix stream socket taking one JSON
//! request line and answering one JSON line, for the CLI verbs
//! (`status`, `leases`, `down`, ...) to ask the running daemon.
//!
//! The socket is served by a task of its own ([`serve`]): each connection
//! gets its own task, which reads the request (giving up on a client that
//! says nothing), hands it to the daemon with a reply channel, and writes
//! the answer; the daemon's loop never waits on a slow client.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Binds the socket at `path` (replacing a stale one from a crashed run),
/// readable by root only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// How long a client of the control socket may take to send its request
/// or to take the answer.
const PATIENCE: Duration = Duration::from_secs(2);

/// A request from the control socket and where its answer goes.
pub struct Incoming<Q, R> {
    /// The request.
    pub request: Q,
    /// The answer.
    pub reply: tokio::sync::oneshot::Sender<R>,
}

/// Serves `listener` on tasks of its own: requests arrive on the returned
/// channel; each connection waits for its answer without holding up the
/// others or the daemon. Requests that do not parse are answered with
/// `bad_request(error)`.
pub fn serve<Q, R>(
    listener: UnixListener,
    bad_request: fn(String) -> R,
) -> tokio::sync::mpsc::Receiver<Incoming<Q, R>>
where
    Q: DeserializeOwned + Send + 'static,
    R: Serialize + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let response = match read_request::<Q>(&mut stream).await {
                    Ok(request) => {
                        let (reply, answer) = tokio::sync::oneshot::channel();
                        if tx.send(Incoming { request, reply }).await.is_err() {
                            return;
                        }
                        match answer.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => bad_request(e.to_string()),
                };
                let _ = write_response(&mut stream, &response).await;
            });
        }
    });
    rx
}

fn too_slow(_: tokio::time::error::Elapsed) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "control connection too slow")
}

/// Reads one request from a connection (one line, up to 64 KiB).
pub async fn read_request<Q: DeserializeOwned>(stream: &mut UnixStream) -> io::Result<Q> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(64 * 1024);
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .map_err(too_slow)??;
    serde_json::from_str(&line).map_err(io::Error::other)
}

/// Writes one response to a connection.
pub async fn write_response<R: Serialize>(stream: &mut UnixStream, response: &R) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    tokio::time::timeout(PATIENCE, stream.write_all(&bytes))
        .await
        .map_err(too_slow)?
}

/// Sends a request to the daemon at `path` and waits for its answer.
pub async fn ask<Q: Serialize, R: DeserializeOwned>(path: &Path, request: &Q) -> io::Result<R> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the daemon at {}: {e} (is it running?)",
                path.display()
            ),
        )
    })?;
    let mut bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never sends its request is given up, so the
    /// daemon's loop goes on.
    #[tokio::test]
    async fn a_silent_connection_is_given_up() {
        let (mut server, _client) = UnixStream::pair().unwrap();
        let e = read_request::<serde_json::Value>(&mut server)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
