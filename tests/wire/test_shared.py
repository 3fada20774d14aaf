"""One conversion per protocol: the inbound dialect and the outbound client write the same thing."""

from __future__ import annotations

import pytest

from tiergate.backends import anthropic as claude_backend
from tiergate.backends.openai_compat import request_json
from tiergate.dialects import anthropic as claude_dialect
from tiergate.types import ChatRequest, ImagePart, Message, TextPart, ToolCall
from tiergate.wire.openai import image_source


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Paris"}', {"city": "Paris"}),
        ("", {}),
        ('{"city": "Par', {"_raw": '{"city": "Par'}),  # cut off: kept, never dropped
        ('["Paris"]', {"_raw": '["Paris"]'}),  # not an object
    ],
)
def test_a_tool_call_becomes_the_same_tool_use_block_both_ways(arguments: str, expected: dict[str, object]) -> None:
    call = ToolCall("t1", "weather", arguments)
    rendered = claude_dialect.block_json(call)  # to an Anthropic-SDK caller
    sent = claude_backend.messages_json([Message("assistant", (call,))])[0]["content"][0]  # to Claude
    assert rendered == sent
    assert rendered["input"] == expected


def test_an_image_data_url_survives_the_round_trip() -> None:
    url = "data:image/png;base64,iVBORw0KGgo="
    request = ChatRequest("auto", [Message("user", (TextPart("what is it?"), ImagePart(image_source(url))))])
    part = request_json(request, "m", stream=False)["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": url}}
