//! Clients that misbehave as real ones do. Slow ones send their request a
//! few bytes at a time and read the answer through a small receive buffer,
//! a piece at a time, so tinyscale has to wait on them both ways. Vanishing
//! ones go away with half a request sent, or with all of it sent and the
//! answer not yet come. tinyscale must answer the first rightly and keep
//! nothing of the second (its memory and open files tell).
//!
//! Plain sockets, not an HTTP client: an HTTP client would not misbehave.

use crate::load::Answer;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes of the request sent at a time, and how long between them.
const SEND_PIECE: usize = 16;
const SEND_EVERY: Duration = Duration::from_millis(40);
/// Bytes of the answer read at a time, and how long between reads; the
/// receive buffer is small so that tinyscale's writes wait for the reads.
const READ_PIECE: usize = 1024;
const READ_EVERY: Duration = Duration::from_millis(20);
const RECEIVE_BUFFER: u32 = 4096;
/// The most one slow exchange may take, and the largest answer read.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(60);
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The most connecting and writing may take for a vanishing client.
const VANISH_LIMIT: Duration = Duration::from_secs(5);

/// A request as bytes on the wire.
#[derive(Clone)]
pub struct RawRequest {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// A GET of `target`, the connection closed after the answer.
    pub fn get(addr: SocketAddr, target: &str) -> RawRequest {
        RawRequest {
            head: format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            body: Vec::new(),
        }
    }

    /// A form POST of `body` to `path`, the connection closed after the
    /// answer.
    pub fn form_post(addr: SocketAddr, path: &str, body: &str) -> RawRequest {
        RawRequest {
            head: format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// Sends `request` slowly and reads the answer slowly, within
/// [`EXCHANGE_LIMIT`].
pub async fn slow_exchange(addr: SocketAddr, request: &RawRequest) -> Result<Answer, String> {
    match tokio::time::timeout(EXCHANGE_LIMIT, slowly(addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no whole answer within {EXCHANGE_LIMIT:?}")),
    }
}

async fn slowly(addr: SocketAddr, request: &RawRequest) -> Result<Answer, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    let mut stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Each piece leaves on its own, not gathered while an ACK is awaited.
    let _ = stream.set_nodelay(true);
    for piece in request
        .head
        .chunks(SEND_PIECE)
        .chain(request.body.chunks(SEND_PIECE))
    {
        stream
            .write_all(piece)
            .await
            .map_err(|e| format!("write: {e}"))?;
        tokio::time::sleep(SEND_EVERY).await;
    }
    let mut raw = Vec::new();
    let mut buf = vec![0u8; READ_PIECE];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_ANSWER {
            return Err("answer too large".into());
        }
        tokio::time::sleep(READ_EVERY).await;
    }
    parse_answer(&raw)
}

/// An HTTP/1.1 answer read to the end of the connection: status, Location
/// and a body as long as its Content-Length says.
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "head is not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        // Streamed answers (merged lists, large answers) come in chunks.
        dechunk(body)?
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or("neither Content-Length nor chunked")?;
        if body.len() != length {
            return Err(format!(
                "body of {} bytes, Content-Length {length}",
                body.len()
            ));
        }
        body.to_vec()
    };
    Ok(Answer {
        status,
        location: header("location"),
        body: bytes::Bytes::from(body),
    })
}

/// A chunked body's data; an error unless it ends with its last chunk.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or("a chunk size that is not hex")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 || &raw[size..size + 2] != b"\r\n" {
            return Err("a chunk cut short".into());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The ways a client vanishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vanish {
    /// Half of the request head, then gone.
    HalfHead,
    /// The whole head of a POST and half of its body, then gone.
    HalfBody,
    /// The whole request (a getMeetings, so that tinyscale is asking every
    /// server when the client goes), then gone before the answer.
    WholeRequest,
    /// Connects and says nothing.
    Silent,
}

impl Vanish {
    pub const ALL: [Vanish; 4] = [
        Vanish::HalfHead,
        Vanish::HalfBody,
        Vanish::WholeRequest,
        Vanish::Silent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Vanish::HalfHead => "half a head",
            Vanish::HalfBody => "half a body",
            Vanish::WholeRequest => "whole request, gone before the answer",
            Vanish::Silent => "nothing sent",
        }
    }
}

/// One vanishing client: connects, sends its part of `list` (a GET) or
/// `post` (a POST), and drops the connection. Whether it could connect and
/// send.
pub async fn vanish(
    addr: SocketAddr,
    how: Vanish,
    list: &RawRequest,
    post: &RawRequest,
) -> Result<(), String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let part: Vec<u8> = match how {
            Vanish::HalfHead => list.head[..list.head.len() / 2].to_vec(),
            Vanish::HalfBody => [&post.head[..], &post.body[..post.body.len() / 2]].concat(),
            Vanish::WholeRequest => list.head.clone(),
            Vanish::Silent => Vec::new(),
        };
        stream
            .write_all(&part)
            .await
            .map_err(|e| format!("write: {e}"))?;
        if how == Vanish::WholeRequest {
            // Long enough for tinyscale to have read it and begun asking
            // the servers; far shorter than the answer takes.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Dropping the stream closes the connection.
        Ok(())
    };
    tokio::time::timeout(VANISH_LIMIT, work)
        .await
        .unwrap_or_else(|_| Err(format!("not done within {VANISH_LIMIT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_parsed_and_checked_against_its_length() {
        let raw = b"HTTP/1.1 302 Found\r\nlocation: http://x/j?a=1\r\ncontent-length: 2\r\n\r\nok";
        let answer = parse_answer(raw).unwrap();
        assert_eq!(answer.status, 302);
        assert_eq!(answer.location.as_deref(), Some("http://x/j?a=1"));
        assert_eq!(&answer.body[..], b"ok");
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nok";
        assert!(parse_answer(short).is_err(), "cut short");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err(), "no head end");
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn a_chunked_answer_is_put_together_and_must_end() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n<a>\r\nA;x=1\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(&parse_answer(raw).unwrap().body[..], b"<a>0123456789");
        let cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n<a>\r\n";
        assert!(parse_answer(cut).is_err(), "no last chunk");
    }

    #[test]
    fn a_form_post_says_how_long_its_body_is() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let r = RawRequest::form_post(addr, "/p", "a=1&b=2");
        let head = String::from_utf8(r.head).unwrap();
        assert!(head.contains("Content-Length: 7\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(r.body, b"a=1&b=2");
    }
}
