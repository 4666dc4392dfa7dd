"""The WAzion Bridge MCP server as the official Python SDK sees it.

    python client_test.py URL API_KEY LINE_ID

Initializes over streamable HTTP, lists the tools, calls bridge_list_lines and
bridge_send_message, and checks that a business error is a result with is_error.
Exits non-zero (with the reason) on any failure. Run by tests/mcp.rs.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

EXPECTED_TOOLS = {
    "bridge_list_lines",
    "bridge_send_message",
    "bridge_send_media",
    "bridge_reply_message",
    "bridge_react_message",
    "bridge_get_chats",
    "bridge_get_messages",
    "bridge_archive_chat",
}


def body(result):
    return json.loads(result.content[0].text)


async def main(url: str, key: str, line_id: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, streamable_http_client(url, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "wazion-bridge", init.server_info

            tools = await session.list_tools()
            names = {tool.name for tool in tools.tools}
            assert names == EXPECTED_TOOLS, names
            send = next(tool for tool in tools.tools if tool.name == "bridge_send_message")
            assert set(send.input_schema["required"]) == {"line_id", "to", "message"}, send.input_schema

            lines = await session.call_tool("bridge_list_lines", {})
            assert not lines.is_error, lines
            assert body(lines)["lines"][0]["line_id"] == line_id, body(lines)

            sent = await session.call_tool(
                "bridge_send_message",
                {"line_id": line_id, "to": "+34655500203", "message": "Hola desde Python"},
            )
            assert not sent.is_error, sent
            assert body(sent)["status"] == "queued", body(sent)

            missing = await session.call_tool(
                "bridge_send_message",
                {"line_id": "line_0000000000000000000000000a", "to": "+34655500203", "message": "x"},
            )
            assert missing.is_error, missing
            assert body(missing)["error"] == "line_not_found", body(missing)
    print("python mcp client: ok")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
