// A JavaScript client of the gateway (Node 20, built-in fetch): mint a key,
// use it, check refusals. Usage: node client.mjs <base_url> <username> <password>
import assert from "node:assert/strict";

const [base, username, password] = process.argv.slice(2);

let res = await fetch(`${base}/api/create_api_key`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ auth: { username, password }, title: "node client" }),
});
assert.equal(res.status, 200, await res.clone().text());
const body = await res.json();
assert.deepEqual(Object.keys(body), ["success", "result"]);
assert.deepEqual(Object.keys(body.result), ["api_key", "id", "title", "created", "last_used", "key_preview"]);
assert.equal(body.result.title, "node client");
assert.equal(body.result.last_used, null);
const key = body.result.api_key;
assert.equal(body.result.key_preview, "sk-..." + key.slice(-4));

res = await fetch(`${base}/v1/hello`, { headers: { "X-Api-Key": key } });
assert.equal(res.status, 200);
assert.equal((await res.json()).user, username);

res = await fetch(`${base}/v1/hello`, { headers: { Authorization: `Bearer ${key}x` } });
assert.equal(res.status, 401);

res = await fetch(`${base}/api/create_api_key`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ auth: { api_key: key } }),
});
assert.equal(res.status, 403);
assert.deepEqual(await res.json(), { success: false, error: "API keys cannot be used to create API keys." });

console.log(body.result.id);
