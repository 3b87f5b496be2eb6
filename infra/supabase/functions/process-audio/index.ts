// Edge Function `process-audio`: only triggers (2 s CPU, 150 MB, 6 MB responses), heavy work
// runs on the Fly.io workers. Steps: verify the caller's JWT with Supabase Auth, check the upload
// key is the caller's (uploads/{user_id}/…), write the PENDING row through the
// apply_status_update RPC, create the flow run through Prefect's REST API with
// idempotency_key = session id, answer 202 {session_id, flow_run_id}.
// Idempotent: a repeated call with the same session_id gets the same run and never moves the
// row back (PENDING is written with seq 1, older than any state a run writes).

export interface Env {
  SUPABASE_URL: string;
  SUPABASE_SERVICE_ROLE_KEY: string;
  PREFECT_API_URL: string; // the server's …/api URL
  PREFECT_API_KEY?: string;
  FLY_S3_BUCKET_NAME: string;
  PREFECT_DEPLOYMENT?: string; // default process-audio/api
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LANGUAGE = /^(auto|[a-z]{2,3})$/;
const PENDING_SEQ = 1;

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function uploadKeyError(key: unknown, userId: string): string | null {
  if (typeof key !== "string" || key.length === 0 || new TextEncoder().encode(key).length > 1024) {
    return "upload_key must be a non-empty object key";
  }
  const parts = key.split("/");
  if (key.includes("://") || key.startsWith("/") || /[\x00-\x1f\x7f\\]/.test(key) ||
    parts.some((p) => p === "" || p === "." || p === "..")) return "upload_key is not a plain object key";
  if (parts[0] !== "uploads" || parts[1] !== userId || parts.length < 3) {
    return "upload_key does not belong to the caller";
  }
  return null;
}

async function call(url: string, init: RequestInit, what: string, attempts = 3): Promise<unknown> {
  for (let i = 0; ; i++) {
    const res = await fetch(url, init);
    const text = await res.text();
    if (res.ok) return text ? JSON.parse(text) : null;
    // Prefect answers 503 for errors worth retrying; create_flow_run is idempotent, so retry is safe
    if ([429, 502, 503, 504].includes(res.status) && i < attempts - 1) {
      await new Promise((r) => setTimeout(r, 200 * 2 ** i));
      continue;
    }
    throw new HttpError(502, `${what}_failed`, `${what}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
}

async function verifyUser(req: Request, env: Env): Promise<string> {
  const auth = req.headers.get("Authorization") ?? "";
  const jwt = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
  if (!jwt) throw new HttpError(401, "unauthorized", "missing bearer token");
  const res = await fetch(`${env.SUPABASE_URL}/auth/v1/user`, {
    headers: { Authorization: `Bearer ${jwt}`, apikey: env.SUPABASE_SERVICE_ROLE_KEY },
  });
  if (res.status === 401 || res.status === 403) throw new HttpError(401, "unauthorized", "invalid or expired token");
  if (!res.ok) throw new HttpError(502, "auth_failed", `auth: HTTP ${res.status}`);
  const user = await res.json() as { id?: string };
  if (!user.id || !UUID.test(user.id)) throw new HttpError(401, "unauthorized", "token has no user");
  return user.id;
}

export async function handle(req: Request, env: Env): Promise<Response> {
  try {
    if (req.method !== "POST") throw new HttpError(405, "method_not_allowed", "POST only");
    const userId = await verifyUser(req, env);
    let body: Record<string, unknown>;
    try {
      body = await req.json();
    } catch {
      throw new HttpError(400, "bad_request", "body must be JSON");
    }
    const keyError = uploadKeyError(body.upload_key, userId);
    if (keyError) {
      throw new HttpError(keyError.includes("belong") ? 403 : 400, keyError.includes("belong") ? "forbidden" : "bad_request", keyError);
    }
    const sessionId = body.session_id === undefined ? crypto.randomUUID() : String(body.session_id);
    if (!UUID.test(sessionId)) throw new HttpError(400, "bad_request", "session_id must be a UUID");
    const language = body.language === undefined ? "auto" : String(body.language);
    if (!LANGUAGE.test(language)) throw new HttpError(400, "bad_request", "language must be auto or a language code");
    const deployment = env.PREFECT_DEPLOYMENT ?? "process-audio/api";

    const supa = {
      apikey: env.SUPABASE_SERVICE_ROLE_KEY,
      Authorization: `Bearer ${env.SUPABASE_SERVICE_ROLE_KEY}`,
      "Content-Type": "application/json",
    };
    await call(`${env.SUPABASE_URL}/rest/v1/rpc/apply_status_update`, {
      method: "POST",
      headers: supa,
      body: JSON.stringify({
        p_session_id: sessionId, p_status: "PENDING", p_seq: PENDING_SEQ, p_user_id: userId,
        p_deployment: deployment, p_stage: "queued", p_progress: 0,
      }),
    }, "status");

    const prefect: Record<string, string> = { "Content-Type": "application/json" };
    if (env.PREFECT_API_KEY) prefect.Authorization = `Bearer ${env.PREFECT_API_KEY}`;
    const api = env.PREFECT_API_URL.replace(/\/$/, "");
    const [flowName, depName] = deployment.split("/");
    const dep = await call(`${api}/deployments/name/${encodeURIComponent(flowName)}/${encodeURIComponent(depName)}`,
      { headers: prefect }, "prefect_deployment") as { id: string };
    const run = await call(`${api}/deployments/${dep.id}/create_flow_run`, {
      method: "POST",
      headers: prefect,
      body: JSON.stringify({
        parameters: {
          source: `s3://${env.FLY_S3_BUCKET_NAME}/${body.upload_key}`,
          session_id: sessionId, user_id: userId, language,
        },
        idempotency_key: sessionId,
        tags: ["trigger:edge"],
      }),
    }, "prefect_run") as { id: string };
    return json(202, { session_id: sessionId, flow_run_id: run.id, status: "PENDING" });
  } catch (e) {
    if (e instanceof HttpError) return json(e.status, { error: e.code, message: e.message });
    return json(500, { error: "internal", message: String(e) });
  }
}

function envFromDeno(): Env {
  const get = (k: string) => Deno.env.get(k) ?? "";
  return {
    SUPABASE_URL: get("SUPABASE_URL"), SUPABASE_SERVICE_ROLE_KEY: get("SUPABASE_SERVICE_ROLE_KEY"),
    PREFECT_API_URL: get("PREFECT_API_URL"), PREFECT_API_KEY: Deno.env.get("PREFECT_API_KEY"),
    FLY_S3_BUCKET_NAME: get("FLY_S3_BUCKET_NAME"), PREFECT_DEPLOYMENT: Deno.env.get("PREFECT_DEPLOYMENT"),
  };
}

if (import.meta.main) {
  Deno.serve((req) => handle(req, envFromDeno()));
}
