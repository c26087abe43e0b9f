// The key page: talks only to the apikeys JSON endpoints of this origin.
// The credential lives in this closure and nowhere else: not in storage,
// not in a cookie, so a reload signs out.
"use strict";

(() => {
  const api = document.documentElement.dataset.api || "/api";
  let auth = null; // {username, password} or an OAuth2 token string
  const $ = (id) => document.getElementById(id);

  function say(text, ok) {
    const m = $("message");
    m.textContent = text;
    m.className = ok ? "ok" : "";
    m.hidden = !text;
  }

  // call posts to an endpoint and returns its result, or throws an Error
  // whose message a person can act on.
  async function call(endpoint, body) {
    let res;
    try {
      res = await fetch(`${api}/${endpoint}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ auth, ...body }),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new Error("The server cannot be reached. Check your connection and try again.");
    }
    let data = {};
    try {
      data = await res.json();
    } catch {
      // fall through to the status-based message
    }
    if (res.ok && data.success) return data.result;
    const detail = data.error ? ` (${data.error})` : "";
    switch (res.status) {
      case 401: throw new Error(`Signing in failed: check your username and password or token${detail}.`);
      case 403: throw new Error(`That is not allowed${detail}.`);
      case 404: throw new Error("That key no longer exists. The list has been refreshed.");
      case 409: throw new Error(`You have as many keys as allowed${detail}. Revoke one first.`);
      case 429: throw new Error(`Too many failed attempts. Wait ${res.headers.get("Retry-After") || "a minute"} seconds and try again.`);
      case 400: throw new Error(`Please check the form${detail}.`);
      default: throw new Error(`The server could not do that right now${detail}. Try again shortly.`);
    }
  }

  const when = (t) => (t == null ? "never" : new Date(t * 1000).toLocaleString());

  function signedIn(who) {
    $("sign-in").hidden = true;
    $("keys").hidden = false;
    $("sign-out").hidden = false;
    $("who").textContent = `Signed in as ${who}.`;
    $("title").focus();
  }

  function signOut() {
    auth = null;
    $("password").value = "";
    $("token").value = "";
    $("key-rows").replaceChildren();
    hideReveal();
    $("keys").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    say("");
    $("username").focus();
  }

  async function refresh() {
    const result = await call("fetch_api_keys", {});
    const rows = result.api_keys.map(row);
    $("key-rows").replaceChildren(...rows);
    $("no-keys").hidden = rows.length > 0;
    $("key-table").hidden = rows.length === 0;
  }

  function cell(label, text) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.textContent = text;
    return td;
  }

  // confirmButton asks for a second press before it acts.
  function confirmButton(label, confirmLabel, className, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.className = className;
    let armed = false;
    b.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        b.textContent = confirmLabel;
        b.setAttribute("aria-pressed", "true");
        return;
      }
      b.disabled = true;
      try {
        await action();
      } catch (err) {
        say(err.message);
        await refresh().catch(() => {});
      }
    });
    b.addEventListener("blur", () => {
      if (!b.disabled) {
        armed = false;
        b.textContent = label;
        b.removeAttribute("aria-pressed");
      }
    });
    return b;
  }

  // span says a number of seconds in the largest whole unit.
  function span(seconds) {
    for (const [unit, n] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
      if (seconds % n === 0) {
        const count = seconds / n;
        return count === 1 ? unit : `${count} ${unit}s`;
      }
    }
    return `${seconds} seconds`;
  }

  // status says whether a key works, and if not why.
  function status(k) {
    if (k.leaked) return "leaked: found in public and revoked";
    if (k.disabled) return "disabled by an operator";
    if (k.orphaned) return "refused: its user no longer exists";
    if (k.rotated) return "replaced; works until it expires";
    if (k.expires != null && k.expires * 1000 < Date.now()) return "expired";
    return "active";
  }

  // limits describes a key's plan: its rate limits and its credits.
  function limits(k) {
    if (!k.plan) return "none";
    const ours = (shared) => (shared ? " (all your keys)" : "");
    const parts = (k.limits || []).map((l) => `${l.limit} per ${span(l.window)}${ours(l.shared)}`);
    const c = k.credits;
    if (c) {
      let text = `${c.remaining} of ${c.amount} credits${ours(c.shared)}`;
      if (c.next_refill != null) text += `, refills ${when(c.next_refill)}`;
      else if (c.refill) text += `, refills every ${span(c.refill)}`;
      parts.push(text);
    }
    return parts.length ? `${k.plan}: ${parts.join("; ")}` : k.plan;
  }

  function row(k) {
    const tr = document.createElement("tr");
    tr.dataset.id = k.id;
    tr.append(
      cell("Title", k.title),
      cell("Key", k.key_preview),
      cell("Created", when(k.created)),
      cell("Last used", when(k.last_used)),
      cell("Expires", k.expires == null ? "never" : when(k.expires)),
      cell("Limits", limits(k)),
      cell("Status", status(k)),
    );
    const actions = document.createElement("td");
    actions.className = "actions";
    // Only a working key can be rotated (the gateway refuses the rest).
    if (!k.disabled && !k.rotated && !k.orphaned) {
      actions.append(
        confirmButton(`Rotate`, `Confirm rotate`, "secondary rotate", async () => {
          const created = await call("rotate_api_key", { api_key_id: k.id });
          reveal(created.api_key);
          say(`Key "${k.title}" was replaced. The old key no longer works.`, true);
          await refresh();
        }),
      );
    }
    actions.append(
      confirmButton(`Revoke`, `Confirm revoke`, "danger revoke", async () => {
        await call("delete_api_key", { api_key_id: k.id });
        say(`Key "${k.title}" was revoked.`, true);
        await refresh();
      }),
    );
    actions.querySelectorAll("button").forEach((b) => b.setAttribute("aria-label", `${b.textContent} ${k.title} (${k.key_preview})`));
    tr.append(actions);
    return tr;
  }

  function reveal(key) {
    $("new-key").textContent = key;
    $("reveal").hidden = false;
    $("new-key").focus();
  }

  function hideReveal() {
    $("new-key").textContent = "";
    $("reveal").hidden = true;
  }

  async function trySignIn(credential, who) {
    auth = credential;
    say("");
    try {
      await refresh();
      signedIn(who);
    } catch (err) {
      auth = null;
      say(err.message);
    }
  }

  $("password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const username = $("username").value.trim();
    trySignIn({ username, password: $("password").value }, username);
    $("password").value = "";
  });

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    trySignIn(token, "the token's user");
  });

  $("create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { title: $("title").value.trim() || undefined };
    const days = $("expires-days").value;
    if (days) body.expires_in = Number(days) * 86400;
    const scopes = $("scopes").value.trim();
    if (scopes) body.scopes = scopes.split(/\s+/);
    const button = $("create-button");
    button.disabled = true;
    try {
      const created = await call("create_api_key", body);
      reveal(created.api_key);
      say("Key created.", true);
      $("create-form").reset();
      await refresh();
    } catch (err) {
      say(err.message);
    } finally {
      button.disabled = false;
    }
  });

  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key").textContent);
      say("Copied to the clipboard.", true);
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("new-key"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      say("Select the key and copy it (Ctrl+C or ⌘C).");
    }
  });
  $("done").addEventListener("click", hideReveal);
  $("sign-out").addEventListener("click", signOut);
  $("username").focus();
})();
