//! The sign-in pages: plain HTML5 with inline CSS and no external assets,
//! readable on a phone. Every string that came from a user or a request is
//! escaped here; the element ids are what browser tests look for. The
//! header fields every page goes out with (no caching, the content security
//! policy) are the finisher's, `api::Answer::Page`.

use http::StatusCode;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111;background:#fff}\
h1{font-size:1.4rem}\
.code{font-family:ui-monospace,monospace;font-size:2rem;letter-spacing:.15em;font-weight:bold;padding:.5rem 1rem;border:2px solid #333;display:inline-block}\
label{display:block;margin-top:1rem;font-weight:600}\
input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}\
button{margin-top:1.25rem;font-size:1.1rem;padding:.6rem 1.4rem}\
.error{color:#a00000;font-weight:600}";

/// Text made safe for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `title` is plain text; `body` is HTML already escaped where needed.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · llm-proxy</title><style>{STYLE}</style></head>\
<body><main><h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
    )
}

fn code_block(user_code: &str) -> String {
    format!(
        "<p>Code: <span id=\"user-code\" class=\"code\">{}</span></p>\
<p>Check it matches the code in your terminal. If it does not, close this page.</p>",
        escape(user_code)
    )
}

/// The password form of a login.
pub fn sign_in(
    login_id: &str,
    csrf: &str,
    user_code: &str,
    email: &str,
    error: Option<&str>,
) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{code}{error}\
<form method=\"post\" action=\"/sso/login\">\
<input type=\"hidden\" name=\"login_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"email\">Email</label>\
<input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\">\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button id=\"sign-in\" type=\"submit\">Sign in</button></form>",
        code = code_block(user_code),
        id = escape(login_id),
        csrf = escape(csrf),
        email = escape(email),
    );
    page("Sign in to the CLI", &body)
}

/// After the provider named the user: approve the login for the terminal.
pub fn approve(login_id: &str, csrf: &str, user_code: &str, email: &str) -> String {
    let body = format!(
        "<p>Signed in as <strong>{email}</strong>.</p>{code}\
<form method=\"post\" action=\"/sso/cli/approve\">\
<input type=\"hidden\" name=\"login_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button id=\"approve\" type=\"submit\">Approve</button></form>",
        email = escape(email),
        code = code_block(user_code),
        id = escape(login_id),
        csrf = escape(csrf),
    );
    page("Approve the CLI sign-in", &body)
}

pub fn success(email: &str) -> String {
    let body = format!(
        "<p id=\"signed-in\">You are signed in as <strong>{}</strong>; return to your terminal.</p>\
<p>You can close this page.</p>",
        escape(email)
    );
    page("You are signed in", &body)
}

/// An error page with one clear sentence.
pub fn error(status: StatusCode, message: &str) -> String {
    let title = match status.as_u16() {
        400 => "This link does not match",
        403 => "Sign-in refused",
        404 => "Not found",
        410 => "This sign-in has expired",
        502 => "The identity provider failed",
        _ => "Sign-in failed",
    };
    let body = format!(
        "<p id=\"error\" class=\"error\" role=\"alert\">{}</p>",
        escape(message)
    );
    page(title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_strings_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = sign_in(
            "lg_\"><script>",
            "c",
            "<b>CODE</b>",
            "a@x\"onfocus=alert(1)",
            Some("<i>no</i>"),
        );
        assert!(!html.contains("<script>") && !html.contains("<b>") && !html.contains("<i>"));
        assert!(
            html.contains("value=\"a@x&quot;onfocus=alert(1)\""),
            "{html}"
        );
        for id in ["user-code", "email", "password", "sign-in"] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("<html lang=\"en\">") && html.contains("name=\"viewport\""));
        let html = error(StatusCode::FORBIDDEN, "No account for <alice@example.com>");
        assert!(html.contains("No account for &lt;alice@example.com&gt;"));
        let html = approve("lg_1", "c", "ABCD-EFGH", "a@x");
        assert!(html.contains("id=\"approve\"") && html.contains("ABCD-EFGH"));
    }
}
