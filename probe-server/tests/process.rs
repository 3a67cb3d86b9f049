//! The probe-server binary as the kubelet meets it: a bad configuration is
//! refused at start (exit 64, the field named), and on SIGTERM readiness
//! turns false at once while the process keeps answering through its drain.
//! Everything on loopback.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_probe-server");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A workload on loopback that answers 200 to anything.
fn workload() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

/// The status code of GET `path` on loopback `port`, if anything answers.
fn status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head).ok()?;
    head.get(9..12)?.parse().ok()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_bad_configuration_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"workload": {"name": "web", "http": "http://127.0.0.1:8000/", "failure_threshold": 0}}"#,
    )
    .unwrap();
    let out = Command::new(BIN).arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configuration field workload.failure_threshold"), "{stderr}");
    assert!(stderr.starts_with("probe-server: "), "one line naming the program: {stderr}");
}

#[test]
fn sigterm_turns_readiness_off_at_once_and_the_process_drains() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let (probes, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"{{"listen": "127.0.0.1:{probes}", "admin_listen": "127.0.0.1:{admin}", "period": "200ms", "drain": "2s",
                "workload": {{"name": "web", "http": "http://127.0.0.1:{}/", "timeout": "150ms"}}}}"#,
            workload()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(10), || status(probes, "/readyz") == Some(200));
    if !ready {
        let _ = child.kill();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        panic!("never ready; stderr:\n{err}");
    }
    assert_eq!(status(probes, "/livez"), Some(200));
    assert_eq!(status(admin, "/live"), Some(200));

    let sent = Instant::now();
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    assert!(
        wait_until(Duration::from_millis(500), || status(probes, "/readyz") == Some(503)),
        "readiness still true after SIGTERM"
    );
    assert_eq!(status(probes, "/livez"), Some(200), "alive while draining");
    assert!(child.try_wait().unwrap().is_none(), "exited before its drain");
    let exited = wait_until(Duration::from_secs(6), || child.try_wait().unwrap().is_some());
    assert!(exited, "still running long after the drain");
    assert!(sent.elapsed() >= Duration::from_secs(2), "exited before the 2 s drain ended");
    assert!(child.wait().unwrap().success());
}
