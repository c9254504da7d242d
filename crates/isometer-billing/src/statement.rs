//! Tenant statements: what a tenant is billed for a calendar month, line by line.
//!
//! - A line per use case and price: successful customer-visible tasks x the plan's unit
//!   price, rounded half up to the currency's minor unit.
//! - Exploratory runs apart: their tasks and metered cost, billed only at the plan's
//!   exploratory price (nothing by default).
//! - What is not billed: tasks that did not succeed, retries (absorbed cost), and the
//!   spend loop caps avoided.
//! - Totals add the rounded lines.
//!
//! An issued statement is immutable: it is stored with the sha256 of its canonical JSON;
//! when the recorded usage of the month changes (late events), the statement on record
//! stays until a reissue, which stores the next version and says what changed.

use crate::kpi::{BillingError, billed, unit_price};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use isometer_core::{Money, RunClass};
use isometer_policy::Config;
use isometer_store::{Filter, Source, StatementRow, Store};
use rust_decimal::RoundingStrategy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    /// The first day of the month.
    pub fn start(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }

    /// The first day of the next month (the period ends before it).
    pub fn end(self) -> NaiveDate {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default()
    }

    /// Every day of the month.
    pub fn filter(self) -> Filter {
        Filter::days(self.start(), self.end().pred_opt().unwrap_or_default())
    }

    /// The month holding `day`.
    pub fn of(day: NaiveDate) -> Self {
        Period {
            year: day.year(),
            month: day.month(),
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl std::str::FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a month like 2026-11");
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let period = Period {
            year: year.parse().map_err(|_| bad())?,
            month: month.parse().map_err(|_| bad())?,
        };
        NaiveDate::from_ymd_opt(period.year, period.month, 1)
            .map(|_| period)
            .ok_or_else(bad)
    }
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217); 2 for codes not
/// listed.
pub fn minor_unit(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `amount` rounded half up (away from zero) to `digits` places.
pub fn round_to_minor(amount: Money, digits: u32) -> Money {
    amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointAwayFromZero)
}

/// A tenant's statement for one month, as computed from the recorded usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub tenant_id: String,
    pub tenant_name: String,
    pub period: String,
    pub period_start: NaiveDate,
    /// The first day after the period.
    pub period_end: NaiveDate,
    pub currency: String,
    /// Digits of the currency's minor unit that amounts are rounded to.
    pub minor_unit: u32,
    /// The plan versions that priced the month, in order.
    pub plans: Vec<String>,
    /// Billed: successful customer-visible tasks by use case and price.
    pub lines: Vec<Line>,
    /// Exploratory runs, shown apart.
    pub exploratory: Vec<ExploratoryLine>,
    /// Successful customer tasks of use cases the plan does not price: not billed.
    pub unpriced: Vec<Count>,
    /// Customer tasks that did not succeed (failed, denied, capped, throttled): not billed.
    pub not_successful: Vec<Count>,
    /// Attempts after the first: metered, absorbed, not billed.
    pub retries: Absorbed,
    /// Loop caps: tasks answered `capped` and the spend they avoided.
    pub capped: Capped,
    /// The metered cost of every task of the month, for reference.
    pub metered_cost: Money,
    /// The sum of the billed lines.
    pub subtotal: Money,
    /// The sum of the exploratory lines' amounts.
    pub exploratory_total: Money,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub use_case: String,
    pub plan: String,
    pub tasks: u64,
    pub unit_price: Money,
    /// tasks x unit price, rounded half up to the minor unit.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExploratoryLine {
    pub use_case: String,
    pub tasks: u64,
    pub successful: u64,
    /// What their attempts cost to run.
    pub metered_cost: Money,
    pub unit_price: Money,
    /// successful x unit price, rounded half up to the minor unit.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub use_case: String,
    pub tasks: u64,
    pub metered_cost: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absorbed {
    pub attempts: u64,
    pub metered_cost: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped {
    pub tasks: u64,
    pub avoided_cost: Money,
}

impl Statement {
    /// Computes `tenant_id`'s statement for `period` from the rollups.
    pub async fn compute(
        store: &Store,
        config: &Config,
        tenant_id: &str,
        period: Period,
    ) -> Result<Statement, BillingError> {
        let tenant = config
            .tenant(tenant_id)
            .ok_or_else(|| BillingError::Invalid(format!("no tenant `{tenant_id}`")))?;
        let currency = config
            .currency_of_tier(&tenant.tier)
            .unwrap_or_default()
            .to_owned();
        let mut filter = period.filter();
        filter.tenant_id = Some(tenant_id.to_owned());
        let (tasks, attempts) = tokio::try_join!(
            store.task_groups(&filter, Source::Rollup),
            store.attempt_groups(&filter, Source::Rollup),
        )?;
        let digits = minor_unit(&currency);
        let mut lines: BTreeMap<(String, String, Money), u64> = BTreeMap::new();
        let mut exploratory: BTreeMap<String, ExploratoryLine> = BTreeMap::new();
        let mut unpriced: BTreeMap<String, Count> = BTreeMap::new();
        let mut not_successful: BTreeMap<String, Count> = BTreeMap::new();
        let mut capped = Capped::default();
        let mut plans: Vec<String> = Vec::new();
        let mut metered_cost = Money::ZERO;
        for g in &tasks {
            metered_cost += g.cost;
            let plan = config.plan_at(tenant_id, g.day);
            if let Some(plan) = plan.filter(|p| !plans.contains(&p.version)) {
                plans.push(plan.version.clone());
            }
            if g.outcome == "capped" {
                capped.tasks += g.tasks;
                capped.avoided_cost += g.avoided_cost;
            }
            let success = g.outcome == "success";
            let priced = unit_price(config, tenant_id, g.day, &g.use_case, &g.run_class);
            if g.run_class == RunClass::Exploratory.as_str() {
                let line =
                    exploratory
                        .entry(g.use_case.clone())
                        .or_insert_with(|| ExploratoryLine {
                            use_case: g.use_case.clone(),
                            tasks: 0,
                            successful: 0,
                            metered_cost: Money::ZERO,
                            unit_price: priced.map_or(Money::ZERO, |(_, price)| price),
                            amount: Money::ZERO,
                        });
                line.tasks += g.tasks;
                line.metered_cost += g.cost;
                if success {
                    line.successful += g.tasks;
                    line.amount += billed(config, g).unwrap_or_default();
                }
                continue;
            }
            let count = |map: &mut BTreeMap<String, Count>| {
                let c = map.entry(g.use_case.clone()).or_insert_with(|| Count {
                    use_case: g.use_case.clone(),
                    tasks: 0,
                    metered_cost: Money::ZERO,
                });
                c.tasks += g.tasks;
                c.metered_cost += g.cost;
            };
            match (success, priced) {
                (false, _) => count(&mut not_successful),
                (true, None) => count(&mut unpriced),
                (true, Some((plan, price))) => {
                    *lines
                        .entry((g.use_case.clone(), plan.version.clone(), price))
                        .or_default() += g.tasks;
                }
            }
        }
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|((use_case, plan, unit_price), tasks)| Line {
                amount: round_to_minor(unit_price * Money::from(tasks), digits),
                use_case,
                plan,
                tasks,
                unit_price,
            })
            .collect();
        let exploratory: Vec<ExploratoryLine> = exploratory
            .into_values()
            .map(|mut l| {
                l.amount = round_to_minor(l.amount, digits);
                l
            })
            .collect();
        let mut retries = Absorbed::default();
        for g in attempts.iter().filter(|g| g.retry) {
            retries.attempts += g.attempts;
            retries.metered_cost += g.cost;
        }
        let subtotal: Money = lines.iter().map(|l| l.amount).sum();
        let exploratory_total: Money = exploratory.iter().map(|l| l.amount).sum();
        Ok(Statement {
            tenant_id: tenant.id.clone(),
            tenant_name: tenant.name.clone(),
            period: period.to_string(),
            period_start: period.start(),
            period_end: period.end(),
            currency,
            minor_unit: digits,
            plans,
            lines,
            exploratory,
            unpriced: unpriced.into_values().collect(),
            not_successful: not_successful.into_values().collect(),
            retries,
            capped,
            metered_cost,
            subtotal,
            exploratory_total,
            total: subtotal + exploratory_total,
        })
    }

    /// The canonical JSON the sha256 covers.
    pub fn canonical(&self) -> Result<String, BillingError> {
        Ok(serde_json::to_string(self)?)
    }

    /// An amount written with exactly the currency's minor digits.
    pub fn amount(&self, m: Money) -> String {
        let mut m = round_to_minor(m, self.minor_unit);
        m.rescale(self.minor_unit);
        m.to_string()
    }

    /// What changed from `before` to `self`, one sentence per change.
    pub fn changes_since(&self, before: &Statement) -> Vec<String> {
        let mut out = Vec::new();
        let key = |l: &Line| (l.use_case.clone(), l.plan.clone(), l.unit_price);
        let old: BTreeMap<_, &Line> = before.lines.iter().map(|l| (key(l), l)).collect();
        let new: BTreeMap<_, &Line> = self.lines.iter().map(|l| (key(l), l)).collect();
        for (k, l) in &new {
            match old.get(k) {
                None => out.push(format!(
                    "new line {} at {}: {} tasks, {}",
                    l.use_case,
                    l.unit_price,
                    l.tasks,
                    self.amount(l.amount)
                )),
                Some(o) if o.tasks != l.tasks => out.push(format!(
                    "{} at {}: {} -> {} tasks, {} -> {}",
                    l.use_case,
                    l.unit_price,
                    o.tasks,
                    l.tasks,
                    self.amount(o.amount),
                    self.amount(l.amount)
                )),
                Some(_) => {}
            }
        }
        for (k, o) in &old {
            if !new.contains_key(k) {
                out.push(format!(
                    "line {} at {} removed ({} tasks, {})",
                    o.use_case,
                    o.unit_price,
                    o.tasks,
                    self.amount(o.amount)
                ));
            }
        }
        for (what, a, b) in [
            (
                "exploratory",
                &before.exploratory_total,
                &self.exploratory_total,
            ),
            ("total", &before.total, &self.total),
        ] {
            if a != b {
                out.push(format!(
                    "{what}: {} -> {}",
                    self.amount(*a),
                    self.amount(*b)
                ));
            }
        }
        if before.metered_cost != self.metered_cost && out.is_empty() {
            out.push(format!(
                "metered cost: {} -> {} (nothing billed changed)",
                before.metered_cost, self.metered_cost
            ));
        }
        out
    }

    /// The statement as CSV: one row per line of every section, then the totals.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "tenant,period,section,use_case,plan,tasks,unit_price,amount,metered_cost,currency\n",
        );
        let mut row = |section: &str,
                       use_case: &str,
                       plan: &str,
                       tasks: String,
                       unit: String,
                       amount: String,
                       metered: String| {
            let _ = writeln!(
                out,
                "{},{},{section},{},{},{tasks},{unit},{amount},{metered},{}",
                csv_field(&self.tenant_id),
                self.period,
                csv_field(use_case),
                csv_field(plan),
                self.currency
            );
        };
        for l in &self.lines {
            row(
                "billed",
                &l.use_case,
                &l.plan,
                l.tasks.to_string(),
                l.unit_price.to_string(),
                self.amount(l.amount),
                String::new(),
            );
        }
        for l in &self.exploratory {
            row(
                "exploratory",
                &l.use_case,
                "",
                l.tasks.to_string(),
                l.unit_price.to_string(),
                self.amount(l.amount),
                l.metered_cost.to_string(),
            );
        }
        for (section, counts) in [
            ("unpriced", &self.unpriced),
            ("not_successful", &self.not_successful),
        ] {
            for c in counts {
                row(
                    section,
                    &c.use_case,
                    "",
                    c.tasks.to_string(),
                    String::new(),
                    self.amount(Money::ZERO),
                    c.metered_cost.to_string(),
                );
            }
        }
        row(
            "retries_absorbed",
            "",
            "",
            self.retries.attempts.to_string(),
            String::new(),
            self.amount(Money::ZERO),
            self.retries.metered_cost.to_string(),
        );
        row(
            "capped_savings",
            "",
            "",
            self.capped.tasks.to_string(),
            String::new(),
            self.amount(Money::ZERO),
            self.capped.avoided_cost.to_string(),
        );
        for (section, amount) in [
            ("subtotal", self.subtotal),
            ("exploratory_total", self.exploratory_total),
            ("total", self.total),
        ] {
            row(
                section,
                "",
                "",
                String::new(),
                String::new(),
                self.amount(amount),
                String::new(),
            );
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A statement on record: its version, when it was issued, its hash and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    pub version: u32,
    pub issued_at: DateTime<Utc>,
    pub sha256: String,
    pub changes: Vec<String>,
    pub statement: Statement,
}

impl Issued {
    fn from_row(row: StatementRow) -> Result<Self, BillingError> {
        let statement: Statement = serde_json::from_str(&row.body)?;
        let sha256 = hex::encode(Sha256::digest(row.body.as_bytes()));
        if sha256 != row.sha256 {
            return Err(BillingError::Invalid(format!(
                "statement {} {} version {} does not match its recorded sha256",
                row.tenant_id, row.period, row.version
            )));
        }
        Ok(Issued {
            version: row.version,
            issued_at: DateTime::from_timestamp_millis(i64::try_from(row.issued_ms).unwrap_or(0))
                .unwrap_or_default(),
            sha256,
            changes: row
                .changes
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            statement,
        })
    }
}

/// What asking for a statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueOutcome {
    /// The month is not over: computed, not stored.
    Draft(Statement),
    /// First issued now.
    Issued(Issued),
    /// Already issued, and the recorded usage still gives the same statement.
    OnRecord(Issued),
    /// Issued before, but the recorded usage has changed since: the version on record
    /// stands until a reissue; `changes` says what a reissue would change.
    Outdated {
        on_record: Issued,
        changes: Vec<String>,
    },
    /// A new version issued because the recorded usage changed.
    Reissued(Issued),
}

/// The statement of `tenant_id` for `period`, issued when the month is over. With
/// `reissue`, a changed statement is issued as the next version.
pub async fn issue_statement(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    period: Period,
    now: DateTime<Utc>,
    reissue: bool,
) -> Result<IssueOutcome, BillingError> {
    let statement = Statement::compute(store, config, tenant_id, period).await?;
    if now.date_naive() < period.end() {
        return Ok(IssueOutcome::Draft(statement));
    }
    let body = statement.canonical()?;
    let sha256 = hex::encode(Sha256::digest(body.as_bytes()));
    let versions = store
        .statement_versions(tenant_id, &period.to_string())
        .await?;
    let latest = match versions.into_iter().last() {
        Some(row) => Some(Issued::from_row(row)?),
        None => None,
    };
    let (version, changes) = match &latest {
        None => (1, Vec::new()),
        Some(on_record) if on_record.sha256 == sha256 => {
            return Ok(IssueOutcome::OnRecord(on_record.clone()));
        }
        Some(on_record) => {
            let changes = statement.changes_since(&on_record.statement);
            if !reissue {
                return Ok(IssueOutcome::Outdated {
                    on_record: on_record.clone(),
                    changes,
                });
            }
            (on_record.version + 1, changes)
        }
    };
    let row = StatementRow {
        tenant_id: tenant_id.to_owned(),
        period: period.to_string(),
        version,
        issued_ms: u64::try_from(now.timestamp_millis()).unwrap_or(0),
        sha256,
        changes: changes.join("\n"),
        body,
    };
    store.record_statement(&row).await?;
    // Read back: were another issuer to have written this version first, its row stands.
    let stored = store
        .statement_versions(tenant_id, &period.to_string())
        .await?
        .into_iter()
        .find(|r| r.version == version)
        .ok_or_else(|| BillingError::Invalid("the issued statement did not read back".into()))?;
    if stored.sha256 != row.sha256 {
        return Err(BillingError::Invalid(format!(
            "version {version} of {tenant_id}'s {period} statement was issued concurrently \
             by another process; ask again"
        )));
    }
    let issued = Issued::from_row(stored)?;
    Ok(if latest.is_some() {
        IssueOutcome::Reissued(issued)
    } else {
        IssueOutcome::Issued(issued)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bound_their_month() {
        let p: Period = "2026-12".parse().expect("period");
        assert_eq!(
            p.start(),
            NaiveDate::from_ymd_opt(2026, 12, 1).expect("day")
        );
        assert_eq!(p.end(), NaiveDate::from_ymd_opt(2027, 1, 1).expect("day"));
        assert_eq!(p.to_string(), "2026-12");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", ""] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_round_half_up_to_the_minor_unit() {
        let d = |s: &str| s.parse::<Money>().expect("decimal");
        assert_eq!(round_to_minor(d("0.125"), 2), d("0.13"));
        assert_eq!(round_to_minor(d("0.124999"), 2), d("0.12"));
        assert_eq!(round_to_minor(d("2.5"), minor_unit("JPY")), d("3"));
        assert_eq!(round_to_minor(d("1.0005"), minor_unit("KWD")), d("1.001"));
    }

    #[test]
    fn csv_fields_with_commas_are_quoted() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}

#[derive(askama::Template)]
#[template(path = "statement.html")]
struct StatementPage<'a> {
    s: &'a Statement,
    status: String,
    plans: String,
    changes: &'a [String],
    lines: Vec<(String, String, u64, String, String)>,
    exploratory: Vec<(String, u64, u64, String, String, String)>,
    not_billed: Vec<(String, u64, String)>,
    subtotal: String,
    exploratory_total: String,
    total: String,
    hash_note: String,
}

/// The statement as a printable HTML page. `issued`: its version, issue time and hash,
/// when on record; `None` for a draft.
pub fn to_html(
    s: &Statement,
    issued: Option<(&Issued, &[String])>,
) -> Result<String, BillingError> {
    use askama::Template;
    let (status, hash_note, changes) = match issued {
        Some((i, changes)) => (
            format!(
                "Version {} issued {}",
                i.version,
                i.issued_at.format("%Y-%m-%d %H:%M UTC")
            ),
            format!("sha256 of this statement: {}.", i.sha256),
            changes,
        ),
        None => (
            "Draft: the month is not over".to_owned(),
            "A draft is not on record.".to_owned(),
            &[][..],
        ),
    };
    let mut not_billed: Vec<(String, u64, String)> = s
        .not_successful
        .iter()
        .map(|c| {
            (
                format!("Tasks that did not succeed: {}", c.use_case),
                c.tasks,
                c.metered_cost.to_string(),
            )
        })
        .chain(s.unpriced.iter().map(|c| {
            (
                format!("Not priced by the plan: {}", c.use_case),
                c.tasks,
                c.metered_cost.to_string(),
            )
        }))
        .collect();
    not_billed.push((
        "Retries (attempts after the first)".into(),
        s.retries.attempts,
        s.retries.metered_cost.to_string(),
    ));
    not_billed.push((
        "Capped agent loops (spend avoided)".into(),
        s.capped.tasks,
        s.capped.avoided_cost.to_string(),
    ));
    let page = StatementPage {
        s,
        status,
        plans: s.plans.join(", "),
        changes,
        lines: s
            .lines
            .iter()
            .map(|l| {
                (
                    l.use_case.clone(),
                    l.plan.clone(),
                    l.tasks,
                    l.unit_price.to_string(),
                    s.amount(l.amount),
                )
            })
            .collect(),
        exploratory: s
            .exploratory
            .iter()
            .map(|l| {
                (
                    l.use_case.clone(),
                    l.tasks,
                    l.successful,
                    l.metered_cost.to_string(),
                    l.unit_price.to_string(),
                    s.amount(l.amount),
                )
            })
            .collect(),
        not_billed,
        subtotal: s.amount(s.subtotal),
        exploratory_total: s.amount(s.exploratory_total),
        total: s.amount(s.total),
        hash_note,
    };
    page.render()
        .map_err(|e| BillingError::Invalid(format!("cannot render the statement: {e}")))
}
