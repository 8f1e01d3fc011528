//! Sign-in from the CLI, driven over HTTP the way the CLI and a browser
//! drive it: `POST /sso/cli/start`, the sign-in page (its cookie and form
//! token read from the HTML), the password form, the poll that hands out
//! the key once; the key's whoami and logout; the refusals (wrong password,
//! expired, unknown, without the poll secret, another browser, sign-in
//! off); the older LiteLLM CLI flow; and the audit log of it all.

use crate::common;

use std::time::{Duration, SystemTime};

use crate::common::*;
use serde_json::{Value, json};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A proxy with sign-in on, in front of `mock`, with the models `fast` and
/// `slow` registered and the user alice, who may use `fast` only.
pub(crate) fn start(mock: &Mock, extra: &[(&str, &str)]) -> Proxy {
    let mut builder = Proxy::for_mock(mock).env("EXPERIMENTAL_UI_LOGIN", "true");
    for (name, value) in extra {
        builder = builder.env(name, *value);
    }
    let proxy = builder.start();
    for name in ["fast", "slow"] {
        let body = json!({
            "model_name": name,
            "litellm_params": {
                "model": format!("openai/{name}-upstream"),
                "api_base": format!("{}/v1", mock.url()),
                "api_key": "sk-deployment",
            },
        });
        let response = proxy.manage("POST", "/model/new", Some(body));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({
            "user_email": EMAIL,
            "password": PASSWORD,
            "models": ["fast"],
            "auto_create_key": false,
        })),
    );
    assert_eq!(user.status, 200, "{}", user.text());
    assert!(user.json().get("password").is_none(), "{}", user.text());
    proxy
}

fn start_login(proxy: &Proxy, machine: &str) -> Value {
    let body = json!({"machine_id": machine, "hostname": "laptop"});
    let response = proxy.call(Req::post("/sso/cli/start", body.to_string()));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn poll(proxy: &Proxy, login: &Value) -> Response {
    let id = login["login_id"].as_str().unwrap();
    let secret = login["poll_secret"].as_str().unwrap();
    proxy.call(Req::get(&format!("/sso/cli/poll/{id}")).header("x-litellm-cli-poll-secret", secret))
}

/// The path and query of a URL the proxy made (its base is `http://proxy.test`).
fn local(url: &str) -> &str {
    url.strip_prefix("http://proxy.test")
        .unwrap_or_else(|| panic!("not a URL of this proxy: {url}"))
}

/// What a browser keeps from the sign-in page.
struct Browser {
    cookie: String,
    login_id: String,
    csrf: String,
}

/// The value of `name="<field>" value="..."` in a page.
fn hidden_field(html: &str, field: &str) -> String {
    let marker = format!("name=\"{field}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} in {html}"))
        + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

/// Opens the sign-in page as a browser does.
fn open_page(proxy: &Proxy, url: &str) -> (Response, Browser) {
    let page = proxy.call(Req::get(local(url)));
    assert_eq!(page.status, 200, "{}", page.text());
    let set_cookie = page.header("set-cookie").expect("a cookie").to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let html = page.text();
    let browser = Browser {
        cookie,
        login_id: hidden_field(&html, "login_id"),
        csrf: hidden_field(&html, "csrf"),
    };
    (page, browser)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        out.append_pair(name, value);
    }
    out.finish()
}

fn post_form(proxy: &Proxy, path: &str, cookie: Option<&str>, body: String) -> Response {
    let mut request = Req::new("POST", path)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    proxy.call(request)
}

fn sign_in(proxy: &Proxy, browser: &Browser, password: &str) -> Response {
    let body = form(&[
        ("login_id", &browser.login_id),
        ("csrf", &browser.csrf),
        ("email", EMAIL),
        ("password", password),
    ]);
    post_form(proxy, "/sso/login", Some(&browser.cookie), body)
}

/// A whole login of alice from `machine`; returns the poll's answer.
pub(crate) fn log_in(proxy: &Proxy, machine: &str) -> Value {
    let login = start_login(proxy, machine);
    let (_, browser) = open_page(proxy, login["verification_uri_complete"].as_str().unwrap());
    let signed_in = sign_in(proxy, &browser, PASSWORD);
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let ready = poll(proxy, &login);
    assert_eq!(ready.status, 200, "{}", ready.text());
    ready.json()
}

fn ask(proxy: &Proxy, key: &str, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key))
}

/// Asserts a JSON error with `code` and LiteLLM's top-level `detail`.
#[track_caller]
fn assert_login_error(response: &Response, status: u16, code: &str) {
    response.assert_error(status, code);
    let json = response.json();
    assert_eq!(json["detail"], json["error"]["message"], "{json}");
}

#[track_caller]
fn assert_page(response: &Response, status: u16, needle: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        response.headers
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    assert!(
        response.header("content-security-policy").is_some_and(|v| v
            .contains("default-src 'none'")
            && v.contains("frame-ancestors 'none'")),
        "{:?}",
        response.headers
    );
    assert!(
        response.text().contains(needle),
        "{needle:?} not in {}",
        response.text()
    );
}

fn audit_entries(proxy: &Proxy) -> Value {
    let response = proxy.manage("GET", "/manage/audit?path_prefix=/sso/", None);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["entries"].clone()
}

fn outcomes(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_password_sign_in_issues_a_key_once() {
    let mock = Mock::start();
    let proxy = start(&mock, &[]);
    let login = start_login(&proxy, "machine-1");
    let id = login["login_id"].as_str().unwrap();
    let code = login["user_code"].as_str().unwrap();
    assert!(id.starts_with("lg_"), "{login}");
    assert_eq!(code.len(), 9, "{login}");
    assert_eq!(login["expires_in"], 300);
    assert_eq!(login["interval"], 2);
    assert_eq!(
        login["verification_uri"],
        format!("http://proxy.test/sso/key/generate?source=litellm-cli&key={id}")
    );
    assert_eq!(
        poll(&proxy, &login).json(),
        json!({"status": "pending"}),
        "before signing in"
    );

    let (page, browser) = open_page(&proxy, login["verification_uri_complete"].as_str().unwrap());
    assert_page(&page, 200, code);
    assert!(page.text().contains("id=\"user-code\""));
    let set_cookie = page.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/sso"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    assert_eq!(browser.login_id, id);

    let signed_in = sign_in(&proxy, &browser, PASSWORD);
    assert_page(&signed_in, 200, "return to your terminal");

    let ready = poll(&proxy, &login);
    assert_eq!(ready.status, 200, "{}", ready.text());
    let ready = ready.json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["user_email"], EMAIL);
    assert_eq!(ready["user_role"], "internal_user");
    assert_eq!(ready["team_id"], Value::Null);
    assert!(
        ready["expires_at"].as_str().unwrap().ends_with('Z'),
        "{ready}"
    );
    let key = ready["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-"), "{ready}");

    // The key works, within its user's model allowlist.
    let answer = ask(&proxy, &key, "fast");
    assert_eq!(answer.status, 200, "{}", answer.text());
    ask(&proxy, &key, "slow").assert_error(401, "key_model_access_denied");

    // Handed out once.
    assert_login_error(&poll(&proxy, &login), 410, "login_expired");

    // whoami.
    let me = proxy.call(Req::get("/sso/cli/whoami").auth(&key));
    assert_eq!(me.status, 200, "{}", me.text());
    let me = me.json();
    assert_eq!(me["user_id"], ready["user_id"]);
    assert_eq!(me["user_email"], EMAIL);
    assert_eq!(me["user_role"], "internal_user");
    assert_eq!(me["key_id"], ready["key_id"]);
    assert_eq!(me["expires_at"], ready["expires_at"]);
    assert_eq!(me["models"], json!(["fast"]));
    assert_eq!(me["max_budget"], Value::Null);
    assert!(me["spend"].is_number(), "{me}");
    let metadata = proxy
        .manage("GET", &format!("/key/info?key={key}"), None)
        .json()["info"]["metadata"]
        .clone();
    assert_eq!(metadata["cli_login"]["machine"], "machine-1");
    assert_eq!(metadata["cli_login"]["hostname"], "laptop");
    assert_eq!(metadata["cli_login"]["via"], "password");
    assert_eq!(metadata["cli_login"]["login_id"], id);

    // A second login from the same machine replaces the first key; one
    // from another machine does not.
    let second = log_in(&proxy, "machine-1");
    let second_key = second["key"].as_str().unwrap().to_string();
    ask(&proxy, &key, "fast").assert_error(401, "invalid_api_key");
    assert_eq!(ask(&proxy, &second_key, "fast").status, 200);
    let other = log_in(&proxy, "machine-2");
    let other_key = other["key"].as_str().unwrap().to_string();
    assert_eq!(ask(&proxy, &second_key, "fast").status, 200);

    // Logout deletes the key; only keys issued by a login log out.
    let out = proxy.call(Req::post("/sso/cli/logout", "").auth(&second_key));
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(
        out.json(),
        json!({"status": "logged_out", "key_id": second["key_id"]})
    );
    ask(&proxy, &second_key, "fast").assert_error(401, "invalid_api_key");
    assert_login_error(
        &proxy.call(Req::post("/sso/cli/logout", "").auth(&second_key)),
        401,
        "invalid_api_key",
    );
    assert_login_error(
        &proxy.call(Req::post("/sso/cli/logout", "").auth(CLIENT_KEY)),
        403,
        "not_a_login_key",
    );
    assert_eq!(ask(&proxy, &other_key, "fast").status, 200);

    // The audit log has the sign-ins and the logout, and no secret.
    let entries = audit_entries(&proxy);
    assert_eq!(outcomes(&entries), ["logout", "login", "login", "login"]);
    let alice = format!("user:{}", ready["user_id"].as_str().unwrap());
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == alice),
        "{entries}"
    );
    assert_eq!(entries[0]["target"], "/sso/cli/logout");
    assert_eq!(entries[1]["target"], "/sso/login");
    let whole = proxy.manage("GET", "/manage/audit?limit=1000", None).text();
    for secret in [
        PASSWORD,
        login["poll_secret"].as_str().unwrap(),
        browser.cookie.split('=').nth(1).unwrap(),
        &key,
        &second_key,
        &other_key,
    ] {
        assert!(
            !whole.contains(secret),
            "{secret} in the audit log: {whole}"
        );
    }
    assert!(!proxy.log().contains(PASSWORD));
}

#[test]
fn wrong_passwords_are_refused_and_five_end_the_login() {
    let mock = Mock::start();
    let proxy = start(&mock, &[]);
    let login = start_login(&proxy, "m");
    let (_, browser) = open_page(&proxy, login["verification_uri"].as_str().unwrap());
    let wrong = sign_in(&proxy, &browser, "wrong");
    assert_page(&wrong, 401, "Wrong email or password. 4 tries left.");
    // The form comes back, ready for another try.
    assert!(wrong.text().contains("id=\"password\""));
    assert_eq!(poll(&proxy, &login).json(), json!({"status": "pending"}));
    // An unknown email is the same wrong answer.
    let body = form(&[
        ("login_id", &browser.login_id),
        ("csrf", &browser.csrf),
        ("email", "nobody@example.com"),
        ("password", PASSWORD),
    ]);
    assert_page(
        &post_form(&proxy, "/sso/login", Some(&browser.cookie), body),
        401,
        "3 tries left",
    );
    for _ in 0..2 {
        assert_eq!(sign_in(&proxy, &browser, "wrong").status, 401);
    }
    assert_page(
        &sign_in(&proxy, &browser, "wrong"),
        403,
        "5 wrong passwords",
    );
    assert_login_error(&poll(&proxy, &login), 403, "login_refused");
    // Refused for good, even with the right password now.
    assert_page(&sign_in(&proxy, &browser, PASSWORD), 403, "refused");
    assert_login_error(&poll(&proxy, &login), 403, "login_refused");

    let entries = audit_entries(&proxy);
    let found = outcomes(&entries);
    assert_eq!(found.iter().filter(|o| *o == "wrong_password").count(), 5);
    assert_eq!(found[0], "login_refused", "{found:?}");
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "unauthenticated" && e["target"] == "/sso/login")
    );
    assert!(!entries.to_string().contains(PASSWORD));
}

#[test]
fn polls_need_a_known_fresh_login_and_its_secret() {
    let mock = Mock::start();
    let proxy = start(&mock, &[("CLI_LOGIN_TIMEOUT", "1s")]);
    assert_login_error(
        &proxy.call(Req::get("/sso/cli/poll/lg_unknown").header("x-litellm-cli-poll-secret", "x")),
        404,
        "login_not_found",
    );
    // No id, or one longer than any login's, is unknown too (not a store error).
    let long = "x".repeat(600);
    for id in ["", long.as_str()] {
        let poll =
            Req::get(&format!("/sso/cli/poll/{id}")).header("x-litellm-cli-poll-secret", "x");
        assert_login_error(&proxy.call(poll), 404, "login_not_found");
    }
    let page = proxy.call(Req::get(&format!(
        "/sso/key/generate?source=litellm-cli&key={long}"
    )));
    assert_page(&page, 404, "");
    let login = start_login(&proxy, "m");
    // The login's second (the shortest lifetime `expires_in` can show)
    // began before the answer arrived, so it ends by then.
    let ended_by = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(login["expires_in"], 1);
    let id = login["login_id"].as_str().unwrap();
    assert_login_error(
        &proxy.call(Req::get(&format!("/sso/cli/poll/{id}"))),
        403,
        "poll_secret_required",
    );
    assert_login_error(
        &proxy.call(
            Req::get(&format!("/sso/cli/poll/{id}")).header("x-litellm-cli-poll-secret", "wrong"),
        ),
        403,
        "poll_secret_required",
    );
    sleep_until_time(ended_by);
    assert_login_error(&poll(&proxy, &login), 410, "login_expired");
    let page = proxy.call(Req::get(local(login["verification_uri"].as_str().unwrap())));
    assert_page(&page, 410, "expired");
    // Sign-in calls are counted with the gateway's own endpoints.
    let metrics = proxy.call(Req::get("/metrics")).text();
    assert_eq!(local_requests(&metrics, "404"), 4, "{metrics}");
    assert_eq!(local_requests(&metrics, "403"), 2, "{metrics}");
    assert_eq!(local_requests(&metrics, "410"), 2, "{metrics}");
}

/// `llm_proxy_requests_total` of route `local` with this status, over workers.
fn local_requests(metrics: &str, status: &str) -> u64 {
    let status = format!("status=\"{status}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("llm_proxy_requests_total{"))
        .filter(|l| l.contains("route=\"local\"") && l.contains(&status))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn pages_belong_to_the_browser_that_opened_them() {
    let mock = Mock::start();
    let proxy = start(&mock, &[]);
    let login = start_login(&proxy, "m");
    let (_, browser) = open_page(&proxy, login["verification_uri"].as_str().unwrap());
    let fields = [
        ("login_id", browser.login_id.as_str()),
        ("csrf", browser.csrf.as_str()),
        ("email", EMAIL),
        ("password", PASSWORD),
    ];
    // No cookie, another cookie, a wrong form token: refused, nothing signed in.
    assert_page(
        &post_form(&proxy, "/sso/login", None, form(&fields)),
        403,
        "another browser",
    );
    let stranger = format!("llm_proxy_login={}", "A".repeat(43));
    assert_page(
        &post_form(&proxy, "/sso/login", Some(&stranger), form(&fields)),
        403,
        "another browser",
    );
    let mut forged = fields;
    forged[1] = ("csrf", "forged");
    assert_page(
        &post_form(&proxy, "/sso/login", Some(&browser.cookie), form(&forged)),
        403,
        "out of date",
    );
    assert_eq!(poll(&proxy, &login).json(), json!({"status": "pending"}));
    // A link whose code is not the login's.
    let id = login["login_id"].as_str().unwrap();
    let mismatched = proxy.call(Req::get(&format!(
        "/sso/key/generate?source=litellm-cli&key={id}&user_code=XXXX-XXXX"
    )));
    assert_page(&mismatched, 400, "not this login");
    // An unknown login, and user strings escaped on the way back.
    let unknown = proxy.call(Req::get(
        "/sso/key/generate?source=litellm-cli&key=lg_%3Cb%3E",
    ));
    assert_page(&unknown, 404, "no such login");
    // The right browser still signs in.
    assert_eq!(sign_in(&proxy, &browser, PASSWORD).status, 200);
    assert_eq!(poll(&proxy, &login).json()["status"], "ready");
}

#[test]
fn sign_in_off_answers_404_but_keys_still_know_themselves() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    assert_login_error(
        &proxy.call(Req::post("/sso/cli/start", "{}")),
        404,
        "login_disabled",
    );
    assert_login_error(
        &proxy.call(Req::get("/sso/cli/poll/lg_x")),
        404,
        "login_disabled",
    );
    assert_page(
        &proxy.call(Req::get(
            "/sso/key/generate?source=litellm-cli&key=sk-abcdefgh-1234",
        )),
        404,
        "not enabled",
    );
    let me = proxy.call(Req::get("/sso/cli/whoami").auth(CLIENT_KEY));
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["user_id"], Value::Null);
    assert_login_error(
        &proxy.call(Req::get("/sso/cli/whoami")),
        401,
        "missing_api_key",
    );
    assert_login_error(
        &proxy.call(Req::post("/sso/cli/logout", "").auth(CLIENT_KEY)),
        403,
        "not_a_login_key",
    );
}

#[test]
fn the_older_litellm_flow_polls_without_a_secret() {
    let mock = Mock::start();
    let proxy = start(&mock, &[]);
    let made_up = "sk-5f0c8a1e-7d2b-4c3e-9a6f-0b1d2e3f4a5b";
    let url = format!("http://proxy.test/sso/key/generate?source=litellm-cli&key={made_up}");
    let poll_legacy = || proxy.call(Req::get(&format!("/sso/cli/poll/{made_up}")));
    // Unknown until the browser opens the page.
    assert_login_error(&poll_legacy(), 404, "login_not_found");
    let (_, browser) = open_page(&proxy, &url);
    assert_eq!(browser.login_id, made_up);
    assert_eq!(poll_legacy().json(), json!({"status": "pending"}));
    assert_eq!(sign_in(&proxy, &browser, PASSWORD).status, 200);
    let ready = poll_legacy();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let key = ready.json()["key"].as_str().unwrap().to_string();
    assert_ne!(key, made_up, "the key is the proxy's own, not the id");
    assert_eq!(ask(&proxy, &key, "fast").status, 200);
    assert_login_error(&poll_legacy(), 410, "login_expired");

    let strict = start(&mock, &[("CLI_LOGIN_LEGACY", "false")]);
    let page = strict.call(Req::get(local(&url)));
    assert_page(&page, 404, "no such login");
    assert_login_error(
        &strict.call(Req::get(&format!("/sso/cli/poll/{made_up}"))),
        404,
        "login_not_found",
    );
}

#[test]
fn an_unreachable_identity_provider_is_a_502_page() {
    let mock = Mock::start();
    // Nothing listens on port 1 of the loopback address.
    let proxy = start(
        &mock,
        &[
            ("OIDC_ISSUER", "http://127.0.0.1:1"),
            ("OIDC_CLIENT_ID", "llm-proxy"),
        ],
    );
    let login = start_login(&proxy, "m");
    let page = proxy.call(Req::get(local(
        login["verification_uri_complete"].as_str().unwrap(),
    )));
    assert_page(&page, 502, "identity provider");
    assert_eq!(poll(&proxy, &login).json(), json!({"status": "pending"}));
    // A callback that names no login of ours.
    let callback = proxy.call(Req::get("/sso/callback?state=unknown&error=access_denied"));
    assert_page(&callback, 404, "no such login");
    // With a provider there is no password form to post to.
    let body = form(&[("login_id", login["login_id"].as_str().unwrap())]);
    assert_eq!(post_form(&proxy, "/sso/login", None, body).status, 404);
}

/// An HTTPS server on 127.0.0.1 with a certificate of its own CA-less kind
/// (self-signed), answering every request with `issuer`'s discovery
/// document. Returns the issuer URL and the certificate (PEM).
fn tls_discovery_server() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("https://{}", listener.local_addr().unwrap());
    let document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "code_challenge_methods_supported": ["S256"],
    })
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, &mut stream);
            // A failed handshake (a client that does not trust us) ends here.
            if common::cli::read_request(&mut tls).is_none() {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{document}",
                document.len()
            );
            let _ = std::io::Write::write_all(&mut tls, answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = std::io::Write::flush(&mut tls);
        }
    });
    (issuer, pem)
}

#[test]
fn a_provider_behind_a_private_ca_is_trusted_with_oidc_ca_file() {
    let mock = Mock::start();
    let (issuer, pem) = tls_discovery_server();
    let dir = TempDir::new("oidc-ca");
    let ca = dir.write("idp-ca.pem", &pem);
    let oidc = [
        ("OIDC_ISSUER", issuer.as_str()),
        ("OIDC_CLIENT_ID", "llm-proxy"),
    ];
    // The public roots do not know the provider's certificate: 502.
    let proxy = start(&mock, &oidc);
    let login = start_login(&proxy, "m");
    let link = login["verification_uri_complete"].as_str().unwrap();
    assert_page(&proxy.call(Req::get(local(link))), 502, "identity provider");
    drop(proxy);
    // With OIDC_CA_FILE, discovery works and the browser goes to the provider.
    let ca = ca.display().to_string();
    let proxy = start(&mock, &[oidc[0], oidc[1], ("OIDC_CA_FILE", ca.as_str())]);
    let login = start_login(&proxy, "m");
    let link = login["verification_uri_complete"].as_str().unwrap();
    let page = proxy.call(Req::get(local(link)));
    assert_eq!(page.status, 302, "{}", page.text());
    let location = page.header("location").unwrap_or_default();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
}

#[test]
fn user_update_changes_and_clears_the_password() {
    let mock = Mock::start();
    let proxy = start(&mock, &[]);
    let info = proxy.manage("GET", "/user/list", None).json();
    let user_id = info["users"][0]["user_id"].as_str().unwrap().to_string();
    assert!(!info.to_string().contains("argon2"), "{info}");
    let update = |password: Value| {
        let body = json!({"user_id": user_id, "password": password});
        let response = proxy.manage("POST", "/user/update", Some(body));
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(!response.text().contains("password"), "{}", response.text());
    };
    let try_password = |password: &str| {
        let login = start_login(&proxy, "m");
        let (_, browser) = open_page(&proxy, login["verification_uri"].as_str().unwrap());
        sign_in(&proxy, &browser, password).status
    };
    update(json!("a new passphrase"));
    assert_eq!(try_password(PASSWORD), 401);
    assert_eq!(try_password("a new passphrase"), 200);
    update(Value::Null);
    assert_eq!(try_password("a new passphrase"), 401);
    update(json!("again"));
    update(json!(""));
    assert_eq!(try_password("again"), 401);
    // The audit log keeps the updates, without the passwords.
    let log = proxy.manage("GET", "/manage/audit?limit=1000", None).text();
    assert!(!log.contains("a new passphrase") && !log.contains(PASSWORD));
}
