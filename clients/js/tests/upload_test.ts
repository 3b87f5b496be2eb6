// upload() against a stand-in of the Edge Function's upload routes and of S3's part PUTs (fetch
// replaced): the function's answers have the shapes of infra/supabase/functions/process-audio/routes.ts.
import assert from "node:assert/strict";
import { VibeInsightError } from "../src/errors.ts";
import { placeKey, upload, type UploadProgress } from "../src/upload.ts";

const FN = "https://fn.example/process-audio";
const MIB = 1024 * 1024;

class MemoryStorage {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
  removeItem(k: string) {
    this.data.delete(k);
  }
}

/** The function and S3: multipart uploads with 5 MiB parts, their parts kept per upload id. */
class Backend {
  uploads = new Map<string, Map<number, Uint8Array>>();
  puts: number[] = []; // part numbers PUT (0: a single PUT)
  completed: { key: string; bytes: Uint8Array } | null = null;
  inFlight = 0;
  maxInFlight = 0;
  failPart: number | null = null; // this part's PUT fails once
  hideEtag = false;
  calls: string[] = [];
  onPut: ((part: number) => Promise<void>) | null = null;

  plan(bytes: number) {
    const sizes = [];
    for (let left = bytes; left > 0; left -= 5 * MIB) sizes.push(Math.min(5 * MIB, left));
    return sizes;
  }
  urls(id: string, bytes: number, skip: Set<number>) {
    return this.plan(bytes).map((b, i) => ({ part_number: i + 1, bytes: b, url: `https://s3.example/k?partNumber=${i + 1}&uploadId=${id}` }))
      .filter((p) => !skip.has(p.part_number));
  }
  fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status });
    if (url.host === "fn.example") {
      const body = JSON.parse(String(init?.body ?? "{}"));
      const path = url.pathname.replace("/process-audio", "");
      this.calls.push(path);
      assert.equal((init?.headers as Record<string, string>).Authorization, "Bearer jwt");
      if (path === "/uploads") {
        if (body.bytes <= 5 * MIB) return json(200, { key: "uploads/u/a.wav", method: "PUT", url: "https://s3.example/single", headers: { "content-type": "audio/wav", "content-length": String(body.bytes) } });
        const id = `up-${this.uploads.size + 1}`;
        this.uploads.set(id, new Map());
        return json(200, { key: "uploads/u/a.wav", method: "MULTIPART", upload_id: id, parts: this.urls(id, body.bytes, new Set()) });
      }
      if (path === "/uploads/parts") {
        const parts = this.uploads.get(body.upload_id);
        if (!parts) return json(404, { error: "not_found", message: "no such route or session" });
        const done = [...parts].map(([n, b]) => ({ part_number: n, etag: `"e${n}"`, bytes: b.length }));
        return json(200, { parts_done: done, parts: this.urls(body.upload_id, body.bytes, new Set(parts.keys())) });
      }
      if (path === "/uploads/complete") {
        const parts = this.uploads.get(body.upload_id)!;
        assert.deepEqual(body.parts, [...parts.keys()].sort((a, b) => a - b).map((n) => ({ part_number: n, etag: `"e${n}"` })));
        const all = [...parts].sort((a, b) => a[0] - b[0]).map(([, b]) => b);
        const bytes = new Uint8Array(all.reduce((n, b) => n + b.length, 0));
        let at = 0;
        for (const b of all) (bytes.set(b, at), at += b.length);
        this.completed = { key: body.key, bytes };
        this.uploads.delete(body.upload_id);
        return json(200, { key: body.key, bytes: bytes.length });
      }
    }
    assert.equal(init?.method, "PUT");
    const headers = init?.headers as Record<string, string>;
    assert.equal(headers["content-length"], undefined, "a browser refuses to let a page set Content-Length");
    const part = Number(url.searchParams.get("partNumber") ?? 0);
    this.puts.push(part);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 1));
      await this.onPut?.(part);
      if (init?.signal?.aborted) throw new DOMException("aborted", "AbortError");
      if (part === this.failPart) {
        this.failPart = null;
        throw new TypeError("network error");
      }
      const data = new Uint8Array(await (init!.body as Blob).arrayBuffer());
      if (part === 0) {
        this.completed = { key: "uploads/u/a.wav", bytes: data };
        return new Response(null, { status: 200, headers: { etag: '"single"' } });
      }
      this.uploads.get(url.searchParams.get("uploadId")!)!.set(part, data);
      return new Response(null, { status: 200, headers: this.hideEtag ? {} : { etag: `"e${part}"` } });
    } finally {
      this.inFlight--;
    }
  };
}

function recording(bytes: number): File {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (i * 7 + (i >> 12)) & 255;
  return new File([data], "meeting.wav", { type: "audio/wav", lastModified: 1_700_000_000_000 });
}

async function bytesOf(f: File) {
  return new Uint8Array(await f.arrayBuffer());
}

Deno.test("up to 5 MB: one PUT, nothing kept for resuming", async () => {
  const be = new Backend(), storage = new MemoryStorage();
  const file = recording(5 * MIB);
  const progress: UploadProgress[] = [];
  const res = await upload(file, { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage, onProgress: (p) => progress.push(p) });
  assert.deepEqual(be.puts, [0]);
  assert.equal(res.key, "uploads/u/a.wav");
  assert.deepEqual(be.completed!.bytes, await bytesOf(file));
  assert.deepEqual(progress.at(-1), { sent: file.size, total: file.size, resumedParts: 0 });
  assert.equal(storage.data.size, 0);
});

Deno.test("above 5 MB: multipart, parts in parallel within the bound, the object is the file", async () => {
  const be = new Backend(), storage = new MemoryStorage();
  const file = recording(23 * MIB); // 5 parts
  const progress: number[] = [];
  const res = await upload(file, { functionUrl: FN, accessToken: () => "jwt", fetch: be.fetch, storage, parallel: 2,
    onProgress: (p) => progress.push(p.sent) });
  assert.deepEqual([...be.puts].sort(), [1, 2, 3, 4, 5]);
  assert.equal(be.maxInFlight, 2);
  assert.deepEqual(be.completed!.bytes, await bytesOf(file));
  assert.equal(res.resumed, false);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
  assert.equal(progress.at(-1), file.size);
  assert.equal(storage.data.size, 0, "the place is forgotten once complete");
});

Deno.test("after a reload (an aborted upload) the same file resumes: finished parts are not sent again", async () => {
  const be = new Backend(), storage = new MemoryStorage();
  const file = recording(12 * MIB); // 3 parts
  const abort = new AbortController();
  be.onPut = async (part) => {
    if (part === 2) {
      abort.abort(); // the page goes away while part 2 is in flight
      await Promise.resolve();
    }
  };
  await assert.rejects(upload(file, { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage, parallel: 1, signal: abort.signal }));
  assert.deepEqual(be.puts, [1, 2]);
  assert.ok(storage.getItem(placeKey(FN, file)), "the place is kept");
  be.onPut = null;
  const again = new File([file], file.name, { type: file.type, lastModified: file.lastModified }); // picked again
  const resumed: UploadProgress[] = [];
  const res = await upload(again, { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage, onProgress: (p) => resumed.push(p) });
  assert.deepEqual(be.puts, [1, 2, 2, 3], "part 1 was not sent again");
  assert.equal(res.resumed, true);
  assert.deepEqual(resumed[0], { sent: 5 * MIB, total: file.size, resumedParts: 1 });
  assert.deepEqual(be.completed!.bytes, await bytesOf(file));
  assert.deepEqual(be.calls, ["/uploads", "/uploads/parts", "/uploads/complete"]);
});

Deno.test("a place S3 no longer knows starts over", async () => {
  const be = new Backend(), storage = new MemoryStorage();
  const file = recording(7 * MIB);
  storage.setItem(placeKey(FN, file), JSON.stringify({ key: "uploads/u/old.wav", upload_id: "expired" }));
  const res = await upload(file, { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage });
  assert.deepEqual(be.calls, ["/uploads/parts", "/uploads", "/uploads/complete"]);
  assert.equal(res.resumed, false);
  assert.deepEqual([...be.puts].sort(), [1, 2]);
  assert.deepEqual(be.completed!.bytes, await bytesOf(file));
});

Deno.test("another file (other size or time) is not taken for the saved one", () => {
  const a = recording(6 * MIB);
  const b = new File([a], a.name, { lastModified: a.lastModified + 1 });
  assert.notEqual(placeKey(FN, a), placeKey(FN, b));
});

Deno.test("a dropped part: S3 is asked where the upload is and only the rest is sent", async () => {
  const be = new Backend(), storage = new MemoryStorage();
  be.failPart = 2;
  const file = recording(12 * MIB);
  await upload(file, { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage, parallel: 1 });
  assert.deepEqual(be.puts, [1, 2, 2, 3]);
  assert.deepEqual(be.completed!.bytes, await bytesOf(file));
});

Deno.test("a refusal of the function is final, with its code and the user's sentence", async () => {
  const file = new File([new Uint8Array(10)], "notes.txt", { type: "text/plain" });
  const fetch = () => Promise.resolve(new Response(JSON.stringify({ error: "unsupported_type", message: "the content type or file extension is not an accepted audio format" }), { status: 415 }));
  const err = await upload(file, { functionUrl: FN, accessToken: "jwt", fetch, storage: null }).catch((e) => e);
  assert.ok(err instanceof VibeInsightError);
  assert.equal(err.code, "unsupported_type");
  assert.equal(err.status, 415);
  assert.match(err.userMessage("ja-JP"), /このファイル形式には対応していません/);
});

Deno.test("storage that hides the ETag (no CORS ExposeHeaders) is a clear error, not a broken object", async () => {
  const be = new Backend();
  be.hideEtag = true;
  const err = await upload(recording(6 * MIB), { functionUrl: FN, accessToken: "jwt", fetch: be.fetch, storage: null }).catch((e) => e);
  assert.equal(err.code, "storage_cors");
  assert.equal(be.completed, null);
});
