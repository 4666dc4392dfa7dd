//! Console visitors for the integration tests: a signed-in user over real HTTP, cookies passed by
//! hand and redirects not followed, as console_auth.rs first wrote them. Shared by every
//! console_*.rs test module; keep additions here additive.

use super::TestApp;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;

pub const PASSWORD: &str = "correct horse battery";

/// A console visitor: no redirects followed, cookies passed by hand.
pub struct Visitor<'a> {
    pub app: &'a TestApp,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
}

impl<'a> Visitor<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { app, http, cookie: None }
    }

    pub fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => request.header(COOKIE, c),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.with_cookie(self.http.get(self.app.url(path))).send().await.unwrap()
    }

    /// A form POST as a browser on a page of the console sends it (same-origin).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let request = self.http.post(self.app.url(path)).header("Origin", &self.app.base).header("Sec-Fetch-Site", "same-origin");
        self.with_cookie(request).form(fields).send().await.unwrap()
    }

    /// Keep the session cookie a response sets.
    pub fn keep_cookie(&mut self, response: &reqwest::Response) {
        if let Some(set) = session_set_cookie(response) {
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> reqwest::Response {
        let response = self.post("/console/sign-in", &[("email", email), ("password", password)]).await;
        self.keep_cookie(&response);
        response
    }

    /// This session's form token, read from a page.
    pub async fn csrf(&self) -> String {
        let html = self.get("/console").await.text().await.unwrap();
        let at = html.find("name=\"_csrf\" value=\"").expect("the page has a form token") + 20;
        html[at..at + 64].to_owned()
    }

    pub async fn signed_in(&self) -> bool {
        self.get("/console").await.status() == StatusCode::OK
    }
}

pub fn session_set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-wzb_session="))
        .map(str::to_owned)
}

/// `bridge users invite`; the path of the printed link.
pub async fn invite(app: &TestApp, account: &str, email: &str, role: &str) -> String {
    let out = app.cli(&["users", "invite", "--account", account, "--email", email, "--role", role, "--json"]).await.json();
    let link = out["link"].as_str().unwrap();
    assert!(link.starts_with("http://127.0.0.1:8080/console/invite/"), "{link}");
    link.trim_start_matches("http://127.0.0.1:8080").to_owned()
}

/// An invited user who followed the link and set a password: signed in.
pub async fn user<'a>(app: &'a TestApp, account: &str, email: &str, role: &str) -> Visitor<'a> {
    let path = invite(app, account, email, role).await;
    let mut visitor = Visitor::new(app);
    let response = visitor.post(&path, &[("password", PASSWORD), ("confirm", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    visitor.keep_cookie(&response);
    visitor
}

/// The id of the console user with this email.
pub async fn user_id(app: &TestApp, email: &str) -> String {
    sqlx::query_scalar("SELECT user_id FROM console_users WHERE email = $1").bind(email).fetch_one(&app.db.pool).await.unwrap()
}
