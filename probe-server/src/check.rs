use std::time::Duration;

use hickory_resolver::{TokioResolver, name_server::TokioConnectionProvider};
use tokio::net::TcpStream;

use crate::config::Target;

/// Runs checks; one HTTP client and one resolver, shared.
#[derive(Clone)]
pub struct Checker {
    http: reqwest::Client,
    resolver: TokioResolver,
}

impl Checker {
    /// Uses the pod's /etc/resolv.conf (search domains included), through
    /// hickory: no libc resolver, so the static binary resolves the same way.
    pub fn from_system() -> Result<Self, String> {
        let resolver = TokioResolver::builder(TokioConnectionProvider::default())
            .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
            .build();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Checker { http, resolver })
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
            Target::Http(url) => {
                let response = self.http.get(url).send().await.map_err(|e| describe(&e))?;
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    Ok(())
                } else {
                    Err(format!("GET {url} answered {status}"))
                }
            }
            Target::Tcp(address) => {
                let (host, port) = address.rsplit_once(':').expect("validated host:port");
                let port: u16 = port.parse().expect("validated port");
                let ip = match host.parse() {
                    Ok(ip) => ip,
                    Err(_) => self.resolve(host).await?,
                };
                TcpStream::connect((ip, port)).await.map(|_| ()).map_err(|e| format!("connect {address} ({ip}): {e}"))
            }
            Target::Dns(name) => self.resolve(name).await.map(|_| ()),
        }
    }

    /// A checker whose only nameserver is `server` (tests use a silent one on loopback).
    #[cfg(test)]
    fn with_nameserver(server: std::net::SocketAddr) -> Self {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(server, hickory_resolver::proto::xfer::Protocol::Udp));
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).with_options(opts).build();
        Checker { http: reqwest::Client::new(), resolver }
    }

    async fn resolve(&self, name: &str) -> Result<std::net::IpAddr, String> {
        let answer = self.resolver.lookup_ip(name).await.map_err(|e| format!("resolve {name}: {e}"))?;
        answer.iter().next().ok_or_else(|| format!("resolve {name}: no addresses"))
    }
}

/// reqwest's Display hides the cause ("error sending request"); walk the chain.
fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
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
        Checker::from_system().unwrap()
    }

    #[tokio::test]
    async fn http_checks_follow_the_status_code() {
        let c = checker();
        assert_eq!(c.run(&Target::Http(serve("200 OK").await), Duration::from_secs(1)).await, Ok(()));
        let err = c.run(&Target::Http(serve("500 Internal Server Error").await), Duration::from_secs(1)).await.unwrap_err();
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
        let err = checker().run(&Target::Http(format!("http://{addr}/")), Duration::from_millis(200)).await.unwrap_err();
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
        // /etc/hosts is part of the system configuration hickory reads; no query leaves the machine.
        assert_eq!(checker().run(&Target::Dns("localhost".into()), Duration::from_secs(2)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_dns_server_that_never_answers_fails_the_check() {
        // A nameserver on loopback that swallows every query.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let checker = Checker::with_nameserver(silent.local_addr().unwrap());
        let err = checker.run(&Target::Dns("web.example".into()), Duration::from_millis(300)).await.unwrap_err();
        assert!(err.contains("no answer within 300ms") || err.contains("web.example"), "{err}");
    }
}
