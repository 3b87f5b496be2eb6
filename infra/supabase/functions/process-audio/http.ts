// HTTP edges of the function: fixed error bodies, CORS, and outbound calls with a timeout and one
// retry. An upstream's own text never reaches the client (it may name hosts, users, queries).

export const MESSAGES: Record<string, string> = {
  bad_request: "the request body is not what this route takes",
  unauthorized: "a valid Supabase session token is required",
  forbidden: "this object does not belong to the caller",
  not_found: "no such route or session",
  method_not_allowed: "this route does not take that method",
  too_large: "the upload is larger than the limit",
  unsupported_type: "the content type or file extension is not an accepted audio format",
  session_conflict: "this session id is taken",
  key_mismatch: "this session was started for another upload",
  upload_taken: "this upload is already being processed in another session",
  upload_missing: "the upload is not in storage (finish the upload first)",
  upload_incomplete: "the parts do not make up the declared upload",
  in_flight: "the session is still running; a re-run must wait until it ends",
  not_ready: "the session has no result yet",
  too_many_in_flight: "too many of your sessions are running; wait for one to finish",
  too_many_per_hour: "too many sessions started in the last hour; try again later",
  too_many_uploads_per_hour: "too many uploads started in the last hour; try again later",
  too_many_upload_bytes: "your uploads of the last 24 hours reached the daily size limit; try again later",
  anonymous_not_allowed: "sign in with an account to use this service",
  auth_unavailable: "the sign-in service did not answer",
  status_unavailable: "the status database did not answer",
  prefect_unavailable: "the processing service did not answer",
  storage_unavailable: "the storage service did not answer",
  internal: "internal error",
};

export class HttpError extends Error {
  constructor(readonly status: number, readonly code: keyof typeof MESSAGES & string) {
    super(code);
  }
}

export function cors(origin: string | null, allowed: string): Record<string, string> {
  // "*" or a comma-separated list of origins; a listed origin is echoed back (browsers want one)
  const list = allowed.split(",").map((s) => s.trim()).filter(Boolean);
  const value = list.includes("*") ? "*" : origin && list.includes(origin) ? origin : list[0] ?? "null";
  return {
    "Access-Control-Allow-Origin": value,
    "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
    Vary: "Origin",
  };
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export function errorResponse(e: HttpError, headers: Record<string, string> = {}): Response {
  return json(e.status, { error: e.code, message: MESSAGES[e.code] }, headers);
}

export interface CallOptions {
  timeoutMs: number;
  /** the error code when the service fails (5xx, timeout, network) */
  unavailable: string;
  /** retry once after a timeout, a network error or a 429/5xx (every call made here is idempotent) */
  retries?: number;
}

/** fetch with a timeout and one retry; answers the Response of any non-retryable status. */
export async function call(url: string, init: RequestInit, opt: CallOptions): Promise<Response> {
  const retries = opt.retries ?? 1;
  for (let attempt = 0; ; attempt++) {
    let res: Response | null = null;
    try {
      res = await fetch(url, { ...init, signal: AbortSignal.timeout(opt.timeoutMs) });
    } catch (_) {
      res = null; // timeout or network error
    }
    const retryable = res === null || res.status === 429 || res.status >= 500;
    if (!retryable) return res!;
    await res?.body?.cancel();
    if (attempt >= retries) throw new HttpError(502, opt.unavailable);
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
  }
}

/** call() and parse the JSON answer; any non-2xx is the service failing. */
export async function callJson<T>(url: string, init: RequestInit, opt: CallOptions): Promise<T> {
  const res = await call(url, init, opt);
  const text = await res.text();
  if (!res.ok) throw new HttpError(502, opt.unavailable);
  try {
    return (text ? JSON.parse(text) : null) as T;
  } catch {
    throw new HttpError(502, opt.unavailable);
  }
}
