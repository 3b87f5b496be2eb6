// The page's own words, in English and Japanese (the users' error sentences come from the library).
import type { Language } from "../../js/mod.ts";

export const TEXT: Record<Language, Record<string, string>> = {
  en: {
    signin: "Sign in", email: "Email", password: "Password", signin_button: "Sign in",
    token: "Access token (local runs only)", drop: "Choose or drop a recording", start: "Upload and process",
    resume: "An upload was interrupted: choose the same file again to resume it.",
    transcript: "Transcript", analysis: "Analysis", warnings: "Warnings", signed_in: "Signed in",
    need_signin: "Sign in first.", need_file: "Choose a file first.",
    upload: "Uploading", queued: "Queued", ingest: "Reading", transcode: "Converting", transcribe: "Transcribing",
    analyze: "Analyzing", publish: "Publishing", done: "Done",
    PENDING: "Waiting", RUNNING: "Processing", COMPLETED: "Completed", FAILED: "Failed", CRASHED: "Stopped",
    CANCELLED: "Cancelled", UPLOADING: "Uploading", none: "none",
  },
  ja: {
    signin: "サインイン", email: "メールアドレス", password: "パスワード", signin_button: "サインイン",
    token: "アクセストークン（ローカル実行のみ）", drop: "録音ファイルを選択またはドロップ", start: "アップロードして処理",
    resume: "アップロードが中断されました。同じファイルをもう一度選ぶと続きから再開します。",
    transcript: "文字起こし", analysis: "分析", warnings: "警告", signed_in: "サインイン中",
    need_signin: "先にサインインしてください。", need_file: "先にファイルを選んでください。",
    upload: "アップロード中", queued: "待機中", ingest: "読み込み", transcode: "変換", transcribe: "文字起こし",
    analyze: "分析", publish: "公開", done: "完了",
    PENDING: "待機中", RUNNING: "処理中", COMPLETED: "完了", FAILED: "失敗", CRASHED: "停止", CANCELLED: "キャンセル",
    UPLOADING: "アップロード中", none: "なし",
  },
};
