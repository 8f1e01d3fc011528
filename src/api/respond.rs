//! The one finisher of every local endpoint (`/health`, `/metrics`, the
//! management APIs, sign-in): a handler makes a `Local` when the request
//! arrives, computes its `Answer` (or an error), and `Local::respond` counts
//! it in the worker's metrics, writes it with the request id, announces
//! `Connection: close` when the connection ends, sends it, and says whether
//! the connection stays open.
//!
//! What stays with each handler: who may call, reading its body, computing
//! the answer, the metrics label when it is not `Endpoint::Local`, and
//! anything between counting and sending (the management audit record,
//! with `count` and `send` called apart).

use std::time::Instant;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::downstream::ClientConn;
use crate::error::{ErrorStyle, ProxyError};
use crate::http::RequestHead;
use crate::http::io::{Reply, body_response, header, json_response, status_line};
use crate::metrics::Endpoint;
use crate::worker::Worker;

/// What a local endpoint answers. Each kind has its fixed header fields,
/// in a fixed order, around `X-Request-ID`.
pub enum Answer {
    /// JSON with a status.
    Json(StatusCode, Value),
    /// JSON that no cache may keep (a key, a login's state):
    /// `Cache-Control: no-store` after `X-Request-ID`.
    JsonNoStore(StatusCode, Value),
    /// 204: no body, no `Content-Type`, no `Content-Length`.
    NoContent,
    /// An HTML page, with the fields every sign-in page carries (`PAGE_FIELDS`).
    Page {
        status: StatusCode,
        html: String,
        /// A `Set-Cookie` value.
        cookie: Option<String>,
    },
    /// 302 to `location`, with the page fields and no body.
    Redirect {
        location: String,
        /// A `Set-Cookie` value.
        cookie: Option<String>,
    },
    /// 200 with a body of another type (the Prometheus text), which no cache
    /// may keep: `Cache-Control: no-store` before `X-Request-ID`.
    Body {
        content_type: &'static str,
        body: String,
    },
}

/// An answer, or the error that is answered instead.
pub type Outcome = Result<Answer, ProxyError>;

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Json(status, _)
            | Answer::JsonNoStore(status, _)
            | Answer::Page { status, .. } => *status,
            Answer::NoContent => StatusCode::NO_CONTENT,
            Answer::Redirect { .. } => StatusCode::FOUND,
            Answer::Body { .. } => StatusCode::OK,
        }
    }
}

/// How a local endpoint writes its errors.
#[derive(Debug, Clone, Copy)]
pub enum Errors {
    /// The JSON envelope in this style. An error after which the connection
    /// cannot be trusted (`ProxyError::must_close`) announces
    /// `Connection: close`.
    Json(ErrorStyle),
    /// An HTML page, its markup made from the status and the message (the
    /// sign-in pages a browser opens).
    Page(fn(StatusCode, &str) -> String),
}

/// One local request, from its arrival to its answer.
pub struct Local {
    /// The client's `X-Request-ID` (if usable) or a new one; every answer
    /// carries it.
    pub request_id: String,
    /// Where the duration counted in the metrics starts.
    pub received: Instant,
    /// The metrics label the request is counted under.
    pub endpoint: Endpoint,
    pub errors: Errors,
    /// The connection ends after the answer: the client or a drain asked for
    /// it, or the handler could not consume the request's body.
    pub close: bool,
    /// Answering `HEAD`: the head of the answer, without its body.
    pub head_only: bool,
    /// Shared mode, a write asked to wait for the nodes: how many applied
    /// it (`X-Nodes-Applied`, on JSON and empty answers).
    pub nodes_applied: Option<String>,
}

impl Local {
    /// A request that arrives now, counted under `Endpoint::Local`, its errors
    /// in the OpenAI envelope.
    pub fn new(worker: &Worker, conn: &ClientConn, head: &RequestHead) -> Local {
        Local {
            request_id: crate::http::request_id::request_id(head, &conn.buf),
            received: Instant::now(),
            endpoint: Endpoint::Local,
            errors: Errors::Json(ErrorStyle::OpenAi),
            close: !head.keep_alive || worker.draining(),
            head_only: head.method == Method::HEAD,
            nodes_applied: None,
        }
    }

    /// Counts, writes and sends `answer`; whether the connection stays open.
    pub async fn respond(self, worker: &Worker, conn: &mut ClientConn, answer: Outcome) -> bool {
        self.count(worker, &answer);
        self.send(conn, answer).await
    }

    /// Counts the request in the worker's metrics, before its answer goes
    /// out, so that a scrape that follows the answer sees it; returns the
    /// answer's status.
    pub fn count(&self, worker: &Worker, answer: &Outcome) -> StatusCode {
        let status = match answer {
            Ok(answer) => answer.status(),
            Err(error) => error.status(),
        };
        if let Some(mut metrics) = worker.metrics() {
            metrics.record_local(self.endpoint, status.as_u16(), self.received.elapsed());
        }
        status
    }

    /// Writes and sends `answer` without counting it; whether the connection
    /// stays open.
    pub async fn send(self, conn: &mut ClientConn, answer: Outcome) -> bool {
        self.write(&mut conn.out, &answer);
        conn.send_out().await && !self.closes(&answer)
    }

    /// Whether the connection ends after `answer`: as decided on arrival, or
    /// after a JSON error that leaves the connection untrustworthy
    /// (`ProxyError::must_close`), which announces it.
    fn closes(&self, answer: &Outcome) -> bool {
        self.close
            || matches!((answer, self.errors), (Err(error), Errors::Json(_)) if error.must_close())
    }

    fn write(&self, out: &mut Vec<u8>, answer: &Outcome) {
        let id = self.request_id.as_bytes();
        let reply = Reply {
            close: self.close,
            head_only: self.head_only,
        };
        match answer {
            Ok(Answer::Json(status, value)) => {
                let body = serde_json::to_vec(value).unwrap_or_default();
                let mut extra: Vec<(&str, &[u8])> = vec![("X-Request-ID", id)];
                if let Some(nodes) = &self.nodes_applied {
                    extra.push(("X-Nodes-Applied", nodes.as_bytes()));
                }
                json_response(out, *status, &body, &extra, reply);
            }
            Ok(Answer::JsonNoStore(status, value)) => {
                let body = serde_json::to_vec(value).unwrap_or_default();
                let mut extra: Vec<(&str, &[u8])> =
                    vec![("X-Request-ID", id), ("Cache-Control", b"no-store")];
                if let Some(nodes) = &self.nodes_applied {
                    extra.push(("X-Nodes-Applied", nodes.as_bytes()));
                }
                json_response(out, *status, &body, &extra, reply);
            }
            Ok(Answer::NoContent) => {
                status_line(out, StatusCode::NO_CONTENT);
                header(out, "X-Request-ID", id);
                if let Some(nodes) = &self.nodes_applied {
                    header(out, "X-Nodes-Applied", nodes.as_bytes());
                }
                if self.close {
                    out.extend_from_slice(b"Connection: close\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
            Ok(Answer::Page {
                status,
                html,
                cookie,
            }) => {
                let mut extra: Vec<(&str, &[u8])> = vec![("X-Request-ID", id)];
                if let Some(cookie) = cookie {
                    extra.push(("Set-Cookie", cookie.as_bytes()));
                }
                write_page(out, *status, html, &extra, reply);
            }
            Ok(Answer::Redirect { location, cookie }) => {
                let mut extra: Vec<(&str, &[u8])> =
                    vec![("X-Request-ID", id), ("Location", location.as_bytes())];
                if let Some(cookie) = cookie {
                    extra.push(("Set-Cookie", cookie.as_bytes()));
                }
                write_page(out, StatusCode::FOUND, "", &extra, reply);
            }
            Ok(Answer::Body { content_type, body }) => {
                let extra: [(&str, &[u8]); 2] =
                    [("Cache-Control", b"no-store"), ("X-Request-ID", id)];
                let content_type = content_type.as_bytes();
                body_response(
                    out,
                    StatusCode::OK,
                    content_type,
                    body.as_bytes(),
                    &extra,
                    reply,
                );
            }
            Err(error) => match self.errors {
                Errors::Json(style) => {
                    let reply = Reply {
                        close: self.closes(answer),
                        ..reply
                    };
                    error.render_as(style, out, &self.request_id, reply);
                }
                Errors::Page(page) => {
                    let html = page(error.status(), &error.to_string());
                    write_page(out, error.status(), &html, &[("X-Request-ID", id)], reply);
                }
            },
        }
    }
}

/// No script, no outside resource; forms post only back here; no framing.
const CSP: &[u8] =
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// The fields every page carries, before `extra`.
const PAGE_FIELDS: [(&str, &[u8]); 4] = [
    ("Cache-Control", b"no-store"),
    ("Content-Security-Policy", CSP),
    ("Referrer-Policy", b"no-referrer"),
    ("X-Content-Type-Options", b"nosniff"),
];

/// An HTML page: `PAGE_FIELDS`, then `extra`.
fn write_page(
    out: &mut Vec<u8>,
    status: StatusCode,
    html: &str,
    extra: &[(&str, &[u8])],
    reply: Reply,
) {
    let mut fields: Vec<(&str, &[u8])> = PAGE_FIELDS.to_vec();
    fields.extend_from_slice(extra);
    let content_type = b"text/html; charset=utf-8";
    body_response(out, status, content_type, html.as_bytes(), &fields, reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(close: bool, errors: Errors) -> Local {
        Local {
            request_id: "r".into(),
            received: Instant::now(),
            endpoint: Endpoint::Local,
            errors,
            close,
            head_only: false,
            nodes_applied: None,
        }
    }

    fn written(local: &Local, answer: Outcome) -> String {
        let mut out = Vec::new();
        local.write(&mut out, &answer);
        String::from_utf8(out).unwrap()
    }

    fn announces_close(text: &str) -> bool {
        let head = text.split("\r\n\r\n").next().unwrap();
        head.split("\r\n").any(|line| line == "Connection: close")
    }

    fn answers() -> Vec<Outcome> {
        vec![
            Ok(Answer::Json(StatusCode::OK, serde_json::json!({"a": 1}))),
            Ok(Answer::JsonNoStore(StatusCode::OK, serde_json::json!({}))),
            Ok(Answer::NoContent),
            Ok(Answer::Page {
                status: StatusCode::OK,
                html: "<p>".into(),
                cookie: Some("c=1".into()),
            }),
            Ok(Answer::Redirect {
                location: "/x".into(),
                cookie: None,
            }),
            Ok(Answer::Body {
                content_type: "text/plain",
                body: "x 1\n".into(),
            }),
            Err(ProxyError::NotFound),
        ]
    }

    /// The connection's end is announced by every kind of answer, and only then.
    #[test]
    fn close_is_announced_when_the_connection_ends() {
        let page = Errors::Page(|_, message| message.to_string());
        for errors in [Errors::Json(ErrorStyle::OpenAi), page] {
            for close in [false, true] {
                for answer in answers() {
                    let text = written(&local(close, errors), answer);
                    assert_eq!(announces_close(&text), close, "{text}");
                }
            }
        }
        let text = written(&local(true, page), Ok(Answer::NoContent));
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\nX-Request-ID: r\r\nConnection: close\r\n\r\n"
        );
    }

    /// A JSON error after which the connection cannot be trusted announces
    /// its end even on a kept-alive connection; an error page does not.
    #[test]
    fn an_error_that_must_close_announces_it_in_json_only() {
        let error = || Err(ProxyError::BadRequest("no".into()));
        let json = local(false, Errors::Json(ErrorStyle::WithDetail));
        assert!(announces_close(&written(&json, error())));
        // What is announced is done: the connection is not read again.
        assert!(json.closes(&error()));
        let page = local(false, Errors::Page(|_, message| message.to_string()));
        assert!(!announces_close(&written(&page, error())));
        assert!(!page.closes(&error()));
        // Every kind of answer: closed exactly when announced.
        for at in 0..answers().len() {
            let announced = announces_close(&written(&json, answers().remove(at)));
            assert_eq!(json.closes(&answers().remove(at)), announced);
        }
    }
}
