//! A fixed month of tasks, its KPIs, statement and FOCUS rows checked by hand to the cent:
//! retries, failures, policy denials, a capped run, a throttled task, exploratory runs and
//! a use case the plan does not price.

use chrono::{DateTime, NaiveDate, Utc};
use isometer_billing::statement::{IssueOutcome, Period};
use isometer_core::{
    LoopCap, Money, Outcome, RunClass, TaskControl, TaskRecord, Usage, UsageEvent, Verdict,
    event_id,
};
use isometer_policy::Config;
use isometer_store::{Filter, Source, Store, WriterOptions};
use std::path::Path;

fn d(s: &str) -> Money {
    s.parse().expect("decimal")
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day")
}

/// The shipped configuration with acme's plan: summaries 0.40, reports 0.125 (a half
/// cent), `misc` not priced, exploratory runs free.
fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for entry in std::fs::read_dir(&shipped).expect("config") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(
        dir.path().join("plans.toml"),
        "[[plan]]\ntenant = \"acme\"\nversion = \"acme-golden\"\ncurrency = \"USD\"\n\
         price_per_task = { summaries = \"0.40\", reports = \"0.125\" }\n\n\
         [[plan]]\ntenant = \"globex\"\nversion = \"globex-golden\"\ncurrency = \"USD\"\n\
         default_price_per_task = \"1\"\n",
    )
    .expect("plans");
    let config = Config::load(dir.path()).expect("valid");
    (dir, config)
}

/// One attempt: (outcome, cost, verdict allow, ran, evidence complete).
type A = (Outcome, &'static str, bool, bool, bool);

const OK: bool = true;

struct Spec {
    id: &'static str,
    tenant: &'static str,
    day: &'static str,
    use_case: &'static str,
    class: RunClass,
    attempts: &'static [A],
    cap: Option<(LoopCap, &'static str)>,
}

fn record(spec: &Spec) -> (Vec<UsageEvent>, TaskRecord) {
    let start: DateTime<Utc> = day(spec.day).and_hms_opt(9, 0, 0).expect("time").and_utc();
    let events: Vec<UsageEvent> = spec
        .attempts
        .iter()
        .zip(1..)
        .map(
            |(&(outcome, cost, allow, ran, complete), attempt)| UsageEvent {
                event_id: event_id(spec.id, attempt),
                time: start + chrono::TimeDelta::seconds(i64::from(attempt)),
                tenant_id: spec.tenant.into(),
                tier: "standard".into(),
                use_case: spec.use_case.into(),
                tool_id: "summarize".into(),
                task_id: spec.id.into(),
                run_id: "run-1".into(),
                run_class: spec.class,
                attempt,
                outcome,
                exit_code: None,
                usage: Usage {
                    wall_time_us: 1_000 * u64::from(attempt),
                    ..Usage::default()
                },
                policy_id: if ran {
                    "summarize/standard".into()
                } else {
                    String::new()
                },
                policy_version: "v".into(),
                verdict: if allow { Verdict::Allow } else { Verdict::Deny },
                evidence_complete: complete,
                confidence: None,
                artifact_hash: String::new(),
                rate_card_version: "standard-2026-01".into(),
                cost: d(cost),
            },
        )
        .collect();
    let last = events.last().expect("an attempt");
    let task = TaskRecord {
        task_id: spec.id.into(),
        submitted: start,
        finished: last.time,
        tenant_id: spec.tenant.into(),
        tier: "standard".into(),
        use_case: spec.use_case.into(),
        tool_id: "summarize".into(),
        run_id: "run-1".into(),
        run_class: spec.class,
        outcome: last.outcome,
        attempts: u16::try_from(events.len()).expect("few"),
        total_cost: events.iter().map(|e| e.cost).sum(),
        compliant: events
            .iter()
            .all(|e| e.verdict == Verdict::Allow && e.evidence_complete),
        control: TaskControl {
            cap: spec.cap.map(|(c, _)| c),
            avoided_cost: spec.cap.map_or(Money::ZERO, |(_, a)| d(a)),
            ..TaskControl::default()
        },
    };
    (events, task)
}

use Outcome::*;
use RunClass::{Customer, Exploratory};

const MONTH: &[Spec] = &[
    // Billed: one attempt.
    Spec {
        id: "t1",
        tenant: "acme",
        day: "2026-10-05",
        use_case: "summaries",
        class: Customer,
        attempts: &[(Success, "0.0010", OK, OK, OK)],
        cap: None,
    },
    // Billed after a retry: the retry's cost is absorbed.
    Spec {
        id: "t2",
        tenant: "acme",
        day: "2026-10-05",
        use_case: "summaries",
        class: Customer,
        attempts: &[
            (Failed, "0.0008", OK, OK, OK),
            (Success, "0.00123456", OK, OK, OK),
        ],
        cap: None,
    },
    // Failed twice (the second attempt's evidence incomplete): not billed.
    Spec {
        id: "t3",
        tenant: "acme",
        day: "2026-10-05",
        use_case: "summaries",
        class: Customer,
        attempts: &[
            (Failed, "0.0005", OK, OK, OK),
            (Failed, "0.0005", OK, OK, false),
        ],
        cap: None,
    },
    // Denied by policy before running.
    Spec {
        id: "t4",
        tenant: "acme",
        day: "2026-10-05",
        use_case: "reports",
        class: Customer,
        attempts: &[(PolicyDenied, "0", false, false, false)],
        cap: None,
    },
    // Succeeded after an egress denial: billed, but not policy-compliant.
    Spec {
        id: "t5",
        tenant: "acme",
        day: "2026-10-05",
        use_case: "reports",
        class: Customer,
        attempts: &[
            (EgressDenied, "0.0004", false, OK, OK),
            (Success, "0.0026", OK, OK, OK),
        ],
        cap: None,
    },
    // A capped loop: nothing ran, 0.0015 avoided.
    Spec {
        id: "t6",
        tenant: "acme",
        day: "2026-10-20",
        use_case: "summaries",
        class: Customer,
        attempts: &[(Capped, "0", false, false, false)],
        cap: Some((LoopCap::RepeatedCall, "0.0015")),
    },
    // Exploratory: shown apart, free under the plan.
    Spec {
        id: "t7",
        tenant: "acme",
        day: "2026-10-20",
        use_case: "summaries",
        class: Exploratory,
        attempts: &[(Success, "0.0009", OK, OK, OK)],
        cap: None,
    },
    // A use case the plan does not price.
    Spec {
        id: "t8",
        tenant: "acme",
        day: "2026-10-20",
        use_case: "misc",
        class: Customer,
        attempts: &[(Success, "0.0007", OK, OK, OK)],
        cap: None,
    },
    // Throttled.
    Spec {
        id: "t9",
        tenant: "acme",
        day: "2026-10-20",
        use_case: "summaries",
        class: Customer,
        attempts: &[(Throttled, "0", false, false, false)],
        cap: None,
    },
    // Another tenant, and a task of acme in another month: outside every acme question.
    Spec {
        id: "g1",
        tenant: "globex",
        day: "2026-10-07",
        use_case: "risk",
        class: Customer,
        attempts: &[(Success, "0.0100", OK, OK, OK)],
        cap: None,
    },
    Spec {
        id: "t0",
        tenant: "acme",
        day: "2026-09-30",
        use_case: "summaries",
        class: Customer,
        attempts: &[(Success, "0.0100", OK, OK, OK)],
        cap: None,
    },
];

async fn seeded(specs: &[Spec]) -> Store {
    let store = isometer_testkit::database().await;
    record_all(&store, specs).await;
    store
}

async fn record_all(store: &Store, specs: &[Spec]) {
    let writer = store.writer(WriterOptions::default()).expect("writer");
    for spec in specs {
        let (events, task) = record(spec);
        writer.record(events, task).await.expect("queued");
    }
    writer.flush().await.expect("flushed");
}

fn october(tenant: Option<&str>) -> Filter {
    let mut f = Filter::days(day("2026-10-01"), day("2026-10-31"));
    f.tenant_id = tenant.map(str::to_owned);
    f
}

#[tokio::test]
async fn kpis_by_hand() {
    let (_dir, config) = config();
    let store = seeded(MONTH).await;
    let k = isometer_billing::kpis(&store, &config, &october(Some("acme")), Source::Rollup)
        .await
        .expect("kpis");
    let raw = isometer_billing::kpis(&store, &config, &october(Some("acme")), Source::Raw)
        .await
        .expect("raw kpis");
    assert_eq!(k, raw, "the rollups and the raw tables disagree");

    assert_eq!(k.currency.as_deref(), Some("USD"));
    assert_eq!(
        (k.tasks_total, k.tasks_successful, k.tasks_compliant),
        (9, 5, 4)
    );
    // 0.0010 + (0.0008 + 0.00123456) + 0.0010 + 0 + 0.0030 + 0 + 0.0009 + 0.0007 + 0
    assert_eq!(k.cost_total, d("0.00863456"));
    assert_eq!(k.cost_per_successful_task, Some(d("0.001726912")));
    assert_eq!(k.cost_per_compliant_task, Some(d("0.00215864")));
    // Retries: t2's 0.00123456, t3's 0.0005, t5's 0.0026.
    assert_eq!(k.retry_cost, d("0.00433456"));
    assert_eq!(k.retry_tax_ratio, Some(d("0.502001")));
    // Billed: t1, t2 at 0.40, t5 at 0.125; t7 exploratory (free), t8 unpriced.
    assert_eq!(k.billed_total, d("0.925"));
    assert_eq!(k.gross_margin, d("0.91636544"));
    assert_eq!(
        (
            k.exploratory_tasks,
            k.exploratory_cost,
            k.exploratory_billed
        ),
        (1, d("0.0009"), Money::ZERO)
    );
    assert_eq!((k.capped_tasks, k.capped_savings), (1, d("0.0015")));
    assert_eq!(k.throttled_tasks, 1);
    assert_eq!(k.attempts_total, 12);
    // t4 and t5's first attempt, of the 10 attempts that were not capped or throttled.
    assert_eq!(k.policy_rejection_rate, Some(d("0.2")));
    // Nine attempts ran; t3's second lacked a field.
    assert_eq!(k.evidence_completeness_ratio, Some(d("0.888889")));
    let p95: Vec<(&str, Money, u64)> = k
        .p95_cost_per_task
        .iter()
        .map(|p| (p.use_case.as_str(), p.p95, p.tasks))
        .collect();
    // summaries: 0, 0, 0.0009, 0.0010, 0.0010, 0.00203456 -> index 5, to two digits.
    assert_eq!(
        p95,
        [
            ("misc", d("0.0007"), 1),
            ("reports", d("0.003"), 2),
            ("summaries", d("0.0020"), 6)
        ]
    );
    assert_eq!(k.p95_tool_latency.len(), 1);
    // Ran: seven first attempts (1 ms) and t2, t3, t5's second (2 ms): index 8 of 9.
    assert_eq!(k.p95_tool_latency[0].p95_ms, d("2"));
    assert_eq!(k.unpriced.len(), 1);
    assert_eq!(
        (k.unpriced[0].use_case.as_str(), k.unpriced[0].tasks),
        ("misc", 1)
    );
    let summaries = k
        .margins
        .iter()
        .find(|m| m.use_case == "summaries")
        .expect("summaries");
    assert_eq!(summaries.billed, d("0.80"));
    // t1, t2, t3, t7 (exploratory), t6 and t9 (nothing).
    assert_eq!(summaries.cost, d("0.00493456"));

    // Every tenant: globex's task joins, September's does not.
    let all = isometer_billing::kpis(&store, &config, &october(None), Source::Rollup)
        .await
        .expect("kpis");
    assert_eq!(all.tasks_total, 10);
    assert_eq!(all.cost_total, d("0.01863456"));
    assert_eq!(all.billed_total, d("1.925"));

    // Filters narrow every figure.
    let mut exploratory = october(Some("acme"));
    exploratory.run_class = Some(Exploratory);
    let e = isometer_billing::kpis(&store, &config, &exploratory, Source::Rollup)
        .await
        .expect("kpis");
    assert_eq!(
        (e.tasks_total, e.cost_total, e.billed_total),
        (1, d("0.0009"), Money::ZERO)
    );
    let mut backwards = october(None);
    backwards.from = day("2026-11-01");
    assert!(
        isometer_billing::kpis(&store, &config, &backwards, Source::Rollup)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_statement_is_issued_once_and_reissued_only_when_asked() {
    let (_dir, config) = config();
    let store = seeded(MONTH).await;
    let period: Period = "2026-10".parse().expect("period");
    let during = day("2026-10-25").and_hms_opt(0, 0, 0).expect("t").and_utc();
    let after = day("2026-11-02").and_hms_opt(0, 0, 0).expect("t").and_utc();

    let draft = isometer_billing::issue_statement(&store, &config, "acme", period, during, false)
        .await
        .expect("draft");
    assert!(matches!(draft, IssueOutcome::Draft(_)));
    assert!(
        store
            .statement_versions("acme", "2026-10")
            .await
            .expect("rows")
            .is_empty()
    );

    let IssueOutcome::Issued(first) =
        isometer_billing::issue_statement(&store, &config, "acme", period, after, false)
            .await
            .expect("issued")
    else {
        panic!("expected a first issue");
    };
    let s = &first.statement;
    assert_eq!(first.version, 1);
    assert_eq!((s.currency.as_str(), s.minor_unit), ("USD", 2));
    let lines: Vec<(&str, u64, Money, Money)> = s
        .lines
        .iter()
        .map(|l| (l.use_case.as_str(), l.tasks, l.unit_price, l.amount))
        .collect();
    // 0.125 rounds half up to 0.13.
    assert_eq!(
        lines,
        [
            ("reports", 1, d("0.125"), d("0.13")),
            ("summaries", 2, d("0.40"), d("0.80"))
        ]
    );
    assert_eq!(
        (s.subtotal, s.exploratory_total, s.total),
        (d("0.93"), d("0.00"), d("0.93"))
    );
    assert_eq!(s.exploratory.len(), 1);
    assert_eq!(
        (
            s.exploratory[0].tasks,
            s.exploratory[0].metered_cost,
            s.exploratory[0].amount
        ),
        (1, d("0.0009"), d("0.00"))
    );
    assert_eq!(
        s.not_successful
            .iter()
            .map(|c| (c.use_case.as_str(), c.tasks, c.metered_cost))
            .collect::<Vec<_>>(),
        [("reports", 1, d("0")), ("summaries", 3, d("0.0010"))]
    );
    assert_eq!(
        (s.unpriced[0].use_case.as_str(), s.unpriced[0].tasks),
        ("misc", 1)
    );
    assert_eq!(
        (s.retries.attempts, s.retries.metered_cost),
        (3, d("0.00433456"))
    );
    assert_eq!((s.capped.tasks, s.capped.avoided_cost), (1, d("0.0015")));
    assert_eq!(s.metered_cost, d("0.00863456"));
    assert_eq!(s.plans, ["acme-golden"]);
    let csv = s.to_csv();
    assert!(
        csv.contains("acme,2026-10,billed,reports,acme-golden,1,0.125,0.13,,USD\n"),
        "{csv}"
    );
    assert!(csv.contains("acme,2026-10,total,,,,,0.93,,USD\n"), "{csv}");
    let html = isometer_billing::statement::to_html(s, Some((&first, &[]))).expect("html");
    assert!(html.contains("0.93") && html.contains(&first.sha256) && html.contains("@media print"));

    // Asked again: the same statement, on record.
    let again = isometer_billing::issue_statement(&store, &config, "acme", period, after, false)
        .await
        .expect("again");
    assert!(matches!(&again, IssueOutcome::OnRecord(i) if i.sha256 == first.sha256));

    // A late task: the statement on record stands until a reissue, which says what changed.
    record_all(
        &store,
        &[Spec {
            id: "t10",
            tenant: "acme",
            day: "2026-10-31",
            use_case: "summaries",
            class: Customer,
            attempts: &[(Success, "0.0011", OK, OK, OK)],
            cap: None,
        }],
    )
    .await;
    let outdated = isometer_billing::issue_statement(&store, &config, "acme", period, after, false)
        .await
        .expect("outdated");
    let IssueOutcome::Outdated { on_record, changes } = outdated else {
        panic!("expected the statement on record to be outdated");
    };
    assert_eq!(on_record.version, 1);
    assert_eq!(
        changes,
        [
            "summaries at 0.40: 2 -> 3 tasks, 0.80 -> 1.20",
            "total: 0.93 -> 1.33"
        ]
    );
    let IssueOutcome::Reissued(second) =
        isometer_billing::issue_statement(&store, &config, "acme", period, after, true)
            .await
            .expect("reissued")
    else {
        panic!("expected a reissue");
    };
    assert_eq!((second.version, second.statement.total), (2, d("1.33")));
    assert_eq!(second.changes, changes);
    let versions = store
        .statement_versions("acme", "2026-10")
        .await
        .expect("rows");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].sha256, first.sha256, "version 1 never changes");
}

#[tokio::test]
async fn the_focus_export_follows_the_specification() {
    let (_dir, config) = config();
    let store = seeded(MONTH).await;
    let period: Period = "2026-10".parse().expect("period");
    let (csv, rows) = isometer_billing::focus::export(&store, &config, period)
        .await
        .expect("export");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    for mandatory in [
        "BilledCost",
        "BillingAccountId",
        "BillingAccountName",
        "BillingCurrency",
        "BillingPeriodEnd",
        "BillingPeriodStart",
        "ChargeCategory",
        "ChargeClass",
        "ChargeDescription",
        "ChargePeriodEnd",
        "ChargePeriodStart",
        "ContractedCost",
        "EffectiveCost",
        "InvoiceIssuerName",
        "ListCost",
        "PricingQuantity",
        "PricingUnit",
        "ProviderName",
        "PublisherName",
        "ServiceCategory",
        "ServiceName",
    ] {
        assert!(header.contains(&mandatory), "missing {mandatory}");
    }
    let custom = header
        .iter()
        .position(|c| c.starts_with("x_"))
        .expect("custom columns");
    assert!(
        header[custom..].iter().all(|c| c.starts_with("x_")),
        "custom columns come last"
    );
    // acme: two days x (summaries, reports / summaries, summaries exploratory, misc);
    // globex: one.
    assert_eq!(rows, 6);
    let records: Vec<std::collections::HashMap<&str, String>> = lines
        .map(|line| {
            let fields = split_csv(line);
            assert_eq!(fields.len(), header.len(), "{line}");
            header.iter().copied().zip(fields).collect()
        })
        .collect();
    let time = regex_like_utc;
    let mut acme_billed = Money::ZERO;
    for r in &records {
        assert_eq!(r["ChargeCategory"], "Usage");
        assert_eq!(r["ChargeClass"], "");
        assert_eq!(r["BillingCurrency"], "USD");
        assert_eq!(r["BillingPeriodStart"], "2026-10-01T00:00:00Z");
        assert_eq!(r["BillingPeriodEnd"], "2026-11-01T00:00:00Z");
        assert!(time(&r["ChargePeriodStart"]) && time(&r["ChargePeriodEnd"]));
        assert!(r["ChargePeriodStart"] < r["ChargePeriodEnd"]);
        assert_eq!(r["ServiceCategory"], "AI and Machine Learning");
        for column in ["BilledCost", "ListCost", "ContractedCost", "EffectiveCost"] {
            assert_eq!(r[column], r["BilledCost"], "{column}");
        }
        let quantity = d(&r["PricingQuantity"]);
        assert_eq!(d(&r["ListUnitPrice"]) * quantity, d(&r["ListCost"]));
        assert_eq!(
            d(&r["ContractedUnitPrice"]) * quantity,
            d(&r["ContractedCost"])
        );
        assert_eq!(r["PricingUnit"], "Tasks");
        assert!(!r["ChargeDescription"].is_empty());
        let tags: serde_json::Value = serde_json::from_str(&r["Tags"]).expect("Tags is JSON");
        assert_eq!(tags["isometer/tenant"], r["BillingAccountId"].as_str());
        assert!(tags["isometer/use_case"].is_string());
        if r["BillingAccountId"] == "acme" {
            acme_billed += d(&r["BilledCost"]);
        }
    }
    // The export bills exactly what the KPIs do.
    assert_eq!(acme_billed, d("0.925"));
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn regex_like_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && DateTime::parse_from_rfc3339(s).is_ok()
}

/// A CSV line's fields (quotes and doubled quotes undone).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("field").push(c),
        }
    }
    fields
}
