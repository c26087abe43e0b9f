"""A Python client of the gateway: mint a key, use it, check refusals.

Usage: client.py <base_url> <username> <password>
Prints the minted key's id on success; exits non-zero with a reason otherwise.
"""
import sys

import requests

base, username, password = sys.argv[1:4]

r = requests.post(f"{base}/api/create_api_key",
                  json={"auth": {"username": username, "password": password}, "title": "python client"},
                  timeout=10)
assert r.status_code == 200, (r.status_code, r.text)
body = r.json()
assert list(body) == ["success", "result"] and body["success"] is True, body
result = body["result"]
assert list(result) == ["api_key", "id", "title", "created", "last_used", "key_preview"], list(result)
assert result["title"] == "python client" and result["last_used"] is None, result
assert isinstance(result["created"], float), result["created"]
key = result["api_key"]

r = requests.get(f"{base}/v1/hello", headers={"Authorization": f"Bearer {key}"}, timeout=10)
assert r.status_code == 200, (r.status_code, r.text)
assert r.json()["user"] == username, r.text

r = requests.get(f"{base}/v1/hello", timeout=10)
assert r.status_code == 401 and r.json()["success"] is False, (r.status_code, r.text)

r = requests.post(f"{base}/api/create_api_key", json={"auth": {"api_key": key}}, timeout=10)
assert r.status_code == 403, (r.status_code, r.text)
assert r.json() == {"success": False, "error": "API keys cannot be used to create API keys."}, r.text

print(result["id"])
