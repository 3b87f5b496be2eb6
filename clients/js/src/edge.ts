// The Edge Function's routes (infra/supabase/functions/process-audio), called with the user's JWT.
import { VibeInsightError } from "./errors.ts";
import type { ProcessResult, ResultDocument } from "./types.ts";

export interface ClientOptions {
  /** The function, e.g. https://<ref>.supabase.co/functions/v1/process-audio */
  functionUrl: string;
  /** The signed-in user's JWT, or a function answering it (a fresh one each call). */
  accessToken: string | (() => string | Promise<string>);
  /** fetch to use (tests, or a wrapped one); globalThis.fetch by default. */
  fetch?: typeof fetch;
}

export async function callEdge<T>(opts: ClientOptions, method: "GET" | "POST", path: string, body?: unknown,
  signal?: AbortSignal): Promise<T> {
  const token = typeof opts.accessToken === "function" ? await opts.accessToken() : opts.accessToken;
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  let res: Response;
  try {
    res = await doFetch(opts.functionUrl.replace(/\/+$/, "") + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new VibeInsightError("network", `${path}: ${e}`);
  }
  let data: Record<string, unknown> = {};
  try {
    data = await res.json();
  } catch {
    data = {};
  }
  if (!res.ok) {
    throw new VibeInsightError(String(data.error ?? `http_${res.status}`), String(data.message ?? res.statusText),
      res.status);
  }
  return data as T;
}

export interface ProcessOptions extends ClientOptions {
  language?: string;
  vocabulary?: string[];
  /** The session id; made here when absent, so a request whose answer was lost can be repeated. */
  sessionId?: string;
  rerun?: boolean;
  /** Tries of the same request after a 5xx or a network failure (default 3). */
  attempts?: number;
  /** Waits between tries: base × 2^try ms (default 1000). */
  retryBaseMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** POST /process: starts the run of an uploaded `key`; answers {session_id, flow_run_id, status}. */
export async function process(key: string, opts: ProcessOptions): Promise<ProcessResult> {
  const body: Record<string, unknown> = { key, session_id: opts.sessionId ?? crypto.randomUUID(),
    language: opts.language ?? "auto" };
  if (opts.vocabulary?.length) body.vocabulary = opts.vocabulary;
  if (opts.rerun) body.rerun = true;
  const attempts = opts.attempts ?? 3;
  for (let attempt = 0; ; attempt++) {
    try {
      return await callEdge<ProcessResult>(opts, "POST", "/process", body);
    } catch (e) {
      // the same session id again: the function answers the same run, never a second one
      const retryable = e instanceof VibeInsightError && (e.status === 0 || e.status >= 500);
      if (!retryable || attempt >= attempts - 1) throw e;
    }
    await sleep((opts.retryBaseMs ?? 1000) * 2 ** attempt);
  }
}

/** GET /results/{sessionId} and the document it links to (409 not_ready before the session ends). */
export async function result(sessionId: string, opts: ClientOptions): Promise<ResultDocument> {
  const link = await callEdge<{ url: string; status: string }>(opts, "GET", `/results/${encodeURIComponent(sessionId)}`);
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  let res: Response;
  try {
    res = await doFetch(link.url);
  } catch (e) {
    throw new VibeInsightError("network", `result document: ${e}`);
  }
  if (!res.ok) throw new VibeInsightError("storage_unavailable", `result document: HTTP ${res.status}`, res.status);
  return await res.json() as ResultDocument;
}
