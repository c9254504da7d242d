//! Configuration tests: the shipped files load; each kind of mistake is reported with its
//! file, line and field.

use isometer_policy::{Config, ConfigError};
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// A copy of the shipped configuration with one file's text edited.
fn edited(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in isometer_policy::FILES {
        let text = std::fs::read_to_string(shipped().join(name)).expect("shipped file");
        let text = if name == file { edit(text) } else { text };
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

fn errors(dir: &Path) -> Vec<ConfigError> {
    Config::load(dir).expect_err("must be refused").0
}

#[test]
fn the_shipped_configuration_loads_and_resolves() {
    let config = Config::load(&shipped()).expect("valid");
    assert!(config.tenants.len() >= 3 && config.tools.len() >= 3);
    let acme = config.tenant("acme").expect("acme");
    let policy = config.policy_for("summarize", &acme.tier).expect("allowed");
    assert_eq!(policy.max_memory_bytes, 64 << 20);
    assert!(config.rate_card(&acme.tier).is_some());
    // Deny by default: the free tier has no policy for the CPU-heavy tool.
    let initech = config.tenant("initech").expect("initech");
    assert!(config.policy_for("busy", &initech.tier).is_none());
    assert_eq!(config.version.len(), 64);
}

#[test]
fn network_allowlists_load_with_their_limits() {
    let dir = edited("policies.toml", |t| {
        t.replacen(
            "max_output_bytes = 262_144",
            "max_output_bytes = 262_144\nmax_egress_bytes = 4096\nmax_egress_requests = 2\n\
             network_allowlist = [{ host = \"*.example.test:8080\", methods = [\"get\"] }, \
             { host = \"127.0.0.1\" }]",
            1,
        )
    });
    let config = Config::load(dir.path()).expect("valid");
    let policy = config.policy_for("summarize", "free").expect("policy");
    assert_eq!(
        (policy.max_egress_bytes, policy.max_egress_requests),
        (4096, 2)
    );
    let [quotes, local] = policy.network_allowlist.as_slice() else {
        panic!("{:?}", policy.network_allowlist)
    };
    assert!(quotes.matches("api.example.test", 8080) && quotes.allows_method("GET"));
    assert!(!quotes.allows_method("POST") && !quotes.allows_non_public());
    assert!(local.matches("127.0.0.1", 9) && local.allows_non_public());
    // Without the fields: no network, default limits.
    let shipped = Config::load(&shipped()).expect("valid");
    let policy = shipped.policy_for("summarize", "free").expect("policy");
    assert!(policy.network_allowlist.is_empty());
    assert_eq!(
        (policy.max_egress_bytes, policy.max_egress_requests),
        (1 << 20, 32)
    );
}

#[test]
fn the_version_follows_the_content() {
    let a = Config::load(&shipped()).expect("valid").version;
    let dir = edited("tenants.toml", |t| {
        t + "\n# a comment changes the version\n"
    });
    let b = Config::load(dir.path()).expect("valid").version;
    assert_ne!(a, b);
}

/// (file, edit, expected line, expected field, words the message must contain)
type Case = (
    &'static str,
    fn(String) -> String,
    usize,
    &'static str,
    &'static str,
);

#[test]
fn mistakes_are_reported_with_file_line_and_field() {
    let cases: &[Case] = &[
        (
            "tenants.toml",
            |t| t.replacen("tier = \"standard\"", "tier = \"gold\"", 1),
            6,
            "tier",
            "no rate card prices tier `gold`",
        ),
        (
            "tenants.toml",
            |t| {
                t.replacen(
                    "name = \"Acme Analytics\"",
                    "name = \"Acme\"\nplan = \"x\"",
                    1,
                )
            },
            6,
            "plan",
            "unknown field `plan`",
        ),
        (
            "policies.toml",
            |t| t.replacen("max_fuel = 20_000_000", "max_fuel = \"lots\"", 1),
            10,
            "max_fuel",
            "invalid type",
        ),
        (
            "policies.toml",
            |t| t.replacen("max_fuel = 20_000_000", "max_fuel = 0", 1),
            10,
            "max_fuel",
            "greater than 0",
        ),
        (
            "policies.toml",
            |t| t.replacen("tool_id = \"summarize\"", "tool_id = \"sumarize\"", 1),
            6,
            "tool_id",
            "no tool `sumarize`",
        ),
        (
            "policies.toml",
            |t| {
                t.replacen(
                    "max_output_bytes = 262_144",
                    "max_output_bytes = 262_144\nnetwork_allowlist = [{ host = \"bad host\" }]",
                    1,
                )
            },
            13,
            "network_allowlist.host",
            "invalid host name",
        ),
        (
            "policies.toml",
            |t| {
                t.replacen(
                    "max_output_bytes = 262_144",
                    "max_output_bytes = 262_144\nnetwork_allowlist = [{ host = \"a.test\", methods = [\"G T\"] }]",
                    1,
                )
            },
            13,
            "network_allowlist.methods",
            "not HTTP methods",
        ),
        (
            "tools.toml",
            |t| t.replacen("id = \"json-transform\"", "id = \"summarize\"", 1),
            11,
            "id",
            "declared twice",
        ),
        (
            "rate_cards.toml",
            |t| t.replacen("currency = \"USD\"", "currency = \"usd\"", 1),
            9,
            "currency",
            "ISO 4217",
        ),
        (
            "rate_cards.toml",
            |t| {
                t.replacen(
                    "price_per_invocation = \"0.0000002\"",
                    "price_per_invocation = \"-1\"",
                    1,
                )
            },
            13,
            "price_per_invocation",
            "negative",
        ),
    ];
    for (file, edit, line, field, words) in cases {
        let dir = edited(file, *edit);
        let found = errors(dir.path());
        let hit = found.iter().find(|e| {
            e.file.ends_with(file)
                && e.line == Some(*line)
                && e.field.as_deref() == Some(*field)
                && e.message.contains(words)
        });
        assert!(
            hit.is_some(),
            "{file}: expected line {line}, field {field}, `{words}`; got {found:#?}"
        );
        let shown = hit.map(ToString::to_string).unwrap_or_default();
        assert!(
            shown.contains(&format!("{file}:{line}: field `{field}`")),
            "{shown}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let dir = edited("tools.toml", |t| t);
    std::fs::remove_file(dir.path().join("tools.toml")).expect("remove");
    let found = errors(dir.path());
    assert_eq!(found.len(), 1);
    assert!(found[0].file.ends_with("tools.toml") && found[0].message.starts_with("cannot read"));
}

#[test]
fn runtime_settings_load_and_are_checked() {
    let settings = isometer_policy::Settings::load(&shipped()).expect("valid");
    assert_eq!(settings.runtime.max_in_flight, Some(1000));
    assert_eq!(settings.runtime.max_module_bytes, Some(64 << 20));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(isometer_policy::SETTINGS_FILE),
        "[runtime]\nmax_in_flight = 0\n",
    )
    .expect("write");
    let errors = isometer_policy::Settings::load(dir.path())
        .expect_err("refused")
        .0;
    assert_eq!(errors[0].field.as_deref(), Some("runtime.max_in_flight"));
}
