// JSON text in pieces: the same text as JSON.stringify(value, null, indent),
// produced as a sequence of strings of bounded size, so that a large
// document (a policy of 10 000 interfaces, an nft batch) is written without
// first building one string of hundreds of megabytes (V8 refuses strings
// above 2^29 - 24 characters).
//
// Arrays and plain objects are walked down to `depth` levels; below that,
// each value is one JSON.stringify call (with its lines indented to fit).

/** Whether JSON.stringify leaves this property out of an object (and writes null for it in an array). */
function skipped(v: unknown): boolean {
  return v === undefined || typeof v === 'function' || typeof v === 'symbol';
}

function isContainer(v: unknown): v is Record<string, unknown> | unknown[] {
  return v !== null && typeof v === 'object' && !ArrayBuffer.isView(v) && typeof (v as { toJSON?: unknown }).toJSON !== 'function';
}

/** JSON.stringify(value, null, indent), in pieces of about `chunk` characters. */
export function* jsonChunks(value: unknown, indent = 0, opts: { depth?: number; chunk?: number } = {}): Generator<string> {
  const maxDepth = opts.depth ?? 3;
  const chunk = opts.chunk ?? 1 << 16;
  const unit = ' '.repeat(indent);
  let buf = '';
  // Explicit stack: no recursion, whatever the depth.
  type Frame = { v: Record<string, unknown> | unknown[]; keys: string[]; i: number; level: number; array: boolean; wrote: boolean };
  const stack: Frame[] = [];
  const nl = (level: number): string => (indent ? '\n' + unit.repeat(level) : '');
  const leaf = (v: unknown, level: number): string => {
    const s = JSON.stringify(v, null, indent) as string | undefined;
    if (s === undefined) return 'null';
    return indent && level ? s.replace(/\n/g, nl(level)) : s;
  };
  const open = (v: unknown, level: number): void => {
    if (level < maxDepth && isContainer(v)) {
      const array = Array.isArray(v);
      const keys = array ? [] : Object.keys(v).filter((k) => !skipped((v as Record<string, unknown>)[k]));
      if ((array ? (v as unknown[]).length : keys.length) === 0) {
        buf += array ? '[]' : '{}';
        return;
      }
      buf += array ? '[' : '{';
      stack.push({ v, keys, i: 0, level, array, wrote: false });
    } else buf += leaf(v, level);
  };
  open(value, 0);
  while (stack.length) {
    const f = stack[stack.length - 1] as Frame;
    const n = f.array ? (f.v as unknown[]).length : f.keys.length;
    if (f.i >= n) {
      stack.pop();
      buf += nl(f.level) + (f.array ? ']' : '}');
    } else {
      const k = f.array ? undefined : (f.keys[f.i] as string);
      const item = f.array ? (f.v as unknown[])[f.i] : (f.v as Record<string, unknown>)[k as string];
      f.i++;
      buf += (f.wrote ? ',' : '') + nl(f.level + 1);
      f.wrote = true;
      if (k !== undefined) buf += JSON.stringify(k) + (indent ? ': ' : ':');
      if (f.array && skipped(item)) buf += 'null';
      else open(item, f.level + 1);
    }
    if (buf.length >= chunk) {
      yield buf;
      buf = '';
    }
  }
  if (buf) yield buf;
}
