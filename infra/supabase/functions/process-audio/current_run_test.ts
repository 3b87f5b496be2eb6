// Deno tests of /process and the session's current run (issue 20): the row names its run as soon as Prefect
// answers, and a request_run() call retried after its answer was lost gets the same decision. Real parts as
// in index_test.ts (SeaweedFS's S3, the PostgREST stand-in on a real PostgreSQL with every migration), run
// through tests/test_edge_function.py; Auth and Prefect stand-ins are served here with the vendors' shapes.
import { type Config, configFrom } from "./config.ts";
import { handle } from "./index.ts";
import { S3 } from "./s3.ts";
import { assertEquals, need } from "./test_support.ts";

const USER_A = need("EDGE_TEST_USER_A");
const POSTGREST = need("EDGE_TEST_POSTGREST_URL");
const SERVICE_KEY = need("EDGE_TEST_SERVICE_KEY");
const DEP_ID = "6f0d7c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f";

/** Auth (GET /auth/v1/user), Prefect (deployment by name, create_flow_run with idempotency) and, in front of
 * the PostgREST stand-in, a proxy that can lose the answer of the next request_run() call after it committed. */
function stack() {
  const runs = new Map<string, string>(); // idempotency key -> flow run id
  const rpcCalls: { fn: string; body: Record<string, unknown> }[] = [];
  const mode = { loseNextRequestRunAnswer: false };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const text = await req.text();
    if (url.pathname === "/auth/v1/user") {
      if (req.headers.get("Authorization") !== "Bearer jwt-a") return Response.json({ msg: "invalid JWT" }, { status: 401 });
      return Response.json({ id: USER_A, aud: "authenticated", role: "authenticated" });
    }
    if (url.pathname === "/api/deployments/name/process-audio/api") return Response.json({ id: DEP_ID, name: "api" });
    if (url.pathname === `/api/deployments/${DEP_ID}/create_flow_run`) {
      const body = JSON.parse(text);
      const id = runs.get(body.idempotency_key) ?? crypto.randomUUID();
      runs.set(body.idempotency_key, id);
      return Response.json({ id, idempotency_key: body.idempotency_key, parameters: body.parameters,
        state: { type: "SCHEDULED", name: "Scheduled" } }, { status: 201 });
    }
    if (url.pathname.startsWith("/rest/v1/")) {
      const fn = url.pathname.match(/^\/rest\/v1\/rpc\/(\w+)$/)?.[1];
      if (fn) rpcCalls.push({ fn, body: JSON.parse(text) });
      const res = await fetch(POSTGREST + url.pathname + url.search, {
        method: req.method, headers: req.headers, body: req.method === "GET" ? undefined : text,
      });
      const answer = await res.arrayBuffer();
      if (fn === "request_run" && mode.loseNextRequestRunAnswer) {
        mode.loseNextRequestRunAnswer = false; // committed in PostgreSQL; the answer never reaches the function
        return Response.json({ message: "upstream timed out" }, { status: 504 });
      }
      return new Response(answer, { status: res.status, headers: res.headers });
    }
    return Response.json({ detail: "Not Found" }, { status: 404 });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  const all: Record<string, string> = {
    SUPABASE_URL: base, SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY, PREFECT_API_URL: `${base}/api`,
    FLY_S3_ENDPOINT: need("EDGE_TEST_S3_ENDPOINT"), FLY_S3_ACCESS_KEY_ID: need("EDGE_TEST_S3_KEY"),
    FLY_S3_SECRET_ACCESS_KEY: need("EDGE_TEST_S3_SECRET"), FLY_S3_BUCKET_NAME: need("EDGE_TEST_S3_BUCKET"),
    FLY_S3_REGION: "nrt", VIBEINSIGHT_S3_ADDRESSING_STYLE: "path", VIBEINSIGHT_EDGE_TIMEOUT_MS: "2000",
    VIBEINSIGHT_ALLOWED_ORIGIN: "https://app.example.com", VIBEINSIGHT_MAX_RUNS_IN_FLIGHT_PER_USER: "50",
  };
  const cfg: Config = configFrom((k) => all[k]);
  const call = (body: unknown) =>
    handle(new Request("http://127.0.0.1/process-audio/process", { method: "POST",
      headers: { Authorization: "Bearer jwt-a", "Content-Type": "application/json" }, body: JSON.stringify(body) }), cfg);
  return { runs, rpcCalls, mode, call, cfg, close: () => server.shutdown() };
}

async function rest(path: string, body?: unknown) {
  const res = await fetch(POSTGREST + path, { method: body === undefined ? "GET" : "POST",
    headers: { apikey: SERVICE_KEY, Authorization: `Bearer ${SERVICE_KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body) });
  return await res.json();
}
const row = async (sid: string) => (await rest(`/rest/v1/processing_status?session_id=eq.${sid}`))[0];
/** The session's current run ends: its owner, its attempt, its run id (as the run's hooks write it). */
async function finish(sid: string, status: string) {
  const r = await row(sid);
  assertEquals(await rest("/rest/v1/rpc/apply_status_update", { p_session_id: sid, p_status: status,
    p_seq: Date.now() * 1000, p_user_id: r.user_id, p_flow_run_id: r.flow_run_id, p_attempt: r.attempt }), true, "finish");
}

/** An upload in the bucket (the function checks its size before it asks for a run). */
async function upload(cfg: Config): Promise<string> {
  const key = `uploads/${USER_A}/${crypto.randomUUID()}.wav`;
  const put = await fetch(await new S3(cfg.s3, 5000).presign("PUT", key, 60), { method: "PUT", body: new Uint8Array(2048) });
  assertEquals(put.status, 200, "PUT");
  await put.body?.cancel();
  return key;
}

Deno.test("process: the row names its run as soon as Prefect answers, a re-run's row its new run only", async () => {
  const s = stack();
  try {
    const key = await upload(s.cfg);
    const sid = crypto.randomUUID();
    const first = await (await s.call({ key, session_id: sid })).json();
    let r = await row(sid);
    assertEquals([r.status, r.flow_run_id, r.attempt], ["PENDING", first.flow_run_id, 0], "first run");
    await finish(sid, "COMPLETED");
    const rerun = await s.call({ key, session_id: sid, rerun: true });
    assertEquals(rerun.status, 202);
    const second = await rerun.json();
    r = await row(sid);
    assertEquals([r.status, r.flow_run_id, r.attempt], ["PENDING", second.flow_run_id, 1], "re-run");
    assertEquals(s.runs.get(`${sid}:rerun:1`), second.flow_run_id);
    // a stale answer (the first attempt's run, late) cannot take the row back
    assertEquals(await rest("/rest/v1/rpc/set_current_run", { p_session_id: sid, p_user_id: USER_A, p_attempt: 0,
      p_flow_run_id: first.flow_run_id }), false);
    assertEquals((await row(sid)).flow_run_id, second.flow_run_id);
  } finally {
    await s.close();
  }
});

Deno.test("process: a re-run whose request_run answer was lost is retried into the same decision, not in_flight", async () => {
  const s = stack();
  try {
    const key = await upload(s.cfg);
    const sid = crypto.randomUUID();
    await (await s.call({ key, session_id: sid })).json();
    await finish(sid, "FAILED");
    s.mode.loseNextRequestRunAnswer = true;
    const res = await s.call({ key, session_id: sid, rerun: true });
    const out = await res.json();
    assertEquals([res.status, out.rerun], [202, true], JSON.stringify(out));
    const asked = s.rpcCalls.filter((c) => c.fn === "request_run").slice(-2);
    assertEquals(asked.length, 2);
    assertEquals(asked[0].body.p_request_id, asked[1].body.p_request_id, "the retry repeats the request id");
    assertEquals(typeof asked[0].body.p_request_id, "string");
    assertEquals([...s.runs.keys()].filter((k) => k.startsWith(sid)).sort(), [sid, `${sid}:rerun:1`]);
    assertEquals((await row(sid)).attempt, 1, "one re-run recorded");
  } finally {
    await s.close();
  }
});
