// What the Deno test files share (not a test file itself): the real parts' addresses and users that
// tests/test_edge_function.py passes in through EDGE_TEST_* variables, and two small assertions.

export function need(name: string): string {
  const v = Deno.env.get(name);
  if (!v) throw new Error(`${name} is not set: run these tests through tests/test_edge_function.py`);
  return v;
}

export function assertEquals(a: unknown, b: unknown, msg = "") {
  const [x, y] = [JSON.stringify(a), JSON.stringify(b)];
  if (x !== y) throw new Error(`${msg} expected ${y}, got ${x}`);
}

export function assert(cond: unknown, msg: string) {
  if (!cond) throw new Error(msg);
}
