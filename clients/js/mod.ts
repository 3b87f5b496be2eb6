/**
 * VibeInsight's client for apps: upload a recording, start its processing, follow its status and
 * read the result, with the user's Supabase session. supabase-js is the app's (a peer dependency):
 * watch() takes the app's SupabaseClient.
 *
 * @example
 * ```ts
 * import { upload, process, watch, result } from "@vibeinsight/client";
 * const opts = { functionUrl, accessToken: session.access_token };
 * const { key } = await upload(file, { ...opts, onProgress: ({ sent, total }) => bar(sent / total) });
 * const { session_id } = await process(key, { ...opts, language: "ja" });
 * const end = await watch(supabase, session_id, (row) => show(row.stage, row.progress)).done;
 * if (end.status === "COMPLETED") render(await result(session_id, opts));
 * ```
 * @module
 */
export { callEdge, type ClientOptions, process, type ProcessOptions, result } from "./src/edge.ts";
export { ERROR_CODES, type Language, languageOf, userMessage, VibeInsightError } from "./src/errors.ts";
export { type Clock, StatusFollower, Throttle } from "./src/follow.ts";
export { type BackoffPolicy, classify, decide, type Decision, DEFAULT_BACKOFF, type Trouble } from "./src/realtime.ts";
export {
  contentTypeOf, type PlaceStorage, placeKey, upload, type UploadFile, type UploadOptions, type UploadProgress,
  type UploadResult,
} from "./src/upload.ts";
export { type ChannelLike, type Mode, type SupabaseLike, watch, type Watch, type WatchOptions } from "./src/watch.ts";
export * from "./src/types.ts";
