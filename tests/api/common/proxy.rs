//! A TCP proxy between roomd and PostgreSQL that a drill can cut (every
//! connection closed, new ones refused: the server is gone), cut the next
//! request (the connection it came on closes unanswered), slow down
//! (each chunk held back: a database under strain) or freeze (open
//! connections stop relaying but stay open, new ones work: a hung
//! connection, as a broken NAT or a stuck server backend leaves it), or
//! freeze any connection that carries given bytes (a hung connection under
//! one query, and only that one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where PostgreSQL listens, from the test database's URL.
pub fn postgres_addr(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .expect("PostgreSQL on an IP address")
}

/// The bytes that freeze a connection, once set.
type FreezeOn = Arc<std::sync::Mutex<Option<Vec<u8>>>>;

pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    cut_next: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    cuts: watch::Sender<u64>,
    freezes: watch::Sender<u64>,
    freeze_on: FreezeOn,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let cut_next = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (cuts, _) = watch::channel(0);
        let (freezes, _) = watch::channel(0);
        let freeze_on = FreezeOn::default();
        let (d, next, delay, c, f, on) = (
            down.clone(),
            cut_next.clone(),
            delay_ms.clone(),
            cuts.clone(),
            freezes.clone(),
            freeze_on.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (next, delay, cut) = (next.clone(), delay.clone(), c.subscribe());
                let mut freeze = f.subscribe();
                freeze.mark_unchanged();
                let on = on.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, next, delay, cut, freeze, on).await;
                    }
                });
            }
        });
        Self {
            port,
            down,
            cut_next,
            delay_ms,
            cuts,
            freezes,
            freeze_on,
        }
    }

    /// From now on, a connection whose client sends `bytes` (in one read)
    /// is frozen there: that request is not passed on, and nothing more.
    pub fn freeze_on(&self, bytes: &[u8]) {
        *self.freeze_on.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Every open connection stops relaying and stays open for good; new
    /// connections work.
    pub fn freeze(&self) {
        self.freezes.send_modify(|n| *n += 1);
    }

    /// The server is gone: open connections close, new ones are refused.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The next request on an open connection is not passed on: its
    /// connection closes unanswered, as a server closing an idle kept-alive
    /// connection just as the client reuses it (actix-web does after 5 s).
    pub fn cut_next(&self) {
        self.cut_next.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Holds every chunk, both ways, for `delay`.
    pub fn slow(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// `url` (a PostgreSQL URL) pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    /// [`Self::url_for`] without TLS, so that [`Self::freeze_on`] sees
    /// what the connections carry.
    pub fn clear_url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(&self.url_for(url)).unwrap();
        url.query_pairs_mut().append_pair("sslmode", "disable");
        url.to_string()
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    cut_next: Arc<AtomicBool>,
    delay: Arc<AtomicU64>,
    mut cut: watch::Receiver<u64>,
    freeze: watch::Receiver<u64>,
    freeze_on: FreezeOn,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = copy(
        cr,
        sw,
        Some((cut_next, freeze_on)),
        delay.clone(),
        freeze.clone(),
    );
    let down = copy(sr, cw, None, delay, freeze);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    // Client to server only: the next request to cut, the bytes to freeze on.
    upstream: Option<(Arc<AtomicBool>, FreezeOn)>,
    delay: Arc<AtomicU64>,
    mut freeze: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            // Frozen: both sockets stay open and nothing more is relayed.
            _ = freeze.changed() => std::future::pending().await,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some((cut_next, freeze_on)) = &upstream {
            if cut_next.swap(false, Ordering::SeqCst) {
                return;
            }
            let frozen =
                freeze_on.lock().unwrap().as_ref().is_some_and(|bytes| {
                    buf[..n].windows(bytes.len()).any(|w| w == bytes.as_slice())
                });
            if frozen {
                std::future::pending::<()>().await;
            }
        }
        let ms = delay.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
