// Deno tests of the per-user upload limits (request_upload() in SQL, migration 20261204000400), the
// refusal of anonymous users and the 64 KB body limit, against the same real parts as index_test.ts:
// SeaweedFS's S3 and the PostgREST stand-in on a real PostgreSQL, run by tests/test_edge_function.py.
// The users are shared with index_test.ts, so every limit here is set from what the user already has.
import { type Config, configFrom } from "./config.ts";
import { MESSAGES } from "./http.ts";
import { handle } from "./index.ts";
import { MAX_BODY_BYTES, readBody } from "./validate.ts";
import { assert, assertEquals, need } from "./test_support.ts";

const USER_A = need("EDGE_TEST_USER_A");
const USER_B = need("EDGE_TEST_USER_B");
const USER_C = need("EDGE_TEST_USER_C");
const POSTGREST = need("EDGE_TEST_POSTGREST_URL");
const SERVICE_KEY = need("EDGE_TEST_SERVICE_KEY");
const MB = 1024 * 1024;

// What Supabase Auth's GET /auth/v1/user answers for each token: anonymous sign-ins are
// `authenticated` users with is_anonymous true.
const USERS: Record<string, Record<string, unknown>> = {
  "jwt-a": { id: USER_A, role: "authenticated", is_anonymous: false },
  "jwt-b": { id: USER_B, role: "authenticated", is_anonymous: false },
  "jwt-c": { id: USER_C, role: "authenticated", is_anonymous: false },
  "jwt-anon": { id: USER_B, role: "authenticated", is_anonymous: true },
  "jwt-anon-role": { id: USER_B, role: "anon" },
};

/** Supabase's base URL for the function: Auth answered here, the REST API forwarded to the PostgREST stand-in. */
function supabase() {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/auth/v1/user") {
      const user = USERS[(req.headers.get("Authorization") ?? "").replace(/^Bearer /, "")];
      if (!user || req.headers.get("apikey") !== SERVICE_KEY) {
        return Response.json({ code: 401, error_code: "bad_jwt", msg: "invalid JWT" }, { status: 401 });
      }
      return Response.json({ ...user, aud: "authenticated", app_metadata: {}, user_metadata: {} });
    }
    const res = await fetch(POSTGREST + url.pathname + url.search, {
      method: req.method, headers: req.headers, body: req.method === "GET" ? undefined : await req.arrayBuffer(),
    });
    return new Response(await res.arrayBuffer(), { status: res.status, headers: res.headers });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

function config(supabaseUrl: string, env: Record<string, string>): Config {
  const all: Record<string, string> = {
    SUPABASE_URL: supabaseUrl, SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY, PREFECT_API_URL: "http://127.0.0.1:9/api",
    FLY_S3_ENDPOINT: need("EDGE_TEST_S3_ENDPOINT"), FLY_S3_ACCESS_KEY_ID: need("EDGE_TEST_S3_KEY"),
    FLY_S3_SECRET_ACCESS_KEY: need("EDGE_TEST_S3_SECRET"), FLY_S3_BUCKET_NAME: need("EDGE_TEST_S3_BUCKET"),
    VIBEINSIGHT_S3_ADDRESSING_STYLE: "path", VIBEINSIGHT_EDGE_TIMEOUT_MS: "5000", ...env,
  };
  return configFrom((k) => all[k]);
}

type Call = (path: string, body: unknown, jwt?: string) => Promise<Response>;

async function withFunction(env: Record<string, string>, fn: (call: Call) => Promise<void>) {
  const sb = supabase();
  const cfg = config(sb.url, env);
  const call: Call = (path, body, jwt = "jwt-a") =>
    handle(new Request(`http://127.0.0.1/process-audio${path}`, {
      method: "POST", headers: { Authorization: `Bearer ${jwt}`, "Content-Type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }), cfg);
  try {
    await fn(call);
  } finally {
    await sb.close();
  }
}

/** The user's upload_requests rows as the service role sees them (all of them lie within the last hour). */
async function uploadsOf(user: string): Promise<{ bytes: number }[]> {
  const res = await fetch(`${POSTGREST}/rest/v1/upload_requests?select=bytes&user_id=eq.${user}`,
    { headers: { apikey: SERVICE_KEY, Authorization: `Bearer ${SERVICE_KEY}` } });
  assertEquals(res.status, 200, "reading upload_requests");
  return await res.json();
}

const wav = (bytes: number) => ({ filename: "call.wav", content_type: "audio/wav", bytes });

async function outcome(res: Response): Promise<[number, string | undefined]> {
  const body = await res.json();
  return [res.status, body.error];
}

Deno.test("uploads: past the hourly URL limit a user gets 429 with a fixed body and nothing is recorded; others go on", async () => {
  const [b, c] = [(await uploadsOf(USER_B)).length, (await uploadsOf(USER_C)).length];
  const limit = Math.max(b, c) + 2;
  await withFunction({ VIBEINSIGHT_MAX_UPLOADS_PER_HOUR_PER_USER: String(limit) }, async (call) => {
    for (let i = c; i < limit; i++) assertEquals(await outcome(await call("/uploads", wav(1000), "jwt-c")), [200, undefined]);
    const refused = await call("/uploads", wav(1000), "jwt-c");
    assertEquals(refused.status, 429);
    assertEquals(await refused.json(), { error: "too_many_uploads_per_hour", message: MESSAGES.too_many_uploads_per_hour });
    assertEquals((await uploadsOf(USER_C)).length, limit, "the refused request left a row");
    assertEquals(await outcome(await call("/uploads", wav(1000), "jwt-b")), [200, undefined]);
  });
});

Deno.test("uploads: the bytes declared in 24 hours are capped per user, multipart uploads included", async () => {
  const before = (await uploadsOf(USER_A)).reduce((n, r) => n + Number(r.bytes), 0);
  await withFunction({ VIBEINSIGHT_MAX_UPLOAD_BYTES_PER_DAY_PER_USER: String(before + 20 * MB) }, async (call) => {
    const big = await call("/uploads", wav(12 * MB));
    assertEquals(big.status, 200);
    assertEquals((await big.json()).method, "MULTIPART");
    const refused = await call("/uploads", wav(12 * MB));
    assertEquals([refused.status, await refused.json()], [429, { error: "too_many_upload_bytes",
      message: MESSAGES.too_many_upload_bytes }]);
    // what still fits is handed out
    assertEquals(await outcome(await call("/uploads", wav(8 * MB))), [200, undefined]);
    assertEquals(await outcome(await call("/uploads", wav(1))), [429, "too_many_upload_bytes"]);
  });
});

Deno.test("uploads: concurrent requests cannot pass the limit together", async () => {
  const limit = (await uploadsOf(USER_C)).length + 1;
  await withFunction({ VIBEINSIGHT_MAX_UPLOADS_PER_HOUR_PER_USER: String(limit) }, async (call) => {
    const answers = await Promise.all(Array.from({ length: 6 }, () => call("/uploads", wav(1000), "jwt-c").then(outcome)));
    assertEquals(answers.filter(([s]) => s === 200).length, 1, JSON.stringify(answers));
    assertEquals(answers.filter(([s, e]) => s === 429 && e === "too_many_uploads_per_hour").length, 5, JSON.stringify(answers));
    assertEquals((await uploadsOf(USER_C)).length, limit);
  });
});

Deno.test("anonymous users are refused with a fixed body unless VIBEINSIGHT_ALLOW_ANONYMOUS is true", async () => {
  await withFunction({}, async (call) => {
    const rows = (await uploadsOf(USER_B)).length;
    for (const jwt of ["jwt-anon", "jwt-anon-role"]) {
      const res = await call("/uploads", wav(1000), jwt);
      assertEquals([res.status, await res.json()], [403, { error: "anonymous_not_allowed",
        message: MESSAGES.anonymous_not_allowed }], jwt);
      assertEquals(await outcome(await call("/process", { key: `uploads/${USER_B}/${crypto.randomUUID()}.wav` }, jwt)),
        [403, "anonymous_not_allowed"]);
    }
    assertEquals((await uploadsOf(USER_B)).length, rows, "a refused anonymous request left a row");
  });
  await withFunction({ VIBEINSIGHT_ALLOW_ANONYMOUS: "true" }, async (call) => {
    assertEquals(await outcome(await call("/uploads", wav(1000), "jwt-anon")), [200, undefined]);
  });
  let thrown = "";
  try {
    config("http://127.0.0.1:9", { VIBEINSIGHT_ALLOW_ANONYMOUS: "yes" });
  } catch (e) {
    thrown = String(e);
  }
  assert(thrown.includes("VIBEINSIGHT_ALLOW_ANONYMOUS"), `a setting that is not true/false: ${thrown}`);
});

/** A request whose body is `total` bytes of JSON-ish text in 16 KB chunks, counting what the reader pulled. */
function streamed(total: number, headers: Record<string, string> = {}) {
  const chunk = new TextEncoder().encode(" ".repeat(16 * 1024));
  const seen = { pulled: 0 };
  const body = new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (seen.pulled >= total) return ctl.close();
      seen.pulled += chunk.byteLength;
      ctl.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  return { req: new Request("http://127.0.0.1/process-audio/uploads", { method: "POST", body, headers }), seen };
}

Deno.test("a body over 64 KB is refused with the fixed 400 once the limit is passed, never read to its end", async () => {
  const { req, seen } = streamed(50 * MB);
  let code = "";
  try {
    await readBody(req);
  } catch (e) {
    code = (e as { code?: string }).code ?? String(e);
  }
  assertEquals(code, "bad_request");
  assert(seen.pulled <= MAX_BODY_BYTES + 2 * 16 * 1024, `read ${seen.pulled} bytes of a 50 MB body`);

  // declared too long: refused before a byte is read
  const declared = streamed(50 * MB, { "content-length": String(50 * MB) });
  try {
    await readBody(declared.req);
  } catch (e) {
    code = (e as { code?: string }).code ?? "";
  }
  assertEquals([code, declared.seen.pulled], ["bad_request", 0]);

  // a JSON body just under the limit is still read whole
  const padded = JSON.stringify({ ...wav(1000), pad: "x".repeat(MAX_BODY_BYTES - 100) });
  assertEquals((await readBody(new Request("http://x/", { method: "POST", body: padded }))).bytes, 1000);

  // through the function, as a client sees it
  await withFunction({}, async (call) => {
    const res = await call("/uploads", JSON.stringify({ ...wav(1000), pad: "x".repeat(MAX_BODY_BYTES) }));
    assertEquals([res.status, await res.json()], [400, { error: "bad_request", message: MESSAGES.bad_request }]);
  });
});
