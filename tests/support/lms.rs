//! A stand-in for the LMS's callback endpoint: an HTTP server on 127.0.0.1
//! that keeps every request it gets and answers each with the next status
//! of a list given in advance (then 200).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// One request the LMS got.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivered {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Seen {
    requests: Vec<Delivered>,
    answers: VecDeque<u16>,
}

pub struct Lms {
    url: String,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Lms {
    /// Answers the first requests with `answers`, in order, then 200.
    pub async fn start(answers: &[u16]) -> Lms {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen {
            requests: Vec::new(),
            answers: answers.iter().copied().collect(),
        }));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (task_seen, task_changed) = (seen.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, changed) = (task_seen.clone(), task_changed.clone());
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (seen, changed) = (seen.clone(), changed.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = {
                            let mut seen = seen.lock().unwrap();
                            seen.requests.push(Delivered {
                                method: parts.method.to_string(),
                                target: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            seen.answers.pop_front().unwrap_or(200)
                        };
                        changed.notify_waiters();
                        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Lms { url, seen, changed }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn requests(&self) -> Vec<Delivered> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// Waits until `n` requests have come (panics after the tests' patience).
    pub async fn wait_for(&self, n: usize) -> Vec<Delivered> {
        let wait = async {
            loop {
                // Registered before looking, so no request slips between.
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                notified.await;
            }
        };
        // Deliveries are tried again after 1, 2, 4… s: wait long enough.
        tokio::time::timeout(std::time::Duration::from_secs(40), wait)
            .await
            .unwrap_or_else(|_| panic!("the LMS did not get {n} request(s): {:?}", self.requests()))
    }
}
