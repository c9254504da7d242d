//! Server-rendered pages.

use crate::{AppState, error::ApiError};
use askama::Template;
use axum::response::Html;
use isometer_core::Money;

/// One row of the tenants table.
#[derive(Debug)]
pub(crate) struct TenantLine {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tier: String,
    pub(crate) tasks: u64,
    pub(crate) successful: u64,
    pub(crate) success_rate: String,
    pub(crate) attempts: u64,
    pub(crate) cost: String,
    pub(crate) cost_per_success: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub(crate) struct Dashboard {
    pub(crate) tenants: Vec<TenantLine>,
    pub(crate) outcomes: Vec<(String, u64)>,
    pub(crate) total_tasks: u64,
    pub(crate) total_attempts: u64,
    pub(crate) total_cost: String,
    pub(crate) config_version: String,
}

/// `GET /`: task counts and cost per tenant, attempts per outcome.
pub(crate) async fn dashboard(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Html<String>, ApiError> {
    let config = state.gateway.config();
    let summaries = state.store.tenant_summaries().await?;
    let outcomes = state.store.outcome_counts().await?;
    let currency_of = |tier: &str| config.currency_of_tier(tier).unwrap_or_default().to_owned();

    // Totals come from the same rows as the table, so the page always agrees with itself.
    let (mut total_cost, mut total_tasks, mut total_attempts) = (Money::ZERO, 0, 0);
    let tenants = summaries
        .into_iter()
        .map(|s| {
            total_cost += s.cost;
            total_tasks += s.tasks;
            total_attempts += s.attempts;
            let (name, tier) = config
                .tenant(&s.tenant_id)
                .map_or((s.tenant_id.clone(), String::new()), |t| {
                    (t.name.clone(), t.tier.clone())
                });
            let currency = currency_of(&tier);
            TenantLine {
                success_rate: percent(s.successful, s.tasks),
                cost: format!("{} {currency}", money(s.cost, 6)),
                cost_per_success: s
                    .cost_per_successful_task()
                    .map_or_else(|| "—".to_owned(), |c| format!("{} {currency}", money(c, 8))),
                id: s.tenant_id,
                name,
                tier,
                tasks: s.tasks,
                successful: s.successful,
                attempts: s.attempts,
            }
        })
        .collect();
    let page = Dashboard {
        tenants,
        outcomes: outcomes
            .into_iter()
            .map(|o| (o.outcome, o.attempts))
            .collect(),
        total_tasks,
        total_attempts,
        total_cost: format!("{} {}", money(total_cost, 6), common_currency(&config))
            .trim_end()
            .to_owned(),
        config_version: config.version.chars().take(12).collect(),
    };
    page.render()
        .map(Html)
        .map_err(|e| ApiError::Internal(format!("rendering the dashboard: {e}")))
}

/// The currency every rate card uses, or nothing when they differ (a sum across
/// currencies has none).
fn common_currency(config: &isometer_policy::Config) -> &str {
    match config.rate_cards.split_first() {
        Some((first, rest)) if rest.iter().all(|c| c.currency == first.currency) => &first.currency,
        _ => "",
    }
}

/// `m` with exactly `places` decimals, rounded half away from zero.
pub(crate) fn money(m: Money, places: u32) -> String {
    let mut r =
        m.round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    r.rescale(places);
    r.to_string()
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".to_owned();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}
