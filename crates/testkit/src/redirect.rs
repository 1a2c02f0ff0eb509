//! A small HTTP/1.1 proxy on 127.0.0.1 that forwards requests to a real server (OpenBao, the
//! OVH simulator) except those whose path matches a rule, which it answers itself: with a
//! redirect to another origin, or with a canned answer (extreme numbers); and that other
//! origin, a listener that records every byte it receives. Used to prove that no carpd client
//! follows a redirect (the recorder must stay empty) and that no server number panics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The other origin: records everything any client sends it.
pub struct Recorder {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    rec.lock().unwrap().push(buf[..n].to_vec());
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                });
            }
        });
        Recorder {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection's first bytes, as text.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy: requests whose path matches the rule are answered by it (a redirect, a canned
/// answer); the others are forwarded to `upstream`.
pub struct Redirector {
    pub addr: SocketAddr,
    redirected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    pub async fn start(
        upstream: SocketAddr,
        redirect_path: &str,
        status: u16,
        to: &str,
    ) -> Redirector {
        let to = to.to_string();
        Redirector::answering(upstream, redirect_path, move |path| {
            format!("HTTP/1.1 {status} Moved\r\nlocation: {to}{path}\r\ncontent-length: 0\r\n\r\n")
        })
        .await
    }

    /// Requests whose path contains `path` get a 200 with this JSON body.
    pub async fn json(upstream: SocketAddr, path: &str, body: &str) -> Redirector {
        let body = body.to_string();
        Redirector::answering(upstream, path, move |_| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .await
    }

    /// Requests whose path contains `rule_path` get `answer(path)`, a whole HTTP answer.
    pub async fn answering(
        upstream: SocketAddr,
        rule_path: &str,
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Redirector {
        let answer = Arc::new(answer);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let redirected: Arc<Mutex<Vec<String>>> = Arc::default();
        let red = redirected.clone();
        let rule = rule_path.to_string();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (red, rule, answer) = (red.clone(), rule.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = serve(s, upstream, &rule, &*answer, &red).await;
                });
            }
        });
        Redirector {
            addr,
            redirected,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The paths answered by the rule (not forwarded).
    pub fn redirected(&self) -> Vec<String> {
        self.redirected.lock().unwrap().clone()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and Content-Length body); `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if buf.len() >= total {
                let req: Vec<u8> = buf.drain(..total).collect();
                return Some(req);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut s: TcpStream,
    upstream: SocketAddr,
    rule: &str,
    answer: &(dyn Fn(&str) -> String + Send + Sync),
    redirected: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let line_end = req.iter().position(|&b| b == b'\r').unwrap_or(req.len());
        let line = String::from_utf8_lossy(&req[..line_end]).into_owned();
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        if path.contains(rule) {
            redirected.lock().unwrap().push(path.clone());
            s.write_all(answer(&path).as_bytes()).await?;
            continue;
        }
        // Forward on a fresh connection that the upstream closes after its answer, and
        // close ours too: no keep-alive bookkeeping in a test proxy.
        let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&req[..head_end]);
        let mut fwd: String = head
            .split("\r\n")
            .filter(|l| !l.to_lowercase().starts_with("connection:"))
            .collect::<Vec<_>>()
            .join("\r\n");
        fwd.push_str("\r\nconnection: close\r\n\r\n");
        let mut up = TcpStream::connect(upstream).await?;
        up.write_all(fwd.as_bytes()).await?;
        up.write_all(&req[head_end + 4..]).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        s.write_all(&answer).await?;
        return Ok(());
    }
    Ok(())
}

/// The OVH simulator's host and port, for a proxy in front of it.
pub fn sim_addr(sim: &crate::ovh::OvhSim) -> SocketAddr {
    sim.base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/1.0")
        .parse()
        .unwrap()
}

/// An OVH client for the API at `base` (a proxy), with short timeouts and retries so that a
/// test that goes wrong fails in seconds. A custom endpoint names its OAuth2 token URL
/// (carpd never guesses one).
pub fn ovh_client(base: &str, creds: carpd::ovh::Credentials) -> carpd::ovh::Client {
    use std::time::Duration;

    use carpd::ovh::policy::RetryPolicy;
    use carpd::ovh::{Client, ClientOptions, Endpoint, FixedCredentials};

    let opts = ClientOptions {
        timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        request_deadline: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let ep = Endpoint::parse(&format!("{base}/1.0"))
        .unwrap()
        .with_token_url(format!("{base}/auth/oauth2/token"));
    Client::new(ep, Arc::new(FixedCredentials(creds)), opts).unwrap()
}
