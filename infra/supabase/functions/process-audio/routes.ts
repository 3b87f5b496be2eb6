// The function's routes. Each takes the caller's verified user id; nothing here trusts a key,
// a session or a limit the client states without checking it.
import type { Config } from "./config.ts";
import { call, callJson, HttpError, json } from "./http.ts";
import { S3 } from "./s3.ts";
import * as v from "./validate.ts";

export interface Ctx {
  cfg: Config;
  s3: S3;
  userId: string;
}

const service = (cfg: Config) => ({
  apikey: cfg.serviceRoleKey,
  Authorization: `Bearer ${cfg.serviceRoleKey}`,
  "Content-Type": "application/json",
});

/** The caller's user id from Supabase Auth (GET /auth/v1/user with their JWT). */
export async function verifyUser(req: Request, cfg: Config): Promise<string> {
  const auth = req.headers.get("Authorization") ?? "";
  const jwt = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
  if (!jwt || jwt === cfg.serviceRoleKey) throw new HttpError(401, "unauthorized");
  const res = await call(`${cfg.supabaseUrl}/auth/v1/user`, {
    headers: { Authorization: `Bearer ${jwt}`, apikey: cfg.serviceRoleKey },
  }, { timeoutMs: cfg.timeoutMs, unavailable: "auth_unavailable" });
  if (res.status >= 400 && res.status < 500) {
    await res.body?.cancel();
    throw new HttpError(401, "unauthorized");
  }
  let user: { id?: unknown; role?: unknown; is_anonymous?: unknown };
  try {
    user = await res.json();
  } catch {
    throw new HttpError(502, "auth_unavailable");
  }
  if (typeof user?.id !== "string") throw new HttpError(401, "unauthorized");
  let id: string;
  try {
    id = v.sessionId(user.id); // a UUID, lower-cased like every id here
  } catch {
    throw new HttpError(401, "unauthorized");
  }
  // Anyone can make an anonymous user (signInAnonymously): limits per user would not hold them back
  if ((user.is_anonymous === true || user.role === "anon") && !cfg.allowAnonymous) {
    throw new HttpError(403, "anonymous_not_allowed");
  }
  return id;
}

/** POST /uploads {filename, content_type, bytes}: a key and a presigned PUT, or a multipart upload. */
export async function createUpload(body: v.Body, ctx: Ctx): Promise<Response> {
  const { limits } = ctx.cfg;
  const { contentType, ext } = v.uploadKind(body, limits);
  const bytes = v.uploadBytes(body, limits);
  const key = v.newKey(ctx.userId, ext);
  await decideUpload(ctx, key, bytes);
  const expires = limits.upload_url_expires_s;
  if (bytes <= limits.single_put_max_bytes) {
    const headers = { "content-type": contentType, "content-length": String(bytes) };
    const url = await ctx.s3.presign("PUT", key, expires, {}, headers);
    return json(200, { key, method: "PUT", url, headers, expires_in: expires });
  }
  const uploadId = await ctx.s3.createMultipart(key, contentType);
  return json(200, { key, method: "MULTIPART", upload_id: uploadId, expires_in: expires,
    parts: await partUrls(ctx, key, uploadId, v.partPlan(bytes, limits), new Set()) });
}

const UPLOAD_REFUSED = new Set(["too_many_uploads_per_hour", "too_many_upload_bytes"]); // outcome = error code

/** The caller's upload limits (URLs per hour, declared bytes per day), decided and recorded atomically in SQL. */
async function decideUpload(ctx: Ctx, key: string, bytes: number): Promise<void> {
  const { cfg } = ctx;
  const decision = await callJson<{ outcome?: string }>(`${cfg.supabaseUrl}/rest/v1/rpc/request_upload`, {
    method: "POST", headers: service(cfg),
    body: JSON.stringify({ p_user_id: ctx.userId, p_upload_key: key, p_bytes: bytes,
      p_max_per_hour: cfg.limits.max_uploads_per_hour_per_user,
      p_max_bytes_per_day: cfg.limits.max_upload_bytes_per_day_per_user }),
  }, { timeoutMs: cfg.timeoutMs, unavailable: "status_unavailable" });
  const outcome = decision?.outcome ?? "";
  if (UPLOAD_REFUSED.has(outcome)) throw new HttpError(429, outcome);
  if (outcome !== "created") throw new HttpError(502, "status_unavailable"); // an answer the RPC never gives
}

async function partUrls(ctx: Ctx, key: string, uploadId: string, plan: number[], done: Set<number>) {
  const out = [];
  for (const [i, size] of plan.entries()) {
    if (done.has(i + 1)) continue;
    const url = await ctx.s3.presign("PUT", key, ctx.cfg.limits.upload_url_expires_s,
      { partNumber: String(i + 1), uploadId }, { "content-length": String(size) });
    out.push({ part_number: i + 1, bytes: size, url });
  }
  return out;
}

/** POST /uploads/parts {key, upload_id, bytes}: what is uploaded, and fresh URLs for the rest (resume). */
export async function listUploadParts(body: v.Body, ctx: Ctx): Promise<Response> {
  const key = v.ownKey(body, ctx.userId, ctx.cfg.limits);
  const uploadId = v.str(body, "upload_id", 1024);
  const plan = v.partPlan(v.uploadBytes(body, ctx.cfg.limits), ctx.cfg.limits);
  const done = await ctx.s3.listParts(key, uploadId);
  if (done === null) throw new HttpError(404, "not_found");
  // a part of the wrong size (another plan) is uploaded again
  const good = done.filter((p) => plan[p.part_number - 1] === p.size);
  return json(200, { key, upload_id: uploadId, parts_done: good.map(({ part_number, etag, size }) => ({ part_number, etag, bytes: size })),
    parts: await partUrls(ctx, key, uploadId, plan, new Set(good.map((p) => p.part_number))) });
}

/** POST /uploads/complete {key, upload_id, parts: [{part_number, etag}]}. */
export async function completeUpload(body: v.Body, ctx: Ctx): Promise<Response> {
  const key = v.ownKey(body, ctx.userId, ctx.cfg.limits);
  const uploadId = v.str(body, "upload_id", 1024);
  const parts = v.partList(body, ctx.cfg.limits.max_parts);
  if (!await ctx.s3.complete(key, uploadId, parts)) throw new HttpError(409, "upload_incomplete");
  const size = await ctx.s3.size(key);
  if (size === null) throw new HttpError(409, "upload_incomplete");
  return json(200, { key, bytes: size });
}

interface RunDecision {
  outcome: string;
  attempt?: number;
  flow_run_id?: string | null;
  status?: string;
}

const REFUSED: Record<string, [number, string]> = {
  conflict: [409, "session_conflict"],
  key_mismatch: [409, "key_mismatch"],
  upload_taken: [409, "upload_taken"],
  in_flight: [409, "in_flight"],
  too_many_in_flight: [429, "too_many_in_flight"],
  too_many_per_hour: [429, "too_many_per_hour"],
};

/** POST /process {key, language?, session_id?, vocabulary?, rerun?}: PENDING row, then the run. */
export async function startRun(body: v.Body, ctx: Ctx): Promise<Response> {
  const { cfg } = ctx;
  const key = v.ownKey(body, ctx.userId, cfg.limits);
  const sid = body.session_id === undefined ? crypto.randomUUID() : v.sessionId(body.session_id);
  const language = v.language(body);
  const vocabulary = v.vocabulary(body);
  const rerun = v.optional(body, "rerun", v.bool) ?? false;
  const size = await ctx.s3.size(key);
  if (size === null) throw new HttpError(409, "upload_missing");
  if (size > cfg.limits.max_bytes) throw new HttpError(413, "too_large");

  // ownership, one session per upload and the caller's limits, decided atomically in SQL; the request id
  // makes call()'s retry of a committed call (its answer lost) get the same decision, not `in_flight`
  const decision = await callJson<RunDecision>(`${cfg.supabaseUrl}/rest/v1/rpc/request_run`, {
    method: "POST", headers: service(cfg),
    body: JSON.stringify({ p_session_id: sid, p_user_id: ctx.userId, p_upload_key: key, p_deployment: cfg.deployment,
      p_rerun: rerun, p_max_in_flight: cfg.limits.max_runs_in_flight_per_user,
      p_max_per_hour: cfg.limits.max_runs_per_hour_per_user, p_request_id: crypto.randomUUID() }),
  }, { timeoutMs: cfg.timeoutMs, unavailable: "status_unavailable" });
  const refused = REFUSED[decision?.outcome];
  if (refused) throw new HttpError(refused[0], refused[1]);
  if (!["created", "exists", "rerun"].includes(decision?.outcome) || typeof decision.attempt !== "number") {
    throw new HttpError(502, "status_unavailable"); // an answer the RPC never gives
  }

  // Prefect's idempotency key: the session for its first run, one more key per re-run. The flow and
  // the status writers read the attempt back from it (vibeinsight/status_rule.py attempt_of).
  const idempotencyKey = decision.attempt === 0 ? sid : `${sid}:rerun:${decision.attempt}`;
  const prefect: Record<string, string> = { "Content-Type": "application/json" };
  if (cfg.prefectApiKey) prefect.Authorization = `Bearer ${cfg.prefectApiKey}`;
  const opt = { timeoutMs: cfg.timeoutMs, unavailable: "prefect_unavailable" };
  const [flowName, depName] = cfg.deployment.split("/");
  const dep = await callJson<{ id: string }>(
    `${cfg.prefectApiUrl}/deployments/name/${encodeURIComponent(flowName)}/${encodeURIComponent(depName)}`,
    { headers: prefect }, opt);
  const parameters: Record<string, unknown> = {
    source: `s3://${cfg.s3.bucket}/${key}`, session_id: sid, user_id: ctx.userId, language,
  };
  if (vocabulary) parameters.vocabulary = vocabulary;
  const run = await callJson<{ id: string }>(`${cfg.prefectApiUrl}/deployments/${dep.id}/create_flow_run`, {
    method: "POST", headers: prefect,
    // The label Prefect reads a W3C traceparent from: its flow and task spans join the session's trace,
    // as with `vibeinsight trigger` (vibeinsight/tracing.py: trace id = the session UUID, root span = its low 64 bits).
    body: JSON.stringify({ parameters, idempotency_key: idempotencyKey, tags: ["trigger:edge"],
      labels: { __OTEL_TRACEPARENT: traceparent(sid) } }),
  }, opt);
  if (typeof run?.id !== "string") throw new HttpError(502, "prefect_unavailable");
  await setCurrentRun(cfg, sid, ctx.userId, decision.attempt, run.id);
  return json(202, { session_id: sid, flow_run_id: run.id, status: decision.status ?? "PENDING",
    rerun: decision.outcome === "rerun" });
}

/** The row names its current run as soon as Prefect answers (with the attempt: a stale answer cannot win).
 * Best effort: the run is created; if this write is lost, the run's first status write or reconcile-status
 * (by the run's idempotency key) names it. */
async function setCurrentRun(cfg: Config, sid: string, userId: string, attempt: number, flowRunId: string) {
  try {
    await callJson<boolean>(`${cfg.supabaseUrl}/rest/v1/rpc/set_current_run`, {
      method: "POST", headers: service(cfg),
      body: JSON.stringify({ p_session_id: sid, p_user_id: userId, p_attempt: attempt, p_flow_run_id: flowRunId }),
    }, { timeoutMs: cfg.timeoutMs, unavailable: "status_unavailable" });
  } catch (e) {
    console.warn(`session ${sid}: run ${flowRunId} not written onto the row (${e instanceof HttpError ? e.code : e})`);
  }
}

/** The W3C traceparent of a session's implicit root span (the same as vibeinsight.tracing.traceparent). */
export function traceparent(sessionId: string): string {
  const hex = sessionId.replaceAll("-", "").toLowerCase();
  const span = /^0+$/.test(hex.slice(16)) ? "0000000000000001" : hex.slice(16);
  return `00-${hex}-${span}-01`;
}

/** GET /results/{session_id}: a short-lived presigned GET of the result document, owner only. */
export async function resultUrl(rawSid: string, ctx: Ctx): Promise<Response> {
  const { cfg } = ctx;
  let sid: string;
  try {
    sid = v.sessionId(decodeURIComponent(rawSid));
  } catch {
    throw new HttpError(404, "not_found");
  }
  const rows = await callJson<{ user_id: string | null; status: string; result_key: string | null }[]>(
    `${cfg.supabaseUrl}/rest/v1/processing_status?select=user_id,status,result_key&session_id=eq.${sid}`,
    { headers: service(cfg) }, { timeoutMs: cfg.timeoutMs, unavailable: "status_unavailable" });
  const row = Array.isArray(rows) ? rows[0] : undefined;
  // someone else's session and no session look the same
  if (!row || row.user_id?.toLowerCase() !== ctx.userId) throw new HttpError(404, "not_found");
  if (!["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].includes(row.status)) throw new HttpError(409, "not_ready");
  const key = `results/${sid}.json`; // where the flow publishes; never a key from the row's text
  if (await ctx.s3.size(key) === null) throw new HttpError(409, "not_ready");
  const expires = cfg.limits.result_url_expires_s;
  return json(200, { session_id: sid, status: row.status, url: await ctx.s3.presign("GET", key, expires), expires_in: expires });
}
