//! Configuration tests: the shipped files load; each kind of mistake is reported with its
//! file, line and field.

use isometer_policy::{Config, ConfigError, Fallback, SecretSource};
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// A copy of the shipped configuration with one file's text edited.
fn edited(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in isometer_policy::FILES
        .iter()
        .chain(&isometer_policy::OPTIONAL_FILES)
    {
        let text = std::fs::read_to_string(shipped().join(name)).expect("shipped file");
        let text = if *name == file { edit(text) } else { text };
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
    assert_eq!(config.currency_of_tier(&acme.tier), Some("USD"));
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

/// Adds `line` to the first policy, after its line 12.
#[test]
fn rate_cards_and_plans_take_effect_on_their_dates() {
    let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day");
    let dir = edited("rate_cards.toml", |t| {
        t + "\n[[rate_card]]\ntier = \"standard\"\nversion = \"standard-2026-06\"\n\
             effective_from = \"2026-06-01\"\ncurrency = \"USD\"\n\
             price_per_fuel_unit = \"0.000000000004\"\nprice_per_gib_second = \"0.00001\"\n\
             price_per_egress_gib = \"0.05\"\nprice_per_invocation = \"0.0000001\"\n"
    });
    std::fs::write(
        dir.path().join("plans.toml"),
        "[[plan]]\ntenant = \"acme\"\nversion = \"a1\"\ncurrency = \"USD\"\n\
         price_per_task = { summaries = \"0.01\" }\n\n\
         [[plan]]\ntenant = \"acme\"\nversion = \"a2\"\neffective_from = \"2026-03-01\"\n\
         currency = \"USD\"\ndefault_price_per_task = \"0.02\"\n",
    )
    .expect("plans");
    let config = Config::load(dir.path()).expect("valid");
    let card = |d| {
        config
            .rate_card_at("standard", day(d))
            .map(|c| c.version.as_str())
    };
    assert_eq!(card("2026-05-31"), Some("standard-2026-01"));
    assert_eq!(card("2026-06-01"), Some("standard-2026-06"));
    assert_eq!(card("2027-01-01"), Some("standard-2026-06"));
    assert_eq!(
        config
            .rate_card_version("standard-2026-01")
            .map(|c| c.effective_from),
        Some(chrono::NaiveDate::default())
    );
    let plan = |d| config.plan_at("acme", day(d)).expect("plan");
    assert_eq!(plan("2026-02-28").version, "a1");
    assert_eq!(
        plan("2026-02-28").price("summaries"),
        Some("0.01".parse().expect("decimal"))
    );
    assert_eq!(plan("2026-02-28").price("other"), None);
    assert_eq!(plan("2026-03-01").version, "a2");
    assert_eq!(
        plan("2026-03-01").price("other"),
        Some("0.02".parse().expect("decimal"))
    );
    assert_eq!(
        plan("2026-03-01").exploratory_price_per_task,
        rust_decimal::Decimal::ZERO
    );
    assert!(config.plan_at("globex", day("2026-03-01")).is_none());
}

fn after_first_policy(text: String, line: &str) -> String {
    text.replacen(
        "max_output_bytes = 262_144",
        &format!("max_output_bytes = 262_144\n{line}"),
        1,
    )
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
        (
            "tools.toml",
            |t| {
                t.replacen(
                    "default_use_case = \"support-summary\"",
                    "default_use_case = \"support-summary\"\nsha256 = \"abc\"",
                    1,
                )
            },
            9,
            "sha256",
            "64 hex digits",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "secret_profile = \"nope\""),
            13,
            "secret_profile",
            "no secret profile `nope`",
        ),
        (
            "policies.toml",
            |t| {
                after_first_policy(
                    t,
                    "required_observability_fields = [\"trace_id\", \"colour\"]",
                )
            },
            13,
            "required_observability_fields",
            "`colour` is not a manifest field",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { max_attempts = 0 }"),
            13,
            "retry.max_attempts",
            "between 1 and 10",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { budget_ratio = 1.5 }"),
            13,
            "retry.budget_ratio",
            "between 0 and 1",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { window_s = 0 }"),
            13,
            "retry.window_s",
            "between 1 and 86400",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { backoff_ms = 600000 }"),
            13,
            "retry.backoff_ms",
            "at most 60000",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { on = [\"fuel_exhausted\"] }"),
            13,
            "retry.on",
            "never retried",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { on = [\"flaked\"] }"),
            13,
            "retry.on",
            "flaked",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "retry = { max_attempts = 2, tries = 3 }"),
            13,
            "retry",
            "unknown field `tries`",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "fallback = { kind = \"static\", body = '{nope' }"),
            13,
            "fallback.body",
            "is not JSON",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "fallback = { kind = \"static\" }"),
            13,
            "fallback.body",
            "needs a body",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "fallback = { kind = \"retry\" }"),
            13,
            "fallback.kind",
            "use `none` or `static`",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "fallback = { kind = \"none\", body = '{}' }"),
            13,
            "fallback.body",
            "has no body",
        ),
        (
            "policies.toml",
            |t| {
                after_first_policy(
                    t,
                    "network_allowlist = [{ host = \"a.test\", access = \"delete\" }]",
                )
            },
            13,
            "network_allowlist.access",
            "use `read` or `write`",
        ),
        (
            "policies.toml",
            |t| {
                after_first_policy(
                    t,
                    "network_allowlist = [{ host = \"a.test\", access = \"read\", methods = [\"GET\"] }]",
                )
            },
            13,
            "network_allowlist.access",
            "not both",
        ),
        (
            "secrets.toml",
            |t| t.replacen("value = \"task-credential\"", "value = \"hunter2\"", 1),
            16,
            "secret.value",
            "never written in the configuration",
        ),
        (
            "secrets.toml",
            |t| {
                t.replacen(
                    "value = \"task-credential\"",
                    "value = \"env:ISOMETER_TEST_NEVER_SET\"",
                    1,
                )
            },
            16,
            "secret.value",
            "`ISOMETER_TEST_NEVER_SET` is not set",
        ),
        (
            "secrets.toml",
            |t| {
                t.replacen(
                    "value = \"task-credential\"",
                    "value = \"file:missing.token\"",
                    1,
                )
            },
            16,
            "secret.value",
            "cannot read secret file",
        ),
        (
            "secrets.toml",
            |t| t.replacen("header = \"Authorization\"", "header = \"Auth header\"", 1),
            14,
            "secret.header",
            "not an HTTP header name",
        ),
        (
            "secrets.toml",
            |t| t.replacen("host = \"*.crm.example.test\"", "host = \"crm example\"", 1),
            13,
            "secret.host",
            "invalid host name",
        ),
        (
            "secrets.toml",
            |t| t.clone() + "\n[[secret_profile]]\nid = \"crm-task\"\n",
            19,
            "id",
            "declared twice",
        ),
        (
            "poisoning.toml",
            |t| t.replacen("pattern = '", "pattern = '(?<unclosed", 1),
            10,
            "rule.pattern",
            "not a regular expression",
        ),
        (
            "poisoning.toml",
            |t| {
                t.replacen(
                    "id = \"role-override\"",
                    "id = \"override-instructions\"",
                    1,
                )
            },
            13,
            "rule.id",
            "declared twice",
        ),
        (
            "poisoning.toml",
            |t| {
                t.replacen(
                    "applies_to = [\"content\"]",
                    "applies_to = [\"content\", \"prompt\"]",
                    1,
                )
            },
            25,
            "rule.applies_to",
            "`descriptor` or `content`, not `prompt`",
        ),
        (
            "poisoning.toml",
            |t| {
                t.replacen(
                    "description = \"asks",
                    "severity = \"high\"\ndescription = \"asks",
                    1,
                )
            },
            9,
            "severity",
            "unknown field",
        ),
        (
            "policies.toml",
            |t| after_first_policy(t, "on_poisoning = \"block\""),
            13,
            "on_poisoning",
            "`deny` or `record`, not `block`",
        ),
        (
            "plans.toml",
            |t| t.replacen("tenant = \"acme\"", "tenant = \"acmee\"", 1),
            8,
            "tenant",
            "no tenant `acmee`",
        ),
        (
            "plans.toml",
            |t| {
                t.replacen(
                    "effective_from = \"2026-01-01\"",
                    "effective_from = \"2026-13-01\"",
                    1,
                )
            },
            10,
            "effective_from",
            "not a date like 2026-01-31",
        ),
        (
            "plans.toml",
            |t| t.replacen("currency = \"USD\"", "currency = \"EUR\"", 1),
            11,
            "currency",
            "is costed in USD",
        ),
        (
            "plans.toml",
            |t| {
                t.replacen(
                    "support-summary = \"0.004\"",
                    "support-summary = \"-0.004\"",
                    1,
                )
            },
            14,
            "price_per_task.support-summary",
            "must not be negative",
        ),
        (
            "plans.toml",
            |t| t.replacen("tenant = \"globex\"", "tenant = \"acme\"", 1),
            19,
            "tenant",
            "two plans in effect from 2026-01-01",
        ),
        (
            "rate_cards.toml",
            |t| {
                t.replacen(
                    "version = \"standard-2026-01\"",
                    "version = \"free-2026-01\"",
                    1,
                )
            },
            17,
            "version",
            "names two rate cards",
        ),
        (
            "rate_cards.toml",
            |t| {
                t.replacen(
                    "version = \"free-2026-01\"",
                    "version = \"free-2026-01\"\neffective_from = \"soon\"",
                    1,
                )
            },
            9,
            "effective_from",
            "not a date",
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

#[test]
fn the_contract_fields_load() {
    let dir = edited("policies.toml", |t| {
        after_first_policy(
            t,
            "secret_profile = \"crm-task\"\n\
             required_observability_fields = [\"trace_id\", \"confidence\"]\n\
             retry = { max_attempts = 3, budget_ratio = 0.2, window_s = 60, on = [\"timed_out\"], backoff_ms = 10 }\n\
             fallback = { kind = \"static\", body = '{\"summary\":null}' }\n\
             network_allowlist = [{ host = \"quotes.example.test\", access = \"read\" }, \
             { host = \"orders.example.test\", access = \"write\" }]",
        )
    });
    let config = Config::load(dir.path()).expect("valid");
    let policy = config.policy_for("summarize", "free").expect("policy");
    assert_eq!(policy.secret_profile.as_deref(), Some("crm-task"));
    assert_eq!(
        policy.required_observability_fields,
        ["trace_id", "confidence"]
    );
    assert_eq!(
        (policy.retry.max_attempts, policy.retry.budget_ratio),
        (3, 0.2)
    );
    assert_eq!(policy.retry.window, std::time::Duration::from_secs(60));
    assert_eq!(policy.retry.on, [isometer_core::Outcome::TimedOut]);
    assert_eq!(
        policy.fallback,
        Fallback::Static("{\"summary\":null}".into())
    );
    let [read, write] = policy.network_allowlist.as_slice() else {
        panic!("{:?}", policy.network_allowlist)
    };
    assert!(read.allows_method("GET") && read.allows_method("HEAD"));
    assert!(!read.allows_method("POST") && !read.allows_method("DELETE"));
    assert!(write.allows_method("POST") && write.allows_method("DELETE"));
    assert!(!write.allows_method("GET"));

    // Without them: the default evidence fields, no retry, no fallback, no secrets.
    let shipped = Config::load(&shipped()).expect("valid");
    let policy = shipped.policy_for("summarize", "free").expect("policy");
    assert_eq!(
        policy.required_observability_fields,
        isometer_policy::DEFAULT_REQUIRED_FIELDS
    );
    assert_eq!(policy.retry.max_attempts, 1);
    assert_eq!(policy.fallback, Fallback::None);
    assert_eq!(policy.secret_profile, None);
    let profile = shipped.secret_profile("crm-task").expect("profile");
    assert_eq!(profile.secrets[0].source, SecretSource::TaskCredential);
    assert_eq!(profile.secrets[0].header, "authorization");
}

#[test]
fn secrets_toml_may_be_absent() {
    let dir = edited("tenants.toml", |t| t);
    std::fs::remove_file(dir.path().join("secrets.toml")).expect("remove");
    let config = Config::load(dir.path()).expect("valid without secrets.toml");
    assert!(config.secret_profiles.is_empty());
}
