// S3 with SigV4 through aws4fetch (presigned PUT/GET/UploadPart URLs, and the multipart calls the
// function makes itself). Works with Tigris, SeaweedFS or any S3 that checks signatures.
import { AwsClient } from "npm:aws4fetch@1.0.20";
import type { Config } from "./config.ts";
import { call, HttpError } from "./http.ts";

export interface PartDone {
  part_number: number;
  etag: string;
  size: number;
}

const text = (xml: string, tag: string) => xml.match(new RegExp(`<${tag}>([^<]*)</${tag}>`))?.[1];
const unescapeXml = (s: string) =>
  s.replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d))).replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
const escapeXml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export class S3 {
  private aws: AwsClient;
  constructor(private cfg: Config["s3"], private timeoutMs: number) {
    this.aws = new AwsClient({
      accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey, service: "s3", region: cfg.region,
    });
  }

  url(key: string, query: Record<string, string> = {}): URL {
    const path = key.split("/").map(encodeURIComponent).join("/");
    const base = new URL(this.cfg.endpoint);
    const url = this.cfg.pathStyle
      ? new URL(`${base.origin}/${this.cfg.bucket}/${path}`)
      : new URL(`${base.protocol}//${this.cfg.bucket}.${base.host}/${path}`);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    return url;
  }

  /** A presigned URL; `headers` are signed too, so the client must send exactly those. */
  async presign(method: string, key: string, expiresS: number, query: Record<string, string> = {},
    headers: Record<string, string> = {}): Promise<string> {
    const url = this.url(key, { ...query, "X-Amz-Expires": String(expiresS) });
    const signed = await this.aws.sign(url.toString(), { method, headers, aws: { signQuery: true, allHeaders: true } });
    return signed.url;
  }

  private async send(method: string, url: URL, body?: string): Promise<Response> {
    const req = await this.aws.sign(url.toString(), { method, body });
    return call(req.url, { method, headers: req.headers, body }, { timeoutMs: this.timeoutMs, unavailable: "storage_unavailable" });
  }

  /** The object's size, or null when it does not exist. */
  async size(key: string): Promise<number | null> {
    const res = await this.send("HEAD", this.url(key));
    await res.body?.cancel();
    if (res.status === 404) return null;
    if (!res.ok) throw new HttpError(502, "storage_unavailable");
    return Number(res.headers.get("content-length"));
  }

  async createMultipart(key: string, contentType: string): Promise<string> {
    const url = this.url(key, { uploads: "" });
    const req = await this.aws.sign(url.toString(), { method: "POST", headers: { "Content-Type": contentType } });
    const res = await call(req.url, { method: "POST", headers: req.headers }, { timeoutMs: this.timeoutMs, unavailable: "storage_unavailable" });
    const xml = await res.text();
    const id = text(xml, "UploadId");
    if (!res.ok || !id) throw new HttpError(502, "storage_unavailable");
    return unescapeXml(id);
  }

  /** The parts already uploaded (ListParts, every page), or null when the upload id is unknown. */
  async listParts(key: string, uploadId: string): Promise<PartDone[] | null> {
    const parts: PartDone[] = [];
    let marker = "0";
    for (;;) {
      const res = await this.send("GET", this.url(key, { uploadId, "part-number-marker": marker }));
      const xml = await res.text();
      if (res.status === 404) return null;
      if (!res.ok) throw new HttpError(502, "storage_unavailable");
      for (const m of xml.matchAll(/<Part>([\s\S]*?)<\/Part>/g)) {
        parts.push({
          part_number: Number(text(m[1], "PartNumber")),
          etag: unescapeXml(text(m[1], "ETag") ?? ""),
          size: Number(text(m[1], "Size")),
        });
      }
      if (text(xml, "IsTruncated") !== "true") return parts;
      marker = text(xml, "NextPartNumberMarker") ?? String(parts.at(-1)?.part_number ?? 0);
    }
  }

  /** CompleteMultipartUpload; false when S3 refuses the part list (wrong etag, missing part). */
  async complete(key: string, uploadId: string, parts: { part_number: number; etag: string }[]): Promise<boolean> {
    const body = "<CompleteMultipartUpload>" + parts.map((p) =>
      `<Part><PartNumber>${p.part_number}</PartNumber><ETag>${escapeXml(p.etag)}</ETag></Part>`
    ).join("") + "</CompleteMultipartUpload>";
    const res = await this.send("POST", this.url(key, { uploadId }), body);
    const xml = await res.text();
    // S3 may answer 200 with an <Error> body for a failed completion
    if (res.status >= 400 && res.status < 500) return false;
    if (!res.ok || xml.includes("<Error>")) {
      if (/InvalidPart|InvalidPartOrder|NoSuchUpload|EntityTooSmall/.test(xml)) return false;
      throw new HttpError(502, "storage_unavailable");
    }
    return true;
  }
}
