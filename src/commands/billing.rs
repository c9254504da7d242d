//! `isometer kpi`, `isometer statement` and `isometer export focus`: the billing engine's
//! answers from the configured database.

use crate::{Cli, KpiArgs, StatementArgs, StatementFormat};
use anyhow::Context;
use isometer_billing::statement::{self, IssueOutcome, Period};
use isometer_core::Money;
use isometer_policy::Config;
use isometer_store::{Filter, Source, Store};
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn kpi(cli: &Cli, args: &KpiArgs, store: &Store) -> anyhow::Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    if let Some(t) = &args.tenant
        && config.tenant(t).is_none()
    {
        anyhow::bail!(
            "no tenant `{t}` in {}",
            cli.config.join("tenants.toml").display()
        );
    }
    let filter = Filter {
        from: args.from,
        to: args.to,
        tenant_id: args.tenant.clone(),
        use_case: args.use_case.clone(),
        tool_id: args.tool.clone(),
        run_class: args
            .run_class
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    let source = if args.raw {
        Source::Raw
    } else {
        Source::Rollup
    };
    let k = isometer_billing::kpis(store, &config, &filter, source).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&k)?);
        return Ok(ExitCode::SUCCESS);
    }
    let currency = k.currency.as_deref().unwrap_or("");
    let or_none =
        |m: Option<Money>| m.map_or_else(|| "-".to_owned(), |m| format!("{m} {currency}"));
    let ratio =
        |r: Option<rust_decimal::Decimal>| r.map_or_else(|| "-".to_owned(), |r| r.to_string());
    println!(
        "{} to {}{}",
        k.from,
        k.to,
        k.tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    println!(
        "  tasks                      {} ({} successful, {} compliant)",
        k.tasks_total, k.tasks_successful, k.tasks_compliant
    );
    println!("  cost                       {} {currency}", k.cost_total);
    println!(
        "  cost per successful task   {}",
        or_none(k.cost_per_successful_task)
    );
    println!(
        "  cost per compliant task    {}",
        or_none(k.cost_per_compliant_task)
    );
    println!("  retry tax ratio            {}", ratio(k.retry_tax_ratio));
    println!("  billed                     {} {currency}", k.billed_total);
    println!("  gross margin               {} {currency}", k.gross_margin);
    println!(
        "  exploratory                {} tasks, cost {} {currency}, billed {} {currency}",
        k.exploratory_tasks, k.exploratory_cost, k.exploratory_billed
    );
    println!(
        "  capped                     {} tasks, {} {currency} avoided",
        k.capped_tasks, k.capped_savings
    );
    println!("  throttled                  {} tasks", k.throttled_tasks);
    println!(
        "  policy rejection rate      {}",
        ratio(k.policy_rejection_rate)
    );
    println!(
        "  evidence completeness      {}",
        ratio(k.evidence_completeness_ratio)
    );
    for p in &k.p95_cost_per_task {
        println!(
            "  p95 cost per task          {} / {}: {} {currency} ({} tasks)",
            p.tenant, p.use_case, p.p95, p.tasks
        );
    }
    for p in &k.p95_tool_latency {
        println!(
            "  p95 tool latency           {} / {}: {} ms ({} attempts)",
            p.tenant, p.tool, p.p95_ms, p.attempts
        );
    }
    for u in &k.unpriced {
        println!(
            "  not priced by the plan     {} / {}: {} successful tasks",
            u.tenant, u.use_case, u.tasks
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn statement(
    cli: &Cli,
    args: &StatementArgs,
    store: &Store,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    let period: Period = args.period.parse().map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now();
    let outcome =
        isometer_billing::issue_statement(store, &config, &args.tenant, period, now, args.reissue)
            .await?;
    let (text, note) = match &outcome {
        IssueOutcome::Draft(s) => (
            render(s, None, args.format)?,
            format!("draft: {period} is not over; nothing was issued"),
        ),
        IssueOutcome::Issued(i) => (
            render(&i.statement, Some(i), args.format)?,
            format!("issued version {} (sha256 {})", i.version, i.sha256),
        ),
        IssueOutcome::OnRecord(i) => (
            render(&i.statement, Some(i), args.format)?,
            format!(
                "version {} on record since {} (sha256 {})",
                i.version, i.issued_at, i.sha256
            ),
        ),
        IssueOutcome::Reissued(i) => (
            render(&i.statement, Some(i), args.format)?,
            format!(
                "reissued as version {}: {}",
                i.version,
                i.changes.join("; ")
            ),
        ),
        IssueOutcome::Outdated { on_record, changes } => (
            render(&on_record.statement, Some(on_record), args.format)?,
            format!(
                "version {} is on record, but the recorded usage has changed since ({}); run again with --reissue to issue version {}",
                on_record.version,
                changes.join("; "),
                on_record.version + 1
            ),
        ),
    };
    write_out(args.out.as_deref(), &text)?;
    eprintln!("{}: {note}", args.tenant);
    Ok(ExitCode::SUCCESS)
}

fn render(
    s: &statement::Statement,
    issued: Option<&statement::Issued>,
    format: StatementFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        StatementFormat::Json => {
            let mut value = serde_json::json!({ "statement": s });
            match issued {
                Some(i) => {
                    value["version"] = i.version.into();
                    value["issued_at"] = i.issued_at.to_rfc3339().into();
                    value["sha256"] = i.sha256.clone().into();
                    value["changes"] = i.changes.clone().into();
                }
                None => value["draft"] = true.into(),
            }
            format!("{}\n", serde_json::to_string_pretty(&value)?)
        }
        StatementFormat::Csv => s.to_csv(),
        StatementFormat::Html => statement::to_html(s, issued.map(|i| (i, i.changes.as_slice())))?,
    })
}

pub(crate) async fn focus(
    cli: &Cli,
    period: &str,
    out: &Path,
    store: &Store,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    let period: Period = period.parse().map_err(anyhow::Error::msg)?;
    let (csv, rows) = isometer_billing::focus::export(store, &config, period).await?;
    write_out(Some(out), &csv)?;
    eprintln!("wrote {rows} FOCUS rows for {period} to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes to `out` (through a temporary file, so a reader never sees half), or stdout.
fn write_out(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
        }
    }
}
