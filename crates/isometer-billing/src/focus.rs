//! FOCUS 1.2 export: a month's charges to tenants as CSV, one row per day, tenant, use
//! case and run class.
//!
//! Each row is a `Usage` charge: `PricingQuantity` is the successful tasks of the group
//! (the billing unit, `Tasks`), `ListUnitPrice` and `ContractedUnitPrice` the plan's price
//! for them, and `BilledCost` = `EffectiveCost` = `ListCost` = `ContractedCost` = quantity x
//! price (exact, in the billing currency). The billing account is the tenant; tenant, use
//! case and run class are also carried in `Tags`. What the group cost to run (every
//! attempt, failed ones included) is in the custom column `x_MeteredCost`, with the task
//! counts in `x_Tasks` and `x_SuccessfulTasks`. Nulls are empty fields; times are UTC
//! `YYYY-MM-DDTHH:MM:SSZ`; the charge period is the day, the billing period the month.

use crate::kpi::{BillingError, unit_price};
use crate::statement::{Period, csv_field};
use isometer_core::{Money, RunClass};
use isometer_policy::Config;
use isometer_store::{Source, Store};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The columns, in the order written: FOCUS columns alphabetically, then custom ones.
pub const COLUMNS: [&str; 34] = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "Tags",
    "x_MeteredCost",
    "x_Tasks",
    "x_SuccessfulTasks",
    "x_PricePlan",
];

/// Who issues the invoices and provides the service, as written in the export.
pub const PROVIDER: &str = "isometer";

#[derive(Default)]
struct Group {
    tasks: u64,
    successful: u64,
    cost: Money,
}

/// The FOCUS CSV of every tenant's charges in `period`; also the number of rows.
pub async fn export(
    store: &Store,
    config: &Config,
    period: Period,
) -> Result<(String, usize), BillingError> {
    let filter = period.filter();
    let tasks = store.task_groups(&filter, Source::Rollup).await?;
    let mut groups: BTreeMap<(chrono::NaiveDate, &str, &str, &str), Group> = BTreeMap::new();
    for g in &tasks {
        let e = groups
            .entry((g.day, &g.tenant_id, &g.use_case, &g.run_class))
            .or_default();
        e.tasks += g.tasks;
        e.cost += g.cost;
        if g.outcome == "success" {
            e.successful += g.tasks;
        }
    }
    let time = |d: chrono::NaiveDate| format!("{d}T00:00:00Z");
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for ((day, tenant_id, use_case, run_class), g) in &groups {
        let tenant = config.tenant(tenant_id);
        let currency = tenant
            .and_then(|t| config.currency_of_tier(&t.tier))
            .unwrap_or_default();
        let priced = unit_price(config, tenant_id, *day, use_case, run_class);
        let plan = priced.map(|(plan, _)| plan);
        let unit_price = priced.map_or(Money::ZERO, |(_, price)| price);
        let exploratory = *run_class == RunClass::Exploratory.as_str();
        let description = match (exploratory, priced.is_some()) {
            (true, _) => format!("Successful exploratory tasks of use case {use_case}"),
            (false, true) => format!("Successful tasks of use case {use_case}"),
            (false, false) => {
                format!("Successful tasks of use case {use_case}, not priced by the tenant's plan")
            }
        };
        let tags = serde_json::json!({
            "isometer/tenant": tenant_id,
            "isometer/use_case": use_case,
            "isometer/run_class": run_class,
        });
        let billed = (unit_price * Money::from(g.successful))
            .normalize()
            .to_string();
        let fields: [String; 34] = [
            billed.clone(),
            (*tenant_id).to_owned(),
            tenant.map_or_else(|| (*tenant_id).to_owned(), |t| t.name.clone()),
            currency.to_owned(),
            time(period.end()),
            time(period.start()),
            "Usage".into(),
            String::new(),
            description,
            "Usage-Based".into(),
            time(day.succ_opt().unwrap_or(*day)),
            time(*day),
            g.successful.to_string(),
            "Tasks".into(),
            billed.clone(),
            unit_price.normalize().to_string(),
            billed.clone(),
            PROVIDER.into(),
            billed,
            unit_price.normalize().to_string(),
            "Standard".into(),
            g.successful.to_string(),
            "Tasks".into(),
            PROVIDER.into(),
            PROVIDER.into(),
            "AI and Machine Learning".into(),
            "isometer tool executions".into(),
            format!("task/{use_case}/{run_class}"),
            plan.map_or_else(String::new, |p| {
                format!("{}/{use_case}/{run_class}", p.version)
            }),
            tags.to_string(),
            g.cost.normalize().to_string(),
            g.tasks.to_string(),
            g.successful.to_string(),
            plan.map_or_else(String::new, |p| p.version.clone()),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    Ok((out, groups.len()))
}
