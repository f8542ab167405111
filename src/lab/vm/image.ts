// The test guest: the machine's cloud kernel (direct kernel boot) and an
// initramfs built here from busybox-static, the kernel's virtio modules (in
// dependency order, loaded with insmod), our frame sender (guest/nwf-send.c,
// built with gcc -static) and our /init (guest/init.sh). The initramfs is
// cached by the hash of everything that goes into it.
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultCacheDir } from '../../host/bpf-build.js';
import { CODES, NwfError } from '../../util/errors.js';
import { libvirtAvailable } from '../libvirt.js';
import { buildCpio, type CpioEntry } from './cpio.js';

export const QEMU = '/usr/bin/qemu-system-x86_64';
export const BUSYBOX = '/bin/busybox';
export const QEMU_DRIVER = '/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so';
/** The modules the guest needs for its virtio NICs; their dependencies come from modules.dep. */
export const GUEST_MODULES = ['virtio_pci', 'virtio_net'] as const;
const IMAGE_FORMAT = 'nwf-fast-vm-guest/1';

/** The guest's own sources (init and frame sender), next to this module in src/ (also when running from dist/). */
function guestSourceDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'guest'), join(here, '..', '..', '..', 'src', 'lab', 'vm', 'guest')];
  const dir = candidates.find((d) => fs.existsSync(join(d, 'init.sh')));
  if (!dir) throw new NwfError(CODES.STATE_INVALID, `vm guest sources not found (looked in ${candidates.join(', ')})`);
  return dir;
}

export interface GuestKernel {
  version: string;
  /** /boot/vmlinuz-VERSION */
  path: string;
  /** /lib/modules/VERSION */
  modulesDir: string;
}

function versionCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The newest cloud kernel in /boot that has its modules installed (Debian package linux-image-cloud-amd64). */
export function findGuestKernel(bootDir = '/boot', modulesRoot = '/lib/modules'): GuestKernel | undefined {
  let names: string[] = [];
  try {
    names = fs.readdirSync(bootDir);
  } catch {
    return undefined;
  }
  const versions = names
    .filter((n) => /^vmlinuz-.*-cloud-amd64$/.test(n))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => fs.existsSync(join(modulesRoot, v, 'modules.dep')))
    .sort(versionCompare);
  const version = versions.at(-1);
  return version === undefined ? undefined : { version, path: join(bootDir, `vmlinuz-${version}`), modulesDir: join(modulesRoot, version) };
}

/** Module files for `wanted` and their dependencies, dependencies first (the order insmod needs), from modules.dep. */
export function moduleLoadOrder(modulesDep: string, wanted: readonly string[]): { name: string; file: string }[] {
  const deps = new Map<string, { file: string; deps: string[] }>();
  const nameOf = (f: string): string => (f.split('/').at(-1) as string).replace(/\.ko(\.[a-z]+)?$/, '').replaceAll('-', '_');
  for (const line of modulesDep.split('\n')) {
    const m = /^([^:\s]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    deps.set(nameOf(m[1] as string), { file: m[1] as string, deps: (m[2] as string).split(/\s+/).filter(Boolean).map(nameOf) });
  }
  const out: { name: string; file: string }[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string): void => {
    if (done.has(name)) return;
    const d = deps.get(name);
    if (!d) throw new NwfError(CODES.STATE_INVALID, `guest kernel: module ${name} is not in modules.dep`);
    if (visiting.has(name)) throw new NwfError(CODES.STATE_INVALID, `guest kernel: module dependency cycle at ${name}`);
    visiting.add(name);
    for (const x of d.deps) visit(x);
    visiting.delete(name);
    done.add(name);
    out.push({ name, file: d.file });
  };
  for (const w of wanted) visit(w.replaceAll('-', '_'));
  return out;
}

/** Whether an ELF executable is statically linked (has no PT_INTERP program header). */
export function isStaticElf(path: string): boolean {
  let b: Buffer;
  try {
    b = fs.readFileSync(path);
  } catch {
    return false;
  }
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false; // 64-bit little-endian ELF
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return false;
    if (b.readUInt32LE(off) === 3) return false; // PT_INTERP
  }
  return true;
}

export interface VmAvailability {
  ok: boolean;
  reason?: string;
}

/** Whether real QEMU guests can run here under a private libvirtd; the reason names what to install. */
export function vmAvailable(): VmAvailability {
  const lv = libvirtAvailable();
  if (!lv.ok) return lv;
  const missing: string[] = [];
  if (!fs.existsSync(QEMU)) missing.push(`${QEMU} (Debian package qemu-system-x86)`);
  if (!fs.existsSync(QEMU_DRIVER)) missing.push(`${QEMU_DRIVER} (Debian package libvirt-daemon-driver-qemu)`);
  if (!findGuestKernel()) missing.push('a guest kernel /boot/vmlinuz-*-cloud-amd64 with its modules (Debian package linux-image-cloud-amd64)');
  if (!isStaticElf(BUSYBOX)) missing.push(`a static ${BUSYBOX} (Debian package busybox-static)`);
  if (!fs.existsSync('/usr/bin/gcc')) missing.push('/usr/bin/gcc (Debian package gcc)');
  if (!fs.existsSync('/usr/lib/x86_64-linux-gnu/libc.a')) missing.push('/usr/lib/x86_64-linux-gnu/libc.a for gcc -static (Debian package libc6-dev)');
  if (!fs.existsSync('/dev/net/tun')) missing.push('/dev/net/tun');
  if (missing.length) return { ok: false, reason: `real VMs cannot run here, missing: ${missing.join('; ')}` };
  return { ok: true };
}

export interface GuestImage {
  kernel: GuestKernel;
  /** The initramfs (uncompressed newc cpio). */
  initrd: string;
  /** The frame sender, built for the guest (also usable on the machine itself). */
  sender: string;
  /** Modules in load order. */
  modules: string[];
  /** Hash of everything in the initramfs. */
  key: string;
  /** False when it came from the cache. */
  built: boolean;
  ms: number;
}

function sha256(...parts: (string | Uint8Array)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? Buffer.from(p, 'utf8') : p);
    h.update('\0');
  }
  return h.digest('hex');
}

async function gccVersion(): Promise<string> {
  const r = await execa('gcc', ['--version'], { timeout: 10_000 });
  return r.stdout.split('\n')[0] ?? '';
}

/** Builds guest/nwf-send.c with gcc -static into `out`. */
export async function buildSender(out: string, srcDir = guestSourceDir()): Promise<void> {
  const r = await execa('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', out, join(srcDir, 'nwf-send.c')], { reject: false, timeout: 120_000 });
  if (r.exitCode !== 0) throw new NwfError(CODES.COMMAND_FAILED, `gcc -static nwf-send.c failed (exit ${r.exitCode}): ${String(r.stderr).slice(-2000)}`, { hint: 'gcc -static needs libc6-dev' });
}

/**
 * The guest image: builds (or finds in `cacheDir`/vm/<hash>/) the initramfs
 * for the newest cloud kernel. Throws with what is missing when it cannot.
 */
export async function guestImage(opts: { cacheDir?: string } = {}): Promise<GuestImage> {
  const t0 = performance.now();
  const kernel = findGuestKernel();
  if (!kernel) throw new NwfError(CODES.STATE_INVALID, 'no guest kernel: install the Debian package linux-image-cloud-amd64');
  if (!isStaticElf(BUSYBOX)) throw new NwfError(CODES.STATE_INVALID, `${BUSYBOX} is not a static busybox: install the Debian package busybox-static`);
  const src = guestSourceDir();
  const init = fs.readFileSync(join(src, 'init.sh'));
  const senderSrc = fs.readFileSync(join(src, 'nwf-send.c'));
  const busybox = fs.readFileSync(BUSYBOX);
  const order = moduleLoadOrder(fs.readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8'), GUEST_MODULES);
  const compressed = order.find((m) => !m.file.endsWith('.ko'));
  if (compressed) throw new NwfError(CODES.STATE_INVALID, `guest kernel module ${compressed.file} is compressed; busybox insmod needs plain .ko files`);
  const modules = order.map((m) => ({ name: m.name, data: fs.readFileSync(join(kernel.modulesDir, m.file)) }));
  const key = sha256(IMAGE_FORMAT, kernel.version, init, senderSrc, await gccVersion(), busybox, ...modules.flatMap((m) => [m.name, m.data])).slice(0, 32);

  const dir = join(opts.cacheDir ?? defaultCacheDir(), 'vm', key);
  const initrd = join(dir, 'initramfs.cpio');
  const sender = join(dir, 'nwf-send');
  const result = (built: boolean): GuestImage => ({ kernel, initrd, sender, modules: order.map((m) => m.name), key, built, ms: performance.now() - t0 });
  if (fs.existsSync(initrd) && fs.existsSync(sender)) return result(false);

  fs.mkdirSync(dirname(dir), { recursive: true });
  const tmp = fs.mkdtempSync(join(dirname(dir), `.build-${key}-`));
  try {
    await buildSender(join(tmp, 'nwf-send'), src);
    const entries: CpioEntry[] = [
      ...['bin', 'dev', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'tmp'].map((path): CpioEntry => ({ type: 'dir', path })),
      { type: 'char', path: 'dev/console', major: 5, minor: 1 },
      { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
      { type: 'symlink', path: 'bin/sh', target: 'busybox' },
      { type: 'file', path: 'bin/nwf-send', data: fs.readFileSync(join(tmp, 'nwf-send')), mode: 0o755 },
      { type: 'file', path: 'init', data: init, mode: 0o755 },
      { type: 'file', path: 'etc/modules', data: Buffer.from(modules.map((m) => m.name).join('\n') + '\n') },
      ...modules.map((m): CpioEntry => ({ type: 'file', path: `lib/modules/${m.name}.ko`, data: m.data })),
    ];
    fs.writeFileSync(join(tmp, 'initramfs.cpio'), buildCpio(entries));
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      // Another process built the same image meanwhile: theirs is identical.
      if (!fs.existsSync(initrd)) throw e;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return result(true);
}
