//! Client connections over raw TCP: limits on request heads, framing that
//! must be refused, pipelining, idle and slow-head timeouts, how many
//! connections are served at once, and file descriptors given back.

mod support;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOT: &str = "GET /bigbluebutton/api HTTP/1.1\r\nHost: lb\r\n\r\n";

async fn connect(lb: &Balancer) -> TcpStream {
    TcpStream::connect(lb.addr).await.expect("connect")
}

/// Reads until tinyscale closes the connection (end of file or reset);
/// what came before. Panics if it is still open after [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {PATIENCE:?}, having sent {:?}",
                String::from_utf8_lossy(&all)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `head` (ignoring a write refused because tinyscale already closed)
/// and reads until the connection is closed.
async fn send_until_closed(lb: &Balancer, head: Vec<u8>) -> String {
    let mut stream = connect(lb).await;
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let _ = writer.write_all(&head).await;
    };
    let (_, read) = tokio::join!(write, async {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut all)).await;
        String::from_utf8_lossy(&all).into_owned()
    });
    read
}

/// The status codes of the answers in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// One simulated server behind tinyscale with these idle and head
/// timeouts (seconds).
async fn with_timeouts(idle: &str, head: &str) -> Cluster {
    let env = [
        ("TINYSCALE_IDLE_TIMEOUT", idle),
        ("TINYSCALE_HEADER_TIMEOUT", head),
    ];
    Cluster::start_with(1, &env).await
}

/// Asks for the API root on `stream` and asserts it is answered.
async fn root_answered(stream: &mut TcpStream) {
    stream.write_all(ROOT.as_bytes()).await.unwrap();
    assert_eq!(answer(stream).await.0, 200);
}

/// One simulated server and a servers.json naming it, for a tinyscale
/// started by hand: the server (to be kept running) and the file's path.
async fn one_server() -> (Vec<SimHandle>, String) {
    let sims = Cluster::sims(1).await;
    let file = scratch_dir().join("servers.json");
    write_servers(&file, vec![entry(&sims, 0)]);
    (sims, file.to_string_lossy().into_owned())
}

/// tinyscale answers a getMeetings.
async fn assert_serves(lb: &Balancer) {
    let query = signed(
        "getMeetings",
        "",
        SECRET,
        tinyscale::checksum::Algorithm::Sha1,
    );
    let reply = get(&format!("{}getMeetings?{query}", lb.api())).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
}

/// One answer on a keep-alive connection: status and body.
async fn answer(stream: &mut TcpStream) -> (u16, String) {
    let exchange = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("body");
        (
            statuses(&head)[0],
            String::from_utf8_lossy(&body).into_owned(),
        )
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("an answer in time")
}

/// A request head with `extra` header lines.
fn head_with(extra: &[String]) -> Vec<u8> {
    let mut head = String::from("GET /bigbluebutton/api HTTP/1.1\r\nHost: lb\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

/// The path and query of one of the cluster's signed URLs.
fn path_of(cluster: &Cluster, call: &str, query: &str) -> String {
    let url = cluster.url(call, query);
    let prefix = format!("http://{}", cluster.lb.addr);
    url.strip_prefix(&prefix).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_over_the_size_limit_are_refused_with_431() {
    let cluster = Cluster::start(1).await;
    let lb = &cluster.lb;
    let big = head_with(&[format!("X-Big: {}", "a".repeat(100_000))]);
    let reply = send_until_closed(lb, big).await;
    assert_eq!(statuses(&reply), vec![431], "{reply}");
    // Just under 64 KiB is still served.
    let fits = head_with(&[format!("X-Big: {}", "a".repeat(60_000))]);
    let reply = send_until_closed(lb, fits).await;
    assert_eq!(statuses(&reply), vec![200], "{reply}");

    // The limit is configurable.
    let small = Balancer::start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", cluster.servers_file.to_str().unwrap()),
        ("TINYSCALE_MAX_HEADER_BYTES", "8K"),
    ]);
    let over = head_with(&[format!("X-Big: {}", "a".repeat(10_000))]);
    let reply = send_until_closed(&small, over).await;
    assert_eq!(statuses(&reply), vec![431], "{reply}");
    assert_eq!(get(&small.api()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_header_fields_are_refused_with_431() {
    let cluster = Cluster::start(1).await;
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("X-Field-{i}: {i}"))
            .collect::<Vec<_>>()
    };
    let reply = send_until_closed(&cluster.lb, head_with(&fields(500))).await;
    assert_eq!(statuses(&reply), vec![431], "{reply}");
    let reply = send_until_closed(&cluster.lb, head_with(&fields(90))).await;
    assert_eq!(statuses(&reply), vec![200], "{reply}");

    let few = Balancer::start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", cluster.servers_file.to_str().unwrap()),
        ("TINYSCALE_MAX_HEADERS", "20"),
    ]);
    let reply = send_until_closed(&few, head_with(&fields(30))).await;
    assert_eq!(statuses(&reply), vec![431], "{reply}");
    let reply = send_until_closed(&few, head_with(&fields(10))).await;
    assert_eq!(statuses(&reply), vec![200], "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_refused_or_closed() {
    let cluster = Cluster::start(1).await;
    let path = path_of(&cluster, "getMeetings", "");
    // What a front proxy reading the other framing would take for a second
    // request: it must never be answered.
    let smuggled = "GET /bigbluebutton/api HTTP/1.1\r\nHost: lb\r\n\r\n";
    let request = |framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: lb\r\n{framing}\
             Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n\r\n{smuggled}"
        )
        .into_bytes()
    };
    // Two lengths that disagree: refused.
    for framing in [
        "Content-Length: 5\r\nContent-Length: 7\r\n",
        "Content-Length: 5, 7\r\n",
        "Content-Length: -5\r\n",
        "Transfer-Encoding: gzip\r\n",
    ] {
        let reply = send_until_closed(&cluster.lb, request(framing)).await;
        assert_eq!(statuses(&reply), vec![400], "{framing:?}: {reply}");
    }
    // A length and chunked: read as chunked (RFC 9112 6.1: chunked wins),
    // then the connection is closed, so nothing after the chunked body is
    // read as another request.
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let reply = send_until_closed(&cluster.lb, request(framing)).await;
        assert_eq!(statuses(&reply), vec![200], "{framing:?}: {reply}");
        assert!(reply.contains("connection: close"), "{framing:?}: {reply}");
        assert!(!reply.contains("<version>"), "{framing:?}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let cluster = Cluster::start(1).await;
    let meetings = path_of(&cluster, "getMeetings", "");
    let requests = format!(
        "{ROOT}GET /nothing-here HTTP/1.1\r\nHost: lb\r\n\r\n\
         GET {meetings} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
    );
    let reply = send_until_closed(&cluster.lb, requests.into_bytes()).await;
    assert_eq!(statuses(&reply), vec![200, 404, 200], "{reply}");
    let version = reply.find("<version>").expect("the API root's answer");
    let meetings = reply.find("<meetings").expect("getMeetings' answer");
    assert!(version < meetings, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn control_bytes_in_heads_are_refused_below_500_or_closed() {
    let cluster = Cluster::start(1).await;
    let heads: Vec<&[u8]> = vec![
        b"GET /bigbluebutton/api\0 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\r\nHost: l\0b\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\r\nX-\x01: 1\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\r\nX-A: \x01\x02\x7f\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\rHost: lb\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\nHost: lb\x00\nConnection: close\n\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"G\x7fT / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api/\x1b[2J HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/1.1\r\n X-Folded: 1\r\nConnection: close\r\n\r\n",
        b"GET /bigbluebutton/api HTTP/9.9\r\nConnection: close\r\n\r\n",
        b"\xff\xfe\xfd\r\n\r\n",
    ];
    for head in heads {
        let reply = send_until_closed(&cluster.lb, head.to_vec()).await;
        for code in statuses(&reply) {
            assert!(code < 500, "{:?}: {reply}", String::from_utf8_lossy(head));
        }
    }
    // Still serving.
    assert_eq!(
        cluster.call("getMeetings", "").await.returncode(),
        Some("SUCCESS")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed() {
    let cluster = with_timeouts("0.5", "60").await;
    // After an answer…
    let mut used = connect(&cluster.lb).await;
    root_answered(&mut used).await;
    assert_eq!(until_closed(&mut used).await, "");
    // …and before any request.
    let mut unused = connect(&cluster.lb).await;
    assert_eq!(until_closed(&mut unused).await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_are_closed_but_idle_connections_wait() {
    let cluster = with_timeouts("60", "0.5").await;
    let mut stream = connect(&cluster.lb).await;
    root_answered(&mut stream).await;
    // Idle for several head timeouts: a keep-alive connection is not a
    // slow head. (Absence cannot be waited for; the pause only has to be
    // longer than the head timeout.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    root_answered(&mut stream).await;

    // A head sent a byte at a time, each well within the head timeout, is
    // still closed when the whole head takes longer.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head = format!(
            "GET /bigbluebutton/api HTTP/1.1\r\nX-Slow: {}",
            "a".repeat(10_000)
        );
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a slow head is still being read");
    trickle.abort();

    // The first head of a connection too.
    let mut fresh = connect(&cluster.lb).await;
    fresh
        .write_all(b"GET /bigbluebutton/api HTTP/1.1\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut fresh).await, "");
}

/// Raises this process's soft open-files limit to its hard limit; the hard
/// limit.
fn raise_own_open_files_limit() -> u64 {
    let (_, after) = tinyscale::connections::raise_open_files_limit().expect("rlimit");
    after.hard
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_1500_idle_connections_and_still_answers() {
    const IDLE: usize = 1500;
    if raise_own_open_files_limit() < 2 * IDLE as u64 + 500 {
        eprintln!("the hard open-files limit is too low for this test: skipped");
        return;
    }
    let (_sims, file) = one_server().await;
    // Started with the usual soft limit of 1024: tinyscale has to raise it.
    let env = [("TINYSCALE_SECRET", SECRET), ("TINYSCALE_SERVERS", &file)];
    let lb = Balancer::start_with_open_files(&env, 1024);
    assert!(lb.wait_for_log("open-files limit raised from 1024").await);
    let before = lb.open_fds();
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(connect(&lb).await);
    }
    // Every one accepted, not just queued in the backlog.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lb.open_fds() < before + IDLE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {IDLE} connections accepted",
            lb.open_fds() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serves(&lb).await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_is_survived() {
    let (_sims, file) = one_server().await;
    // 80 descriptors, soft and hard: tinyscale cannot raise it, and more
    // clients come than it can hold.
    let env = [
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", &file),
        ("TINYSCALE_THREADS", "2"),
    ];
    let lb = Balancer::start_under_ulimit(&env, "-n 80");
    assert!(lb.wait_for_log("is below TINYSCALE_MAX_CONNECTIONS").await);
    let metrics = lb.metrics_addr.expect("metrics on");
    let mut clients = Vec::new();
    for _ in 0..150 {
        clients.push(connect(&lb).await);
    }
    for _ in 0..20 {
        clients.push(TcpStream::connect(metrics).await.expect("connect"));
    }
    assert!(lb.wait_for_log("accept failed on the API address").await);
    assert!(
        lb.wait_for_log("accept failed on the metrics address")
            .await
    );
    // The clients leave: tinyscale serves again, on both addresses.
    drop(clients);
    assert_serves(&lb).await;
    let health = get(&format!("http://{metrics}/healthz")).await;
    assert_eq!(health.status, 200, "{}", health.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_wait_for_a_free_place() {
    let cluster = Cluster::start_with(1, &[("TINYSCALE_MAX_CONNECTIONS", "5")]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect(&cluster.lb).await;
        root_answered(&mut stream).await;
        held.push(stream);
    }
    // The kernel accepts the sixth; tinyscale does not serve it yet.
    let mut sixth = connect(&cluster.lb).await;
    sixth.write_all(ROOT.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), sixth.read(&mut byte)).await;
    assert!(early.is_err(), "the sixth connection was served: {early:?}");
    assert!(
        cluster
            .lb
            .wait_for_log("new ones wait until one closes")
            .await
    );
    // One closes: the sixth is answered.
    drop(held.remove(0));
    assert_eq!(answer(&mut sixth).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_leave_mid_call_give_their_descriptors_back() {
    const CLIENTS: usize = 10;
    let cluster = Cluster::start_with(
        1,
        &[
            ("TINYSCALE_MAX_CONNECTIONS", "10"),
            ("TINYSCALE_THREADS", "2"),
        ],
    )
    .await;
    cluster.create("left").await;
    let sim = &cluster.sims[0];
    let before = cluster.lb.open_fds();
    sim.set_answer_delay("getMeetingInfo", Duration::from_secs(2));
    let path = path_of(&cluster, "getMeetingInfo", "meetingID=left");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = connect(&cluster.lb).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        clients.push(stream);
    }
    // Every call has reached the server (which sits on its answer)…
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let calls = || {
        sim.requests()
            .iter()
            .filter(|r| r.call == "getMeetingInfo")
            .count()
    };
    while calls() < CLIENTS {
        assert!(tokio::time::Instant::now() < deadline, "{} calls", calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …when the clients leave.
    drop(clients);
    // Everything tinyscale opened for them is closed again: client sockets,
    // and server connections once the server closes its idle ones.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        sim.close_idle_connections();
        let now = cluster.lb.open_fds();
        if now <= before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} descriptors open, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And every place among the 10 is free again.
    sim.set_answer_delay("getMeetingInfo", Duration::ZERO);
    let mut again = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = connect(&cluster.lb).await;
        stream.write_all(ROOT.as_bytes()).await.unwrap();
        again.push(stream);
    }
    for stream in &mut again {
        assert_eq!(answer(stream).await.0, 200);
    }
}
