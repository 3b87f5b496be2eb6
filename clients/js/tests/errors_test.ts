import assert from "node:assert/strict";
import { ERROR_CODES, languageOf, userMessage } from "../src/errors.ts";

Deno.test("each code has its sentence in English and Japanese; unknown codes get the generic one", () => {
  assert.ok(ERROR_CODES.includes("not_audio"));
  assert.equal(userMessage("not_audio", "en"), "The file is not an audio or video recording.");
  assert.equal(userMessage("not_audio", "ja-JP"), "ファイルが音声または動画の録音ではありません。");
  assert.equal(userMessage("no_such_code", "ja"), "処理に失敗しました。しばらくしてから再度お試しください。");
  assert.equal(userMessage(null), "Processing failed. Please try again later.");
});

Deno.test("the Edge Function's codes read as the flow's sentence of the same meaning", () => {
  assert.equal(userMessage("unsupported_type", "en"), userMessage("unsupported_format", "en"));
  assert.equal(userMessage("too_large", "ja"), "ファイルがアップロードの上限を超えています。");
});

Deno.test("Japanese for ja tags, English otherwise", () => {
  assert.deepEqual(["ja", "ja-JP", "JA", "en-US", "fr", "", null].map(languageOf), ["ja", "ja", "ja", "en", "en", "en", "en"]);
});
