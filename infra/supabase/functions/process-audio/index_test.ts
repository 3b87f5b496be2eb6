// Deno tests of the Edge Function: only Supabase's (Auth, PostgREST RPC) and Prefect's HTTP
// endpoints are faked, by local servers answering with the shapes their docs show.
// Run: deno test --allow-net infra/supabase/functions/process-audio/index_test.ts
import { handle, type Env } from "./index.ts";

function assertEquals(a: unknown, b: unknown, msg = "") {
  const [x, y] = [JSON.stringify(a), JSON.stringify(b)];
  if (x !== y) throw new Error(`${msg} expected ${y}, got ${x}`);
}

const USER = "6f1c1f0e-6a44-4b0e-9a55-0f2b8f6e2a11";
const OTHER = "0d9b2c3e-1111-4c22-8d33-9e44f5a6b7c8";
const GOOD_JWT = "eyJhbGciOiJIUzI1NiJ9.good.sig";
const DEP_ID = "2b6c3b5e-9d0e-4b55-9a4f-3a0b1c2d3e4f";

interface Seen { method: string; path: string; headers: Headers; body: unknown }

// One fake for both services (paths do not overlap); state: rows and idempotency keys.
function fakes(opts: { prefect503Once?: boolean } = {}) {
  const seen: Seen[] = [];
  const rows = new Map<string, { status: string; seq: number }>();
  const runs = new Map<string, string>();
  let fail503 = opts.prefect503Once ?? false;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const text = await req.text();
    const body = text ? JSON.parse(text) : null;
    seen.push({ method: req.method, path: url.pathname, headers: req.headers, body });
    if (url.pathname === "/auth/v1/user") {
      if (req.headers.get("Authorization") !== `Bearer ${GOOD_JWT}`) {
        return Response.json({ code: 401, error_code: "bad_jwt", msg: "invalid JWT: unable to parse or verify signature" }, { status: 401 });
      }
      return Response.json({ id: USER, aud: "authenticated", role: "authenticated", email: "a@example.com" });
    }
    if (url.pathname === "/rest/v1/rpc/apply_status_update") {
      const old = rows.get(body.p_session_id);
      if (old && body.p_seq <= old.seq) return Response.json(false);
      rows.set(body.p_session_id, { status: body.p_status, seq: body.p_seq });
      return Response.json(true);
    }
    if (url.pathname === "/api/deployments/name/process-audio/api") {
      return Response.json({ id: DEP_ID, name: "api", work_pool_name: "vibeinsight-fly" });
    }
    if (url.pathname === `/api/deployments/${DEP_ID}/create_flow_run`) {
      if (fail503) {
        fail503 = false;
        return Response.json({ exception_message: "Service Unavailable" }, { status: 503 });
      }
      const id = runs.get(body.idempotency_key) ?? crypto.randomUUID();
      runs.set(body.idempotency_key, id);
      return Response.json({ id, name: "ultraviolet-chimpanzee", deployment_id: DEP_ID, parameters: body.parameters,
        idempotency_key: body.idempotency_key, state: { type: "SCHEDULED", name: "Scheduled" } }, { status: 201 });
    }
    return new Response("not found", { status: 404 });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  const env: Env = { SUPABASE_URL: base, SUPABASE_SERVICE_ROLE_KEY: "service-role-key", PREFECT_API_URL: `${base}/api`,
    PREFECT_API_KEY: "pnu_test", FLY_S3_BUCKET_NAME: "vibeinsight-uploads" };
  return { seen, rows, runs, env, close: () => server.shutdown() };
}

function req(body: unknown, jwt = GOOD_JWT, method = "POST"): Request {
  return new Request("http://edge.local/process-audio", {
    method, headers: { Authorization: `Bearer ${jwt}`, "Content-Type": "application/json" },
    body: method === "POST" ? JSON.stringify(body) : undefined,
  });
}

Deno.test("creates the PENDING row and the flow run, answers 202", async () => {
  const f = fakes();
  try {
    const sid = "9a7b6c5d-4e3f-4a1b-8c9d-0e1f2a3b4c5d";
    const res = await handle(req({ upload_key: `uploads/${USER}/call.m4a`, session_id: sid, language: "ja" }), f.env);
    assertEquals(res.status, 202);
    const out = await res.json();
    assertEquals(out.session_id, sid);
    assertEquals(out.flow_run_id, f.runs.get(sid));
    const rpc = f.seen.find((s) => s.path === "/rest/v1/rpc/apply_status_update")!;
    assertEquals(rpc.headers.get("apikey"), "service-role-key");
    assertEquals(rpc.headers.get("Authorization"), "Bearer service-role-key");
    assertEquals(rpc.body, { p_session_id: sid, p_status: "PENDING", p_seq: 1, p_user_id: USER,
      p_deployment: "process-audio/api", p_stage: "queued", p_progress: 0 });
    const create = f.seen.find((s) => s.path.endsWith("/create_flow_run"))!;
    assertEquals(create.method, "POST");
    assertEquals(create.headers.get("Authorization"), "Bearer pnu_test");
    assertEquals(create.body, { parameters: { source: `s3://vibeinsight-uploads/uploads/${USER}/call.m4a`,
      session_id: sid, user_id: USER, language: "ja" }, idempotency_key: sid, tags: ["trigger:edge"] });
    // order: auth, row, deployment lookup, run
    assertEquals(f.seen.map((s) => s.path), ["/auth/v1/user", "/rest/v1/rpc/apply_status_update",
      "/api/deployments/name/process-audio/api", `/api/deployments/${DEP_ID}/create_flow_run`]);
  } finally {
    await f.close();
  }
});

Deno.test("a repeated call with the same session gets the same run and leaves the row alone", async () => {
  const f = fakes();
  try {
    const sid = "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b";
    const body = { upload_key: `uploads/${USER}/a.wav`, session_id: sid };
    const a = await (await handle(req(body), f.env)).json();
    f.rows.set(sid, { status: "RUNNING", seq: 1_790_000_000_000_000 }); // the run started meanwhile
    const b = await (await handle(req(body), f.env)).json();
    assertEquals(b.flow_run_id, a.flow_run_id);
    assertEquals(f.rows.get(sid)!.status, "RUNNING");
    assertEquals(f.runs.size, 1);
  } finally {
    await f.close();
  }
});

Deno.test("without session_id a new UUID is made; Prefect 503 is retried", async () => {
  const f = fakes({ prefect503Once: true });
  try {
    const res = await handle(req({ upload_key: `uploads/${USER}/b.mp3` }), f.env);
    assertEquals(res.status, 202);
    const out = await res.json();
    if (!/^[0-9a-f-]{36}$/.test(out.session_id)) throw new Error(out.session_id);
    assertEquals(f.seen.filter((s) => s.path.endsWith("/create_flow_run")).length, 2);
  } finally {
    await f.close();
  }
});

Deno.test("rejects a bad token, another user's key, bad input; nothing is written or started", async () => {
  const f = fakes();
  try {
    const cases: [Request, number, string][] = [
      [req({ upload_key: `uploads/${USER}/a.wav` }, "forged"), 401, "unauthorized"],
      [req({ upload_key: `uploads/${OTHER}/a.wav` }), 403, "forbidden"],
      [req({ upload_key: `uploads/${USER}/../${OTHER}/a.wav` }), 400, "bad_request"],
      [req({ upload_key: `uploads/${USER}/a.wav`, session_id: "nope" }), 400, "bad_request"],
      [req({ upload_key: `uploads/${USER}/a.wav`, language: "ja; drop" }), 400, "bad_request"],
      [req(null, GOOD_JWT, "GET"), 405, "method_not_allowed"],
    ];
    for (const [r, status, code] of cases) {
      const res = await handle(r, f.env);
      assertEquals(res.status, status, code);
      assertEquals((await res.json()).error, code);
    }
    assertEquals(f.seen.filter((s) => s.path !== "/auth/v1/user").length, 0);
  } finally {
    await f.close();
  }
});
