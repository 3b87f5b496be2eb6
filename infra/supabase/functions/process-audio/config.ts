// The function's configuration: the same environment as on Supabase, and the limits it shares
// with the Python flow (../_shared/limits.json; the Python package ships an identical copy, vibeinsight/data/limits.json).
import limitsFile from "../_shared/limits.json" with { type: "json" };

export interface Limits {
  max_bytes: number;
  single_put_max_bytes: number;
  part_min_bytes: number;
  part_max_bytes: number;
  max_parts: number;
  upload_url_expires_s: number;
  result_url_expires_s: number;
  content_types: string[];
  extensions: string[];
  max_runs_in_flight_per_user: number;
  max_runs_per_hour_per_user: number;
  max_uploads_per_hour_per_user: number;
  max_upload_bytes_per_day_per_user: number;
}

export interface Config {
  supabaseUrl: string;
  serviceRoleKey: string;
  prefectApiUrl: string; // the server's …/api URL
  prefectApiKey?: string;
  deployment: string; // flow/deployment, default process-audio/api
  s3: {
    endpoint: string;
    region: string;
    bucket: string;
    accessKeyId: string;
    secretAccessKey: string;
    pathStyle: boolean;
  };
  allowedOrigin: string; // "*" or comma-separated origins
  allowAnonymous: boolean; // Supabase's anonymous sign-ins may upload and start runs
  timeoutMs: number; // each outbound call
  limits: Limits;
}

export const LIMITS: Limits = limitsFile as Limits;

/** Read the configuration from an environment getter (Deno.env.get on Supabase and locally). */
export function configFrom(get: (name: string) => string | undefined): Config {
  const need = (name: string) => {
    const v = get(name);
    if (!v) throw new Error(`${name} is not set`);
    return v;
  };
  const int = (name: string, fallback: number) => {
    const v = get(name);
    if (v === undefined || v === "") return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
    return n;
  };
  const flag = (name: string, fallback: boolean) => {
    const v = (get(name) ?? "").trim().toLowerCase();
    if (v === "") return fallback;
    if (v === "true" || v === "false") return v === "true";
    throw new Error(`${name} must be true or false`);
  };
  return {
    supabaseUrl: need("SUPABASE_URL").replace(/\/$/, ""),
    serviceRoleKey: need("SUPABASE_SERVICE_ROLE_KEY"),
    prefectApiUrl: need("PREFECT_API_URL").replace(/\/$/, ""),
    prefectApiKey: get("PREFECT_API_KEY") || undefined,
    deployment: get("PREFECT_DEPLOYMENT") || "process-audio/api",
    s3: {
      endpoint: (get("FLY_S3_ENDPOINT") || "https://fly.storage.tigris.dev").replace(/\/$/, ""),
      region: get("FLY_S3_REGION") || "nrt",
      bucket: get("FLY_S3_BUCKET_NAME") || "vibeinsight-audio",
      accessKeyId: need("FLY_S3_ACCESS_KEY_ID"),
      secretAccessKey: need("FLY_S3_SECRET_ACCESS_KEY"),
      pathStyle: get("VIBEINSIGHT_S3_ADDRESSING_STYLE") !== "virtual",
    },
    allowedOrigin: get("VIBEINSIGHT_ALLOWED_ORIGIN") || "*",
    allowAnonymous: flag("VIBEINSIGHT_ALLOW_ANONYMOUS", false),
    timeoutMs: int("VIBEINSIGHT_EDGE_TIMEOUT_MS", 8000),
    limits: {
      ...LIMITS,
      max_runs_in_flight_per_user: int("VIBEINSIGHT_MAX_RUNS_IN_FLIGHT_PER_USER", LIMITS.max_runs_in_flight_per_user),
      max_runs_per_hour_per_user: int("VIBEINSIGHT_MAX_RUNS_PER_HOUR_PER_USER", LIMITS.max_runs_per_hour_per_user),
      max_uploads_per_hour_per_user: int("VIBEINSIGHT_MAX_UPLOADS_PER_HOUR_PER_USER",
        LIMITS.max_uploads_per_hour_per_user),
      max_upload_bytes_per_day_per_user: int("VIBEINSIGHT_MAX_UPLOAD_BYTES_PER_DAY_PER_USER",
        LIMITS.max_upload_bytes_per_day_per_user),
    },
  };
}
