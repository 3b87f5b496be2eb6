/**
 * useProcessingStatus(sessionId): a session's newest status row as React state (a separate entry
 * point: React is needed only here). The SupabaseClient comes from <VibeInsightProvider supabase={…}>
 * or from the options.
 *
 * @example
 * ```tsx
 * const { row, mode } = useProcessingStatus(sessionId);
 * return <progress value={row?.progress ?? 0} max={100} />;
 * ```
 * @module
 */
// @ts-types="@types/react"
import {
  createContext,
  createElement,
  type ReactElement,
  type ReactNode,
  useContext,
  useEffect,
  useState,
} from "react";
import type { StatusRow } from "./src/types.ts";
import { type Mode, type SupabaseLike, watch, type WatchOptions } from "./src/watch.ts";

const SupabaseContext = createContext<SupabaseLike | null>(null);

/** Gives useProcessingStatus the app's SupabaseClient. */
export function VibeInsightProvider(props: { supabase: SupabaseLike; children?: ReactNode }): ReactElement {
  return createElement(SupabaseContext.Provider, { value: props.supabase }, props.children);
}

export interface ProcessingStatus {
  /** the newest row (null before the first) */
  row: StatusRow | null;
  /** where updates come from now */
  mode: Mode | "idle";
}

/** Follows `sessionId` (nothing when null) while the component is mounted. */
export function useProcessingStatus(
  sessionId: string | null | undefined,
  options: WatchOptions & { supabase?: SupabaseLike } = {},
): ProcessingStatus {
  const fromContext = useContext(SupabaseContext);
  const supabase = options.supabase ?? fromContext;
  const [state, setState] = useState<ProcessingStatus>({ row: null, mode: "idle" });
  useEffect(() => {
    if (!sessionId || !supabase) return;
    setState({ row: null, mode: "connecting" });
    const w = watch(supabase, sessionId, (row) => setState((s) => ({ ...s, row })), {
      ...options,
      onMode: (mode, why) => {
        setState((s) => ({ ...s, mode }));
        options.onMode?.(mode, why);
      },
    });
    return () => void w.stop();
    // options are read once per session: a new object each render must not re-subscribe
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sessionId, supabase]);
  return state;
}
