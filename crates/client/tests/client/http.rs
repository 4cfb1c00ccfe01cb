//! A minimal HTTP/1.1 file server standing in for a bucket's signed URLs: it serves files
//! under a directory, honours `Range: bytes=N-` when told to, can fail its first requests
//! with 503, and records each request's path and range.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// `(path, range header)` of each request.
    pub requests: Mutex<Vec<(String, Option<String>)>>,
}

/// How the server behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Answer ranged requests with 206; otherwise ignore Range and send the whole file.
    pub honor_range: bool,
    /// Answer this many requests with 503 first.
    pub fail_first: usize,
}

/// Serves `root` on 127.0.0.1:0 until the test's runtime ends.
pub async fn serve_files(root: PathBuf, behaviour: Behaviour) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let failures_left = Arc::new(AtomicUsize::new(behaviour.fail_first));
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let seen = seen_by_server.clone();
            let failures_left = failures_left.clone();
            let root = root.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let range = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("range")
                        .then(|| value.trim().to_owned())
                });
                seen.requests
                    .lock()
                    .expect("lock")
                    .push((path.clone(), range.clone()));

                let failing = failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let response = if failing {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                } else {
                    let file =
                        root.join(path.trim_start_matches('/').split('?').next().unwrap_or(""));
                    match std::fs::read(&file) {
                        Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                        Ok(body) => {
                            let start = range
                                .as_deref()
                                .and_then(|r| r.strip_prefix("bytes="))
                                .and_then(|r| r.strip_suffix('-'))
                                .and_then(|n| n.parse::<usize>().ok())
                                .filter(|_| behaviour.honor_range);
                            let mut out = match start {
                                Some(start) => format!(
                                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len() - 1,
                                    body.len(),
                                    body.len() - start
                                )
                                .into_bytes(),
                                None => format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .into_bytes(),
                            };
                            out.extend_from_slice(&body[start.unwrap_or(0)..]);
                            out
                        }
                    }
                };
                let _ = conn.write_all(&response).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, seen)
}
