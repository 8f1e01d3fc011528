"""The official Anthropic SDK as a client of the gateway's `/v1/messages`,
to an Anthropic deployment (relayed as it is) and to an OpenAI-dialect one
(translated both ways).

Usage: gateway_anthropic.py BASE_URL API_KEY MODEL:DIALECT...
DIALECT is the deployment's: `anthropic`, `openai` or `azure`. The
deployments are `llm-proxy mock-upstream`s: its OpenAI-shaped routes answer
text only, so the tool_use checks run against Anthropic deployments; the
others check that a request with tools passes and is answered.

Prints `ok: <model>: <check>` for each check, and for every call it makes a
line `call: {"request_id", "model", "status", "usage", "cost"}` (usage the
answer's input and output tokens as `prompt_tokens` and
`completion_tokens`, or null; cost the `x-litellm-response-cost` header of a
whole answer, or null). Exits non-zero on the first failure.
"""

import json
import sys

import anthropic

BASE_URL, API_KEY = sys.argv[1], sys.argv[2]
MODELS = [arg.rsplit(":", 1) for arg in sys.argv[3:]]
for model, dialect in MODELS:
    assert dialect in ("openai", "azure", "anthropic"), f"unknown dialect {dialect} for {model}"

WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
HELLO = [{"role": "user", "content": "Hello there"}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
]
ASKED = [{"role": "user", "content": "Weather in Paris?"}]

client = anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0)
calls = 0


def ok(model, check):
    print(f"ok: {model}: {check}", flush=True)


def request_id(model):
    global calls
    calls += 1
    return f"sdk-{calls}-{model}"


def record(rid, model, status, usage, cost=None):
    line = {"request_id": rid, "model": model, "status": status, "usage": None, "cost": cost}
    if usage is not None:
        assert usage.input_tokens > 0 and usage.output_tokens > 0, usage
        line["usage"] = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens}
    print("call: " + json.dumps(line), flush=True)


def create(model, headers=None, **kwargs):
    """A whole answer, recorded with its cost header."""
    rid = request_id(model)
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=200, extra_headers={"x-request-id": rid, **(headers or {})}, **kwargs
    )
    message = raw.parse()
    assert raw.headers.get("x-request-id") == rid, raw.headers
    assert message.type == "message" and message.role == "assistant", message
    assert message.id.startswith("msg_"), message.id
    assert isinstance(message.model, str) and message.model, message
    cost = raw.headers.get("x-litellm-response-cost")
    record(rid, model, raw.status_code, message.usage, float(cost) if cost is not None else None)
    return message


def stream(model, headers=None, **kwargs):
    """The text and the final message of a streamed answer, recorded."""
    rid = request_id(model)
    with client.messages.stream(
        model=model, max_tokens=200, extra_headers={"x-request-id": rid, **(headers or {})}, **kwargs
    ) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    record(rid, model, 200, final.usage)
    return text, final


for model, dialect in MODELS:
    # messages.create: text, stop_reason, usage.
    message = create(model, messages=HELLO, headers={"x-mock-stream-chunks": "5"})
    assert [b.type for b in message.content] == ["text"], message.content
    assert message.content[0].text == " ".join(WORDS[:5]), message.content[0].text
    assert message.stop_reason == "end_turn", message.stop_reason
    assert message.usage.output_tokens == 5, message.usage
    ok(model, "messages.create")

    # messages.stream: the text, the final message and its usage.
    text, final = stream(model, messages=HELLO, headers={"x-mock-stream-chunks": "6"})
    assert text == " ".join(WORDS[:6]), text
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == text, final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens == 6 and final.usage.input_tokens > 0, final.usage
    ok(model, "messages.stream")

    if dialect == "anthropic":
        # Tools: a tool_use block parsed, then a tool_result round trip.
        message = create(model, messages=ASKED, tools=TOOLS)
        assert message.stop_reason == "tool_use", message.stop_reason
        (use,) = [b for b in message.content if b.type == "tool_use"]
        assert isinstance(use, anthropic.types.ToolUseBlock), type(use)
        assert use.name == "get_weather" and use.id, use
        assert isinstance(use.input["city"], str), use.input
        turns = ASKED + [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]},
        ]
        answer = create(model, messages=turns, tools=TOOLS)
        assert answer.stop_reason == "end_turn", answer.stop_reason
        assert answer.content[0].type == "text" and answer.content[0].text, answer.content
        ok(model, "tools round trip")

        # Streamed: input_json events add up to the same input.
        text, final = stream(model, messages=ASKED, tools=TOOLS)
        assert final.stop_reason == "tool_use", final.stop_reason
        (streamed,) = [b for b in final.content if b.type == "tool_use"]
        assert streamed.name == "get_weather" and streamed.input == use.input, (streamed, use)
        ok(model, "streamed tool_use")
    else:
        message = create(model, messages=ASKED, tools=TOOLS)
        assert message.stop_reason == "end_turn", message.stop_reason
        assert [b.type for b in message.content] == ["text"], message.content
        ok(model, "tools passed through")

    # count_tokens: Anthropic's own count; for an OpenAI-dialect deployment,
    # which has none to ask, the gateway's estimate (a token per four
    # characters of the text).
    rid = request_id(model)
    count = client.messages.count_tokens(model=model, messages=HELLO, extra_headers={"x-request-id": rid})
    assert isinstance(count.input_tokens, int) and count.input_tokens > 0, count
    record(rid, model, 200, None)
    ok(model, "messages.count_tokens" if dialect == "anthropic" else "messages.count_tokens estimated")

    # An upstream 429 is Anthropic's rate_limit_error.
    rid = request_id(model)
    try:
        client.messages.create(
            model=model,
            max_tokens=10,
            messages=HELLO,
            extra_headers={"x-request-id": rid, "x-mock-status": "429"},
        )
        raise AssertionError("no error for an upstream 429")
    except anthropic.RateLimitError as error:
        assert error.status_code == 429, error
        assert error.body["type"] == "error", error.body
        assert error.body["error"]["type"] == "rate_limit_error", error.body
        assert error.body["error"]["message"], error.body
        record(rid, model, 429, None)
    ok(model, "429 raises RateLimitError")

print("all gateway Messages checks passed", flush=True)
