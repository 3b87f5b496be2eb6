// Shapes the back end answers (vibeinsight/schemas.py, the processing_status table, the Edge Function).

export type Status = "PENDING" | "RUNNING" | "COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED";
export type Stage = "queued" | "ingest" | "transcode" | "transcribe" | "analyze" | "publish" | "done";
export const TERMINAL: readonly Status[] = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"];

/** The columns of a processing_status row the client reads (RLS: only its own rows). */
export interface StatusRow {
  session_id: string;
  status: Status;
  stage: Stage | string | null;
  progress: number | null;
  error_code: string | null;
  error_message: string | null;
  flow_run_id: string | null;
  seq: number;
  updated_at?: string;
}
export const ROW_COLUMNS = "session_id,status,stage,progress,error_code,error_message,flow_run_id,seq,updated_at";

export interface ProcessResult {
  session_id: string;
  flow_run_id: string;
  status: Status;
  rerun: boolean;
}

export interface Segment {
  start: number;
  end: number;
  text: string;
  confidence: number;
  speaker?: string | null;
  language?: string | null;
}

/** The result document (schema 1.1); fields this client does not read are kept as `unknown`. */
export interface ResultDocument {
  schema_version: string;
  session_id: string;
  status: Status;
  transcript?: { language: string; text: string; segments: Segment[]; [k: string]: unknown } | null;
  analysis?: Record<string, unknown> | null;
  warnings: string[];
  error?: { code: string; message: string; stage?: string | null } | null;
  [k: string]: unknown;
}
