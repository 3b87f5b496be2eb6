// How long the Edge Function's CPU-bound part takes: presigning the part URLs of the largest
// upload (2 GiB: ~100 parts) against one presigned PUT, in this process (no network: SigV4 only).
// Edge Functions get 2 s of CPU per request. Run: deno run bench/edge_presign.ts
import { LIMITS } from "../infra/supabase/functions/process-audio/config.ts";
import { S3 } from "../infra/supabase/functions/process-audio/s3.ts";
import { partPlan } from "../infra/supabase/functions/process-audio/validate.ts";

const s3 = new S3({ endpoint: "https://fly.storage.tigris.dev", region: "auto", bucket: "vibeinsight-audio",
  accessKeyId: "tid_bench", secretAccessKey: "tsec_bench", pathStyle: false }, 1000);
const key = `uploads/${crypto.randomUUID()}/${crypto.randomUUID()}.wav`;

async function timed(fn: () => Promise<unknown>, rounds = 20): Promise<number> {
  await fn(); // warm the JIT and WebCrypto
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) await fn();
  return (performance.now() - t0) / rounds;
}

const single = await timed(() => s3.presign("PUT", key, 3600, {}, { "content-type": "audio/wav", "content-length": "5000000" }));
const plan = partPlan(LIMITS.max_bytes, LIMITS);
const multi = await timed(async () => {
  for (const [i, size] of plan.entries()) {
    await s3.presign("PUT", key, 3600, { partNumber: String(i + 1), uploadId: "bench" }, { "content-length": String(size) });
  }
});
console.log(`one presigned PUT: ${single.toFixed(3)} ms`);
console.log(`${plan.length} part URLs of a ${(LIMITS.max_bytes / 2 ** 30).toFixed(0)} GiB upload: ${multi.toFixed(1)} ms ` +
  `(${(multi / single).toFixed(0)}x one PUT; ${(100 * multi / 2000).toFixed(1)} % of the 2 s CPU budget)`);
