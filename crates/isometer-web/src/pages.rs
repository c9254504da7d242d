//! Server-rendered pages: the dashboards drawn from `dashboards/` layouts, the approvals
//! queue, the evidence viewer and the tenant portal. Every page works without JavaScript;
//! every figure on a dashboard page is the one `GET /v1/pages/{page}` answers.

use crate::auth::Role;
use crate::chart::{self, Series};
use crate::error::ApiError;
use crate::layout::Kind;
use crate::session::Viewer;
use crate::view::{self, PageQuery, PageView};
use crate::{AppState, evidence, portal};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use isometer_core::RunClass;

/// Staff roles: they read every tenant's figures.
pub(crate) const STAFF: [Role; 3] = [Role::Admin, Role::Finance, Role::Pm];

/// An error shown as a page, not as JSON.
#[derive(Debug)]
pub(crate) struct HtmlError(pub(crate) ApiError);

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        html_error(self.0)
    }
}

fn error_page(status: StatusCode, message: String) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error").to_owned(),
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => status.into_response(),
    }
}

/// Shows an API error's message on a page.
pub(crate) fn html_error(e: ApiError) -> Response {
    let status = match &e {
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::Unavailable(_) | ApiError::Internal(_) => {
            // Logged once, by the JSON mapping.
            let response = e.into_response();
            return error_page(
                response.status(),
                "Something went wrong on our side; the details are in the server's log.".into(),
            );
        }
    };
    error_page(status, e.to_string())
}

/// The navigation bar: the pages the viewer's role may open.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    pub(crate) items: Vec<(String, &'static str, bool)>,
    pub(crate) who: String,
    pub(crate) csrf: String,
    /// Signed in with a cookie (and so can sign out).
    pub(crate) session: bool,
}

impl Nav {
    pub(crate) fn new(viewer: &Viewer, active: &str) -> Self {
        let p = &viewer.principal;
        let mut items: Vec<(&str, &'static str)> = Vec::new();
        if STAFF.contains(&p.role) {
            items.extend([
                ("/", "Overview"),
                ("/tenants", "Tenants"),
                ("/margin", "Margin"),
                ("/slo", "SLO"),
                ("/loops", "Loops"),
            ]);
        }
        if matches!(p.role, Role::Admin | Role::Approver) {
            items.push(("/approvals", "Approvals"));
        }
        if p.role != Role::Approver {
            items.push(("/evidence", "Evidence"));
            items.push(("/portal", "Statements"));
        }
        Nav {
            items: items
                .into_iter()
                .map(|(href, label)| (href.to_owned(), label, href == active))
                .collect(),
            who: match &p.tenant_id {
                Some(t) => format!("{} · {t}", p.role),
                None => p.role.to_string(),
            },
            csrf: viewer.csrf.clone(),
            session: !viewer.csrf.is_empty(),
        }
    }
}

/// A chart panel drawn, with its data kept for the JSON twin.
#[derive(Debug)]
pub(crate) struct Drawn {
    pub(crate) id: String,
    pub(crate) kind: &'static str,
    pub(crate) title: String,
    pub(crate) panel: view::PanelView,
    pub(crate) svg: String,
}

#[derive(Template)]
#[template(path = "page.html")]
struct DashboardPage {
    nav: Nav,
    view: PageView,
    panels: Vec<Drawn>,
    tenants: Vec<(String, String)>,
    tools: Vec<String>,
    action: String,
    /// The tenant of a drill-down page, fixed by its path.
    fixed_tenant: bool,
}

impl DashboardPage {
    fn tenant_is(&self, id: &str) -> bool {
        self.view.tenant.as_deref() == Some(id)
    }

    fn tool_is(&self, id: &str) -> bool {
        self.view.tool.as_deref() == Some(id)
    }

    fn run_class_is(&self, rc: &str) -> bool {
        self.view.run_class.map(RunClass::as_str) == Some(rc)
    }

    fn use_case(&self) -> &str {
        self.view.use_case.as_deref().unwrap_or_default()
    }
}

/// Renders dashboard `page` for `query`; `action` is the page's own path.
async fn dashboard(
    state: &AppState,
    viewer: &Viewer,
    page: &str,
    query: PageQuery,
    action: String,
) -> Result<Response, ApiError> {
    viewer.principal.require(&STAFF)?;
    let view = compute(state, page, &query).await?;
    let config = state.gateway.config();
    let panels = view
        .panels
        .iter()
        .map(|p| Drawn {
            id: p.id.clone(),
            kind: match p.kind {
                Kind::Cards => "cards",
                Kind::Line => "line",
                Kind::Bar => "bar",
                Kind::Table => "table",
            },
            title: p.title.clone(),
            svg: p
                .chart
                .as_ref()
                .map(|c| draw(p.kind, &p.title, c))
                .unwrap_or_default(),
            panel: p.clone(),
        })
        .collect();
    let html = DashboardPage {
        nav: Nav::new(
            viewer,
            if page == "tenant" {
                "/tenants"
            } else {
                &action
            },
        ),
        tenants: config
            .tenants
            .iter()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect(),
        tools: config.tools.iter().map(|t| t.id.clone()).collect(),
        fixed_tenant: page == "tenant",
        view,
        panels,
        action,
    }
    .render()
    .map_err(|e| ApiError::Internal(format!("rendering page {page}: {e}")))?;
    Ok(Html(html).into_response())
}

/// Computes a dashboard page's view for `query`; shared by the page and its JSON twin.
pub(crate) async fn compute(
    state: &AppState,
    page: &str,
    query: &PageQuery,
) -> Result<PageView, ApiError> {
    let layout = state
        .layouts
        .page(page)
        .ok_or_else(|| ApiError::NotFound(format!("no page `{page}`")))?;
    let config = state.gateway.config();
    let filter = query.filter(state.gateway.now().date_naive())?;
    if let Some(t) = &filter.tenant_id
        && config.tenant(t).is_none()
    {
        return Err(ApiError::NotFound(format!("no tenant `{t}`")));
    }
    if page == "tenant" && filter.tenant_id.is_none() {
        return Err(ApiError::BadRequest(
            "the tenant page needs `tenant`".into(),
        ));
    }
    let mut view = view::page(&state.store, &config, layout, &filter).await?;
    if page == "tenant"
        && let Some(t) = filter.tenant_id.as_deref().and_then(|t| config.tenant(t))
    {
        view.title = format!("{} ({}, {} tier)", t.name, t.id, t.tier);
    }
    Ok(view)
}

fn draw(kind: Kind, title: &str, c: &view::Chart) -> String {
    let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<f64>().ok());
    match kind {
        Kind::Bar => {
            let bars: Vec<(String, f64)> = c
                .labels
                .iter()
                .zip(c.series.first().map(|s| s.values.as_slice()).unwrap_or(&[]))
                .map(|(l, v)| (l.clone(), number(v).unwrap_or(0.0)))
                .collect();
            chart::bar_chart(title, &bars, &c.unit)
        }
        _ => {
            let series: Vec<Series> = c
                .series
                .iter()
                .map(|s| Series {
                    name: s.name.clone(),
                    values: s.values.iter().map(number).collect(),
                })
                .collect();
            chart::line_chart(title, &c.labels, &series, &c.unit)
        }
    }
}

/// `GET /`: the finance overview. A tenant key goes to its statements, an approver to the
/// queue.
pub(crate) async fn overview(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match viewer.principal.role {
        Role::Tenant => return Redirect::to("/portal").into_response(),
        Role::Approver => return Redirect::to("/approvals").into_response(),
        _ => {}
    }
    named(state, viewer, "overview", query, "/").await
}

async fn named(
    state: AppState,
    viewer: Viewer,
    page: &str,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    action: &str,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        dashboard(&state, &viewer, page, query, action.to_owned()).await
    }
    .await;
    result.unwrap_or_else(html_error)
}

/// `GET /tenants`.
pub(crate) async fn tenants(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    named(state, viewer, "tenants", query, "/tenants").await
}

/// `GET /tenants/{id}`: one tenant's figures.
pub(crate) async fn tenant(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(mut query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        query.tenant = Some(id.clone());
        dashboard(&state, &viewer, "tenant", query, format!("/tenants/{id}")).await
    }
    .await;
    result.unwrap_or_else(html_error)
}

/// `GET /margin`.
pub(crate) async fn margin(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    named(state, viewer, "margin", query, "/margin").await
}

/// `GET /slo`.
pub(crate) async fn slo(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    named(state, viewer, "slo", query, "/slo").await
}

/// `GET /loops`.
pub(crate) async fn loops(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    named(state, viewer, "loops", query, "/loops").await
}

/// `GET /v1/pages/{page}`: a dashboard page's figures as JSON (staff roles).
pub(crate) async fn page_json(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(page): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<PageView>, ApiError> {
    principal.require(&STAFF)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    compute(&state, &page, &query).await.map(axum::Json)
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    approvals: Vec<crate::approvals::ApprovalView>,
    can_decide: bool,
    all: bool,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ApprovalsQuery {
    state: Option<String>,
}

/// `GET /approvals`: the queue, with approve and deny forms for approvers.
pub(crate) async fn approvals(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ApprovalsQuery>,
) -> Response {
    let result = async {
        viewer.principal.require(&[Role::Approver, Role::Admin])?;
        let all = q.state.as_deref() == Some("all");
        let rows = state.store.approvals(!all).await?;
        ApprovalsPage {
            nav: Nav::new(&viewer, "/approvals"),
            approvals: rows.into_iter().map(Into::into).collect(),
            can_decide: viewer.principal.role == Role::Approver,
            all,
        }
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|e| ApiError::Internal(format!("approvals page: {e}")))
    }
    .await;
    result.unwrap_or_else(html_error)
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct DecisionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /approvals/{id}/approve` and `/deny` from the queue's forms.
pub(crate) async fn decide(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, verb)): Path<(String, String)>,
    form: Result<axum::Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let result = async {
        let axum::Form(form) = form.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        viewer.check_csrf(&form.csrf)?;
        viewer.principal.require(&[Role::Approver])?;
        let approve = match verb.as_str() {
            "approve" => true,
            "deny" => false,
            other => return Err(ApiError::NotFound(format!("no action `{other}`"))),
        };
        let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
        state
            .gateway
            .decide(&id, approve, &viewer.principal.key_id, reason)
            .await?;
        Ok(Redirect::to("/approvals").into_response())
    }
    .await;
    result.unwrap_or_else(html_error)
}

#[derive(Template)]
#[template(path = "evidence.html")]
struct EvidencePage {
    nav: Nav,
    trace: String,
    evidence: Option<evidence::Evidence>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct EvidenceQuery {
    trace: Option<String>,
}

/// `GET /evidence[?trace=ID]`: a trace's manifests and whether each verifies.
pub(crate) async fn evidence_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<EvidenceQuery>,
) -> Response {
    let result = async {
        let trace = q.trace.unwrap_or_default().trim().to_owned();
        let evidence = if trace.is_empty() {
            None
        } else {
            Some(evidence::of_trace(&state, &viewer.principal, &trace).await?)
        };
        if viewer.principal.role == Role::Approver {
            viewer.principal.require(&[Role::Admin])?;
        }
        EvidencePage {
            nav: Nav::new(&viewer, "/evidence"),
            trace,
            evidence,
        }
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|e| ApiError::Internal(format!("evidence page: {e}")))
    }
    .await;
    result.unwrap_or_else(html_error)
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    nav: Nav,
    tenant: Option<(String, String)>,
    tenants: Vec<(String, String)>,
    months: Vec<portal::MonthEntry>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PortalQuery {
    tenant: Option<String>,
}

/// `GET /portal`: a tenant's statements, one per month with usage.
pub(crate) async fn portal_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PortalQuery>,
) -> Response {
    let result = async {
        let tenant = portal::tenant_for(&viewer.principal, q.tenant.as_deref())?;
        let config = state.gateway.config();
        let months = match &tenant {
            Some(t) => portal::months(&state, t).await?,
            None => Vec::new(),
        };
        PortalPage {
            nav: Nav::new(&viewer, "/portal"),
            tenant: tenant.and_then(|t| config.tenant(&t).map(|c| (t, c.name.clone()))),
            tenants: config
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.name.clone()))
                .collect(),
            months,
        }
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|e| ApiError::Internal(format!("portal page: {e}")))
    }
    .await;
    result.unwrap_or_else(html_error)
}

#[derive(Template)]
#[template(path = "portal_statement.html")]
struct StatementPage {
    nav: Nav,
    view: portal::StatementView,
    can_reissue: bool,
}

/// `GET /portal/{tenant}/{period}`: one statement, with its downloads.
pub(crate) async fn statement_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((tenant, period)): Path<(String, String)>,
) -> Response {
    let result = async {
        let view = portal::statement(&state, &viewer.principal, &tenant, &period, false).await?;
        StatementPage {
            nav: Nav::new(&viewer, "/portal"),
            can_reissue: matches!(viewer.principal.role, Role::Finance | Role::Admin)
                && view.status == "outdated",
            view,
        }
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|e| ApiError::Internal(format!("statement page: {e}")))
    }
    .await;
    result.unwrap_or_else(html_error)
}

/// `GET /portal/{tenant}/{period}/statement.csv` and `/statement.html`: the downloads.
pub(crate) async fn statement_download(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((tenant, period, file)): Path<(String, String, String)>,
) -> Response {
    let result = async {
        let view = portal::statement(&state, &viewer.principal, &tenant, &period, false).await?;
        portal::download(&view, &file)
    }
    .await;
    result.unwrap_or_else(html_error)
}

/// `POST /portal/{tenant}/{period}/reissue` (finance, admin): issues the next version of
/// a statement whose recorded usage changed.
pub(crate) async fn reissue(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((tenant, period)): Path<(String, String)>,
    form: Result<axum::Form<crate::session::CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let result = async {
        let axum::Form(form) = form.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        viewer.check_csrf(&form.csrf)?;
        viewer.principal.require(&[Role::Finance, Role::Admin])?;
        portal::statement(&state, &viewer.principal, &tenant, &period, true).await?;
        Ok(Redirect::to(&format!("/portal/{tenant}/{period}")).into_response())
    }
    .await;
    result.unwrap_or_else(html_error)
}
