"""The official OpenAI SDK as a client of the gateway (`llm-proxy server`),
against deployments of every dialect it speaks.

Usage: gateway_openai.py BASE_URL API_KEY MODEL:DIALECT...
DIALECT is the deployment's: `openai`, `azure` or `anthropic`. The
deployments are `llm-proxy mock-upstream`s: its OpenAI-shaped routes (OpenAI
and Azure) answer text only, so the tool checks that need a tool call run
against Anthropic deployments; the others check that a request with tools
passes and is answered.

Prints `ok: <model>: <check>` for each check, and for every call it makes a
line `call: {"request_id", "model", "status", "usage", "cost"}` (usage the
answer's `prompt_tokens` and `completion_tokens`, or null; cost the
`x-litellm-response-cost` header of a whole answer, or null) so that the
caller can match its spend and its events. Exits non-zero on the first failure.
"""

import json
import sys

import openai

BASE_URL, API_KEY = sys.argv[1], sys.argv[2]
MODELS = [arg.rsplit(":", 1) for arg in sys.argv[3:]]
for model, dialect in MODELS:
    assert dialect in ("openai", "azure", "anthropic", "gemini", "bedrock"), f"unknown dialect {dialect} for {model}"

# The dialects the gateway translates; the mock's routes for them answer
# tool calls and can fail a stream midway.
TRANSLATED = ("anthropic", "gemini", "bedrock")

WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
HELLO = [{"role": "user", "content": "Hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
ASKED = [{"role": "user", "content": "Weather in Paris?"}]

client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY, max_retries=0)
calls = 0


def ok(model, check):
    print(f"ok: {model}: {check}", flush=True)


def request_id(model):
    """A request id for the next call, and its headers."""
    global calls
    calls += 1
    return f"sdk-{calls}-{model}"


def record(rid, model, status, usage, cost=None):
    line = {"request_id": rid, "model": model, "status": status, "usage": None, "cost": cost}
    if usage is not None:
        line["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    print("call: " + json.dumps(line), flush=True)


def create(model, headers=None, **kwargs):
    """A whole answer, recorded with its cost header."""
    rid = request_id(model)
    raw = client.chat.completions.with_raw_response.create(
        model=model, extra_headers={"x-request-id": rid, **(headers or {})}, **kwargs
    )
    answer = raw.parse()
    assert raw.headers.get("x-request-id") == rid, raw.headers
    assert answer.object == "chat.completion", answer
    cost = raw.headers.get("x-litellm-response-cost")
    record(rid, model, raw.status_code, answer.usage, float(cost) if cost is not None else None)
    return answer


def stream(model, headers=None, **kwargs):
    """The chunks of a streamed answer (asking for usage), recorded."""
    rid = request_id(model)
    chunks = list(
        client.chat.completions.create(
            model=model,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": rid, **(headers or {})},
            **kwargs,
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks), chunks
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and chunks[-1].usage is not None, "usage comes once, last"
    assert chunks[-1].choices == [], chunks[-1]
    record(rid, model, 200, usage[0])
    return chunks


def finish_reasons(chunks):
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def expect_error(model, status, error_class, **kwargs):
    rid = request_id(model)
    try:
        client.chat.completions.create(
            model=model,
            messages=HELLO,
            extra_headers={"x-request-id": rid, "x-mock-status": str(status)},
            **kwargs,
        )
        raise AssertionError(f"no error for an upstream {status}")
    except error_class as error:
        assert isinstance(error.body, dict) and error.body.get("message"), error.body
        record(rid, model, error.status_code, None)


for model, dialect in MODELS:
    # Chat: content and usage.
    answer = create(model, messages=HELLO, headers={"x-mock-stream-chunks": "5"})
    choice = answer.choices[0]
    assert choice.message.role == "assistant", choice
    assert choice.message.content == " ".join(WORDS[:5]), choice.message.content
    assert choice.finish_reason == "stop", choice.finish_reason
    assert answer.usage.completion_tokens == 5, answer.usage
    ok(model, "chat")

    # Stream: the content adds up, one finish_reason, usage at the end.
    chunks = stream(model, messages=HELLO, headers={"x-mock-stream-chunks": "6"})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(WORDS[:6]), text
    assert finish_reasons(chunks) == ["stop"], finish_reasons(chunks)
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert chunks[-1].usage.completion_tokens == 6, chunks[-1].usage
    ok(model, "stream")

    if dialect in TRANSLATED:
        # Tools: the SDK parses the call; the result goes back; a text answer.
        answer = create(model, messages=ASKED, tools=TOOLS)
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (tool_call,) = choice.message.tool_calls
        assert tool_call.type == "function" and tool_call.id, tool_call
        assert tool_call.function.name == "get_weather", tool_call
        arguments = json.loads(tool_call.function.arguments)
        assert isinstance(arguments["city"], str), arguments
        turns = ASKED + [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": "Sunny, 21 C"},
        ]
        final = create(model, messages=turns, tools=TOOLS)
        assert final.choices[0].finish_reason == "stop", final.choices[0]
        assert final.choices[0].message.content, final.choices[0].message
        assert not final.choices[0].message.tool_calls, final.choices[0].message
        ok(model, "tools round trip")

        # Streamed tool calls: two in parallel, arguments split across chunks.
        chunks = stream(model, messages=ASKED, tools=TOOLS + [
            {"type": "function", "function": {
                "name": "get_time",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        ], headers={"x-mock-tool-calls": "2"})
        calls_by_index = {}
        pieces = 0
        for chunk in chunks:
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls_by_index.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    entry["id"] = delta.id
                if delta.function and delta.function.name:
                    entry["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    entry["arguments"] += delta.function.arguments
                    pieces += 1
        assert sorted(calls_by_index) == [0, 1], calls_by_index
        assert [calls_by_index[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"], calls_by_index
        assert all(calls_by_index[i]["id"] for i in (0, 1)), calls_by_index
        # Gemini sends a call's arguments whole; the others in pieces.
        assert pieces >= 2 if dialect == "gemini" else pieces > 2, f"arguments in {pieces} pieces"
        streamed = json.loads(calls_by_index[0]["arguments"])
        assert streamed == arguments, (streamed, arguments)
        assert isinstance(json.loads(calls_by_index[1]["arguments"]), dict), calls_by_index
        assert finish_reasons(chunks) == ["tool_calls"], finish_reasons(chunks)
        ok(model, "streamed tool calls")
    else:
        answer = create(model, messages=ASKED, tools=TOOLS, tool_choice="auto")
        assert answer.choices[0].finish_reason == "stop", answer.choices[0]
        assert answer.choices[0].message.tool_calls is None, answer.choices[0].message
        chunks = stream(model, messages=ASKED, tools=TOOLS)
        assert finish_reasons(chunks) == ["stop"], finish_reasons(chunks)
        ok(model, "tools passed through")

    # Upstream errors, in the SDK's classes.
    expect_error(model, 429, openai.RateLimitError)
    ok(model, "429 raises RateLimitError")
    expect_error(model, 500, openai.InternalServerError)
    ok(model, "500 raises InternalServerError")

    if dialect in TRANSLATED:
        # An error event mid-stream: the SDK raises after the text before it.
        rid = request_id(model)
        received = []
        try:
            for chunk in client.chat.completions.create(
                model=model,
                messages=HELLO,
                stream=True,
                extra_headers={
                    "x-request-id": rid,
                    "x-mock-stream-chunks": "6",
                    "x-mock-stream-error-after": "2",
                },
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
            raise AssertionError("no error from the stream")
        except openai.APIError as error:
            assert not isinstance(error, openai.APIConnectionError), error
            assert error.message, error
        assert "".join(received) == "The quick", received
        record(rid, model, 200, None)
        ok(model, "stream error raises APIError")

print("all gateway checks passed", flush=True)
