// Deno tests of the Edge Function against real parts: SeaweedFS's S3 (signatures checked), the
// PostgREST stand-in on a real PostgreSQL with every migration, and stand-ins of Supabase Auth
// (GET /auth/v1/user) and Prefect's REST API, served here with the vendors' documented shapes.
// tests/test_edge_function.py starts the real parts and passes them in through EDGE_TEST_* variables:
//   deno test --allow-net --allow-env --allow-read infra/supabase/functions/process-audio/
import { type Config, configFrom, LIMITS } from "./config.ts";
import { handle } from "./index.ts";
import { S3 } from "./s3.ts";
import { assert, assertEquals, need } from "./test_support.ts";

const USER_A = need("EDGE_TEST_USER_A");
const USER_B = need("EDGE_TEST_USER_B");
const USER_C = need("EDGE_TEST_USER_C"); // only the limit test uses this one
const JWT: Record<string, string> = { "jwt-a": USER_A, "jwt-b": USER_B, "jwt-c": USER_C };
const POSTGREST = need("EDGE_TEST_POSTGREST_URL");
const SERVICE_KEY = need("EDGE_TEST_SERVICE_KEY");
const DEP_ID = "2b6c3b5e-9d0e-4b55-9a4f-3a0b1c2d3e4f";
const MB = 1024 * 1024;

// --- stand-ins of Auth and Prefect (one server, paths do not overlap) ---

/** One create_flow_run request as Prefect received it. The stand-in makes a new run for each: honouring
 * the idempotency key is Prefect's job (tests/test_deploy_e2e.py checks it on a real server), so these
 * tests assert the key the function sends, never the stand-in's reaction to it. */
interface CreateRun {
  id: string;
  idempotency_key: string;
  parameters: Record<string, unknown>;
  labels?: Record<string, string>;
}

interface Standins {
  base: string;
  runs: CreateRun[]; // every create_flow_run request, in order
  calls: { path: string; at: number; authorization: string | null }[];
  mode: { prefect500: boolean; authHang: boolean };
  close: () => Promise<void>;
}

const PREFECT_KEY = "pnu_test";

function standins(): Standins {
  const runs: CreateRun[] = [];
  const calls: { path: string; at: number; authorization: string | null }[] = [];
  const mode = { prefect500: false, authHang: false };
  let release = () => {};
  const released = new Promise<void>((r) => release = r); // a hanging Auth answers only at close
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const text = await req.text();
    calls.push({ path: url.pathname, at: Date.now(), authorization: req.headers.get("Authorization") });
    if (url.pathname === "/auth/v1/user") {
      if (mode.authHang) await released;
      const token = (req.headers.get("Authorization") ?? "").replace(/^Bearer /, "");
      if (!JWT[token] || req.headers.get("apikey") !== SERVICE_KEY) {
        return Response.json({ code: 401, error_code: "bad_jwt", msg: "invalid JWT: unable to parse or verify signature" },
          { status: 401 });
      }
      return Response.json({ id: JWT[token], aud: "authenticated", role: "authenticated", email: "u@example.com",
        app_metadata: { provider: "email" }, user_metadata: {}, created_at: "2026-11-01T00:00:00Z" });
    }
    if (url.pathname.startsWith("/api/") && req.headers.get("Authorization") !== `Bearer ${PREFECT_KEY}`) {
      return Response.json({ detail: "Unauthorized" }, { status: 401 }); // Prefect Cloud without the API key
    }
    if (mode.prefect500) {
      // what a Prefect server says when its database is gone: nothing of it may reach the client
      return Response.json({ exception_message: "Internal Server Error",
        exception_detail: "connection to server at \"db.internal\" (10.0.0.5), port 5432 failed: FATAL: password authentication failed for user \"prefect_admin\"" },
        { status: 500 });
    }
    if (url.pathname === "/api/deployments/name/process-audio/api") {
      return Response.json({ id: DEP_ID, name: "api", work_pool_name: "vibeinsight-fly" });
    }
    if (url.pathname === `/api/deployments/${DEP_ID}/create_flow_run`) {
      const body = JSON.parse(text);
      const run = { id: crypto.randomUUID(), idempotency_key: body.idempotency_key, parameters: body.parameters,
        labels: body.labels };
      runs.push(run);
      return Response.json({ id: run.id, name: "ultraviolet-chimpanzee", deployment_id: DEP_ID, parameters: run.parameters,
        idempotency_key: body.idempotency_key, state: { type: "SCHEDULED", name: "Scheduled" } }, { status: 201 });
    }
    return Response.json({ detail: "Not Found" }, { status: 404 });
  });
  return { base: `http://127.0.0.1:${server.addr.port}`, runs, calls, mode, close: () => {
    release();
    return server.shutdown();
  } };
}

function config(s: Standins, env: Record<string, string> = {}): Config {
  const all: Record<string, string> = {
    SUPABASE_URL: s.base, SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY, PREFECT_API_URL: `${s.base}/api`,
    PREFECT_API_KEY: PREFECT_KEY, FLY_S3_ENDPOINT: need("EDGE_TEST_S3_ENDPOINT"),
    FLY_S3_ACCESS_KEY_ID: need("EDGE_TEST_S3_KEY"), FLY_S3_SECRET_ACCESS_KEY: need("EDGE_TEST_S3_SECRET"),
    FLY_S3_BUCKET_NAME: need("EDGE_TEST_S3_BUCKET"), FLY_S3_REGION: "nrt", VIBEINSIGHT_S3_ADDRESSING_STYLE: "path",
    VIBEINSIGHT_EDGE_TIMEOUT_MS: "1000", VIBEINSIGHT_ALLOWED_ORIGIN: "https://app.example.com",
    VIBEINSIGHT_MAX_RUNS_IN_FLIGHT_PER_USER: "50", ...env, // user A's sessions of every test stay below it
  };
  // the Supabase REST API is the PostgREST stand-in: route it there by rewriting in a proxy below
  return configFrom((k) => all[k]);
}

/** Auth lives on the stand-ins, PostgREST on the Python stand-in: one base URL that splits them. */
function supabaseProxy(s: Standins) {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const target = url.pathname.startsWith("/rest/v1/") ? POSTGREST : s.base;
    const res = await fetch(target + url.pathname + url.search, {
      method: req.method, headers: req.headers, body: req.method === "GET" ? undefined : await req.arrayBuffer(),
    });
    return new Response(await res.arrayBuffer(), { status: res.status, headers: res.headers });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

async function withFunction(fn: (t: {
  call: (method: string, path: string, body?: unknown, jwt?: string, headers?: Record<string, string>) => Promise<Response>;
  s: Standins;
  cfg: Config;
}) => Promise<void>, env: Record<string, string> = {}) {
  const s = standins();
  const proxy = supabaseProxy(s);
  const cfg = config(s, { SUPABASE_URL: proxy.url, ...env });
  const call = (method: string, path: string, body?: unknown, jwt = "jwt-a", headers: Record<string, string> = {}) =>
    handle(new Request(`http://127.0.0.1/process-audio${path}`, {
      method, headers: { ...(jwt ? { Authorization: `Bearer ${jwt}` } : {}), "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    }), cfg);
  try {
    await fn({ call, s, cfg });
  } finally {
    await s.close(); // first: it releases a hanging Auth call the proxy still waits on
    await proxy.close();
  }
}

async function rest(path: string, init: RequestInit = {}) {
  const res = await fetch(POSTGREST + path, { ...init, headers: { apikey: SERVICE_KEY, Authorization: `Bearer ${SERVICE_KEY}`,
    "Content-Type": "application/json" } });
  return await res.json();
}
const row = async (sid: string) => (await rest(`/rest/v1/processing_status?session_id=eq.${sid}`))[0];
// as the session's current run writes it: its owner and attempt (20261204000100, 20261204000200)
const setStatus = async (sid: string, status: string, seq: number, flowRunId: string) => {
  const r = await row(sid);
  return await rest("/rest/v1/rpc/apply_status_update", { method: "POST",
    body: JSON.stringify({ p_session_id: sid, p_status: status, p_seq: seq, p_flow_run_id: flowRunId,
      p_user_id: r.user_id, p_attempt: r.attempt }) });
};

function bytesOf(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = x >> 16;
  }
  return b;
}
async function sha(b: Uint8Array<ArrayBuffer>) {
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", b))).map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** A small upload made through the function, as a client does; answers its key. */
async function smallUpload(call: (m: string, p: string, b?: unknown, j?: string) => Promise<Response>, jwt = "jwt-a") {
  const data = bytesOf(4096, 7);
  const up = await (await call("POST", "/uploads", { filename: "call.wav", content_type: "audio/wav", bytes: data.length }, jwt)).json();
  const put = await fetch(up.url, { method: "PUT", headers: up.headers, body: data });
  assertEquals(put.status, 200, `PUT ${await put.text()}`);
  return up.key as string;
}

// --- uploads ---

Deno.test("a small upload is one presigned PUT that S3 accepts with exactly the declared type and size", async () => {
  await withFunction(async ({ call, cfg }) => {
    const data = bytesOf(300_000, 1);
    const res = await call("POST", "/uploads", { filename: "Meeting.M4A", content_type: "audio/mp4", bytes: data.length });
    assertEquals(res.status, 200);
    const up = await res.json();
    assertEquals(up.method, "PUT");
    assert(new RegExp(`^uploads/${USER_A}/[0-9a-f-]{36}\\.m4a$`).test(up.key), up.key);
    assert(up.url.includes("X-Amz-Expires=3600"), "expires in 1 h");
    // a different content type breaks the signature: S3 refuses it
    const wrongType = await fetch(up.url, { method: "PUT", headers: { ...up.headers, "content-type": "text/html" }, body: data });
    assertEquals(wrongType.status, 403, "wrong content type");
    await wrongType.body?.cancel();
    const bigger = bytesOf(300_001, 1);
    const wrongSize = await fetch(up.url, { method: "PUT", headers: { "content-type": "audio/mp4" }, body: bigger });
    assertEquals(wrongSize.status, 403, "more bytes than declared");
    await wrongSize.body?.cancel();
    const put = await fetch(up.url, { method: "PUT", headers: up.headers, body: data });
    assertEquals(put.status, 200);
    await put.body?.cancel();
    const s3 = new S3(cfg.s3, 5000);
    const got = new Uint8Array(await (await fetch(await s3.presign("GET", up.key, 60))).arrayBuffer());
    assertEquals(await sha(got), await sha(data));
  });
});

Deno.test("a 12 MB upload is multipart; an interrupted upload resumes from the parts S3 has", async () => {
  await withFunction(async ({ call, cfg }) => {
    const data = bytesOf(12 * MB, 2);
    const up = await (await call("POST", "/uploads", { filename: "long.wav", content_type: "audio/wav", bytes: data.length })).json();
    assertEquals(up.method, "MULTIPART");
    assertEquals(up.parts.map((p: { bytes: number }) => p.bytes), [5 * MB, 5 * MB, 2 * MB]);
    const sendPart = async (p: { part_number: number; url: string; bytes: number }) => {
      const from = (p.part_number - 1) * 5 * MB;
      const res = await fetch(p.url, { method: "PUT", body: data.slice(from, from + p.bytes) });
      assertEquals(res.status, 200, `part ${p.part_number}`);
      await res.body?.cancel();
      return { part_number: p.part_number, etag: res.headers.get("etag")! };
    };
    const first = await sendPart(up.parts[0]);
    // the client dies here; later it asks what S3 already has and gets URLs for the rest only
    const resume = await (await call("POST", "/uploads/parts", { key: up.key, upload_id: up.upload_id, bytes: data.length })).json();
    assertEquals(resume.parts_done.map((p: { part_number: number }) => p.part_number), [1]);
    assertEquals(resume.parts_done[0].etag, first.etag);
    assertEquals(resume.parts.map((p: { part_number: number }) => p.part_number), [2, 3]);
    const rest = [];
    for (const p of resume.parts) rest.push(await sendPart(p));
    // a wrong etag is refused, the upload stays open
    const wrong = await call("POST", "/uploads/complete", { key: up.key, upload_id: up.upload_id,
      parts: [first, rest[0], { part_number: 3, etag: '"0000"' }] });
    assertEquals(wrong.status, 409);
    assertEquals((await wrong.json()).error, "upload_incomplete");
    const done = await call("POST", "/uploads/complete", { key: up.key, upload_id: up.upload_id, parts: [first, ...rest] });
    assertEquals(done.status, 200);
    assertEquals((await done.json()).bytes, data.length);
    const s3 = new S3(cfg.s3, 5000);
    const got = new Uint8Array(await (await fetch(await s3.presign("GET", up.key, 60))).arrayBuffer());
    assertEquals(await sha(got), await sha(data));
    // another user cannot list or complete it
    const theirs = await call("POST", "/uploads/parts", { key: up.key, upload_id: up.upload_id, bytes: data.length }, "jwt-b");
    assertEquals(theirs.status, 403);
  });
});

Deno.test("upload requests outside the shared limits are refused", async () => {
  await withFunction(async ({ call }) => {
    const cases: [unknown, number, string][] = [
      [{ filename: "a.wav", content_type: "audio/wav", bytes: LIMITS.max_bytes + 1 }, 413, "too_large"],
      [{ filename: "a.exe", content_type: "audio/wav", bytes: 10 }, 415, "unsupported_type"],
      [{ filename: "a.wav", content_type: "text/html", bytes: 10 }, 415, "unsupported_type"],
      [{ filename: "a.wav", content_type: "audio/wav", bytes: 0 }, 400, "bad_request"],
      [{ filename: "a.wav", content_type: "audio/wav", bytes: 1.5 }, 400, "bad_request"],
      [{ filename: "a.wav", content_type: "audio/wav", bytes: "10" }, 400, "bad_request"],
      [{ filename: ["a.wav"], content_type: "audio/wav", bytes: 10 }, 400, "bad_request"],
    ];
    for (const [body, status, code] of cases) {
      const res = await call("POST", "/uploads", body);
      assertEquals([res.status, (await res.json()).error], [status, code], JSON.stringify(body));
    }
  });
});

// --- /process: ownership, idempotency, limits ---

Deno.test("process: PENDING row and run; repeats and upper-case ids reach the same run; another user gets 409", async () => {
  await withFunction(async ({ call, s }) => {
    const key = await smallUpload(call);
    const sid = crypto.randomUUID();
    const a = await call("POST", "/process", { key, session_id: sid, language: "ja", vocabulary: ["Tigris", "ふりがな"] });
    assertEquals(a.status, 202);
    const first = await a.json();
    assertEquals(first.session_id, sid);
    const r = await row(sid);
    assertEquals([r.status, r.user_id, r.stage, r.seq], ["PENDING", USER_A, "queued", 1]);
    const [run] = s.runs;
    assertEquals(first.flow_run_id, run.id);
    assertEquals(run.idempotency_key, sid); // Prefect's idempotency key: the session id, exactly
    // every Prefect call (the deployment lookup, the create) carries the API key
    const prefectCalls = s.calls.filter((c) => c.path.startsWith("/api/"));
    assertEquals(prefectCalls.map((c) => c.authorization), prefectCalls.map(() => `Bearer ${PREFECT_KEY}`));
    assertEquals(prefectCalls.length, 2);
    assertEquals(run.parameters, { source: `s3://${need("EDGE_TEST_S3_BUCKET")}/${key}`, session_id: sid, user_id: USER_A,
      language: "ja", vocabulary: ["Tigris", "ふりがな"] });
    // Prefect's flow and task spans join the session's trace: the traceparent Python's trigger sets
    const hex = sid.replaceAll("-", "");
    assertEquals(run.labels, { __OTEL_TRACEPARENT: `00-${hex}-${hex.slice(16)}-01` });
    // the same session again, and in upper case: Prefect is asked with the same key (it answers the same
    // run), never a key of a second run
    for (const id of [sid, sid.toUpperCase()]) {
      const again = await call("POST", "/process", { key, session_id: id });
      assertEquals(again.status, 202);
      assertEquals((await again.json()).session_id, sid);
    }
    assertEquals(s.runs.map((x) => x.idempotency_key), [sid, sid, sid]);
    const asked = s.runs.length;
    // another user naming that session: 409, nothing about the run, the row untouched
    for (const id of [sid, sid.toUpperCase()]) {
      const theirKey = await smallUpload(call, "jwt-b");
      const res = await call("POST", "/process", { key: theirKey, session_id: id }, "jwt-b");
      assertEquals(res.status, 409);
      const text = await res.text();
      assert(!text.includes(first.flow_run_id), "the run id leaked");
      assertEquals(JSON.parse(text).error, "session_conflict");
    }
    assertEquals(s.runs.length, asked); // Prefect never asked
    assertEquals((await row(sid)).user_id, USER_A);
    // another user's key: 403 without starting anything
    const res = await call("POST", "/process", { key }, "jwt-b");
    assertEquals(res.status, 403);
    assertEquals(s.runs.length, asked);
  });
});

Deno.test("process: one session per upload; a re-run of one's own finished session starts a new run", async () => {
  await withFunction(async ({ call, s }) => {
    const key = await smallUpload(call);
    const sid = crypto.randomUUID();
    const first = await (await call("POST", "/process", { key, session_id: sid })).json();
    const second = await call("POST", "/process", { key, session_id: crypto.randomUUID() });
    assertEquals([second.status, (await second.json()).error], [409, "upload_taken"]);
    const busy = await call("POST", "/process", { key, session_id: sid, rerun: true });
    assertEquals([busy.status, (await busy.json()).error], [409, "in_flight"]);
    await setStatus(sid, "COMPLETED", Date.now() * 1000, first.flow_run_id);
    const rerun = await call("POST", "/process", { key, session_id: sid, rerun: true });
    assertEquals(rerun.status, 202);
    const out = await rerun.json();
    assertEquals(out.rerun, true);
    // a re-run is a new run: Prefect is asked with a key of its own, never the first run's
    assertEquals(s.runs.map((x) => x.idempotency_key), [sid, `${sid}:rerun:1`]);
    assertEquals(out.flow_run_id, s.runs[1].id);
    assertEquals((await row(sid)).status, "PENDING");
    // the other user cannot re-run it either
    const theirs = await call("POST", "/process", { key, session_id: sid, rerun: true }, "jwt-b");
    assertEquals(theirs.status, 403);
  });
});

Deno.test("process: per-user limits on runs in flight and per hour, the other users unaffected", async () => {
  await withFunction(async ({ call, s }) => {
    const started = [];
    for (let i = 0; i < 2; i++) {
      const res = await call("POST", "/process", { key: await smallUpload(call, "jwt-c") }, "jwt-c");
      assertEquals(res.status, 202);
      started.push(await res.json());
    }
    const third = await call("POST", "/process", { key: await smallUpload(call, "jwt-c") }, "jwt-c");
    assertEquals([third.status, (await third.json()).error], [429, "too_many_in_flight"]);
    // finishing one frees a place in flight, but the hour's budget (3) is then the limit
    await setStatus(started[0].session_id, "COMPLETED", Date.now() * 1000, started[0].flow_run_id);
    const fourth = await call("POST", "/process", { key: await smallUpload(call, "jwt-c") }, "jwt-c");
    assertEquals(fourth.status, 202);
    await fourth.body?.cancel();
    await setStatus(started[1].session_id, "FAILED", Date.now() * 1000, started[1].flow_run_id);
    const fifth = await call("POST", "/process", { key: await smallUpload(call, "jwt-c") }, "jwt-c");
    assertEquals([fifth.status, (await fifth.json()).error], [429, "too_many_per_hour"]);
    // C is at both limits; B, under the same limits, still starts runs (up to its own in-flight limit)
    const created = s.runs.length;
    for (let i = 0; i < 2; i++) {
      const other = await call("POST", "/process", { key: await smallUpload(call, "jwt-b") }, "jwt-b");
      assertEquals(other.status, 202, `user B's run ${i + 1}`);
      assertEquals((await other.json()).flow_run_id, s.runs[created + i].id);
      assertEquals(s.runs[created + i].parameters.user_id, USER_B);
    }
  }, { VIBEINSIGHT_MAX_RUNS_IN_FLIGHT_PER_USER: "2", VIBEINSIGHT_MAX_RUNS_PER_HOUR_PER_USER: "3" });
});

Deno.test("process: a missing upload is refused before any row is written", async () => {
  await withFunction(async ({ call, s }) => {
    const sid = crypto.randomUUID();
    const res = await call("POST", "/process", { key: `uploads/${USER_A}/${crypto.randomUUID()}.wav`, session_id: sid });
    assertEquals([res.status, (await res.json()).error], [409, "upload_missing"]);
    assertEquals(await row(sid), undefined);
    assertEquals(s.runs.length, 0);
  });
});

// --- robust edges ---

Deno.test("malformed bodies and keys are 400 with a fixed body, never 500", async () => {
  await withFunction(async ({ call, s }) => {
    const key = `uploads/${USER_A}/${crypto.randomUUID()}.wav`;
    const bodies: unknown[] = ["null", "[]", '"x"', "1", "not json", "{}", { key: [key] }, { key: 5 },
      { key: key + "?x=1" }, { key: key.replace(".wav", "#.wav") }, { key: `uploads/${USER_A}/../x.wav` },
      { key: `uploads/${USER_A}/call.wav` }, { key, session_id: ["a"] }, { key, session_id: "nope" },
      { key, session_id: 7 }, { key, language: "ja; drop" }, { key, language: ["ja"] },
      { key, vocabulary: "Tigris" }, { key, vocabulary: [1] }, { key, rerun: "yes" }];
    for (const body of bodies) {
      const res = await call("POST", "/process", body);
      assertEquals([res.status, await res.json()], [400, { error: "bad_request",
        message: "the request body is not what this route takes" }], JSON.stringify(body));
    }
    for (const path of ["/uploads", "/uploads/complete", "/uploads/parts"]) {
      for (const body of ["null", "[]"]) assertEquals((await call("POST", path, body)).status, 400, path + body);
    }
    const bad = await call("POST", "/uploads/complete", { key, upload_id: "x", parts: [{ part_number: 2, etag: "e" }] });
    assertEquals(bad.status, 400);
    assertEquals(s.runs.length, 0);
  });
});

Deno.test("auth: no token, a forged token, the service key as a token are 401; other routes 404/405", async () => {
  await withFunction(async ({ call }) => {
    for (const jwt of ["", "forged", SERVICE_KEY]) {
      const res = await call("POST", "/uploads", { filename: "a.wav", content_type: "audio/wav", bytes: 10 }, jwt);
      assertEquals([res.status, (await res.json()).error], [401, "unauthorized"], jwt);
    }
    assertEquals((await call("GET", "/uploads")).status, 405);
    assertEquals((await call("POST", "/__proto__", {})).status, 404);
    assertEquals((await call("POST", "/constructor", {})).status, 404);
  });
});

Deno.test("CORS: preflight answers the configured origin; errors carry it too", async () => {
  await withFunction(async ({ call }) => {
    const pre = await call("OPTIONS", "/uploads", undefined, "", { Origin: "https://app.example.com",
      "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type" });
    assertEquals(pre.status, 204);
    assertEquals(pre.headers.get("access-control-allow-origin"), "https://app.example.com");
    assert(pre.headers.get("access-control-allow-headers")!.includes("authorization"), "headers");
    assert(pre.headers.get("access-control-allow-methods")!.includes("POST"), "methods");
    const err = await call("POST", "/uploads", "null", "jwt-a", { Origin: "https://evil.example" });
    assertEquals(err.headers.get("access-control-allow-origin"), "https://app.example.com");
    await err.body?.cancel();
  });
});

Deno.test("upstream failures: fixed 502 bodies with a code, one retry, and a timeout", async () => {
  await withFunction(async ({ call, s }) => {
    const key = await smallUpload(call);
    s.mode.prefect500 = true;
    const res = await call("POST", "/process", { key });
    assertEquals(res.status, 502);
    const text = await res.text();
    assertEquals(JSON.parse(text), { error: "prefect_unavailable", message: "the processing service did not answer" });
    assert(!/db\.internal|prefect_admin|5432/.test(text), "upstream text leaked");
    assertEquals(s.calls.filter((c) => c.path.startsWith("/api/")).length, 2); // one call, one retry
    s.mode.prefect500 = false;
    const authCalls = () => s.calls.filter((c) => c.path === "/auth/v1/user").length;
    const before = authCalls();
    s.mode.authHang = true;
    const slow = await call("POST", "/uploads", { filename: "a.wav", content_type: "audio/wav", bytes: 10 });
    assertEquals([slow.status, (await slow.json()).error], [502, "auth_unavailable"]);
    // Auth never answers: only the timeout ends each of the two attempts
    assertEquals(authCalls() - before, 2);
  });
});

// --- results ---

Deno.test("results: the owner gets a short-lived URL of the document; anyone else gets 404", async () => {
  await withFunction(async ({ call, cfg }) => {
    const key = await smallUpload(call);
    const started = await (await call("POST", "/process", { key })).json();
    const sid = started.session_id;
    const early = await call("GET", `/results/${sid}`);
    assertEquals([early.status, (await early.json()).error], [409, "not_ready"]);
    const s3 = new S3(cfg.s3, 5000);
    const doc = JSON.stringify({ schema_version: "1.0", session_id: sid, status: "COMPLETED" });
    const put = await fetch(await s3.presign("PUT", `results/${sid}.json`, 60), { method: "PUT", body: doc });
    assertEquals(put.status, 200);
    await put.body?.cancel();
    await setStatus(sid, "COMPLETED", Date.now() * 1000, started.flow_run_id);
    const res = await call("GET", `/results/${sid.toUpperCase()}`);
    assertEquals(res.status, 200);
    const out = await res.json();
    assert(out.url.includes(`X-Amz-Expires=${LIMITS.result_url_expires_s}`), "short expiry");
    assertEquals(await (await fetch(out.url)).text(), doc);
    for (const [path, jwt] of [[`/results/${sid}`, "jwt-b"], [`/results/${crypto.randomUUID()}`, "jwt-a"],
      ["/results/..%2F..%2Fetc", "jwt-a"]]) {
      const other = await call("GET", path, undefined, jwt);
      assertEquals([other.status, (await other.json()).error], [404, "not_found"], path);
    }
  });
});
