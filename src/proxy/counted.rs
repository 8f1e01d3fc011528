//! The answer to a request the gateway counts itself: an Anthropic
//! client's `count_tokens` for a model whose deployment cannot count them
//! (see `plan::Target::Counted`).

use super::Session;
use crate::error::ProxyError;
use crate::http::io::{Reply, json_response, unix_nanos};

pub async fn answer(s: &mut Session<'_>, input_tokens: u64) -> Result<(), ProxyError> {
    let head = s.head;
    s.close |= !head.keep_alive || s.worker.draining();
    let body = format!("{{\"input_tokens\":{input_tokens}}}");
    let reply = Reply {
        close: s.close,
        head_only: false,
    };
    let request_id = s.request_id.as_str();
    s.conn.out.clear();
    json_response(
        &mut s.conn.out,
        http::StatusCode::OK,
        body.as_bytes(),
        &[("X-Request-ID", request_id.as_bytes())],
        reply,
    );
    s.status = 200;
    s.response_started = true;
    s.record.first_byte_ns = Some(unix_nanos());
    if !s.conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }
    s.record.response_complete = true;
    Ok(())
}
