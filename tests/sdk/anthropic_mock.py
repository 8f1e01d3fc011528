"""The official Anthropic SDK as a client of `llm-proxy mock-upstream`.

Usage: anthropic_mock.py BASE_URL API_KEY
Prints `ok: <check>` for each check; exits non-zero on the first failure.
"""

import sys

import anthropic

BASE_URL, API_KEY = sys.argv[1], sys.argv[2]
MODEL = "claude-mock-1"
WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
    {
        "name": "get_time",
        "description": "The time in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
]
HELLO = [{"role": "user", "content": "Hello there"}]


def client(key=API_KEY):
    return anthropic.Anthropic(base_url=BASE_URL, api_key=key, max_retries=0)


def words(n):
    return {"x-mock-stream-chunks": str(n)}


def ok(check):
    print(f"ok: {check}", flush=True)


c = client()

# Text, usage fields.
message = c.messages.create(model=MODEL, max_tokens=100, messages=HELLO, extra_headers=words(5))
assert message.id.startswith("msg_"), message.id
assert message.type == "message" and message.role == "assistant", message
assert message.model == MODEL, message.model
assert len(message.content) == 1 and message.content[0].type == "text", message.content
assert message.content[0].text == " ".join(WORDS[:5]), message.content[0].text
assert message.stop_reason == "end_turn" and message.stop_sequence is None, message
assert message.usage.input_tokens > 0, message.usage
assert message.usage.output_tokens == 5, message.usage
assert message.usage.cache_creation_input_tokens == 0, message.usage
assert message.usage.cache_read_input_tokens == 0, message.usage
ok("messages.create text and usage")

# max_tokens below the answer's length stops it there.
message = c.messages.create(model=MODEL, max_tokens=2, messages=HELLO, extra_headers=words(5))
assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2, message
ok("messages.create max_tokens")

# Streaming text.
with c.messages.stream(model=MODEL, max_tokens=100, messages=HELLO, extra_headers=words(6)) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == " ".join(WORDS[:6]), text
assert final.content[0].text == text, final.content
assert final.stop_reason == "end_turn", final.stop_reason
assert final.usage.output_tokens == 6, final.usage
assert final.usage.input_tokens > 0, final.usage
ok("messages.stream text, stop_reason and usage")

# Tools: a tool_use block, then a tool_result round trip.
asked = [{"role": "user", "content": "Weather in Paris?"}]
message = c.messages.create(model=MODEL, max_tokens=100, messages=asked, tools=TOOLS)
assert message.stop_reason == "tool_use", message.stop_reason
uses = [block for block in message.content if block.type == "tool_use"]
assert len(uses) == 1, message.content
use = uses[0]
assert isinstance(use, anthropic.types.ToolUseBlock), type(use)
assert use.id.startswith("toolu_") and use.name == "get_weather", use
assert isinstance(use.input["city"], str) and isinstance(use.input["days"], int), use.input
assert use.input["unit"] == "celsius", use.input
tool_input = use.input
ok("tools: tool_use block")

turns = asked + [
    {"role": "assistant", "content": message.content},
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}],
    },
]
answer = c.messages.create(model=MODEL, max_tokens=100, messages=turns, tools=TOOLS)
assert answer.stop_reason == "end_turn", answer.stop_reason
assert answer.content[0].type == "text" and answer.content[0].text, answer.content
ok("tools: tool_result round trip ends end_turn")

message = c.messages.create(
    model=MODEL,
    max_tokens=100,
    messages=asked,
    tools=TOOLS,
    tool_choice={"type": "tool", "name": "get_time"},
)
assert [b.name for b in message.content if b.type == "tool_use"] == ["get_time"], message.content
ok("tools: tool_choice forces a tool")

message = c.messages.create(
    model=MODEL, max_tokens=100, messages=asked, tools=TOOLS, extra_headers={"x-mock-tool-calls": "2"}
)
uses = [b for b in message.content if b.type == "tool_use"]
assert [b.name for b in uses] == ["get_weather", "get_time"], message.content
assert len({b.id for b in uses}) == 2, uses
ok("tools: parallel tool_use blocks")

message = c.messages.create(
    model=MODEL, max_tokens=100, messages=asked, tools=TOOLS, extra_headers={"x-mock-tool-text": "3"}
)
assert [b.type for b in message.content] == ["text", "tool_use"], message.content
assert message.content[0].text == " ".join(WORDS[:3]), message.content
with c.messages.stream(
    model=MODEL, max_tokens=100, messages=asked, tools=TOOLS, extra_headers={"x-mock-tool-text": "3"}
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == " ".join(WORDS[:3]), text
assert [b.type for b in final.content] == ["text", "tool_use"], final.content
assert final.content[1].input == message.content[1].input, final.content
assert final.usage.output_tokens == message.usage.output_tokens, final.usage
ok("tools: text before tool_use")

# Streamed tool input: input_json events add up to the non-stream input.
pieces = []
with c.messages.stream(model=MODEL, max_tokens=100, messages=asked, tools=TOOLS) as stream:
    for event in stream:
        if event.type == "input_json":
            pieces.append(event.partial_json)
    final = stream.get_final_message()
assert len(pieces) > 1, pieces
assert final.stop_reason == "tool_use", final.stop_reason
streamed = [b for b in final.content if b.type == "tool_use"][0]
assert streamed.input == tool_input, (streamed.input, tool_input)
assert final.usage.output_tokens == c.messages.create(
    model=MODEL, max_tokens=100, messages=asked, tools=TOOLS
).usage.output_tokens, final.usage
ok("stream: input_json events give the non-stream input")

# Errors.
try:
    c.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers={"x-mock-status": "429"})
    raise AssertionError("no error for 429")
except anthropic.RateLimitError as error:
    assert error.status_code == 429 and error.body["error"]["type"] == "rate_limit_error", error.body
    assert error.request_id and error.request_id.startswith("req_"), error.request_id
ok("errors: 429 raises RateLimitError")

try:
    c.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers={"x-mock-status": "529"})
    raise AssertionError("no error for 529")
except anthropic.InternalServerError as error:
    assert error.status_code == 529 and error.body["error"]["type"] == "overloaded_error", error.body
    assert isinstance(error, getattr(anthropic, "OverloadedError", anthropic.InternalServerError))
ok("errors: 529 raises OverloadedError")

try:
    client("sk-wrong").messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    raise AssertionError("no error for a wrong key")
except anthropic.AuthenticationError as error:
    assert error.status_code == 401 and error.body["error"]["type"] == "authentication_error", error.body
ok("errors: wrong key raises AuthenticationError")

try:
    c.messages.create(model=MODEL, max_tokens=10, messages=[])
    raise AssertionError("no error for empty messages")
except anthropic.BadRequestError as error:
    assert error.body["error"]["type"] == "invalid_request_error", error.body
    assert "messages" in error.body["error"]["message"], error.body
ok("errors: empty messages raises BadRequestError")

# A mid-stream error event raises, after the text sent before it.
received = []
try:
    with c.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=HELLO,
        extra_headers={**words(6), "x-mock-stream-error-after": "2"},
    ) as stream:
        for text in stream.text_stream:
            received.append(text)
    raise AssertionError("no error from the stream")
except anthropic.APIStatusError as error:
    assert error.body["error"]["type"] == "overloaded_error", error.body
assert "".join(received) == "The quick", received
ok("stream: error event raises")

# count_tokens.
count = c.messages.count_tokens(model=MODEL, messages=HELLO)
assert isinstance(count.input_tokens, int) and count.input_tokens > 0, count
ok("messages.count_tokens")

print("all Anthropic SDK checks passed")
