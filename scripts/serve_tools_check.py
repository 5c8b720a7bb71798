"""Tool calls and structured output against a running `gemma serve`, with the official `openai`
client (gemma-cli/tests/serve_tools.rs runs it).

    python scripts/serve_tools_check.py http://127.0.0.1:PORT/v1

Prints one JSON object: for each case what the client saw (the calls parsed by the client,
their arguments validated against the tool's schema with `jsonschema`, streamed deltas put
back together, the error class and status of a call cut by max_tokens).
"""
import json
import sys

import jsonschema
import openai

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 20}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def check_call(name, arguments):
    """The call's arguments parse and fit the tool's schema; returns them."""
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def whole(client, model, **kw):
    r = client.chat.completions.create(model=model, messages=ASK, max_tokens=96, temperature=1.0, seed=7, **kw)
    c = r.choices[0]
    calls = [
        {"id": t.id, "name": t.function.name, "arguments": check_call(t.function.name, t.function.arguments)}
        for t in (c.message.tool_calls or [])
    ]
    return {"finish_reason": c.finish_reason, "content": c.message.content, "calls": calls}


def streamed(client, model, **kw):
    stream = client.chat.completions.create(
        model=model, messages=ASK, max_tokens=96, temperature=1.0, seed=7, stream=True, **kw
    )
    calls, content, finish, chunks = {}, "", None, 0
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for t in c.delta.tool_calls or []:
                chunks += 1
                call = calls.setdefault(t.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = t.id or call["id"]
                if t.function is not None:
                    call["name"] = t.function.name or call["name"]
                    call["arguments"] += t.function.arguments or ""
            finish = c.finish_reason or finish
    out = []
    for call in calls.values():
        out.append({"id": call["id"], "name": call["name"], "arguments": check_call(call["name"], call["arguments"])})
    return {"finish_reason": finish, "content": content, "calls": out, "tool_chunks": chunks}


def error_of(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        return {"status": e.status_code, "code": (e.body or {}).get("code") if isinstance(e.body, dict) else None,
                "message": str(e)}
    except openai.APIError as e:
        return {"status": None, "code": getattr(e, "code", None), "message": str(e)}
    return None


def main():
    client = openai.OpenAI(base_url=sys.argv[1], api_key="none", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    out = {}
    out["required"] = whole(client, model, tools=TOOLS, tool_choice="required")
    out["named"] = whole(client, model, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    out["auto"] = whole(client, model, tools=TOOLS, tool_choice="auto")
    out["none"] = whole(client, model, tools=TOOLS, tool_choice="none")
    out["required_stream"] = streamed(client, model, tools=TOOLS, tool_choice="required")
    # A follow-up turn: the call and its result in the history.
    call = out["required"]["calls"][0]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call["id"], "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees and sunny"},
    ]
    r = client.chat.completions.create(model=model, messages=history, max_tokens=24, temperature=0, tools=TOOLS,
                                       tool_choice="none")
    out["follow_up"] = {"finish_reason": r.choices[0].finish_reason, "content": r.choices[0].message.content}
    # Cut inside the call: a 422 the client raises, not text.
    out["cut"] = error_of(lambda: client.chat.completions.create(
        model=model, messages=ASK, max_tokens=4, tools=TOOLS, tool_choice="required"))

    def cut_stream():
        for _ in client.chat.completions.create(model=model, messages=ASK, max_tokens=4, tools=TOOLS,
                                                tool_choice="required", stream=True):
            pass
    out["cut_stream"] = error_of(cut_stream)
    # Structured output through the client's response_format.
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
              "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
              "required": ["city", "population"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "A city and its population as JSON."}], max_tokens=64,
        temperature=1.0, response_format={"type": "json_schema",
                                          "json_schema": {"name": "city", "schema": schema, "strict": True}})
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, schema)
    out["json_schema"] = {"finish_reason": r.choices[0].finish_reason, "value": value}
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Describe a cat as JSON."}], max_tokens=64,
        temperature=0, response_format={"type": "json_object"})
    out["json_object"] = {"finish_reason": r.choices[0].finish_reason, "content": r.choices[0].message.content}
    # Hostile: an invalid schema and an invalid tool are 400s naming the field.
    out["bad_schema"] = error_of(lambda: client.chat.completions.create(
        model=model, messages=ASK, max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}))
    out["bad_tool"] = error_of(lambda: client.chat.completions.create(
        model=model, messages=ASK, max_tokens=8,
        tools=[{"type": "function", "function": {"name": "bad name", "parameters": {"type": "object"}}}]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
