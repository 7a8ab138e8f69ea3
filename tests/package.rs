//! The Debian package's sources in debian/ against the code they describe:
//! the man pages are what the CLI renders today, the packaged systemd unit
//! is deploy/tinyscale.service with the package's paths, and the shipped
//! configuration (an empty secret, no servers) is refused with a clear error
//! while its documented defaults are all valid. The built package itself is
//! checked by .ci/package-check.

use clap::CommandFactory;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tinyscale::cli::Cli;
use tinyscale::config::{self, ConfigError, Settings};

/// Set to 1 to rewrite debian/man/ from the CLI instead of comparing.
const WRITE_MAN_PAGES: &str = "TINYSCALE_WRITE_MAN_PAGES";

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(source(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every man page the package ships, by file name: tinyscale.1 and one
/// tinyscale-SUBCOMMAND.1 for each subcommand (tinyscale.1 refers to them).
fn man_pages() -> BTreeMap<String, Vec<u8>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let source = format!("tinyscale {}", root.get_version().unwrap_or_default());
    let mut pages = BTreeMap::new();
    for sub in root.get_subcommands() {
        let name = format!("tinyscale-{}", sub.get_name());
        // The subcommands' display name is "tinyscale" (for --help); a page
        // of its own names itself after its file.
        let page = man_page(sub.clone().display_name(&name), &name, &source);
        pages.insert(format!("{name}.1"), page);
    }
    pages.insert("tinyscale.1".into(), man_page(root, "tinyscale", &source));
    pages
}

/// clap_mangen's page, but with the after-help (variables and signals) as
/// an ENVIRONMENT section that keeps its lines, rather than as "EXTRA".
fn man_page(command: clap::Command, name: &str, source: &str) -> Vec<u8> {
    let after_help = command.get_after_help().map(|text| text.to_string());
    let has_options = command.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = command.has_subcommands();
    let man = clap_mangen::Man::new(command)
        .title(name.to_uppercase())
        .source(source);
    let mut page = Vec::new();
    man.render_title(&mut page).unwrap();
    man.render_name_section(&mut page).unwrap();
    man.render_synopsis_section(&mut page).unwrap();
    man.render_description_section(&mut page).unwrap();
    if has_options {
        man.render_options_section(&mut page).unwrap();
    }
    if has_subcommands {
        man.render_subcommands_section(&mut page).unwrap();
    }
    if let Some(text) = after_help {
        page.extend_from_slice(b".SH ENVIRONMENT\n.nf\n");
        for line in text.lines() {
            page.extend_from_slice(roff_line(line).as_bytes());
            page.push(b'\n');
        }
        page.extend_from_slice(b".fi\n");
    }
    man.render_version_section(&mut page).unwrap();
    once_preamble(&page)
}

/// Each section rendered on its own starts with the same two-line preamble
/// (a quote character for groff); a page needs it once.
fn once_preamble(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g") || line.starts_with(".el .ds Aq");
        if !preamble || seen.insert(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// A line of text as roff shows it literally.
fn roff_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

#[test]
fn the_man_pages_are_rendered_from_the_cli_as_it_is() {
    let dir = source("debian/man");
    let expected = man_pages();
    if std::env::var(WRITE_MAN_PAGES).as_deref() == Ok("1") {
        for old in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(old.unwrap().path()).unwrap();
        }
        for (name, page) in &expected {
            std::fs::write(dir.join(name), page).unwrap();
        }
    }
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        found.insert(name, std::fs::read(&path).unwrap());
    }
    let stale: std::collections::BTreeSet<&String> = expected
        .keys()
        .chain(found.keys())
        .filter(|name| expected.get(*name) != found.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "debian/man/ differs from the CLI in {stale:?}: run \
         `{WRITE_MAN_PAGES}=1 cargo test --test package` and commit debian/man/"
    );
    let main = String::from_utf8_lossy(&expected["tinyscale.1"]).into_owned();
    for word in [
        r"tinyscale\-serve(1)",
        r"tinyscale\-check(1)",
        "TINYSCALE_SECRET",
    ] {
        assert!(main.contains(word), "tinyscale.1 lacks {word}");
    }
    let status = String::from_utf8_lossy(&expected["tinyscale-status.1"]).into_owned();
    assert!(status.contains("json"), "{status}");
}

/// A unit's settings: no comments or blank lines.
fn settings_of(unit: &str) -> Vec<&str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_packaged_unit_is_the_source_unit_with_the_package_paths() {
    let from_source = read("deploy/tinyscale.service");
    let packaged = read("debian/tinyscale.service");
    // The only two differences: where the binary and the settings are.
    let expected = from_source
        .replace("/usr/local/bin/tinyscale", "/usr/bin/tinyscale")
        .replace("/etc/tinyscale/tinyscale.env", "/etc/default/tinyscale");
    assert_eq!(settings_of(&packaged), settings_of(&expected));
    let packaged = settings_of(&packaged);
    assert!(packaged.contains(&"ExecStart=/usr/bin/tinyscale serve"));
    assert!(packaged.contains(&"EnvironmentFile=/etc/default/tinyscale"));
    assert!(packaged.contains(&"Environment=TINYSCALE_SERVERS=/etc/tinyscale/servers.json"));
    // A configuration error (exit 78, see main.rs) is not restarted.
    assert!(packaged.contains(&"RestartPreventExitStatus=78"));
}

/// The KEY=value lines of an environment file; `uncomment` takes `#KEY=value`
/// lines too (the documented defaults).
fn environment(text: &str, uncomment: bool) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| match l.strip_prefix('#') {
            Some(rest) if uncomment => Some(rest),
            Some(_) => None,
            None => Some(l),
        })
        .filter_map(|l| l.split_once('='))
        .filter(|(key, _)| key.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[test]
fn the_shipped_settings_wait_for_a_secret_and_their_defaults_are_valid() {
    let file = read("debian/tinyscale.default");
    let set = environment(&file, false);
    assert_eq!(set.get("TINYSCALE_SECRET").map(String::as_str), Some(""));
    let refused = Settings::from_vars(|name| set.get(name).cloned()).unwrap_err();
    assert!(matches!(refused, ConfigError::MissingSecret), "{refused}");

    let mut all = environment(&file, true);
    assert!(all.len() > set.len(), "documents more than it sets");
    all.insert("TINYSCALE_SECRET".into(), "admin-set-this".into());
    let settings = Settings::from_vars(|name| all.get(name).cloned())
        .unwrap_or_else(|e| panic!("a documented value is refused: {e}"));
    assert_eq!(settings.listen.to_string(), "127.0.0.1:3005");
}

#[test]
fn the_shipped_servers_file_asks_for_servers() {
    let text = read("debian/servers.json");
    let refused = config::parse_servers(&text, "/etc/tinyscale/servers.json").unwrap_err();
    assert!(
        refused.to_string().contains("lists no servers"),
        "{refused}"
    );
    let example = read("servers.example.json");
    assert!(config::parse_servers(&example, "servers.example.json").is_ok());
}
