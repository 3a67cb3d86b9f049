//! What the deployables' flood tests share (feature `testing`, for their
//! dev-dependencies only): a child process killed when dropped, a free
//! loopback port, a process's resident memory, a GET on a fresh connection,
//! and one slow client.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A spawned server, killed and reaped when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// GET `path` on a new loopback connection, as the kubelet does: the whole
/// answer (or what went wrong) and how long it took.
pub async fn get(port: u16, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer within 5 s".into(),
    };
    (answer, started.elapsed())
}

/// One slow client on `stream`, connected at `connected`: `kind` 0 sends
/// nothing, 1 half a request line for `path`, 2 a head a byte every 250 ms.
/// How long after connecting the server closed it (None: still open after
/// `limit`).
pub async fn slow_client(
    stream: TcpStream,
    connected: Instant,
    kind: usize,
    path: &str,
    limit: Duration,
) -> Option<Duration> {
    let (mut read, mut write) = stream.into_split();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Slow: {}", "a".repeat(40));
    match kind {
        0 => {}
        1 => write.write_all(&head.as_bytes()[..path.len() + 7]).await.ok()?,
        _ => {
            tokio::spawn(async move {
                for byte in head.bytes() {
                    if write.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
    }
    let mut buf = [0u8; 512];
    let closed = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return connected.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed).await.ok()
}
