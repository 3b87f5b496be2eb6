// Request bodies: every field's type and bounds, before anything else runs. Keys are only ever
// made here (uploads/{user_id}/{uuid}.{ext}) and a key sent back must have exactly that shape.
import type { Limits } from "./config.ts";
import { HttpError } from "./http.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LANGUAGE = /^(auto|[a-z]{2,3})$/;
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
export const MAX_BODY_BYTES = 64 * 1024;

export type Body = Record<string, unknown>;

const bad = () => new HttpError(400, "bad_request");

/** The JSON object of a request (null, arrays, scalars and non-JSON are 400). A body over
 * MAX_BODY_BYTES is refused as soon as its bytes pass the limit: it is never read to its end. */
export async function readBody(req: Request): Promise<Body> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (!(declared <= MAX_BODY_BYTES)) {
    await req.body?.cancel();
    throw bad();
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await readAtMost(req, MAX_BODY_BYTES)));
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw bad();
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw bad();
  return body as Body;
}

/** The body's bytes, or 400 once more than `max` have arrived (the rest is cancelled, not read). */
async function readAtMost(req: Request, max: number): Promise<Uint8Array> {
  if (!req.body) return new Uint8Array();
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw bad();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export function str(body: Body, name: string, max = 1024): string {
  const v = body[name];
  if (typeof v !== "string" || v.length === 0 || v.length > max || CONTROL.test(v)) throw bad();
  return v;
}

export function optional<T>(body: Body, name: string, read: (b: Body, n: string) => T): T | undefined {
  return body[name] === undefined ? undefined : read(body, name);
}

export function int(body: Body, name: string, min: number, max: number): number {
  const v = body[name];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw bad();
  return v;
}

export function bool(body: Body, name: string): boolean {
  const v = body[name];
  if (typeof v !== "boolean") throw bad();
  return v;
}

/** A session id: a UUID in any case, always lower-cased (the uuid column ignores case, Prefect's keys do not). */
export function sessionId(value: unknown): string {
  if (typeof value !== "string") throw bad();
  const sid = value.toLowerCase();
  if (!UUID.test(sid)) throw bad();
  return sid;
}

export function language(body: Body): string {
  const v = optional(body, "language", (b, n) => str(b, n, 8)) ?? "auto";
  if (!LANGUAGE.test(v)) throw bad();
  return v;
}

/** Words and names to steer transcription (the flow's `vocabulary` parameter). */
export function vocabulary(body: Body): string[] | undefined {
  const v = body.vocabulary;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > 100) throw bad();
  return v.map((w) => {
    if (typeof w !== "string" || w.trim().length === 0 || w.length > 100 || CONTROL.test(w)) throw bad();
    return w.trim();
  });
}

/** content type (parameters dropped) and extension, both from the shared lists. */
export function uploadKind(body: Body, limits: Limits): { contentType: string; ext: string } {
  const filename = str(body, "filename", 255);
  const contentType = str(body, "content_type", 128).split(";")[0].trim().toLowerCase();
  const dot = filename.lastIndexOf(".");
  const ext = dot > 0 ? filename.slice(dot + 1).toLowerCase() : "";
  if (!limits.content_types.includes(contentType) || !limits.extensions.includes(ext)) {
    throw new HttpError(415, "unsupported_type");
  }
  return { contentType, ext };
}

export function uploadBytes(body: Body, limits: Limits): number {
  const v = body.bytes;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw bad();
  if (v > limits.max_bytes) throw new HttpError(413, "too_large");
  return v;
}

/** A key this function made for `userId`; someone else's is 403, anything else 400. */
export function ownKey(body: Body, userId: string, limits: Limits): string {
  const key = str(body, "key", 256);
  const m = key.match(/^uploads\/([0-9a-f-]{36})\/([0-9a-f-]{36})\.([a-z0-9]{1,8})$/);
  if (!m || !UUID.test(m[1]) || !UUID.test(m[2]) || !limits.extensions.includes(m[3])) throw bad();
  if (m[1] !== userId) throw new HttpError(403, "forbidden");
  return key;
}

export function newKey(userId: string, ext: string): string {
  return `uploads/${userId}/${crypto.randomUUID()}.${ext}`;
}

/** The multipart plan: parts of 5–64 MB (at most ~100 parts, never over max_parts). */
export function partPlan(bytes: number, limits: Limits): number[] {
  const mib = 1024 * 1024;
  const wanted = Math.ceil(bytes / 100 / mib) * mib;
  const size = Math.min(limits.part_max_bytes, Math.max(limits.part_min_bytes, wanted,
    Math.ceil(bytes / limits.max_parts)));
  const sizes: number[] = [];
  for (let left = bytes; left > 0; left -= size) sizes.push(Math.min(size, left));
  return sizes;
}

export function partList(body: Body, count: number): { part_number: number; etag: string }[] {
  const v = body.parts;
  if (!Array.isArray(v) || v.length === 0 || v.length > count) throw bad();
  const parts = v.map((p) => {
    if (p === null || typeof p !== "object" || Array.isArray(p)) throw bad();
    return { part_number: int(p as Body, "part_number", 1, count), etag: str(p as Body, "etag", 128) };
  });
  parts.sort((a, b) => a.part_number - b.part_number);
  if (parts.some((p, i) => p.part_number !== i + 1)) throw bad();
  return parts;
}
