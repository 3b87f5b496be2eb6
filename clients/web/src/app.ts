// The reference page: sign in, upload a recording, follow its processing, read the result. Built
// on the client library (clients/js) and supabase-js; bundled into ../app.js (deno task build-web).
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import {
  languageOf, process, result, type ResultDocument, type StatusRow, upload, userMessage, VibeInsightError, watch,
} from "../../js/mod.ts";
import { TEXT } from "./i18n.ts";

interface PageConfig {
  functionUrl: string;
  supabaseUrl: string;
  anonKey: string;
}

const lang = languageOf(navigator.language);
const t = (key: string) => TEXT[lang][key] ?? key;
const $ = <T extends HTMLElement>(testid: string) => document.querySelector<T>(`[data-testid="${testid}"]`)!;
const params = new URLSearchParams(location.search);
const num = (name: string) => (params.has(name) ? Number(params.get(name)) : undefined);
const SESSION_KEY = "vibeinsight.page.session"; // the session being followed, kept across reloads
const TOKEN_KEY = "vibeinsight.page.token"; // a pasted token lasts as long as the tab

let config: PageConfig;
let supabase: SupabaseClient | null = null;
let pastedToken: string | null = null;

function localPage(): boolean {
  return ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
}

async function accessToken(): Promise<string> {
  if (pastedToken) return pastedToken;
  const { data } = await supabase!.auth.getSession();
  if (!data.session) throw new VibeInsightError("unauthorized", "not signed in", 401);
  return data.session.access_token;
}

function useToken(token: string) {
  pastedToken = token.trim() || null;
  if (pastedToken) sessionStorage.setItem(TOKEN_KEY, pastedToken);
  else sessionStorage.removeItem(TOKEN_KEY);
  // supabase-js with a token from outside: REST and Realtime both carry it (Auth is not used then)
  supabase = pastedToken
    ? createClient(config.supabaseUrl, config.anonKey, { accessToken: async () => pastedToken! })
    : createClient(config.supabaseUrl, config.anonKey);
  $("who").textContent = pastedToken ? `${t("signed_in")} (token)` : "";
}

function showProgress(percent: number, stage: string, status: string) {
  const bar = $("progress");
  const value = Math.max(0, Math.min(100, Math.round(percent)));
  bar.setAttribute("aria-valuenow", String(value));
  (bar.querySelector(".fill") as HTMLElement).style.width = `${value}%`;
  const stageEl = $("stage");
  stageEl.dataset.stage = stage;
  stageEl.textContent = t(stage);
  const statusEl = $("status");
  statusEl.dataset.status = status;
  statusEl.textContent = t(status);
}

function showError(code: string | null) {
  const el = $("error");
  el.hidden = !code;
  el.dataset.code = code ?? "";
  // a refused token is the page's own matter (sign in again), not a processing failure
  el.textContent = !code ? "" : code === "unauthorized" ? t("need_signin") : userMessage(code, lang);
}

function clock(s: number): string {
  const m = Math.floor(s / 60);
  return `${String(m).padStart(2, "0")}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function showResult(doc: ResultDocument) {
  document.getElementById("result")!.hidden = false;
  const list = $("transcript");
  list.replaceChildren(...(doc.transcript?.segments ?? []).map((seg) => {
    const li = document.createElement("li");
    const time = Object.assign(document.createElement("span"), { className: "time",
      textContent: `${clock(seg.start)}–${clock(seg.end)}` });
    const who = Object.assign(document.createElement("span"), { className: "speaker", textContent: seg.speaker ?? "" });
    li.append(time, who, document.createTextNode(seg.text.trim()));
    return li;
  }));
  const analysis = $("analysis");
  analysis.replaceChildren(...Object.entries(doc.analysis ?? {}).flatMap(([k, v]) => {
    const dt = Object.assign(document.createElement("dt"), { textContent: k });
    const dd = Object.assign(document.createElement("dd"), { textContent: typeof v === "string" ? v : JSON.stringify(v) });
    return [dt, dd];
  }));
  const warnings = $("warnings");
  const items = doc.warnings.length ? doc.warnings : [t("none")];
  warnings.replaceChildren(...items.map((w) => Object.assign(document.createElement("li"), { textContent: w })));
}

function opts() {
  return { functionUrl: config.functionUrl, accessToken };
}

async function follow(sessionId: string) {
  localStorage.setItem(SESSION_KEY, sessionId);
  showProgress(0, "queued", "PENDING");
  const w = watch(supabase!, sessionId, (row: StatusRow) => {
    showProgress(row.progress ?? 0, row.stage ?? "queued", row.status);
    showError(row.status === "COMPLETED" ? null : row.error_code);
  }, {
    pollMs: num("poll_ms"),
    backoff: num("backoff_ms") ? { baseMs: num("backoff_ms"), maxMs: 4 * num("backoff_ms")! } : undefined,
    onMode: (mode) => ($("status").dataset.channel = mode),
  });
  const end = await w.done;
  localStorage.removeItem(SESSION_KEY);
  if (end.status === "COMPLETED") {
    showResult(await result(sessionId, opts()));
  } else {
    showError(end.error_code ?? end.status.toLowerCase());
    try {
      showResult(await result(sessionId, opts())); // a failed run's document still has its warnings
    } catch {
      // no document for a run that never started
    }
  }
}

async function start() {
  showError(null);
  const file = $<HTMLInputElement>("file").files?.[0];
  if (!supabase || (!pastedToken && !(await supabase.auth.getSession()).data.session)) {
    $("error").hidden = false;
    $("error").textContent = t("need_signin");
    return;
  }
  if (!file) {
    $("error").hidden = false;
    $("error").textContent = t("need_file");
    return;
  }
  $<HTMLButtonElement>("start").disabled = true;
  document.getElementById("result")!.hidden = true;
  try {
    showProgress(0, "upload", "UPLOADING");
    const { key } = await upload(file, { ...opts(), parallel: num("parallel") ?? 3,
      onProgress: ({ sent, total }) => showProgress(100 * sent / total, "upload", "UPLOADING") });
    $("resume").hidden = true;
    const run = await process(key, { ...opts(), language: params.get("language") ?? "auto" });
    await follow(run.session_id);
  } catch (e) {
    console.error(e); // the detail is for whoever opens the console; the user reads the fixed sentence
    showError(e instanceof VibeInsightError ? e.code : "internal");
  } finally {
    $<HTMLButtonElement>("start").disabled = false;
  }
}

async function main() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll<HTMLElement>("[data-i18n]")) el.textContent = t(el.dataset.i18n!);
  config = await (await fetch("config.json")).json();
  const tokenInput = $<HTMLInputElement>("token");
  document.getElementById("token-field")!.hidden = !localPage();
  const saved = localPage() ? sessionStorage.getItem(TOKEN_KEY) : null;
  if (saved) tokenInput.value = saved;
  useToken(saved ?? "");
  tokenInput.addEventListener("input", () => useToken(tokenInput.value));
  document.getElementById("signin-form")!.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target as HTMLFormElement);
    useToken("");
    const { error } = await supabase!.auth.signInWithPassword({ email: String(form.get("email")),
      password: String(form.get("password")) });
    $("who").textContent = error ? "" : t("signed_in");
    showError(error ? "unauthorized" : null);
  });
  const drop = document.getElementById("drop")!;
  drop.addEventListener("dragover", (ev) => (ev.preventDefault(), drop.classList.add("over")));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer?.files.length) $<HTMLInputElement>("file").files = ev.dataTransfer.files;
  });
  $("start").addEventListener("click", () => void start());
  // after a reload: an interrupted upload resumes when its file is chosen again; a session keeps being followed
  $("resume").hidden = !Object.keys(localStorage).some((k) => k.startsWith("vibeinsight.upload:"));
  document.body.dataset.ready = "1";
  const session = localStorage.getItem(SESSION_KEY);
  if (session && supabase) await follow(session).catch((e) => showError(e instanceof VibeInsightError ? e.code : "internal"));
}

void main();
