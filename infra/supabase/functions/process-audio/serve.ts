// The same function for `deno serve` (Deno's own server: --host, --port, --parallel), e.g.
//   deno serve --allow-net --allow-env --allow-read --host 127.0.0.1 --port 8000 serve.ts
// index.ts stays the Supabase entrypoint (`deno run … index.ts` serves on $PORT); imported from here it
// does not start a server of its own (import.meta.main is false).
import { configFrom } from "./config.ts";
import { handle } from "./index.ts";

const cfg = configFrom((name) => Deno.env.get(name));

export default { fetch: (req: Request) => handle(req, cfg) } satisfies Deno.ServeDefaultExport;
