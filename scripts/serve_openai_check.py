"""Talks to a running `gemma serve` with the official `openai` client (gemma-cli/tests/serve_clients.rs).

    python scripts/serve_openai_check.py http://127.0.0.1:PORT/v1 API_KEY PROMPT MAX_TOKENS

Prints one JSON object: the model list, a chat answer whole and streamed, a text completion
whole and streamed, and a 404 for an unknown model, as the client saw them.
"""
import json
import sys

import openai


def main():
    base_url, key, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
    out = {"models": [m.id for m in client.models.list().data]}
    model = out["models"][0]
    messages = [{"role": "user", "content": prompt}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    out["chat"] = {
        "text": chat.choices[0].message.content,
        "finish_reason": chat.choices[0].finish_reason,
        "usage": chat.usage.model_dump(),
    }
    text, finish, usage = "", None, None
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    out["chat_stream"] = {"text": text, "finish_reason": finish, "usage": usage}
    comp = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    out["completion"] = {"text": comp.choices[0].text, "finish_reason": comp.choices[0].finish_reason}
    text = ""
    for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True):
        text += "".join(c.text for c in chunk.choices)
    out["completion_stream"] = {"text": text}
    try:
        client.completions.create(model="no-such-model", prompt=prompt, max_tokens=1)
        out["unknown_model"] = None
    except openai.NotFoundError as e:
        out["unknown_model"] = e.status_code
    print(json.dumps(out))


if __name__ == "__main__":
    main()
