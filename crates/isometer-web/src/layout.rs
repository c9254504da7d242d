//! Dashboard layouts as data: one TOML file per page under `dashboards/`, naming the page's
//! panels, the KPIs each shows and its chart kind. Layouts are checked whole when the
//! server starts; a mistake names the file and the panel, and the server does not start.
//!
//! ```toml
//! [page]
//! title = "Finance overview"
//!
//! [[panel]]
//! id = "headline"
//! kind = "cards"
//! kpis = ["cost_total", "billed_total", "gross_margin"]
//!
//! [[panel]]
//! id = "trend"
//! kind = "line"
//! chart = "daily_cost_billed"
//! title = "Daily cost and billed"
//! ```

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The pages drawn from layouts, by file stem. Each has a route in `pages.rs`.
pub const PAGES: [&str; 6] = ["overview", "tenants", "tenant", "margin", "slo", "loops"];

/// The layouts shipped with isometer, compiled in so the binary needs no files beside it.
const SHIPPED: [(&str, &str); 6] = [
    (
        "overview",
        include_str!("../../../dashboards/overview.toml"),
    ),
    ("tenants", include_str!("../../../dashboards/tenants.toml")),
    ("tenant", include_str!("../../../dashboards/tenant.toml")),
    ("margin", include_str!("../../../dashboards/margin.toml")),
    ("slo", include_str!("../../../dashboards/slo.toml")),
    ("loops", include_str!("../../../dashboards/loops.toml")),
];

/// The KPIs a `cards` panel may name.
pub const CARDS: &[&str] = &[
    "cost_total",
    "billed_total",
    "gross_margin",
    "margin_percent",
    "tasks_total",
    "tasks_successful",
    "tasks_compliant",
    "cost_per_successful_task",
    "cost_per_compliant_task",
    "retry_cost",
    "retry_tax_ratio",
    "exploratory_tasks",
    "exploratory_cost",
    "capped_tasks",
    "capped_runs",
    "capped_savings",
    "throttled_tasks",
    "attempts_total",
    "policy_rejection_rate",
    "evidence_completeness_ratio",
    "error_rate",
    "error_budget_burn",
    "rollback_activation_ms",
];

/// The charts a `line` panel may draw: one value per day of the period.
pub const LINE_CHARTS: &[&str] = &[
    "daily_cost_billed",
    "daily_cost_per_task",
    "daily_margin",
    "daily_tasks",
    "daily_policy_blocks",
    "daily_errors",
    "daily_capped_savings",
];

/// The charts a `bar` panel may draw: one bar per tenant, use case or tool.
pub const BAR_CHARTS: &[&str] = &[
    "margin_by_use_case",
    "margin_by_tenant",
    "cost_by_tenant",
    "savings_by_tenant",
    "errors_by_tool",
];

/// The tables a `table` panel may show.
pub const TABLES: &[&str] = &[
    "p95_cost",
    "margins",
    "margin_by_use_case",
    "tenants",
    "p95_latency",
    "failing_routes",
    "timeout_clusters",
    "policy_blocks",
    "config_changes",
    "capped_runs",
    "unpriced",
];

/// What a panel draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Cards,
    Line,
    Bar,
    Table,
}

/// A page file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    page: RawPage,
    #[serde(default)]
    panel: Vec<RawPanel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPage {
    /// The page's heading.
    title: String,
    /// The availability objective the error-budget burn is measured against (0 < x < 1).
    slo_target: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPanel {
    /// Unique on the page; the HTML element and the JSON panel carry it.
    id: String,
    kind: Kind,
    /// The panel's heading; cards need none.
    title: Option<String>,
    /// For `cards`: the KPIs, in order.
    #[serde(default)]
    kpis: Vec<String>,
    /// For `line` and `bar`: the chart.
    chart: Option<String>,
    /// For `table`: the table.
    table: Option<String>,
}

/// One checked page layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub page: String,
    pub title: String,
    pub slo_target: f64,
    pub panels: Vec<Panel>,
}

/// One checked panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    pub id: String,
    pub kind: Kind,
    pub title: String,
    /// The KPIs of a cards panel, or the one chart or table the panel shows.
    pub names: Vec<String>,
}

/// Every page's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Layouts {
    pages: BTreeMap<String, Layout>,
}

/// A layout that cannot be used, with the file and, where there is one, the panel.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", panel.as_ref().map(|p| format!(", panel `{p}`")).unwrap_or_default())]
pub struct LayoutError {
    pub file: String,
    pub panel: Option<String>,
    pub message: String,
}

impl Layouts {
    /// The layouts compiled into isometer.
    pub fn shipped() -> Result<Self, LayoutError> {
        let files = SHIPPED
            .iter()
            .map(|(page, text)| (format!("dashboards/{page}.toml"), (*page).to_owned(), *text));
        Self::from_texts(files)
    }

    /// The layouts in `dir`: one `<page>.toml` for each page, nothing else.
    pub fn load(dir: &Path) -> Result<Self, LayoutError> {
        let mut texts = Vec::new();
        for page in PAGES {
            let path = dir.join(format!("{page}.toml"));
            let text = std::fs::read_to_string(&path).map_err(|e| LayoutError {
                file: path.display().to_string(),
                panel: None,
                message: format!("cannot read it: {e}"),
            })?;
            texts.push((path.display().to_string(), page.to_owned(), text));
        }
        let entries = std::fs::read_dir(dir).map_err(|e| LayoutError {
            file: dir.display().to_string(),
            panel: None,
            message: format!("cannot list it: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if path.extension().is_some_and(|e| e == "toml") && !PAGES.contains(&stem) {
                return Err(LayoutError {
                    file: path.display().to_string(),
                    panel: None,
                    message: format!("no page is called `{stem}`; pages: {}", PAGES.join(", ")),
                });
            }
        }
        Self::from_texts(
            texts
                .iter()
                .map(|(f, p, t)| (f.clone(), p.clone(), t.as_str())),
        )
    }

    fn from_texts<'t>(
        files: impl Iterator<Item = (String, String, &'t str)>,
    ) -> Result<Self, LayoutError> {
        let mut pages = BTreeMap::new();
        for (file, page, text) in files {
            let layout = parse(&file, &page, text)?;
            pages.insert(page, layout);
        }
        Ok(Layouts { pages })
    }

    /// The layout of `page`, one of [`PAGES`].
    pub fn page(&self, page: &str) -> Option<&Layout> {
        self.pages.get(page)
    }
}

/// Parses and checks one page's file.
pub fn parse(file: &str, page: &str, text: &str) -> Result<Layout, LayoutError> {
    let error = |panel: Option<&str>, message: String| LayoutError {
        file: file.to_owned(),
        panel: panel.map(str::to_owned),
        message,
    };
    let raw: RawLayout = toml::from_str(text).map_err(|e| error(None, e.to_string()))?;
    let slo_target = raw.page.slo_target.unwrap_or(0.99);
    if !(slo_target > 0.0 && slo_target < 1.0) {
        return Err(error(
            None,
            format!("page.slo_target must lie strictly between 0 and 1, not {slo_target}"),
        ));
    }
    if raw.panel.is_empty() {
        return Err(error(None, "a page needs at least one [[panel]]".into()));
    }
    let mut ids = BTreeSet::new();
    let mut panels = Vec::new();
    for p in raw.panel {
        let at = Some(p.id.as_str());
        if p.id.is_empty() || !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(error(
                at,
                "an id is letters, digits and `-`, and not empty".into(),
            ));
        }
        if !ids.insert(p.id.clone()) {
            return Err(error(at, "this id is used twice on the page".into()));
        }
        let names = match p.kind {
            Kind::Cards => {
                if p.chart.is_some() || p.table.is_some() {
                    return Err(error(
                        at,
                        "a cards panel names `kpis`, not a chart or table".into(),
                    ));
                }
                if p.kpis.is_empty() {
                    return Err(error(at, "a cards panel needs `kpis`".into()));
                }
                for k in &p.kpis {
                    known(k, CARDS, "KPI").map_err(|m| error(at, m))?;
                }
                p.kpis
            }
            Kind::Line | Kind::Bar => {
                if !p.kpis.is_empty() || p.table.is_some() {
                    return Err(error(at, "a chart panel names one `chart`".into()));
                }
                let chart = p
                    .chart
                    .ok_or_else(|| error(at, "a chart panel needs `chart`".into()))?;
                let (own, other, other_kind) = match p.kind {
                    Kind::Line => (LINE_CHARTS, BAR_CHARTS, "bar"),
                    _ => (BAR_CHARTS, LINE_CHARTS, "line"),
                };
                if other.contains(&chart.as_str()) {
                    return Err(error(
                        at,
                        format!("`{chart}` is a {other_kind} chart; set kind = \"{other_kind}\""),
                    ));
                }
                known(&chart, own, "chart").map_err(|m| error(at, m))?;
                vec![chart]
            }
            Kind::Table => {
                if !p.kpis.is_empty() || p.chart.is_some() {
                    return Err(error(at, "a table panel names one `table`".into()));
                }
                let table = p
                    .table
                    .ok_or_else(|| error(at, "a table panel needs `table`".into()))?;
                known(&table, TABLES, "table").map_err(|m| error(at, m))?;
                vec![table]
            }
        };
        if p.kind != Kind::Cards && p.title.as_deref().is_none_or(str::is_empty) {
            return Err(error(at, "a chart or table panel needs a `title`".into()));
        }
        panels.push(Panel {
            id: p.id,
            kind: p.kind,
            title: p.title.unwrap_or_default(),
            names,
        });
    }
    Ok(Layout {
        page: page.to_owned(),
        title: raw.page.title,
        slo_target,
        panels,
    })
}

fn known(name: &str, names: &[&str], what: &str) -> Result<(), String> {
    if names.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "no {what} is called `{name}`; one of {}",
            names.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_layouts_load() {
        let layouts = Layouts::shipped().expect("shipped layouts");
        for page in PAGES {
            assert!(layouts.page(page).is_some(), "{page}");
        }
    }

    #[test]
    fn mistakes_name_the_file_and_the_panel() {
        let page = "[page]\ntitle = \"T\"\n";
        let cases = [
            ("", "missing field `page`"),
            (page, "at least one [[panel]]"),
            (
                "[page]\ntitle = \"T\"\nslo_target = 1.5\n[[panel]]\nid = \"a\"\nkind = \"cards\"\nkpis = [\"cost_total\"]\n",
                "slo_target must lie strictly between 0 and 1",
            ),
            (
                "[[panel]]\nid = \"a\"\nkind = \"cards\"\nkpis = [\"cost_totl\"]\n",
                "panel `a`: no KPI is called `cost_totl`",
            ),
            (
                "[[panel]]\nid = \"a\"\nkind = \"cards\"\nkpis = [\"cost_total\"]\n[[panel]]\nid = \"a\"\nkind = \"cards\"\nkpis = [\"cost_total\"]\n",
                "panel `a`: this id is used twice",
            ),
            (
                "[[panel]]\nid = \"t\"\nkind = \"line\"\nchart = \"margin_by_tenant\"\ntitle = \"x\"\n",
                "panel `t`: `margin_by_tenant` is a bar chart; set kind = \"bar\"",
            ),
            (
                "[[panel]]\nid = \"t\"\nkind = \"table\"\ntitle = \"x\"\n",
                "panel `t`: a table panel needs `table`",
            ),
            (
                "[[panel]]\nid = \"t\"\nkind = \"table\"\ntable = \"p95_cost\"\n",
                "panel `t`: a chart or table panel needs a `title`",
            ),
            (
                "[[panel]]\nid = \"t\"\nkind = \"pie\"\n",
                "unknown variant `pie`",
            ),
            (
                "[[panel]]\nid = \"t t\"\nkind = \"cards\"\nkpis = [\"cost_total\"]\n",
                "an id is letters, digits and `-`",
            ),
        ];
        for (text, expected) in cases {
            let text = if text.starts_with("[page]") || text.is_empty() {
                text.to_owned()
            } else {
                format!("{page}{text}")
            };
            let e = parse("dashboards/x.toml", "x", &text).expect_err(expected);
            let message = e.to_string();
            assert!(
                message.starts_with("dashboards/x.toml") && message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_directory_with_an_unknown_page_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (page, text) in SHIPPED {
            std::fs::write(dir.path().join(format!("{page}.toml")), text).expect("write");
        }
        let layouts = Layouts::load(dir.path()).expect("a copy of the shipped layouts loads");
        assert_eq!(layouts, Layouts::shipped().expect("shipped"));
        std::fs::write(dir.path().join("extra.toml"), "").expect("write");
        let e = Layouts::load(dir.path()).expect_err("unknown page");
        assert!(e.to_string().contains("no page is called `extra`"), "{e}");
        std::fs::remove_file(dir.path().join("extra.toml")).expect("remove");
        std::fs::remove_file(dir.path().join("slo.toml")).expect("remove");
        let e = Layouts::load(dir.path()).expect_err("missing page");
        assert!(e.to_string().contains("slo.toml: cannot read it"), "{e}");
    }
}
