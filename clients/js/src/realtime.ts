// What to do when Supabase Realtime refuses or drops the session's channel. The design's rules:
// too_many_connections: reconnect later, with back-off and jitter (a fresh socket and channel);
// too_many_channels / too_many_joins: keep (reuse) the socket and join the channel's topic again later,
// backing off (a channel instance joins once in realtime-js: the join is a new instance on the same socket);
// tenant_events: the project sends too many messages: slow down (a longer client-side throttle);
// anything else (socket closed, timed out): a fresh channel after a back-off.

export type Trouble = "too_many_connections" | "too_many_channels" | "too_many_joins" | "tenant_events" | "other";

// Realtime names these limits with snake_case reasons and, in newer releases, CamelCase codes.
const PATTERNS: [Trouble, RegExp][] = [
  ["too_many_connections", /too[_ ]many[_ ]connections|connectionratelimitreached/],
  ["too_many_channels", /too[_ ]many[_ ]channels|channelratelimitreached/],
  ["too_many_joins", /too[_ ]many[_ ]joins|clientjoinratelimitreached|joinratelimitreached/],
  ["tenant_events", /tenant[_ ]events|too[_ ]many[_ ]events|tenanteventsratelimitreached|eventratelimitreached/],
];

function textOf(err: unknown, depth = 0): string {
  if (err == null || depth > 3) return "";
  if (typeof err === "string") return err;
  if (err instanceof Error) return `${err.message} ${textOf((err as { cause?: unknown }).cause, depth + 1)}`;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

/** Which of the design's Realtime limits an error (a subscribe callback's Error, a system payload) names. */
export function classify(err: unknown): Trouble {
  const text = textOf(err).toLowerCase();
  return PATTERNS.find(([, re]) => re.test(text))?.[0] ?? "other";
}

export interface BackoffPolicy {
  /** first wait (ms) */
  baseMs: number;
  /** longest wait (ms) */
  maxMs: number;
  /** the longest client-side throttle tenant_events can bring (ms) */
  maxThrottleMs: number;
}
export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, maxMs: 30_000, maxThrottleMs: 10_000 };

export interface Decision {
  /** "reconnect": drop the channel (and the socket with it) and open a new one; "reuse": keep the socket and
   * join the channel's topic again on it */
  action: "reconnect" | "reuse";
  /** wait before joining again */
  delayMs: number;
  /** the least time between two updates handed to the app from now on */
  throttleMs: number;
}

// A connection limit is the project's (every client hits it at once): its back-off starts higher.
const FACTOR: Record<Trouble, number> = {
  too_many_connections: 4, too_many_channels: 2, too_many_joins: 2, tenant_events: 2, other: 1,
};

/**
 * The decision after the `attempt`-th trouble in a row (0 for the first). The wait grows 2× a try up
 * to maxMs, with "equal jitter": half of it fixed, half random, so clients refused together do not
 * come back together, yet none comes back at once.
 */
export function decide(trouble: Trouble, attempt: number, throttleMs: number, random: () => number,
  policy: BackoffPolicy = DEFAULT_BACKOFF): Decision {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * FACTOR[trouble] * 2 ** Math.min(attempt, 30));
  const delayMs = Math.round(ceiling / 2 + random() * ceiling / 2);
  const slower = trouble === "tenant_events"
    ? Math.min(policy.maxThrottleMs, Math.max(2 * throttleMs, policy.baseMs))
    : throttleMs;
  const action = trouble === "too_many_connections" || trouble === "other" ? "reconnect" : "reuse";
  return { action, delayMs, throttleMs: slower };
}
