//! The manual, checked against the code, so it cannot drift:
//!
//! - `docs/configuration.md` lists every key of every section, and no other
//!   (`<!-- fields: NAME -->` before each table; the keys come from the
//!   settings types' `Deserialize`), and every TOML example in it is a
//!   configuration `usan check` accepts;
//! - the tables of detector, source and sink kinds (`docs/detectors.md`,
//!   `docs/sources.md`) are the registries' lists: `USAN_BLESS=1 cargo test
//!   --test it manual::` rewrites them after a kind is added.

use crate::harness::repo;
use std::collections::{BTreeMap, BTreeSet};
use usan_core::fields::fields_of;

/// Every table of the reference: its marker name and the keys the code accepts.
fn expected_sections() -> BTreeMap<String, BTreeSet<&'static str>> {
    let fixed: Vec<(&str, &[&str])> = vec![
        ("store.sqlite", fields_of::<usan::store::SqliteConfig>()),
        ("server", fields_of::<usan::api::ServerConfig>()),
        ("auth", fields_of::<usan::api::auth::AuthConfig>()),
        ("auth.tokens", fields_of::<usan::api::auth::TokenConfig>()),
        ("pipeline", fields_of::<usan::pipeline::PipelineConfig>()),
        ("pipeline.frame", fields_of::<usan_core::frame::FramePolicy>()),
        ("alarms", fields_of::<usan::pipeline::alarms::AlarmConfig>()),
        ("detectors", fields_of::<usan::plant::DetectorSpec>()),
        ("threshold", fields_of::<usan_core::threshold::ThresholdConfig>()),
        ("assets", fields_of::<usan::config::AssetConfig>()),
        ("assets.signals", fields_of::<usan::config::SignalSpecEntry>()),
        ("assets.suppress_alarms_when", fields_of::<usan::plant::ModeCondition>()),
        ("rul", fields_of::<usan::pipeline::rul::RulSpec>()),
        ("rul.alarm", fields_of::<usan::pipeline::rul::RulAlarm>()),
        ("broker", fields_of::<usan::protocol::mqtt::Broker>()),
        ("broker.tls", fields_of::<usan::protocol::mqtt::TlsSettings>()),
        ("source.mqtt.json", fields_of::<usan::source::mqtt::JsonSubscription>()),
        ("source.mqtt.sparkplug_b", fields_of::<usan::source::mqtt::SparkplugSubscription>()),
        ("source.modbus.registers", fields_of::<usan::source::modbus::RegisterConfig>()),
        ("source.opcua.nodes", fields_of::<usan::source::opcua::NodeConfig>()),
        ("source.opcua.browse", fields_of::<usan::source::opcua::BrowseRootConfig>()),
    ];
    let registered = [
        ("detector", usan_core::detector::settings_fields()),
        ("source", usan::source::settings_fields()),
        ("sink", usan::sink::settings_fields()),
    ];
    let mut sections: BTreeMap<String, BTreeSet<&'static str>> =
        fixed.into_iter().map(|(name, fields)| (name.to_string(), fields.iter().copied().collect())).collect();
    for (prefix, kinds) in registered {
        for (kind, fields) in kinds {
            sections.insert(format!("{prefix}.{kind}"), fields.iter().copied().collect());
        }
    }
    sections
}

/// Every `<!-- fields: NAME -->` table of `text`: the keys in its first column.
fn documented_sections(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("<!-- fields: ").and_then(|l| l.strip_suffix(" -->")) else { continue };
        let mut keys = BTreeSet::new();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            if let Some(key) = row.split('|').nth(1).map(str::trim).and_then(|k| k.strip_prefix('`')?.strip_suffix('`'))
            {
                keys.insert(key.to_string());
            }
        }
        assert!(sections.insert(name.to_string(), keys).is_none(), "section {name} is documented twice");
    }
    sections
}

#[test]
fn the_configuration_reference_lists_every_key_of_every_section_and_no_other() {
    let text = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let documented = documented_sections(&text);
    let expected = expected_sections();
    let mut problems = Vec::new();
    for (name, keys) in &expected {
        match documented.get(name) {
            None => problems.push(format!("{name}: no `<!-- fields: {name} -->` table")),
            Some(found) => {
                let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
                let missing: Vec<&&str> = keys.difference(&found).collect();
                let extra: Vec<&&str> = found.difference(keys).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    problems.push(format!("{name}: undocumented {missing:?}, not a key {extra:?}"));
                }
            }
        }
    }
    for name in documented.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("{name}: documented, but no such section"));
    }
    assert!(problems.is_empty(), "docs/configuration.md:\n  {}", problems.join("\n  "));
}

/// The fenced blocks of `language` in `text`.
fn code_blocks<'t>(text: &'t str, language: &str) -> Vec<&'t str> {
    let fence = format!("```{language}\n");
    text.split(&fence).skip(1).filter_map(|rest| rest.split("```").next()).collect()
}

#[test]
fn every_configuration_example_in_the_manual_is_valid() {
    for page in ["docs/configuration.md", "docs/sources.md", "docs/detectors.md", "docs/rul.md", "README.md"] {
        let text = std::fs::read_to_string(repo().join(page)).unwrap();
        let blocks = code_blocks(&text, "toml");
        for block in blocks.iter().filter(|b| !b.contains("# not a configuration")) {
            if let Err(errors) = usan::config::Config::parse(block) {
                panic!("{page}: this example is refused:\n{block}\n{errors}");
            }
        }
    }
}

/// A generated table between `<!-- kinds: NAME -->` and `<!-- /kinds -->`
/// in `page`: checked, or rewritten with `USAN_BLESS=1`.
fn generated_table(page: &str, name: &str, table: &str) {
    let path = repo().join(page);
    let text = std::fs::read_to_string(&path).unwrap();
    let (open, close) = (format!("<!-- kinds: {name} -->\n"), "<!-- /kinds -->");
    let start = text.find(&open).unwrap_or_else(|| panic!("{page} has no `{}` marker", open.trim())) + open.len();
    let end = start + text[start..].find(close).unwrap_or_else(|| panic!("{page}: `{close}` missing"));
    if text[start..end] == *table {
        return;
    }
    if std::env::var_os("USAN_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &text[..start], &text[end..])).unwrap();
        return;
    }
    panic!(
        "{page}: the table of {name} is not the registry's; `USAN_BLESS=1 cargo test --test it manual::` rewrites it to:\n{table}"
    );
}

fn threshold_words(t: &usan_core::threshold::ThresholdConfig) -> String {
    match (t.value, t.quantile) {
        (Some(value), _) => format!("{value}"),
        (_, Some(q)) => format!("baseline's {q} quantile"),
        _ => "none".into(),
    }
}

#[test]
fn the_tables_of_kinds_are_the_registries() {
    let mut detectors = String::from("| `type` | what it does | baseline | default threshold |\n|---|---|---|---|\n");
    for kind in usan_core::detector::kinds() {
        detectors += &format!(
            "| [`{}`](configuration.md#{}) | {} | {} | {} |\n",
            kind.name,
            kind.name,
            kind.summary,
            kind.baseline,
            threshold_words(&kind.default_threshold)
        );
    }
    generated_table("docs/detectors.md", "detectors", &detectors);
    let table = |kinds: Vec<(&str, &str)>, anchor: &str| {
        let mut out = String::from("| `type` | what it does |\n|---|---|\n");
        for (name, summary) in kinds {
            out += &format!("| [`{name}`](configuration.md#{anchor}-{name}) | {summary} |\n");
        }
        out
    };
    generated_table("docs/sources.md", "sources", &table(usan::source::kinds(), "sources"));
    generated_table("docs/sources.md", "sinks", &table(usan::sink::kinds(), "sinks"));
}
