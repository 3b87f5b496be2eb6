// Uploading a recording through the Edge Function: one presigned PUT up to the single-PUT limit,
// else an S3 multipart upload with parts in parallel (bounded). A multipart upload's place (key and
// upload id) is kept in storage (localStorage in a browser), so after a reload the same file resumes:
// the function asks S3 which parts it has, and only the others are sent. A place S3 no longer knows
// (expired, aborted, completed) starts over. The same rules as `vibeinsight upload` (Python).
import { callEdge, type ClientOptions } from "./edge.ts";
import { VibeInsightError } from "./errors.ts";

/** What upload() needs of a File (a Blob with a name; lastModified tells two versions apart). */
export interface UploadFile extends Blob {
  readonly name: string;
  readonly lastModified?: number;
}

/** The small part of the Web Storage API used here (localStorage, sessionStorage, or a Map-backed test double). */
export interface PlaceStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface UploadProgress {
  sent: number;
  total: number;
  /** parts already in S3 when a resumed upload started (0 for a new one) */
  resumedParts: number;
}

export interface UploadOptions extends ClientOptions {
  /** Called after each finished PUT (multipart: per part). */
  onProgress?: (p: UploadProgress) => void;
  /** Aborts the PUTs in flight; a multipart upload's place is kept, so a later upload() resumes it. */
  signal?: AbortSignal;
  /** Parts in flight at once (default 3). */
  parallel?: number;
  /** Where the place of a multipart upload is kept; localStorage when present, else nowhere. */
  storage?: PlaceStorage | null;
  /** Tries of a part before the upload gives up (default 3): a failed part makes it ask S3 where it is. */
  partAttempts?: number;
}

export interface UploadResult {
  key: string;
  bytes: number;
  /** true when finished parts of an earlier attempt were kept */
  resumed: boolean;
}

interface PartUrl {
  part_number: number;
  bytes: number;
  url: string;
}
interface PartDone {
  part_number: number;
  etag: string;
  bytes: number;
}
interface Place {
  key: string;
  upload_id: string;
}
type Created =
  | { key: string; method: "PUT"; url: string; headers: Record<string, string> }
  | { key: string; method: "MULTIPART"; upload_id: string; parts: PartUrl[] };
interface Listed {
  parts_done: PartDone[];
  parts: PartUrl[];
}

// Types not every browser or system gives a File (the function checks them against limits.json).
const CONTENT_TYPES: Record<string, string> = {
  mp3: "audio/mpeg", m4a: "audio/mp4", mp4: "video/mp4", aac: "audio/aac", wav: "audio/wav", webm: "audio/webm",
  ogg: "audio/ogg", oga: "audio/ogg", opus: "audio/ogg", flac: "audio/flac", mov: "video/quicktime",
};
// Headers a browser sets itself and refuses from a script.
const FORBIDDEN_HEADERS = new Set(["content-length", "host"]);

export function contentTypeOf(file: UploadFile): string {
  const ext = file.name.toLowerCase().split(".").pop() ?? "";
  return CONTENT_TYPES[ext] ?? (file.type || "application/octet-stream");
}

/** The storage key of a file's place: the function, the file's name, size and modification time. */
export function placeKey(functionUrl: string, file: UploadFile): string {
  return `vibeinsight.upload:${functionUrl.replace(/\/+$/, "")}|${file.name}|${file.size}|${file.lastModified ?? 0}`;
}

function defaultStorage(): PlaceStorage | null {
  try {
    return (globalThis as { localStorage?: PlaceStorage }).localStorage ?? null;
  } catch {
    return null; // storage disabled (privacy settings): no resume, uploads still work
  }
}

function readPlace(storage: PlaceStorage | null, id: string): Place | null {
  try {
    const place = JSON.parse(storage?.getItem(id) ?? "null");
    return typeof place?.key === "string" && typeof place?.upload_id === "string" ? place : null;
  } catch {
    return null;
  }
}

/** Uploads `file`; answers its object key for process(). */
export async function upload(file: UploadFile, opts: UploadOptions): Promise<UploadResult> {
  const storage = opts.storage === undefined ? defaultStorage() : opts.storage;
  const id = placeKey(opts.functionUrl, file);
  let place = readPlace(storage, id);
  let listed: Listed | null = null;
  if (place) {
    try {
      listed = await callEdge<Listed>(opts, "POST", "/uploads/parts", { ...place, bytes: file.size }, opts.signal);
    } catch (e) {
      if (!(e instanceof VibeInsightError && e.status === 404)) throw e;
      storage?.removeItem(id); // S3 no longer knows it: start over
      place = null;
    }
  }
  if (!place || !listed) {
    const created = await callEdge<Created>(opts, "POST", "/uploads",
      { filename: file.name, content_type: contentTypeOf(file), bytes: file.size }, opts.signal);
    if (created.method === "PUT") {
      await put(opts, created.url, created.headers, file);
      opts.onProgress?.({ sent: file.size, total: file.size, resumedParts: 0 });
      return { key: created.key, bytes: file.size, resumed: false };
    }
    place = { key: created.key, upload_id: created.upload_id };
    storage?.setItem(id, JSON.stringify(place));
    listed = { parts_done: [], parts: created.parts };
  }
  const resumed = listed.parts_done.length > 0;
  await sendParts(file, opts, place, listed);
  storage?.removeItem(id);
  return { key: place.key, bytes: file.size, resumed };
}

async function sendParts(file: UploadFile, opts: UploadOptions, place: Place, listed: Listed): Promise<void> {
  const attempts = opts.partAttempts ?? 3;
  const resumedParts = listed.parts_done.length;
  const all = [...listed.parts, ...listed.parts_done];
  const partSize = Math.max(...all.map((p) => p.bytes));
  for (let attempt = 0; ; attempt++) {
    const etags = new Map(listed.parts_done.map((p) => [p.part_number, p.etag]));
    let sent = listed.parts_done.reduce((n, p) => n + p.bytes, 0);
    opts.onProgress?.({ sent, total: file.size, resumedParts });
    try {
      await inParallel(listed.parts, opts.parallel ?? 3, async (part) => {
        const start = (part.part_number - 1) * partSize;
        etags.set(part.part_number, await putPart(opts, part.url, file.slice(start, start + part.bytes)));
        sent += part.bytes;
        opts.onProgress?.({ sent, total: file.size, resumedParts });
      });
      const parts = [...etags].sort((a, b) => a[0] - b[0]).map(([part_number, etag]) => ({ part_number, etag }));
      await callEdge(opts, "POST", "/uploads/complete", { ...place, parts }, opts.signal);
      return;
    } catch (e) {
      // only a failed PUT or a lost connection (status 0) is retried; the function's refusals are final
      if (opts.signal?.aborted || attempt >= attempts - 1 || !(e instanceof VibeInsightError) || e.status !== 0) {
        throw e;
      }
      // a dropped connection or a refused part: ask S3 where the upload is, send the rest
      listed = await callEdge<Listed>(opts, "POST", "/uploads/parts", { ...place, bytes: file.size }, opts.signal);
    }
  }
}

/** Runs `work` on each item, at most `limit` at once; the first failure stops new work and is thrown. */
async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const lane = async () => {
    while (failed === null && next < items.length) {
      const item = items[next++];
      try {
        await work(item);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  if (failed !== null) throw failed;
}

/** PUTs a body to a presigned URL; answers the ETag (S3 must expose it to the page: CORS ExposeHeaders). */
async function put(opts: UploadOptions, url: string, headers: Record<string, string>, body: Blob): Promise<string> {
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const sendable = Object.fromEntries(Object.entries(headers).filter(([k]) => !FORBIDDEN_HEADERS.has(k.toLowerCase())));
  let res: Response;
  try {
    res = await doFetch(url, { method: "PUT", headers: sendable, body, signal: opts.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw e;
    throw new VibeInsightError("storage_failed", `PUT: ${e}`);
  }
  await res.body?.cancel();
  if (!res.ok) throw new VibeInsightError("storage_failed", `storage answered HTTP ${res.status}`, 0);
  return res.headers.get("etag") ?? "";
}

async function putPart(opts: UploadOptions, url: string, body: Blob): Promise<string> {
  const etag = await put(opts, url, {}, body);
  // a browser hides the ETag unless the bucket's CORS rules expose it; without it nothing can complete
  if (!etag) throw new VibeInsightError("storage_cors", "the storage answered no ETag (expose it in the bucket's CORS rules)", 400);
  return etag;
}
