//! `http request METHOD PATH [--json JSON | --data DATA] [-H "Name: value"]`:
//! any request to the proxy, with the API key when one is set; the answer's
//! body is printed (JSON indented, anything else as it came).

use std::io::Read;

use serde_json::Value;
use ureq::http::{HeaderName, HeaderValue, Method};

use super::quoted;
use crate::cli::litellm::HttpRequestArgs;
use crate::cmd::output::pretty;
use crate::http_client::{Client, ClientError};

/// A request checked and ready to send.
#[derive(Debug)]
pub(super) struct Plan {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

pub(super) fn plan(args: &HttpRequestArgs) -> Result<Plan, ClientError> {
    let method =
        Method::from_bytes(args.method.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
            ClientError::Usage(format!("{} is not an HTTP method", quoted(&args.method)))
        })?;
    let path = args.path.trim();
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Usage(format!(
            "PATH {} must start with / and be percent-encoded ASCII without spaces",
            quoted(path)
        )));
    }
    let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
    let mut content_type = None;
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.clone());
        }
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
    let body = match (&args.json, &args.data) {
        (Some(json), _) => {
            serde_json::from_str::<Value>(json)
                .map_err(|e| ClientError::Usage(format!("invalid JSON in --json: {e}")))?;
            content_type.get_or_insert_with(|| "application/json".into());
            Some(json.clone().into_bytes())
        }
        (None, Some(data)) => {
            let bytes = read_data(data)?;
            let is_json = serde_json::from_slice::<Value>(&bytes).is_ok();
            content_type.get_or_insert_with(|| {
                if is_json {
                    "application/json".into()
                } else {
                    "application/x-www-form-urlencoded".into()
                }
            });
            Some(bytes)
        }
        (None, None) => None,
    };
    if body.is_some()
        && let Some(content_type) = content_type
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), content_type));
    }
    Ok(Plan {
        method,
        path: path.to_string(),
        headers,
        body,
    })
}

pub(super) fn run(client: &Client, plan: &Plan) -> Result<String, ClientError> {
    let answer = client
        .send(
            plan.method.clone(),
            &plan.path,
            &plan.headers,
            plan.body.clone(),
        )
        .map_err(|error| error.not_found(&format!("path {}", quoted(&plan.path))))?;
    if answer.body.is_empty() {
        return Ok(String::new());
    }
    if let Ok(json) = serde_json::from_slice::<Value>(&answer.body) {
        return Ok(pretty(&json));
    }
    let mut text = String::from_utf8_lossy(&answer.body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `Name: value` (or `Name:value`), both parts valid in HTTP.
fn parse_header(text: &str) -> Result<(String, String), ClientError> {
    let invalid = || {
        ClientError::Usage(format!(
            "-H {} is not a header: use \"Name: value\"",
            quoted(text)
        ))
    };
    let (name, value) = text.split_once(':').ok_or_else(invalid)?;
    let (name, value) = (name.trim(), value.trim());
    if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
        return Err(invalid());
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--data`: the text itself, or `@FILE`'s contents, or `@-` for stdin.
fn read_data(data: &str) -> Result<Vec<u8>, ClientError> {
    let Some(source) = data.strip_prefix('@') else {
        return Ok(data.as_bytes().to_vec());
    };
    let read = if source == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(source)
    };
    read.map_err(|e| ClientError::Usage(format!("cannot read --data {data}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(method: &str, path: &str) -> HttpRequestArgs {
        HttpRequestArgs {
            method: method.into(),
            path: path.into(),
            json: None,
            data: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn json_body_and_headers() {
        let mut request = args("post", "/chat/completions");
        request.json = Some(r#"{"model": "gpt-4"}"#.into());
        request.headers = vec!["X-Trace: 1".into(), "accept:text/plain".into()];
        let plan = plan(&request).unwrap();
        assert_eq!(plan.method, Method::POST);
        assert_eq!(
            plan.body.as_deref(),
            Some(br#"{"model": "gpt-4"}"#.as_slice())
        );
        assert_eq!(
            plan.headers,
            [
                ("X-Trace".to_string(), "1".to_string()),
                ("accept".into(), "text/plain".into()),
                ("Content-Type".into(), "application/json".into()),
            ]
        );
    }

    #[test]
    fn mistakes_are_found_before_sending() {
        let mut bad_json = args("POST", "/x");
        bad_json.json = Some("{nope".into());
        let mut bad_header = args("GET", "/x");
        bad_header.headers = vec!["NoColon".into()];
        let cases = [
            (args("GE T", "/x"), "is not an HTTP method"),
            (args("GET", "x"), "must start with /"),
            (args("GET", "/a b"), "must start with /"),
            (bad_json, "invalid JSON in --json"),
            (bad_header, "is not a header"),
        ];
        for (request, needle) in cases {
            let error = plan(&request).unwrap_err();
            assert_eq!(error.exit_code(), 1);
            assert!(error.to_string().contains(needle), "{error}");
        }
    }

    #[test]
    fn data_is_sent_as_it_is() {
        let mut request = args("POST", "/x");
        request.data = Some("a=1&b=2".into());
        let plan = plan(&request).unwrap();
        assert_eq!(plan.body.as_deref(), Some(b"a=1&b=2".as_slice()));
        assert!(plan.headers.contains(&(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into()
        )));
        let mut request = args("POST", "/x");
        request.data = Some("@/nonexistent/file".into());
        assert!(super::plan(&request).is_err());
    }
}
