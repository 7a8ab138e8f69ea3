//! Bounded memory whatever a client or a server sends: uploads stream to
//! their server, bodies over the limit are refused before they are read,
//! large answers stream through, and merged lists hold a bounded part of
//! each server's answer. Peak memory is read from the running tinyscale's
//! `/proc/<pid>/status` (VmHWM) before and after.

mod support;

use std::time::Duration;
use support::*;
use tinyscale::sim::HugeAnswer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How much tinyscale's peak resident memory grew during `work`, in MiB.
async fn peak_growth_mib<T>(lb: &Balancer, work: impl Future<Output = T>) -> (T, f64) {
    let before = status_kib(lb.pid(), "VmHWM");
    let out = work.await;
    let after = status_kib(lb.pid(), "VmHWM");
    (out, (after.saturating_sub(before)) as f64 / 1024.0)
}

/// The body pattern of the upload tests: byte `i` is `i % 251`.
fn pattern(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(|i| (i % 251) as u8).collect()
}

/// What came back over a raw connection.
struct RawReply {
    /// `None` when the connection closed before any answer.
    status: Option<u16>,
    text: String,
}

/// Sends a request head and then `size` bytes of body (announced with
/// Content-Length, or chunked) over a raw connection, writing while it
/// reads the answer; stops writing when the other side stops reading.
/// The head asks for `Connection: close`, so the answer ends at EOF.
async fn raw_upload(lb: &Balancer, path_and_query: &str, size: u64, chunked: bool) -> RawReply {
    raw_upload_paced(lb, path_and_query, size, chunked, Duration::ZERO).await
}

/// [`raw_upload`], waiting `pause` after each 64 KiB piece (a slow client).
async fn raw_upload_paced(
    lb: &Balancer,
    path_and_query: &str,
    size: u64,
    chunked: bool,
    pause: Duration,
) -> RawReply {
    let stream = TcpStream::connect(lb.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {size}")
    };
    let head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/xml\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let write = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let mut sent = 0u64;
        while sent < size {
            let piece = pattern(sent, (size - sent).min(64 * 1024) as usize);
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                writer.write_all(&piece).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(&piece).await?;
            }
            sent += piece.len() as u64;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await?;
        // Keep the write side open until the answer has been read.
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE * 3, reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no end of the answer");
    write.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawReply { status, text }
}

fn create_path(cluster: &Cluster, meeting_id: &str) -> String {
    let url = cluster.url("create", &format!("name=Big&meetingID={meeting_id}"));
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_announced_body_over_the_limit_is_refused_before_it_is_read() {
    let cluster = Cluster::start(1).await;
    let path = create_path(&cluster, "big");
    let (reply, grew) =
        peak_growth_mib(&cluster.lb, raw_upload(&cluster.lb, &path, 80 * MIB, false)).await;
    assert_eq!(reply.status, Some(413), "{}", reply.text);
    assert!(
        reply
            .text
            .contains("<messageKey>internalError</messageKey>"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("TINYSCALE_MAX_BODY"), "{}", reply.text);
    assert!(
        reply
            .text
            .to_ascii_lowercase()
            .contains("connection: close")
    );
    assert!(
        !cluster.sims[0]
            .requests()
            .iter()
            .any(|r| r.call == "create")
    );
    assert!(grew < 8.0, "peak memory grew by {grew:.1} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_the_limit_is_cut_and_the_server_request_abandoned() {
    let cluster = Cluster::start(1).await;
    let path = create_path(&cluster, "big");
    let (reply, grew) =
        peak_growth_mib(&cluster.lb, raw_upload(&cluster.lb, &path, 80 * MIB, true)).await;
    // The refusal, when the connection still allows it; else a closed one.
    if let Some(status) = reply.status {
        assert_eq!(status, 413, "{}", reply.text);
        assert!(reply.text.contains("TINYSCALE_MAX_BODY"), "{}", reply.text);
    }
    assert!(!cluster.sims[0].has_meeting("big"));
    assert!(grew < 8.0, "peak memory grew by {grew:.1} MiB");
    // The server is not blamed for the client's body.
    let reply = cluster.call("create", "name=Small&meetingID=small").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_within_the_limit_reach_the_server_byte_for_byte() {
    let cluster = Cluster::start(2).await;
    // A small one first: connections and buffers exist before measuring.
    let path = create_path(&cluster, "warm");
    assert_eq!(
        raw_upload(&cluster.lb, &path, 1000, false).await.status,
        Some(200)
    );
    for (n, chunked) in [(1, false), (2, true)] {
        let id = format!("slides-{n}");
        let path = create_path(&cluster, &id);
        let size = 48 * MIB;
        let (reply, grew) =
            peak_growth_mib(&cluster.lb, raw_upload(&cluster.lb, &path, size, chunked)).await;
        assert_eq!(reply.status, Some(200), "{}", reply.text);
        assert!(
            reply.text.contains("<returncode>SUCCESS</returncode>"),
            "{}",
            reply.text
        );
        let holder = cluster.holder(&id).expect("created on a server");
        let seen = cluster.sims[holder]
            .requests()
            .into_iter()
            .find(|r| r.call == "create" && r.raw_query.contains(&id))
            .unwrap();
        assert_eq!(seen.body.len() as u64, size);
        assert!(
            seen.body == pattern(0, size as usize),
            "the body changed on the way"
        );
        assert!(
            grew < 8.0,
            "peak memory grew by {grew:.1} MiB (chunked: {chunked})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_answer_streams_through() {
    let cluster = Cluster::start(1).await;
    cluster.create("huge").await;
    assert_eq!(
        cluster
            .call("getMeetingInfo", "meetingID=huge")
            .await
            .returncode(),
        Some("SUCCESS")
    );
    let size = 48 * MIB;
    cluster.sims[0].set_huge_answer("getMeetingInfo", size);
    let url = cluster.url("getMeetingInfo", "meetingID=huge");
    let (reply, grew) = peak_growth_mib(&cluster.lb, get(&url)).await;
    let expected: Vec<u8> = HugeAnswer::new("getMeetingInfo", size).flatten().collect();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), expected.len());
    assert!(
        reply.body.as_bytes() == expected.as_slice(),
        "the answer changed on the way"
    );
    assert!(grew < 8.0, "peak memory grew by {grew:.1} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_answer_over_the_list_cap_is_left_out_of_the_merge() {
    // No polls after the first: they would read the huge answer too.
    let cluster = Cluster::start_with(3, &[("TINYSCALE_POLL_INTERVAL", "3600")]).await;
    for n in 0..3 {
        cluster.create(&format!("listed-{n}")).await;
    }
    let big = cluster.holder("listed-0").unwrap();
    cluster.sims[big].set_huge_answer("getMeetings", 300 * MIB);
    let (reply, grew) = peak_growth_mib(&cluster.lb, cluster.call("getMeetings", "")).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert!(!reply.body.contains("listed-0"));
    assert!(reply.body.contains("listed-1") && reply.body.contains("listed-2"));
    assert!(!reply.body.contains("huge-"));
    assert!(
        cluster
            .lb
            .wait_for_log("left out of the merged getMeetings: server sent an answer larger than 16777216 bytes")
            .await,
        "{}",
        cluster.lb.logs()
    );
    // At most the cap (16 MiB) of it is ever held.
    assert!(grew < 24.0, "peak memory grew by {grew:.1} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_lists_over_many_servers_hold_bounded_memory() {
    let sims = Cluster::sims(100).await;
    for (n, sim) in sims.iter().enumerate() {
        sim.set_recording(false);
        for m in 0..20 {
            let id = format!("m-{n}-{m}");
            let query = format!("name=Lecture+{n}&meetingID={id}&moderatorPW=mp&attendeePW=ap");
            assert_eq!(
                direct(sim, "create", &query).await.returncode(),
                Some("SUCCESS")
            );
            for u in 0..2 {
                sim.add_attendee(&id, &format!("Student {u}"), "VIEWER", false);
            }
        }
    }
    let entries = (0..100).map(|i| entry(&sims, i)).collect();
    // A generous poll timeout: a server whose first probe is slow on a
    // busy machine starts down, and comes up at a later poll.
    let cluster = Cluster::launch(
        sims,
        entries,
        &[
            ("TINYSCALE_POLL_INTERVAL", "1"),
            ("TINYSCALE_POLL_TIMEOUT", "10"),
            ("TINYSCALE_RESPONSE_TIMEOUT", "30"),
        ],
    );
    let mut listed = 0;
    let mut bytes_per_answer = 0;
    for _ in 0..60 {
        let one = cluster.call("getMeetings", "").await;
        listed = one.body.matches("<meeting>").count();
        bytes_per_answer = one.body.len();
        if listed == 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(listed, 2000, "not every server came up");
    let before = status_kib(cluster.lb.pid(), "VmHWM");
    let calls = (0..32).map(|_| {
        let url = cluster.url("getMeetings", "");
        tokio::spawn(async move { get(&url).await })
    });
    for call in calls.collect::<Vec<_>>() {
        let reply = call.await.unwrap();
        assert_eq!(reply.body.matches("<meeting>").count(), 2000);
    }
    let after = status_kib(cluster.lb.pid(), "VmHWM");
    eprintln!(
        "peak RSS {before} KiB before the 32 lists, {after} KiB after; one answer {bytes_per_answer} bytes"
    );
    // Held whole, the 32 merged answers alone would be 32 × the answer.
    let held_whole = 32 * bytes_per_answer / 1024;
    assert!(
        after < 64 * 1024,
        "peak RSS {after} KiB (was {before} KiB; 32 answers held whole would be {held_whole} KiB more)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    // The upload takes about 3 s; the server has 1 s once it has it all.
    let cluster = Cluster::start_with(1, &[("TINYSCALE_RESPONSE_TIMEOUT", "1")]).await;
    let path = create_path(&cluster, "slow-slides");
    let size = 20 * 64 * 1024;
    let reply = raw_upload_paced(&cluster.lb, &path, size, false, Duration::from_millis(150)).await;
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        reply.text.contains("<returncode>SUCCESS</returncode>"),
        "{}",
        reply.text
    );
    let seen = cluster.sims[0]
        .requests()
        .into_iter()
        .find(|r| r.call == "create")
        .unwrap();
    assert_eq!(seen.body.len() as u64, size);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_gets_a_large_answer_whole_past_the_response_timeout() {
    let cluster = Cluster::start_with(1, &[("TINYSCALE_RESPONSE_TIMEOUT", "1")]).await;
    cluster.create("huge").await;
    let size = 8 * MIB;
    cluster.sims[0].set_huge_answer("getMeetingInfo", size);
    let url = cluster.url("getMeetingInfo", "meetingID=huge");
    let path = &url[url.find("/bigbluebutton").unwrap()..];
    let mut stream = TcpStream::connect(cluster.lb.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // About 6 s to read it all, while the server has 1 s.
    let mut answer = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    let reading = async {
        loop {
            let n = stream.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&piece[..n]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE * 3, reading)
        .await
        .expect("the answer ends");
    let text = String::from_utf8_lossy(&answer);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let expected: Vec<u8> = HugeAnswer::new("getMeetingInfo", size).flatten().collect();
    // Chunked framing aside, the whole answer arrived.
    assert!(
        body.ends_with("</metadata></response>\r\n0\r\n\r\n"),
        "cut short"
    );
    assert!(body.len() > expected.len());
}
