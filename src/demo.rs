//! `tinyscale demo`: the real balancer in front of three simulated BBB
//! servers on 127.0.0.1, with ready-signed URLs to try in a browser or curl;
//! and `tinyscale sim`: simulated servers alone, with a servers.json for them.
//!
//! Owns nothing but the wiring of the demo; the balancer and the simulated
//! servers are the same code the tests run.

use crate::checksum::{self, Algorithm};
use crate::config::{self, Settings};
use crate::server;
use crate::sim::SimHandle;

/// The demo's own API secret, printed at start. A `TINYSCALE_SECRET` from
/// the environment is ignored: it may be a production secret, and the demo
/// prints its secret and signs URLs with it for anyone reading the terminal.
const DEMO_SECRET: &str = "demo-secret";

pub async fn run() -> Result<(), String> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    vars.insert("TINYSCALE_SECRET".into(), DEMO_SECRET.into());
    vars.entry("TINYSCALE_BIND".into())
        .or_insert_with(|| "127.0.0.1".into());
    // Any free port, so the demo runs beside a real tinyscale.
    vars.entry("TINYSCALE_METRICS_BIND".into())
        .or_insert_with(|| "127.0.0.1:0".into());
    let (sims, servers_json) = start_sims(3).await?;
    // The demo's servers file is a real one: edit it (cordon a server, say)
    // and send SIGHUP to see a reload.
    let dir = std::env::temp_dir().join(format!("tinyscale-demo-{}", std::process::id()));
    let file = dir.join("servers.json");
    tokio::fs::create_dir_all(&dir)
        .await
        .and(tokio::fs::write(&file, servers_json).await)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    vars.insert("TINYSCALE_SERVERS".into(), file.display().to_string());
    let settings =
        Settings::from_vars(|name| vars.get(name).cloned()).map_err(|e| e.to_string())?;
    crate::init_logging(&settings.log_filter, settings.log_format);
    let specs = config::load_servers(&file)
        .await
        .map_err(|e| e.to_string())?;
    let stop = crate::stop_signal();
    let (listeners, app, address) = server::start(&settings, specs).await?;

    let base = format!("http://{address}/bigbluebutton/api/");
    let url = |call: &str, query: &str| {
        format!(
            "{base}{call}?{}",
            checksum::signed_query(call, query, &settings.secret, Algorithm::Sha1)
        )
    };
    println!(
        "tinyscale demo: balancer on http://{address}/bigbluebutton/api (secret {:?})",
        settings.secret
    );
    for sim in &sims {
        println!("  simulated BBB server {}", sim.url());
    }
    println!(
        "  servers file {} (edit it, then kill -HUP {})",
        file.display(),
        std::process::id()
    );
    println!("\nTry, in this order:");
    println!(
        "  create:         {}",
        url(
            "create",
            "name=Demo+Class&meetingID=demo-1&attendeePW=ap&moderatorPW=mp"
        )
    );
    println!(
        "  join:           {}",
        url(
            "join",
            "meetingID=demo-1&fullName=Ada+Lovelace&role=MODERATOR"
        )
    );
    println!(
        "  getMeetingInfo: {}",
        url("getMeetingInfo", "meetingID=demo-1")
    );
    println!("  getMeetings:    {}", url("getMeetings", ""));
    println!("  end:            {}", url("end", "meetingID=demo-1"));
    println!("\nPress Ctrl-C to stop.");
    server::run(listeners, app, stop).await;
    for sim in &sims {
        sim.stop().await;
    }
    Ok(())
}

/// Starts `count` simulated servers on 127.0.0.1; returns them with a
/// servers.json that lists them (with their secrets: they are test servers).
async fn start_sims(count: usize) -> Result<(Vec<SimHandle>, String), String> {
    let mut sims = Vec::new();
    let mut entries = Vec::new();
    for n in 1..=count {
        let sim = SimHandle::start(&format!("sim-secret-{n}"))
            .await
            .map_err(|e| format!("cannot start a simulated server: {e}"))?;
        // Nobody reads them here, and a long run must not keep them all.
        sim.set_recording(false);
        entries.push(serde_json::json!({ "host": sim.url(), "secret": sim.secret() }));
        sims.push(sim);
    }
    let json = serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?;
    Ok((sims, json))
}

/// Runs `count` simulated servers until Ctrl-C, printing a servers.json for
/// them on stdout.
pub async fn run_sims(count: usize) -> Result<(), String> {
    crate::init_logging(
        &std::env::var("TINYSCALE_LOG").unwrap_or_else(|_| "info".into()),
        config::LogFormat::Text,
    );
    let (sims, json) = start_sims(count).await?;
    println!("{json}");
    eprintln!(
        "{count} simulated BBB server(s) running; the servers.json above lists them. Ctrl-C stops."
    );
    crate::stop_signal().await;
    for sim in &sims {
        sim.stop().await;
    }
    Ok(())
}
