// Edge Function `process-audio`: the client's whole path to a run, and nothing heavier (Edge
// Functions get 2 s CPU, 150 MB, 6 MB responses; the work runs on the Fly.io workers).
//
//   POST /uploads            {filename, content_type, bytes}  → key + presigned PUT, or multipart
//   POST /uploads/parts      {key, upload_id, bytes}          → parts uploaded + URLs of the rest
//   POST /uploads/complete   {key, upload_id, parts}          → completes a multipart upload
//   POST /process            {key, language?, session_id?, vocabulary?, rerun?} → 202 {session_id, flow_run_id}
//   GET  /results/{session_id}                                → presigned GET of the result document
//
// Every route needs the caller's Supabase JWT. On Supabase the paths start with /process-audio;
// served locally (`deno run --allow-net --allow-env --allow-read index.ts`) they sit at the root.
import { type Config, configFrom } from "./config.ts";
import { cors, errorResponse, HttpError } from "./http.ts";
import * as routes from "./routes.ts";
import { S3 } from "./s3.ts";
import { readBody } from "./validate.ts";

type Route = (body: Record<string, unknown>, ctx: routes.Ctx) => Promise<Response>;
const POSTS: Record<string, Route> = {
  "/uploads": routes.createUpload,
  "/uploads/parts": routes.listUploadParts,
  "/uploads/complete": routes.completeUpload,
  "/process": routes.startRun,
};

export async function handle(req: Request, cfg: Config): Promise<Response> {
  const headers = cors(req.headers.get("Origin"), cfg.allowedOrigin);
  if (req.method === "OPTIONS") return new Response(null, { status: 204, headers });
  try {
    const path = new URL(req.url).pathname.replace(/^\/process-audio(?=\/|$)/, "").replace(/\/+$/, "") || "/";
    const result = path.match(/^\/results\/([^/]+)$/);
    const post: Route | undefined = Object.hasOwn(POSTS, path) ? POSTS[path] : undefined;
    if (!post && !result) throw new HttpError(404, "not_found");
    if (req.method !== (post ? "POST" : "GET")) throw new HttpError(405, "method_not_allowed");
    const userId = await routes.verifyUser(req, cfg);
    const ctx = { cfg, s3: new S3(cfg.s3, cfg.timeoutMs), userId };
    const res = post ? await post(await readBody(req), ctx) : await routes.resultUrl(result![1], ctx);
    // Issue 14 (egress): a `edge_response` usage row of this answer's size would be booked here.
    for (const [k, value] of Object.entries(headers)) res.headers.set(k, value);
    return res;
  } catch (e) {
    if (e instanceof HttpError) return errorResponse(e, headers);
    console.error("process-audio:", e); // the platform's log, never the client
    return errorResponse(new HttpError(500, "internal"), headers);
  }
}

if (import.meta.main) {
  const cfg = configFrom((name) => Deno.env.get(name));
  const port = Number(Deno.env.get("PORT") ?? "8000");
  Deno.serve({ hostname: "127.0.0.1", port }, (req) => handle(req, cfg));
}
