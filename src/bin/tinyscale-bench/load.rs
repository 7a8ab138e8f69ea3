//! The load generator: keep-alive HTTP/1.1 connections sending GETs as fast
//! as answers come back (throughput), or one at a fixed rate (latency).
//! Every answer is checked; a fast wrong answer counts as an error.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One request: where to, what, and what a right answer looks like.
pub struct Call {
    pub addr: SocketAddr,
    /// Path and query.
    pub target: String,
    pub check: Check,
}

/// What a right answer is.
#[derive(Clone)]
pub enum Check {
    /// 200 and a body containing every one of these.
    Body(Vec<String>),
    /// 302 with a Location starting with this.
    Redirect(String),
    /// 200, SUCCESS, and exactly this many of the element (e.g. `<meeting>`).
    Count(String, usize),
}

/// What came back for one request.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Check {
    /// Whether `answer` is a right one.
    pub fn holds(&self, answer: &Answer) -> bool {
        let (status, location, body) =
            (answer.status, answer.location.as_deref(), &answer.body[..]);
        match self {
            Check::Body(parts) => {
                status == 200
                    && parts
                        .iter()
                        .all(|p| body.windows(p.len()).any(|w| w == p.as_bytes()))
            }
            Check::Redirect(prefix) => {
                status == 302 && location.is_some_and(|l| l.starts_with(prefix.as_str()))
            }
            Check::Count(element, n) => {
                let count =
                    |needle: &[u8]| body.windows(needle.len()).filter(|w| *w == needle).count();
                status == 200
                    && count(b"<returncode>SUCCESS</returncode>") == 1
                    && count(element.as_bytes()) == *n
            }
        }
    }
}

/// Splits `http://host:port/path?query` into its address and target.
pub fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let slash = rest.find('/').unwrap_or(rest.len());
    let addr = rest[..slash].parse().expect("IP:port in URL");
    let target = if slash == rest.len() {
        "/".to_string()
    } else {
        rest[slash..].to_string()
    };
    (addr, target)
}

/// Makes the `n`th request of a run.
pub type Source = Arc<dyn Fn(usize) -> Call + Send + Sync>;

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Microseconds, of the answers that were right.
    pub latencies: Vec<u32>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The q-quantile (0..1) of the latencies, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    /// Sends one call and counts it, with its latency when it was right.
    async fn timed(&mut self, conn: &mut Conn, call: &Call) {
        let sent = Instant::now();
        if conn.send(call).await {
            self.ok += 1;
            self.latencies.push(sent.elapsed().as_micros() as u32);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

struct Connection {
    sender: http1::SendRequest<Empty<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Option<Connection> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(Connection { sender })
}

/// Keep-alive connections, one per server address, as a client that talks
/// to several servers keeps them.
#[derive(Default)]
pub struct Conn(std::collections::HashMap<SocketAddr, Option<Connection>>);

impl Conn {
    /// Sends one call; whether its answer was right.
    pub async fn send(&mut self, call: &Call) -> bool {
        send(self.0.entry(call.addr).or_default(), call).await
    }

    /// Sends one call; its answer, if one came.
    pub async fn exchange(&mut self, call: &Call) -> Option<Answer> {
        exchange(self.0.entry(call.addr).or_default(), call).await
    }
}

/// The GET a call makes.
fn get_request(call: &Call) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(call.target.as_str())
        .header(hyper::header::HOST, call.addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("valid request")
}

/// Sends one call on `conn` (reconnecting if needed); whether it was right.
async fn send(conn: &mut Option<Connection>, call: &Call) -> bool {
    exchange(conn, call)
        .await
        .is_some_and(|answer| call.check.holds(&answer))
}

/// Sends one call on `conn` (reconnecting if needed); its answer, if one
/// came. A request that never left because the server had just closed the
/// connection (nginx does after `keepalive_requests`) is sent again on a new
/// one, as any HTTP client does; any other failure is no answer.
async fn exchange(conn: &mut Option<Connection>, call: &Call) -> Option<Answer> {
    let mut request = get_request(call);
    let mut response = None;
    for _ in 0..2 {
        if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            *conn = connect(call.addr).await;
        }
        let c = conn.as_mut()?;
        if c.sender.ready().await.is_err() {
            *conn = connect(call.addr).await;
            continue;
        }
        match c.sender.try_send_request(request).await {
            Ok(answer) => {
                response = Some(answer);
                break;
            }
            Err(mut e) => {
                *conn = None;
                request = e.take_message()?;
            }
        }
    }
    let response = response?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(body) = response.into_body().collect().await else {
        *conn = None;
        return None;
    };
    Some(Answer {
        status,
        location,
        body: body.to_bytes(),
    })
}

/// `concurrency` connections, each sending the next call as soon as the last
/// answer came, for `duration`.
pub async fn throughput(source: Source, concurrency: usize, duration: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (source, next) = (source.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut conn = Conn::default();
            while Instant::now() < deadline {
                let call = source(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                outcome.timed(&mut conn, &call).await;
            }
            outcome
        }));
    }
    let mut total = Outcome::default();
    for worker in workers {
        if let Ok(outcome) = worker.await {
            total.merge(outcome);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// One of the targets [`paced_together`] measures side by side.
pub enum Step {
    /// One call at a time on a keep-alive connection.
    Call(Source),
    /// A group of calls sent at once, timed until the last answer.
    FanOut(Arc<dyn Fn(usize) -> Vec<Call> + Send + Sync>),
}

/// Latency at a light, fixed load for several targets at once: at each of
/// `rate` ticks a second, one call to each target, one after another, in an
/// order that turns every tick. So every target meets the same moments of
/// the machine's noise, which two runs one after the other do not.
pub async fn paced_together(steps: &[Step], rate: f64, duration: Duration) -> Vec<Outcome> {
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = steps.iter().map(|_| Outcome::default()).collect();
    let mut conns: Vec<Conn> = steps.iter().map(|_| Conn::default()).collect();
    let mut fans: Vec<FanOut> = steps
        .iter()
        .map(|s| match s {
            Step::FanOut(calls) => FanOut::new(calls(0).len()),
            Step::Call(_) => FanOut::new(0),
        })
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        for k in 0..steps.len() {
            let i = (n + k) % steps.len();
            match &steps[i] {
                Step::Call(source) => outcomes[i].timed(&mut conns[i], &source(n)).await,
                Step::FanOut(calls) => match fans[i].round(&calls(n)).await {
                    Some(d) => {
                        outcomes[i].ok += 1;
                        outcomes[i].latencies.push((d.as_micros() as u32).max(1));
                    }
                    None => outcomes[i].errors += 1,
                },
            }
        }
        n += 1;
    }
    for outcome in &mut outcomes {
        outcome.elapsed = started.elapsed();
    }
    outcomes
}

/// Sends every call at once (one connection each, kept for the next round)
/// and waits for all: the time a fan-out over them takes.
pub struct FanOut {
    conns: Vec<Option<Connection>>,
}

impl FanOut {
    pub fn new(n: usize) -> FanOut {
        FanOut {
            conns: (0..n).map(|_| None).collect(),
        }
    }

    /// Time until the last answer; `None` if any was wrong.
    pub async fn round(&mut self, calls: &[Call]) -> Option<Duration> {
        let started = Instant::now();
        let conns = std::mem::take(&mut self.conns);
        let results = futures_join(conns.into_iter().zip(calls).map(
            |(mut conn, call)| async move {
                let ok = send(&mut conn, call).await;
                (conn, ok)
            },
        ))
        .await;
        let elapsed = started.elapsed();
        let mut all_ok = true;
        for (conn, ok) in results {
            all_ok &= ok;
            self.conns.push(conn);
        }
        all_ok.then_some(elapsed)
    }
}

/// Runs futures concurrently on this task and collects their outputs in
/// order (a tiny join_all, to stay within the agreed dependencies).
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, fut) in pending.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// How many times `element` occurs in the answer to one GET.
pub async fn count(addr: SocketAddr, target: &str, element: &str) -> usize {
    let mut conn = None;
    let call = Call {
        addr,
        target: target.to_string(),
        check: Check::Body(vec![]),
    };
    let Some(body) = fetch(&mut conn, &call).await else {
        return 0;
    };
    body.windows(element.len())
        .filter(|w| *w == element.as_bytes())
        .count()
}

async fn fetch(conn: &mut Option<Connection>, call: &Call) -> Option<Bytes> {
    if conn.is_none() {
        *conn = connect(call.addr).await;
    }
    let c = conn.as_mut()?;
    let request = get_request(call);
    let response = c.sender.send_request(request).await.ok()?;
    Some(response.into_body().collect().await.ok()?.to_bytes())
}

/// What one GET answers, in a line (status, Location, start of the body):
/// for telling what a wrong answer was.
pub async fn describe(call: &Call) -> String {
    let Some(mut c) = connect(call.addr).await else {
        return "no connection".into();
    };
    let request = get_request(call);
    let Ok(response) = c.sender.send_request(request).await else {
        return "no answer".into();
    };
    let status = response.status();
    let location = response.headers().get(hyper::header::LOCATION).cloned();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    format!(
        "{status} {location:?} {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    )
}
