// Drives aop's MCP server with the official TypeScript SDK (`@modelcontextprotocol/sdk`, pinned;
// tests/it/mcp.rs installs it) over Streamable HTTP, and prints what it saw as one JSON line.
//
//     MCP_SDK=<npm prefix> node client.mjs URL TOKEN CALLS.json
//
// CALLS.json is a list of [tool, arguments]. The output: the server's name and version, the
// tools listed (names, schemas) and, per call, isError, the structured content and the text.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(process.env.MCP_SDK + "/");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

const [url, token, callsFile] = process.argv.slice(2);
const calls = JSON.parse(readFileSync(callsFile, "utf8"));
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "aop-tests", version: "1.0.0" });
await client.connect(transport);
const out = { server: client.getServerVersion(), protocol: transport.protocolVersion ?? null, calls: [] };
out.tools = (await client.listTools()).tools.map((t) => ({
  name: t.name,
  input_schema: t.inputSchema,
  output_schema: t.outputSchema,
}));
for (const [name, args] of calls) {
  try {
    const r = await client.callTool({ name, arguments: args });
    const text = r.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
    out.calls.push({ tool: name, is_error: r.isError ?? false, structured: r.structuredContent ?? null, text });
  } catch (e) {
    out.calls.push({ tool: name, protocol_error: String(e) });
  }
}
await client.close();
console.log(JSON.stringify(out));
