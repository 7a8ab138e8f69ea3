//! What tinyscale knows about each server's health. For now: the start-up
//! probe, which asks every server once and says plainly which are ok,
//! unreachable, or answer with a different secret.
//!
//! Does not decide routing: a server that failed the probe still gets its
//! calls, and a failure then is reported on that call.

use crate::api;
use crate::backend::Backend;
use crate::state::Server;
use crate::xml;
use std::sync::Arc;

/// What one server said to the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok { meetings: usize },
    WrongSecret,
    Unreachable(String),
    Unexpected(String),
}

/// Asks one server `getMeetings`, signed with its secret.
pub async fn probe(backend: &Backend, server: &Server) -> Probe {
    let uri = api::own_call(&server.spec, "getMeetings", "");
    match backend.get(&uri).await {
        Err(e) => Probe::Unreachable(e.to_string()),
        Ok(answer) if xml::is_success(&answer.body) => Probe::Ok {
            meetings: count(&answer.body, "<meeting>"),
        },
        Ok(answer) => match xml::field(&answer.body, "messageKey") {
            Some("checksumError") => Probe::WrongSecret,
            Some(key) => Probe::Unexpected(format!("answered {key}")),
            None => Probe::Unexpected(format!(
                "answered HTTP {} without a BBB answer (is this the API root of a BigBlueButton server?)",
                answer.status
            )),
        },
    }
}

fn count(body: &[u8], needle: &str) -> usize {
    body.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// Probes every server at once and logs one line for each.
pub async fn probe_all(backend: &Backend, servers: &[Arc<Server>]) -> Vec<Probe> {
    let mut asks = tokio::task::JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        let backend = backend.clone();
        let server = server.clone();
        asks.spawn(async move { (index, probe(&backend, &server).await) });
    }
    let mut results = vec![Probe::Unexpected("not asked".into()); servers.len()];
    while let Some(Ok((index, result))) = asks.join_next().await {
        results[index] = result;
    }
    for (server, result) in servers.iter().zip(&results) {
        let name = server.name();
        match result {
            Probe::Ok { meetings } => tracing::info!(server = name, meetings, "server ok"),
            Probe::WrongSecret => tracing::error!(
                server = name,
                "server refuses our checksum: the secret in servers.json is not this server's (bbb-conf --secret shows it)"
            ),
            Probe::Unreachable(why) => tracing::warn!(server = name, "server unreachable: {why}"),
            Probe::Unexpected(why) => tracing::warn!(server = name, "server not usable: {why}"),
        }
    }
    results
}
