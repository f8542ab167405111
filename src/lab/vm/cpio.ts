// A cpio archive in the "newc" format the Linux kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
// Entries are written in the order given (directories before what they
// hold), with fixed owners (root) and mtime 0, so equal input gives equal
// bytes: the archive can be cached by the hash of its content.

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** The archive's bytes: the entries, then the TRAILER!!! entry. Paths are relative (no leading slash). */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const seen = new Set<string>();
  const put = (path: string, mode: number, data: Uint8Array, rdev: [number, number] = [0, 0]): void => {
    const name = Buffer.from(`${path}\0`, 'utf8');
    const header =
      '070701' +
      [ino++, mode, 0, 0, (mode & 0o170000) === S_IFDIR ? 2 : 1, 0, data.byteLength, 0, 0, rdev[0], rdev[1], name.byteLength, 0].map(hex8).join('');
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(110 + name.byteLength)), Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.byteLength)));
  };
  for (const e of entries) {
    if (e.path.startsWith('/') || e.path.split('/').some((p) => p === '' || p === '..')) throw new RangeError(`cpio: bad path ${JSON.stringify(e.path)}`);
    if (seen.has(e.path)) throw new RangeError(`cpio: duplicate path ${e.path}`);
    seen.add(e.path);
    switch (e.type) {
      case 'dir':
        put(e.path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0));
        break;
      case 'file':
        put(e.path, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        put(e.path, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'char':
        put(e.path, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(0), [e.major, e.minor]);
        break;
      default: {
        const never: never = e;
        throw new Error(`cpio: unknown entry ${JSON.stringify(never)}`);
      }
    }
  }
  ino = 0;
  put('TRAILER!!!', 0, new Uint8Array(0));
  return Buffer.concat(parts);
}
