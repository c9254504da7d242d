//! Browser sessions: a login page that trades an API key for a session cookie, and the
//! CSRF token every form carries.
//!
//! The cookie holds a random token; the server keeps only its sha256, with the key's
//! principal, the session's CSRF token and its expiry. The cookie is `HttpOnly`, `Secure`
//! and `SameSite=Strict`. Sessions live in the server's memory: a restart signs everyone
//! out. A revoked key ends its sessions at their next request.
//!
//! Pages also accept `Authorization: Bearer KEY`, which a browser never sends on its own,
//! so such requests need no CSRF token.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::{AppState, auth};
use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use isometer_core::{sha256_hex, to_hex};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) const SESSION_COOKIE: &str = "isometer_session";
/// The login form's own CSRF cookie (double submit: the form echoes it).
pub(crate) const LOGIN_COOKIE: &str = "isometer_login";
/// How long a session lasts without a new login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    key: String,
    csrf: String,
    expires: Instant,
}

/// The live sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for `key` (already authenticated); answers the cookie's token.
    fn open(&self, key: &str) -> String {
        let token = to_hex(&rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut sessions = self
            .by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            sha256_hex(token.as_bytes()),
            Session {
                key: key.to_owned(),
                csrf: to_hex(&rand::random::<[u8; 16]>()),
                expires: now + SESSION_TTL,
            },
        );
        token
    }

    fn get(&self, token: &str) -> Option<Session> {
        let sessions = self
            .by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions
            .get(&sha256_hex(token.as_bytes()))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    fn close(&self, token: &str) {
        self.by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&sha256_hex(token.as_bytes()));
    }
}

/// Who is looking at a page, and the CSRF token their forms carry (empty for a Bearer
/// key, which needs none).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    pub(crate) csrf: String,
}

impl Viewer {
    /// Refuses a form whose token is not this session's.
    pub(crate) fn check_csrf(&self, sent: &str) -> Result<(), ApiError> {
        if self.csrf.is_empty() || auth::constant_time_eq(self.csrf.as_bytes(), sent.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "the form's CSRF token is missing or stale; reload the page and try again".into(),
            ))
        }
    }
}

/// A page asked for without a session: the login page, then back.
#[derive(Debug)]
pub(crate) enum NoViewer {
    Login(String),
    Refused(ApiError),
}

impl IntoResponse for NoViewer {
    fn into_response(self) -> Response {
        match self {
            NoViewer::Login(next) => {
                let to = format!("/login?next={}", encode(&next));
                (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
            }
            NoViewer::Refused(e) => crate::pages::HtmlError(e).into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = NoViewer;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoViewer> {
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            let principal = Principal::from_request_parts(parts, state)
                .await
                .map_err(NoViewer::Refused)?;
            return Ok(Viewer {
                principal,
                csrf: String::new(),
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(NoViewer::Login(next));
        };
        let Some(session) = state.sessions.get(&token) else {
            return Err(NoViewer::Login(next));
        };
        match state.keys.authenticate(&session.key).await {
            Ok(principal) => Ok(Viewer {
                principal,
                csrf: session.csrf,
            }),
            Err(ApiError::Unauthorized(_)) => {
                state.sessions.close(&token);
                Err(NoViewer::Login(next))
            }
            Err(e) => Err(NoViewer::Refused(e)),
        }
    }
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age: u64) -> HeaderValue {
    let cookie =
        format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a login may send the browser next: a path on this server only.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the form, with a fresh login CSRF cookie.
pub(crate) async fn login_page(
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    login_form(safe_next(q.next.as_deref()), String::new(), StatusCode::OK)
}

fn login_form(next: String, error: String, status: StatusCode) -> Response {
    let csrf = to_hex(&rand::random::<[u8; 16]>());
    let page = LoginPage {
        csrf: csrf.clone(),
        next,
        error,
    };
    match askama::Template::render(&page) {
        Ok(html) => (
            status,
            [(SET_COOKIE, set_cookie(LOGIN_COOKIE, &csrf, 3600))],
            axum::response::Html(html),
        )
            .into_response(),
        Err(e) => {
            crate::pages::HtmlError(ApiError::Internal(format!("login page: {e}"))).into_response()
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct LoginForm {
    key: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: a live key opens a session; anything else shows the form again.
pub(crate) async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return login_form(
            "/".into(),
            "The form was incomplete.".into(),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(form.next.as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !auth::constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        return login_form(
            next,
            "The login form expired; please sign in again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    let key = form.key.trim();
    match state.keys.authenticate(key).await {
        Ok(principal) => {
            let token = state.sessions.open(key);
            tracing::info!(key = %principal.key_id, role = %principal.role, "signed in");
            let mut response = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
            let headers = response.headers_mut();
            headers.append(
                SET_COOKIE,
                set_cookie(SESSION_COOKIE, &token, SESSION_TTL.as_secs()),
            );
            headers.append(SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
            response
        }
        Err(ApiError::Unauthorized(_)) => login_form(
            next,
            "That key is not valid.".into(),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => crate::pages::HtmlError(e).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: String,
}

/// `POST /logout`: ends the session.
pub(crate) async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let sent = form.map(|f| f.0.csrf).unwrap_or_default();
    if let Err(e) = viewer.check_csrf(&sent) {
        return crate::pages::HtmlError(e).into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.close(&token);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, HeaderValue::from_static("/login")),
            (SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0)),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(
            safe_next(Some("/margin?from=2026-11-01")),
            "/margin?from=2026-11-01"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "\\\\evil",
            "/\\evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; isometer_session=abc"),
        );
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "isometer"), None);
    }

    #[test]
    fn a_session_is_found_by_its_token_only_until_closed() {
        let sessions = Sessions::default();
        let token = sessions.open("ism_key");
        let s = sessions.get(&token).expect("open");
        assert_eq!(s.key, "ism_key");
        assert_eq!(s.csrf.len(), 32);
        assert!(sessions.get("not-the-token").is_none());
        sessions.close(&token);
        assert!(sessions.get(&token).is_none());
    }
}
