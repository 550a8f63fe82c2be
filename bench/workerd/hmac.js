// The workerd peer of webhook-verify: checks X-Hub-Signature-256 (HMAC-SHA256
// of the body under the GITHUB_WEBHOOK binding) and answers 200 or 401.
const encoder = new TextEncoder();

function fromHex(hex) {
  if (hex.length % 2 !== 0 || /[^0-9a-f]/i.test(hex)) return null;
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
  return bytes;
}

export default {
  async fetch(request, env) {
    if (new URL(request.url).pathname === "/health") return new Response("ok\n");
    const header = request.headers.get("x-hub-signature-256") || "";
    const signature = header.startsWith("sha256=") ? fromHex(header.slice(7)) : null;
    if (!signature) return new Response("missing or malformed signature\n", { status: 401 });
    const key = await crypto.subtle.importKey(
      "raw", encoder.encode(env.GITHUB_WEBHOOK), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    const body = await request.arrayBuffer();
    const ok = await crypto.subtle.verify("HMAC", key, signature, body);
    return ok ? new Response("verified\n") : new Response("bad signature\n", { status: 401 });
  },
};
