use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::config::Target;

/// Runs checks.
///
/// Names resolve through the C library (`getaddrinfo`), exactly as any
/// other program in the pod resolves them: /etc/hosts, then the pod's
/// resolv.conf with its search domains and `ndots`. HTTP checks speak just
/// enough HTTP/1.1 to read a status line. A health check needs nothing
/// more, and a DNS or HTTP client library would cost every pod megabytes.
#[derive(Clone, Default)]
pub struct Checker {
    /// Lookups still running: `getaddrinfo` cannot be cancelled, so a name
    /// whose last lookup has not returned is not looked up again (a DNS
    /// outage must not pile up blocked threads).
    pending: Arc<Mutex<HashSet<String>>>,
}

/// `http://host[:port]/path`, split (the config has validated the scheme).
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().map_err(|_| format!("{url:?}: bad port {port:?}"))?)
        }
        _ => (authority, 80),
    };
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port, path.to_owned()))
}

impl Checker {
    pub fn new() -> Self {
        Checker::default()
    }

    /// One run of one check. The error says what failed, for the probe body.
    pub async fn run(&self, target: &Target, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.run_unbounded(target)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
        }
    }

    async fn run_unbounded(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Http(url) => self.http_get(url).await,
            Target::Tcp(address) => {
                let (host, port) = address.rsplit_once(':').expect("validated host:port");
                let port: u16 = port.parse().expect("validated port");
                let ip = self.address_of(host).await?;
                TcpStream::connect((ip, port))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("connect {address} ({ip}): {e}"))
            }
            Target::Dns(name) => self.resolve(name).await.map(|_| ()),
        }
    }

    /// Healthy on any 2xx or 3xx status.
    async fn http_get(&self, url: &str) -> Result<(), String> {
        let (host, port, path) = split_url(url)?;
        let ip = self.address_of(&host).await?;
        let mut stream = TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("GET {url}: connect {ip}:{port}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: probe-server\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("GET {url}: {e}"))?;
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line).await.map_err(|e| format!("GET {url}: {e}"))?;
        let code: u16 = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("GET {url}: not an HTTP answer: {:?}", status_line.trim()))?;
        match code {
            200..=399 => Ok(()),
            _ => Err(format!("GET {url} answered {}", status_line.trim().get(9..).unwrap_or(&status_line))),
        }
    }

    async fn address_of(&self, host: &str) -> Result<IpAddr, String> {
        match host.parse() {
            Ok(ip) => Ok(ip),
            Err(_) => self.resolve(host).await,
        }
    }

    async fn resolve(&self, name: &str) -> Result<IpAddr, String> {
        if !self.pending.lock().expect("not poisoned").insert(name.to_owned()) {
            return Err(format!("resolve {name}: the previous lookup has not returned yet"));
        }
        let pending = self.pending.clone();
        let owned = name.to_owned();
        let lookup = tokio::task::spawn_blocking(move || {
            let result = std::net::ToSocketAddrs::to_socket_addrs(&(owned.as_str(), 0));
            pending.lock().expect("not poisoned").remove(&owned);
            result.map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
        });
        let addresses = lookup
            .await
            .map_err(|e| format!("resolve {name}: {e}"))?
            .map_err(|e| format!("resolve {name}: {e}"))?;
        addresses.into_iter().next().ok_or_else(|| format!("resolve {name}: no addresses"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
        net::TcpListener,
    };

    /// A one-shot HTTP server on loopback answering `status`.
    async fn serve(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Read the request head first: answering before it arrives is not HTTP.
                let mut socket = BufReader::new(socket);
                let mut line = String::new();
                while socket.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.get_mut().write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/")
    }

    fn checker() -> Checker {
        Checker::new()
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(split_url("http://127.0.0.1:8000/").unwrap(), ("127.0.0.1".into(), 8000, "/".into()));
        assert_eq!(
            split_url("http://web.default.svc/healthz?x=1").unwrap(),
            ("web.default.svc".into(), 80, "/healthz?x=1".into())
        );
        assert_eq!(split_url("http://[::1]:9000").unwrap(), ("::1".into(), 9000, "/".into()));
        assert!(split_url("http://h:port/").is_err());
    }

    #[tokio::test]
    async fn http_checks_follow_the_status_code() {
        let c = checker();
        assert_eq!(c.run(&Target::Http(serve("200 OK").await), Duration::from_secs(1)).await, Ok(()));
        let err = c
            .run(&Target::Http(serve("500 Internal Server Error").await), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("500"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_hits_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        let _keep = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let started = std::time::Instant::now();
        let err = checker()
            .run(&Target::Http(format!("http://{addr}/")), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("no answer within 200ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn tcp_checks_connect_or_explain() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert_eq!(checker().run(&Target::Tcp(open), Duration::from_secs(1)).await, Ok(()));
        drop(listener);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let err = checker().run(&Target::Tcp(closed.clone()), Duration::from_secs(1)).await.unwrap_err();
        assert!(err.contains(&closed), "{err}");
    }

    #[tokio::test]
    async fn dns_checks_resolve_local_names() {
        // /etc/hosts comes first; no query leaves the machine.
        assert_eq!(checker().run(&Target::Dns("localhost".into()), Duration::from_secs(2)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_name_is_not_looked_up_twice_at_once() {
        let checker = checker();
        checker.pending.lock().unwrap().insert("web.example".into());
        let err = checker.run(&Target::Dns("web.example".into()), Duration::from_secs(1)).await.unwrap_err();
        assert!(err.contains("previous lookup has not returned"), "{err}");
    }
}
